//! Where a store lives: a directory (the embedded sled store) or a PostgreSQL database.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a store lives, as `--db` names it.
///
/// # Example
///
/// ```
/// use latchkey_core::Location;
///
/// let pg = Location::parse("postgres://latchkey:s3cret@db.internal/keys?sslmode=require");
/// assert!(pg.is_postgres());
/// // The password never reaches logs or error messages.
/// assert_eq!(pg.to_string(), "postgres://latchkey:***@db.internal/keys?sslmode=require");
/// assert_eq!(Location::parse("./latchkey-data").to_string(), "./latchkey-data");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory holding the embedded sled store.
    Dir(PathBuf),
    /// A PostgreSQL database.
    Postgres(DatabaseUrl),
}

impl Location {
    /// `postgres://…` and `postgresql://…` name a PostgreSQL database; anything else is a
    /// directory path.
    pub fn parse(text: &str) -> Location {
        if DatabaseUrl::is_url(text) {
            Location::Postgres(DatabaseUrl(text.to_owned()))
        } else {
            Location::Dir(PathBuf::from(text))
        }
    }

    /// Whether this names a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Location::Postgres(_))
    }

    /// The directory, for a sled store.
    pub fn as_dir(&self) -> Option<&Path> {
        match self {
            Location::Dir(path) => Some(path),
            Location::Postgres(_) => None,
        }
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Self {
        Location::Dir(path.to_owned())
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Self {
        Location::Dir(path)
    }
}

/// What `--db` refuses: a text that names a database some other way than a `postgres://`
/// URL, which [`Location::parse`] would take for a directory and make a new store in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    /// A URL of another scheme (`jdbc:postgresql://…`, `postgress://…`, `mysql://…`).
    #[error(
        "not a store location: a URL other than postgres:// or postgresql:// (not repeated \
         here: it may hold a password); give a postgres:// URL or a directory"
    )]
    OtherUrl,
    /// A `postgres://` URL mistyped into a path: `postgres:` or `postgresql:` without the
    /// `//`, `postgres//` without the `:`, a user and password (a `:` with an `@` after
    /// it), or a `password=` parameter.
    #[error(
        "not a store location: it looks like a mistyped postgres:// URL (not repeated here: \
         it may hold a password); write postgres://USER:PASSWORD@HOST/DB, or name a directory"
    )]
    MistypedUrl,
    /// A libpq keyword/value string (`host=db user=lk password=…`).
    #[error(
        "not a store location: a keyword/value connection string (not repeated here: it may \
         hold a password); give it as a postgres:// URL"
    )]
    KeywordString,
    /// Nothing (`--db ""`, an empty `LATCHKEY_DB`).
    #[error("not a store location: it is empty; give a directory or a postgres:// URL")]
    Empty,
}

/// The libpq connection keywords that, as a word of their own, make a text a connection
/// string rather than a path.
const KEYWORDS: [&str; 7] = [
    "host=",
    "hostaddr=",
    "port=",
    "dbname=",
    "user=",
    "password=",
    "sslmode=",
];

/// [`Location::parse`], refusing a text that only looks like a directory because it names a
/// database in some other way: a mistake that would otherwise make a new, empty store in a
/// directory named after a connection string, password and all, and print that name.
///
/// ```
/// use latchkey_core::{Location, LocationError};
///
/// assert!("./latchkey-data".parse::<Location>().unwrap().as_dir().is_some());
/// assert!("postgres://lk@db/keys".parse::<Location>().unwrap().is_postgres());
/// assert_eq!("postgress://lk:pw@db/keys".parse::<Location>(), Err(LocationError::OtherUrl));
/// assert_eq!(
///     "host=db user=lk password=pw".parse::<Location>(),
///     Err(LocationError::KeywordString)
/// );
/// assert_eq!(
///     "postgres//lk:pw@db/keys".parse::<Location>(),
///     Err(LocationError::MistypedUrl)
/// );
/// ```
impl std::str::FromStr for Location {
    type Err = LocationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().is_empty() {
            return Err(LocationError::Empty);
        }
        if DatabaseUrl::is_url(text) {
            return Ok(Location::parse(text));
        }
        if text.contains("://") {
            return Err(LocationError::OtherUrl);
        }
        let keyword = |word: &str| {
            let word = word.to_ascii_lowercase();
            KEYWORDS.iter().any(|k| word.starts_with(k))
        };
        if text.split_whitespace().any(keyword) {
            return Err(LocationError::KeywordString);
        }
        let lower = text.trim_start().to_ascii_lowercase();
        // A user and password: a `:` with an `@` after it, whatever lies between (a
        // password may hold `/`).
        let credentials = text
            .find(':')
            .is_some_and(|colon| text[colon..].contains('@'));
        let scheme = ["postgres:", "postgresql:", "postgres//", "postgresql//"];
        if scheme.iter().any(|s| lower.starts_with(s)) || credentials || lower.contains("password=")
        {
            return Err(LocationError::MistypedUrl);
        }
        Ok(Location::parse(text))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Dir(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => fmt::Display::fmt(url, f),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Dir(path) => f.debug_tuple("Dir").field(path).finish(),
            Location::Postgres(url) => f.debug_tuple("Postgres").field(url).finish(),
        }
    }
}

/// A PostgreSQL connection URL. It may hold a password, so `Display` and `Debug` print it
/// with the password replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    fn is_url(text: &str) -> bool {
        let lower = text.get(..13).unwrap_or(text).to_ascii_lowercase();
        lower.starts_with("postgres://") || lower.starts_with("postgresql://")
    }

    /// The URL with its password, for the database client only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// The URL without its password: in the user-info part and in a `password=` parameter.
    ///
    /// The user-info is cut where the database client cuts it: at the first `@` after the
    /// scheme, wherever it stands (a password may hold `/` or `?`), and on to the last `@`
    /// of the host part that follows.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let scheme_end = url.find("://").map_or(0, |i| i + 3);
        let (head, rest) = url.split_at(scheme_end);
        let (user_info, rest) = match rest.find('@') {
            Some(first) => {
                let host_end = rest[first..]
                    .find(['/', '?'])
                    .map_or(rest.len(), |i| first + i);
                let last = first + rest[first..host_end].rfind('@').unwrap_or(0);
                (Some(&rest[..last]), &rest[last..])
            }
            None => (None, rest),
        };
        let user_info = match user_info {
            Some(info) => match info.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => info.to_owned(),
            },
            None => String::new(),
        };
        let url = format!("{head}{user_info}{rest}");
        match url.split_once('?') {
            Some((path, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        // `password`, and libpq's `sslpassword` (a client key's passphrase),
                        // however their names are spelled: the driver decodes a name's
                        // percent-encoding (`pass%77ord` is `password`: re-check s53 H1).
                        Some((k, _))
                            if percent_encoding::percent_decode_str(k)
                                .decode_utf8_lossy()
                                .to_ascii_lowercase()
                                .ends_with("password") =>
                        {
                            format!("{k}=***")
                        }
                        _ => pair.to_owned(),
                    })
                    .collect();
                format!("{path}?{}", query.join("&"))
            }
            None => url,
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_location_is_refused() {
        for text in ["", "  "] {
            let err = text.parse::<Location>().unwrap_err();
            assert!(matches!(err, LocationError::Empty), "{text:?}: {err}");
        }
        assert!("./store".parse::<Location>().is_ok());
    }

    #[test]
    fn urls_and_paths_are_told_apart() {
        assert!(Location::parse("postgresql://h/db").is_postgres());
        assert!(Location::parse("POSTGRES://h/db").is_postgres());
        assert!(!Location::parse("postgres-data").is_postgres());
        assert_eq!(
            Location::parse("/var/lib/latchkey").as_dir(),
            Some(Path::new("/var/lib/latchkey"))
        );
    }

    /// A URL mistyped into a path is refused without being repeated; directories whose
    /// names merely look alike are kept.
    #[test]
    fn a_mistyped_url_is_refused_and_not_repeated() {
        for text in [
            "postgres:u:pw@h/db",
            "PostgreSQL:/u:pw@h/db",
            " postgres:pw@h",
            "postgres//u:pw@h/db",
            "u:pw@h:5432/db",
            "./stores/u:pw@h",
            "postgres//lk:p/w@db/keys",
            "lk:p/w@db/keys",
            "postgres//db/keys?password=pw",
            "postgresql//db/keys",
        ] {
            let err = text.parse::<Location>().unwrap_err();
            assert_eq!(err, LocationError::MistypedUrl, "{text:?}");
            assert!(!err.to_string().contains("pw"), "{err}");
        }
        for dir in [
            "postgres-data",
            "postgres/data",
            "./data@home",
            "/srv/a:b/store",
            "C:latchkey",
        ] {
            assert!(
                dir.parse::<Location>().is_ok_and(|l| l.as_dir().is_some()),
                "{dir}"
            );
        }
    }

    #[test]
    fn no_password_is_ever_printed() {
        for (url, shown) in [
            ("postgres://u:pw@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://h/db?user=u&password=pw",
                "postgres://h/db?user=u&password=***",
            ),
            ("postgresql://u:p@ss@h", "postgresql://u:***@h"),
            // The client takes the user-info up to the first `@`, past `/` and `?`.
            ("postgres://u:ab/pw@h/db", "postgres://u:***@h/db"),
            (
                "postgres://u:p?pw@h/db?sslmode=require",
                "postgres://u:***@h/db?sslmode=require",
            ),
            ("postgres://u:p/pw@h:5432", "postgres://u:***@h:5432"),
            (
                "postgres://h/db?password=pw&application_name=a@b",
                "postgres://h/db?password=***&application_name=a@b",
            ),
            (
                "postgres://h/db?sslkey=/k&sslpassword=pw&PASSWORD=pw",
                "postgres://h/db?sslkey=/k&sslpassword=***&PASSWORD=***",
            ),
            (
                "postgres://h/db?pass%77ord=pw&%70assword=pw&sslpass%57ORD=pw",
                "postgres://h/db?pass%77ord=***&%70assword=***&sslpass%57ORD=***",
            ),
        ] {
            let location = Location::parse(url);
            assert_eq!(location.to_string(), shown);
            assert!(!format!("{location:?}").contains("pw"));
        }
    }
}
