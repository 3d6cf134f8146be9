//! Keyed hashing of secrets, compared in constant time: the stored keyed BLAKE3 hash, and
//! the verify cache's per-process tag of a whole presented key.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use siphasher::sip128::SipHasher13;

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
        self.hash_bytes(secret.as_bytes())
    }

    /// [`HashKey::hash`] of a secret's bytes.
    pub(crate) fn hash_bytes(&self, secret: &[u8]) -> SecretHash {
        SecretHash(blake3::keyed_hash(&self.0, secret))
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

/// The verify cache's key for [`Tag`]s: 128 random bits from the OS CSPRNG, made when a
/// store is opened and never stored, sent or shown. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub(crate) struct TagKey {
    k0: u64,
    k1: u64,
}

impl TagKey {
    /// A fresh random key.
    ///
    /// # Panics
    ///
    /// When the operating system's random source fails.
    pub(crate) fn generate() -> TagKey {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the OS random source failed");
        let (k0, k1) = bytes.split_at(8);
        TagKey {
            k0: u64::from_le_bytes(k0.try_into().expect("8 bytes")),
            k1: u64::from_le_bytes(k1.try_into().expect("8 bytes")),
        }
    }

    /// The tag of a presented key's whole text: SipHash-1-3 with a 128-bit output.
    ///
    /// SipHash is a pseudorandom function under its key (that is what it was designed as,
    /// unlike the fast hashers of hash tables), so without the key a tag can neither be
    /// computed nor matched by another text except by guessing 128 bits. The 1-3 variant
    /// (Rust's own `HashMap` hasher) rather than 2-4: a tag is never shown, so an attacker
    /// gets no output to analyse, only whether a request was answered from the cache, which
    /// says whether its text is exactly a valid key, as the 200 already does.
    pub(crate) fn tag(&self, text: &[u8]) -> Tag {
        let hasher = SipHasher13::new_with_keys(self.k0, self.k1);
        Tag(hasher.hash(text).as_bytes())
    }
}

impl fmt::Debug for TagKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TagKey(<redacted>)")
    }
}

/// A presented key's [`TagKey::tag`]: 128 bits, compared in constant time.
#[derive(Clone, Copy)]
pub(crate) struct Tag([u8; 16]);

impl Tag {
    /// Whether two tags are equal, in constant time.
    pub(crate) fn matches(&self, other: &Tag) -> bool {
        constant_time_eq::constant_time_eq_16(&self.0, &other.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tag(<redacted>)")
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

    #[test]
    fn tags_depend_on_the_whole_text_and_the_key() {
        let (a, b) = (TagKey::generate(), TagKey::generate());
        let text = b"lk_live_4fT9kQ2mX8pZ_9S1xk7tQ0OpvLkVd8AI9hpH7Qq3MxG9N0a1b2c";
        assert!(a.tag(text).matches(&a.tag(text)));
        assert!(!a.tag(text).matches(&b.tag(text)));
        for at in [0, 20, text.len() - 1] {
            let mut changed = *text;
            changed[at] ^= 1;
            assert!(!a.tag(text).matches(&a.tag(&changed)), "byte {at}");
        }
        assert!(!a.tag(text).matches(&a.tag(&text[..text.len() - 1])));
        assert_eq!(format!("{:?}", a.tag(text)), "Tag(<redacted>)");
        assert_eq!(format!("{a:?}"), "TagKey(<redacted>)");
    }
}
