//! Credentials of a test deployment, made by the real `ferrocam-gateway init` so the tests use
//! what users get: an auth file with one user and one API token, and the grant key pair.
//!
//! The HTTP helpers ([`crate::whep::http`], [`crate::WhepPlayer`]) send the API token of the
//! stack the request goes to, unless a request sets its own `Authorization`; tests about
//! authentication set it (or [`NO_AUTH`]) explicitly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::Context;

use crate::process::workspace_bin;

/// Pass as the `authorization` header value to send a request without credentials.
pub const NO_AUTH: &str = "";

/// What `ferrocam-gateway init --json` printed.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    /// A long-lived API token with the `control` role for every device.
    pub token: String,
    pub auth_config: PathBuf,
    pub grant_key: PathBuf,
    pub grant_pub: PathBuf,
}

impl Credentials {
    /// Runs `ferrocam-gateway init` into `dir` (replacing what is there).
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        let output = Command::new(workspace_bin("ferrocam-gateway")?)
            .args([
                "init",
                "--json",
                "--user",
                "tester",
                "--password",
                "correct horse battery",
            ])
            .arg("--dir")
            .arg(dir)
            .output()
            .context("running ferrocam-gateway init")?;
        anyhow::ensure!(
            output.status.success(),
            "ferrocam-gateway init failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let creds: Self = serde_json::from_slice(&output.stdout).context("init --json output")?;
        set_default_token(&creds.token);
        Ok(creds)
    }

    /// `Bearer <token>`.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }
}

/// A device enrolled with `ferrocam-gateway device add`: the config file it wrote, as the
/// variables the device reads.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub id: String,
    pub file: PathBuf,
    pub vars: Vec<(String, String)>,
}

impl Enrollment {
    /// One variable of the config file.
    pub fn var(&self, name: &str) -> &str {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{name} missing from {}", self.file.display()))
    }

    /// The device's signing key.
    pub fn signer(&self) -> ferrocam_protocol::signed::Signer {
        ferrocam_protocol::signed::Signer::from_seed_base64(self.var("FERROCAM_SIGNING_KEY"))
            .expect("enrollment writes a valid key")
    }

    /// The message inside `payload`, which this device must have signed for `topic`.
    pub fn open(&self, topic: &str, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
        let verifier =
            ferrocam_protocol::signed::Verifier::from_base64(&self.signer().public_key())
                .map_err(|e| anyhow::anyhow!(e))?;
        let opened = verifier
            .open(topic, payload)
            .map_err(|e| anyhow::anyhow!("{topic}: {e}"))?;
        Ok(opened.msg.to_vec())
    }

    /// `(user, password)` for the embedded broker.
    pub fn login(&self) -> (&str, &str) {
        (&self.id, self.broker_password())
    }

    /// The device's broker password on the embedded broker.
    pub fn broker_password(&self) -> &str {
        self.var("FERROCAM_BROKER_PASSWORD")
    }

    /// The device's keys (its own signing key and the gateway's grant key) for `cmd`; the
    /// broker URL and password are the caller's choice.
    pub fn keys_for(&self, cmd: &mut Command) {
        for name in ["FERROCAM_SIGNING_KEY", "FERROCAM_GRANT_PUBLIC_KEY"] {
            cmd.env(name, self.var(name));
        }
    }
}

impl Credentials {
    /// The device list next to the auth file (the gateway's default `--devices`).
    pub fn devices_file(&self) -> PathBuf {
        self.auth_config.with_file_name("devices.toml")
    }

    /// Enrolls `id` with the real CLI, or reads the config file of its earlier enrollment.
    pub fn enroll(&self, id: &str) -> anyhow::Result<Enrollment> {
        let out = self.auth_config.with_file_name(format!("{id}.env"));
        if !out.exists() {
            self.add_device(id, &out)?;
        }
        let text = std::fs::read_to_string(&out)?;
        let vars = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(Enrollment {
            id: id.to_owned(),
            file: out,
            vars,
        })
    }

    fn add_device(&self, id: &str, out: &Path) -> anyhow::Result<()> {
        let output = Command::new(workspace_bin("ferrocam-gateway")?)
            .args(["device", "add", id, "--force"])
            .arg("--devices")
            .arg(self.devices_file())
            .arg("--out")
            .arg(out)
            .output()
            .context("running ferrocam-gateway device add")?;
        anyhow::ensure!(
            output.status.success(),
            "ferrocam-gateway device add failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// Removes `id` from the device list with the real CLI.
    pub fn unenroll(&self, id: &str) -> anyhow::Result<()> {
        let status = Command::new(workspace_bin("ferrocam-gateway")?)
            .args(["device", "remove", id])
            .arg("--devices")
            .arg(self.devices_file())
            .status()?;
        anyhow::ensure!(status.success(), "ferrocam-gateway device remove failed");
        Ok(())
    }
}

/// The token sent to each gateway, by its `host:port`, and the one sent anywhere else.
///
/// Keyed by address because the tests of one binary run in parallel, each with its own stack
/// and its own credentials: a single process-wide token would go to whichever stack was made
/// last, and another test's requests would be refused.
static TOKENS: Mutex<Option<Tokens>> = Mutex::new(None);

#[derive(Default)]
struct Tokens {
    by_address: HashMap<String, String>,
    fallback: Option<String>,
}

fn with_tokens<T>(f: impl FnOnce(&mut Tokens) -> T) -> T {
    f(TOKENS
        .lock()
        .expect("token lock")
        .get_or_insert_with(Tokens::default))
}

/// `host:port` of an `http://…` URL (empty when it has none).
fn address_of(url: &str) -> String {
    url.split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Makes `token` the one the HTTP helpers send to the server at `url` (any path on it).
pub fn set_token_for(url: &str, token: &str) {
    with_tokens(|t| t.by_address.insert(address_of(url), token.to_owned()));
}

/// Makes `token` the one the HTTP helpers send to servers with no token of their own (a
/// proxy in front of a gateway, a gateway a test started by hand).
pub fn set_default_token(token: &str) {
    with_tokens(|t| t.fallback = Some(token.to_owned()));
}

/// `Bearer <token>` for a request to `url`, if any token applies.
pub fn bearer_for(url: &str) -> Option<String> {
    with_tokens(|t| {
        t.by_address
            .get(&address_of(url))
            .or(t.fallback.as_ref())
            .map(|token| format!("Bearer {token}"))
    })
}

impl Credentials {
    /// A grant signed with the deployment's grant key, as a gateway would make it, expiring
    /// `ttl_secs` from now (negative: already expired). For tests that speak MQTT to a device
    /// directly.
    pub fn grant(
        &self,
        device: &str,
        session: &ferrocam_protocol::SessionId,
        role: ferrocam_protocol::control::Role,
        ttl_secs: i64,
    ) -> anyhow::Result<String> {
        self.sign(self.claims(device, session, role, ttl_secs)?)
    }

    /// A grant for the viewer's answer `sdp` in `session`, as a gateway relays it.
    pub fn answer_grant(
        &self,
        device: &str,
        session: &ferrocam_protocol::SessionId,
        sdp: &str,
    ) -> anyhow::Result<String> {
        use base64::Engine as _;
        let digest = ring::digest::digest(&ring::digest::SHA256, sdp.as_bytes());
        let answer = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
        self.sign(ferrocam_protocol::GrantClaims {
            answer: Some(answer),
            ..self.claims(device, session, ferrocam_protocol::control::Role::View, 30)?
        })
    }

    fn claims(
        &self,
        device: &str,
        session: &ferrocam_protocol::SessionId,
        role: ferrocam_protocol::control::Role,
        ttl_secs: i64,
    ) -> anyhow::Result<ferrocam_protocol::GrantClaims> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        Ok(ferrocam_protocol::GrantClaims {
            aud: device.to_owned(),
            sub: session.to_string(),
            role,
            talk: false,
            exp: now.saturating_add_signed(ttl_secs),
            iat: now.saturating_add_signed(ttl_secs.min(0)),
            iss: "test-probe".to_owned(),
            usr: "test".to_owned(),
            ice: Vec::new(),
            ice_sealed: None,
            answer: None,
            attach: false,
            jti: String::new(),
        })
    }

    fn grant_key_der(&self) -> anyhow::Result<Vec<u8>> {
        use base64::Engine as _;
        let pem = std::fs::read_to_string(&self.grant_key)?;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        Ok(base64::engine::general_purpose::STANDARD.decode(body)?)
    }

    /// `request` signed with the grant key for `topic`, as a gateway publishes it.
    pub fn sign_request(&self, topic: &str, request: &[u8]) -> anyhow::Result<Vec<u8>> {
        let signer = ferrocam_protocol::signed::Signer::from_pkcs8(&self.grant_key_der()?)
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(signer.seal(topic, request, ferrocam_mqtt::now_ms()))
    }

    /// Opens a control reply a device sealed to the grant key, as a gateway does.
    pub fn open_sealed(&self, sealed: &str) -> anyhow::Result<String> {
        let signer = ferrocam_protocol::signed::Signer::from_pkcs8(&self.grant_key_der()?)
            .map_err(|e| anyhow::anyhow!(e))?;
        let plain = signer
            .opener()
            .open(sealed)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(String::from_utf8(plain)?)
    }

    fn sign(&self, claims: ferrocam_protocol::GrantClaims) -> anyhow::Result<String> {
        let der = self.grant_key_der()?;
        Ok(jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(&der),
        )?)
    }
}
