//! The contents of one regular file: what a reader sees now, and what would
//! survive a power cut.
//!
//! Two full copies are kept: `current` (every write applied) and `durable`
//! (the state at the last fsync). Between syncs the two can differ only
//!
//! * inside the byte ranges written since the last sync (`dirty`), and
//! * at or beyond the lowest length the file was truncated to since the last
//!   sync (`low_water`).
//!
//! Everywhere else they are byte-for-byte equal. That invariant is what
//! makes both directions cheap: [`Contents::sync`] copies only those regions
//! from `current` into `durable`, and [`Contents::revert`] copies the same
//! regions back the other way, so either costs what was written since the
//! last sync, not the size of the file. (Growing a file with zeros, by a
//! write past the end, `set_len` or `fallocate`, costs its growth once.)
//!
//! Why the invariant holds for a byte at position `p` that lies outside the
//! dirty ranges and below `low_water`: no write touched it, and no truncation
//! cut the file at or below it, so if it existed at the last sync it is
//! untouched in both copies; if it did not (the file has grown since), it was
//! created by zero-filling growth, and the durable copy zero-fills the same
//! way when it is resized to the current length.

use std::ops::Range;

/// Files larger than this are refused with `EFBIG`: the model is a plain
/// `Vec<u8>` (no sparse files), so a write at a huge offset would otherwise
/// try to allocate that much memory and abort the test process.
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 30;

/// One file's bytes, in their visible and their durable version.
#[derive(Debug, Default)]
pub(crate) struct Contents {
    /// What reads return: every operation applied.
    current: Vec<u8>,
    /// What survives a power cut: the contents at the last sync.
    durable: Vec<u8>,
    /// Byte ranges written since the last sync, in the order written;
    /// adjacent or overlapping appends are merged so a stream of small
    /// sequential writes stays one range.
    dirty: Vec<Range<usize>>,
    /// The smallest length the file was cut down to since the last sync
    /// (`usize::MAX` when it was not truncated). Every byte at or beyond it
    /// may differ between the two copies.
    low_water: usize,
    /// Number of unsynced content-changing operations (writes, size
    /// changes, fallocate), for the cut report.
    pending_ops: u64,
    /// Bytes carried by the unsynced write calls, for the cut report.
    pending_bytes: u64,
}

/// What a revert threw away, for the cut report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dropped {
    pub(crate) ops: u64,
    pub(crate) bytes: u64,
}

impl Contents {
    /// An empty file, durable as empty.
    pub(crate) fn new() -> Contents {
        Contents {
            low_water: usize::MAX,
            ..Contents::default()
        }
    }

    /// Current length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.current.len() as u64
    }

    /// Whether anything changed since the last sync.
    pub(crate) fn is_dirty(&self) -> bool {
        self.pending_ops > 0
    }

    /// Up to `size` bytes of the current contents from `offset` (fewer at
    /// the end of the file, none past it).
    pub(crate) fn read(&self, offset: u64, size: u32) -> &[u8] {
        let len = self.current.len();
        let start = usize::try_from(offset).map_or(len, |o| o.min(len));
        let end = start.saturating_add(size as usize).min(len);
        &self.current[start..end]
    }

    /// Writes `data` at `offset`, growing the file (with zeros in any gap)
    /// if it ends past the end. Fails with `EFBIG` beyond [`MAX_FILE_BYTES`].
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), i32> {
        if data.is_empty() {
            return Ok(());
        }
        let end = checked_end(offset, data.len() as u64)?;
        let start = end - data.len();
        if end > self.current.len() {
            self.current.resize(end, 0);
        }
        self.current[start..end].copy_from_slice(data);
        match self.dirty.last_mut() {
            Some(last) if start <= last.end && end >= last.start => {
                last.start = last.start.min(start);
                last.end = last.end.max(end);
            }
            _ => self.dirty.push(start..end),
        }
        self.pending_ops += 1;
        self.pending_bytes += data.len() as u64;
        Ok(())
    }

    /// Truncates the file to `len` bytes or extends it with zeros.
    pub(crate) fn set_len(&mut self, len: u64) -> Result<(), i32> {
        let len = checked_end(len, 0)?;
        if len < self.current.len() {
            self.low_water = self.low_water.min(len);
        }
        self.current.resize(len, 0);
        self.pending_ops += 1;
        Ok(())
    }

    /// `fallocate` mode 0: makes the file at least `offset + len` bytes
    /// long, zero-filled; it never shrinks it or changes existing bytes.
    pub(crate) fn allocate(&mut self, offset: u64, len: u64) -> Result<(), i32> {
        let end = checked_end(offset, len)?;
        if end > self.current.len() {
            self.current.resize(end, 0);
            self.pending_ops += 1;
        }
        Ok(())
    }

    /// fsync: makes the current contents durable.
    pub(crate) fn sync(&mut self) {
        if self.is_dirty() {
            converge(
                &mut self.durable,
                &self.current,
                &self.dirty,
                self.low_water,
            );
            self.clear_pending();
        }
    }

    /// Power cut: throws the unsynced operations away, so the current
    /// contents are the durable ones again. Returns what was dropped.
    pub(crate) fn revert(&mut self) -> Dropped {
        let dropped = Dropped {
            ops: self.pending_ops,
            bytes: self.pending_bytes,
        };
        if self.is_dirty() {
            converge(
                &mut self.current,
                &self.durable,
                &self.dirty,
                self.low_water,
            );
            self.clear_pending();
        }
        dropped
    }

    fn clear_pending(&mut self) {
        self.dirty.clear();
        self.low_water = usize::MAX;
        self.pending_ops = 0;
        self.pending_bytes = 0;
    }
}

/// Makes `dst` equal to `src`, given that they differ only inside `dirty`
/// and at or beyond `low_water` (the module invariant). Cost: the dirty
/// bytes, plus whatever lies between `low_water` and the end, plus growth.
fn converge(dst: &mut Vec<u8>, src: &[u8], dirty: &[Range<usize>], low_water: usize) {
    dst.resize(src.len(), 0);
    let copy = |dst: &mut Vec<u8>, range: &Range<usize>| {
        let end = range.end.min(src.len());
        if range.start < end {
            dst[range.start..end].copy_from_slice(&src[range.start..end]);
        }
    };
    copy(dst, &(low_water..src.len()));
    for range in dirty {
        copy(dst, range);
    }
}

/// `offset + len` as an in-memory index, or `EFBIG` if the file would grow
/// past [`MAX_FILE_BYTES`].
fn checked_end(offset: u64, len: u64) -> Result<usize, i32> {
    offset
        .checked_add(len)
        .filter(|end| *end <= MAX_FILE_BYTES)
        .and_then(|end| usize::try_from(end).ok())
        .ok_or(libc::EFBIG)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current(c: &Contents) -> Vec<u8> {
        c.read(0, u32::MAX).to_vec()
    }

    #[test]
    fn unsynced_writes_are_reverted() {
        let mut c = Contents::new();
        c.write(0, b"hello").unwrap();
        c.sync();
        c.write(5, b" world").unwrap();
        c.write(0, b"J").unwrap();
        assert_eq!(current(&c), b"Jello world");
        let dropped = c.revert();
        assert_eq!(dropped, Dropped { ops: 2, bytes: 7 });
        assert_eq!(current(&c), b"hello");
        assert!(!c.is_dirty());
    }

    #[test]
    fn truncate_then_regrow_reverts_and_syncs_exactly() {
        let shrink_and_regrow = |c: &mut Contents| {
            c.write(0, b"abcdefgh").unwrap();
            c.sync();
            c.set_len(2).unwrap();
            c.set_len(6).unwrap();
            c.write(7, b"Z").unwrap();
        };
        let mut reverted = Contents::new();
        shrink_and_regrow(&mut reverted);
        assert_eq!(current(&reverted), b"ab\0\0\0\0\0Z");
        reverted.revert();
        assert_eq!(current(&reverted), b"abcdefgh");

        let mut synced = Contents::new();
        shrink_and_regrow(&mut synced);
        synced.sync();
        synced.write(0, b"xx").unwrap();
        synced.revert();
        assert_eq!(current(&synced), b"ab\0\0\0\0\0Z");
    }

    #[test]
    fn write_past_end_zero_fills_the_gap_in_both_copies() {
        let mut c = Contents::new();
        c.write(0, b"ab").unwrap();
        c.sync();
        c.write(6, b"cd").unwrap();
        c.sync();
        c.write(0, b"!").unwrap();
        c.revert();
        assert_eq!(current(&c), b"ab\0\0\0\0cd");
    }

    #[test]
    fn allocate_extends_but_never_shrinks() {
        let mut c = Contents::new();
        c.write(0, b"abcd").unwrap();
        c.allocate(0, 2).unwrap();
        assert_eq!(c.len(), 4);
        c.allocate(2, 6).unwrap();
        assert_eq!(current(&c), b"abcd\0\0\0\0");
        c.revert();
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn huge_offsets_are_refused() {
        let mut c = Contents::new();
        assert_eq!(c.write(MAX_FILE_BYTES, b"x"), Err(libc::EFBIG));
        assert_eq!(c.write(u64::MAX, b"x"), Err(libc::EFBIG));
        assert_eq!(c.set_len(MAX_FILE_BYTES + 1), Err(libc::EFBIG));
        assert_eq!(c.allocate(u64::MAX, 2), Err(libc::EFBIG));
        assert!(c.read(u64::MAX, u32::MAX).is_empty());
    }
}
