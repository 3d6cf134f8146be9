//! Creating a store: `latchkey init`, and `latchkey serve` on a path that holds none.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use latchkey_admin::api::KeyWithSecret;
use latchkey_core::{CreatedKey, Engine, Location, Store, StoreConfig, StoreError};
use serde_json::Value;

use crate::commands::print_secret_block;
use crate::engine::Named;
use crate::output::{Printed, fields};

/// A store's new admin key, and the file it goes to (`--admin-key-file`), if any.
pub type NewAdmin = (CreatedKey, Option<KeyFile>);

/// Opens the store at `location`, or initialises one there as `latchkey init` does when it
/// holds none (a new or empty directory, a database without latchkey's tables). The admin
/// key comes back only when it was just created, with `key_file` created just before the
/// store (so a store that exists leaves an existing key file alone, and a file that cannot
/// be created leaves no store). Of several processes that start at once on one empty
/// database, one creates the store and the others open it (their creation fails with
/// `AlreadyInitialized`, and their key files go).
pub fn open_or_init(
    location: &Location,
    prefix: &str,
    config: StoreConfig,
    key_file: Option<&Path>,
) -> anyhow::Result<(Store, Option<NewAdmin>)> {
    match Store::open_at(location, config.clone()) {
        Ok(store) => Ok((store, None)),
        Err(StoreError::NotInitialized { .. }) => {
            if let Some(rescued) = location.as_dir().and_then(Store::rescued_beside) {
                anyhow::bail!(
                    "{} holds no store, and {} beside it is what a daemon saved when the store that was there was removed under it: restore it (`latchkey restore {} --db {}`), or move it away to start a new store here",
                    location,
                    rescued.display(),
                    rescued.display(),
                    location
                );
            }
            let key_file = key_file.map(KeyFile::create).transpose()?;
            match Store::create_with_admin_at(location, prefix, config.clone()) {
                Ok((store, admin)) => Ok((store, Some((admin, key_file)))),
                Err(StoreError::AlreadyInitialized { .. }) => {
                    drop(key_file);
                    Ok((Store::open_at(location, config)?, None))
                }
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The created key as the API answers it: the record plus `secret`.
pub fn created_json(created: &CreatedKey) -> Value {
    serde_json::to_value(KeyWithSecret {
        key: created.key.clone(),
        secret: created.secret.expose().to_owned(),
    })
    .expect("keys serialize")
}

/// Prints a store's new admin key, once: the key block, or its JSON with `--json`. `store`
/// names the store and its engine.
pub fn print_admin_key(store: &str, created: &CreatedKey, printed: Printed) {
    if !printed.json(&created_json(created)) {
        println!("Initialised a latchkey store at {store}.");
        let user = format!("admin ({})", created.key.user_id);
        print_secret_block(&created.key, created.secret.expose(), &user);
    }
}

/// `--admin-key-file`: a new file, created with mode 0600 before the store is, that will
/// receive the admin key. Dropped unwritten, it removes itself: a start that fails, or that
/// finds the store already there, leaves no file behind.
#[derive(Debug)]
pub struct KeyFile {
    path: PathBuf,
    file: Option<File>,
}

impl KeyFile {
    /// Creates the file; fails if it exists (a key is never written over another one).
    pub fn create(path: &Path) -> anyhow::Result<KeyFile> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).map_err(|e| {
            let empty = e.kind() == std::io::ErrorKind::AlreadyExists
                && std::fs::metadata(path).is_ok_and(|m| m.len() == 0);
            let error =
                anyhow::Error::new(e).context(format!("cannot create the admin key file {}", path.display()));
            if empty {
                // Left by a start killed between creating the file and writing the key:
                // the key it was for is lost with it, so the store it made is no use.
                error.context(format!(
                    "{} is empty: a start stopped before writing its key leaves it so; remove it, and the store that start created if there is one, then run again",
                    path.display()
                ))
            } else {
                error
            }
        })?;
        Ok(KeyFile {
            path: path.to_owned(),
            file: Some(file),
        })
    }

    /// Writes the key (alone, with a newline) and syncs it; then tells where it went, once:
    /// the record without its secret, or its JSON with `secret_file` instead of `secret`.
    ///
    /// The store holding the key exists by now: when the file cannot be written (a full
    /// disk), the key is printed instead, once, rather than lost, and the file removed.
    pub fn write(
        mut self,
        store: &str,
        created: &CreatedKey,
        printed: Printed,
    ) -> anyhow::Result<()> {
        let mut file = self.file.take().expect("written once");
        let written = writeln!(file, "{}", created.secret.expose()).and_then(|()| file.sync_all());
        if let Err(e) = written {
            self.file = Some(file);
            tracing::error!(path = %self.path.display(), error = %e, "cannot write the admin key file: the key is printed instead");
            print_admin_key(store, created, printed);
            return Ok(());
        }
        let mut record = created_json(created);
        if let Some(record) = record.as_object_mut() {
            record.remove("secret");
            record.insert(
                "secret_file".to_owned(),
                Value::String(self.path.display().to_string()),
            );
        }
        if !printed.json(&record) {
            println!("Initialised a latchkey store at {store}.");
            print!(
                "{}",
                fields(&[
                    ("id", created.key.id.to_string()),
                    ("name", created.key.name.clone()),
                    ("user", format!("admin ({})", created.key.user_id)),
                    ("prefix", created.key.prefix.clone()),
                ])
            );
            println!("Secret written to {} (mode 0600).", self.path.display());
        }
        Ok(())
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `latchkey init`: creates the store with its admin group, user and key, and prints the
/// key once, or writes it to `key_file`. `engine` is the new store's (see `Settings::engine`).
pub fn run(
    location: &Location,
    prefix: &str,
    engine: Engine,
    json: bool,
    key_file: Option<&Path>,
) -> anyhow::Result<()> {
    // The file first: when it cannot be created, no store is either.
    let key_file = key_file.map(KeyFile::create).transpose()?;
    let config = StoreConfig::default().engine(engine);
    let (store, admin) = Store::create_with_admin_at(location, prefix, config)?;
    let announced = store
        .flush()
        .map_err(anyhow::Error::from)
        .and_then(|()| announce(&store, &admin, Printed::document(json), key_file));
    crate::server::close_before_exit(store);
    announced
}

/// Hands a new store's admin key out once: into the key file, or on stdout.
pub fn announce(
    store: &Store,
    admin: &CreatedKey,
    printed: Printed,
    key_file: Option<KeyFile>,
) -> anyhow::Result<()> {
    // `Location` prints a URL's password as `***`.
    let named = format!("{} ({})", store.location(), Named(store.engine()));
    match key_file {
        Some(file) => file.write(&named, admin, printed),
        None => {
            print_admin_key(&named, admin, printed);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use latchkey_core::{Location, Store, StoreConfig};

    use super::*;

    /// A key file that cannot be written once the store (and so the key) exists: the key is
    /// handed out on stdout instead of lost, and the file does not stay behind.
    #[test]
    fn an_unwritable_key_file_falls_back_to_printing_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::Dir(dir.path().join("store"));
        let (_store, admin) =
            Store::create_with_admin_at(&location, "lk", StoreConfig::default()).unwrap();
        let path = dir.path().join("admin.key");
        std::fs::write(&path, "").unwrap();
        // Opened for reading only: every write fails, as on a full disk.
        let file = KeyFile {
            path: path.clone(),
            file: Some(File::open(&path).unwrap()),
        };
        file.write("store", &admin, Printed::Json).unwrap();
        assert!(!path.exists());
    }
}
