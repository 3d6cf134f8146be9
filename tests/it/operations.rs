//! Operations: a full disk, a damaged store at start, backup and restore, key import.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::harness::{Daemon, Fixture, Run, latchkey};

/// A small tmpfs, unmounted on drop; `None` (the caller skips, saying why) when mounting
/// is refused, as it is to a user that is not root.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills it to the last block with one file, returned.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path().join("filler");
        let mut file = fs::File::create(&filler).unwrap();
        // Bounded by the tmpfs's size: big chunks, then small ones until none fits.
        for chunk in [64 * 1024, 512] {
            let bytes = vec![0xA5u8; chunk];
            for _ in 0..100_000 {
                if file
                    .write_all(&bytes)
                    .and_then(|()| file.sync_all())
                    .is_err()
                {
                    break;
                }
            }
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

#[test]
fn a_full_disk_answers_507_verification_goes_on_and_writes_come_back() {
    let Some(tmpfs) = Tmpfs::mount("32m") else {
        eprintln!("skipped: cannot mount a tmpfs here (the test needs root)");
        return;
    };
    let db = tmpfs.path().join("store");
    let daemon = Daemon::start(&db);
    let admin = daemon.admin_key.clone().unwrap();
    let user = daemon.http(
        "POST",
        "/v1/users",
        Some(&admin),
        Some(json!({"name": "bot"})),
    );
    let user_id = user.body["id"].as_str().unwrap().to_owned();
    let new_key = json!({"name": "k", "user_id": user_id});
    let key = daemon.http("POST", "/v1/keys", Some(&admin), Some(new_key.clone()));
    assert_eq!(key.status, 201, "{}", key.text);
    let (key_id, secret) = (
        key.body["id"].as_str().unwrap(),
        key.body["secret"].as_str().unwrap(),
    );
    let audit_len = |daemon: &Daemon| {
        let audit = daemon.http("GET", "/v1/audit?limit=1000", Some(&admin), None);
        audit.body["items"].as_array().unwrap().len()
    };
    let events = audit_len(&daemon);

    let filler = tmpfs.fill();
    let refused = |daemon: &Daemon| {
        let created = daemon.http("POST", "/v1/keys", Some(&admin), Some(new_key.clone()));
        created.problem(507, "storage_full");
        assert_eq!(
            created.headers["content-type"], "application/problem+json",
            "{}",
            created.text
        );
        let revoked = daemon.http(
            "POST",
            &format!("/v1/keys/{key_id}/revoke"),
            Some(&admin),
            None,
        );
        revoked.problem(507, "storage_full");
    };
    let verifies = |daemon: &Daemon| {
        let answer = daemon.http(
            "POST",
            "/v1/verify",
            Some(&admin),
            Some(json!({"key": secret})),
        );
        assert_eq!(answer.body["valid"], true, "{}", answer.text);
    };
    refused(&daemon);
    verifies(&daemon);
    assert_eq!(
        audit_len(&daemon),
        events,
        "a refused write changes nothing"
    );

    // A restart while the disk is full: it starts, serves verification, refuses writes.
    assert!(daemon.terminate().success());
    let daemon = Daemon::start(&db);
    assert_eq!(daemon.admin_key, None, "{}", daemon.banner);
    verifies(&daemon);
    refused(&daemon);

    // Space comes back: writes work again without a restart.
    fs::remove_file(filler).unwrap();
    let created = daemon.http("POST", "/v1/keys", Some(&admin), Some(new_key));
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(audit_len(&daemon), events + 1);
    let chain = daemon.http("GET", "/v1/audit/verify", Some(&admin), None);
    assert_eq!(chain.status, 200, "{}", chain.text);
    assert!(chain.body["broken"].is_null(), "{}", chain.text);
}

#[test]
fn a_damaged_store_is_refused_at_start_and_never_reinitialised() {
    let f = Fixture::new();
    f.user("bot", "");
    let db = f.db();
    let Fixture { dir, daemon, .. } = f;
    assert!(daemon.terminate().success());
    fs::remove_file(db.join("db")).unwrap();
    for args in [vec!["serve", "--listen", "127.0.0.1:0"], vec!["init"]] {
        let run = Run::of(latchkey().args(&args).arg("--db").arg(&db));
        let line = run.fails(1, "latchkey restore");
        assert!(line.contains(&db.display().to_string()), "{line}");
        assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
        assert!(
            !run.stdout.contains("Secret"),
            "no new admin key: {}",
            run.stdout
        );
    }
    assert!(!db.join("db").exists(), "nothing re-created the store");
    drop(dir);
}
