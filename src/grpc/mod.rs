//! tonic services. They only translate: a gRPC request becomes an actor message, the answer
//! becomes a gRPC response, and an [`Error`](crate::Error) becomes a status in one place
//! (`From<Error> for Status`).

pub mod kv_service;
pub mod raft_service;

pub use kv_service::KvService;
pub use raft_service::RaftService;
