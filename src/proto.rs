//! Code generated from `proto/` by tonic-prost-build.

/// The client API (`proto/kv.proto`).
pub mod kv {
    tonic::include_proto!("kv.v1");
}

/// The peer transport and the log command format (`proto/raft.proto`).
pub mod raftpb {
    tonic::include_proto!("raftpb.v1");
}

/// The subset of etcd's KV API that kvbench uses to measure etcd (`proto/etcd_bench.proto`).
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}

/// Encoded descriptors of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptor");
