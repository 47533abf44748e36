//! kvctl's own tier: what it does before it reaches any node. Its commands against a real
//! cluster are in the server's multi-process tier (`tests/process.rs`, `tests/cmd/kvctl.md`).
//!
//! This file also makes `cargo test` build `target/<profile>/kvctl` as a plain executable:
//! cargo does that only for a package with integration tests, and the other crates' tests
//! find kvctl there (`kv_harness::target_bin`).

use std::process::Command;

/// kvctl under test, with no `KV_*` variable from the caller's environment.
fn kvctl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvctl"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KV_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// `--help` names every command, the chaos suite's included.
#[test]
fn help_lists_every_command() {
    let out = kvctl().arg("--help").output().expect("run kvctl");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "set", "get", "delete", "list", "txn", "compact", "watch", "lease", "lock", "status",
        "chaos",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "`{command}` missing from --help:\n{help}"
        );
    }
}

/// An endpoint list that names no endpoint is bad usage: exit 2, saying what was expected,
/// before any connection is tried.
#[test]
fn an_empty_endpoint_list_is_bad_usage() {
    let out = kvctl()
        .args(["--endpoints", ",", "get", "k"])
        .output()
        .expect("run kvctl");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(kv_api::client::NO_ENDPOINTS), "{stderr}");
}

/// A txn that does not parse is bad usage: exit 2, naming the flag and its text, at once —
/// nothing is sent (the endpoint here accepts no connection, and the timeout is long).
#[test]
fn a_txn_that_does_not_parse_is_refused_before_any_connection() {
    let started = std::time::Instant::now();
    let out = kvctl()
        .args(["--endpoints", "127.0.0.1:1", "--timeout-ms", "60000"])
        .args(["txn", "--if", "mod(k) = 1", "--then", "put k"])
        .output()
        .expect("run kvctl");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: --then 'put k': put takes a key and a value"),
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// Revisions start at 1: `get --rev 0` and `compact 0` are bad usage, refused by kvctl.
#[test]
fn revision_0_is_bad_usage() {
    for args in [&["get", "k", "--rev", "0"][..], &["compact", "0"]] {
        let out = kvctl().args(args).output().expect("run kvctl");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("0 is not in 1.."), "{args:?}: {stderr}");
    }
}
