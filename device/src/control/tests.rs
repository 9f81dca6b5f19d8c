//! The control handlers against a fake GPIO chip, fake camera controls and a real media engine
//! on the test pattern.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ferrocam_protocol::ControlInfo;
use ferrocam_protocol::control::Role;
use serde_json::Value;

use super::camera::FakeControls;
use super::gpio::FakeGpio;
use super::*;
use crate::media::{CaptureFormat, Encoder, EngineSettings, GstProbe, Source, VideoPlan};

fn handler() -> ControlHandler {
    gstreamer::init().unwrap();
    let encoder = Encoder::select(Some("x264enc"), 30, &GstProbe)
        .unwrap()
        .encoder;
    let media = crate::media::MediaEngine::new(EngineSettings {
        video: VideoPlan {
            source: Source::TestPattern,
            format: CaptureFormat::Raw,
            encoder: Some(encoder),
            width: 640,
            height: 360,
            fps: 30,
            bitrate_kbps: 800,
            keyframe_interval: 30,
            stamp: false,
            vp8: None,
            low: None,
        },
        audio: None,
        idle_timeout: Duration::from_secs(5),
        keyframe_min_interval: Duration::from_millis(500),
        snapshot_settle_frames: 0,
    });
    ControlHandler {
        media,
        adaptation: None,
        camera: Arc::new(FakeControls::new(vec![ControlInfo {
            id: 0x0098_0900,
            name: "Brightness".into(),
            kind: "integer".into(),
            minimum: 0,
            maximum: 255,
            step: 1,
            default: 128,
            menu: vec![],
        }])),
        gpio: Arc::new(FakeGpio::new(
            &["name=lamp,chip=gpiochip0,line=17,direction=output"
                .parse()
                .unwrap()],
            None,
        )),
        ptz: Ptz::Off,
        encoder: "x264enc".into(),
        started: Instant::now(),
        speaker: None,
        recorder: None,
    }
}

async fn call(h: &ControlHandler, role: Role, request: &str) -> Vec<Value> {
    h.handle(&Caller::relayed(role), request)
        .await
        .iter()
        .map(|m| serde_json::from_str(m).unwrap())
        .collect()
}

fn error_code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("<no error>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_sessions_may_read_but_not_change() {
    let h = handler();
    let r = call(
        &h,
        Role::View,
        r#"{"v":1,"id":1,"cmd":"gpio.set","name":"lamp","value":true}"#,
    )
    .await;
    assert_eq!(error_code(&r[0]), "forbidden");
    assert!(
        !h.gpio.get("lamp").unwrap(),
        "a refused command changed the pin"
    );
    let r = call(&h, Role::View, r#"{"v":1,"id":2,"cmd":"gpio.list"}"#).await;
    assert_eq!(r[0]["ok"][0]["name"], "lamp");
    let r = call(
        &h,
        Role::Control,
        r#"{"v":1,"id":3,"cmd":"gpio.set","name":"lamp","value":true}"#,
    )
    .await;
    assert_eq!(r[0]["id"], 3);
    assert!(r[0]["ok"].is_object(), "{}", r[0]);
    assert!(h.gpio.get("lamp").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_typed_errors() {
    let h = handler();
    let cases = [
        (r#"{"v":1,"id":4,"cmd":"reboot"}"#, "bad_request"),
        (
            r#"{"v":1,"id":5,"cmd":"controls.set","control":"bright","value":3}"#,
            "bad_request",
        ),
        (
            r#"{"v":1,"id":6,"cmd":"controls.set","control":9963776,"value":999}"#,
            "out_of_range",
        ),
        (
            r#"{"v":1,"id":7,"cmd":"controls.set","control":1,"value":1}"#,
            "not_found",
        ),
        (
            r#"{"v":1,"id":8,"cmd":"gpio.set","name":"gpio4","value":true}"#,
            "not_found",
        ),
        (
            r#"{"v":1,"id":9,"cmd":"video.set","bitrate_kbps":5}"#,
            "out_of_range",
        ),
        (
            r#"{"v":1,"id":10,"cmd":"video.set","width":7,"height":3}"#,
            "out_of_range",
        ),
        (
            r#"{"v":1,"id":11,"cmd":"ptz","action":"left"}"#,
            "unavailable",
        ),
        (
            r#"{"v":1,"id":12,"cmd":"snapshot","width":8}"#,
            "out_of_range",
        ),
        (r#"{"v":9,"id":13,"cmd":"ping"}"#, "unsupported_version"),
    ];
    for (request, code) in cases {
        let r = call(&h, Role::Control, request).await;
        assert_eq!(error_code(&r[0]), code, "{request} → {}", r[0]);
    }
    let binary: Value = serde_json::from_str(&ControlHandler::binary_refusal(12)).unwrap();
    assert_eq!(error_code(&binary), "bad_request");
    let huge = format!(
        r#"{{"v":1,"id":14,"cmd":"ping","pad":"{}"}}"#,
        "x".repeat(20_000)
    );
    assert_eq!(
        error_code(&call(&h, Role::Control, &huge).await[0]),
        "too_large"
    );
    let ok = call(
        &h,
        Role::Control,
        r#"{"v":1,"id":15,"cmd":"controls.set","control":9963776,"value":40}"#,
    )
    .await;
    assert!(ok[0]["ok"].is_object());
    let list = call(&h, Role::View, r#"{"v":1,"id":16,"cmd":"controls.list"}"#).await;
    assert_eq!(list[0]["ok"][0]["value"], 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_status_and_live_bitrate_on_a_running_pipeline() {
    let h = handler();
    let _lease = h.media.acquire().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let status = call(&h, Role::View, r#"{"v":1,"id":1,"cmd":"status"}"#).await;
    let s = &status[0]["ok"];
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert!(s["fps"].as_f64().unwrap() > 20.0, "{s}");
    assert!(s["bitrate_kbps"].as_f64().unwrap() > 0.0, "{s}");
    assert_eq!(s["viewers"], 1);

    let set = call(
        &h,
        Role::Control,
        r#"{"v":1,"id":2,"cmd":"video.set","bitrate_kbps":300}"#,
    )
    .await;
    assert!(set[0]["ok"].is_object(), "{}", set[0]);
    let status = call(&h, Role::View, r#"{"v":1,"id":3,"cmd":"status"}"#).await;
    assert_eq!(status[0]["ok"]["target_bitrate_kbps"], 300);

    let messages = call(&h, Role::View, r#"{"v":1,"id":4,"cmd":"snapshot"}"#).await;
    let reply = &messages[0]["ok"];
    assert_eq!(reply["mime"], "image/jpeg");
    assert_eq!(
        (reply["width"].as_u64(), reply["height"].as_u64()),
        (Some(640), Some(360))
    );
    let chunks = reply["chunks"].as_u64().unwrap() as usize;
    assert_eq!(messages.len(), 1 + chunks);
    let mut jpeg = Vec::new();
    for (i, chunk) in messages[1..].iter().enumerate() {
        assert_eq!(
            (chunk["id"].as_u64(), chunk["chunk"].as_u64()),
            (Some(4), Some(i as u64))
        );
        jpeg.extend(
            base64::engine::general_purpose::STANDARD
                .decode(chunk["data"].as_str().unwrap())
                .unwrap(),
        );
    }
    assert_eq!(jpeg.len() as u64, reply["bytes"].as_u64().unwrap());
    assert_eq!(&jpeg[..2], &[0xff, 0xd8], "not a JPEG");

    // A size change rebuilds the pipeline and the stream comes back at the new size.
    let resize = call(
        &h,
        Role::Control,
        r#"{"v":1,"id":5,"cmd":"video.set","width":320,"height":240}"#,
    )
    .await;
    assert!(resize[0]["ok"].is_object(), "{}", resize[0]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let messages = call(&h, Role::View, r#"{"v":1,"id":6,"cmd":"snapshot"}"#).await;
    assert_eq!(
        (
            messages[0]["ok"]["width"].as_u64(),
            messages[0]["ok"]["height"].as_u64()
        ),
        (Some(320), Some(240))
    );
}
