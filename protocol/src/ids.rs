//! Validated identifiers.
//!
//! Ids end up inside MQTT topic names, so a device called `a/+/b` or `#` would let one party
//! subscribe to or publish on another's topics. Every id that crosses a trust boundary is parsed
//! into one of these newtypes first; the raw string is never used to build a topic.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is the empty string.
    #[error("id is empty")]
    Empty,
    /// The id is longer than [`MAX_ID_LEN`] bytes.
    #[error("id is {0} bytes long; the limit is {MAX_ID_LEN}")]
    TooLong(usize),
    /// The id holds a byte outside `[A-Za-z0-9_.-]` (MQTT wildcards, `/`, controls, spaces…).
    #[error("id contains {0:?} at byte {1}; only A-Z a-z 0-9 _ . - are allowed")]
    BadChar(char, usize),
}

/// Checks the id grammar shared by every id type: 1–64 bytes of `[A-Za-z0-9_.-]`.
pub fn validate_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(s.len()));
    }
    match s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        Some((at, c)) => Err(IdError::BadChar(c, at)),
        None => Ok(()),
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates an id.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                validate_id(s)?;
                Ok(Self(s.to_owned()))
            }

            /// The id as text; always safe to place in a topic level.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        // Deserializing validates too, so a hostile JSON payload cannot smuggle a bad id in.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A device's id, chosen by its owner (`garage`, `pi-kitchen`).
    DeviceId
);
id_type!(
    /// A signaling session's id: minted by the gateway from a CSPRNG, 128 bits as 32 hex digits.
    SessionId
);
id_type!(
    /// A gateway instance's id; names the reply topic that instance listens on.
    InstanceId
);

impl SessionId {
    /// Builds a session id from 16 random bytes (the caller supplies them from a CSPRNG, which
    /// keeps this crate free of I/O and of a particular RNG).
    pub fn from_random(bytes: [u8; 16]) -> Self {
        let mut s = String::with_capacity(32);
        for b in bytes {
            s.push_str(&format!("{b:02x}"));
        }
        Self(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        assert!(DeviceId::parse("Pi-4_kitchen.cam").is_ok());
        assert!(DeviceId::parse(&"a".repeat(MAX_ID_LEN)).is_ok());
    }

    #[test]
    fn rejects_topic_wildcards_separators_and_controls() {
        for bad in [
            "+",
            "#",
            "a/b",
            "a+b",
            "nul\0",
            "tab\t",
            "new\nline",
            "sp ace",
            "é",
        ] {
            assert!(
                matches!(DeviceId::parse(bad), Err(IdError::BadChar(..))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn rejects_empty_and_overlong() {
        assert_eq!(DeviceId::parse(""), Err(IdError::Empty));
        assert_eq!(
            DeviceId::parse(&"a".repeat(MAX_ID_LEN + 1)),
            Err(IdError::TooLong(MAX_ID_LEN + 1))
        );
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<DeviceId>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<DeviceId>("\"a/#\"").is_err());
    }

    #[test]
    fn session_ids_are_32_hex_digits() {
        let id = SessionId::from_random([0xab; 16]);
        assert_eq!(id.as_str().len(), 32);
        assert!(SessionId::parse(id.as_str()).is_ok());
    }
}
