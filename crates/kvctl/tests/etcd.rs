//! kvctl's etcd-API commands (`txn`, `get --rev`, `compact`) against a real etcd: the
//! transcript `tests/cmd/kvctl-etcd.md`, whose every revision and error text is etcd's own.
//! The same transcript runs against distributed_kv in the server's multi-process tier
//! (`tests/process.rs`), so what kvctl prints there is what it prints against etcd.
//!
//! It needs an etcd 3.4 binary — `$ETCD_BIN`, else `etcd` on `PATH` — so it is ignored by
//! default: `cargo test -p kvctl --test etcd -- --ignored`. etcd listens on two free ports of
//! [`ETCD_PORTS`], with its data in a temp dir; it is killed when the test ends, pass or fail.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The ports etcd may use (client and peer), so it never takes one a cluster of another test
/// is given.
const ETCD_PORTS: std::ops::RangeInclusive<u16> = 35790..=35809;
/// How long etcd may take to start serving.
const ETCD_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two checks of whether etcd serves.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// kvctl's own deadline while etcd starts, in milliseconds.
const PROBE_TIMEOUT_MS: &str = "500";
/// Longest one transcript command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A running etcd, killed (and waited for) on drop.
struct Etcd {
    child: Child,
    client_addr: String,
    _data: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two ports of [`ETCD_PORTS`] that nothing listens on now.
fn two_free_ports() -> (u16, u16) {
    let mut free =
        ETCD_PORTS.filter(|&p| TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], p))).is_ok());
    match (free.next(), free.next()) {
        (Some(a), Some(b)) => (a, b),
        _ => panic!("no two free ports in {ETCD_PORTS:?} for etcd"),
    }
}

/// Starts a single-member etcd with an empty store, and waits until it answers a Txn.
fn start_etcd() -> Etcd {
    let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_string());
    let data = tempfile::tempdir().expect("a temp dir for etcd's data");
    let (client, peer) = two_free_ports();
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(&bin)
        .args(["--name", "kvctl-test", "--data-dir"])
        .arg(data.path().join("etcd"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("kvctl-test={peer_url}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data.path().join("etcd.log")).expect("etcd's log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} (set ETCD_BIN to an etcd 3.4): {e}"));
    let etcd = Etcd {
        child,
        client_addr: format!("127.0.0.1:{client}"),
        _data: data,
    };
    let deadline = Instant::now() + ETCD_START_TIMEOUT;
    loop {
        // A txn with no operations changes nothing: the store stays at revision 1.
        let probe = Command::new(env!("CARGO_BIN_EXE_kvctl"))
            .args(["--endpoints", &etcd.client_addr])
            .args(["--timeout-ms", PROBE_TIMEOUT_MS, "txn"])
            .output()
            .expect("run kvctl");
        if probe.status.success() {
            return etcd;
        }
        assert!(
            Instant::now() < deadline,
            "etcd did not serve within {ETCD_START_TIMEOUT:?}: {probe:?}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[test]
fn the_etcd_transcript_holds_against_a_real_etcd() {
    let etcd = start_etcd();
    trycmd::TestCases::new()
        .register_bin("kvctl", std::path::Path::new(env!("CARGO_BIN_EXE_kvctl")))
        .env("KV_ENDPOINTS", etcd.client_addr.clone())
        .env("NO_COLOR", "1")
        .timeout(COMMAND_TIMEOUT)
        .case(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/cmd/kvctl-etcd.md"
        ))
        .run();

    // kv.v1 is distributed_kv's own: etcd does not serve it, and kvctl says so.
    let out = Command::new(env!("CARGO_BIN_EXE_kvctl"))
        .args(["--endpoints", &etcd.client_addr, "get", "greeting"])
        .output()
        .expect("run kvctl");
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kv.v1"),
        "{out:?}"
    );
}
