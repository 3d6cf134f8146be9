//! Keyed BLAKE3 hashing of secrets, compared in constant time.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A store's 32-byte hashing key, made from the OS CSPRNG when the store is initialised.
///
/// Keying the hash means a copied table of hashes cannot be checked against guessed
/// secrets without this key as well. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct HashKey([u8; 32]);

impl HashKey {
    /// A fresh random key.
    ///
    /// # Panics
    ///
    /// When the operating system's random source fails.
    pub fn generate() -> HashKey {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source failed");
        HashKey(bytes)
    }

    /// A key from stored bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> HashKey {
        HashKey(bytes)
    }

    /// The raw bytes, for storing.
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The keyed hash of a secret.
    ///
    /// ```
    /// use latchkey_core::HashKey;
    /// let key = HashKey::generate();
    /// let stored = key.hash("s3cret");
    /// assert!(stored.matches(&key.hash("s3cret")));
    /// assert!(!stored.matches(&key.hash("s3cre7")));
    /// ```
    pub fn hash(&self, secret: &str) -> SecretHash {
        SecretHash(blake3::keyed_hash(&self.0, secret.as_bytes()))
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(<redacted>)")
    }
}

/// The stored form of a secret. Equality is constant-time (`blake3::Hash`'s `PartialEq`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretHash(blake3::Hash);

impl SecretHash {
    /// The raw bytes, for the store's binary records.
    pub(crate) fn to_bytes(self) -> [u8; 32] {
        *self.0.as_bytes()
    }

    /// A hash from the store's binary records.
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> SecretHash {
        SecretHash(blake3::Hash::from_bytes(bytes))
    }

    /// Whether two hashes are equal, in constant time.
    pub fn matches(&self, other: &SecretHash) -> bool {
        // `blake3::Hash` implements `PartialEq` with `constant_time_eq`.
        self.0 == other.0
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(<redacted>)")
    }
}

impl Serialize for SecretHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.to_hex().as_str())
    }
}

impl<'de> Deserialize<'de> for SecretHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let hex = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        blake3::Hash::from_hex(hex.as_bytes())
            .map(SecretHash)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_hash_depends_on_the_key() {
        let (a, b) = (HashKey::generate(), HashKey::generate());
        assert!(!a.hash("x").matches(&b.hash("x")));
        assert!(
            a.hash("x")
                .matches(&HashKey::from_bytes(*a.as_bytes()).hash("x"))
        );
    }

    #[test]
    fn serde_round_trips_and_debug_redacts() {
        let h = HashKey::generate().hash("secret");
        let json = serde_json::to_string(&h).unwrap();
        let back: SecretHash = serde_json::from_str(&json).unwrap();
        assert!(back.matches(&h));
        assert_eq!(format!("{h:?}"), "SecretHash(<redacted>)");
        assert_eq!(format!("{:?}", HashKey::generate()), "HashKey(<redacted>)");
    }
}
