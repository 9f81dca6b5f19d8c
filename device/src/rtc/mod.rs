//! Our small face over the `webrtc` crate: make an offer (or answer one), trade candidates,
//! restart ICE, send access units.
//!
//! Everything that names a `webrtc`/`rtc` type lives in this module, so the crate's API churn
//! (0.x releases reshape it often) touches one place. Callers see [`Peer`], [`PeerEvent`],
//! [`RtcSettings`], [`VideoSender`] and [`AudioSender`].

mod bandwidth;
mod building;
mod channel;
mod codecs;
mod delay_rate;
mod events;
mod extensions;
mod incoming;
mod interceptors;
mod peer;
mod queue_delay;
mod remb;
mod retransmissions;
mod rtcp;
mod sdp;
mod track;
mod trendline;

pub use bandwidth::{LinkEstimate, RateBounds};
pub use channel::{ChannelEvent, ControlChannel};
pub use events::PeerEvent;
pub use incoming::IncomingAudio;
pub use peer::{AnswerError, AudioPlan, Peer, RtcSettings};
pub use track::{AudioSender, VideoSender};
