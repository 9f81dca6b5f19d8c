//! Who is asking: users who log in with a password, API tokens for automation, and the
//! short-lived session tokens (JWT, HS256) a login hands out.
//!
//! Every request except the login page and static assets names a [`Principal`]; what it may
//! reach (devices) and do (role) comes from the current auth file, so removing a user or token
//! and reloading revokes it at once, even for session tokens already handed out.
//!
//! Session tokens are signed with a key derived from the grant key (the one secret a site's
//! gateways already share), not with anything in the auth file. Each names a digest of the
//! user's password hash, so changing the password ends every session of that user on every
//! gateway; and a logout revokes its own token on the gateway that served it ([`revoked`]).

pub mod cli;
pub mod config;
pub mod grant;
pub mod manage;
pub mod password;
pub mod revoked;
pub mod token;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ferrocam_protocol::DeviceId;
use ferrocam_protocol::control::Role;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub use config::{AuthConfig, DeviceScope};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// What owns things (WHEP sessions): `user:<name>`, or `token:<first 16 hex digits of its
    /// digest>` for an API token. Unlike the display name, two principals never share it (two
    /// tokens may have the same name; a user may be called `token:x`).
    pub id: String,
    /// User name, or `token:<name>` for an API token: for logs and people.
    pub name: String,
    pub role: Role,
    pub devices: DeviceScope,
    /// May talk through a device's speaker (the auth file's `talk`).
    pub talk: bool,
}

impl Principal {
    pub fn may_watch(&self, device: &DeviceId) -> bool {
        self.devices.allows(device)
    }
}

/// Why a request is not authenticated. The messages are safe to show to the caller: they
/// never say whether a user exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: log in, or send an Authorization: Bearer token")]
    Missing,
    #[error("the token is invalid or has expired; log in again")]
    BadToken,
    #[error("unknown user or wrong password")]
    BadPassword,
    /// Too many password checks are waiting; not a credential failure (never counted as one).
    #[error("the gateway is busy checking passwords; try again in a moment")]
    Busy,
}

impl AuthError {
    /// The label of the `ferrocam_gateway_auth_failures_total` metric.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::BadToken => "bad_token",
            Self::BadPassword => "bad_password",
            Self::Busy => "busy",
        }
    }
}

/// Claims of a login session token.
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionClaims {
    pub sub: String,
    pub role: Role,
    pub devices: Vec<String>,
    pub exp: u64,
    pub iat: u64,
    /// A random id, what a logout revokes.
    #[serde(default)]
    pub jti: String,
    /// A digest of the user's password hash when the token was made ([`password_tag`]).
    #[serde(default)]
    pub pwd: String,
}

/// What a session token remembers of the password it was issued for: 12 bytes of the SHA-256
/// of the user's argon2 hash, base64url. A new password makes a new hash, and old tokens stop
/// matching; the tag says nothing about the password itself.
fn password_tag(phc: &str) -> String {
    use base64::Engine as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, phc.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12])
}

/// The auth file, reloadable.
pub struct Auth {
    path: PathBuf,
    config: RwLock<Arc<AuthConfig>>,
    /// Signs and checks session tokens (derived from the grant key).
    session_key: Vec<u8>,
    /// Session tokens logged out before they expired.
    revoked: revoked::Revoked,
    /// The file's modification time at the last load, to notice edits (`user`/`token`
    /// commands, an editor) without a SIGHUP.
    loaded: std::sync::Mutex<Option<SystemTime>>,
    /// Password checks running at once. Each argon2 run takes 19 MiB and tens of milliseconds
    /// of a core; unbounded, a burst of logins from many addresses could take the gateway's
    /// memory and every core. More wait their turn.
    hashing: Arc<tokio::sync::Semaphore>,
}

/// How long a login waits for its turn at argon2 before it is told to come back.
const HASHING_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Argon2 runs at once (the cores of a small gateway).
const HASHING_AT_ONCE: usize = 2;

impl Auth {
    /// Loads the auth file; the gateway refuses to start without a valid one. `session_key`
    /// signs session tokens (`GrantSigner::session_key`).
    pub fn load(path: PathBuf, session_key: Vec<u8>) -> anyhow::Result<Self> {
        let config = AuthConfig::load(&path)?;
        if config.legacy_session_secret {
            tracing::warn!(
                file = %path.display(),
                "session_secret in the auth file is no longer used (sessions are keyed from grant.key); remove it"
            );
        }
        tracing::info!(
            file = %path.display(),
            users = config.users.len(),
            tokens = config.tokens.len(),
            "authentication loaded"
        );
        Ok(Self {
            loaded: std::sync::Mutex::new(modified(&path)),
            path,
            config: RwLock::new(Arc::new(config)),
            session_key,
            revoked: revoked::Revoked::default(),
            hashing: Arc::new(tokio::sync::Semaphore::new(HASHING_AT_ONCE)),
        })
    }

    /// Re-reads the file (SIGHUP). A broken file keeps the previous configuration.
    pub fn reload(&self) -> anyhow::Result<()> {
        *self.loaded.lock().expect("auth lock") = modified(&self.path);
        let config = AuthConfig::load(&self.path)?;
        *self.config.write().expect("auth lock") = Arc::new(config);
        Ok(())
    }

    /// Re-reads the file if it changed since the last load; `true` if it did.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        if *self.loaded.lock().expect("auth lock") == modified(&self.path) {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    pub fn config(&self) -> Arc<AuthConfig> {
        Arc::clone(&self.config.read().expect("auth lock"))
    }

    /// Checks a bearer or cookie token: an API token (`fct_…`) or a login session token.
    pub fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let config = self.config();
        if token.starts_with(token::PREFIX) {
            let digest = token::sha256_hex(token);
            let account = config.tokens.get(&digest).ok_or(AuthError::BadToken)?;
            return Ok(Principal {
                id: format!("token:{}", &digest[..16]),
                name: format!("token:{}", account.name),
                role: account.role,
                devices: account.devices.clone(),
                talk: account.talk,
            });
        }
        let claims = self.session_claims(token)?;
        // The file decides, not the token: a removed user is locked out at once, and a changed
        // password ends the sessions made with the old one.
        let (account, phc) = config.users.get(&claims.sub).ok_or(AuthError::BadToken)?;
        if claims.pwd != password_tag(phc) || self.revoked.contains(&claims.jti, now_secs()) {
            return Err(AuthError::BadToken);
        }
        Ok(Principal {
            id: format!("user:{}", account.name),
            name: account.name.clone(),
            role: account.role,
            devices: account.devices.clone(),
            talk: account.talk,
        })
    }

    /// The claims of a session token whose signature and expiry are good.
    fn session_claims(&self, token: &str) -> Result<SessionClaims, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        jsonwebtoken::decode::<SessionClaims>(
            token,
            &DecodingKey::from_secret(&self.session_key),
            &validation,
        )
        .map(|data| data.claims)
        .map_err(|_| AuthError::BadToken)
    }

    /// Ends a session token before it expires (a logout). Anything but a valid session token
    /// (an API token, garbage) is ignored: API tokens are revoked in the auth file.
    pub fn revoke(&self, token: &str) {
        if let Ok(claims) = self.session_claims(token) {
            self.revoked.add(claims.jti, claims.exp, now_secs());
        }
    }

    /// Checks a password and returns the principal with a fresh session token. Argon2 takes
    /// tens of milliseconds of CPU, so it runs off the async threads.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
    ) -> Result<(Principal, String), AuthError> {
        let config = self.config();
        let entry = config.users.get(user).cloned();
        let phc = entry
            .as_ref()
            .map(|(_, phc)| phc.clone())
            .unwrap_or_else(|| password::decoy().to_owned());
        let password = password.to_owned();
        // The permit goes into the blocking task: a client that hangs up mid-login must not
        // free a slot while its argon2 run goes on.
        let turn = tokio::time::timeout(HASHING_WAIT, Arc::clone(&self.hashing).acquire_owned())
            .await
            .map_err(|_| AuthError::Busy)?
            .expect("never closed");
        let ok = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            password::verify(&password, &phc)
        })
        .await
        .unwrap_or(false);
        let Some((account, phc)) = entry.filter(|_| ok) else {
            return Err(AuthError::BadPassword);
        };
        let now = now_secs();
        let mut jti = [0u8; 16];
        rand::fill(&mut jti);
        let claims = SessionClaims {
            sub: account.name.clone(),
            role: account.role,
            devices: account.devices.to_strings(),
            iat: now,
            exp: now + config.session_ttl_secs,
            jti: jti.iter().map(|b| format!("{b:02x}")).collect(),
            pwd: password_tag(&phc),
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.session_key),
        )
        .expect("HS256 signing cannot fail");
        Ok((
            Principal {
                id: format!("user:{}", account.name),
                name: account.name,
                role: account.role,
                devices: account.devices,
                talk: account.talk,
            },
            token,
        ))
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reloads the auth file within a second of a change, so a removed user or a revoked token is
/// refused at once without a SIGHUP.
pub fn spawn_watcher(auth: Arc<Auth>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match auth.reload_if_changed() {
                Ok(true) => tracing::info!("auth file changed; reloaded"),
                Ok(false) => {}
                // `reload` noted the time first: a broken file is reported once, not every
                // second, and the previous configuration stays.
                Err(e) => tracing::error!(error = format!("{e:#}"), "auth file not reloaded"),
            }
        }
    });
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
