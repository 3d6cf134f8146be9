//! `latchkey backup` and `latchkey restore`.
//!
//! A backup is taken through the daemon (`GET /v1/backup`, streamed to the file) or, with
//! `--db`, from a store no daemon holds; both run core's `Store::backup`, so the file is
//! the same. A restore makes a new store from a file, in an empty or new directory only:
//! it never touches a store that exists.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use latchkey_core::{CheckedBackup, Store, StoreConfig};
use serde_json::json;

use crate::cli::RestoreArgs;
use crate::config::Settings;
use crate::engine::Named;
use crate::output::print_json;
use crate::partial::{self, Partial};
use crate::transport::HttpTransport;

/// `latchkey backup --out FILE`.
pub async fn backup(settings: &Settings, out: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        out != Path::new("-"),
        "--out - would name a file `-`: a backup is written to a file only (it is checked \
         whole before it gets its name); give a path"
    );
    // A key pasted where the file's name goes would stand in a directory listing, and in
    // this command's own answer.
    anyhow::ensure!(
        latchkey_core::find_keys(out.as_os_str().as_encoded_bytes())
            .next()
            .is_none(),
        "--out holds a key's full text: choose another name (nothing was written)"
    );
    // Written beside the target under a name of its own, then linked to FILE at the end:
    // FILE is whole, or absent. A killed run leaves its partial file behind; the next run
    // removes it (see `partial`).
    anyhow::ensure!(
        !out.exists(),
        "{} already exists: choose another --out, the backup never overwrites a file",
        out.display()
    );
    let store = settings.management_store()?;
    partial::remove_abandoned(out);
    let Partial {
        path: partial,
        mut file,
    } = Partial::create(out, create_private)
        .with_context(|| format!("cannot create a partial file beside {}", out.display()))?;
    // Every failure from here on reaches the removal of the partial file below.
    let seq = match store {
        Some(db) => {
            let config = StoreConfig::default().usage_flush_interval(None);
            Store::open_at(db, config)
                .and_then(|store| {
                    let header = store.backup(&mut file);
                    crate::server::close_before_exit(store);
                    header
                })
                .map(|header| Some(header.seq))
                .map_err(anyhow::Error::from)
        }
        None => match HttpTransport::for_settings(settings) {
            Ok(transport) => transport
                .download("/v1/backup", &mut file)
                .await
                .map(|headers| backup_seq(&headers)),
            Err(e) => Err(e),
        },
    };
    let done = seq.and_then(|seq| {
        file.sync_all().context("writing the backup")?;
        let checked = check_whole(&partial)?;
        publish(&partial, out)?;
        Ok((seq, checked.broken))
    });
    let (seq, broken) = match done {
        Ok(done) => done,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    let bytes = fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    // A copy of a store whose trail was edited or damaged is still a copy of its keys:
    // written, and said, since a restore of it will refuse it unless told otherwise.
    if let Some(broken) = &broken {
        // On stderr whatever the log filter: the command's own word on what it wrote.
        eprintln!(
            "warning: {} is a whole backup, but the store's audit chain breaks in it at #{} \
             ({}): `latchkey audit verify` shows it; a restore of it needs `--keep-broken-chain`",
            out.display(),
            broken.seq,
            latchkey_core::without_keys(&broken.reason)
        );
    }
    if settings.json {
        let chain_breaks_at = broken.map(|b| b.seq);
        print_json(
            &json!({"file": out, "bytes": bytes, "seq": seq, "chain_breaks_at": chain_breaks_at}),
        );
    } else {
        match seq {
            Some(seq) => println!(
                "Backed up to {} ({bytes} bytes, changes up to #{seq}).",
                out.display()
            ),
            None => println!("Backed up to {} ({bytes} bytes).", out.display()),
        }
    }
    Ok(())
}

/// Reads the file written back whole before it gets its name, as a restore would: an
/// answer that is no backup (a proxy's or a sign-in page's 200) or one cut short is never
/// called a backup.
fn check_whole(partial: &Path) -> anyhow::Result<CheckedBackup> {
    let written = fs::File::open(partial)
        .with_context(|| format!("cannot read back {}", partial.display()))?;
    Store::check_backup(std::io::BufReader::new(written))
        .context("what was received is not a whole backup: no file was written")
}

/// The newest change a backup from the daemon holds, as its answer names it.
fn backup_seq(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get("x-latchkey-backup-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Gives the finished `partial` its name `out`, refusing if `out` exists by now: a hard
/// link fails on an existing name where a rename would replace it.
fn publish(partial: &Path, out: &Path) -> anyhow::Result<()> {
    publish_by(partial, out, |from, to| fs::hard_link(from, to))
}

/// [`publish`] with the link made by `link`. Where the file system has no hard links (a
/// FAT-formatted drive, some network mounts: `EPERM` or `ENOTSUP`), the file is copied
/// into a new `out` instead, created only if absent and synced before the partial goes.
fn publish_by(
    partial: &Path,
    out: &Path,
    link: impl Fn(&Path, &Path) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    use std::io::ErrorKind;
    let linked = match link(partial, out) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::PermissionDenied | ErrorKind::Unsupported
            ) =>
        {
            copy_new(partial, out)
        }
        other => other,
    };
    linked.map_err(|e| {
        if e.kind() == ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} was created while the backup was taken: choose another --out, the \
                 backup never overwrites a file",
                out.display()
            )
        } else {
            anyhow::Error::new(e).context(format!("cannot write {}", out.display()))
        }
    })?;
    // The new name made durable: "Backed up" should survive a power cut. The file is whole
    // under its name by now, so a directory that cannot be synced (some network mounts
    // refuse) is said, not called a failure: an error here would leave a backup behind that
    // the next run, finding it, refuses to overwrite.
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    let synced = fs::File::open(parent.unwrap_or(Path::new("."))).and_then(|dir| dir.sync_all());
    if let Err(e) = synced {
        tracing::warn!(error = %e, file = %out.display(), "the backup is written, but its directory could not be synced: a power cut now may take its name away");
    }
    // The backup is whole under its name: a partial file that stays is only clutter.
    if let Err(e) = fs::remove_file(partial) {
        tracing::warn!(error = %e, file = %partial.display(), "could not remove the backup's partial file");
    }
    Ok(())
}

/// Creates a new file (never over an existing one) that only its owner may read: a
/// backup holds the store's hash key and every key's hash, whatever the umask.
fn create_private(path: &Path) -> std::io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Copies `from` into a new file `to` (never over an existing one) and syncs it.
fn copy_new(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut target = create_private(to)?;
    let copied =
        std::io::copy(&mut fs::File::open(from)?, &mut target).and_then(|_| target.sync_all());
    if copied.is_err() {
        let _ = fs::remove_file(to);
    }
    copied
}

/// `latchkey restore FILE --db PATH|URL [--engine sled|redb] [--keep-broken-chain]`: the
/// new store in a directory gets the engine asked for, so a backup also moves a store
/// between engines. A backup whose audit chain does not verify restores nothing, unless
/// kept as it is (then reported, and the command succeeds).
pub fn restore(settings: &Settings, args: &RestoreArgs) -> anyhow::Result<()> {
    let db = settings.db.clone().context(
        "name the new store with --db PATH|URL (an empty or new directory, or an empty database)",
    )?;
    let file = &args.file;
    let config = StoreConfig::default().engine(settings.engine(&args.engine)?);
    let input = fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let input = std::io::BufReader::new(input);
    let restored = if args.keep_broken_chain {
        Store::restore_keeping_broken_chain_at(&db, input, config)
    } else {
        Store::restore_at(&db, input, config)
    };
    let (store, restored) =
        restored.with_context(|| format!("cannot restore {}", file.display()))?;
    let engine = Named(store.engine());
    let checked = store
        .verify_audit()
        .and_then(|chain| store.flush().map(|()| chain));
    crate::server::close_before_exit(store);
    let chain = checked?;
    let header = &restored.header;
    if settings.json {
        print_json(&json!({
            "db": db.to_string(),
            "engine": engine.to_string(),
            "records": header.records,
            "seq": header.seq,
            "lineage": restored.lineage,
            "chain_verified": chain.broken.is_none(),
        }));
    } else {
        println!(
            "Restored {} records, changes up to #{}, into {db} ({engine}); its new lineage is {}.",
            header.records, header.seq, restored.lineage
        );
        match &chain.broken {
            None => println!("The audit chain verifies ({} events).", chain.events),
            Some(b) => println!("The audit chain breaks at #{}: {}", b.seq, b.reason),
        }
    }
    let _ = std::io::stdout().flush();
    // Reached with a broken chain only when asked to keep it.
    if chain.broken.is_some() {
        tracing::warn!("restored with an audit chain that does not verify (--keep-broken-chain)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishing_never_replaces_a_file_made_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("latchkey.backup");
        let partial = partial::path_for(&out);
        fs::write(&partial, "new").unwrap();
        fs::write(&out, "made meanwhile").unwrap();
        let error = publish(&partial, &out).unwrap_err().to_string();
        assert!(error.contains("never overwrites"), "{error}");
        assert_eq!(fs::read_to_string(&out).unwrap(), "made meanwhile");
        fs::remove_file(&out).unwrap();
        publish(&partial, &out).unwrap();
        assert_eq!(fs::read_to_string(&out).unwrap(), "new");
        assert!(!partial.exists());
    }

    #[test]
    fn without_hard_links_the_file_is_copied_never_over_another() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("latchkey.backup");
        let partial = partial::path_for(&out);
        let no_links = |_: &Path, _: &Path| -> std::io::Result<()> {
            Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
        };
        fs::write(&partial, "new").unwrap();
        fs::write(&out, "made meanwhile").unwrap();
        let error = publish_by(&partial, &out, no_links)
            .unwrap_err()
            .to_string();
        assert!(error.contains("never overwrites"), "{error}");
        assert_eq!(fs::read_to_string(&out).unwrap(), "made meanwhile");
        fs::remove_file(&out).unwrap();
        publish_by(&partial, &out, no_links).unwrap();
        assert_eq!(fs::read_to_string(&out).unwrap(), "new");
        assert!(!partial.exists());
    }
}
