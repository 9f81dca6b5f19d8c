//! Who is asking: users who log in with a password, API tokens for automation, and the
//! short-lived session tokens (JWT, HS256) a login hands out.
//!
//! Every request except the login page and static assets names a [`Principal`]; what it may
//! reach (devices) and do (role) comes from the current auth file, so removing a user or token
//! and reloading revokes it at once, even for session tokens already handed out.

pub mod cli;
pub mod config;
pub mod grant;
pub mod password;
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
    /// User name, or `token:<name>` for an API token.
    pub name: String,
    pub role: Role,
    pub devices: DeviceScope,
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
}

/// The auth file, reloadable.
pub struct Auth {
    path: PathBuf,
    config: RwLock<Arc<AuthConfig>>,
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
    /// Loads the auth file; the gateway refuses to start without a valid one.
    pub fn load(path: PathBuf) -> anyhow::Result<Self> {
        let config = AuthConfig::load(&path)?;
        tracing::info!(
            file = %path.display(),
            users = config.users.len(),
            tokens = config.tokens.len(),
            "authentication loaded"
        );
        Ok(Self {
            path,
            config: RwLock::new(Arc::new(config)),
            hashing: Arc::new(tokio::sync::Semaphore::new(HASHING_AT_ONCE)),
        })
    }

    /// Re-reads the file (SIGHUP). A broken file keeps the previous configuration.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = AuthConfig::load(&self.path)?;
        *self.config.write().expect("auth lock") = Arc::new(config);
        Ok(())
    }

    pub fn config(&self) -> Arc<AuthConfig> {
        Arc::clone(&self.config.read().expect("auth lock"))
    }

    /// Checks a bearer or cookie token: an API token (`fct_…`) or a login session token.
    pub fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let config = self.config();
        if token.starts_with(token::PREFIX) {
            let account = config
                .tokens
                .get(&token::sha256_hex(token))
                .ok_or(AuthError::BadToken)?;
            return Ok(Principal {
                name: format!("token:{}", account.name),
                role: account.role,
                devices: account.devices.clone(),
            });
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        let claims = jsonwebtoken::decode::<SessionClaims>(
            token,
            &DecodingKey::from_secret(&config.session_secret),
            &validation,
        )
        .map_err(|_| AuthError::BadToken)?
        .claims;
        // The file decides, not the token: a removed user is locked out at once.
        let (account, _) = config.users.get(&claims.sub).ok_or(AuthError::BadToken)?;
        Ok(Principal {
            name: account.name.clone(),
            role: account.role,
            devices: account.devices.clone(),
        })
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
        let Some((account, _)) = entry.filter(|_| ok) else {
            return Err(AuthError::BadPassword);
        };
        let now = now_secs();
        let claims = SessionClaims {
            sub: account.name.clone(),
            role: account.role,
            devices: account.devices.to_strings(),
            iat: now,
            exp: now + config.session_ttl_secs,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&config.session_secret),
        )
        .expect("HS256 signing cannot fail");
        Ok((
            Principal {
                name: account.name,
                role: account.role,
                devices: account.devices,
            },
            token,
        ))
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
