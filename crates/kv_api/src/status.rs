//! The error contract of the kv.v1 API: what a node attaches to a failed call besides its gRPC
//! code and message, and what a client may conclude from it.
//!
//! The message is for people and may change; a client decides by the **reason**, a fixed
//! machine-readable word in the `x-kv-reason` response metadata of every error a node sends.
//! The question a client most needs answered is whether a failed write may be retried: only a
//! write that certainly did not take effect may be sent again, or a retry could apply it twice.
//!
//! | reason | the node | a failed write | gRPC code |
//! |---|---|---|---|
//! | `invalid-argument` | refused the input; nothing changed | fails, do not retry | `INVALID_ARGUMENT` |
//! | `not-leader` | is not the leader (hint in `x-leader-addr`, `x-leader-id`) | not applied: ask the leader | `UNAVAILABLE` |
//! | `not-applied` | proposed it, and another entry took its log index | not applied: retry | `UNAVAILABLE` |
//! | `overloaded` | refused it before proposing: a bounded queue is full | not applied: back off, retry | `RESOURCE_EXHAUSTED` |
//! | `outcome-unknown` | proposed it, then lost leadership before it was applied | unknown: never retried blindly | `UNKNOWN` |
//! | `timeout` | proposed or queued it, and the deadline passed | unknown | `DEADLINE_EXCEEDED` |
//! | `shutting-down` | is stopping, or an actor it needs has stopped | unknown | `UNAVAILABLE` |
//! | `internal` | failed inside (disk, Raft, transport) | unknown | `INTERNAL` |
//!
//! An error without a reason did not come from a node: it is tonic's own, about the connection.
//! Then only evidence in the error's source chain — never its text — proves that a write was
//! never sent ([`never_sent`]): a connection that could not be made at all
//! ([`connect_failed`]), or a request hyper dropped from its queue before handing it to the
//! connection (`hyper::Error::is_canceled`, "operation was canceled": the connection closed
//! first, as a node's does when it stops serving clients).

use tonic::{Code, Status};

/// Response metadata key carrying the leader's client address on `not-leader`.
pub const LEADER_ADDR_METADATA: &str = "x-leader-addr";
/// Response metadata key carrying the leader's node id on `not-leader`.
pub const LEADER_ID_METADATA: &str = "x-leader-id";
/// Response metadata key carrying the [`Reason`] of every error a node sends.
pub const REASON_METADATA: &str = "x-kv-reason";

/// Why a node refused or failed a call: the machine-readable half of every error it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The request is malformed or breaks a limit; nothing changed.
    InvalidArgument,
    /// This node is not the leader; nothing was proposed.
    NotLeader,
    /// The write was proposed but another entry was committed at its index: it never applies.
    NotApplied,
    /// A bounded queue was full; nothing was proposed.
    Overloaded,
    /// The write was proposed, then leadership was lost before it applied: it may still apply.
    OutcomeUnknown,
    /// The deadline passed; a write may still apply.
    Timeout,
    /// The node is stopping; a write may have been proposed.
    ShuttingDown,
    /// A failure inside the node.
    Internal,
}

impl Reason {
    /// Every reason, for tests and documentation.
    pub const ALL: [Reason; 8] = [
        Reason::InvalidArgument,
        Reason::NotLeader,
        Reason::NotApplied,
        Reason::Overloaded,
        Reason::OutcomeUnknown,
        Reason::Timeout,
        Reason::ShuttingDown,
        Reason::Internal,
    ];

    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidArgument => "invalid-argument",
            Reason::NotLeader => "not-leader",
            Reason::NotApplied => "not-applied",
            Reason::Overloaded => "overloaded",
            Reason::OutcomeUnknown => "outcome-unknown",
            Reason::Timeout => "timeout",
            Reason::ShuttingDown => "shutting-down",
            Reason::Internal => "internal",
        }
    }

    /// The reason a word on the wire names; `None` for a word this version does not know.
    pub fn parse(word: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == word)
    }

    /// The gRPC code a node sends with this reason.
    pub fn code(self) -> Code {
        match self {
            Reason::InvalidArgument => Code::InvalidArgument,
            Reason::NotLeader | Reason::NotApplied | Reason::ShuttingDown => Code::Unavailable,
            Reason::Overloaded => Code::ResourceExhausted,
            Reason::OutcomeUnknown => Code::Unknown,
            Reason::Timeout => Code::DeadlineExceeded,
            Reason::Internal => Code::Internal,
        }
    }

    /// Whether a write that failed for this reason certainly did not take effect, so that
    /// sending it again cannot apply it twice.
    pub fn write_not_applied(self) -> bool {
        matches!(
            self,
            Reason::InvalidArgument | Reason::NotLeader | Reason::NotApplied | Reason::Overloaded
        )
    }

    /// The reason a node put on `status`; `None` when the status is not a node's answer (or
    /// names a reason this version does not know).
    pub fn of(status: &Status) -> Option<Reason> {
        status
            .metadata()
            .get(REASON_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(Reason::parse)
    }

    /// A status with this reason's code, `message`, and the reason in its metadata.
    pub fn status(self, message: impl Into<String>) -> Status {
        let mut status = Status::new(self.code(), message);
        status.metadata_mut().insert(
            REASON_METADATA,
            tonic::metadata::MetadataValue::from_static(self.as_str()),
        );
        status
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `status` shows that no connection to the endpoint could be made at all (refused,
/// unresolvable, or not accepted within the connect timeout), as opposed to a connection that
/// carried the request and broke later. tonic wraps every failure to connect in a
/// [`tonic::ConnectError`] and keeps it in the status's source chain.
pub fn connect_failed(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether `status` proves that the request never left this process: no connection could be
/// made, or hyper dropped the request from its queue before writing any of it (hyper hands the
/// request back, unsent, with a canceled error, when the connection closes first).
pub fn never_sent(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_canceled() {
                return true;
            }
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reason survives the trip through metadata, and a status carries its code.
    #[test]
    fn reasons_round_trip_through_a_status() {
        for reason in Reason::ALL {
            let status = reason.status("why");
            assert_eq!(Reason::of(&status), Some(reason));
            assert_eq!(status.code(), reason.code());
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(Reason::of(&Status::unavailable("not the leader")), None);
        assert_eq!(Reason::parse("something-new"), None);
    }

    /// Only the reasons that prove nothing was applied allow a write to be sent again.
    #[test]
    fn only_certain_failures_make_a_write_safe_to_retry() {
        let safe: Vec<Reason> = Reason::ALL
            .into_iter()
            .filter(|r| r.write_not_applied())
            .collect();
        assert_eq!(
            safe,
            [
                Reason::InvalidArgument,
                Reason::NotLeader,
                Reason::NotApplied,
                Reason::Overloaded
            ]
        );
    }

    /// A refused connection is recognised by its type, whatever tonic's message says.
    #[tokio::test]
    async fn a_refused_connection_is_found_in_the_source_chain() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let mut client = crate::proto::kv_client::KvClient::new(channel);
        let status = client
            .status(crate::proto::StatusRequest {})
            .await
            .expect_err("nothing listens there");
        assert!(connect_failed(&status), "{status:?}");
        assert!(never_sent(&status), "{status:?}");
        assert!(!connect_failed(&Status::unavailable(
            "tcp connect error: Connection refused"
        )));
    }
}
