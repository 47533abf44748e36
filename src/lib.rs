//! distributed_kv: a fault-tolerant, strongly consistent key-value store.
//!
//! Every write goes through Raft (raft-rs), is kept in sled, and is served over gRPC (tonic).
//! A node is a set of actix actors that talk only through typed messages:
//!
//! ```text
//! client --gRPC--> KvService (grpc) --ClientWrite--> ClientApiActor
//!    ClientApiActor --Propose--> RaftActor            (RawNode::propose)
//!    RaftActor Ready: persist entries + HardState in sled (one batch, flush when must_sync)
//!                     --> PeerActor(s) --gRPC RaftTransport.Send--> peers' RaftActor (step)
//!    committed entries --Apply--> StorageActor (state machine in sled, applied index in the same batch)
//!    StorageActor --Applied--> ClientApiActor completes the waiting request
//! ```
//!
//! A linearizable read asks the RaftActor for a ReadIndex (a quorum confirms leadership), then
//! the StorageActor answers once it has applied up to that index.
//!
//! Modules: [`config`] (TOML + flags), [`consensus`] and [`storage`] (plain structs, no runtime),
//! [`actors`] (the actor shells), [`grpc`] (tonic services), [`node`] (start/stop a node),
//! [`client`] (the client used by kvctl, kvbench and the GUI).

pub mod actors;
pub mod chaos;
pub mod client;
pub mod config;
pub mod consensus;
pub mod error;
pub mod grpc;
pub mod gui;
pub mod node;
pub mod proto;
pub mod recovery;
pub mod storage;

pub use config::NodeConfig;
pub use error::{Error, Result};
