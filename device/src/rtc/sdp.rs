//! Checks on SDP made before and after the WebRTC machinery runs. They are pure string
//! functions, so they live in the protocol crate (where the fuzz targets reach them without
//! GStreamer); this module keeps the `rtc::sdp::…` paths the rest of the device uses.

pub use ferrocam_protocol::sdp::*;
