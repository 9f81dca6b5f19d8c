//! The replies WHEP players get besides an answer: plain-text problems, `Retry-After` for an
//! offline or busy device, RFC 9725 `Link` headers for ICE servers, and the mapping from the
//! protocol's error codes to HTTP statuses.
//!
//! Apart from the handlers so the status-code policy reads in one place.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferrocam_protocol::ErrorCode;
use ferrocam_protocol::viewer::IceServer;

/// Seconds a player should wait before retrying an offline or busy device.
pub(super) const RETRY_OFFLINE_SECS: &str = "5";
const RETRY_BUSY_SECS: &str = "10";

/// A `text/plain` body holding `message`.
pub(super) fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}\n", message.into()),
    )
        .into_response()
}

/// [`problem`] with a `Retry-After` of `secs` seconds.
pub(super) fn retry_after(status: StatusCode, secs: &'static str, message: String) -> Response {
    let mut response = problem(status, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
    response
}

/// `Link: <url>; rel="ice-server"` per RFC 9725 §4.6.
pub(super) fn link_headers(servers: &[IceServer]) -> Vec<HeaderValue> {
    servers
        .iter()
        .flat_map(|s| {
            s.urls.iter().filter_map(move |url| {
                let mut value = format!("<{url}>; rel=\"ice-server\"");
                if let (Some(user), Some(pass)) = (&s.username, &s.credential) {
                    value.push_str(&format!(
                        "; username=\"{user}\"; credential=\"{pass}\"; credential-type=\"password\""
                    ));
                }
                HeaderValue::from_str(&value).ok()
            })
        })
        .collect()
}

/// Maps a device's or relay's refusal to the WHEP status codes.
pub(super) fn refusal_response(code: ErrorCode, message: String) -> Response {
    match code {
        ErrorCode::UnknownDevice => problem(StatusCode::NOT_FOUND, message),
        ErrorCode::Busy => retry_after(StatusCode::SERVICE_UNAVAILABLE, RETRY_BUSY_SECS, message),
        ErrorCode::NoCommonCodec => problem(StatusCode::NOT_ACCEPTABLE, message),
        ErrorCode::Timeout => problem(StatusCode::GATEWAY_TIMEOUT, message),
        ErrorCode::TooLarge => problem(StatusCode::PAYLOAD_TOO_LARGE, message),
        ErrorCode::RateLimited => problem(StatusCode::TOO_MANY_REQUESTS, message),
        ErrorCode::BadRequest | ErrorCode::UnsupportedVersion | ErrorCode::UnknownSession => {
            problem(StatusCode::BAD_REQUEST, message)
        }
        // The device refused the gateway's grant: a key mismatch between them, not the
        // player's fault.
        ErrorCode::Internal | ErrorCode::Unauthorized => problem(StatusCode::BAD_GATEWAY, message),
    }
}
