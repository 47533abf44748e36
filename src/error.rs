//! The library's one error type, and the one place it becomes a gRPC status.
//!
//! Every failure a client can see is one of these variants; `From<Error> for tonic::Status`
//! maps each to the status code a client should react to (see ARCHITECTURE.md, principle 6).

use std::path::PathBuf;

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use kv_api::status::{Reason, LEADER_ADDR_METADATA, LEADER_ID_METADATA, REASON_METADATA};

/// Everything that can go wrong inside a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request is malformed or breaks a limit; nothing was changed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// This node is not the leader. `leader_addr` is the leader's client address if known.
    #[error("not the leader{}", match (.leader_id, .leader_addr) {
        (Some(id), Some(addr)) => format!("; leader is node {id} at {addr}"),
        (Some(id), None) => format!("; leader is node {id}"),
        _ => "; no leader is known yet".to_string(),
    })]
    NotLeader {
        /// The leader's node id, when one is known; sent as the [`LEADER_ID_METADATA`]
        /// header.
        leader_id: Option<u64>,
        /// The leader's client address, when this node has heard it; sent as the
        /// [`LEADER_ADDR_METADATA`] header, so the client can retry there.
        leader_addr: Option<String>,
    },

    /// The proposal was certainly not applied (for example, a new leader overwrote it).
    #[error("not applied: {0}")]
    NotApplied(String),

    /// The outcome of a write is unknown: it may or may not take effect.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),

    /// The request's deadline passed; for a write, its outcome is unknown.
    #[error("deadline exceeded: {0}")]
    Timeout(String),

    /// A bounded queue or table is full; the caller should back off and retry.
    #[error("overloaded: {0}")]
    Overloaded(String),

    /// The node is shutting down or an actor it needs has stopped.
    #[error("node is shutting down: {0}")]
    ShuttingDown(String),

    /// A configuration file or flag is wrong. Names the file (or "flag") and the field.
    #[error("{file}: {field}: {message}")]
    Config {
        /// Path of the config file, or `<flags>` when the value came from the command line.
        file: String,
        /// The setting's name, or `-` when the whole file is at fault (it cannot be read).
        field: String,
        /// What is wrong with it.
        message: String,
    },

    /// The data directory cannot be used (locked, belongs to another node, unwritable).
    #[error("data dir {path}: {message}")]
    DataDir {
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// A disk or database failure, in the WAL, the snapshot file or sled. The node stops
    /// serving rather than risk divergence.
    #[error("disk failure: {0}")]
    Disk(String),

    /// A failure inside raft-rs.
    #[error("raft: {0}")]
    Raft(String),

    /// One of the failures etcd's clients recognise by code and text (on the etcd API it is
    /// sent exactly as etcd sends it).
    #[error("{0}")]
    Etcd(etcd_api::EtcdError),

    /// A peer or client transport failure.
    #[error("transport: {0}")]
    Transport(String),
}

impl Error {
    /// Builds a config error for `field` of `file`.
    pub fn config(
        file: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Config {
            file: file.into(),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Disk(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Disk(e.to_string())
    }
}

impl From<raft::Error> for Error {
    fn from(e: raft::Error) -> Self {
        Error::Raft(e.to_string())
    }
}

impl From<protobuf::ProtobufError> for Error {
    fn from(e: protobuf::ProtobufError) -> Self {
        Error::Transport(format!("bad raft message: {e}"))
    }
}

impl From<actix::MailboxError> for Error {
    fn from(e: actix::MailboxError) -> Self {
        Error::ShuttingDown(e.to_string())
    }
}

impl From<tokio::sync::oneshot::error::RecvError> for Error {
    fn from(_: tokio::sync::oneshot::error::RecvError) -> Self {
        Error::ShuttingDown("request dropped before it completed".into())
    }
}

impl Error {
    /// The machine-readable reason a client sees (`kv_api::status`), which fixes the gRPC code
    /// and tells it whether a failed write may be retried.
    pub fn reason(&self) -> Reason {
        match self {
            Error::InvalidArgument(_) | Error::Config { .. } => Reason::InvalidArgument,
            Error::NotLeader { .. } => Reason::NotLeader,
            Error::NotApplied(_) => Reason::NotApplied,
            Error::Overloaded(_) => Reason::Overloaded,
            Error::OutcomeUnknown(_) => Reason::OutcomeUnknown,
            Error::Timeout(_) => Reason::Timeout,
            Error::ShuttingDown(_) => Reason::ShuttingDown,
            Error::Etcd(e) => match e.code() {
                tonic::Code::Unavailable => Reason::Timeout,
                tonic::Code::ResourceExhausted => Reason::Overloaded,
                _ => Reason::InvalidArgument,
            },
            Error::Disk(_) | Error::Raft(_) | Error::DataDir { .. } | Error::Transport(_) => {
                Reason::Internal
            }
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let mut status = e.reason().status(e.to_string());
        if let Error::NotLeader {
            leader_id,
            leader_addr,
        } = &e
        {
            let md = status.metadata_mut();
            if let Some(id) = leader_id {
                if let Ok(v) = id.to_string().parse() {
                    md.insert(LEADER_ID_METADATA, v);
                }
            }
            if let Some(addr) = leader_addr {
                if let Ok(v) = addr.parse() {
                    md.insert(LEADER_ADDR_METADATA, v);
                }
            }
        }
        status
    }
}

/// Exit status of a node that stopped because its disk (or database) failed.
pub const DISK_FAILURE_EXIT_CODE: i32 = 70;

/// Stops the process after a disk failure: a node that cannot trust its disk must not go
/// on serving (Raft copes with a dead node, not with a diverged one).
pub fn fatal_disk(context: &str, e: &Error) -> ! {
    tracing::error!("{context}: {e}; stopping the node");
    std::process::exit(DISK_FAILURE_EXIT_CODE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    /// Every error a client can see carries its reason, with the code the contract gives it,
    /// and a not-leader answer carries the hint the client follows.
    #[test]
    fn every_status_carries_its_reason_and_code() {
        let cases = [
            (
                Error::InvalidArgument("k".into()),
                Reason::InvalidArgument,
                Code::InvalidArgument,
            ),
            (
                Error::config("f", "x", "bad"),
                Reason::InvalidArgument,
                Code::InvalidArgument,
            ),
            (
                Error::NotLeader {
                    leader_id: Some(2),
                    leader_addr: Some("127.0.0.1:2".into()),
                },
                Reason::NotLeader,
                Code::Unavailable,
            ),
            (
                Error::NotApplied("x".into()),
                Reason::NotApplied,
                Code::Unavailable,
            ),
            (
                Error::Overloaded("x".into()),
                Reason::Overloaded,
                Code::ResourceExhausted,
            ),
            (
                Error::OutcomeUnknown("x".into()),
                Reason::OutcomeUnknown,
                Code::Unknown,
            ),
            (
                Error::Timeout("x".into()),
                Reason::Timeout,
                Code::DeadlineExceeded,
            ),
            (
                Error::ShuttingDown("x".into()),
                Reason::ShuttingDown,
                Code::Unavailable,
            ),
            (Error::Disk("x".into()), Reason::Internal, Code::Internal),
            (Error::Raft("x".into()), Reason::Internal, Code::Internal),
            (
                Error::Transport("x".into()),
                Reason::Internal,
                Code::Internal,
            ),
        ];
        for (error, reason, code) in cases {
            let message = error.to_string();
            let status = tonic::Status::from(error.clone());
            assert_eq!(Reason::of(&status), Some(reason), "{error:?}");
            assert_eq!(status.code(), code, "{error:?}");
            assert_eq!(status.message(), message);
        }
        let status = tonic::Status::from(Error::NotLeader {
            leader_id: Some(2),
            leader_addr: Some("127.0.0.1:2".into()),
        });
        assert_eq!(
            status.metadata().get(LEADER_ADDR_METADATA).unwrap(),
            "127.0.0.1:2"
        );
        assert_eq!(status.metadata().get(LEADER_ID_METADATA).unwrap(), "2");
    }
}
