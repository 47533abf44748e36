//! Physical compaction: removing, in bounded steps, the history a compaction made
//! unreachable.
//!
//! Applying `Compact(C)` only records `C` (reads below it fail at once). What it makes
//! unreachable is every record with `main <= C` except, for each key, its newest such
//! record, and that one too if it is a tombstone. Those records are removed here, walking
//! the revision log in order from a cursor kept in the tree (`mcompacted`), a step of at
//! most a given number of records at a time, each step one sled batch with the cursor's new
//! place in it. A step may be interrupted anywhere, and resumes after a restart from the
//! cursor; a later compaction simply moves the goal further.
//!
//! For each record `(K, rev)` with `rev.main <= C` it reaches, a step removes the record of
//! `K` just before it (superseded by this one, which is itself at or below `C`; every record
//! before that one went when its own successor was reached), and the record itself if it is
//! a tombstone. So once the cursor passes `C`, at most one record per
//! key remains at or below `C`: its newest, a put. A record kept by an earlier compaction is
//! removed when a later one reaches the record that superseded it.
//!
//! The key index loses the same changes in the same step ([`KeyIndex::compact_at`]), before
//! the step's batch is written; a failed write stops the node, and a restart rebuilds the
//! index from the records that are really there.
//!
//! Until a step has removed them, unreachable records are still in the tree, so whatever
//! must not depend on how far removal has got (HashKV, the state hash, snapshots) asks
//! [`KeyIndex::survives`] whether a record survives compaction at `C`.

use super::index::KeyIndex;
use super::keys::{rev_key, rev_of_key, Record, Revision};
use super::read::corrupt;
use super::store::{StoreState, CURSOR_KEY};
use crate::error::Result;

/// One step of removal: at most `max_records` records of the revision log, from the
/// cursor. Returns the batch to write (the cursor's new place included), the state after
/// it, and whether records at or below the compact revision remain to be looked at.
pub fn step(
    tree: &sled::Tree,
    index: &mut KeyIndex,
    state: &StoreState,
    max_records: usize,
) -> Result<(sled::Batch, StoreState, bool)> {
    let mut batch = sled::Batch::default();
    let mut after = *state;
    if state.cursor.main > state.compact {
        return Ok((batch, after, false));
    }
    let goal = Revision::after_main(state.compact);
    let mut next = goal;
    let mut more = false;
    let scan = tree.range(rev_key(state.cursor)..rev_key(goal));
    for (seen, item) in scan.enumerate() {
        let (k, v) = item?;
        let rev = rev_of_key(&k).ok_or_else(|| corrupt("revision-log key", &k))?;
        if seen >= max_records.max(1) {
            next = rev;
            more = true;
            break;
        }
        let rec = Record::decode(&v).ok_or_else(|| corrupt("revision-log", &k))?;
        // Only the change just before this one goes: every earlier one went when its own
        // successor was stepped over (this step or an earlier compaction's), so the work
        // per record is constant however long the key's history.
        for gone in index.compact_at(rec.key, rev) {
            batch.remove(&rev_key(gone)[..]);
        }
    }
    after.cursor = next;
    batch.insert(CURSOR_KEY, &next.to_bytes()[..]);
    Ok((batch, after, more))
}
