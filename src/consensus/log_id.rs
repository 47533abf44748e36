//! `LogId`: where an entry sits in the Raft log.

/// The position of one log entry: its index and the term of the leader that created it.
///
/// Raft's Log Matching property makes this pair an entry's identity: two logs holding an entry
/// with the same index and term hold the same entry there (and agree on everything before it).
/// The same index with another term is another entry; a proposer that finds one applied at its
/// index knows its own entry was overwritten.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogId {
    /// Position in the log, from 1.
    pub index: u64,
    /// Term of the leader that appended the entry.
    pub term: u64,
}

impl LogId {
    /// Where a snapshot ends: the last entry it covers.
    pub fn of(meta: &raft::prelude::SnapshotMetadata) -> LogId {
        LogId {
            index: meta.index,
            term: meta.term,
        }
    }
}
