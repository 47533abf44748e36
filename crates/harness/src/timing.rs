//! The one set of timings of local clusters: the Raft timing written into every generated
//! config, and how long the harness and its tests wait for things.
//!
//! Raft timing is fast but realistic: 50 ms ticks, a heartbeat every tick, an election timeout
//! of 10 ticks (0.5–1 s after Raft's randomisation), so elections keep runs short.

use std::time::Duration;

/// Raft tick length in generated configs, in milliseconds.
pub const TICK_INTERVAL_MS: u64 = 50;
/// Ticks between leader heartbeats in generated configs.
pub const HEARTBEAT_TICKS: usize = 1;
/// Election timeout in ticks in generated configs (randomised by Raft up to twice this).
pub const ELECTION_TICKS: usize = 10;
/// How long a node lets a client request wait, in milliseconds, in generated configs.
pub const REQUEST_TIMEOUT_MS: u64 = 3_000;

/// How long a node may take from spawn until its client API answers.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an etcd member may take from spawn until it answers a linearizable Range (a
/// cluster of several elects its leader in that time too).
pub const ETCD_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a cluster may take to elect a leader that every running node follows.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a node may take to exit after SIGTERM (or a bad start to exit by itself).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long restarted nodes may take to apply everything the leader committed.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one `kvctl` invocation may take before the test gives up on it.
pub const KVCTL_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of one client operation, retries included, of [`LocalCluster::client`].
///
/// [`LocalCluster::client`]: crate::LocalCluster::client
pub const CLIENT_OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of one Status or Hash question to one node.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between two probes of a polled condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
