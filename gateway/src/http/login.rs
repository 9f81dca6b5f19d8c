//! Logging in and out: the login page, `POST /api/login` (password → session token, also set
//! as an HttpOnly cookie for the web viewer), `POST /api/logout`, and `GET /api/me`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::guard::SESSION_COOKIE;
use super::reply::error;
use crate::auth::Principal;
use crate::rate::Keyed;

/// Login attempts per client address: a burst of 10, then one every 5 s. Argon2 already makes
/// each guess cost ~50 ms of CPU; this keeps a guesser from costing us a core.
const LOGIN_BURST: u32 = 10;
const LOGINS_PER_SECOND: f64 = 0.2;
/// Addresses remembered; beyond this the table is cleared (a distributed guesser gets fresh
/// buckets, but each guess still pays argon2).
const MAX_TRACKED: usize = 10_000;

/// Login attempts per user name, from all addresses together: a burst of 10, then one every
/// 10 s. A guesser with many addresses gets no more tries at one account than a guesser with
/// one; the price is that such an attack also slows the account's owner down (told so in
/// plain words), which is better than her password falling.
const USER_BURST: u32 = 10;
const USER_LOGINS_PER_SECOND: f64 = 0.1;

/// Login rate limits: per client network and per user name.
///
/// Names of real accounts and made-up names are counted in separate tables. The table of real
/// accounts never grows past the auth file, so it is never cleared: a guesser cannot reset an
/// account's budget by sending thousands of made-up names. Made-up names get the same limit
/// (so a 429 says nothing about whether an account exists), in a table that may be cleared
/// when full, since there is no account behind them to protect.
pub struct LoginLimiter {
    networks: Keyed<IpAddr>,
    accounts: Keyed<String>,
    unknown: Keyed<String>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self {
            networks: Keyed::new(LOGIN_BURST, LOGINS_PER_SECOND, MAX_TRACKED),
            accounts: Keyed::new(USER_BURST, USER_LOGINS_PER_SECOND, usize::MAX),
            unknown: Keyed::new(USER_BURST, USER_LOGINS_PER_SECOND, MAX_TRACKED),
        }
    }
}

impl LoginLimiter {
    fn allow(&self, ip: IpAddr) -> bool {
        self.networks.allow(&client_network(ip))
    }

    /// `exists`: whether `user` is an account in the auth file.
    fn allow_user(&self, user: &str, exists: bool) -> bool {
        let table = if exists {
            &self.accounts
        } else {
            &self.unknown
        };
        table.allow(&user.to_owned())
    }
}

/// The unit a login limit applies to: an IPv4 address, or an IPv6 /64 (one subscriber's
/// network: counting single IPv6 addresses would give a guesser 2^64 fresh buckets).
fn client_network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

const LOGIN_HTML: &str = include_str!("../../web/login.html");
const LOGIN_JS: &str = include_str!("../../web/login.js");

pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        LOGIN_HTML,
    )
        .into_response()
}

pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        LOGIN_JS,
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct LoginRequest {
    user: String,
    password: String,
}

/// `POST /api/login` with `{"user": …, "password": …}` as `application/json`, from the
/// gateway's own origin. A cookie set by another site's form would log the browser in to an
/// account of the attacker's choosing (login CSRF), and SameSite does not stop a cross-site
/// POST from *setting* a cookie. Forms and `text/plain` are the bodies a foreign page can send
/// without a CORS preflight, so requiring JSON shuts that door also for browsers that leave
/// out `Origin`.
pub async fn login(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(a))| a);
    let ip = super::client::address(peer, &headers, &state.settings.trusted_proxies);
    if !state.logins.allow(ip) {
        state.metrics.rate_limited.inc();
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many login attempts; wait a minute",
        );
    }
    if let Some(origin) = super::guard::foreign_origin(&headers) {
        state.count_auth_failure("bad_origin");
        tracing::warn!(%origin, %ip, "login from a foreign origin refused");
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "log in on the gateway's own page; other sites use API tokens",
        );
    }
    if !is_json(&headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send {\"user\": …, \"password\": …} as application/json",
        );
    }
    let Ok(LoginRequest { user, password }) = serde_json::from_slice(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "send {\"user\": …, \"password\": …} as JSON",
        );
    };
    if user.len() > 256 || password.len() > 1024 {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "user or password too long",
        );
    }
    let exists = state.auth.config().users.contains_key(&user);
    if !state.logins.allow_user(&user, exists) {
        state.metrics.rate_limited.inc();
        tracing::warn!(%user, %ip, "login attempts for this user are being throttled");
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many login attempts for this account; wait a minute",
        );
    }
    match state.auth.login(&user, &password).await {
        Ok((principal, token)) => {
            tracing::info!(user = %principal.name, %ip, "login");
            let ttl = state.auth.config().session_ttl_secs;
            let cookie = session_cookie(&token, ttl, &headers);
            (
                [(header::SET_COOKIE, cookie)],
                Json(json!({
                    "token": token,
                    "user": principal.name,
                    "role": state.role_for(&principal),
                    "talk": state.talk_for(&principal),
                    "devices": principal.devices.to_strings(),
                    "expires_in": ttl,
                })),
            )
                .into_response()
        }
        Err(e @ crate::auth::AuthError::Busy) => {
            let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "busy", &e.to_string());
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            response
        }
        Err(e) => {
            state.count_auth_failure(e.label());
            tracing::warn!(%user, %ip, "failed login");
            error(StatusCode::UNAUTHORIZED, "unauthorized", &e.to_string())
        }
    }
}

/// `Content-Type: application/json`, with or without parameters.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// `POST /api/logout`: ends the caller's session token on this gateway (a copy of the cookie
/// gets 401 from now on) and clears the cookie.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = super::guard::credential(&headers) {
        state.auth.revoke(&token);
    }
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, session_cookie("", 0, &headers))],
    )
        .into_response()
}

/// `GET /api/me`: who the caller is, and the role its sessions get: its own, capped by the
/// gateway's `--role` (what the device will enforce, so what the page should offer).
pub async fn me(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    Json(json!({
        "user": principal.name,
        "role": state.role_for(&principal),
        "talk": state.talk_for(&principal),
        "devices": principal.devices.to_strings(),
    }))
    .into_response()
}

/// HttpOnly so page scripts (and injected ones) cannot read it; SameSite=Strict so other sites
/// cannot make the browser send it; Secure behind an HTTPS proxy.
fn session_cookie(token: &str, max_age: u64, headers: &HeaderMap) -> String {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let secure = if https { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_logins_are_limited_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_network(a), client_network(b));
        assert_ne!(client_network(a), client_network(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            client_network(mapped),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }
}
