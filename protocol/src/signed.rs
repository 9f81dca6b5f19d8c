//! Signed broker messages: every payload either side publishes is signed by its sender, so the
//! broker is only a transport. A client that connects to it (anonymously, with a leaked
//! password, or as another device) can still publish, but nothing it publishes is believed.
//!
//! Who signs with what:
//! - a **device** signs everything it publishes (status, will, replies) with its own Ed25519
//!   key; the gateway knows each enrolled device's public key and drops whatever does not
//!   verify against the key of the device the topic names;
//! - a **gateway** signs every request with the site's grant key (the key that signs session
//!   grants); devices hold its public half. A grant inside a signed request is therefore bound
//!   to that request: its SDP, its control request, its session.
//!
//! The signature covers the topic as well as the message, so a signed message cannot be moved to
//! another device's topic or another gateway's reply topic, and a time stamp, so a receiver can
//! refuse stale copies (devices do, for requests; see [`FRESH_FOR_MS`]).
//!
//! On the wire a signed message is a small JSON object around the original one, kept byte for
//! byte so the signature can be checked over exactly what was signed:
//!
//! ```text
//! {"at":1764489600123,"sig":"<Ed25519 signature, base64url>","msg":{...the envelope...}}
//! signed bytes = "ferrocam-signed-v1\n" topic "\n" at "\n" msg
//! ```

use base64::Engine as _;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::MAX_SIGNAL_PAYLOAD;

/// What a signed message may weigh at most: the largest message plus the wrapper.
pub const MAX_SIGNED_PAYLOAD: usize = MAX_SIGNAL_PAYLOAD + 256;

/// How far a request's time stamp may be from the device's clock, either way. Requests only
/// have to cross the broker, so anything older is a replay or a clock a minute wrong.
pub const FRESH_FOR_MS: u64 = 90_000;

/// Separates this use of the key from any other (grants are JWS, which never start like this).
const CONTEXT: &[u8] = b"ferrocam-signed-v1\n";

/// Why a payload was not accepted as signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignedError {
    #[error("signed message larger than {MAX_SIGNED_PAYLOAD} bytes")]
    TooLarge,
    #[error("not a signed message")]
    Malformed,
    #[error("signature does not verify")]
    BadSignature,
}

impl SignedError {
    /// A short label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed => "unsigned",
            Self::BadSignature => "bad_signature",
        }
    }
}

/// A private Ed25519 key that signs messages.
pub struct Signer {
    pair: Ed25519KeyPair,
    seed: [u8; 32],
}

impl Signer {
    /// From a PKCS#8 document (what `grant.key` holds, PEM-decoded).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))?;
        let seed = pkcs8_seed(pkcs8).ok_or("no Ed25519 seed in the PKCS#8 key")?;
        let signer = Self::from_seed(seed)?;
        if signer.pair.public_key().as_ref() != pair.public_key().as_ref() {
            return Err("the PKCS#8 key's seed and public key disagree".to_owned());
        }
        Ok(signer)
    }

    /// From the 32-byte seed in base64url, the form enrollment writes into a device's config.
    pub fn from_seed_base64(seed: &str) -> Result<Self, String> {
        let bytes = decode_base64url(seed.trim()).ok_or("the signing key is not base64url")?;
        let seed = <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| "the signing key is not a 32-byte Ed25519 seed".to_owned())?;
        Self::from_seed(seed)
    }

    fn from_seed(seed: [u8; 32]) -> Result<Self, String> {
        Ed25519KeyPair::from_seed_unchecked(&seed)
            .map(|pair| Self { pair, seed })
            .map_err(|_| "not an Ed25519 seed".to_owned())
    }

    /// A 32-byte key for one other `purpose`, derived from this key's seed (HKDF-SHA256): the
    /// same on every holder of the key, whatever file format it was stored in.
    pub fn derive(&self, purpose: &[u8]) -> [u8; 32] {
        use ring::hkdf;
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"ferrocam").extract(&self.seed);
        let mut key = [0u8; 32];
        prk.expand(&[purpose], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut key))
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        key
    }

    /// Opens what was sealed to this key's public half ([`crate::sealed`]).
    pub fn opener(&self) -> crate::sealed::Opener {
        crate::sealed::Opener::from_ed25519_seed(&self.seed)
    }

    /// The public half, base64url, as the other side must hold it.
    pub fn public_key(&self) -> String {
        encode_base64url(self.pair.public_key().as_ref())
    }

    /// Wraps `msg` (a JSON document) for publishing on `topic` at `at_ms` (Unix time in ms).
    pub fn seal(&self, topic: &str, msg: &[u8], at_ms: u64) -> Vec<u8> {
        let signature = self.pair.sign(&signed_bytes(topic, at_ms, msg));
        let sig = encode_base64url(signature.as_ref());
        let mut out = Vec::with_capacity(msg.len() + 120);
        out.extend_from_slice(format!("{{\"at\":{at_ms},\"sig\":\"{sig}\",\"msg\":").as_bytes());
        out.extend_from_slice(msg);
        out.push(b'}');
        out
    }
}

/// A public Ed25519 key that checks messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    key: [u8; 32],
}

impl Verifier {
    /// From 32 bytes in base64url (padding tolerated), as [`Signer::public_key`] gives them.
    pub fn from_base64(public_key: &str) -> Result<Self, String> {
        let bytes = decode_base64url(public_key.trim()).ok_or("the public key is not base64url")?;
        let key = <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| format!("an Ed25519 public key has 32 bytes, not {}", bytes.len()))?;
        Ok(Self { key })
    }

    /// Whom to seal secrets to so that only this key's holder reads them ([`crate::sealed`]).
    pub fn recipient(&self) -> Option<crate::sealed::Recipient> {
        crate::sealed::Recipient::from_ed25519(&self.key)
    }

    /// Checks a signed message that arrived on `topic` and returns what it carries.
    pub fn open<'a>(&self, topic: &str, payload: &'a [u8]) -> Result<Opened<'a>, SignedError> {
        let wire = parse(payload)?;
        UnparsedPublicKey::new(&ED25519, &self.key)
            .verify(
                &signed_bytes(topic, wire.at, wire.msg.get().as_bytes()),
                &wire.signature,
            )
            .map_err(|_| SignedError::BadSignature)?;
        Ok(Opened {
            msg: wire.msg.get().as_bytes(),
            at_ms: wire.at,
            signature: wire.signature,
        })
    }
}

/// A message whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened<'a> {
    /// The message as it was signed (JSON).
    pub msg: &'a [u8],
    /// When the sender says it signed it, Unix time in ms.
    pub at_ms: u64,
    /// The signature, unique per message: what a receiver remembers to refuse replays.
    pub signature: [u8; 64],
}

impl Opened<'_> {
    /// Whether the time stamp is within [`FRESH_FOR_MS`] of `now_ms`.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        self.at_ms.abs_diff(now_ms) <= FRESH_FOR_MS
    }
}

struct Wire<'a> {
    at: u64,
    signature: [u8; 64],
    msg: &'a RawValue,
}

fn parse(payload: &[u8]) -> Result<Wire<'_>, SignedError> {
    #[derive(Deserialize)]
    struct Fields<'a> {
        at: u64,
        sig: &'a str,
        #[serde(borrow)]
        msg: &'a RawValue,
    }
    if payload.len() > MAX_SIGNED_PAYLOAD {
        return Err(SignedError::TooLarge);
    }
    let fields: Fields<'_> = serde_json::from_slice(payload).map_err(|_| SignedError::Malformed)?;
    let signature = decode_base64url(fields.sig)
        .and_then(|bytes| <[u8; 64]>::try_from(bytes.as_slice()).ok())
        .ok_or(SignedError::Malformed)?;
    Ok(Wire {
        at: fields.at,
        signature,
        msg: fields.msg,
    })
}

fn signed_bytes(topic: &str, at_ms: u64, msg: &[u8]) -> Vec<u8> {
    let at = at_ms.to_string();
    let mut bytes = Vec::with_capacity(CONTEXT.len() + topic.len() + at.len() + msg.len() + 2);
    bytes.extend_from_slice(CONTEXT);
    bytes.extend_from_slice(topic.as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(at.as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(msg);
    bytes
}

/// The seed inside an Ed25519 PKCS#8 document (v1 or v2, RFC 8410): the OCTET STRING holding
/// the 32-byte CurvePrivateKey, `04 22 04 20 <seed>`, right after the algorithm identifier.
fn pkcs8_seed(pkcs8: &[u8]) -> Option<[u8; 32]> {
    const ALGORITHM: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70]; // OID 1.3.101.112 (Ed25519)
    const PRIVATE_KEY: [u8; 4] = [0x04, 0x22, 0x04, 0x20];
    let after_oid = pkcs8.windows(5).position(|w| w == ALGORITHM)? + ALGORITHM.len();
    let rest = pkcs8.get(after_oid..)?;
    let start = rest.windows(4).position(|w| w == PRIVATE_KEY)? + PRIVATE_KEY.len();
    rest.get(start..start + 32)?.try_into().ok()
}

/// A fresh random signing key as its base64url seed (for enrollment and tests).
pub fn generate_seed() -> String {
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .expect("the system random source works");
    encode_base64url(&seed)
}

fn encode_base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

#[cfg(test)]
#[path = "signed_tests.rs"]
mod tests;
