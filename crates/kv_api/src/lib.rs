//! distributed_kv's client API, shared by the server and every client (kvctl, the GUI,
//! kvbench, the chaos suite), so that the two sides of the wire cannot drift apart:
//!
//! - [`proto`]: the kv.v1 messages and services generated from `proto/kv.proto` — the client
//!   stubs, and the server trait the node implements;
//! - [`status`]: the error contract — what a node puts on a failed call besides its code, and
//!   what a client may conclude from it;
//! - [`client`]: a client that finds the leader, follows it, and retries only what is safe to
//!   retry;
//! - [`watch`]: a watch over etcd's Watch API (every member serves it) that goes on from
//!   another member when its own goes away, missing and repeating nothing;
//! - [`lease`]: a lease kept alive, with what the client knows of its deadline, and etcd's
//!   lock recipe on it.
//!
//! This crate knows nothing of Raft, sled or actors; the server depends on it, never the
//! other way round.

pub mod client;
pub mod lease;
pub mod status;
pub mod watch;

/// The kv.v1 wire types and services (`proto/kv.proto`).
pub mod proto {
    tonic::include_proto!("kv.v1");

    impl Role {
        /// How people see the role: `follower`, `candidate`, `pre-candidate`, `leader`
        /// (`unknown` for a value this version does not know).
        pub fn label(self) -> &'static str {
            match self {
                Role::Unspecified => "unknown",
                Role::Follower => "follower",
                Role::Candidate => "candidate",
                Role::PreCandidate => "pre-candidate",
                Role::Leader => "leader",
            }
        }
    }
}

/// Encoded descriptors of the kv.v1 services, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptor");

pub use client::{endpoints_from, Client, ClientError, VersionedValue};
