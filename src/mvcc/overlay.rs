//! The writes of one apply batch, before sled has them, and reads that see them.
//!
//! A whole batch of log entries is written in one `sled::Batch`, and sled cannot read a
//! batch before it is applied. So the batch is built here first, as an ordered map of tree
//! keys to their new values (`None`: removed), and every record read during the batch goes through
//! a [`View`] that looks here before looking in the tree. Later entries, and later
//! operations of one Txn, so see earlier ones.
//!
//! An entry that fails part-way (a state-dependent check inside a Txn) must leave nothing
//! behind: [`Overlay::begin`] starts an entry, [`Overlay::rollback`] undoes every write since.
//! Commands that make every check before their first write (Put, DeleteRange) start without
//! an undo record, which saves a copy of every key they write.

use std::collections::BTreeMap;

use sled::IVec;

use super::keys::{rev_of_key, Revision};
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

    /// The writes as one sled batch, and the revision-log records among them in revision
    /// order (each value shared with the batch, not copied): the batch's watch events.
    pub fn into_batch(self) -> (sled::Batch, Vec<(Revision, IVec)>) {
        let mut batch = sled::Batch::default();
        let mut records = Vec::new();
        for (k, v) in self.writes {
            match v {
                Some(v) => {
                    if let Some(rev) = rev_of_key(&k) {
                        records.push((rev, v.clone()));
                    }
                    batch.insert(k, v)
                }
                None => batch.remove(k),
            }
        }
        (batch, records)
    }
}

/// The tree as it will be once the overlay (if any) is applied.
#[derive(Clone, Copy)]
pub struct View<'a> {
    tree: &'a sled::Tree,
    overlay: Option<&'a Overlay>,
}

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_see_overlay_writes_and_removals() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        for k in ["c", "e"] {
            tree.insert(k, "tree").unwrap();
        }
        let mut o = Overlay::default();
        o.insert(b"b".to_vec(), "new");
        o.insert(b"c".to_vec(), "new");
        o.remove(b"e".to_vec());
        let v = View::with(&tree, &o);
        assert_eq!(v.get(b"b").unwrap().unwrap().as_ref(), b"new");
        assert_eq!(
            v.get(b"c").unwrap().unwrap().as_ref(),
            b"new",
            "overlay wins"
        );
        assert_eq!(v.get(b"e").unwrap(), None, "removed in the overlay");
        assert_eq!(
            View::tree(&tree).get(b"e").unwrap().unwrap().as_ref(),
            b"tree"
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
