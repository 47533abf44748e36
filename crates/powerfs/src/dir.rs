//! The entries of one directory: the names visible now, and the names that
//! would survive a power cut.
//!
//! Create, mkdir, unlink, rmdir and rename edit only `current`. Only an
//! fsync of this directory copies `current` to `durable`; a power cut copies
//! `durable` back. Entries are kept in name order so that listings, and the
//! walk a power cut does over the tree, are deterministic.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

use crate::inode::Ino;

/// A directory's names, in their visible and their durable version.
#[derive(Debug)]
pub(crate) struct Dir {
    /// Name -> inode as lookups and listings see it.
    pub(crate) current: BTreeMap<OsString, Ino>,
    /// Name -> inode as of the last fsync of this directory.
    pub(crate) durable: BTreeMap<OsString, Ino>,
    /// What `..` names. A directory has one current parent (no hard links to
    /// directories); it is updated by rename and recomputed by a power cut.
    pub(crate) parent: Ino,
    /// Whether `current` may differ from `durable`, so that syncing or
    /// reverting an unchanged directory costs nothing.
    dirty: bool,
}

impl Dir {
    /// An empty directory under `parent`, durable as empty.
    pub(crate) fn new(parent: Ino) -> Dir {
        Dir {
            current: BTreeMap::new(),
            durable: BTreeMap::new(),
            parent,
            dirty: false,
        }
    }

    /// The inode `name` currently refers to.
    pub(crate) fn get(&self, name: &OsStr) -> Option<Ino> {
        self.current.get(name).copied()
    }

    /// Points `name` at `ino`, returning what it pointed at before.
    pub(crate) fn insert(&mut self, name: &OsStr, ino: Ino) -> Option<Ino> {
        self.dirty = true;
        self.current.insert(name.to_owned(), ino)
    }

    /// Removes `name`, returning what it pointed at.
    pub(crate) fn remove(&mut self, name: &OsStr) -> Option<Ino> {
        let removed = self.current.remove(name);
        self.dirty |= removed.is_some();
        removed
    }

    /// fsyncdir: makes the current entries durable. Returns the inodes the
    /// durable entries pointed at before and after, for link counting, or
    /// `None` when nothing changed since the last sync.
    pub(crate) fn sync(&mut self) -> Option<(Vec<Ino>, Vec<Ino>)> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        let old = std::mem::replace(&mut self.durable, self.current.clone());
        Some((
            old.into_values().collect(),
            self.durable.values().copied().collect(),
        ))
    }

    /// Power cut: the current entries go back to the durable ones. Returns
    /// how many names changed (created, removed or re-pointed since the last
    /// sync).
    pub(crate) fn revert(&mut self) -> u64 {
        if !self.dirty {
            return 0;
        }
        self.dirty = false;
        let changed_or_added = self
            .current
            .iter()
            .filter(|(name, ino)| self.durable.get(*name) != Some(ino))
            .count();
        let removed = self
            .durable
            .keys()
            .filter(|name| !self.current.contains_key(*name))
            .count();
        self.current = self.durable.clone();
        (changed_or_added + removed) as u64
    }

    /// Drops `name` from both versions; the power cut uses it to cut a
    /// second path to a directory, which durable states combined from
    /// different syncs can produce (see `State::power_cut`).
    pub(crate) fn forget_entry(&mut self, name: &OsStr) {
        self.current.remove(name);
        self.durable.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revert_counts_every_changed_name() {
        let mut d = Dir::new(1);
        d.insert(OsStr::new("kept"), 2);
        d.insert(OsStr::new("moved"), 3);
        d.insert(OsStr::new("gone"), 4);
        assert!(d.sync().is_some());
        assert!(d.sync().is_none(), "a clean directory syncs for free");
        d.insert(OsStr::new("moved"), 5);
        d.remove(OsStr::new("gone"));
        d.insert(OsStr::new("new"), 6);
        assert_eq!(d.revert(), 3);
        let names: Vec<_> = d.current.iter().map(|(n, i)| (n.clone(), *i)).collect();
        assert_eq!(
            names,
            vec![
                (OsString::from("gone"), 4),
                (OsString::from("kept"), 2),
                (OsString::from("moved"), 3),
            ]
        );
    }
}
