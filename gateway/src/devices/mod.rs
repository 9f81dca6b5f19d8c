//! Enrolled devices: the one list that says which devices exist for this site.
//!
//! Enrolling a device (`ferrocam-gateway device add <id>`, see [`cli`]) gives it two secrets,
//! both written into the device's config file and nowhere else:
//! - a **broker password**, which the embedded broker checks (it stores only its SHA-256,
//!   like API tokens: the password is random, so a plain digest is enough);
//! - an **Ed25519 signing key**, whose public half is kept here. The gateway believes a message
//!   on a device's topics only if it verifies against that device's key
//!   ([`inbound::Gatekeeper`]), whichever broker carried it and whoever could publish there.
//!
//! The list lives in `devices.toml` next to the auth file. The gateway re-reads it when it
//! changes (checked every second) and on SIGHUP, so a removal takes effect at once: the broker
//! refuses the device's next connection and its messages are dropped from then on.

pub mod cli;
pub mod inbound;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use anyhow::Context;
use base64::Engine as _;
use ferrocam_protocol::DeviceId;
use ferrocam_protocol::signed::Verifier;
use serde::{Deserialize, Serialize};

/// One enrolled device as the gateway uses it.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub verifier: Verifier,
    broker_password_sha256: Vec<u8>,
}

/// The file, as written by [`cli`]: a list of `[[device]]` tables.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DevicesFile {
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceEntry>,
}

/// One `[[device]]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceEntry {
    pub id: String,
    /// The device's Ed25519 public key, base64url.
    pub public_key: String,
    /// SHA-256 of the device's broker password, base64url.
    pub broker_password_sha256: String,
    /// When it was enrolled (RFC 3339, for people).
    #[serde(default)]
    pub added: String,
}

impl DevicesFile {
    /// Reads the file; a missing file is an empty list.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("in {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Replaces the file in one step (a reader never sees half of it).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let body = toml::to_string(self).context("serializing the device list")?;
        let text = format!(
            "# Devices enrolled with this gateway. Managed by `ferrocam-gateway device add|list|remove`;\n\
             # the gateway re-reads it within a second of a change.\n\n{body}"
        );
        crate::files::replace(path, &text, 0o644)
    }

    fn enrollments(&self) -> anyhow::Result<HashMap<DeviceId, Enrollment>> {
        let mut out = HashMap::new();
        for entry in &self.devices {
            let id = DeviceId::parse(&entry.id)
                .map_err(|e| anyhow::anyhow!("device id {:?}: {e}", entry.id))?;
            let verifier = Verifier::from_base64(&entry.public_key)
                .map_err(|e| anyhow::anyhow!("device {id}: {e}"))?;
            let broker_password_sha256 = base64url_decode(&entry.broker_password_sha256)
                .filter(|d| d.len() == 32)
                .with_context(|| format!("device {id}: broker_password_sha256 is not a digest"))?;
            let enrollment = Enrollment {
                verifier,
                broker_password_sha256,
            };
            anyhow::ensure!(
                out.insert(id.clone(), enrollment).is_none(),
                "device {id} is listed twice"
            );
        }
        Ok(out)
    }
}

/// The enrolled devices, kept current with the file.
pub struct Registry {
    path: PathBuf,
    current: RwLock<Arc<HashMap<DeviceId, Enrollment>>>,
    /// The file's modification time at the last load, to notice changes cheaply.
    loaded: Mutex<Option<SystemTime>>,
}

impl Registry {
    /// Loads the list; the gateway refuses to start on a broken file.
    pub fn load(path: PathBuf) -> anyhow::Result<Self> {
        let registry = Self {
            path,
            current: RwLock::default(),
            loaded: Mutex::default(),
        };
        registry.reload()?;
        let count = registry.current().len();
        if count == 0 {
            tracing::warn!(
                file = %registry.path.display(),
                "no devices enrolled: add one with `ferrocam-gateway device add <id>`"
            );
        } else {
            tracing::info!(file = %registry.path.display(), devices = count, "enrolled devices loaded");
        }
        Ok(registry)
    }

    /// A registry with the given devices and no file, for tests.
    #[cfg(test)]
    pub fn with(devices: Vec<(DeviceId, Verifier)>) -> Self {
        let map = devices
            .into_iter()
            .map(|(id, verifier)| {
                let enrollment = Enrollment {
                    verifier,
                    broker_password_sha256: vec![0; 32],
                };
                (id, enrollment)
            })
            .collect();
        Self {
            path: PathBuf::from("/nonexistent/devices.toml"),
            current: RwLock::new(Arc::new(map)),
            loaded: Mutex::default(),
        }
    }

    fn current(&self) -> Arc<HashMap<DeviceId, Enrollment>> {
        Arc::clone(&self.current.read().expect("registry lock"))
    }

    /// Re-reads the file. A broken file keeps the previous list. Returns the devices that were
    /// enrolled before and are not any more.
    pub fn reload(&self) -> anyhow::Result<Vec<DeviceId>> {
        // The time is noted before reading: a broken file is reported once, and a file fixed
        // while (or after) this read fails has a newer time and is read again.
        *self.loaded.lock().expect("registry lock") = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let next = DevicesFile::read(&self.path)?.enrollments()?;
        let previous = std::mem::replace(
            &mut *self.current.write().expect("registry lock"),
            Arc::new(next),
        );
        let now = self.current();
        Ok(previous
            .keys()
            .filter(|id| !now.contains_key(*id))
            .cloned()
            .collect())
    }

    /// Re-reads the file if it changed since the last load: `Some(removed devices)` then.
    pub fn reload_if_changed(&self) -> anyhow::Result<Option<Vec<DeviceId>>> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if *self.loaded.lock().expect("registry lock") == modified {
            return Ok(None);
        }
        self.reload().map(Some)
    }

    /// The key `device` signs with, if it is enrolled.
    pub fn is_enrolled(&self, device: &DeviceId) -> bool {
        self.current().contains_key(device)
    }

    pub fn verifier(&self, device: &DeviceId) -> Option<Verifier> {
        self.current().get(device).map(|e| e.verifier.clone())
    }

    /// Whether `password` is `device`'s broker password.
    pub fn broker_password_matches(&self, device: &DeviceId, password: &str) -> bool {
        let Some(enrollment) = self.current().get(device).cloned() else {
            return false;
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, password.as_bytes());
        // Digests of a random password: comparing them in variable time reveals nothing
        // about the password itself.
        digest.as_ref() == enrollment.broker_password_sha256.as_slice()
    }
}

/// Base64url (no padding) of SHA-256 of `secret`, as `broker_password_sha256` holds it.
pub fn password_digest(secret: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

/// Reloads the list when its file changes, and tells `on_removed` which devices left it.
pub fn spawn_watcher(registry: Arc<Registry>, on_removed: impl Fn(&[DeviceId]) + Send + 'static) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match registry.reload_if_changed() {
                Ok(Some(removed)) => {
                    tracing::info!(removed = ?removed, "enrolled devices reloaded");
                    on_removed(&removed);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "device list not reloaded; keeping the old one"
                    );
                    // Do not log the same broken file every second.
                    let modified = std::fs::metadata(&registry.path)
                        .and_then(|m| m.modified())
                        .ok();
                    *registry.loaded.lock().expect("registry lock") = modified;
                }
            }
        }
    });
}
