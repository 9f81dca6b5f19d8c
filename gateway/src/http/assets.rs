//! The web viewer: plain HTML, CSS and JavaScript compiled into the binary. No build step, no
//! CDN, so the page works on a LAN with no internet.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const CONTROL_JS: &str = include_str!("../../web/control.js");
const METER_JS: &str = include_str!("../../web/meter.js");
const DEVICES_JS: &str = include_str!("../../web/devices.js");
const STATS_JS: &str = include_str!("../../web/stats.js");
const TALK_JS: &str = include_str!("../../web/talk.js");
const FILES_JS: &str = include_str!("../../web/files.js");
const RECONNECT_JS: &str = include_str!("../../web/reconnect.js");
const SUPPORT_JS: &str = include_str!("../../web/support.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Assets change with the binary; revalidate so an upgrade is picked up at once.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

pub async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

pub async fn app_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub async fn control_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", CONTROL_JS)
}

pub async fn meter_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", METER_JS)
}

pub async fn devices_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", DEVICES_JS)
}

pub async fn stats_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", STATS_JS)
}

pub async fn talk_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", TALK_JS)
}

pub async fn files_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", FILES_JS)
}

pub async fn reconnect_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", RECONNECT_JS)
}

pub async fn support_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SUPPORT_JS)
}

pub async fn style_css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}
