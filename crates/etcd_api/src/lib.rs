//! etcd's v3 API as distributed_kv serves it on its client port, shared by the server and the
//! tools that talk to it (kvctl, the GUI, kvbench, the compatibility tests):
//!
//! - [`etcdserverpb`] and [`mvccpb`]: the messages and services generated from
//!   `proto/etcd/` — etcd's package, service, message and field names and numbers, so etcdctl
//!   and etcd's client libraries work unchanged;
//! - [`EtcdError`]: the failures etcd's clients recognise, each with etcd's gRPC code and
//!   message text (clientv3 turns a status back into a typed error by its exact message);
//! - [`range`]: how etcd's clients spell "a prefix" and "from a key on" as a key range.
//!
//! Like `kv_api`, this crate knows nothing of Raft, sled or actors.

pub mod error;
pub mod range;

pub use error::EtcdError;

/// etcd's key-value record and watch event (`proto/etcd/kv.proto`).
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd's KV, Maintenance and Cluster services and their messages (`proto/etcd/rpc.proto`).
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// Encoded descriptors of the etcd services, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptor");
