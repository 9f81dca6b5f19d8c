//! The SDP checks a device runs on a viewer's offer and on its own answer
//! (`ferrocam_protocol::sdp`), and the trickle-ICE fragment parser WHEP PATCH bodies go
//! through (`ferrocam_protocol::sdpfrag`). All take attacker-controlled text.
//!
//! Invariants: nothing panics; the checks agree with each other (an answer-side H.264 video
//! section means the offer check cannot say "no H.264"); LF and CRLF line endings give the same
//! results; a fragment never holds more than its candidate cap, and every candidate it returns
//! is one line starting `candidate:`.

#![no_main]

use ferrocam_protocol::VideoCodec;
use ferrocam_protocol::sdp::{
    OfferProblem, answer_has_h264, answer_video_codec, check_offer, choose_video_codec,
    offer_has_opus,
};
use ferrocam_protocol::sdpfrag::{MAX_FRAGMENT_CANDIDATES, SdpFragment, ice_ufrag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let sdp: &str = &text;

    let offer = check_offer(sdp);
    if let Err(problem) = &offer {
        let _ = problem.to_string();
    }
    let opus = offer_has_opus(sdp);
    let answer = answer_has_h264(sdp);
    if answer {
        assert_ne!(
            offer,
            Err(OfferProblem::NoH264),
            "answer check saw H.264, offer check not"
        );
    }

    // The fallback only ever adds VP8: an offer H.264 serves is served with H.264 either way,
    // and what an answer kept is what the offer check would choose.
    let with_vp8 = choose_video_codec(sdp, true);
    let without_vp8 = choose_video_codec(sdp, false);
    if without_vp8.is_ok() {
        assert_eq!(with_vp8, without_vp8, "VP8 changed an H.264 choice");
    }
    assert_eq!(without_vp8.is_ok(), offer.is_ok());
    if answer_video_codec(sdp) == Some(VideoCodec::H264) {
        assert!(answer);
    }

    let fragment = SdpFragment::parse(sdp);
    if let Ok(fragment) = &fragment {
        assert!(fragment.candidates.len() <= MAX_FRAGMENT_CANDIDATES);
        for candidate in &fragment.candidates {
            assert!(candidate.candidate.starts_with("candidate:"));
            assert!(!candidate.candidate.contains('\n'));
            assert!(!candidate.candidate.ends_with('\r'));
        }
    }
    let ufrag = ice_ufrag(sdp).map(|u| u.to_owned());

    // Browsers send CRLF, hand-written SDP and tests often LF: the line ending must not matter.
    let crlf = sdp.replace('\n', "\r\n");
    assert_eq!(
        check_offer(&crlf),
        offer,
        "check_offer depends on line endings"
    );
    assert_eq!(
        offer_has_opus(&crlf),
        opus,
        "offer_has_opus depends on line endings"
    );
    assert_eq!(
        answer_has_h264(&crlf),
        answer,
        "answer_has_h264 depends on line endings"
    );
    assert_eq!(
        choose_video_codec(&crlf, true),
        with_vp8,
        "choose_video_codec depends on line endings"
    );
    assert_eq!(
        SdpFragment::parse(&crlf),
        fragment,
        "sdpfrag depends on line endings"
    );
    assert_eq!(
        ice_ufrag(&crlf).map(|u| u.to_owned()),
        ufrag,
        "ice_ufrag depends on line endings"
    );
});
