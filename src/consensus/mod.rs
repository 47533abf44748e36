//! The Raft side of a node, as plain structs that need no runtime.
//!
//! - [`SledRaftStorage`]: raft-rs's `Storage` over a sled tree — the log, the `HardState`, the
//!   `ConfState` and the point where the log was truncated.
//! - [`SnapshotStore`]: the newest snapshot of the state machine, one file, replaced atomically.
//! - [`RaftNode`]: a `RawNode` plus the bookkeeping around it; driven by `tick`, `step`,
//!   `propose`, `read_index` and one `ready` function. `RaftActor` wraps it; the in-process
//!   cluster tests drive it directly.

pub mod logger;
pub mod node;
pub mod snapshot;
pub mod storage;

pub use node::{RaftNode, RaftParams, RaftStatus, ReadyOutput, RoleChange};
pub use snapshot::SnapshotStore;
pub use storage::SledRaftStorage;
