//! The writes of one apply batch, before sled has them, and reads that see them.
//!
//! A whole batch of log entries is written in one `sled::Batch`, and sled cannot read a
//! batch before it is applied. So the batch is built here first, as an ordered map of tree
//! keys to their new values (`None`: removed), and every read during the batch goes through
//! a [`View`] that looks here before looking in the tree. Later entries, and later
//! operations of one Txn, so see earlier ones.
//!
//! An entry that fails part-way (a state-dependent check inside a Txn) must leave nothing
//! behind: [`Overlay::begin`] starts an entry, [`Overlay::rollback`] undoes every write since.
//! Commands that make every check before their first write (Put, DeleteRange) start without
//! an undo record, which saves a copy of every key they write.

use std::collections::BTreeMap;
use std::iter::Peekable;

use sled::IVec;

use crate::error::Result;

/// The pending writes of an apply batch, keyed by tree key.
#[derive(Debug, Default)]
pub struct Overlay {
    writes: BTreeMap<Vec<u8>, Option<IVec>>,
    /// What each write of the current entry replaced in `writes` (`None`: it was not
    /// there), newest last, for [`Overlay::rollback`].
    undo: Vec<(Vec<u8>, Option<Option<IVec>>)>,
    /// Whether writes are recorded in `undo`.
    recording: bool,
}

impl Overlay {
    pub fn insert(&mut self, key: Vec<u8>, value: impl Into<IVec>) {
        self.write(key, Some(value.into()));
    }

    pub fn remove(&mut self, key: Vec<u8>) {
        self.write(key, None);
    }

    fn write(&mut self, key: Vec<u8>, value: Option<IVec>) {
        if self.recording {
            let old = self.writes.insert(key.clone(), value);
            self.undo.push((key, old));
        } else {
            self.writes.insert(key, value);
        }
    }

    /// Starts an entry; if `undoable`, what follows can be undone with
    /// [`Overlay::rollback`].
    pub fn begin(&mut self, undoable: bool) {
        self.undo.clear();
        self.recording = undoable;
    }

    /// Undoes every write since [`Overlay::begin`] (nothing if it was not undoable).
    pub fn rollback(&mut self) {
        while let Some((key, old)) = self.undo.pop() {
            match old {
                Some(v) => self.writes.insert(key, v),
                None => self.writes.remove(&key),
            };
        }
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// The writes as one sled batch.
    pub fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, v) in self.writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch
    }
}

/// The tree as it will be once the overlay (if any) is applied.
#[derive(Clone, Copy)]
pub struct View<'a> {
    tree: &'a sled::Tree,
    overlay: Option<&'a Overlay>,
}

/// Scans yield keys and values as sled does.
pub type Pair = (IVec, IVec);

type TreeIter<'a> = Box<dyn Iterator<Item = sled::Result<Pair>> + 'a>;
type OverlayIter<'a> = Box<dyn Iterator<Item = (&'a Vec<u8>, &'a Option<IVec>)> + 'a>;

impl<'a> View<'a> {
    /// The tree alone (reads outside an apply).
    pub fn tree(tree: &'a sled::Tree) -> View<'a> {
        View {
            tree,
            overlay: None,
        }
    }

    /// The tree with `overlay` over it.
    pub fn with(tree: &'a sled::Tree, overlay: &'a Overlay) -> View<'a> {
        View {
            tree,
            overlay: Some(overlay),
        }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<IVec>> {
        if let Some(v) = self.overlay.and_then(|o| o.writes.get(key)) {
            return Ok(v.clone());
        }
        Ok(self.tree.get(key)?)
    }

    /// Keys in `[lo, hi)` in ascending order, or descending when `reverse`; nothing if
    /// `hi <= lo` (sled would panic on such a range).
    pub fn scan(&self, lo: &[u8], hi: &[u8], reverse: bool) -> Scan<'a> {
        if hi <= lo {
            return Scan {
                tree: (Box::new(std::iter::empty()) as TreeIter<'a>).peekable(),
                overlay: (Box::new(std::iter::empty()) as OverlayIter<'a>).peekable(),
                reverse,
            };
        }
        let range = self.tree.range(lo.to_vec()..hi.to_vec());
        let tree: TreeIter<'a> = if reverse {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let overlay: OverlayIter<'a> = match self.overlay {
            None => Box::new(std::iter::empty()),
            Some(o) => {
                let r = o.writes.range::<[u8], _>((
                    std::ops::Bound::Included(lo),
                    std::ops::Bound::Excluded(hi),
                ));
                if reverse {
                    Box::new(r.rev())
                } else {
                    Box::new(r)
                }
            }
        };
        Scan {
            tree: tree.peekable(),
            overlay: overlay.peekable(),
            reverse,
        }
    }

    /// The first entry at or after `lo` and before `hi`.
    pub fn first(&self, lo: &[u8], hi: &[u8]) -> Result<Option<Pair>> {
        self.scan(lo, hi, false).next().transpose()
    }

    /// The last entry at or after `lo` and before `hi`.
    pub fn last(&self, lo: &[u8], hi: &[u8]) -> Result<Option<Pair>> {
        self.scan(lo, hi, true).next().transpose()
    }
}

/// A scan of the tree merged with the overlay: where both hold a key the overlay's write
/// wins, and its removals hide the tree's entries.
pub struct Scan<'a> {
    tree: Peekable<TreeIter<'a>>,
    overlay: Peekable<OverlayIter<'a>>,
    reverse: bool,
}

/// Which side a merged scan takes its next entry from.
enum Take {
    Tree,
    Overlay,
    /// The overlay's, dropping the tree's entry for the same key.
    OverlayOverTree,
}

impl Iterator for Scan<'_> {
    type Item = Result<Pair>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(Err(_)) = self.tree.peek() {
                return self.tree.next().map(|r| r.map_err(Into::into));
            }
            let take = match (self.tree.peek(), self.overlay.peek()) {
                (None, None) => return None,
                (Some(_), None) => Take::Tree,
                (None, Some(_)) => Take::Overlay,
                (Some(Ok((tk, _))), Some((ok, _))) => {
                    let order = tk.as_ref().cmp(ok.as_slice());
                    match if self.reverse { order.reverse() } else { order } {
                        std::cmp::Ordering::Less => Take::Tree,
                        std::cmp::Ordering::Greater => Take::Overlay,
                        std::cmp::Ordering::Equal => Take::OverlayOverTree,
                    }
                }
                // Errors were returned above.
                (Some(Err(_)), Some(_)) => Take::Tree,
            };
            match take {
                Take::Tree => return self.tree.next().map(|r| r.map_err(Into::into)),
                Take::OverlayOverTree | Take::Overlay => {
                    if matches!(take, Take::OverlayOverTree) {
                        self.tree.next();
                    }
                    match self.overlay.next() {
                        Some((k, Some(v))) => {
                            return Some(Ok((IVec::from(k.as_slice()), v.clone())))
                        }
                        // A removal: the key is gone; look further.
                        Some((_, None)) | None => continue,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(scan: Scan<'_>) -> Vec<String> {
        scan.map(|r| String::from_utf8(r.unwrap().0.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn scans_merge_overlay_writes_and_removals_both_ways() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        for k in ["a", "c", "e"] {
            tree.insert(k, "tree").unwrap();
        }
        let mut o = Overlay::default();
        o.insert(b"b".to_vec(), "new");
        o.insert(b"c".to_vec(), "new");
        o.remove(b"e".to_vec());
        let v = View::with(&tree, &o);
        assert_eq!(keys(v.scan(b"a", b"z", false)), ["a", "b", "c"]);
        assert_eq!(keys(v.scan(b"a", b"z", true)), ["c", "b", "a"]);
        assert_eq!(
            v.get(b"c").unwrap().unwrap().as_ref(),
            b"new",
            "overlay wins"
        );
        assert_eq!(v.get(b"e").unwrap(), None, "removed in the overlay");
        assert!(
            keys(v.scan(b"z", b"a", false)).is_empty(),
            "inverted bounds"
        );
    }

    #[test]
    fn rollback_undoes_the_current_entry_only() {
        let mut o = Overlay::default();
        o.insert(b"a".to_vec(), "1");
        o.begin(true);
        o.insert(b"a".to_vec(), "2");
        o.insert(b"b".to_vec(), "1");
        o.remove(b"a".to_vec());
        o.rollback();
        assert_eq!(
            o.writes.into_iter().collect::<Vec<_>>(),
            vec![(b"a".to_vec(), Some(IVec::from("1")))]
        );
    }
}
