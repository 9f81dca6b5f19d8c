//! Long-lived API tokens: `fct_` + 32 random bytes (base64url). The config stores only their
//! SHA-256, so reading the config file does not reveal a usable token.

use base64::Engine as _;

/// Prefix that tells an API token from a login session token.
pub const PREFIX: &str = "fct_";

/// A new token and the hex SHA-256 to put in the config.
pub fn generate() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let token = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let digest = sha256_hex(&token);
    (token, digest)
}

/// Lowercase hex SHA-256 of a token.
pub fn sha256_hex(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_random_and_hash_to_their_digest() {
        let (a, ha) = super::generate();
        let (b, _) = super::generate();
        assert!(a.starts_with(super::PREFIX) && a.len() > 40);
        assert_ne!(a, b);
        assert_eq!(super::sha256_hex(&a), ha);
        assert_eq!(
            super::sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
