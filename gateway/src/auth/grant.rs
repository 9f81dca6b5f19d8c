//! Signing session grants (see `ferrocam_protocol::grant`): EdDSA (Ed25519) JWS, so devices
//! verify with a public key and cannot mint grants themselves.
//!
//! Key files, as `ferrocam-gateway init` / `keygen` write them:
//! - `grant.key`: the PKCS#8 private key in PEM (`-----BEGIN PRIVATE KEY-----`), mode 0600,
//!   the same on every gateway of a site;
//! - `grant.pub`: the 32-byte public key in base64url on one line, for every device.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine as _;
use ferrocam_protocol::control::Role;
use ferrocam_protocol::grant::GRANT_TTL_SECS;
use ferrocam_protocol::viewer::IceServer;
use ferrocam_protocol::{DeviceId, GrantClaims, InstanceId, SessionId};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair};

/// What a grant lets a session do: its control role, and whether the device plays its
/// microphone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rights {
    pub role: Role,
    pub talk: bool,
}

impl From<Role> for Rights {
    /// `role` alone: no talking.
    fn from(role: Role) -> Self {
        Self { role, talk: false }
    }
}

/// Signs grants for one gateway instance.
pub struct GrantSigner {
    key: EncodingKey,
    issuer: InstanceId,
    public: String,
    /// The same key, for signing every request this gateway publishes.
    messages: std::sync::Arc<ferrocam_protocol::signed::Signer>,
    /// Derived from the key: what signs login session tokens.
    session_key: [u8; 32],
}

impl GrantSigner {
    /// A signer from a PKCS#8 Ed25519 key.
    pub fn from_pkcs8(pkcs8: &[u8], issuer: InstanceId) -> anyhow::Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|e| anyhow::anyhow!("not an Ed25519 PKCS#8 key: {e}"))?;
        let messages =
            ferrocam_protocol::signed::Signer::from_pkcs8(pkcs8).map_err(|e| anyhow::anyhow!(e))?;
        // From the seed, not the file: v1 and v2 PKCS#8 of one key give the same sessions.
        let session_key = messages.derive(b"ferrocam session tokens v1");
        Ok(Self {
            key: EncodingKey::from_ed_der(pkcs8),
            issuer,
            public: base64url(pair.public_key().as_ref()),
            messages: std::sync::Arc::new(messages),
            session_key,
        })
    }

    /// Reads `grant.key`.
    pub fn load(path: &Path, issuer: InstanceId) -> anyhow::Result<Self> {
        let pem = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading the grant signing key {} (create one with `ferrocam-gateway init`)",
                path.display()
            )
        })?;
        let der =
            pem_decode(&pem).with_context(|| format!("{} is not a PEM key", path.display()))?;
        Self::from_pkcs8(&der, issuer).with_context(|| format!("in {}", path.display()))
    }

    /// A signer with a fresh key, for tests that need a relay but no device.
    #[cfg(test)]
    pub fn for_tests(issuer: InstanceId) -> Self {
        let (pem, _) = generate();
        Self::from_pkcs8(&pem_decode(&pem).expect("PEM just made"), issuer).expect("a valid key")
    }

    /// The HMAC key of login session tokens: the same on every gateway that holds this grant
    /// key, and unknown to anyone who only reads the auth file.
    pub fn session_key(&self) -> Vec<u8> {
        self.session_key.to_vec()
    }

    /// Signs whole requests with the grant key (`ferrocam_protocol::signed`).
    pub fn message_signer(&self) -> std::sync::Arc<ferrocam_protocol::signed::Signer> {
        std::sync::Arc::clone(&self.messages)
    }

    /// The public key devices need (`grant.pub`).
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// A grant for `session` with `device`, valid for [`GRANT_TTL_SECS`]. The ICE servers (TURN
    /// credentials) are sealed to `to`, the device's key; without one they are left out rather
    /// than put on the broker readable.
    pub fn sign(
        &self,
        device: &DeviceId,
        session: &SessionId,
        rights: Rights,
        user: &str,
        ice: Vec<IceServer>,
        to: Option<&ferrocam_protocol::sealed::Recipient>,
    ) -> String {
        let ice_sealed = match to {
            _ if ice.is_empty() => None,
            Some(device_key) => {
                Some(device_key.seal(&serde_json::to_vec(&ice).expect("ICE servers serialize")))
            }
            None => {
                tracing::warn!(%device, "no key to seal TURN credentials to; sent none");
                None
            }
        };
        self.encode(&GrantClaims {
            role: rights.role,
            talk: rights.talk,
            usr: user.to_owned(),
            ice_sealed,
            ..self.claims(device, session)
        })
    }

    /// Opens control replies devices sealed to the grant key.
    pub fn opener(&self) -> ferrocam_protocol::sealed::Opener {
        self.messages.opener()
    }

    /// The grant relayed with a viewer's `answer` SDP to the device's offer in `session`: it
    /// binds exactly this answer to the session, and opens nothing by itself.
    pub fn sign_answer(&self, device: &DeviceId, session: &SessionId, sdp: &str) -> String {
        self.encode(&GrantClaims {
            answer: Some(answer_digest(sdp)),
            ..self.claims(device, session)
        })
    }

    /// The grant of an `attach`: `user`'s session `session` signals through this gateway now.
    /// The device checks that the session is that user's; the grant opens nothing.
    pub fn sign_attach(&self, device: &DeviceId, session: &SessionId, user: &str) -> String {
        let mut nonce = [0u8; 16];
        rand::fill(&mut nonce);
        self.encode(&GrantClaims {
            usr: user.to_owned(),
            attach: true,
            jti: base64url(&nonce),
            ..self.claims(device, session)
        })
    }

    /// Claims for `session` with `device` from this issuer, valid from now, viewing only.
    fn claims(&self, device: &DeviceId, session: &SessionId) -> GrantClaims {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        GrantClaims {
            aud: device.to_string(),
            sub: session.to_string(),
            role: Role::View,
            talk: false,
            exp: now + GRANT_TTL_SECS,
            iat: now,
            iss: self.issuer.to_string(),
            usr: String::new(),
            ice: Vec::new(),
            ice_sealed: None,
            answer: None,
            attach: false,
            jti: String::new(),
        }
    }

    fn encode(&self, claims: &GrantClaims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.key)
            .expect("signing with a loaded Ed25519 key cannot fail")
    }
}

/// The `answer` claim for `sdp` (`ferrocam_protocol::grant::ANSWER_DIGEST`).
pub fn answer_digest(sdp: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, sdp.as_bytes());
    base64url(digest.as_ref())
}

/// A new key pair: (PEM private key, base64url public key).
pub fn generate() -> (String, String) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("the OS random source works");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("a key ring just made");
    (
        pem_encode(pkcs8.as_ref()),
        base64url(pair.public_key().as_ref()),
    )
}

fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn pem_encode(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

fn pem_decode(pem: &str) -> anyhow::Result<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_sign_verifiable_grants() {
        let (pem, public) = generate();
        let der = pem_decode(&pem).unwrap();
        let signer = GrantSigner::from_pkcs8(&der, InstanceId::parse("gw").unwrap()).unwrap();
        assert_eq!(signer.public_key(), public);
        let device = DeviceId::parse("cam").unwrap();
        let session = SessionId::from_random([3; 16]);
        let grant = signer.sign(&device, &session, Role::View.into(), "alice", vec![], None);
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.set_audience(&["cam"]);
        let key = jsonwebtoken::DecodingKey::from_ed_components(&public).unwrap();
        let claims = jsonwebtoken::decode::<GrantClaims>(&grant, &key, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims.sub, session.to_string());
        assert_eq!(claims.role, Role::View);
        assert_eq!(claims.exp - claims.iat, GRANT_TTL_SECS);
    }

    #[test]
    fn garbage_keys_are_refused() {
        let gw = InstanceId::parse("gw").unwrap();
        assert!(GrantSigner::from_pkcs8(b"nope", gw).is_err());
        assert!(pem_decode("-----BEGIN-----\n!!!\n").is_err());
    }
}
