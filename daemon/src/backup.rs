//! `latchkey backup` and `latchkey restore`.
//!
//! A backup is taken through the daemon (`GET /v1/backup`, streamed to the file) or, with
//! `--db`, from a store no daemon holds; both run core's `Store::backup`, so the file is
//! the same. A restore makes a new store from a file, in an empty or new directory only:
//! it never touches a store that exists.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use latchkey_core::{BackupHeader, Store, StoreConfig};
use serde_json::json;

use crate::cli::EngineArg;
use crate::config::Settings;
use crate::engine::Named;
use crate::output::print_json;
use crate::transport::HttpTransport;

/// `latchkey backup --out FILE`.
pub async fn backup(settings: &Settings, out: &Path) -> anyhow::Result<()> {
    // Written beside the target and renamed at the end: FILE is whole, or absent.
    let partial = partial_path(out);
    anyhow::ensure!(
        !out.exists(),
        "{} already exists: choose another --out, the backup never overwrites a file",
        out.display()
    );
    let store = settings.management_store()?;
    let mut file = fs::File::create_new(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let taken = match store {
        Some(db) => {
            let config = StoreConfig::default().usage_flush_interval(None);
            let store = Store::open_at(db, config)?;
            store
                .backup(&mut file)
                .map(Taken::Local)
                .map_err(anyhow::Error::from)
        }
        None => {
            let transport = HttpTransport::for_settings(settings)?;
            transport
                .download("/v1/backup", &mut file)
                .await
                .map(|()| Taken::Remote)
        }
    };
    let done = taken.and_then(|taken| {
        file.sync_all().context("writing the backup")?;
        fs::rename(&partial, out).with_context(|| format!("cannot write {}", out.display()))?;
        Ok(taken)
    });
    let taken = match done {
        Ok(taken) => taken,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    let bytes = fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    let seq = match &taken {
        Taken::Local(header) => Some(header.seq),
        Taken::Remote => None,
    };
    if settings.json {
        print_json(&json!({"file": out, "bytes": bytes, "seq": seq}));
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

enum Taken {
    Local(BackupHeader),
    Remote,
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_owned();
    name.push(".partial");
    out.with_file_name(name)
}

/// `latchkey restore FILE --db PATH|URL [--engine sled|redb]`: the new store in a
/// directory gets the engine asked for, so a backup also moves a store between engines.
pub fn restore(settings: &Settings, file: &Path, engine: &EngineArg) -> anyhow::Result<()> {
    let db = settings.db.clone().context(
        "name the new store with --db PATH|URL (an empty or new directory, or an empty database)",
    )?;
    let config = StoreConfig::default().engine(settings.engine(engine)?);
    let input = fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (store, restored) = Store::restore_at(&db, std::io::BufReader::new(input), config)
        .with_context(|| format!("cannot restore {}", file.display()))?;
    let engine = Named(store.engine());
    let chain = store.verify_audit()?;
    store.flush()?;
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
    anyhow::ensure!(
        chain.broken.is_none(),
        "the restored audit chain does not verify"
    );
    Ok(())
}
