//! Checking session grants: the gateway's signed permission for each session (see
//! `ferrocam_protocol::grant`). The device holds only the gateway's public key, so it can
//! verify grants but never make one.
//!
//! Sans-IO apart from the clock: [`GrantVerifier::verify`] takes the grant and the session it
//! claims to be for and says yes (with the claims) or why not.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ferrocam_protocol::grant::{GRANT_LEEWAY_SECS, GRANT_TTL_SECS};
use ferrocam_protocol::{DeviceId, GrantClaims, SessionId};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// Grants remembered for replay detection; past this many unexpired ones, new sessions are
/// refused rather than letting the memory grow (that is hundreds of sessions a second).
const MAX_REMEMBERED: usize = 10_000;

/// Why a grant was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("the request carries no grant; only a gateway holding the grant key can open sessions")]
    Missing,
    #[error("the grant is invalid: {0}")]
    Invalid(String),
    #[error("the grant is for device {0}, not this one")]
    WrongDevice(String),
    #[error("the grant is for another session")]
    WrongSession,
    #[error("the grant has expired (check that this device's clock is set, e.g. by NTP)")]
    Expired,
    #[error("the grant was already used (replayed session)")]
    Replayed,
    #[error("too many sessions granted in the last minute")]
    TooMany,
    #[error("the grant is for another answer")]
    WrongAnswer,
    #[error("an answer's grant cannot open a session")]
    AnswerOnly,
    #[error("an attach grant cannot open a session")]
    AttachOnly,
    #[error("only an attach grant can move a session")]
    NotAttach,
    #[error("the grant's ICE servers are not sealed to this device's key")]
    Sealed,
}

/// Verifies grants for one device and remembers the ones it accepted.
pub struct GrantVerifier {
    device: DeviceId,
    key: DecodingKey,
    validation: Validation,
    /// Session ids granted, with their expiry: a grant works once.
    used: HashMap<String, u64>,
    /// Opens the ICE servers a grant carries sealed to this device.
    opener: Option<ferrocam_protocol::sealed::Opener>,
}

impl GrantVerifier {
    /// A verifier for `device` trusting the Ed25519 public key `public_key` (base64url, as
    /// `ferrocam-gateway init` writes it to `grant.pub`).
    pub fn new(device: DeviceId, public_key: &str) -> anyhow::Result<Self> {
        let public_key = public_key.trim();
        let raw = decode_base64url(public_key).context("the grant key is not base64url")?;
        anyhow::ensure!(
            raw.len() == 32,
            "the grant key must be a 32-byte Ed25519 public key, got {} bytes",
            raw.len()
        );
        let key = DecodingKey::from_ed_components(public_key).context("loading the grant key")?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[device.as_str()]);
        validation.leeway = GRANT_LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        Ok(Self {
            device,
            key,
            validation,
            used: HashMap::new(),
            opener: None,
        })
    }

    /// Opens sealed ICE servers with this device's key (see `ferrocam_protocol::sealed`).
    pub fn with_opener(mut self, opener: ferrocam_protocol::sealed::Opener) -> Self {
        self.opener = Some(opener);
        self
    }

    /// Checks `grant` for `session` and, if it is good, marks it used.
    pub fn verify(
        &mut self,
        grant: Option<&str>,
        session: &SessionId,
    ) -> Result<GrantClaims, GrantError> {
        let mut claims = self.check_session_grant(grant, session)?;
        if claims.attach {
            return Err(GrantError::AttachOnly);
        }
        if let Some(sealed) = claims.ice_sealed.take() {
            claims.ice = self.open_ice(&sealed)?;
        }
        self.remember(claims.sub.clone(), claims.exp)?;
        Ok(claims)
    }

    fn open_ice(
        &self,
        sealed: &str,
    ) -> Result<Vec<ferrocam_protocol::viewer::IceServer>, GrantError> {
        let opener = self.opener.as_ref().ok_or(GrantError::Sealed)?;
        let json = opener.open(sealed).map_err(|_| GrantError::Sealed)?;
        serde_json::from_slice(&json).map_err(|_| GrantError::Sealed)
    }

    /// [`Self::check`] for a grant that opens or moves a session: one naming an answer only
    /// vouches for that answer.
    fn check_session_grant(
        &self,
        grant: Option<&str>,
        session: &SessionId,
    ) -> Result<GrantClaims, GrantError> {
        let claims = self.check(grant, session)?;
        if claims.answer.is_some() {
            return Err(GrantError::AnswerOnly);
        }
        Ok(claims)
    }

    /// Checks the grant of an `attach` (a session's signaling moving to another gateway): an
    /// attach grant for this device and session, valid now. It is not marked used here: the
    /// caller first checks that the session is the grant's user's, then calls
    /// [`Self::remember_attach`], so attaches for sessions that do not exist cannot fill the
    /// memory that opening grants need.
    pub fn check_attach(
        &self,
        grant: Option<&str>,
        session: &SessionId,
    ) -> Result<GrantClaims, GrantError> {
        let claims = self.check_session_grant(grant, session)?;
        if !claims.attach {
            return Err(GrantError::NotAttach);
        }
        Ok(claims)
    }

    /// Marks an attach grant used. The session it names exists already, so it cannot be
    /// single-use per session like an opening grant: each attach grant is accepted once
    /// instead (they carry a random `jti`), and one read off the broker cannot be replayed.
    pub fn remember_attach(&mut self, grant: &str, claims: &GrantClaims) -> Result<(), GrantError> {
        let signature = grant.rsplit('.').next().unwrap_or_default();
        self.remember(format!("attach:{signature}"), claims.exp)
    }

    /// Records a grant as used until it expires; refuses one seen before, and refuses all once
    /// the memory is full (a flood must not grow it without bound).
    fn remember(&mut self, key: String, exp: u64) -> Result<(), GrantError> {
        let now = now_secs();
        self.used.retain(|_, exp| *exp + GRANT_LEEWAY_SECS >= now);
        if self.used.contains_key(&key) {
            return Err(GrantError::Replayed);
        }
        if self.used.len() >= MAX_REMEMBERED {
            return Err(GrantError::TooMany);
        }
        self.used.insert(key, exp);
        Ok(())
    }

    /// Checks the grant relayed with a viewer's answer to our offer in `session`: signed, for
    /// this device and session, unexpired, and naming exactly `sdp`. (No replay bookkeeping: a
    /// session applies one answer, and replaying the same one changes nothing.)
    pub fn verify_answer(
        &self,
        grant: Option<&str>,
        session: &SessionId,
        sdp: &str,
    ) -> Result<(), GrantError> {
        let claims = self.check(grant, session)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, sdp.as_bytes());
        let expected = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
        };
        if claims.answer.as_deref() != Some(expected.as_str()) {
            return Err(GrantError::WrongAnswer);
        }
        Ok(())
    }

    /// Signature, audience, subject, expiry and lifetime: what every grant must pass.
    fn check(&self, grant: Option<&str>, session: &SessionId) -> Result<GrantClaims, GrantError> {
        let grant = grant.ok_or(GrantError::Missing)?;
        let claims = match jsonwebtoken::decode::<GrantClaims>(grant, &self.key, &self.validation) {
            Ok(data) => data.claims,
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind;
                return Err(match e.kind() {
                    ErrorKind::ExpiredSignature => GrantError::Expired,
                    ErrorKind::InvalidAudience => GrantError::WrongDevice(
                        audience_of(grant).unwrap_or_else(|| "?".to_owned()),
                    ),
                    _ => GrantError::Invalid(e.to_string()),
                });
            }
        };
        if claims.aud != self.device.as_str() {
            return Err(GrantError::WrongDevice(claims.aud));
        }
        if claims.sub != session.as_str() {
            return Err(GrantError::WrongSession);
        }
        // A grant longer-lived than the protocol allows was not made by a ferrocam gateway
        // (or its clock is far off): refuse rather than remember it for long.
        if claims.exp > claims.iat + GRANT_TTL_SECS * 4 {
            return Err(GrantError::Invalid("lifetime too long".to_owned()));
        }
        Ok(claims)
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn decode_base64url(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('='))
}

/// The `aud` of an unverified grant, only to say which device it was for in the error.
fn audience_of(grant: &str) -> Option<String> {
    let payload = decode_base64url(grant.split('.').nth(1)?).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    let aud = value.get("aud")?.as_str()?;
    // Echo it only if it is a well-formed id: it ends up in logs and replies.
    DeviceId::parse(aud).ok().map(|d| d.to_string())
}

#[cfg(test)]
mod tests;
