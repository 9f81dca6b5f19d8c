//! [`ScopedDevice`]: the device named in a request's path, parsed and checked against the
//! caller's scope before the handler runs, so no handler can forget the check. A device outside
//! the scope is answered exactly like one that does not exist ([`super::guard::not_yours`]):
//! nobody can probe for other people's cameras.

use axum::extract::{FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use ferrocam_protocol::DeviceId;

use super::AppState;
use crate::auth::Principal;

/// The `{device}` of `/api/devices/{device}/…` or `/whep/{device}`, in the caller's scope.
pub struct ScopedDevice(pub DeviceId);

#[axum::async_trait]
impl FromRequestParts<AppState> for ScopedDevice {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let path = parts.uri.path().to_owned();
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Ok(device) = DeviceId::parse(&raw) else {
            return Err(malformed(&path));
        };
        // The guard put the caller there; a route outside the guard has no business here.
        let Some(principal) = parts.extensions.get::<Principal>() else {
            tracing::error!(%path, "a scoped route is not behind the guard");
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        };
        if !principal.may_watch(&device) {
            return Err(super::guard::not_yours(
                state,
                &path,
                principal,
                device.as_str(),
            ));
        }
        Ok(Self(device))
    }
}

/// A 400 in the shape of the path's API: JSON under `/api/`, plain text for WHEP.
fn malformed(path: &str) -> Response {
    let message = "malformed device id";
    if path.starts_with("/api/") {
        super::reply::error(StatusCode::BAD_REQUEST, "bad_request", message)
    } else {
        (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
    }
}
