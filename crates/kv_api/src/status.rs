//! The error contract of the kv.v1 API: what a node attaches to a failed call besides its gRPC
//! code and message.

/// Response metadata key carrying the leader's client address on `UNAVAILABLE`.
pub const LEADER_ADDR_METADATA: &str = "x-leader-addr";
/// Response metadata key carrying the leader's node id on `UNAVAILABLE`.
pub const LEADER_ID_METADATA: &str = "x-leader-id";
