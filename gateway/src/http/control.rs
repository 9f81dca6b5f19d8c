//! Control requests over REST, relayed to the device over MQTT: for scripts and the `ctl` CLI,
//! and the gateway's snapshot URL. Browsers use the peer-to-peer data channel instead.

use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ferrocam_protocol::control::{
    ControlRequest, ControlResponse, MAX_CONTROL_MESSAGE, Outcome, SnapshotChunk, SnapshotReply,
};
use ferrocam_protocol::{DeviceId, ErrorCode, PROTOCOL_VERSION};

use super::reply::error;
use super::scope::ScopedDevice;
use super::{AppState, new_session_id};
use crate::auth::Principal;
use crate::relay::{ControlReplies, Refusal};

/// How long a device has to answer a relayed control request (snapshots included).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// Seconds a script should wait before retrying an offline device (as WHEP says).
const RETRY_OFFLINE_SECS: &str = "5";

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
    if let Some(refusal) = unreachable(&state, &device) {
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

/// `GET /api/devices/{id}/snapshot.jpg`: a JPEG of the live picture.
pub async fn snapshot(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ScopedDevice(device): ScopedDevice,
) -> Response {
    if let Some(refusal) = unreachable(&state, &device) {
        return refusal;
    }
    let request =
        serde_json::json!({ "v": PROTOCOL_VERSION, "id": 1, "cmd": "snapshot" }).to_string();
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
        Ok(Ok(jpeg)) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            jpeg,
        )
            .into_response(),
        Ok(Err(response)) => response,
        Err(_) => timeout(),
    }
}

/// Reads the snapshot reply and its chunks and reassembles the JPEG.
async fn collect_snapshot(mut replies: ControlReplies) -> Result<Vec<u8>, Response> {
    let unavailable = |m: &str| error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m);
    let first = replies
        .recv()
        .await
        .ok_or_else(|| unavailable("no reply"))?;
    let reply = match serde_json::from_str::<ControlResponse>(&first).map(|r| r.outcome) {
        Ok(Outcome::Ok(body)) => serde_json::from_value::<SnapshotReply>(body)
            .map_err(|_| unavailable("malformed snapshot reply"))?,
        Ok(Outcome::Error(e)) => return Err(unavailable(&e.message)),
        Err(_) => return Err(unavailable("malformed reply")),
    };
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
        if let Some(slot) = parts.get_mut(chunk.chunk as usize) {
            *slot = Some(data);
        }
    }
    let jpeg: Vec<u8> = parts.into_iter().flatten().flatten().collect();
    if jpeg.len() != reply.bytes {
        return Err(unavailable("snapshot size mismatch"));
    }
    Ok(jpeg)
}
