//! Checks on SDP made before and after the WebRTC machinery runs: which video codec a viewer's
//! offer lets the device send, and which one its answer kept. Plain string scans, no SDP parser, so both sides (and the fuzz targets in
//! `fuzz/`) can use them without the media stack.

use crate::VideoCodec;

/// Why an offer cannot be answered with video.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferProblem {
    /// No H.264 in any video section.
    NoH264,
    /// H.264 is offered only with packetization-mode 0 (single NAL), which cannot carry 720p
    /// frames in MTU-sized packets.
    NoPacketizationMode1,
    /// Neither usable H.264 nor VP8, from a device that could send either.
    NoH264OrVp8,
}

impl std::fmt::Display for OfferProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NoH264 => "the offer has no H.264 video; this camera sends H.264 only",
            Self::NoPacketizationMode1 => {
                "the offer has H.264 only with packetization-mode=0; this camera needs packetization-mode=1"
            }
            Self::NoH264OrVp8 => {
                "the offer has neither H.264 (packetization-mode=1) nor VP8 video; this camera sends only those"
            }
        })
    }
}

/// Whether `text` has the shape of a session description (RFC 8866 §5): the version line
/// `v=0` first and at least one media section. Text without it is not an offer at all, which
/// deserves `bad_request` rather than `no_common_codec`.
pub fn is_session_description(text: &str) -> bool {
    let mut lines = text.lines();
    lines.next().map(str::trim_end) == Some("v=0") && lines.any(|line| line.starts_with("m="))
}

/// Checks that an offer's video can be H.264 with packetization-mode=1.
pub fn check_offer(sdp: &str) -> Result<(), OfferProblem> {
    let h264 = h264_payload_types(sdp);
    if h264.is_empty() {
        return Err(OfferProblem::NoH264);
    }
    let mode1 = sdp.lines().any(|line| {
        line.strip_prefix("a=fmtp:").is_some_and(|rest| {
            rest.split_once(' ').is_some_and(|(pt, params)| {
                h264.contains(&pt)
                    && params
                        .split(';')
                        .any(|kv| kv.trim() == "packetization-mode=1")
            })
        })
    });
    if mode1 {
        Ok(())
    } else {
        Err(OfferProblem::NoPacketizationMode1)
    }
}

/// The codec to send a viewer whose offer is `sdp`: H.264 when it takes it, else VP8 when the
/// device has it (`vp8`) and the offer lists it.
pub fn choose_video_codec(sdp: &str, vp8: bool) -> Result<VideoCodec, OfferProblem> {
    match check_offer(sdp) {
        Ok(()) => Ok(VideoCodec::H264),
        Err(_) if vp8 && lists_video_codec(sdp, VideoCodec::Vp8) => Ok(VideoCodec::Vp8),
        Err(_) if vp8 => Err(OfferProblem::NoH264OrVp8),
        Err(problem) => Err(problem),
    }
}

/// Whether an answer kept a video section with H.264 (an answerer rejects a section by giving
/// it port 0 and no codecs).
pub fn answer_has_h264(sdp: &str) -> bool {
    answer_video_codec(sdp) == Some(VideoCodec::H264)
}

/// The codec an answer lets us send in its accepted video section: H.264 if it kept any, else
/// VP8, else `None` (video rejected, or only codecs we cannot send).
pub fn answer_video_codec(sdp: &str) -> Option<VideoCodec> {
    [VideoCodec::H264, VideoCodec::Vp8]
        .into_iter()
        .find(|&codec| !payload_types(sdp, codec, true).is_empty())
}

/// Whether the offer has an audio section with Opus.
pub fn offer_has_opus(sdp: &str) -> bool {
    let mut in_audio = false;
    for line in sdp.lines() {
        if let Some(media) = line.strip_prefix("m=") {
            in_audio = media.starts_with("audio ");
        } else if in_audio
            && let Some(map) = line.strip_prefix("a=rtpmap:")
            && let Some((_, codec)) = map.split_once(' ')
            && codec.to_ascii_lowercase().starts_with("opus/48000")
        {
            return true;
        }
    }
    false
}

/// One media section of an SDP, as far as answering it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection<'a> {
    /// `audio`, `video`, `application`, …
    pub kind: &'a str,
    pub mid: Option<&'a str>,
    /// `sendrecv`, `sendonly`, `recvonly` or `inactive`, from the section's own attribute,
    /// else the session's, else `sendrecv` (RFC 4566's default).
    pub direction: &'a str,
}

/// The media sections of `sdp`, in order.
pub fn media_sections(sdp: &str) -> Vec<MediaSection<'_>> {
    const DIRECTIONS: [&str; 4] = ["sendrecv", "sendonly", "recvonly", "inactive"];
    let mut session_direction = None;
    let mut sections: Vec<(MediaSection<'_>, bool)> = Vec::new();
    for line in sdp.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(media) = line.strip_prefix("m=") {
            let kind = media.split(' ').next().unwrap_or_default();
            sections.push((
                MediaSection {
                    kind,
                    mid: None,
                    direction: "sendrecv",
                },
                false,
            ));
        } else if let Some(direction) = line.strip_prefix("a=").filter(|d| DIRECTIONS.contains(d)) {
            match sections.last_mut() {
                Some((section, explicit)) => {
                    section.direction = direction;
                    *explicit = true;
                }
                None => session_direction = Some(direction),
            }
        } else if let (Some(mid), Some((section, _))) =
            (line.strip_prefix("a=mid:"), sections.last_mut())
        {
            section.mid = Some(mid);
        }
    }
    sections
        .into_iter()
        .map(|(mut section, explicit)| {
            if !explicit && let Some(direction) = session_direction {
                section.direction = direction;
            }
            section
        })
        .collect()
}

/// Rewrites an offer's `a=setup:actpass` to `a=setup:active`: the offerer will be the DTLS
/// client, so the answerer (`setup:passive`) waits for our ClientHello.
///
/// Why a device offers this way: the answering browser, as ICE's controlled side, otherwise
/// starts DTLS the moment its first check succeeds — before the device has nominated a pair —
/// and the device's ICE layer drops that early ClientHello; Chromium retransmits it only after
/// 50 ms (measured: DTLS up 58 ms after ICE instead of ~10 ms). As the client the device sends
/// its ClientHello once its own pair is selected, and nothing is lost. Browsers accept `active`
/// in an offer (RFC 4145 allows it; RFC 5763 asks offerers for `actpass`, which webrtc-rs
/// writes into the description it applies locally, so only the copy sent is rewritten).
pub fn offer_as_dtls_client(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let text = line.trim_end_matches(['\r', '\n']);
        if text == "a=setup:actpass" {
            out.push_str("a=setup:active");
            out.push_str(&line[text.len()..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Whether any video section of `sdp` lists `codec` (in any profile or mode).
pub fn lists_video_codec(sdp: &str, codec: VideoCodec) -> bool {
    !payload_types(sdp, codec, false).is_empty()
}

fn h264_payload_types(sdp: &str) -> Vec<&str> {
    payload_types(sdp, VideoCodec::H264, false)
}

/// The payload types `codec` has in the video sections of `sdp` (only accepted sections, those
/// with a non-zero port, when `accepted_only`).
fn payload_types(sdp: &str, codec: VideoCodec, accepted_only: bool) -> Vec<&str> {
    let mut in_video = false;
    let mut out = Vec::new();
    for line in sdp.lines() {
        if let Some(media) = line.strip_prefix("m=") {
            in_video =
                media.starts_with("video ") && !(accepted_only && media.starts_with("video 0 "));
        } else if in_video && let Some(pt) = rtpmap_of(line, codec) {
            out.push(pt);
        }
    }
    out
}

fn rtpmap_of(line: &str, codec: VideoCodec) -> Option<&str> {
    let map = line.trim_end_matches('\r').strip_prefix("a=rtpmap:")?;
    let (pt, encoding) = map.split_once(' ')?;
    let (name, _) = encoding.split_once('/')?;
    name.eq_ignore_ascii_case(codec.rtpmap_name()).then_some(pt)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_LIKE: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 102 103\r\na=rtpmap:96 VP8/90000\r\n\
        a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
        a=rtpmap:103 H264/90000\r\na=fmtp:103 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f\r\n";

    #[test]
    fn media_sections_carry_their_mid_and_direction() {
        let sdp = "v=0\r\na=recvonly\r\nm=video 9 X 96\r\na=mid:0\r\na=sendrecv\r\n\
                   m=audio 9 X 111\r\na=mid:1\r\nm=audio 9 X 111\r\na=mid:a2\r\na=inactive\r\n";
        let sections = media_sections(sdp);
        let seen: Vec<_> = sections
            .iter()
            .map(|m| (m.kind, m.mid, m.direction))
            .collect();
        assert_eq!(
            seen,
            [
                ("video", Some("0"), "sendrecv"),
                // No attribute of its own: the session's.
                ("audio", Some("1"), "recvonly"),
                ("audio", Some("a2"), "inactive"),
            ]
        );
        assert_eq!(media_sections("m=audio 9 X 0\n")[0].direction, "sendrecv");
        assert!(media_sections("garbage").is_empty());
    }

    #[test]
    fn an_offer_as_dtls_client_changes_only_the_setup_lines() {
        let sdp = "v=0\r\nm=video 9 X 96\r\na=setup:actpass\r\na=mid:0\r\nm=application 9 X\r\na=setup:actpass\r\n";
        assert_eq!(
            offer_as_dtls_client(sdp),
            "v=0\r\nm=video 9 X 96\r\na=setup:active\r\na=mid:0\r\nm=application 9 X\r\na=setup:active\r\n"
        );
        // Already explicit roles and other lines are left alone.
        let other = "a=setup:passive\na=setup:actpassx\n";
        assert_eq!(offer_as_dtls_client(other), other);
    }

    #[test]
    fn accepts_h264_with_packetization_mode_1() {
        assert_eq!(check_offer(CHROME_LIKE), Ok(()));
        assert!(offer_has_opus(CHROME_LIKE));
    }

    #[test]
    fn refuses_offers_without_usable_h264() {
        let vp8 = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(check_offer(vp8), Err(OfferProblem::NoH264));
        let mode0 = "v=0\r\nm=video 9 RTP 103\r\na=rtpmap:103 H264/90000\r\na=fmtp:103 packetization-mode=0;profile-level-id=42001f\r\n";
        assert_eq!(check_offer(mode0), Err(OfferProblem::NoPacketizationMode1));
        let audio_only = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n";
        assert_eq!(check_offer(audio_only), Err(OfferProblem::NoH264));
        assert!(!offer_has_opus("garbage"));
    }

    #[test]
    fn tells_a_session_description_from_other_text() {
        assert!(is_session_description(CHROME_LIKE));
        assert!(is_session_description("v=0\nm=video 9 X 96\n"));
        for not_sdp in [
            "",
            "hello",
            "v=0",
            "v=0\r\ns=-\r\n",
            "{\"sdp\":\"v=0\"}",
            "m=video 9 X\nv=0",
        ] {
            assert!(!is_session_description(not_sdp), "{not_sdp:?}");
        }
    }

    #[test]
    fn chooses_h264_first_then_vp8_when_the_device_has_it() {
        assert_eq!(choose_video_codec(CHROME_LIKE, true), Ok(VideoCodec::H264));
        let vp8_only = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 120\r\na=rtpmap:120 vp8/90000\r\n";
        assert_eq!(choose_video_codec(vp8_only, true), Ok(VideoCodec::Vp8));
        assert_eq!(
            choose_video_codec(vp8_only, false),
            Err(OfferProblem::NoH264)
        );
        let av1 = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 45\r\na=rtpmap:45 AV1/90000\r\n";
        assert_eq!(
            choose_video_codec(av1, true),
            Err(OfferProblem::NoH264OrVp8)
        );
        // VP8 only in an audio section is no video.
        let misplaced = "v=0\r\nm=audio 9 X 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(
            choose_video_codec(misplaced, true),
            Err(OfferProblem::NoH264OrVp8)
        );
    }

    #[test]
    fn reads_the_codec_an_answer_kept() {
        let both = "m=video 9 X 102 96\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n";
        assert_eq!(answer_video_codec(both), Some(VideoCodec::H264));
        let vp8 = "m=video 9 X 120\r\na=rtpmap:120 VP8/90000\r\n";
        assert_eq!(answer_video_codec(vp8), Some(VideoCodec::Vp8));
        assert!(!answer_has_h264(vp8));
        let rejected = "m=video 0 X 120\r\na=rtpmap:120 VP8/90000\r\n";
        assert_eq!(answer_video_codec(rejected), None);
        // A name that only starts like ours is another codec.
        assert_eq!(
            answer_video_codec("m=video 9 X 1\na=rtpmap:1 VP8X/90000\n"),
            None
        );
    }

    #[test]
    fn recognises_rejected_video_in_an_answer() {
        assert!(answer_has_h264(
            "m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n"
        ));
        assert!(!answer_has_h264("m=video 0 UDP/TLS/RTP/SAVPF 0\r\n"));
    }
}
