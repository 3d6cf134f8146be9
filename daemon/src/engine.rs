//! Which embedded engine a new store gets: `--engine sled|redb` (env `LATCHKEY_ENGINE`,
//! config `engine`) on the commands that can create a store (`init`, `serve` on an empty
//! path, `restore`).
//!
//! The engine is a choice for a new store only: an existing store opens with the engine
//! whose files it holds. So the setting is checked against the store before anything is
//! opened or created, and a mismatch is refused rather than ignored: naming `redb` for a
//! sled store would otherwise leave the operator believing the store moved. The default,
//! when nothing names an engine, is core's [`Engine::default`] (sled): flipping it there
//! flips it here.

use std::fmt;

use latchkey_core::{Engine, Location};

/// The engine the flag, the environment or the config file asked for, if any.
pub type Asked = Option<Engine>;

/// The engine a store created at `location` gets, after checking the one `asked` for
/// against what is there. Reads the directory only; changes nothing.
///
/// # Errors
///
/// An engine asked for with a PostgreSQL location (engines are for directories), or a
/// directory that holds a store (or the remains of one) of the other engine.
pub fn for_new_store(location: &Location, asked: Asked) -> anyhow::Result<Engine> {
    let Some(asked) = asked else {
        return Ok(Engine::default());
    };
    match location {
        Location::Postgres(_) => anyhow::bail!(
            "engine {asked} asked for (--engine, LATCHKEY_ENGINE or `engine` in the config \
             file), but the store is the PostgreSQL database {location}: an engine is chosen \
             for a store in a directory only"
        ),
        Location::Dir(path) => match Engine::found_at(path) {
            Some(found) if found != asked => anyhow::bail!(
                "engine {asked} asked for (--engine, LATCHKEY_ENGINE or `engine` in the config \
                 file), but {} holds a {found} store: the engine is chosen for a new store \
                 only, and an existing one opens with its own. To move it to {asked}: \
                 `latchkey --db {} backup --out FILE`, then `latchkey restore FILE --engine \
                 {asked} --db NEW_DIR`",
                path.display(),
                path.display(),
            ),
            _ => Ok(asked),
        },
    }
}

/// How a store names its engine to people (logs, `migrate`, `restore`): `sled`, `redb`, or
/// `postgres` for a store in PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Named(pub Option<Engine>);

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(engine) => write!(f, "{engine}"),
            None => f.write_str("postgres"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_asked_for_must_fit_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let at = Location::Dir(store.clone());
        // Nothing there: whatever is asked for, or the default.
        assert_eq!(for_new_store(&at, None).unwrap(), Engine::Sled);
        assert_eq!(
            for_new_store(&at, Some(Engine::Redb)).unwrap(),
            Engine::Redb
        );
        // A sled store: sled or nothing named is fine, redb is refused with the way over.
        latchkey_core::Store::create_empty(&store, "lk", Default::default()).unwrap();
        assert_eq!(for_new_store(&at, None).unwrap(), Engine::Sled);
        assert_eq!(
            for_new_store(&at, Some(Engine::Sled)).unwrap(),
            Engine::Sled
        );
        let refused = for_new_store(&at, Some(Engine::Redb))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("holds a sled store"), "{refused}");
        assert!(refused.contains("restore FILE --engine redb"), "{refused}");
        // PostgreSQL: no engine to choose.
        let url = Location::parse("postgres://u:pw-never-shown@db.internal/keys");
        assert!(for_new_store(&url, None).is_ok());
        let refused = for_new_store(&url, Some(Engine::Sled))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("PostgreSQL"), "{refused}");
        assert!(!refused.contains("pw-never-shown"), "{refused}");
    }

    #[test]
    fn stores_are_named_by_their_engine() {
        assert_eq!(Named(Some(Engine::Redb)).to_string(), "redb");
        assert_eq!(Named(None).to_string(), "postgres");
    }
}
