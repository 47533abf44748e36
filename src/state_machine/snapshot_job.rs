//! A snapshot being made: taken on the StorageActor's thread, built on another.
//!
//! Taking it ([`StateMachine::snapshot_job`](super::StateMachine::snapshot_job)) syncs the
//! database and notes what the snapshot is of — the applied index and term, the
//! configuration, the MVCC revision and compact revision — which takes as long as the sync.
//! Building it ([`SnapshotJob::build`]) reads the revision log up to that revision and
//! serializes it, which takes time in proportion to the whole history; it can run while
//! applies go on, because nothing at or below the revision changes after it is written,
//! except through physical compaction, which the StorageActor holds back until the build
//! is done ([`crate::mvcc::SnapshotSource`]).

use raft::prelude::{ConfState, Snapshot};

use crate::consensus::LogId;
use crate::error::Result;
use crate::mvcc::SnapshotSource;

/// What one snapshot is of; [`SnapshotJob::build`] makes it.
pub struct SnapshotJob {
    pub(super) source: SnapshotSource,
    pub(super) applied: LogId,
    pub(super) conf_state: ConfState,
}

impl SnapshotJob {
    /// The index of the last entry the snapshot covers.
    pub fn index(&self) -> u64 {
        self.applied.index
    }

    /// The snapshot, with its data read from the database now.
    pub fn build(self) -> Result<Snapshot> {
        let mut snap = Snapshot {
            data: self.source.data()?.into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = self.applied.index;
        meta.term = self.applied.term;
        meta.set_conf_state(self.conf_state);
        Ok(snap)
    }
}
