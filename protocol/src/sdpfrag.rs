//! `application/trickle-ice-sdpfrag` bodies (RFC 8840), as WHEP players send them in PATCH.

use crate::signal::IceCandidate;

/// What a trickle-ICE SDP fragment says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SdpFragment {
    /// `a=ice-ufrag`, if present (a new one means an ICE restart).
    pub ice_ufrag: Option<String>,
    /// `a=ice-pwd`, if present.
    pub ice_pwd: Option<String>,
    /// Every `a=candidate` line, tagged with the `a=mid` it follows.
    pub candidates: Vec<IceCandidate>,
    /// `a=end-of-candidates` was present.
    pub end_of_candidates: bool,
}

/// Why a fragment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpFragmentError {
    /// A line that is not `x=value` SDP syntax.
    #[error("line {0} is not an SDP line")]
    NotSdp(usize),
    /// More candidates than a player plausibly has.
    #[error("more than {MAX_FRAGMENT_CANDIDATES} candidates in one fragment")]
    TooManyCandidates,
}

/// Most candidates accepted in one fragment.
pub const MAX_FRAGMENT_CANDIDATES: usize = 64;

impl SdpFragment {
    /// Parses a fragment. Unknown attributes (`a=group`, `m=` lines…) are skipped.
    pub fn parse(body: &str) -> Result<Self, SdpFragmentError> {
        let mut frag = SdpFragment::default();
        let mut mid: Option<String> = None;
        let mut mline_index: Option<u16> = None;
        for (n, line) in body.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let bytes = line.as_bytes();
            if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
                return Err(SdpFragmentError::NotSdp(n + 1));
            }
            if line.starts_with("m=") {
                mline_index = Some(mline_index.map_or(0, |i| i + 1));
                mid = None;
            } else if let Some(v) = line.strip_prefix("a=mid:") {
                mid = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
                frag.ice_ufrag = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
                frag.ice_pwd = Some(v.to_owned());
            } else if line == "a=end-of-candidates" {
                frag.end_of_candidates = true;
            } else if let Some(v) = line.strip_prefix("a=")
                && v.starts_with("candidate:")
            {
                if frag.candidates.len() == MAX_FRAGMENT_CANDIDATES {
                    return Err(SdpFragmentError::TooManyCandidates);
                }
                frag.candidates.push(IceCandidate {
                    candidate: v.to_owned(),
                    sdp_mid: mid.clone(),
                    sdp_mline_index: if mid.is_none() {
                        Some(mline_index.unwrap_or(0))
                    } else {
                        mline_index
                    },
                });
            }
        }
        Ok(frag)
    }
}

/// The session-level or first `a=ice-ufrag` of an SDP document.
pub fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("a=ice-ufrag:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "a=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
        a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
        a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n\
        a=candidate:473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active generation 0\r\n\
        a=end-of-candidates\r\n";

    #[test]
    fn parses_the_whep_draft_example() {
        let frag = SdpFragment::parse(EXAMPLE).unwrap();
        assert_eq!(frag.ice_ufrag.as_deref(), Some("EsAw"));
        assert_eq!(frag.ice_pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(frag.candidates.len(), 2);
        assert!(
            frag.candidates[0]
                .candidate
                .starts_with("candidate:1387637174 1 udp")
        );
        assert_eq!(frag.candidates[0].sdp_mid.as_deref(), Some("0"));
        assert!(frag.end_of_candidates);
    }

    #[test]
    fn refuses_non_sdp_and_candidate_floods() {
        assert_eq!(
            SdpFragment::parse("hello world"),
            Err(SdpFragmentError::NotSdp(1))
        );
        let flood =
            "a=candidate:1 1 udp 1 127.0.0.1 9 typ host\n".repeat(MAX_FRAGMENT_CANDIDATES + 1);
        assert_eq!(
            SdpFragment::parse(&flood),
            Err(SdpFragmentError::TooManyCandidates)
        );
    }

    #[test]
    fn finds_the_offer_ufrag() {
        assert_eq!(ice_ufrag("v=0\r\na=ice-ufrag:abcd\r\n"), Some("abcd"));
        assert_eq!(ice_ufrag("v=0\r\n"), None);
    }
}
