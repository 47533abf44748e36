//! distributed_kv: a fault-tolerant, strongly consistent key-value store.
//!
//! Every write goes through Raft (raft-rs), is made durable in a write-ahead log, is kept in sled,
//! and is served over gRPC (tonic).
//! A node is a set of actix actors that talk only through typed messages:
//!
//! ```text
//! client --gRPC--> KvService (grpc) --ClientWrite--> ClientApiActor
//!    ClientApiActor --Propose--> RaftActor            (RawNode::propose)
//!    RaftActor Ready: a leader's appends go out first; entries + HardState to the WAL
//!                     (one write, one fdatasync when raft-rs says it must sync)
//!                     --> PeerActor(s) --gRPC RaftTransport.Send--> peers' RaftActor (step)
//!    committed entries --Apply--> StorageActor (state machine in sled, applied index in the same batch)
//!    StorageActor --Applied--> ClientApiActor completes the waiting request
//! ```
//!
//! A linearizable read asks the RaftActor for a ReadIndex (a quorum confirms leadership), then
//! the StorageActor answers once it has applied up to that index.
//!
//! The full design is in `docs/ARCHITECTURE.md`.
//!
//! Modules — all product, the server's own code:
//! - plain structs, no runtime: [`config`] (TOML + environment + flags, validated),
//!   [`consensus`] (the WAL, the Raft log store, the snapshot file, `RaftNode`), [`mvcc`]
//!   (etcd's multi-version store over sled: revisions, history, compaction, Txn, the
//!   request checks), [`state_machine`] (log entries applied to it, the applied index, its
//!   trust marker), [`watch`] (etcd's watchers and what each is owed), [`lease`] (the leader's lessor: when leases expire), [`recovery`] (opening a data dir's stores and repairing what a crash
//!   left out of step), [`durable`] (file steps that survive a power cut), [`fnv`] (the
//!   digest every member computes alike), [`error`] (the one error type and its gRPC
//!   mapping);
//! - the runtime around them: [`actors`] (the actor shells, their wiring, and the plain
//!   structs that track their pending writes and read-index batches), [`grpc`] (tonic
//!   services: kv.v1 and etcd's API), [`node`] (starting and stopping a node), [`proto`] (generated code).
//!
//! The client API's wire types and the shared client are the `kv_api` crate; the tools — the
//! GUI, kvctl, kvbench, the cluster harness, the chaos suite, powerfs — are the other members
//! of the workspace under `crates/` (`docs/ARCHITECTURE.md`, section 12), so the server builds
//! without any of them.

pub mod actors;
pub mod config;
pub mod consensus;
pub mod durable;
pub mod error;
pub mod fnv;
pub mod grpc;
pub mod lease;
pub mod mvcc;
pub mod node;
pub mod proto;
pub mod recovery;
pub mod state_machine;
pub mod watch;

pub use config::NodeConfig;
pub use error::{Error, Result};
