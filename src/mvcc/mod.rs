//! etcd's multi-version key-value store, over the state machine's sled tree.
//!
//! # Revisions
//!
//! The store has a **revision**: 1 when empty, and one more after every write command that
//! changes something — a Put, a DeleteRange that deletes at least one key, a Txn that makes
//! at least one change (however many). A command's changes are numbered by **sub-revision**
//! in execution order, so every change has a unique `(main, sub)`. A write that changes
//! nothing (a DeleteRange matching nothing, a read-only Txn) leaves the revision alone.
//!
//! # Generations and tombstones
//!
//! A key's **generation** runs from the put that creates it to the delete that ends it. In a
//! generation, `create_revision` is the creating put's revision, `version` counts the puts
//! (1 on creation), `mod_revision` is the latest put's. A delete writes a **tombstone**; a
//! put after it starts a new generation (version 1 again). A read at revision `R` sees, for
//! each key, its newest change at or before `R`, if that is not a tombstone.
//!
//! # Compaction
//!
//! `Compact(C)` (`C` at most the current revision, above the last compact revision) makes
//! revisions below `C` unreadable at once; `C` itself stays readable. It does not change the
//! revision. Removing what became unreachable (every change at or below `C` except each
//! key's newest, which goes too if it is a tombstone) happens afterwards in bounded steps
//! ([`compact`]); everything that must agree between replicas reads as if it were done.
//!
//! # Layout in the `sm` tree, and the key index in memory
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `r` | revision (main, sub: 8 bytes each) | meta (tombstone flag, create revision, version, lease: 25 bytes), key length, key, value: the revision log |
//! | `m` | `mrev`, `mcompact`, `mcount`, `mcompacted` | revision, compact revision, live keys, physical-compaction cursor |
//! | `l` | lease id (8 bytes) | TTL, checkpointed remaining TTL: the lease table ([`lease`]) |
//!
//! (`mapplied`, the applied log index, is the state machine's, in the same batches.)
//!
//! The revision log is the only durable record: each change once, in revision order, with
//! its key and meta. What reads need to find — for each key, the revisions that changed it
//! and their metas — is the key index ([`index`]), built by one walk of the log at open and
//! kept in step with it after, as etcd keeps its `treeIndex` beside bbolt. A put so writes
//! one sled record; a read fetches one record per key-value it returns; a count reads none.
//! The revision order is what HashKV, physical compaction (work proportional to the
//! revisions compacted) and a watch replay ([`history`]) need.
//!
//! An earlier layout also kept the index in sled, as a history (`h`) and a live (`k`) index:
//! three records per put, which made writes CPU-bound on sled. Opening such a database
//! removes them; the revision log has everything they had.
//!
//! # Invariants
//!
//! - Every `r` record has its change in the key index and the other way round (within an
//!   apply batch, the batch's records are staged in its overlay).
//! - `mcount` is the number of keys whose newest change is a put (checked at open);
//!   `mrev` is at least the newest `r` revision.
//! - Everything one apply batch changes, `m` keys and applied index included, is written in
//!   one `sled::Batch`, so a restart sees all of a batch or none of it.
//! - Physical compaction only ever removes records at or below `mcompact` that no read at or
//!   above it can return, and moves `mcompacted` in the same batch.
//!
//! # Data from before revisions
//!
//! A database holding `d` + key → value and no `mrev` is converted when opened, in one
//! batch: every key becomes live at revision 2, sub-revisions in key order, version 1.

pub mod check;
pub mod compact;
pub mod history;
pub mod index;
pub mod keys;
pub mod lease;
pub mod overlay;
pub mod read;
pub mod snapshot;
pub mod store;
pub mod txn;
pub mod write;

#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

pub use check::{check_delete_range, check_put, check_range, check_txn, MAX_TXN_OPS};
pub use history::{History, HISTORY_BATCH_BYTES, HISTORY_BATCH_EVENTS};
pub use lease::{Lease, LeaseTable, MAX_LEASE_TTL, NO_LEASE};
pub use store::{MvccStore, SnapshotSource};
pub use write::LeaseChange;

/// Records of the revision log one physical-compaction step looks at: small enough that a
/// step (one sled batch, while applies wait) takes a few milliseconds.
pub const COMPACTION_STEP_RECORDS: usize = 1_000;
