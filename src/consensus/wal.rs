//! The write-ahead log: the Raft log and state as records in append-only segment files, made
//! durable with `fdatasync`.
//!
//! # Why not sled
//! sled's `flush` ends in `sync_file_range`, which neither flushes a disk's write cache nor
//! persists file metadata, so a power cut can take back an entry a node already acknowledged,
//! or a vote it already cast. The Raft log is also the one structure whose every write must be
//! durable before the node may act on it, and it is written strictly at its end: a file
//! appended to and synced with `fdatasync` is both the simplest and the cheapest way to get
//! that (etcd's WAL does the same). sled keeps the state machine, which needs no sync of its
//! own: it is rebuilt from the snapshot file and this log.
//!
//! # Format
//! The log is a directory of segments named `<sequence as 16 hex digits>.wal`. Each segment
//! starts with [`SEGMENT_MAGIC`], then records:
//!
//! ```text
//! | payload length: u32 LE | crc32 of kind + payload: u32 LE | kind: u8 | payload |
//! ```
//!
//! | kind | payload | meaning when replayed |
//! |---|---|---|
//! | entry | raft `Entry` (protobuf) | the log from this entry's index on is replaced by it |
//! | hard state | raft `HardState` (protobuf) | the newest term, vote and commit |
//! | conf state | raft `ConfState` (protobuf) | the newest configuration |
//! | compact | index, term (u64 BE each) | entries up to index are discarded |
//! | snapshot | index, term, `ConfState` | a snapshot was installed: the whole log is discarded |
//!
//! # Invariants
//! - **Group commit.** [`Wal::append`] writes all the records of one Raft `Ready` with one
//!   `write`; [`Wal::sync`] covers them with one `fdatasync`. Nothing a `Ready` asks for is acted
//!   on before `sync` returns.
//! - **Files and names are durable too.** A new segment is created, given its magic and its
//!   head, and the directory is fsynced before any record in it is counted as durable.
//! - **Torn tails are cut, never replayed.** A power cut can leave the end of the newest
//!   segment half-written. Replay stops at the first record whose length or checksum is wrong
//!   in the newest segment and cuts the file there; such a record was never synced, so nothing
//!   acknowledged is lost. The same damage in an older segment, which was fully synced before
//!   the next one began, is corruption: the log refuses to open and names file and offset.
//! - **Every segment can be read without its predecessors' state records.** A new segment
//!   begins with the current compaction point, configuration and hard state, so old segments
//!   whose entries are all compacted can be deleted once that compaction is synced.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState};

use crate::durable::sync_dir;
use crate::error::{Error, Result};

/// First bytes of every segment: identifies the file and the format version.
pub const SEGMENT_MAGIC: &[u8; 8] = b"DKVWAL\x00\x01";
/// Default size at which a segment is closed and a new one begun, in bytes (etcd's is the
/// same). Entries are never split, so a segment can exceed it by one `Ready`'s records.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Largest payload a record may have, in bytes. A length above it can only be a torn or
/// corrupt header (entries are far smaller: values are limited to 64 MiB).
pub const MAX_RECORD_BYTES: u32 = 256 * 1024 * 1024;
/// Bytes in front of each record's payload: length, checksum, kind.
const RECORD_HEADER_BYTES: usize = 9;
/// File name suffix of segments.
const SEGMENT_SUFFIX: &str = ".wal";

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_CONF_STATE: u8 = 3;
const KIND_COMPACT: u8 = 4;
const KIND_SNAPSHOT: u8 = 5;

/// One record of the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A log entry; replaces the log from its index on.
    Entry(Entry),
    /// The newest term, vote and commit index.
    HardState(HardState),
    /// The newest configuration.
    ConfState(ConfState),
    /// Entries up to `index` (whose term is `term`) are discarded.
    Compact {
        /// Last discarded index.
        index: u64,
        term: u64,
    },
    /// A snapshot at `index` was installed: the log now starts after it.
    Snapshot {
        index: u64,
        term: u64,
        conf_state: ConfState,
    },
}

/// Where an entry's payload lies, so it can be read back without keeping it in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Sequence number of the segment.
    pub segment: u64,
    /// Byte offset of the payload in the segment.
    pub offset: u64,
    /// Length of the payload in bytes.
    pub len: u32,
}

/// One segment file.
struct Segment {
    /// Its sequence number (the file name).
    seq: u64,
    /// Its path, for errors and removal.
    path: PathBuf,
    /// Open for reading and, in the newest segment, appending.
    file: File,
    /// Bytes in the file: the offset of the next record.
    len: u64,
    /// Highest entry index written to it (0: none). Once the log is compacted past it, the
    /// segment holds nothing needed.
    max_entry_index: u64,
}

/// The write-ahead log of one node.
pub struct Wal {
    /// Where segments are created; fsynced after a new one appears (see `dir_unsynced`).
    dir: PathBuf,
    /// Oldest first; the last one is appended to.
    segments: Vec<Segment>,
    /// Encoding buffer, reused so a `Ready` costs no allocation once it has grown.
    buf: Vec<u8>,
    /// Whether `sync` really syncs. Off only in the deliberately unsafe test mode that shows the
    /// power-cut test has teeth.
    fsync: bool,
    /// Size in bytes past which the newest segment is closed.
    segment_bytes: u64,
    /// Bytes were written since the last `fdatasync`.
    unsynced: bool,
    /// A segment was created since the directory was last fsynced.
    dir_unsynced: bool,
}

fn storage_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Disk(format!("{}: {e}", path.display()))
}

fn segment_name(seq: u64) -> String {
    format!("{seq:016x}{SEGMENT_SUFFIX}")
}

fn encode(record: &Record, out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    let kind = match record {
        Record::Entry(e) => {
            e.write_to_vec(out)?;
            KIND_ENTRY
        }
        Record::HardState(hs) => {
            hs.write_to_vec(out)?;
            KIND_HARD_STATE
        }
        Record::ConfState(cs) => {
            cs.write_to_vec(out)?;
            KIND_CONF_STATE
        }
        Record::Compact { index, term } => {
            out.extend_from_slice(&index.to_be_bytes());
            out.extend_from_slice(&term.to_be_bytes());
            KIND_COMPACT
        }
        Record::Snapshot {
            index,
            term,
            conf_state,
        } => {
            out.extend_from_slice(&index.to_be_bytes());
            out.extend_from_slice(&term.to_be_bytes());
            conf_state.write_to_vec(out)?;
            KIND_SNAPSHOT
        }
    };
    let payload_len = out.len() - start - RECORD_HEADER_BYTES;
    let len = u32::try_from(payload_len)
        .ok()
        .filter(|l| *l <= MAX_RECORD_BYTES)
        .ok_or_else(|| Error::Disk(format!("a {payload_len}-byte log record is too large")))?;
    out[start + 8] = kind;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.finalize().to_le_bytes());
    Ok(())
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_be_bytes(s.try_into().expect("8 bytes")))
}

fn decode(kind: u8, payload: &[u8]) -> std::result::Result<Record, String> {
    let pb = |e: protobuf::ProtobufError| e.to_string();
    Ok(match kind {
        KIND_ENTRY => Record::Entry(Entry::parse_from_bytes(payload).map_err(pb)?),
        KIND_HARD_STATE => Record::HardState(HardState::parse_from_bytes(payload).map_err(pb)?),
        KIND_CONF_STATE => Record::ConfState(ConfState::parse_from_bytes(payload).map_err(pb)?),
        KIND_COMPACT | KIND_SNAPSHOT => {
            let (index, term) = be_u64(payload, 0)
                .zip(be_u64(payload, 8))
                .ok_or("short compaction record")?;
            if kind == KIND_COMPACT {
                Record::Compact { index, term }
            } else {
                let conf_state = ConfState::parse_from_bytes(&payload[16..]).map_err(pb)?;
                Record::Snapshot {
                    index,
                    term,
                    conf_state,
                }
            }
        }
        other => return Err(format!("unknown record kind {other}")),
    })
}

/// Parses the records of one segment's bytes. Returns the records with their locations, and
/// the length of the valid prefix with, if it stops short of the end, why.
fn parse_segment(seq: u64, bytes: &[u8]) -> (Vec<(Record, Location)>, usize, Option<String>) {
    if bytes.len() < SEGMENT_MAGIC.len() || &bytes[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        return (Vec::new(), 0, Some("no segment header".into()));
    }
    let mut at = SEGMENT_MAGIC.len();
    let mut out = Vec::new();
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + RECORD_HEADER_BYTES) else {
            return (out, at, Some("truncated record header".into()));
        };
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let kind = header[8];
        let body_start = at + RECORD_HEADER_BYTES;
        let Some(payload) = (len <= MAX_RECORD_BYTES)
            .then(|| bytes.get(body_start..body_start + len as usize))
            .flatten()
        else {
            return (
                out,
                at,
                Some(format!("record of {len} bytes runs past the end")),
            );
        };
        let mut h = crc32fast::Hasher::new();
        h.update(&[kind]);
        h.update(payload);
        if h.finalize() != crc {
            return (out, at, Some("checksum mismatch".into()));
        }
        match decode(kind, payload) {
            Ok(r) => out.push((
                r,
                Location {
                    segment: seq,
                    offset: body_start as u64,
                    len,
                },
            )),
            Err(e) => return (out, at, Some(e)),
        }
        at = body_start + len as usize;
    }
    (out, at, None)
}

impl Wal {
    /// Opens (or creates) the log in `dir` and replays it: `visit` gets every record in the
    /// order it was written, with the location of each entry. A torn tail of the newest segment
    /// is cut off (and the cut synced) before this returns.
    ///
    /// `fsync = false` makes `sync` a no-op: for the power-cut test's negative case only.
    pub fn open(
        dir: &Path,
        fsync: bool,
        segment_bytes: u64,
        mut visit: impl FnMut(Record, Location) -> Result<()>,
    ) -> Result<Wal> {
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(|e| storage_err(dir, e))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let mut seqs = Vec::new();
        for item in fs::read_dir(dir).map_err(|e| storage_err(dir, e))? {
            let name = item.map_err(|e| storage_err(dir, e))?.file_name();
            let name = name.to_string_lossy();
            if let Some(hex) = name.strip_suffix(SEGMENT_SUFFIX) {
                match u64::from_str_radix(hex, 16) {
                    Ok(seq) if hex.len() == 16 => seqs.push(seq),
                    _ => tracing::warn!(file = %name, "ignoring a file that is not a segment"),
                }
            }
        }
        seqs.sort_unstable();
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            segments: Vec::new(),
            buf: Vec::new(),
            fsync,
            segment_bytes,
            unsynced: false,
            dir_unsynced: false,
        };
        let newest = seqs.last().copied();
        for seq in seqs {
            let path = dir.join(segment_name(seq));
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| storage_err(&path, e))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(|e| storage_err(&path, e))?;
            let (records, valid, damage) = parse_segment(seq, &bytes);
            let mut len = valid as u64;
            if let Some(why) = damage {
                if Some(seq) != newest {
                    return Err(storage_err(
                        &path,
                        format!("corrupt at offset {valid} ({why}); the segments after it were begun only once it was synced"),
                    ));
                }
                tracing::warn!(
                    file = %path.display(),
                    offset = valid,
                    dropped_bytes = bytes.len() - valid,
                    "cutting a torn tail off the raft log ({why})"
                );
                if valid < SEGMENT_MAGIC.len() {
                    file.write_all_at(SEGMENT_MAGIC, 0)
                        .map_err(|e| storage_err(&path, e))?;
                    len = SEGMENT_MAGIC.len() as u64;
                }
                file.set_len(len).map_err(|e| storage_err(&path, e))?;
                file.sync_all().map_err(|e| storage_err(&path, e))?;
            }
            let mut max_entry_index = 0;
            for (record, loc) in records {
                if let Record::Entry(e) = &record {
                    max_entry_index = max_entry_index.max(e.index);
                }
                visit(record, loc)?;
            }
            wal.segments.push(Segment {
                seq,
                path,
                file,
                len,
                max_entry_index,
            });
        }
        if wal.segments.is_empty() {
            wal.begin_segment(1)?;
            wal.sync()?;
        }
        Ok(wal)
    }

    /// Appends `records` with one write. Returns the location of each entry record, in order.
    /// They are durable only after [`Wal::sync`].
    pub fn append(&mut self, records: &[Record]) -> Result<Vec<Location>> {
        self.buf.clear();
        let mut starts = Vec::new();
        for r in records {
            let at = self.buf.len();
            encode(r, &mut self.buf)?;
            if let Record::Entry(e) = r {
                starts.push((at, e.index));
            }
        }
        let seg = self.segments.last_mut().expect("a wal has a segment");
        seg.file
            .write_all_at(&self.buf, seg.len)
            .map_err(|e| storage_err(&seg.path, e))?;
        let locs = starts
            .iter()
            .map(|(at, _)| {
                let header = &self.buf[*at..*at + 4];
                Location {
                    segment: seg.seq,
                    offset: seg.len + (*at + RECORD_HEADER_BYTES) as u64,
                    len: u32::from_le_bytes(header.try_into().expect("4 bytes")),
                }
            })
            .collect();
        if let Some((_, last)) = starts.last() {
            seg.max_entry_index = seg.max_entry_index.max(*last);
        }
        seg.len += self.buf.len() as u64;
        self.unsynced = true;
        Ok(locs)
    }

    /// Makes everything appended so far durable: `fdatasync` of the newest segment, and an
    /// fsync of the directory if a segment was created since the last one.
    pub fn sync(&mut self) -> Result<()> {
        if !self.fsync {
            self.unsynced = false;
            self.dir_unsynced = false;
            return Ok(());
        }
        if self.unsynced {
            let seg = self.segments.last().expect("a wal has a segment");
            seg.file
                .sync_data()
                .map_err(|e| storage_err(&seg.path, e))?;
            self.unsynced = false;
        }
        if self.dir_unsynced {
            sync_dir(&self.dir)?;
            self.dir_unsynced = false;
        }
        Ok(())
    }

    /// Whether the newest segment is full, so the next append should go to a new one.
    pub fn should_rotate(&self) -> bool {
        self.segments
            .last()
            .is_some_and(|s| s.len >= self.segment_bytes)
    }

    /// Syncs the newest segment, then begins the next one with `head` (the current compaction
    /// point, configuration and hard state) and syncs that too, directory included, so every
    /// segment on disk can be read without its predecessors even if nothing more is synced.
    pub fn rotate(&mut self, head: &[Record]) -> Result<()> {
        self.sync()?;
        let seq = self.segments.last().map_or(1, |s| s.seq + 1);
        self.begin_segment(seq)?;
        self.append(head)?;
        self.sync()
    }

    fn begin_segment(&mut self, seq: u64) -> Result<()> {
        let path = self.dir.join(segment_name(seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| storage_err(&path, e))?;
        file.write_all_at(SEGMENT_MAGIC, 0)
            .map_err(|e| storage_err(&path, e))?;
        self.segments.push(Segment {
            seq,
            path,
            file,
            len: SEGMENT_MAGIC.len() as u64,
            max_entry_index: 0,
        });
        self.unsynced = true;
        self.dir_unsynced = true;
        Ok(())
    }

    /// Reads back the entry at `loc`.
    pub fn read_entry(&self, loc: Location) -> Result<Entry> {
        let seg = self
            .segments
            .binary_search_by_key(&loc.segment, |s| s.seq)
            .map(|i| &self.segments[i])
            .map_err(|_| Error::Disk(format!("raft log segment {} is gone", loc.segment)))?;
        let mut bytes = vec![0u8; loc.len as usize];
        seg.file
            .read_exact_at(&mut bytes, loc.offset)
            .map_err(|e| storage_err(&seg.path, e))?;
        Entry::parse_from_bytes(&bytes).map_err(|e| storage_err(&seg.path, e))
    }

    /// Deletes the oldest segments whose entries all lie at or below `index`. The caller has
    /// appended a compaction record covering `index`; it is synced here first, so the log never
    /// depends on a deleted segment.
    pub fn remove_through(&mut self, index: u64) -> Result<()> {
        self.sync()?;
        while self.segments.len() > 1 && self.segments[0].max_entry_index <= index {
            let seg = self.segments.remove(0);
            fs::remove_file(&seg.path).map_err(|e| storage_err(&seg.path, e))?;
            tracing::debug!(file = %seg.path.display(), "removed a compacted raft log segment");
        }
        Ok(())
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Total bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Record {
        Record::Entry(Entry {
            index,
            term,
            data: vec![7u8; 32].into(),
            ..Default::default()
        })
    }

    fn replay(dir: &Path) -> (Wal, Vec<Record>) {
        let mut out = Vec::new();
        let wal = Wal::open(dir, true, DEFAULT_SEGMENT_BYTES, |r, _| {
            out.push(r);
            Ok(())
        })
        .unwrap();
        (wal, out)
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn records_come_back_in_order_with_readable_locations() {
        let dir = tempfile::tempdir().unwrap();
        let hs = Record::HardState(HardState {
            term: 3,
            vote: 2,
            commit: 1,
            ..Default::default()
        });
        let locs = {
            let (mut wal, got) = replay(dir.path());
            assert!(got.is_empty());
            let locs = wal.append(&[entry(1, 1), entry(2, 3), hs.clone()]).unwrap();
            wal.sync().unwrap();
            locs
        };
        let (wal, got) = replay(dir.path());
        assert_eq!(got, vec![entry(1, 1), entry(2, 3), hs]);
        assert_eq!(Record::Entry(wal.read_entry(locs[1]).unwrap()), entry(2, 3));
    }

    #[test]
    fn a_torn_tail_is_cut_and_never_replayed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = replay(dir.path());
            wal.append(&[entry(1, 1)]).unwrap();
            wal.append(&[entry(2, 1)]).unwrap();
            wal.sync().unwrap();
        }
        let path = segment_files(dir.path()).pop().unwrap();
        let full = fs::metadata(&path).unwrap().len();
        // Half of the last record made it to disk.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 10).unwrap();
        let (mut wal, got) = replay(dir.path());
        assert_eq!(got, vec![entry(1, 1)]);
        // The cut is permanent, and appending goes on after it.
        wal.append(&[entry(2, 2)]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        assert_eq!(replay(dir.path()).1, vec![entry(1, 1), entry(2, 2)]);
    }

    #[test]
    fn a_flipped_byte_in_the_tail_fails_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = replay(dir.path());
            wal.append(&[entry(1, 1), entry(2, 1)]).unwrap();
            wal.sync().unwrap();
        }
        let path = segment_files(dir.path()).pop().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(replay(dir.path()).1, vec![entry(1, 1)]);
    }

    #[test]
    fn damage_in_an_older_segment_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = replay(dir.path());
            wal.append(&[entry(1, 1)]).unwrap();
            wal.rotate(&[Record::Compact { index: 0, term: 0 }])
                .unwrap();
            wal.append(&[entry(2, 1)]).unwrap();
            wal.sync().unwrap();
        }
        let first = segment_files(dir.path()).remove(0);
        let mut bytes = fs::read(&first).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&first, &bytes).unwrap();
        let err = Wal::open(dir.path(), true, DEFAULT_SEGMENT_BYTES, |_, _| Ok(()))
            .err()
            .unwrap();
        assert!(err.to_string().contains("corrupt at offset"), "{err}");
        assert!(err.to_string().contains(&segment_name(1)), "{err}");
    }

    #[test]
    fn an_empty_or_headless_newest_segment_opens_empty() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(segment_name(1)), b"DKV").unwrap();
        let (mut wal, got) = replay(dir.path());
        assert!(got.is_empty());
        wal.append(&[entry(1, 1)]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        assert_eq!(replay(dir.path()).1, vec![entry(1, 1)]);
    }

    #[test]
    fn compacted_segments_are_removed_and_the_rest_replays() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = replay(dir.path());
            wal.append(&[entry(1, 1), entry(2, 1)]).unwrap();
            wal.rotate(&[Record::Compact { index: 0, term: 0 }])
                .unwrap();
            wal.append(&[entry(3, 1)]).unwrap();
            wal.append(&[Record::Compact { index: 2, term: 1 }])
                .unwrap();
            wal.remove_through(2).unwrap();
            assert_eq!(wal.segment_count(), 1);
            wal.remove_through(3).unwrap();
            assert_eq!(
                wal.segment_count(),
                1,
                "the newest segment is never removed"
            );
        }
        assert_eq!(
            replay(dir.path()).1,
            vec![
                Record::Compact { index: 0, term: 0 },
                entry(3, 1),
                Record::Compact { index: 2, term: 1 }
            ]
        );
    }
}
