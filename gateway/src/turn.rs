//! Ephemeral TURN credentials (the "TURN REST API" scheme coturn implements with
//! `use-auth-secret`): the username is `<expiry unix seconds>:<who>`, the password is
//! base64(HMAC-SHA1(shared secret, username)). The TURN server checks both without talking to
//! the gateway, and refuses them after the expiry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ferrocam_protocol::viewer::IceServer;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// A TURN server and the secret it shares with the gateway.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// `turn:` / `turns:` URLs.
    pub urls: Vec<String>,
    pub secret: String,
    /// How long minted credentials stay valid.
    pub ttl: Duration,
}

impl TurnConfig {
    /// Credentials for `who`, valid for the configured time from now.
    pub fn mint(&self, who: &str) -> IceServer {
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(self.ttl)
            .as_secs();
        self.mint_until(who, expiry)
    }

    /// Credentials that expire at `expiry` (unix seconds).
    pub fn mint_until(&self, who: &str, expiry: u64) -> IceServer {
        let username = format!("{expiry}:{who}");
        IceServer {
            urls: self.urls.clone(),
            credential: Some(password(&self.secret, &username)),
            username: Some(username),
        }
    }
}

/// base64(HMAC-SHA1(secret, username)).
pub fn password(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_coturn_scheme() {
        // Reference value computed with: echo -n "1700000000:alice" | openssl dgst -sha1 -hmac s3cret -binary | base64
        assert_eq!(
            password("s3cret", "1700000000:alice"),
            "TtElzSjT0GdnTQ9xdcRNxx96yQs="
        );
        let turn = TurnConfig {
            urls: vec!["turn:127.0.0.1:3478".into()],
            secret: "s3cret".into(),
            ttl: Duration::from_secs(600),
        };
        let server = turn.mint_until("alice", 1_700_000_000);
        assert_eq!(server.username.as_deref(), Some("1700000000:alice"));
        let fresh = turn.mint("bob");
        let expiry: u64 = fresh
            .username
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!((now + 590..=now + 610).contains(&expiry));
    }
}
