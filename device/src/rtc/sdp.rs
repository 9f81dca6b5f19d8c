//! Checks on offers made before any WebRTC machinery is spun up.

/// Whether an SDP offer lists H.264 in a video section, which is all a device can send.
///
/// Checked up front so a viewer whose offer lacks H.264 gets a clear `no_common_codec` error
/// instead of an answer with a rejected video section and a black screen.
pub fn offer_has_h264(sdp: &str) -> bool {
    let mut in_video = false;
    for line in sdp.lines() {
        if let Some(media) = line.strip_prefix("m=") {
            in_video = media.starts_with("video ");
        } else if in_video
            && let Some(map) = line.strip_prefix("a=rtpmap:")
            && let Some((_, codec)) = map.split_once(' ')
            && codec.to_ascii_uppercase().starts_with("H264/")
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_h264_only_in_video_sections() {
        let with = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n";
        let without = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
        let audio_only = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n";
        assert!(offer_has_h264(with));
        assert!(!offer_has_h264(without));
        assert!(!offer_has_h264(audio_only));
        assert!(!offer_has_h264("garbage"));
    }
}
