//! The Raft side of a node, as plain structs that need no runtime.
//!
//! - [`Wal`]: the write-ahead log — records in append-only segment files, `fdatasync`ed, with
//!   torn tails detected by checksum and cut at start-up.
//! - [`LogStore`]: raft-rs's `Storage` over the WAL — the log, the `HardState`, the `ConfState`
//!   and the point where the log was compacted.
//! - [`peer_check`]: what a message from a peer must satisfy before raft-rs sees it.
//! - [`SnapshotStore`]: the newest snapshot of the state machine, one file, replaced atomically.
//! - [`RaftNode`]: a `RawNode` plus the bookkeeping around it; driven by `tick`, `step`,
//!   `propose`, `read_index` and one `ready` function. `RaftActor` wraps it; the in-process
//!   cluster tests drive it directly.
//! - [`LogId`]: an entry's (index, term), its identity in the log.

pub mod log_id;
pub mod log_store;
pub mod logger;
pub mod node;
pub mod peer_check;
pub mod snapshot;
pub mod wal;

pub use log_id::LogId;
pub use log_store::{LogOptions, LogStore};
pub use node::{RaftNode, RaftParams, RaftStatus, ReadyOutput, RoleChange};
pub use snapshot::SnapshotStore;
pub use wal::Wal;
