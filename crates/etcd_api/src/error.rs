//! etcd's error statuses.
//!
//! etcd's Go client (clientv3, `rpctypes`) turns a failed call back into a typed error by
//! looking up the status *message*, byte for byte, so each of these must carry etcd's code
//! and exactly etcd's text. Retries depend on the code too: clientv3 retries a read on another
//! endpoint only on `UNAVAILABLE`, which is why every "try elsewhere" condition here has that
//! code. Texts and codes are those of etcd 3.4's `rpctypes`, checked against a running etcd
//! 3.4.23 (docs/research/etcd-v3/BRIEF.md §3).

use tonic::{Code, Status};

/// A failure an etcd client recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtcdError {
    /// A Range, Put, DeleteRange or Compare with an empty key.
    KeyNotProvided,
    /// A Put with `ignore_value` that also carries a value.
    ValueProvided,
    /// A Put with `ignore_lease` that also carries a lease.
    LeaseProvided,
    /// A Put with `ignore_value` or `ignore_lease` on a key that does not exist; also an
    /// empty operation in a Txn.
    KeyNotFound,
    /// A Txn with more compares, or more operations in one branch, than the limit (128).
    TooManyOps,
    /// A Txn branch that puts one key twice, or puts a key a delete of the same branch covers.
    DuplicateKey,
    /// A revision the store has compacted away.
    Compacted,
    /// A revision the store has not reached.
    FutureRevision,
    /// A request whose encoding is larger than the limit (1.5 MiB).
    RequestTooLarge,
    /// A Put, revoke or grant naming a lease that does not exist (or the id 0).
    LeaseNotFound,
    /// A grant of an id that is taken.
    LeaseExist,
    /// A grant of a TTL over the limit (9 000 000 000 s).
    LeaseTtlTooLarge,
    /// No leader is known.
    NoLeader,
    /// The leader changed while the request was in flight; it was not applied.
    LeaderChanged,
    /// The request did not complete in time; a write's outcome is unknown.
    Timeout,
    /// The request timed out after the leader that had it failed; outcome unknown.
    TimeoutDueToLeaderFail,
    /// The request timed out because the connection to the leader was lost; outcome unknown.
    TimeoutDueToConnectionLost,
    /// The member is stopping.
    Stopped,
    /// The member has too much work queued (applies lag, or its queues are full).
    TooManyRequests,
}

impl EtcdError {
    /// Every variant, for tests that walk the table.
    pub const ALL: [EtcdError; 19] = [
        EtcdError::KeyNotProvided,
        EtcdError::ValueProvided,
        EtcdError::LeaseProvided,
        EtcdError::KeyNotFound,
        EtcdError::TooManyOps,
        EtcdError::DuplicateKey,
        EtcdError::Compacted,
        EtcdError::FutureRevision,
        EtcdError::RequestTooLarge,
        EtcdError::LeaseNotFound,
        EtcdError::LeaseExist,
        EtcdError::LeaseTtlTooLarge,
        EtcdError::NoLeader,
        EtcdError::LeaderChanged,
        EtcdError::Timeout,
        EtcdError::TimeoutDueToLeaderFail,
        EtcdError::TimeoutDueToConnectionLost,
        EtcdError::Stopped,
        EtcdError::TooManyRequests,
    ];

    /// etcd's gRPC code for it.
    pub fn code(self) -> Code {
        use EtcdError::*;
        match self {
            KeyNotProvided | ValueProvided | LeaseProvided | KeyNotFound | TooManyOps
            | DuplicateKey | RequestTooLarge => Code::InvalidArgument,
            Compacted | FutureRevision | LeaseTtlTooLarge => Code::OutOfRange,
            LeaseNotFound => Code::NotFound,
            LeaseExist => Code::FailedPrecondition,
            NoLeader
            | LeaderChanged
            | Timeout
            | TimeoutDueToLeaderFail
            | TimeoutDueToConnectionLost
            | Stopped => Code::Unavailable,
            TooManyRequests => Code::ResourceExhausted,
        }
    }

    /// etcd's message text for it, exactly.
    pub fn message(self) -> &'static str {
        use EtcdError::*;
        match self {
            KeyNotProvided => "etcdserver: key is not provided",
            ValueProvided => "etcdserver: value is provided",
            LeaseProvided => "etcdserver: lease is provided",
            KeyNotFound => "etcdserver: key not found",
            TooManyOps => "etcdserver: too many operations in txn request",
            DuplicateKey => "etcdserver: duplicate key given in txn request",
            Compacted => "etcdserver: mvcc: required revision has been compacted",
            FutureRevision => "etcdserver: mvcc: required revision is a future revision",
            RequestTooLarge => "etcdserver: request is too large",
            LeaseNotFound => "etcdserver: requested lease not found",
            LeaseExist => "etcdserver: lease already exists",
            LeaseTtlTooLarge => "etcdserver: too large lease TTL",
            NoLeader => "etcdserver: no leader",
            LeaderChanged => "etcdserver: leader changed",
            Timeout => "etcdserver: request timed out",
            TimeoutDueToLeaderFail => {
                "etcdserver: request timed out, possibly due to previous leader failure"
            }
            TimeoutDueToConnectionLost => {
                "etcdserver: request timed out, possibly due to connection lost"
            }
            Stopped => "etcdserver: server stopped",
            TooManyRequests => "etcdserver: too many requests",
        }
    }

    /// The status a server sends for it.
    pub fn status(self) -> Status {
        Status::new(self.code(), self.message())
    }

    /// The error a status stands for, recognised as etcd's clients do: by code and exact text.
    pub fn from_status(status: &Status) -> Option<EtcdError> {
        EtcdError::ALL
            .into_iter()
            .find(|e| e.code() == status.code() && e.message() == status.message())
    }
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for EtcdError {}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Status {
        e.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_round_trips_through_its_status() {
        for e in EtcdError::ALL {
            assert_eq!(EtcdError::from_status(&e.status()), Some(e), "{e:?}");
            assert!(e.message().starts_with("etcdserver: "), "{e:?}");
        }
        assert_eq!(
            EtcdError::from_status(&Status::unavailable("etcdserver: no leader.")),
            None,
            "recognised by the exact text only"
        );
    }
}
