//! The key-value state machine over a sled tree.
//!
//! Committed Raft entries are applied in log order, a whole batch of them in one sled `Batch`
//! that also records the applied index and term and the key count. Because the applied index
//! moves atomically with the data it covers, a restart resumes exactly after the last applied
//! entry and never applies one twice.
//!
//! Durability: applying neither flushes nor syncs. The WAL holds every committed entry durably
//! and the snapshot file everything the WAL has discarded, so whatever sled loses — to a kill,
//! or to a power cut that takes back every write not yet synced — is applied again from them at
//! start-up. sled's periodic flusher is off; the database is made durable as a whole
//! ([`StateMachine::sync`]: flush, then fsync every file and directory under it) at chosen
//! points: after opening, after a snapshot is made or restored, at shutdown, and after a batch
//! holding a value large enough for sled to keep in a blob file of its own.
//!
//! sled itself is not built to survive a power cut between those points, so a marker beside
//! the database ([`TrustMarker`]) says whether it was cleanly synced, or written to since within
//! the same boot of the machine; if neither, opening throws it away and starts empty, and
//! recovery fills it again from the snapshot file and the log.
//!
//! Layout of the `sm` tree: user keys under the prefix `d`; metadata under `m` (`mapplied`:
//! index and term; `mcount`: number of keys, kept because sled's `len()` walks the tree).

pub mod trust;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use prost::Message as _;
use raft::prelude::{ConfState, Entry, EntryType, Snapshot};

use crate::consensus::LogId;
use crate::durable::sync_parent;
use crate::error::{Error, Result};
use crate::proto::raftpb::{log_command::Op, DeleteOp, LogCommand, SetOp};
use etcd_api::etcdserverpb::{
    CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, HashKvResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnResponse,
};
use etcd_api::mvccpb::KeyValue;
use etcd_api::EtcdError;
use trust::{Trust, TrustMarker};

/// Name of the sled tree holding the state machine.
pub const SM_TREE: &str = "sm";
const DATA_PREFIX: u8 = b'd';
const APPLIED_KEY: &[u8] = b"mapplied";
const COUNT_KEY: &[u8] = b"mcount";
/// Values at least this large may be stored by sled in a blob file of their own (sled's limit
/// is a quarter of its 512 KiB segment, less headers); a batch holding one is synced at once.
pub const SLED_BLOB_BYTES: usize = 64 * 1024;

/// What applying one entry did.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandOutcome {
    /// The entry carried no command (a new leader's empty entry, a configuration change).
    Noop,
    /// The command was applied; its answer, with `header.revision` set (the rest of the
    /// header — cluster, member, term — is the gRPC layer's to fill).
    Done(WriteResponse),
    /// The command failed a check that depends on the state (a compacted or future revision,
    /// `ignore_value` on a missing key, an unknown lease): every replica fails it alike, and
    /// it changed nothing.
    Failed(EtcdError),
    /// The entry could not be decoded, or its command had no operation; it changed nothing.
    Rejected(String),
}

/// The answer to an applied write command, as etcd's API gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
}

/// The tag a proposer puts in its `LogCommand` (`origin_node`, `origin_seq`) so that it can
/// recognise its own write when the entry is applied, whatever index it ended up at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProposalTag {
    /// The node that proposed the write.
    pub node: u64,
    /// The proposer's sequence number for the write, unique per node and run.
    pub seq: u64,
}

/// A digest of the whole state machine, for telling whether two replicas hold the same data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateHash {
    /// The applied index the digest covers: two replicas are comparable only at the same one.
    pub applied_index: u64,
    /// FNV-1a over every key and value in byte order, and the applied index.
    pub hash: u64,
}

/// One applied entry, reported back to whoever proposed it.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedEntry {
    /// Log index of the entry; with `term`, what the proposer's write is answered with.
    pub index: u64,
    pub term: u64,
    /// Who proposed it, when the entry carried a client command.
    pub origin: Option<ProposalTag>,
    pub outcome: CommandOutcome,
}

/// One page of a List.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Keys and values (values empty when keys only were asked for).
    pub kvs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The first key of the next page, when more keys match.
    pub next_key: Option<Vec<u8>>,
}

/// The most a List answer (`kv.v1.ListResponse`) spends besides its entries and `next_key`:
/// the response header, three 64-bit varints of at most 10 bytes with a 1-byte tag each,
/// framed by a tag and a 1-byte length, and the `more` flag, a tag and 1 byte.
pub const LIST_ANSWER_FIXED_BYTES: usize = 2 + 3 * (1 + 10) + 2;

/// Bytes a proto3 `bytes` field of `len` bytes takes (tags here are all 1 byte): nothing when
/// empty, since proto3 leaves empty fields out.
fn bytes_field_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        1 + prost::length_delimiter_len(len) + len
    }
}

/// Bytes one entry adds to an encoded List answer: a `KeyValue` in `ListResponse.kvs`, tags
/// and lengths included. Counting the encoding, not just the key and value, keeps a page of
/// many tiny keys within the bound too (framing is most of such a page).
pub fn list_entry_bytes(key_len: usize, value_len: usize) -> usize {
    let inner = bytes_field_len(key_len) + bytes_field_len(value_len);
    1 + prost::length_delimiter_len(inner) + inner
}

/// The most bytes an encoded List answer holding `page` takes (the header at its largest).
pub fn list_answer_bytes(page: &ListPage) -> usize {
    LIST_ANSWER_FIXED_BYTES
        + page
            .kvs
            .iter()
            .map(|(k, v)| list_entry_bytes(k.len(), v.len()))
            .sum::<usize>()
        + page
            .next_key
            .as_ref()
            .map_or(0, |k| bytes_field_len(k.len()))
}

/// The key-value data of one node.
pub struct StateMachine {
    /// The database, for flushes.
    db: sled::Db,
    /// The database's directory, for syncs.
    path: PathBuf,
    /// Says whether the database may be believed after a restart.
    trust: TrustMarker,
    /// Blob files already fsynced: sled writes each once and never changes it, so a sync
    /// needs to fsync only the new ones.
    synced_blobs: HashSet<PathBuf>,
    /// The [`SM_TREE`] tree: every key under a `d` prefix, and the applied index and key
    /// count under `m` keys, written in the same batch as the entries they follow.
    tree: sled::Tree,
    /// Index and term of the last applied entry, as the tree holds it.
    applied: LogId,
    /// Number of keys, as the tree holds it: counted by every apply and restore, so a status
    /// question needs no scan.
    key_count: u64,
}

fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(DATA_PREFIX);
    k.extend_from_slice(key);
    k
}

fn be_u64(v: &[u8], at: usize) -> u64 {
    v.get(at..at + 8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
        .unwrap_or(0)
}

fn applied_value(index: u64, term: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&index.to_be_bytes());
    v[8..].copy_from_slice(&term.to_be_bytes());
    v
}

impl StateMachine {
    /// Opens (or creates) the state machine stored in the sled database at `path`, and makes
    /// what sled recovered durable. A database its marker does not vouch for is thrown away
    /// first: the state machine then starts empty, to be filled from the snapshot and the log.
    pub fn open(path: &Path) -> Result<StateMachine> {
        let (trust, verdict) = TrustMarker::read(&path.with_extension("trust"));
        if let Trust::Untrusted(why) = verdict {
            tracing::warn!(db = %path.display(), "rebuilding the state machine: {why}");
            if path.exists() {
                fs::remove_dir_all(path).map_err(|e| {
                    Error::Disk(format!("{}: cannot remove it: {e}", path.display()))
                })?;
                sync_parent(path)?;
            }
        }
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .open()
            .map_err(|e| {
                Error::Disk(format!("{}: cannot open the database: {e}", path.display()))
            })?;
        let tree = db.open_tree(SM_TREE)?;
        let applied = tree
            .get(APPLIED_KEY)?
            .map(|v| LogId {
                index: be_u64(&v, 0),
                term: be_u64(&v, 8),
            })
            .unwrap_or_default();
        let key_count = tree.get(COUNT_KEY)?.map(|v| be_u64(&v, 0)).unwrap_or(0);
        let mut sm = StateMachine {
            db,
            path: path.to_path_buf(),
            trust,
            synced_blobs: HashSet::new(),
            tree,
            applied,
            key_count,
        };
        // The database directory's own name, when sled has just created it.
        sync_parent(path)?;
        sm.sync()?;
        Ok(sm)
    }

    /// The sled database, for the start-up migration of an old log kept in it.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Makes everything applied so far durable: sled's flush, then an fsync of every file
    /// and directory of the database (blob files once each), then the marker says `clean`.
    pub fn sync(&mut self) -> Result<()> {
        self.db.flush()?;
        sync_tree(&self.path, &mut self.synced_blobs)?;
        self.trust.set_clean()
    }

    /// Marks the database for rebuilding at the next start (sled failed at run time).
    pub fn mark_untrusted(&mut self) {
        self.trust.set_untrusted();
    }

    /// Index and term of the last applied entry.
    pub fn applied(&self) -> LogId {
        self.applied
    }

    pub fn key_count(&self) -> u64 {
        self.key_count
    }

    /// Applies committed entries in order, atomically with the new applied index.
    /// Entries at or below the applied index are skipped (they were applied before a restart).
    pub fn apply(&mut self, entries: &[Entry]) -> Result<Vec<AppliedEntry>> {
        let mut batch = sled::Batch::default();
        // Writes of this batch, so later entries of the batch see earlier ones.
        let mut overlay: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        let mut count = self.key_count;
        let mut applied = self.applied;
        let mut out = Vec::with_capacity(entries.len());
        let mut large_value = false;
        for e in entries.iter().filter(|e| e.index > self.applied.index) {
            if e.index != applied.index + 1 {
                return Err(Error::Disk(format!(
                    "entry {} applied out of order after {}",
                    e.index, applied.index
                )));
            }
            applied = LogId {
                index: e.index,
                term: e.term,
            };
            let (origin, outcome) =
                if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
                    (None, CommandOutcome::Noop)
                } else {
                    match LogCommand::decode(e.data.as_ref()) {
                        Err(err) => (
                            None,
                            CommandOutcome::Rejected(format!("undecodable command: {err}")),
                        ),
                        Ok(cmd) => {
                            let origin = Some(ProposalTag {
                                node: cmd.origin_node,
                                seq: cmd.origin_seq,
                            });
                            let outcome = match cmd.op {
                                None => CommandOutcome::Rejected("command has no operation".into()),
                                Some(Op::Put(PutRequest { key, value, .. }))
                                | Some(Op::Set(SetOp { key, value })) => {
                                    let op = SetOp { key, value };
                                    let k = data_key(&op.key);
                                    if !self.exists(&overlay, &k)? {
                                        count += 1;
                                    }
                                    large_value |= op.value.len() >= SLED_BLOB_BYTES;
                                    batch.insert(k.clone(), op.value.clone());
                                    overlay.insert(k, Some(op.value));
                                    CommandOutcome::Done(WriteResponse::Put(PutResponse::default()))
                                }
                                Some(Op::DeleteRange(DeleteRangeRequest { key, .. }))
                                | Some(Op::Delete(DeleteOp { key })) => {
                                    let op = DeleteOp { key };
                                    let k = data_key(&op.key);
                                    let existed = self.exists(&overlay, &k)?;
                                    if existed {
                                        count -= 1;
                                        batch.remove(k.clone());
                                        overlay.insert(k, None);
                                    }
                                    CommandOutcome::Done(WriteResponse::DeleteRange(
                                        DeleteRangeResponse {
                                            deleted: i64::from(existed),
                                            ..Default::default()
                                        },
                                    ))
                                }
                                Some(_) => CommandOutcome::Rejected(
                                    "etcd commands are not applied yet".into(),
                                ),
                            };
                            (origin, outcome)
                        }
                    }
                };
            out.push(AppliedEntry {
                index: e.index,
                term: e.term,
                origin,
                outcome,
            });
        }
        if out.is_empty() {
            return Ok(out);
        }
        batch.insert(APPLIED_KEY, &applied_value(applied.index, applied.term));
        batch.insert(COUNT_KEY, &count.to_be_bytes());
        self.trust.set_dirty()?;
        self.tree.apply_batch(batch)?;
        self.applied = applied;
        self.key_count = count;
        if large_value {
            self.sync()?;
        }
        Ok(out)
    }

    fn exists(&self, overlay: &HashMap<Vec<u8>, Option<Vec<u8>>>, k: &[u8]) -> Result<bool> {
        Ok(match overlay.get(k) {
            Some(v) => v.is_some(),
            None => self.tree.contains_key(k)?,
        })
    }

    /// `key` at the current revision, if present.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        Ok(self.tree.get(data_key(key))?.map(|v| KeyValue {
            key: key.to_vec(),
            value: v.to_vec(),
            ..Default::default()
        }))
    }

    /// STAND-IN until the MVCC store lands: keys of the range at the current state only.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let mut kvs = Vec::new();
        for kv in self.tree.scan_prefix([DATA_PREFIX]) {
            let (k, v) = kv?;
            if etcd_api::range::contains(&req.key, &req.range_end, &k[1..]) {
                kvs.push(KeyValue {
                    key: k[1..].to_vec(),
                    value: if req.keys_only { vec![] } else { v.to_vec() },
                    ..Default::default()
                });
            }
        }
        let count = kvs.len() as i64;
        Ok(RangeResponse {
            header: Some(ResponseHeader {
                revision: self.revision(),
                ..Default::default()
            }),
            kvs: if req.count_only { vec![] } else { kvs },
            more: false,
            count,
        })
    }

    /// STAND-IN until the MVCC store lands.
    pub fn hash_kv(&self, _revision: i64) -> Result<HashKvResponse> {
        Ok(HashKvResponse {
            header: Some(ResponseHeader {
                revision: self.revision(),
                ..Default::default()
            }),
            hash: self.hash()? as u32,
            compact_revision: -1,
        })
    }

    /// STAND-IN until the MVCC store lands.
    pub fn revision(&self) -> i64 {
        1
    }

    /// Bytes the database takes on disk.
    pub fn db_size(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// STAND-IN until the MVCC store lands: nothing to remove.
    pub fn compact_step(&mut self, _max_records: usize) -> Result<bool> {
        Ok(false)
    }

    /// Up to `limit` keys with `prefix`, from `start` (inclusive) in byte order, and no more
    /// than fits in `max_bytes` of encoded answer ([`list_answer_bytes`]): the StorageActor
    /// builds the page while applies wait, and the gRPC layer sends it as one message, so its
    /// size must be bounded however large the values are. The page stops before the entry that
    /// would take it past `max_bytes`, counting the `next_key` it would then carry; the first
    /// entry is always included, however large, so a client always makes progress.
    pub fn list(
        &self,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
        max_bytes: usize,
        keys_only: bool,
    ) -> Result<ListPage> {
        let from = if start > prefix {
            data_key(start)
        } else {
            data_key(prefix)
        };
        let pfx = data_key(prefix);
        let mut range = self.tree.range(from..);
        // The next stored entry with the prefix. Looking one ahead reads nothing extra: the
        // entry after a page is read anyway, to name `next_key`.
        let mut next_entry = || -> Result<Option<(sled::IVec, sled::IVec)>> {
            match range.next() {
                Some(kv) => {
                    let (k, v) = kv?;
                    Ok(k.starts_with(&pfx).then_some((k, v)))
                }
                None => Ok(None),
            }
        };
        let mut page = ListPage::default();
        let mut used = LIST_ANSWER_FIXED_BYTES;
        let mut current = next_entry()?;
        while let Some((k, v)) = current {
            let key = &k[1..];
            if page.kvs.len() >= limit {
                page.next_key = Some(key.to_vec());
                break;
            }
            let value: &[u8] = if keys_only { &[] } else { &v };
            let following = next_entry()?;
            // Should the page end after this entry, the key that follows rides along as
            // `next_key`; counting it here keeps every page, cut here or later, in bounds.
            let next_key_bytes = following
                .as_ref()
                .map_or(0, |(k, _)| bytes_field_len(k.len() - 1));
            let cost = list_entry_bytes(key.len(), value.len());
            if !page.kvs.is_empty() && used + cost + next_key_bytes > max_bytes {
                page.next_key = Some(key.to_vec());
                break;
            }
            used += cost;
            page.kvs.push((key.to_vec(), value.to_vec()));
            current = following;
        }
        Ok(page)
    }

    /// A hash of all keys and values and the applied index (FNV-1a), so nodes can be compared.
    pub fn hash(&self) -> Result<u64> {
        const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const FNV_PRIME: u64 = 0x0100_0000_01b3;
        let mut h = FNV_OFFSET;
        let mut eat = |bytes: &[u8]| {
            for b in (bytes.len() as u64).to_be_bytes().iter().chain(bytes) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(FNV_PRIME);
            }
        };
        for kv in self.tree.scan_prefix([DATA_PREFIX]) {
            let (k, v) = kv?;
            eat(&k);
            eat(&v);
        }
        eat(&self.applied.index.to_be_bytes());
        Ok(h)
    }

    /// A snapshot of everything applied so far, with `conf_state` as its configuration.
    /// Syncs first, so a restart after it rarely has much to apply again.
    pub fn snapshot(&mut self, conf_state: &ConfState) -> Result<Snapshot> {
        self.sync()?;
        let mut data = Vec::new();
        for kv in self.tree.scan_prefix([DATA_PREFIX]) {
            let (k, v) = kv?;
            for part in [&k[1..], &v[..]] {
                data.extend_from_slice(&(part.len() as u32).to_be_bytes());
                data.extend_from_slice(part);
            }
        }
        let mut snap = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = self.applied.index;
        meta.term = self.applied.term;
        meta.set_conf_state(conf_state.clone());
        Ok(snap)
    }

    /// Replaces the whole state with `snap`'s, atomically, and syncs.
    pub fn restore(&mut self, snap: &Snapshot) -> Result<()> {
        let pairs = snapshot_pairs(&snap.data)?;
        let mut batch = sled::Batch::default();
        for kv in self.tree.iter() {
            batch.remove(kv?.0);
        }
        let count = pairs.len() as u64;
        for (k, v) in pairs {
            batch.insert(data_key(k), v);
        }
        let m = snap.get_metadata();
        batch.insert(APPLIED_KEY, &applied_value(m.index, m.term));
        batch.insert(COUNT_KEY, &count.to_be_bytes());
        self.trust.set_dirty()?;
        self.tree.apply_batch(batch)?;
        self.sync()?;
        self.applied = LogId::of(m);
        self.key_count = count;
        Ok(())
    }
}

/// The key-value pairs of a snapshot's data: each key and value as a 4-byte big-endian length
/// and the bytes. Data that is not made of whole pairs is refused.
pub fn snapshot_pairs(data: &[u8]) -> Result<Vec<(&[u8], &[u8])>> {
    fn part<'a>(data: &'a [u8], at: &mut usize) -> Result<&'a [u8]> {
        let corrupt = || Error::Disk("snapshot data is corrupt".into());
        let len = data.get(*at..*at + 4).ok_or_else(corrupt)?;
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        let bytes = data.get(*at + 4..*at + 4 + len).ok_or_else(corrupt)?;
        *at += 4 + len;
        Ok(bytes)
    }
    let mut pairs = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let k = part(data, &mut at)?;
        let v = part(data, &mut at)?;
        pairs.push((k, v));
    }
    Ok(pairs)
}

/// Fsyncs every file and directory under `dir`, children before their directory, skipping
/// the blob files in `synced_blobs` and adding those it syncs.
fn sync_tree(dir: &Path, synced_blobs: &mut HashSet<PathBuf>) -> Result<()> {
    let err =
        |p: &Path, e: std::io::Error| Error::Disk(format!("{}: cannot sync: {e}", p.display()));
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for item in fs::read_dir(dir).map_err(|e| err(dir, e))? {
        let item = item.map_err(|e| err(dir, e))?;
        let path = item.path();
        if item.file_type().map_err(|e| err(&path, e))?.is_dir() {
            dirs.push(path);
        } else {
            files.push(path);
        }
    }
    for d in &dirs {
        sync_tree(d, synced_blobs)?;
    }
    let in_blobs = dir.file_name().is_some_and(|n| n == "blobs");
    for f in &files {
        if in_blobs && synced_blobs.contains(f) {
            continue;
        }
        match fs::File::open(f) {
            Ok(file) => {
                file.sync_all().map_err(|e| err(f, e))?;
                if in_blobs {
                    synced_blobs.insert(f.clone());
                }
            }
            // sled removes old snapshot and blob files as it goes.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(f, e)),
        }
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err(dir, e))
}

/// Encodes a command as the data of a log entry.
pub fn encode_command(cmd: &LogCommand) -> Vec<u8> {
    cmd.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(index: u64, k: &str, v: &str) -> Entry {
        let cmd = LogCommand {
            origin_node: 1,
            origin_seq: index,
            op: Some(Op::Set(SetOp {
                key: k.into(),
                value: v.into(),
            })),
        };
        Entry {
            index,
            term: 1,
            data: encode_command(&cmd).into(),
            ..Default::default()
        }
    }

    fn del(index: u64, k: &str) -> Entry {
        let cmd = LogCommand {
            origin_node: 1,
            origin_seq: index,
            op: Some(Op::Delete(DeleteOp { key: k.into() })),
        };
        Entry {
            index,
            term: 1,
            data: encode_command(&cmd).into(),
            ..Default::default()
        }
    }

    #[test]
    fn apply_get_delete_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        let noop = Entry {
            index: 1,
            term: 1,
            ..Default::default()
        };
        let out = sm
            .apply(&[
                noop,
                set(2, "a", "1"),
                set(3, "a", "2"),
                del(4, "b"),
                set(5, "b", "x"),
                del(6, "b"),
            ])
            .unwrap();
        assert_eq!(out[0].outcome, CommandOutcome::Noop);
        let deleted = |n| {
            CommandOutcome::Done(WriteResponse::DeleteRange(DeleteRangeResponse {
                deleted: n,
                ..Default::default()
            }))
        };
        assert_eq!(out[3].outcome, deleted(0));
        assert_eq!(out[5].outcome, deleted(1), "sees the same batch's write");
        assert_eq!(out[1].origin, Some(ProposalTag { node: 1, seq: 2 }));
        assert_eq!(
            sm.get(b"a").unwrap().map(|kv| kv.value),
            Some(b"2".to_vec())
        );
        assert_eq!(sm.get(b"b").unwrap(), None);
        assert_eq!(
            (sm.key_count(), sm.applied()),
            (1, LogId { index: 6, term: 1 })
        );
    }

    #[test]
    fn restart_resumes_after_last_applied_without_reapplying() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut sm = StateMachine::open(dir.path()).unwrap();
            sm.apply(&[set(1, "a", "1"), set(2, "b", "1")]).unwrap();
            sm.sync().unwrap();
        }
        let mut sm = StateMachine::open(dir.path()).unwrap();
        assert_eq!((sm.applied().index, sm.key_count()), (2, 2));
        let out = sm.apply(&[set(2, "b", "1"), del(3, "a")]).unwrap();
        assert_eq!(out.len(), 1, "entry 2 is not applied twice");
        assert_eq!(sm.key_count(), 1);
        assert!(sm.apply(&[set(9, "z", "1")]).is_err(), "gaps are refused");
    }

    #[test]
    fn list_pages_by_prefix_and_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        let keys = ["a/1", "a/2", "a/3", "b/1"];
        let entries: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| set(i as u64 + 1, k, "v"))
            .collect();
        sm.apply(&entries).unwrap();
        let p = sm.list(b"a/", b"", 2, usize::MAX, false).unwrap();
        assert_eq!(
            p.kvs.iter().map(|kv| kv.0.clone()).collect::<Vec<_>>(),
            vec![b"a/1".to_vec(), b"a/2".to_vec()]
        );
        assert_eq!(p.next_key, Some(b"a/3".to_vec()));
        let p = sm.list(b"a/", b"a/3", 2, usize::MAX, true).unwrap();
        assert_eq!(p.kvs, vec![(b"a/3".to_vec(), vec![])]);
        assert_eq!(p.next_key, None);
        assert_eq!(
            sm.list(b"", b"", 10, usize::MAX, true).unwrap().kvs.len(),
            4
        );
    }

    /// `page` as the gRPC layer encodes it, with the largest header there is.
    fn encoded_answer(page: &ListPage) -> usize {
        use crate::proto::kv::{KeyValue, ListResponse, ResponseHeader};
        ListResponse {
            header: Some(ResponseHeader {
                node_id: u64::MAX,
                term: u64::MAX,
                index: u64::MAX,
            }),
            kvs: page
                .kvs
                .iter()
                .map(|(key, value)| KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            more: true,
            next_key: page.next_key.clone().unwrap_or_default(),
        }
        .encoded_len()
    }

    /// Keys of `page`, as strings.
    fn keys_of(page: &ListPage) -> Vec<String> {
        page.kvs
            .iter()
            .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
            .collect()
    }

    #[test]
    fn list_pages_are_cut_by_encoded_bytes() {
        /// Length of every value here.
        const VALUE_BYTES: usize = 100;
        /// One `KeyValue` of a 2-byte key and a [`VALUE_BYTES`] value, encoded: the key field
        /// (tag, length, 2 bytes), the value field (tag, length, 100 bytes), framed by a tag
        /// and a length.
        const ENTRY_BYTES: usize = 2 + (1 + 1 + 2) + (1 + 1 + VALUE_BYTES);
        /// A 2-byte `next_key`, encoded.
        const NEXT_KEY_BYTES: usize = 1 + 1 + 2;
        /// One `KeyValue` of a 2-byte key alone, encoded.
        const KEY_ONLY_BYTES: usize = 2 + (1 + 1 + 2);

        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        let value = "v".repeat(VALUE_BYTES);
        let keys = ["k1", "k2", "k3", "k4", "k5"];
        let entries: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| set(i as u64 + 1, k, &value))
            .collect();
        sm.apply(&entries).unwrap();
        let list = |start: &str, max_bytes, keys_only| {
            sm.list(b"k", start.as_bytes(), usize::MAX, max_bytes, keys_only)
                .unwrap()
        };

        // Exactly room for two entries and the next key: two, and the answer is that size.
        let two = LIST_ANSWER_FIXED_BYTES + 2 * ENTRY_BYTES + NEXT_KEY_BYTES;
        let p = list("", two, false);
        assert_eq!(keys_of(&p), ["k1", "k2"]);
        assert_eq!(p.next_key.as_deref(), Some(&b"k3"[..]));
        assert_eq!(p.kvs[1].1, value.as_bytes(), "values come with the keys");
        assert_eq!(list_answer_bytes(&p), two);
        assert_eq!(encoded_answer(&p), two, "the count is the real encoding");
        // One byte less: the second entry would leave no room for the next key.
        let p = list("", two - 1, false);
        assert_eq!(keys_of(&p), ["k1"]);
        assert_eq!(p.next_key.as_deref(), Some(&b"k2"[..]));

        // A bound smaller than any entry still returns one, so a client always advances.
        let p = list("k4", 1, false);
        assert_eq!(keys_of(&p), ["k4"]);
        assert_eq!(p.next_key.as_deref(), Some(&b"k5"[..]));
        // The last entry needs no room for a next key.
        let last = LIST_ANSWER_FIXED_BYTES + ENTRY_BYTES;
        let p = list("k5", last, false);
        assert_eq!((keys_of(&p), p.next_key), (vec!["k5".to_string()], None));

        // Keys only: only keys count, so many more fit in the same bound.
        let keys_only = LIST_ANSWER_FIXED_BYTES + 3 * KEY_ONLY_BYTES + NEXT_KEY_BYTES;
        let p = list("", keys_only, true);
        assert_eq!(keys_of(&p), ["k1", "k2", "k3"]);
        assert!(p.kvs.iter().all(|(_, v)| v.is_empty()));
        assert_eq!(p.next_key.as_deref(), Some(&b"k4"[..]));
        assert_eq!(encoded_answer(&p), keys_only);
        assert!(
            keys_only < two,
            "the same three keys with values would not fit"
        );

        // Paging by next_key with any bound visits every key once, each page within it.
        for max_bytes in [1, two - 1, two, two + ENTRY_BYTES, 10_000] {
            let mut seen = Vec::new();
            let mut start = String::new();
            loop {
                let p = list(&start, max_bytes, false);
                assert!(
                    p.kvs.len() == 1 || encoded_answer(&p) <= max_bytes,
                    "a page of {} bytes over {max_bytes}",
                    encoded_answer(&p)
                );
                seen.extend(keys_of(&p));
                match p.next_key {
                    Some(next) => start = String::from_utf8(next).unwrap(),
                    None => break,
                }
            }
            assert_eq!(seen, keys, "paging with max_bytes {max_bytes}");
        }

        // The count limit still applies within the byte bound.
        let p = sm.list(b"k", b"", 2, usize::MAX, false).unwrap();
        assert_eq!(
            (keys_of(&p), p.next_key),
            (
                vec!["k1".to_string(), "k2".to_string()],
                Some(b"k3".to_vec())
            )
        );
    }

    #[test]
    fn snapshot_restores_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = StateMachine::open(&dir.path().join("a")).unwrap();
        a.apply(&[set(1, "x", "1"), set(2, "y", "2")]).unwrap();
        let snap = a
            .snapshot(&ConfState {
                voters: vec![1],
                ..Default::default()
            })
            .unwrap();
        let mut b = StateMachine::open(&dir.path().join("b")).unwrap();
        b.apply(&[set(1, "old", "gone")]).unwrap();
        b.restore(&snap).unwrap();
        assert_eq!(b.get(b"old").unwrap(), None);
        assert_eq!(
            (b.applied(), b.key_count()),
            (LogId { index: 2, term: 1 }, 2)
        );
        assert_eq!(a.hash().unwrap(), b.hash().unwrap());
    }
}
