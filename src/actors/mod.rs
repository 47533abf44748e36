//! The actors of a node. Each is a thin shell around a plain struct: it adds the mailbox,
//! timers and routing, and nothing else.
//!
//! - [`RaftActor`]: owns the [`RaftNode`](crate::consensus::RaftNode); ticks it, steps peer
//!   messages into it, and runs its Ready loop. Lives on its own arbiter (thread), because its
//!   Ready loop blocks on the WAL's fdatasync.
//! - [`StorageActor`]: owns the [`StateMachine`](crate::state_machine::StateMachine); applies
//!   committed entries, answers reads, makes snapshots. A sync actor on one thread, so its
//!   blocking sled calls never stall an async thread and messages keep their order.
//! - [`PeerActor`]: one per peer; two bounded outboxes (bulk appends, control messages), each
//!   with its own connection.
//! - [`inbox`]: the budget of peer messages waiting for the RaftActor, apart from client load.
//! - [`ClientApiActor`]: validates client requests, tracks pending writes, gives leader hints.
//! - [`WatchHubActor`]: owns the [`WatchHub`](crate::watch::WatchHub); fed the events of
//!   every apply batch by the StorageActor and history batches on request, it sends each
//!   watch stream what its watchers are owed. On an arbiter of its own.
//! - [`wiring`]: starts a node's actors from its recovered storage and connects them.
//! - [`proposals`]: the pending writes and the rule that settles each (applied, not applied,
//!   outcome unknown); [`read_batch`]: reads waiting for a read index. Plain structs the
//!   ClientApiActor and the RaftActor feed events into.
//!
//! All messages are in [`messages`].

pub mod client_api;
pub mod inbox;
pub mod lease;
pub mod messages;
pub mod peer;
pub mod proposals;
pub mod raft;
pub mod read_batch;
pub mod storage;
pub mod watch_hub;
pub mod wiring;

pub use client_api::{ClientApiActor, ClientLimits};
pub use lease::LeaseActor;
pub use peer::PeerActor;
pub use raft::RaftActor;
pub use storage::StorageActor;
pub use watch_hub::WatchHubActor;
pub use wiring::{Actors, Wiring};
