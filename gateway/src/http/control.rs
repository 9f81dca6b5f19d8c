//! Control requests over REST, relayed to the device over MQTT: for scripts and the `ctl` CLI,
//! and the gateway's snapshot URL. Browsers use the peer-to-peer data channel instead.

use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ferrocam_protocol::control::{
    ControlErrorCode, ControlRequest, ControlResponse, MAX_CONTROL_MESSAGE, Outcome,
    SNAPSHOT_CHUNK, SnapshotChunk, SnapshotReply,
};
use ferrocam_protocol::{DeviceId, ErrorCode, PROTOCOL_VERSION};

use super::reply::error;
use super::scope::ScopedDevice;
use super::{AppState, new_session_id};
use crate::auth::Principal;
use crate::relay::{ControlReplies, Refusal};

/// How long a device has to answer a relayed control request (snapshots included).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest snapshot the gateway reassembles: a 4K JPEG at quality 85 is 1–3 MiB.
const MAX_SNAPSHOT_BYTES: usize = 8 * 1024 * 1024;
/// Chunks that can carry it.
const MAX_SNAPSHOT_CHUNKS: usize = MAX_SNAPSHOT_BYTES / SNAPSHOT_CHUNK + 1;
/// Seconds a script should wait before retrying when the broker queue is full.
const RETRY_BUSY_SECS: &str = "2";
/// Seconds a script should wait before retrying an offline device (as WHEP says).
const RETRY_OFFLINE_SECS: &str = "5";

/// REST control requests and snapshots per principal (user or token): a burst of 30, then 10
/// a second. A dashboard polling a few cameras every couple of seconds is far below it; a
/// script in a tight loop is not, and it must not crowd out everyone else's requests.
const PRINCIPAL_BURST: u32 = 30;
const PRINCIPAL_PER_SECOND: f64 = 10.0;
/// Principals tracked (they come from the auth file, so this is never reached in practice).
const MAX_PRINCIPALS: usize = 10_000;

pub fn principal_limiter() -> crate::rate::Keyed<String> {
    crate::rate::Keyed::new(PRINCIPAL_BURST, PRINCIPAL_PER_SECOND, MAX_PRINCIPALS)
}

/// Refuses `principal` beyond its share (429 with `Retry-After`).
fn over_limit(state: &AppState, principal: &Principal) -> Option<Response> {
    if state.controls.allow(&principal.name) {
        return None;
    }
    state.metrics.rate_limited.inc();
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many control requests from this user or token; slow down",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    Some(response)
}

/// Refuses a device that cannot be reached, in the words WHEP uses: 404 `unknown_device` for
/// one the gateway never saw, 409 `offline` for one it knows but that is not online now.
fn unreachable(state: &AppState, device: &DeviceId) -> Option<Response> {
    match state.relay.device(device) {
        None => Some(error(
            StatusCode::NOT_FOUND,
            "unknown_device",
            &format!("no device called {device}"),
        )),
        Some(status) if !status.online => {
            let mut response = error(
                StatusCode::CONFLICT,
                "offline",
                &format!("device {device} is offline"),
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static(RETRY_OFFLINE_SECS),
            );
            Some(response)
        }
        Some(_) => None,
    }
}

fn refusal(Refusal { code, message }: Refusal) -> Response {
    let (status, label) = match code {
        ErrorCode::UnknownDevice => (StatusCode::NOT_FOUND, "unknown_device"),
        ErrorCode::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        // The gateway's broker queue is full (a broker outage): worth a retry shortly.
        ErrorCode::Busy => {
            let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "busy", &message);
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static(RETRY_BUSY_SECS),
            );
            return response;
        }
        _ => (StatusCode::BAD_GATEWAY, "device_error"),
    };
    error(status, label, &message)
}

fn timeout() -> Response {
    error(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
        "the device did not answer in time",
    )
}

/// `POST /api/devices/{id}/control`: body is a control request (`v` and `id` may be left out);
/// the answer is the device's response, as JSON.
pub async fn relay(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ScopedDevice(device): ScopedDevice,
    body: Bytes,
) -> Response {
    if body.len() > MAX_CONTROL_MESSAGE {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "control requests are at most 16 KiB",
        );
    }
    // Fill in the envelope fields a script need not bother with.
    let mut map = match serde_json::from_slice(&body) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the body must be a JSON object",
            );
        }
    };
    map.entry("v").or_insert(PROTOCOL_VERSION.into());
    map.entry("id").or_insert(1.into());
    let request = serde_json::Value::Object(map).to_string();
    if let Some(refusal) = unreachable(&state, &device).or_else(|| over_limit(&state, &principal)) {
        return refusal;
    }
    state.metrics.control_requests.inc();
    let id = new_session_id();
    let role = state.role_for(&principal);
    let mut replies = match state
        .relay
        .control(device, role, &principal.name, request, id)
    {
        Ok(rx) => rx,
        Err(r) => return refusal(r),
    };
    let reply = tokio::time::timeout(CONTROL_TIMEOUT, replies.recv()).await;
    match reply {
        Ok(Some(message)) => {
            let status = match serde_json::from_str::<ControlResponse>(&message).map(|r| r.outcome)
            {
                Ok(Outcome::Ok(_)) => StatusCode::OK,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                message,
            )
                .into_response()
        }
        _ => timeout(),
    }
}

/// What `snapshot.jpg` takes in its query string.
#[derive(Debug, serde::Deserialize)]
pub struct SnapshotQuery {
    /// Scale down to this width (16–3840).
    width: Option<u32>,
    /// A picture at most this old will do (at most an hour).
    max_age_ms: Option<u64>,
}

/// The longest `max_age_ms` a client may ask for.
const MAX_AGE_LIMIT_MS: u64 = 3_600_000;

/// `GET /api/devices/{id}/snapshot.jpg[?width=640][&max_age_ms=5000]`: a JPEG of the live
/// picture, whether or not anyone watches (the device wakes an idle camera for it). With
/// `max_age_ms` the device may answer with a recent picture without waking the camera, which
/// is what a client polling for thumbnails wants. `Last-Modified` says when it was taken.
pub async fn snapshot(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ScopedDevice(device): ScopedDevice,
    query: Result<Query<SnapshotQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "width and max_age_ms must be whole numbers",
        );
    };
    if query.width.is_some_and(|w| !(16..=3840).contains(&w))
        || query.max_age_ms.is_some_and(|ms| ms > MAX_AGE_LIMIT_MS)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "width must be 16–3840 and max_age_ms at most 3600000",
        );
    }
    if let Some(refusal) = unreachable(&state, &device).or_else(|| over_limit(&state, &principal)) {
        return refusal;
    }
    let request = serde_json::json!({
        "v": PROTOCOL_VERSION,
        "id": 1,
        "cmd": "snapshot",
        "width": query.width,
        "max_age_ms": query.max_age_ms,
    })
    .to_string();
    debug_assert!(ControlRequest::decode(&request).is_ok());
    let id = new_session_id();
    let role = state.role_for(&principal);
    let replies = match state
        .relay
        .control(device, role, &principal.name, request, id)
    {
        Ok(rx) => rx,
        Err(r) => return refusal(r),
    };
    let jpeg = tokio::time::timeout(CONTROL_TIMEOUT, collect_snapshot(replies)).await;
    match jpeg {
        Ok(Ok((reply, jpeg))) => {
            let taken = std::time::UNIX_EPOCH.checked_add(Duration::from_millis(reply.taken_at_ms));
            let mut response = (
                [
                    (header::CONTENT_TYPE, "image/jpeg"),
                    // A cache may keep it but must ask again: the picture is live.
                    (header::CACHE_CONTROL, "private, no-cache"),
                ],
                jpeg,
            )
                .into_response();
            // A device's clock (or a forger) may say anything; formatting far-future dates
            // panics, and a date from the future means nothing to a cache anyway.
            let latest = std::time::SystemTime::now() + Duration::from_secs(86_400);
            if reply.taken_at_ms > 0
                && let Some(taken) = taken.filter(|t| *t <= latest)
                && let Ok(value) = header::HeaderValue::from_str(&httpdate::fmt_http_date(taken))
            {
                response.headers_mut().insert(header::LAST_MODIFIED, value);
            }
            response
        }
        Ok(Err(response)) => response,
        Err(_) => timeout(),
    }
}

/// Reads the snapshot reply and its chunks and reassembles the JPEG. A device's refusal keeps
/// its reason: 504 when its camera did not deliver in time, 400 for a request it finds out of
/// range, 503 otherwise.
async fn collect_snapshot(
    mut replies: ControlReplies,
) -> Result<(SnapshotReply, Vec<u8>), Response> {
    let unavailable = |m: &str| error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m);
    let first = replies
        .recv()
        .await
        .ok_or_else(|| unavailable("no reply"))?;
    let reply = match serde_json::from_str::<ControlResponse>(&first).map(|r| r.outcome) {
        Ok(Outcome::Ok(body)) => serde_json::from_value::<SnapshotReply>(body)
            .map_err(|_| unavailable("malformed snapshot reply"))?,
        Ok(Outcome::Error(e)) => {
            return Err(match e.code {
                ControlErrorCode::Timeout => {
                    error(StatusCode::GATEWAY_TIMEOUT, "timeout", &e.message)
                }
                ControlErrorCode::OutOfRange | ControlErrorCode::BadRequest => {
                    error(StatusCode::BAD_REQUEST, "bad_request", &e.message)
                }
                _ => unavailable(&e.message),
            });
        }
        Err(_) => return Err(unavailable("malformed reply")),
    };
    // The device says how many chunks follow; a broker client must not make this allocate
    // without bound, so the count is held to what a snapshot can need.
    if reply.chunks as usize > MAX_SNAPSHOT_CHUNKS || reply.bytes > MAX_SNAPSHOT_BYTES {
        return Err(unavailable("the device announced an oversized snapshot"));
    }
    let mut parts: Vec<Option<Vec<u8>>> = vec![None; reply.chunks as usize];
    while parts.iter().any(Option::is_none) {
        let message = replies
            .recv()
            .await
            .ok_or_else(|| unavailable("snapshot cut short"))?;
        let chunk: SnapshotChunk =
            serde_json::from_str(&message).map_err(|_| unavailable("malformed snapshot chunk"))?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(chunk.data)
            .map_err(|_| unavailable("malformed snapshot chunk"))?;
        if data.len() > SNAPSHOT_CHUNK {
            return Err(unavailable("oversized snapshot chunk"));
        }
        if let Some(slot) = parts.get_mut(chunk.chunk as usize) {
            *slot = Some(data);
        }
    }
    let jpeg: Vec<u8> = parts.into_iter().flatten().flatten().collect();
    if jpeg.len() != reply.bytes {
        return Err(unavailable("snapshot size mismatch"));
    }
    Ok((reply, jpeg))
}
