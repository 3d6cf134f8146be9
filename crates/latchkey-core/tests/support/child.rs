//! Tests that run one test of their own binary as a child process, to kill it mid-work.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts the test `name` of this test binary, alone, as a child process with the
/// environment variable `var` naming the store at `path` (the child test does nothing
/// without it); its standard output piped, its standard error dropped.
pub fn spawn_child(name: &str, var: &str, path: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(var, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}
