//! Reads at a revision: etcd's Range, and the lookups writes and compares make.
//!
//! Which keys a read returns, and their revisions and versions, come from the key index in
//! memory ([`super::index`]): at revision `R`, each key's newest change with `main <= R`,
//! unless it is a tombstone; counting a range reads no value. A value is fetched from the
//! revision log (`r`) only for the key-values actually returned.
//!
//! Range follows etcd 3.4's `applierV3backend.Range` and `rangeKeys` step by step:
//! `revision > current` is `FutureRevision`; `revision <= 0` means current; a revision
//! below the compact revision is `Compacted` (the compact revision itself is readable).
//! `count` is every key in the range at that revision, before the limit and the min/max
//! filters. Sorting or a filter makes the read fetch every key; otherwise it fetches
//! `limit + 1`, to know whether there are `more`. A sort target other than KEY with no sort
//! order sorts ascending. Sorting is stable on key order (etcd's is not, but kept key order
//! on ties in every case observed).

use etcd_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use etcd_api::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use etcd_api::mvccpb::KeyValue;
use etcd_api::EtcdError;

use super::index::KeyIndex;
use super::keys::{rev_key, KeyRange, Live, Record, Revision};
use super::lease::LeaseTable;
use super::overlay::View;
use crate::error::{Error, Result};

/// The error for bytes in the tree that do not decode: the database is damaged.
pub fn corrupt(what: &str, key: &[u8]) -> Error {
    Error::Disk(format!("corrupt {what} record at tree key {key:?}"))
}

/// A consistent read of the store: the key index, and the values in the tree (and in the
/// batch being applied, if any), as of `current`, with `compact` as the compact revision.
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    pub view: View<'a>,
    pub index: &'a KeyIndex,
    pub leases: &'a LeaseTable,
    pub current: i64,
    pub compact: i64,
}

impl<'a> Reader<'a> {
    /// The live state of `key`.
    pub fn live(&self, key: &[u8]) -> Result<Option<Live>> {
        Ok(self.index.live(key))
    }

    /// The value written at `rev` (a put's revision, from a live or history entry).
    pub fn value(&self, rev: Revision) -> Result<Vec<u8>> {
        let k = rev_key(rev);
        let v = self
            .view
            .get(&k)?
            .ok_or_else(|| corrupt("missing revision-log", &k))?;
        let rec = Record::decode(&v).ok_or_else(|| corrupt("revision-log", &k))?;
        Ok(rec.value.to_vec())
    }

    /// `key` in `live` as etcd returns it, with its value if `with_value`.
    pub fn key_value(&self, key: &[u8], live: &Live, with_value: bool) -> Result<KeyValue> {
        Ok(KeyValue {
            key: key.to_vec(),
            create_revision: live.create,
            mod_revision: live.modified.main,
            version: live.version,
            value: if with_value {
                self.value(live.modified)?
            } else {
                Vec::new()
            },
            lease: live.lease,
        })
    }

    /// `key` at the current revision, with its value.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.live(key)? {
            None => Ok(None),
            Some(l) => Ok(Some(self.key_value(key, &l, true)?)),
        }
    }

    /// Calls `f` with every key alive at `rev` in `range`, in key order, with its state
    /// then, until `f` says stop (returns false). `rev` must be within
    /// `[compact, current]`: below the compact revision the history is gone.
    pub fn visit(
        &self,
        range: KeyRange<'_>,
        rev: i64,
        f: impl FnMut(&[u8], Live) -> Result<bool>,
    ) -> Result<()> {
        self.index.visit(range, rev, f)
    }

    /// The state of `key` at a past revision `rev`: its newest change at or before `rev`,
    /// unless that is a tombstone.
    pub fn at(&self, key: &[u8], rev: i64) -> Result<Option<Live>> {
        Ok(self.index.at(key, rev))
    }

    /// Every key-value in `range` now (compares read these), with values if `with_values`.
    pub fn key_values(&self, range: KeyRange<'_>, with_values: bool) -> Result<Vec<KeyValue>> {
        let mut kvs = Vec::new();
        self.visit(range, self.current, |k, live| {
            kvs.push(self.key_value(k, &live, with_values)?);
            Ok(true)
        })?;
        Ok(kvs)
    }

    /// The revision a Range reads at, or why it cannot.
    pub fn read_revision(&self, revision: i64) -> Result<i64> {
        if revision > self.current {
            return Err(Error::Etcd(EtcdError::FutureRevision));
        }
        let rev = if revision <= 0 {
            self.current
        } else {
            revision
        };
        if rev < self.compact {
            return Err(Error::Etcd(EtcdError::Compacted));
        }
        Ok(rev)
    }

    /// etcd's Range (see the module docs).
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let rev = self.read_revision(req.revision)?;
        let order = SortOrder::try_from(req.sort_order).ok();
        // An unknown target sorts like KEY (etcd 3.4 crashes on it; see `check`).
        let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        // An unknown order is not NONE: it fetches everything, and sorts nothing.
        let fetch_all = order != Some(SortOrder::None) || filtered;
        let fetch = match usize::try_from(req.limit) {
            Ok(limit) if limit > 0 && !fetch_all => limit.saturating_add(1),
            _ => usize::MAX,
        };
        let mut count: i64 = 0;
        let mut found: Vec<(Vec<u8>, Live)> = Vec::new();
        self.visit(KeyRange::new(&req.key, &req.range_end), rev, |k, live| {
            count += 1;
            if !req.count_only && found.len() < fetch {
                found.push((k.to_vec(), live));
            }
            Ok(true)
        })?;
        let keep = |l: &Live| {
            !(req.max_mod_revision != 0 && l.modified.main > req.max_mod_revision
                || req.min_mod_revision != 0 && l.modified.main < req.min_mod_revision
                || req.max_create_revision != 0 && l.create > req.max_create_revision
                || req.min_create_revision != 0 && l.create < req.min_create_revision)
        };
        found.retain(|(_, l)| keep(l));
        let order = match order {
            Some(SortOrder::None) if target != SortTarget::Key => Some(SortOrder::Ascend),
            o => o,
        };
        let sorting = matches!(order, Some(SortOrder::Ascend | SortOrder::Descend));
        let by_value = sorting && target == SortTarget::Value;
        // Each key-value with the full revision of its value (`KeyValue` keeps the main
        // revision only), so values are fetched after sorting and truncating.
        let mut items = found
            .iter()
            .map(|(k, l)| Ok((self.key_value(k, l, by_value)?, l.modified)))
            .collect::<Result<Vec<_>>>()?;
        if sorting {
            let descend = order == Some(SortOrder::Descend);
            items.sort_by(|(a, _), (b, _)| {
                let o = match target {
                    SortTarget::Key => a.key.cmp(&b.key),
                    SortTarget::Version => a.version.cmp(&b.version),
                    SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    SortTarget::Value => a.value.cmp(&b.value),
                };
                if descend {
                    o.reverse()
                } else {
                    o
                }
            });
        }
        let mut more = false;
        if let Ok(limit) = usize::try_from(req.limit) {
            if limit > 0 && items.len() > limit {
                items.truncate(limit);
                more = true;
            }
        }
        let mut kvs = Vec::with_capacity(items.len());
        for (mut kv, at) in items {
            if req.keys_only {
                kv.value.clear();
            } else if !by_value {
                kv.value = self.value(at)?;
            }
            kvs.push(kv);
        }
        Ok(RangeResponse {
            header: Some(ResponseHeader {
                revision: self.current,
                ..Default::default()
            }),
            kvs,
            more,
            count,
        })
    }
}
