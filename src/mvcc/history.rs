//! The revision log read as etcd's watch events: what a watcher is sent.
//!
//! Every change in the revision log is one event: a put is a `PUT` event carrying the key as
//! the put left it (create and mod revision, version, lease, value); a tombstone is a
//! `DELETE` event carrying only the key and the revision of the delete, as etcd's do. With
//! `prev_kv`, an event also carries the key as it was just before — its state at the
//! revision before the event, if it was alive then and that revision is not compacted
//! (etcd reads it with a Range at `mod_revision - 1`, and leaves it out when that fails).
//!
//! Two ways in, one decoding:
//! - [`MvccStore::events_of`]: the records an apply batch just wrote, handed over by the
//!   state machine, so watchers that keep up never cost a read of the log;
//! - [`MvccStore::history`]: the log from a revision on, in bounded batches of whole
//!   revisions, for watchers that start in the past or fell behind.
//!
//! Records at or below the compact revision that compaction removes (every tombstone there,
//! and each put superseded there) are left out even while physical compaction has not yet
//! reached them: a watch replay must not depend on how far it has got.

use etcd_api::mvccpb::{event::EventType, Event, KeyValue};

use super::keys::{rev_key, rev_of_key, Record, Revision};
use super::read::corrupt;
use super::store::MvccStore;
use crate::error::Result;

/// Events of one history batch at most, unless one revision alone has more: a batch ends
/// at a revision boundary, so all the events of one revision travel together.
pub const HISTORY_BATCH_EVENTS: usize = 1_000;

/// Bytes of keys and values (previous ones included) in one history batch at most, with the
/// same exception.
pub const HISTORY_BATCH_BYTES: usize = 256 * 1024;

/// A stretch of history as events.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// Every event of revisions `from..=upto`, in revision order (sub-revisions in order).
    pub events: Vec<Event>,
    /// The first revision asked for.
    pub from: i64,
    /// The last revision the events cover completely: the store's revision when the log
    /// ran out, else the last whole revision that fitted. `from - 1` when `from` is
    /// compacted (nothing is covered).
    pub upto: i64,
    /// The store's revision when the batch was read.
    pub revision: i64,
    /// The compact revision then: a watcher wanting revisions below it cannot have them.
    pub compact: i64,
    /// Whether events carry `prev_kv`.
    pub with_prev: bool,
}

/// The event a revision-log record stands for.
pub fn event_of(rev: Revision, rec: &Record<'_>) -> Event {
    if rec.meta.tombstone {
        Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: rec.key.to_vec(),
                mod_revision: rev.main,
                ..Default::default()
            }),
            prev_kv: None,
        }
    } else {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: rec.key.to_vec(),
                create_revision: rec.meta.create,
                mod_revision: rev.main,
                version: rec.meta.version,
                value: rec.value.to_vec(),
                lease: rec.meta.lease,
            }),
            prev_kv: None,
        }
    }
}

impl MvccStore {
    /// The events of records just written (revision-log key and value, in revision order).
    pub fn events_of(
        &self,
        records: &[(Revision, sled::IVec)],
        with_prev: bool,
    ) -> Result<Vec<Event>> {
        records
            .iter()
            .map(|(rev, bytes)| {
                let rec =
                    Record::decode(bytes).ok_or_else(|| corrupt("revision-log", &rev_key(*rev)))?;
                self.event(*rev, &rec, with_prev)
            })
            .collect()
    }

    /// The events from revision `from` on, at most about [`HISTORY_BATCH_EVENTS`] and
    /// [`HISTORY_BATCH_BYTES`], ending at a revision boundary (see [`History::upto`]).
    pub fn history(&self, from: i64, with_prev: bool) -> Result<History> {
        let state = self.state();
        let mut out = History {
            events: Vec::new(),
            from,
            upto: from - 1,
            revision: state.revision,
            compact: state.compact,
            with_prev,
        };
        if from < state.compact {
            return Ok(out);
        }
        let start = rev_key(Revision { main: from, sub: 0 });
        let mut bytes = 0usize;
        let mut last_main = None;
        for item in self
            .tree()
            .range(start..rev_key(Revision::after_main(state.revision)))
        {
            let (k, v) = item?;
            let rev = rev_of_key(&k).ok_or_else(|| corrupt("revision-log key", &k))?;
            let full = out.events.len() >= HISTORY_BATCH_EVENTS || bytes >= HISTORY_BATCH_BYTES;
            if full && last_main != Some(rev.main) {
                out.upto = rev.main - 1;
                return Ok(out);
            }
            let rec = Record::decode(&v).ok_or_else(|| corrupt("revision-log", &k))?;
            last_main = Some(rev.main);
            if !self
                .index()
                .survives(rec.key, rev, &rec.meta, state.compact)
            {
                continue;
            }
            let event = self.event(rev, &rec, with_prev)?;
            bytes += rec.key.len()
                + rec.value.len()
                + event
                    .prev_kv
                    .as_ref()
                    .map_or(0, |p| p.key.len() + p.value.len());
            out.events.push(event);
        }
        out.upto = state.revision;
        Ok(out)
    }

    fn event(&self, rev: Revision, rec: &Record<'_>, with_prev: bool) -> Result<Event> {
        let mut event = event_of(rev, rec);
        if with_prev {
            event.prev_kv = self.prev_kv(rec.key, rev.main - 1)?;
        }
        Ok(event)
    }

    /// `key` at revision `rev` with its value, if it was alive then and `rev` is readable.
    fn prev_kv(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>> {
        if rev < self.compact_revision() {
            return Ok(None);
        }
        let Some(live) = self.index().at(key, rev) else {
            return Ok(None);
        };
        Ok(Some(KeyValue {
            key: key.to_vec(),
            create_revision: live.create,
            mod_revision: live.modified.main,
            version: live.version,
            value: self.value(&live)?,
            lease: live.lease,
        }))
    }
}
