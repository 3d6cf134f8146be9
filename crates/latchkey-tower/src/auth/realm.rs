//! [`Realm`]: the realm named in `WWW-Authenticate` challenges, checked once.

use std::fmt;

/// The realm named in `WWW-Authenticate: Bearer realm="…"`: visible ASCII or spaces,
/// without `"` or `\`, so that it can be quoted as is.
///
/// # Example
///
/// ```
/// use latchkey_tower::Realm;
///
/// let realm = Realm::try_from("orders").unwrap();
/// assert_eq!(realm.as_str(), "orders");
/// assert!(Realm::try_from("a\"b").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Realm(String);

impl Realm {
    /// A realm from a literal, checked like [`http::HeaderName::from_static`].
    ///
    /// # Panics
    ///
    /// When `realm` is not a valid realm: a mistake in the program's text, not in its input.
    /// Use `Realm::try_from` for a realm read at run time.
    pub fn from_static(realm: &'static str) -> Realm {
        Realm::try_from(realm).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The realm's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for Realm {
    type Error = InvalidRealm;

    fn try_from(realm: &str) -> Result<Realm, InvalidRealm> {
        if realm
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
        {
            Ok(Realm(realm.to_owned()))
        } else {
            Err(InvalidRealm(realm.to_owned()))
        }
    }
}

/// A realm holding `"`, `\` or a character that is not visible ASCII or a space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRealm(String);

impl fmt::Display for InvalidRealm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a realm is visible ASCII or spaces, without `\"` or `\\`: {:?}",
            self.0
        )
    }
}

impl std::error::Error for InvalidRealm {}
