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
//!
//! A cursor is also bound to its [`Listing`] (who lists, when bound to a tenant, and the
//! filters), as the seal's associated data: replayed into another tenant's list, or one of
//! other filters, it opens to nothing. Otherwise a caller given another's cursor could
//! list after its position and learn where a name it cannot see sorts among names it
//! chose (trust hunt s56 L2). A global caller's list without filters binds nothing, as
//! every cursor did before.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::hash::HashKey;
use crate::limits::MAX_CURSOR_BYTES;

/// The sealed positions' lengths are padded to a multiple of this: a position holds at
/// most a name ([`crate::limits::MAX_NAME_BYTES`]), a key id and a few bytes of framing.
const PAD_TO: usize = 512;

/// What a cursor is bound to besides its position: a list's caller (a tenant-bound one's
/// tenant and organization) and filters, each tagged and framed by its length so that no
/// two listings give the same bytes. Empty for a global caller's list without filters.
#[derive(Debug, Default)]
pub(crate) struct Listing(Vec<u8>);

impl Listing {
    /// This listing, also bound to `value` (when there is one) under `tag`.
    pub(crate) fn with(mut self, tag: u8, value: Option<&[u8]>) -> Listing {
        if let Some(value) = value {
            let len = u32::try_from(value.len()).expect("a filter is far below 4 GiB");
            self.0.push(tag);
            self.0.extend_from_slice(&len.to_be_bytes());
            self.0.extend_from_slice(value);
        }
        self
    }

    /// A listing by a caller bound to `tenant` (and `organization`), if it is.
    pub(crate) fn of(tenant: Option<&str>, organization: Option<&str>) -> Listing {
        Listing::default()
            .with(b't', tenant.map(str::as_bytes))
            .with(b'o', organization.map(str::as_bytes))
    }
}

/// Seals and opens the cursors of one store.
pub(crate) struct CursorSeal(LessSafeKey);

impl CursorSeal {
    pub(crate) fn new(hash_key: &HashKey) -> CursorSeal {
        let key = blake3::derive_key("latchkey 2026-12-02 list cursors", hash_key.as_bytes());
        let key = UnboundKey::new(&CHACHA20_POLY1305, &key).expect("a 32-byte key");
        CursorSeal(LessSafeKey::new(key))
    }

    /// A cursor's text for `position` in `listing`: hex of nonce, ciphertext and tag. The
    /// plain text is the position's length (two bytes), the position and zeros up to a
    /// multiple of [`PAD_TO`]; the listing is the associated data.
    pub(crate) fn seal(&self, position: &[u8], listing: &Listing) -> String {
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
                Aad::from(listing.0.as_slice()),
                &mut sealed,
            )
            .expect("a cursor is far below ChaCha20-Poly1305's message limit");
        hex::encode([nonce.as_slice(), &sealed].concat())
    }

    /// The position a cursor's text holds; `None` for any text this store did not seal
    /// for `listing`.
    pub(crate) fn open(&self, text: &str, listing: &Listing) -> Option<Vec<u8>> {
        if text.len() > MAX_CURSOR_BYTES {
            return None;
        }
        let bytes = hex::decode(text).ok()?;
        let (nonce, sealed) = bytes.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(listing.0.as_slice()), &mut sealed)
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
        let none = Listing::default();
        let position = b"n\x00a-name-of-another-tenant\x00\x01\x02";
        let text = seal.seal(position, &none);
        assert!(!text.contains(&hex::encode(b"another")), "{text}");
        assert_ne!(seal.seal(position, &none), text, "a fresh nonce each time");
        assert_eq!(seal.open(&text, &none).as_deref(), Some(&position[..]));
        // One hex digit changed, cut short, not hex, or of another store: no cursor.
        let mut altered = text.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            seal.open(std::str::from_utf8(&altered).unwrap(), &none),
            None
        );
        assert_eq!(seal.open(&text[..20], &none), None);
        assert_eq!(seal.open("zz", &none), None);
        assert_eq!(
            CursorSeal::new(&HashKey::generate()).open(&text, &none),
            None
        );
    }

    #[test]
    fn a_cursor_s_length_does_not_tell_its_position_s_length() {
        let seal = CursorSeal::new(&HashKey::generate());
        let none = Listing::default();
        let short = seal.seal(b"n\x00a\x00\x01", &none);
        let long = [b"n\x00".as_slice(), &[b'x'; 200], b"\x00\x01"].concat();
        assert_eq!(seal.seal(&long, &none).len(), short.len());
        assert_eq!(seal.open(&seal.seal(&long, &none), &none), Some(long));
        assert_eq!(
            seal.open(&short, &none).as_deref(),
            Some(&b"n\x00a\x00\x01"[..])
        );
        assert!(short.len() <= MAX_CURSOR_BYTES, "{}", short.len());
    }

    /// Sealed for one listing, a cursor opens in no other: not another tenant's, nor one
    /// of another filter, nor a filter added or dropped.
    #[test]
    fn a_cursor_opens_only_in_its_own_listing() {
        let seal = CursorSeal::new(&HashKey::generate());
        let listings = || {
            [
                Listing::default(),
                Listing::of(Some("acme"), None),
                Listing::of(Some("acme"), Some("east")),
                Listing::of(Some("acmee"), None),
                Listing::of(Some("acme"), None).with(b'q', Some(b"x")),
                Listing::default().with(b'q', Some(b"x")),
                Listing::default().with(b'q', Some(b"")),
                Listing::default().with(b's', Some(b"x")),
            ]
        };
        for (i, sealed_for) in listings().into_iter().enumerate() {
            let text = seal.seal(b"n\x00name\x00\x01", &sealed_for);
            for (j, opened_in) in listings().into_iter().enumerate() {
                assert_eq!(seal.open(&text, &opened_in).is_some(), i == j, "{i} in {j}");
            }
        }
    }
}
