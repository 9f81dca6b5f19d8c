//! Secrets that cross the broker encrypted to their one reader.
//!
//! Signing ([`crate::signed`]) stops anyone on the broker from *changing* what is said, but
//! whoever may subscribe can still *read* it. Two things in flight are worth reading: the TURN
//! credentials inside a session grant (good for relaying through the site's TURN server for an
//! hour) and what a camera sends back to a relayed control request (snapshots). Those travel
//! as libsodium-style sealed boxes (`crypto_box_seal`: an ephemeral X25519 key, XSalsa20-
//! Poly1305), encrypted to the reader's key:
//!
//! - TURN credentials to the device, under its enrolled key;
//! - control replies to the gateways, under the grant key.
//!
//! Both keys are the Ed25519 keys that already exist, used for X25519 through the standard
//! birational map (as libsodium's `crypto_sign_ed25519_*_to_curve25519` and age's ssh-ed25519
//! recipients do): the X25519 secret is the clamped first half of SHA-512 of the Ed25519 seed,
//! the X25519 public key the Montgomery form of the Ed25519 public key. So nothing new has to
//! be enrolled, copied or rotated. On the wire a sealed value is base64url without padding.

use base64::Engine as _;
use crypto_box::aead::OsRng;
use crypto_box::{PublicKey, SecretKey};
use curve25519_dalek::edwards::CompressedEdwardsY;

/// Why a sealed value did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("not base64url")]
    Encoding,
    #[error("does not open with this key (tampered, or sealed to another key)")]
    WrongKey,
}

/// Whom to seal to: the X25519 twin of an Ed25519 public key.
#[derive(Clone)]
pub struct Recipient {
    key: PublicKey,
}

impl Recipient {
    /// From the 32 bytes of an Ed25519 public key; `None` if they are not a curve point.
    pub fn from_ed25519(public: &[u8; 32]) -> Option<Self> {
        let point = CompressedEdwardsY(*public).decompress()?;
        Some(Self {
            key: PublicKey::from(point.to_montgomery().to_bytes()),
        })
    }

    /// `plaintext` sealed to this recipient, base64url.
    pub fn seal(&self, plaintext: &[u8]) -> String {
        let sealed = self
            .key
            .seal(&mut OsRng, plaintext)
            .expect("sealing with a valid key and the OS RNG cannot fail");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)
    }
}

/// What opens values sealed to one Ed25519 key holder.
pub struct Opener {
    key: SecretKey,
}

impl Opener {
    /// From the 32-byte Ed25519 seed.
    pub fn from_ed25519_seed(seed: &[u8; 32]) -> Self {
        let hash = ring::digest::digest(&ring::digest::SHA512, seed);
        let mut scalar = [0u8; 32];
        scalar.copy_from_slice(&hash.as_ref()[..32]);
        // X25519 clamps the scalar itself; the Ed25519 secret scalar is the same clamped value.
        Self {
            key: SecretKey::from(scalar),
        }
    }

    /// The plaintext of a value sealed to this key.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SealError> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed.trim_end_matches('='))
            .map_err(|_| SealError::Encoding)?;
        self.key.unseal(&bytes).map_err(|_| SealError::WrongKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signed::{Signer, Verifier, generate_seed};

    fn holder() -> (Signer, Opener, Recipient) {
        let signer = Signer::from_seed_base64(&generate_seed()).unwrap();
        let opener = signer.opener();
        let recipient = Verifier::from_base64(&signer.public_key())
            .unwrap()
            .recipient()
            .unwrap();
        (signer, opener, recipient)
    }

    #[test]
    fn a_value_sealed_to_an_ed25519_public_key_opens_with_its_seed_only() {
        let (_, opener, recipient) = holder();
        let (_, stranger, _) = holder();
        let sealed = recipient.seal(b"turn:turn.example.org user:pass");
        assert_eq!(
            opener.open(&sealed).unwrap(),
            b"turn:turn.example.org user:pass"
        );
        assert_eq!(stranger.open(&sealed), Err(SealError::WrongKey));
        // Every seal is fresh (an ephemeral key each time), so equal secrets do not show.
        assert_ne!(sealed, recipient.seal(b"turn:turn.example.org user:pass"));
    }

    #[test]
    fn tampering_and_garbage_do_not_open() {
        let (_, opener, recipient) = holder();
        let sealed = recipient.seal(b"secret");
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(opener.open(&flipped), Err(SealError::WrongKey));
        assert_eq!(opener.open("!!"), Err(SealError::Encoding));
        assert_eq!(opener.open(""), Err(SealError::WrongKey));
    }

    #[test]
    fn a_gateway_key_from_pkcs8_opens_what_is_sealed_to_its_public_key() {
        let pkcs8 =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .unwrap();
        let signer = Signer::from_pkcs8(pkcs8.as_ref()).unwrap();
        let recipient = Verifier::from_base64(&signer.public_key())
            .unwrap()
            .recipient()
            .unwrap();
        assert_eq!(
            signer.opener().open(&recipient.seal(b"jpeg")).unwrap(),
            b"jpeg"
        );
    }
}
