//! Sealed list cursors.
//!
//! A list cursor holds a position in an index: a sort key (a key's name, a time) and a
//! record id. A tenant-bound caller's page scans past records it may not see and goes on
//! from the last one it read, so that position may be another tenant's record. A cursor
//! therefore leaves the store encrypted and authenticated (ChaCha20-Poly1305, a random
//! nonce each) under a key derived from the store's hashing key: to a caller it is opaque,
//! and one it altered, or one of another store, is not a cursor at all. Every process
//! serving one store derives the same key, so a cursor works on any daemon of a cluster.
//!
//! The sealed text is padded to a multiple of [`PAD_TO`] bytes (every position a list
//! makes fits in one), so its length does not tell the length of the name it stops at.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::hash::HashKey;
use crate::limits::MAX_CURSOR_BYTES;

/// The sealed positions' lengths are padded to a multiple of this: a position holds at
/// most a name ([`crate::limits::MAX_NAME_BYTES`]), a key id and a few bytes of framing.
const PAD_TO: usize = 512;

/// Seals and opens the cursors of one store.
pub(crate) struct CursorSeal(LessSafeKey);

impl CursorSeal {
    pub(crate) fn new(hash_key: &HashKey) -> CursorSeal {
        let key = blake3::derive_key("latchkey 2026-12-02 list cursors", hash_key.as_bytes());
        let key = UnboundKey::new(&CHACHA20_POLY1305, &key).expect("a 32-byte key");
        CursorSeal(LessSafeKey::new(key))
    }

    /// A cursor's text for `position`: hex of nonce, ciphertext and tag. The plain text is
    /// the position's length (two bytes), the position and zeros up to a multiple of
    /// [`PAD_TO`].
    pub(crate) fn seal(&self, position: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source failed");
        let len = u16::try_from(position.len()).expect("a position is far below 64 KiB");
        let mut sealed = Vec::with_capacity(PAD_TO);
        sealed.extend_from_slice(&len.to_be_bytes());
        sealed.extend_from_slice(position);
        sealed.resize(sealed.len().next_multiple_of(PAD_TO), 0);
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut sealed,
            )
            .expect("a cursor is far below ChaCha20-Poly1305's message limit");
        hex::encode([nonce.as_slice(), &sealed].concat())
    }

    /// The position a cursor's text holds; `None` for any text this store did not seal.
    pub(crate) fn open(&self, text: &str) -> Option<Vec<u8>> {
        if text.len() > MAX_CURSOR_BYTES {
            return None;
        }
        let bytes = hex::decode(text).ok()?;
        let (nonce, sealed) = bytes.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::empty(), &mut sealed)
            .ok()?;
        let (len, rest) = plain.split_first_chunk::<2>()?;
        Some(rest.get(..usize::from(u16::from_be_bytes(*len)))?.to_vec())
    }
}

impl std::fmt::Debug for CursorSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorSeal(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_is_opaque_and_opens_only_unaltered_in_its_own_store() {
        let seal = CursorSeal::new(&HashKey::generate());
        let position = b"n\x00a-name-of-another-tenant\x00\x01\x02";
        let text = seal.seal(position);
        assert!(!text.contains(&hex::encode(b"another")), "{text}");
        assert_ne!(seal.seal(position), text, "a fresh nonce each time");
        assert_eq!(seal.open(&text).as_deref(), Some(&position[..]));
        // One hex digit changed, cut short, not hex, or of another store: no cursor.
        let mut altered = text.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(seal.open(std::str::from_utf8(&altered).unwrap()), None);
        assert_eq!(seal.open(&text[..20]), None);
        assert_eq!(seal.open("zz"), None);
        assert_eq!(CursorSeal::new(&HashKey::generate()).open(&text), None);
    }

    #[test]
    fn a_cursor_s_length_does_not_tell_its_position_s_length() {
        let seal = CursorSeal::new(&HashKey::generate());
        let short = seal.seal(b"n\x00a\x00\x01");
        let long = [b"n\x00".as_slice(), &[b'x'; 200], b"\x00\x01"].concat();
        assert_eq!(seal.seal(&long).len(), short.len());
        assert_eq!(seal.open(&seal.seal(&long)), Some(long));
        assert_eq!(seal.open(&short).as_deref(), Some(&b"n\x00a\x00\x01"[..]));
        assert!(short.len() <= MAX_CURSOR_BYTES, "{}", short.len());
    }
}
