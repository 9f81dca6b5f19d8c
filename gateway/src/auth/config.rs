//! The gateway's authentication file (`--auth-config`, TOML): who may log in, which API tokens
//! exist, and what each may watch and do. It holds no secret that could mint a login: session
//! tokens are keyed from the grant key (`grant.key`), so reading this file yields only argon2
//! hashes and token digests. (A `session_secret` from older releases is accepted and ignored.)
//!
//! ```toml
//! session_ttl_secs = 3600
//! allowed_origins = ["https://cams.example.org"]   # other sites allowed to call the API
//!
//! [[user]]
//! name = "alice"
//! password_hash = "$argon2id$…"   # `ferrocam-gateway hash-password`
//! role = "control"
//! devices = ["*"]
//! talk = false                     # may not talk through the camera's speaker
//!
//! [[token]]                        # long-lived, for scripts and WHEP players
//! name = "nvr"
//! sha256 = "…"                     # `ferrocam-gateway new-token` prints the token and this
//! role = "view"
//! devices = ["garage", "porch"]
//! ```
//!
//! `talk` (the viewer's microphone is played by the device) defaults to the role: `control`
//! may talk, `view` may not. Either can be set explicitly.
//!
//! Deleting a `[[token]]` (or a user) and reloading (SIGHUP or restart) revokes it.

use std::collections::HashMap;

use anyhow::Context;
use ferrocam_protocol::DeviceId;
use ferrocam_protocol::control::Role;
use serde::Deserialize;

/// Which devices a user or token may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceScope {
    All,
    Only(Vec<DeviceId>),
}

impl DeviceScope {
    pub fn allows(&self, device: &DeviceId) -> bool {
        match self {
            Self::All => true,
            Self::Only(list) => list.contains(device),
        }
    }

    /// As written in config and tokens: `["*"]` or the ids.
    pub fn to_strings(&self) -> Vec<String> {
        match self {
            Self::All => vec!["*".to_owned()],
            Self::Only(list) => list.iter().map(ToString::to_string).collect(),
        }
    }

    fn parse(list: &[String]) -> anyhow::Result<Self> {
        if list.iter().any(|d| d == "*") {
            return Ok(Self::All);
        }
        let ids = list
            .iter()
            .map(|d| DeviceId::parse(d).with_context(|| format!("device {d:?}")))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self::Only(ids))
    }
}

/// One user or API token, as the gateway uses it.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub role: Role,
    pub devices: DeviceScope,
    /// May talk through a device's speaker.
    pub talk: bool,
}

/// The parsed file.
pub struct AuthConfig {
    /// The file still carries a `session_secret` (ignored; worth a warning).
    pub legacy_session_secret: bool,
    pub session_ttl_secs: u64,
    pub allowed_origins: Vec<String>,
    /// Users by name, with their argon2 PHC hash.
    pub users: HashMap<String, (Account, String)>,
    /// API tokens by the hex SHA-256 of the token.
    pub tokens: HashMap<String, Account>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    session_secret: Option<String>,
    #[serde(default = "default_ttl")]
    session_ttl_secs: u64,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    user: Vec<UserEntry>,
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password_hash: String,
    #[serde(default)]
    role: Role,
    devices: Vec<String>,
    #[serde(default)]
    talk: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    sha256: String,
    #[serde(default)]
    role: Role,
    devices: Vec<String>,
    #[serde(default)]
    talk: Option<bool>,
}

/// Whether an entry may talk: as written, else what its role implies.
fn may_talk(talk: Option<bool>, role: Role) -> bool {
    talk.unwrap_or(role == Role::Control)
}

fn default_ttl() -> u64 {
    3600
}

impl AuthConfig {
    /// Parses and checks the file's text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: File = toml::from_str(text)?;
        anyhow::ensure!(
            (60..=7 * 24 * 3600).contains(&file.session_ttl_secs),
            "session_ttl_secs must be between 60 and 604800"
        );
        for origin in &file.allowed_origins {
            let host = origin
                .trim_end_matches('/')
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            anyhow::ensure!(
                host.is_some_and(|h| !h.is_empty() && !h.contains(['/', '*', ' '])),
                "allowed_origins entry {origin:?} must be an origin: scheme://host[:port]"
            );
        }
        let mut users = HashMap::new();
        for u in file.user {
            anyhow::ensure!(
                !u.name.is_empty() && u.name.len() <= 64 && !u.name.chars().any(char::is_control),
                "user name {:?} must be 1–64 printable characters",
                u.name
            );
            argon2::PasswordHash::new(&u.password_hash)
                .map_err(|e| anyhow::anyhow!("user {}: password_hash: {e}", u.name))?;
            let account = Account {
                devices: DeviceScope::parse(&u.devices)
                    .with_context(|| format!("user {}", u.name))?,
                name: u.name.clone(),
                role: u.role,
                talk: may_talk(u.talk, u.role),
            };
            anyhow::ensure!(
                users
                    .insert(u.name.clone(), (account, u.password_hash))
                    .is_none(),
                "user {} appears twice",
                u.name
            );
        }
        let mut tokens = HashMap::new();
        for t in file.token {
            let hash = t.sha256.trim().to_ascii_lowercase();
            anyhow::ensure!(
                hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
                "token {}: sha256 must be 64 hex digits",
                t.name
            );
            let account = Account {
                devices: DeviceScope::parse(&t.devices)
                    .with_context(|| format!("token {}", t.name))?,
                name: t.name.clone(),
                role: t.role,
                talk: may_talk(t.talk, t.role),
            };
            anyhow::ensure!(
                tokens.insert(hash, account).is_none(),
                "token {} appears twice",
                t.name
            );
        }
        Ok(Self {
            legacy_session_secret: file.session_secret.is_some(),
            session_ttl_secs: file.session_ttl_secs,
            allowed_origins: file
                .allowed_origins
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect(),
            users,
            tokens,
        })
    }

    /// Reads and parses the file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }
}
