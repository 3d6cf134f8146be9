//! The key format: `<prefix>_<env>_<id>_<secret><checksum>`.
//!
//! ```text
//! lk_live_4fT9kQ2mX8pZ_9S1xk7tQ0OpvLkVd8AI9hpH7Qq3MxG9N0a1b2c
//! └┬┘ └┬─┘ └────┬─────┘ └──────────────┬───────────────┘└─┬──┘
//! prefix env   id (12)            secret (32)          checksum (6)
//! ```
//!
//! The checksum is the CRC-32 (IEEE) of everything before it, as six base62 digits, so a
//! mistyped or forged-shape key is rejected before any store read, and secret scanners can
//! check a candidate offline.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::base62;

/// Length of the public id, in base62 characters (≈ 71 bits).
pub const ID_LEN: usize = 12;
/// Length of the secret, in base62 characters (≈ 190 bits, above the 128 required).
pub const SECRET_LEN: usize = 32;
/// Length of the checksum, in base62 characters.
pub const CHECKSUM_LEN: usize = 6;
/// Longest well-formed key: an 8-character prefix.
pub const MAX_KEY_LEN: usize = 8 + 1 + 4 + 1 + ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN;
const MIN_KEY_LEN: usize = MAX_KEY_LEN - 6;
/// Longest display prefix (`lk_live_4fT9kQ2mX8pZ`): a key up to its public id. A longer
/// key reference that is not a UUID may be a full key given by mistake, never echoed.
pub const MAX_DISPLAY_PREFIX_LEN: usize = 8 + 1 + 4 + 1 + ID_LEN;

/// Why a string is not a well-formed key. Parsing never touches a store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The string is shorter or longer than any key can be.
    #[error("a key is {MIN_KEY_LEN} to {MAX_KEY_LEN} characters long")]
    Length,
    /// The parts are not separated as `<prefix>_<env>_<id>_<secret>`.
    #[error("a key has the shape <prefix>_<env>_<id>_<secret>")]
    Shape,
    /// The prefix is not 2 to 8 characters of `[a-z0-9]`.
    #[error("a key prefix is 2 to 8 characters of [a-z0-9]")]
    Prefix,
    /// The environment is neither `live` nor `test`.
    #[error("a key's environment is `live` or `test`")]
    Env,
    /// The id or the secret holds a character outside base62.
    #[error("a key's id and secret are base62")]
    Alphabet,
    /// The checksum does not match: a typo, or not a latchkey key.
    #[error("the key's checksum does not match")]
    Checksum,
}

/// Which environment a key belongs to: `live` or `test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Env {
    /// Production traffic.
    #[default]
    Live,
    /// Test traffic; a service may refuse these.
    Test,
}

impl Env {
    /// The lowercase name used in keys and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Env::Live => "live",
            Env::Test => "test",
        }
    }
}

impl fmt::Display for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Env {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "live" => Ok(Env::Live),
            "test" => Ok(Env::Test),
            _ => Err(ParseError::Env),
        }
    }
}

/// A store's key prefix: 2 to 8 characters of `[a-z0-9]`, `lk` by default.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Prefix(String);

impl Prefix {
    /// Validates a prefix.
    ///
    /// ```
    /// use latchkey_core::Prefix;
    /// assert_eq!(Prefix::new("acme").unwrap().as_str(), "acme");
    /// assert!(Prefix::new("Acme").is_err());
    /// ```
    pub fn new(prefix: &str) -> Result<Self, ParseError> {
        let ok = (2..=8).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Prefix(prefix.to_owned()))
        } else {
            Err(ParseError::Prefix)
        }
    }

    /// The prefix text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Prefix {
    fn default() -> Self {
        Prefix("lk".to_owned())
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Prefix {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Prefix::new(&value)
    }
}

impl From<Prefix> for String {
    fn from(value: Prefix) -> Self {
        value.0
    }
}

/// A key's public id: 12 base62 characters, stored in plain and used for an O(1) lookup.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicId([u8; ID_LEN]);

impl PublicId {
    /// Validates a public id.
    pub fn parse(id: &str) -> Result<Self, ParseError> {
        let bytes: [u8; ID_LEN] = id.as_bytes().try_into().map_err(|_| ParseError::Shape)?;
        if base62::is_base62(&bytes) {
            Ok(PublicId(bytes))
        } else {
            Err(ParseError::Alphabet)
        }
    }

    /// The id as a number below 62^12 (< 2^72), its digits read most significant first.
    pub(crate) fn to_number(self) -> u128 {
        self.0
            .iter()
            .fold(0u128, |n, &b| n * 62 + u128::from(base62::digit(b)))
    }

    /// The id whose number is `n`; `None` when `n` needs more than 12 digits.
    pub(crate) fn from_number(mut n: u128) -> Option<PublicId> {
        let mut out = [b'0'; ID_LEN];
        for slot in out.iter_mut().rev() {
            *slot = base62::ALPHABET[(n % 62) as usize];
            n /= 62;
        }
        (n == 0).then_some(PublicId(out))
    }

    /// The id's bytes, as stored.
    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        // Every constructor checks the bytes are base62, hence ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for PublicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicId({})", self.as_str())
    }
}

impl fmt::Display for PublicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the fixed-width tail `_<env>_<id>_<secret><checksum>` starts, counted from the end.
const TAIL_LEN: usize = 1 + 4 + 1 + ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN;

/// The environment written at its place in a presented key, read without parsing the key:
/// `None` when the length is not a key's or the text there is neither `live` nor `test`.
///
/// Only a hint for choosing a path (the full parse checks it again): nothing else about
/// the text is checked.
///
/// ```
/// use latchkey_core::{ApiKey, Env, Prefix, key::env_hint};
/// let key = ApiKey::generate(&Prefix::default(), Env::Test);
/// assert_eq!(env_hint(key.expose().as_bytes()), Some(Env::Test));
/// assert_eq!(env_hint(b"lk_live_short"), None);
/// ```
pub fn env_hint(text: &[u8]) -> Option<Env> {
    if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&text.len()) {
        return None;
    }
    let at = text.len() - TAIL_LEN + 1;
    match &text[at..at + 4] {
        b"live" => Some(Env::Live),
        b"test" => Some(Env::Test),
        _ => None,
    }
}

/// The id written at its place in a presented key, read without parsing the key, to look
/// up in the verify cache; `None` when the length is not a key's.
///
/// Unchecked: it may hold any bytes, so it must never be stored or inserted anywhere. It
/// can only find an entry that a fully verified key put in the cache, whose id is valid.
pub(crate) fn id_hint(text: &[u8]) -> Option<PublicId> {
    if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&text.len()) {
        return None;
    }
    let at = text.len() - TAIL_LEN + 6;
    text[at..at + ID_LEN].try_into().ok().map(PublicId)
}

/// A full API key, parsed and checked, or freshly generated.
///
/// It holds the secret, so its `Debug` and `Display` show only the display prefix followed
/// by `_…`; [`ApiKey::expose`] gives the full text, for the one time it is shown.
///
/// # Example
///
/// ```
/// use latchkey_core::{ApiKey, Env, Prefix};
///
/// let key = ApiKey::generate(&Prefix::default(), Env::Test);
/// let parsed = ApiKey::parse(key.expose()).unwrap();
/// assert_eq!(parsed.display_prefix(), key.display_prefix());
/// assert!(!format!("{key:?}").contains(key.secret()));
/// assert!(ApiKey::parse("lk_live_nope").is_err());
/// ```
#[derive(Clone, Eq)]
pub struct ApiKey {
    /// The key's bytes, then zeros: a fixed array, so parsing does not allocate.
    text: [u8; MAX_KEY_LEN],
    len: u8,
    env: Env,
    id: PublicId,
    /// Where the id starts: the prefix is `text[..id_at - 6]`.
    id_at: usize,
}

/// The key's text, secret included, does not outlive the key in memory.
impl Drop for ApiKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.text);
    }
}

impl ApiKey {
    /// Generates a new key from the OS CSPRNG.
    ///
    /// # Panics
    ///
    /// When the operating system's random source fails.
    pub fn generate(prefix: &Prefix, env: Env) -> ApiKey {
        let id = base62::random(ID_LEN);
        let secret = zeroize::Zeroizing::new(base62::random(SECRET_LEN));
        let mut text = zeroize::Zeroizing::new(String::with_capacity(MAX_KEY_LEN));
        text.push_str(prefix.as_str());
        text.push('_');
        text.push_str(env.as_str());
        text.push('_');
        text.push_str(&id);
        text.push('_');
        text.push_str(&secret);
        let sum = checksum(text.as_bytes());
        text.push_str(std::str::from_utf8(&sum).expect("base62 is ASCII"));
        ApiKey::parse(&text).expect("a generated key parses")
    }

    /// Whether `text` (trimmed) is a key's full text, or one with a character mistyped (a
    /// wrong checksum, a character outside the alphabet): a text to handle as a secret,
    /// whatever else it was given as.
    ///
    /// ```
    /// use latchkey_core::{ApiKey, Env, Prefix};
    ///
    /// let key = ApiKey::generate(&Prefix::new("lk").unwrap(), Env::Live);
    /// assert!(ApiKey::has_its_shape(&format!(" {} ", key.expose())));
    /// assert!(!ApiKey::has_its_shape("billing-bot"));
    /// ```
    pub fn has_its_shape(text: &str) -> bool {
        matches!(
            ApiKey::parse(text.trim()),
            Ok(_) | Err(ParseError::Checksum | ParseError::Alphabet)
        )
    }

    /// The display prefix of a text that [has a key's shape](ApiKey::has_its_shape), its
    /// secret left out: what a key found pasted somewhere, even mistyped, is looked up by.
    ///
    /// ```
    /// use latchkey_core::{ApiKey, Env, Prefix};
    ///
    /// let key = ApiKey::generate(&Prefix::new("lk").unwrap(), Env::Live);
    /// assert_eq!(ApiKey::display_prefix_of(key.expose()), Some(key.display_prefix()));
    /// assert_eq!(ApiKey::display_prefix_of("billing-bot"), None);
    /// ```
    pub fn display_prefix_of(text: &str) -> Option<&str> {
        let text = text.trim();
        if !ApiKey::has_its_shape(text) {
            return None;
        }
        text.rfind('_').map(|at| &text[..at])
    }

    /// Parses a presented key strictly: lengths, alphabet, environment and checksum.
    ///
    /// Never panics, never allocates, and touches no store.
    pub fn parse(text: &str) -> Result<ApiKey, ParseError> {
        ApiKey::parse_bytes(text.as_bytes())
    }

    /// [`ApiKey::parse`] for raw bytes, such as a header value: no UTF-8 check is needed
    /// first, since a key is ASCII and anything else is rejected.
    pub fn parse_bytes(bytes: &[u8]) -> Result<ApiKey, ParseError> {
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&bytes.len()) {
            return Err(ParseError::Length);
        }
        let prefix_len = bytes.len() - TAIL_LEN;
        let (prefix, rest) = bytes.split_at(prefix_len);
        if !(2..=8).contains(&prefix_len)
            || !prefix
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(ParseError::Prefix);
        }
        if rest[0] != b'_' || rest[5] != b'_' || rest[6 + ID_LEN] != b'_' {
            return Err(ParseError::Shape);
        }
        let env = match &rest[1..5] {
            b"live" => Env::Live,
            b"test" => Env::Test,
            _ => return Err(ParseError::Env),
        };
        let id = &rest[6..6 + ID_LEN];
        let secret_and_sum = &rest[7 + ID_LEN..];
        if !base62::is_base62(id) || !base62::is_base62(secret_and_sum) {
            return Err(ParseError::Alphabet);
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if checksum(body) != sum {
            return Err(ParseError::Checksum);
        }
        let id = PublicId(id.try_into().map_err(|_| ParseError::Shape)?);
        let mut text = [0u8; MAX_KEY_LEN];
        text[..bytes.len()].copy_from_slice(bytes);
        Ok(ApiKey {
            text,
            len: bytes.len() as u8,
            env,
            id,
            id_at: prefix_len + 6,
        })
    }

    /// The key's bytes, for the hot path: [`ApiKey::text`] checks UTF-8 at every call.
    fn bytes(&self) -> &[u8] {
        &self.text[..usize::from(self.len)]
    }

    /// The store prefix's bytes.
    pub(crate) fn prefix_bytes(&self) -> &[u8] {
        &self.bytes()[..self.id_at - 6]
    }

    /// The secret's bytes, for hashing.
    pub(crate) fn secret_bytes(&self) -> &[u8] {
        let start = self.id_at + ID_LEN + 1;
        &self.bytes()[start..start + SECRET_LEN]
    }

    /// The whole key's bytes, for the verify cache's tag.
    pub(crate) fn expose_bytes(&self) -> &[u8] {
        self.bytes()
    }

    /// The key's text. Parsing checked it is ASCII.
    fn text(&self) -> &str {
        std::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or_default()
    }

    /// The store prefix, `lk` in `lk_live_…`.
    pub fn prefix(&self) -> &str {
        &self.text()[..self.id_at - 6]
    }

    /// The environment.
    pub fn env(&self) -> Env {
        self.env
    }

    /// The public id.
    pub fn id(&self) -> PublicId {
        self.id
    }

    /// `<prefix>_<env>_<id>`: safe to show in lists and logs.
    pub fn display_prefix(&self) -> &str {
        &self.text()[..self.id_at + ID_LEN]
    }

    /// The secret part, without the checksum. Only the store's hashing should need it.
    pub fn secret(&self) -> &str {
        let start = self.id_at + ID_LEN + 1;
        &self.text()[start..start + SECRET_LEN]
    }

    /// The full key text. Show it once, at creation; never log it.
    pub fn expose(&self) -> &str {
        self.text()
    }
}

/// Compares the whole key text in constant time: the time taken does not tell how much of
/// a guessed secret was right. (The other fields are derived from the text.)
impl PartialEq for ApiKey {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq::constant_time_eq_n(&self.text, &other.text)
    }
}

/// Shows a text that may hold a key the way [`ApiKey`]'s `Debug` does: its display prefix
/// when it parses as a key, `"<redacted>"` otherwise. For the `Debug` of types that keep a
/// presented key as a plain string (a request body, a setting).
///
/// ```
/// use latchkey_core::{ApiKey, Env, Prefix, key::Redacted};
///
/// let key = ApiKey::generate(&Prefix::default(), Env::Live);
/// let shown = format!("{:?}", Redacted(key.expose()));
/// assert_eq!(shown, format!("\"{}_…\"", key.display_prefix()));
/// assert_eq!(format!("{:?}", Redacted("hunter2")), "\"<redacted>\"");
/// ```
#[derive(Clone, Copy)]
pub struct Redacted<'a>(pub &'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match ApiKey::parse(self.0.trim()) {
            Ok(key) => write!(f, "\"{}_…\"", key.display_prefix()),
            Err(_) => f.write_str("\"<redacted>\""),
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}_…)", self.display_prefix())
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_…", self.display_prefix())
    }
}

/// The checksum of a key body: CRC-32 (IEEE) as six base62 digits.
pub fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    base62::encode_fixed::<CHECKSUM_LEN>(u64::from(crc32fast::hash(body)))
}

/// Finds well-formed keys (valid checksum included) in a text, for secret scanning.
///
/// Yields each key's byte offset and its parsed form, in order. A key is found wherever it
/// stands, also glued to other letters (`DEPLOY_lk_live_…`, `…_KEY=lk_live_…x`): the search
/// anchors on `_live_` / `_test_`, reads the fixed-width tail after it and tries each
/// prefix length before it, and the checksum decides. Look-alikes with a wrong checksum are
/// skipped, so a hit is almost certainly a real key. Any bytes may surround a key: the text
/// need not be UTF-8.
///
/// ```
/// use latchkey_core::{ApiKey, Env, Prefix, find_keys};
/// let key = ApiKey::generate(&Prefix::default(), Env::Live);
/// let text = format!("export DEPLOY_{}", key.expose());
/// let found: Vec<_> = find_keys(&text).collect();
/// assert_eq!(found.len(), 1);
/// assert_eq!((found[0].0, &found[0].1), (14, &key));
/// ```
pub fn find_keys<T: AsRef<[u8]> + ?Sized>(text: &T) -> impl Iterator<Item = (usize, ApiKey)> + '_ {
    let bytes = text.as_ref();
    let mut at = 0;
    std::iter::from_fn(move || {
        while let Some(found) = bytes.get(at..)?.iter().position(|&b| b == b'_') {
            let anchor = at + found;
            at = anchor + 1;
            let env = bytes.get(anchor + 1..anchor + 6);
            if env != Some(b"live_") && env != Some(b"test_") {
                continue;
            }
            let Some(end) = Some(anchor + TAIL_LEN).filter(|&end| end <= bytes.len()) else {
                continue;
            };
            let prefix_lens = (1..=8)
                .take_while(|&len| {
                    anchor >= len && matches!(bytes[anchor - len], b'a'..=b'z' | b'0'..=b'9')
                })
                .filter(|&len| len >= 2);
            for len in prefix_lens {
                if let Ok(key) = ApiKey::parse_bytes(&bytes[anchor - len..end]) {
                    at = end;
                    return Some((anchor - len, key));
                }
            }
        }
        None
    })
}

/// `text` with every latchkey key's full text in it replaced by `(a key's full text, not
/// shown)`: for a message that may repeat what a caller typed (a query parameter, a form
/// field, an unknown member), so that a key pasted there by mistake does not come back in
/// the answer, nor reach whatever logs it.
///
/// ```
/// use latchkey_core::{ApiKey, Env, Prefix, without_keys};
/// let key = ApiKey::generate(&Prefix::default(), Env::Live);
/// let said = without_keys(&format!("no such user: {}", key.expose()));
/// assert_eq!(said, "no such user: (a key's full text, not shown)");
/// ```
pub fn without_keys(text: &str) -> String {
    replace_keys(text, |_| "(a key's full text, not shown)").unwrap_or_else(|| text.to_owned())
}

/// `text` with every latchkey key's full text in it replaced by what `with` gives for it
/// (its display prefix, say); `None` when it holds no key.
///
/// ```
/// use latchkey_core::{ApiKey, Env, Prefix, replace_keys};
/// let key = ApiKey::generate(&Prefix::default(), Env::Live);
/// let said = replace_keys(&format!("q={}", key.expose()), ApiKey::display_prefix);
/// assert_eq!(said, Some(format!("q={}", key.display_prefix())));
/// assert_eq!(replace_keys("q=nightly", ApiKey::display_prefix), None);
/// ```
pub fn replace_keys(text: &str, with: impl Fn(&ApiKey) -> &str) -> Option<String> {
    let mut said = String::with_capacity(text.len());
    let mut from = 0;
    for (at, key) in find_keys(text) {
        // A key glued to the one before may start inside it (its prefix made of the other's
        // last characters): what is replaced then runs on to its end.
        if at >= from {
            said.push_str(&text[from..at]);
            said.push_str(with(&key));
        }
        from = from.max(at + key.expose().len());
    }
    (from > 0).then(|| said + &text[from..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn valid() -> ApiKey {
        ApiKey::generate(&Prefix::default(), Env::Live)
    }

    /// Builds a key text with a correct checksum from its parts.
    fn assemble(prefix: &str, env: &str, id: &str, secret: &str) -> String {
        let body = format!("{prefix}_{env}_{id}_{secret}");
        let sum = checksum(body.as_bytes());
        format!("{body}{}", std::str::from_utf8(&sum).unwrap())
    }

    /// Review s51 F2: a key glued after another whose prefix is that key's last two
    /// characters is found starting inside it; hiding both panicked on the overlap.
    #[test]
    fn keys_found_overlapping_are_hidden_whole() {
        let first = loop {
            let key = valid();
            let tail = &key.expose()[key.expose().len() - 2..];
            if tail.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9')) {
                break key;
            }
        };
        let text = first.expose();
        let second = ApiKey::generate(&Prefix::new(&text[text.len() - 2..]).unwrap(), Env::Live);
        let glued = format!("before {text}{} after", &second.expose()[2..]);
        assert_eq!(find_keys(&glued).count(), 2, "the two overlap");
        let shown = without_keys(&glued);
        assert_eq!(shown, "before (a key's full text, not shown) after");
    }

    #[track_caller]
    fn check(input: &str, expected: Result<(), ParseError>) {
        assert_eq!(
            ApiKey::parse(input).map(|_| ()),
            expected,
            "input: {input:?}"
        );
    }

    #[test]
    fn parse_table() {
        let id = "4fT9kQ2mX8pZ";
        let secret = "9S1xk7tQ0OpvLkVd8AI9hpH7Qq3MxG9N";
        check(&assemble("lk", "live", id, secret), Ok(()));
        check(&assemble("acme2026", "test", id, secret), Ok(()));
        check(&assemble("l", "live", id, secret), Err(ParseError::Length));
        check(
            &assemble("acme20261", "live", id, secret),
            Err(ParseError::Length),
        );
        check(&assemble("LK", "live", id, secret), Err(ParseError::Prefix));
        check(&assemble("lk", "prod", id, secret), Err(ParseError::Env));
        check(&assemble("lk", "LIVE", id, secret), Err(ParseError::Env));
        check(
            &assemble("lk", "live", "4fT9kQ2mX8p-", secret),
            Err(ParseError::Alphabet),
        );
        check(
            &assemble("lk", "live", id, "9S1xk7tQ0OpvLkVd8AI9hpH7Qq3MxG9_"),
            Err(ParseError::Alphabet),
        );
        check(
            &assemble("lk", "live", "4fT9kQ2mX8p", &format!("{secret}x")),
            Err(ParseError::Shape),
        );
        check("", Err(ParseError::Length));
        check(&"a".repeat(64 * 1024), Err(ParseError::Length));
        // The example from PRODUCT.md has a made-up checksum.
        check(
            "lk_live_4fT9kQ2mX8pZ_9S1xk7tQ0OpvLkVd8AI9hpH7Qq3MxG9N0a1b2c",
            Err(ParseError::Checksum),
        );
    }

    #[test]
    fn hints_read_the_parts_where_a_parse_finds_them() {
        for prefix in ["lk", "acme2026"] {
            let key = ApiKey::generate(&Prefix::new(prefix).unwrap(), Env::Test);
            let text = key.expose().as_bytes();
            assert_eq!(env_hint(text), Some(Env::Test));
            assert_eq!(id_hint(text), Some(key.id()));
        }
        let text = assemble(
            "lk",
            "prod",
            "4fT9kQ2mX8pZ",
            "9S1xk7tQ0OpvLkVd8AI9hpH7Qq3MxG9N",
        );
        assert_eq!(env_hint(text.as_bytes()), None);
        assert_eq!(env_hint(b"lk_live_"), None);
        assert_eq!(id_hint(&[b'_'; MAX_KEY_LEN + 1]), None);
    }

    #[test]
    fn checksum_is_crc32_ieee_in_base62() {
        // zlib.crc32(b"123456789") == 0xCBF43926, the standard check value.
        let expected = base62::encode_fixed::<6>(0xCBF4_3926);
        assert_eq!(checksum(b"123456789"), expected);
    }

    #[test]
    fn parts_and_display_prefix() {
        let key = ApiKey::parse(&assemble(
            "lk",
            "test",
            "4fT9kQ2mX8pZ",
            "9S1xk7tQ0OpvLkVd8AI9hpH7Qq3MxG9N",
        ))
        .unwrap();
        assert_eq!(key.prefix(), "lk");
        assert_eq!(key.env(), Env::Test);
        assert_eq!(key.id().as_str(), "4fT9kQ2mX8pZ");
        assert_eq!(key.display_prefix(), "lk_test_4fT9kQ2mX8pZ");
        assert_eq!(key.secret(), "9S1xk7tQ0OpvLkVd8AI9hpH7Qq3MxG9N");
    }

    #[test]
    fn debug_and_display_redact_the_secret() {
        let key = valid();
        for shown in [format!("{key:?}"), format!("{key:#?}"), format!("{key}")] {
            assert!(!shown.contains(key.secret()), "{shown}");
            assert!(shown.contains(key.display_prefix()), "{shown}");
        }
        let text = format!("  {}\n", key.expose());
        for shown in [
            format!("{:?}", Redacted(&text)),
            format!("{:#?}", Some(Redacted(&text))),
        ] {
            assert!(!shown.contains(key.secret()), "{shown}");
            assert!(shown.contains(key.display_prefix()), "{shown}");
        }
        // Not a key: nothing of it shows, not even a prefix-like start.
        let almost = &key.expose()[..key.expose().len() - 1];
        assert_eq!(format!("{:?}", Redacted(almost)), "\"<redacted>\"");
    }

    #[test]
    fn keys_are_equal_only_when_their_whole_text_is() {
        let key = valid();
        assert_eq!(key, ApiKey::parse(key.expose()).unwrap());
        assert_ne!(key, valid());
        // Same id, another secret (with its own valid checksum).
        let other = assemble("lk", "live", key.id().as_str(), &"A".repeat(SECRET_LEN));
        let other = ApiKey::parse(&other).unwrap();
        assert_eq!(other.id(), key.id());
        assert_ne!(key, other);
    }

    #[test]
    fn public_ids_round_trip_through_numbers() {
        for id in ["000000000000", "zzzzzzzzzzzz", "4fT9kQ2mX8pZ"] {
            let parsed = PublicId::parse(id).unwrap();
            assert_eq!(PublicId::from_number(parsed.to_number()), Some(parsed));
        }
        assert_eq!(PublicId::parse("000000000010").unwrap().to_number(), 62);
        assert_eq!(PublicId::from_number(62u128.pow(12)), None);
    }

    #[test]
    fn find_keys_skips_look_alikes() {
        let key = valid();
        let mut forged = key.expose().to_owned();
        forged.pop();
        forged.push(if key.expose().ends_with('0') {
            '1'
        } else {
            '0'
        });
        let text = format!("token = \"{}\"\nother = \"{forged}\"\n", key.expose());
        let found: Vec<_> = find_keys(&text).collect();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 9);
        assert_eq!(found[0].1, key);
    }

    #[test]
    fn find_keys_finds_keys_glued_to_other_text() {
        let lk = valid();
        let long = ApiKey::generate(&Prefix::new("acme2026").unwrap(), Env::Test);
        let (lk, long) = (lk.expose().as_bytes(), long.expose().as_bytes());
        let cases: [(&[&[u8]], &[usize]); 7] = [
            (&[b"DEPLOY_", lk], &[7]),
            (&[b"x9", lk, b"SUFFIX_live_"], &[2]),
            (&[lk, lk], &[0, lk.len()]),
            (&[b"zz", long, b"_", lk], &[2, 3 + long.len()]),
            (&[b"\xff\xfe", lk, b"\x80"], &[2]),
            (&[b"token=", &lk[..lk.len() - 1]], &[]),
            (&[b"lk_live_", lk], &[8]),
        ];
        for (parts, offsets) in cases {
            let text = parts.concat();
            let found: Vec<usize> = find_keys(&text[..]).map(|(at, _)| at).collect();
            assert_eq!(found, offsets, "in {:?}", String::from_utf8_lossy(&text));
            for (at, key) in find_keys(&text[..]) {
                assert_eq!(key.expose().as_bytes(), &text[at..at + key.expose().len()]);
            }
        }
    }

    proptest! {
        #[test]
        fn generate_parse_round_trips(prefix in "[a-z0-9]{2,8}", test in any::<bool>()) {
            let env = if test { Env::Test } else { Env::Live };
            let key = ApiKey::generate(&Prefix::new(&prefix).unwrap(), env);
            let parsed = ApiKey::parse(key.expose()).unwrap();
            prop_assert_eq!(&parsed, &key);
            prop_assert_eq!(parsed.prefix(), prefix.as_str());
            prop_assert_eq!(parsed.env(), env);
            prop_assert!(key.expose().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        }

        #[test]
        fn every_single_character_change_is_rejected(pos in 0usize..MAX_KEY_LEN, replacement in any::<char>()) {
            let key = valid();
            let mut chars: Vec<char> = key.expose().chars().collect();
            let pos = pos % chars.len();
            prop_assume!(chars[pos] != replacement);
            chars[pos] = replacement;
            let changed: String = chars.into_iter().collect();
            prop_assert!(ApiKey::parse(&changed).is_err(), "accepted {changed:?}");
        }

        #[test]
        fn arbitrary_input_never_panics(input in ".{0,100}") {
            let _ = ApiKey::parse(&input);
        }

        #[test]
        fn arbitrary_bytes_of_key_length_never_panic(input in "[a-z0-9_A-Z]{56,66}") {
            let _ = ApiKey::parse(&input);
        }
    }
}
