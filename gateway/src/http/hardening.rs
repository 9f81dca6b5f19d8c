//! What every response carries, and which `Host` names the gateway answers to.
//!
//! **Headers.** The page loads only its own scripts and styles (no inline code), so a strict
//! Content-Security-Policy costs nothing and turns an injected `<script>` into a no-op;
//! `frame-ancestors 'none'` (and `X-Frame-Options` for old browsers) stops clickjacking the
//! camera controls; `nosniff` keeps a JSON or JPEG body from being run as a script; no page
//! address leaks to other sites (`Referrer-Policy`).
//!
//! **Hosts (DNS rebinding).** A page on an attacker's site can make its own name resolve to the
//! gateway's address and then talk to the gateway as same-origin; the browser still sends the
//! attacker's name in `Host`. So the gateway answers only to names it is known by: IP literals,
//! `localhost`, this machine's host name (and `<name>.local`), and what `--allowed-hosts` lists
//! (the name of a reverse proxy in front, say). Anything else gets 421 and a line saying how to
//! allow it.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                   img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Which `Host` names are served.
#[derive(Debug, Clone)]
pub enum HostPolicy {
    /// `--allowed-hosts '*'`: any (the operator checks Host in front of the gateway).
    Any,
    /// IP literals, `localhost`, and these names (lowercase, without port).
    Names(Vec<String>),
}

impl HostPolicy {
    /// This machine's names plus `extra` (`*` among them means [`HostPolicy::Any`]).
    pub fn new(extra: &[String]) -> Self {
        if extra.iter().any(|h| h.trim() == "*") {
            return Self::Any;
        }
        let mut names: Vec<String> = extra.iter().map(|h| h.trim().to_lowercase()).collect();
        if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let name = name.trim().to_lowercase();
            if !name.is_empty() {
                names.push(format!("{name}.local"));
                names.push(name);
            }
        }
        Self::Names(names)
    }

    /// Whether a request with this `Host` header value is served.
    pub fn allows(&self, host: &str) -> bool {
        let Self::Names(names) = self else {
            return true;
        };
        let name = host_without_port(host).to_lowercase();
        name == "localhost"
            || name
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok()
            || names.contains(&name)
    }
}

/// `cams.lan:8080` → `cams.lan`, `[::1]:8080` → `[::1]`.
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// The middleware: refuses unknown hosts, adds the headers.
pub async fn harden(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !state.settings.hosts.allows(host) {
        tracing::warn!(%host, "request for a host name this gateway does not serve");
        return (
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this gateway does not answer to the name {host:?}; add it with \
                 --allowed-hosts (FERROCAM_ALLOWED_HOSTS)\n"
            ),
        )
            .into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_localhost_and_listed_names_are_served() {
        let policy = HostPolicy::Names(vec!["cams.example.org".into()]);
        for host in [
            "127.0.0.1:8080",
            "10.1.2.3",
            "[::1]:8080",
            "[fe80::1]",
            "localhost:8080",
            "LOCALHOST",
            "cams.example.org",
            "Cams.Example.Org:443",
        ] {
            assert!(policy.allows(host), "{host}");
        }
        for host in [
            "evil.example",
            "cams.example.org.evil",
            "",
            "127.0.0.1.nip.io",
        ] {
            assert!(!policy.allows(host), "{host}");
        }
        assert!(HostPolicy::new(&["*".into()]).allows("anything"));
    }
}
