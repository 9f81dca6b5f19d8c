//! The one place that decides who may call what. Every request passes through [`guard`]:
//!
//! | paths                                  | needs                                           |
//! |----------------------------------------|-------------------------------------------------|
//! | `/login`, `/api/login`, `/api/logout`, static assets | nothing                           |
//! | `/`                                    | a session (else a redirect to `/login`)         |
//! | `/healthz`, `/metrics`                 | a loopback client, or credentials               |
//! | everything else (API, `/ws`, WHEP)     | a Bearer token or the session cookie            |
//!
//! It also refuses requests whose `Origin` is a foreign site not listed in `allowed_origins`
//! (cross-site WebSocket hijacking and CSRF ride on the browser's cookie), and adds CORS
//! headers for listed origins. Which *devices* a caller may reach is checked by the handlers,
//! with [`Principal::may_watch`](crate::auth::Principal::may_watch).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::AppState;
use crate::auth::{AuthError, Principal};

/// Name of the login session cookie.
pub const SESSION_COOKIE: &str = "ferrocam_session";

/// Who may call a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Public,
    Page,
    Ops,
    Protected,
}

fn access(path: &str) -> Access {
    match path {
        "/login" | "/api/login" | "/api/logout" | "/app.js" | "/control.js" | "/login.js"
        | "/meter.js" | "/devices.js" | "/stats.js" | "/talk.js" | "/files.js"
        | "/reconnect.js" | "/support.js" | "/style.css" => Access::Public,
        "/" => Access::Page,
        "/healthz" | "/metrics" => Access::Ops,
        _ => Access::Protected,
    }
}

/// The credential a request carries: `Authorization: Bearer …`, else the session cookie.
pub fn credential(headers: &HeaderMap) -> Option<String> {
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = auth.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// `Origin` of a cross-origin request, or `None` for same-origin and non-browser requests.
pub(super) fn foreign_origin(headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let same = host.is_some_and(|host| {
        origin == format!("http://{host}") || origin == format!("https://{host}")
    });
    (!same).then(|| origin.trim_end_matches('/').to_owned())
}

/// A loopback client not relayed by a proxy (a proxy on the same host makes every client look
/// local; proxies add `X-Forwarded-For`).
fn local_client(request: &Request) -> bool {
    let loopback = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| peer.ip().is_loopback());
    loopback && !request.headers().contains_key("x-forwarded-for")
}

pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let class = access(&path);
    let origin = foreign_origin(request.headers());
    let allowed_origin = match &origin {
        None => None,
        Some(o) if state.auth.config().allowed_origins.contains(o) => Some(o.clone()),
        Some(o) => {
            if class != Access::Public {
                state.count_auth_failure("bad_origin");
                tracing::warn!(origin = %o, %path, "request from a foreign origin refused");
                return refuse(
                    &path,
                    StatusCode::FORBIDDEN,
                    "requests from this origin are not allowed (allowed_origins)",
                );
            }
            None
        }
    };
    // CORS preflights carry no credentials; answer them for listed origins.
    if request.method() == Method::OPTIONS {
        if !path.starts_with("/whep/") {
            return with_cors(preflight(), allowed_origin.as_deref());
        }
        return with_cors(next.run(request).await, allowed_origin.as_deref());
    }

    let principal = credential(request.headers()).map(|token| state.auth.authenticate(&token));
    let response = match (class, principal) {
        (_, Some(Ok(principal))) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        (Access::Public, _) => next.run(request).await,
        (Access::Ops, None) if state.settings.public_ops || local_client(&request) => {
            next.run(request).await
        }
        (Access::Page, _) => Redirect::to("/login").into_response(),
        (_, failed) => {
            let error = match failed {
                Some(Err(e)) => e,
                _ => AuthError::Missing,
            };
            state.count_auth_failure(error.label());
            let mut response = refuse(&path, StatusCode::UNAUTHORIZED, &error.to_string());
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ferrocam\""),
            );
            response
        }
    };
    with_cors(response, allowed_origin.as_deref())
}

/// A refusal in the path's dialect: JSON under `/api`, plain text elsewhere (WHEP, WebSocket).
pub fn refuse(path: &str, status: StatusCode, message: &str) -> Response {
    if path.starts_with("/api/") {
        let code = if status == StatusCode::FORBIDDEN {
            "forbidden"
        } else {
            "unauthorized"
        };
        super::reply::error(status, code, message)
    } else {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{message}\n"),
        )
            .into_response()
    }
}

/// The refusal for a device outside the caller's scope: word for word what a device that does
/// not exist gets (404, `unknown_device`), so a caller cannot learn which devices exist beyond
/// its own.
pub fn not_yours(state: &AppState, path: &str, principal: &Principal, device: &str) -> Response {
    state.count_auth_failure("forbidden_device");
    tracing::warn!(who = %principal.name, %device, "device outside the caller's scope");
    let message = format!("no device called {device}");
    if path.starts_with("/api/") {
        super::reply::error(StatusCode::NOT_FOUND, "unknown_device", &message)
    } else {
        refuse(path, StatusCode::NOT_FOUND, &message)
    }
}

fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, OPTIONS"),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "Authorization, Content-Type",
            ),
            (header::ACCESS_CONTROL_MAX_AGE, "600"),
        ],
    )
        .into_response()
}

/// CORS headers for a listed origin; none for anyone else (the browser then blocks the read).
fn with_cors(mut response: Response, origin: Option<&str>) -> Response {
    let Some(origin) = origin.and_then(|o| HeaderValue::from_str(o).ok()) else {
        return response;
    };
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Post, Retry-After"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_wins_over_the_cookie_and_other_schemes_are_ignored() {
        let h = headers(&[
            ("authorization", "Bearer abc"),
            ("cookie", "ferrocam_session=xyz"),
        ]);
        assert_eq!(credential(&h).as_deref(), Some("abc"));
        let h = headers(&[("cookie", "a=b; ferrocam_session=xyz; c=d")]);
        assert_eq!(credential(&h).as_deref(), Some("xyz"));
        assert_eq!(
            credential(&headers(&[("authorization", "Basic Zm9v")])),
            None
        );
        assert_eq!(credential(&headers(&[])), None);
    }

    #[test]
    fn same_origin_is_not_foreign() {
        let h = headers(&[
            ("origin", "http://cams.lan:8080"),
            ("host", "cams.lan:8080"),
        ]);
        assert_eq!(foreign_origin(&h), None);
        let h = headers(&[
            ("origin", "https://evil.example"),
            ("host", "cams.lan:8080"),
        ]);
        assert_eq!(foreign_origin(&h).as_deref(), Some("https://evil.example"));
        assert_eq!(foreign_origin(&headers(&[("host", "x")])), None);
    }

    #[test]
    fn only_the_login_and_assets_are_public() {
        assert_eq!(access("/login"), Access::Public);
        assert_eq!(access("/api/devices"), Access::Protected);
        assert_eq!(access("/ws"), Access::Protected);
        assert_eq!(access("/whep/cam"), Access::Protected);
        assert_eq!(access("/metrics"), Access::Ops);
        assert_eq!(access("/"), Access::Page);
        assert_eq!(access("/login/../api/devices"), Access::Protected);
    }
}
