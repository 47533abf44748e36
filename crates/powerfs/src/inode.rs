//! One inode: a file or a directory, its attributes, and the references that
//! keep it alive.
//!
//! An inode is freed as soon as nothing can reach it any more: no current
//! entry (a lookup could find it), no durable entry (a power cut could bring
//! it back), no open handle and no kernel lookup reference. Attributes other
//! than the size (mode, owner, times) are not part of the durability model:
//! they are kept as set and survive a power cut unchanged.

use std::time::SystemTime;

use crate::contents::Contents;
use crate::dir::Dir;

/// Inode number. Numbers are never reused, so a number the kernel still
/// holds from before a power cut can never alias a newer inode.
pub(crate) type Ino = u64;

/// The root directory, which always exists.
pub(crate) const ROOT_INO: Ino = 1;

/// What an inode holds.
#[derive(Debug)]
pub(crate) enum Node {
    File(Contents),
    Dir(Dir),
}

/// An inode of the model: what it holds, its attributes, and the references that keep it
/// alive; it is freed once none is left ([`Inode::is_unreferenced`]).
#[derive(Debug)]
pub(crate) struct Inode {
    pub(crate) node: Node,
    /// Permission bits (`mode & 0o7777`).
    pub(crate) perm: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) atime: SystemTime,
    pub(crate) mtime: SystemTime,
    pub(crate) ctime: SystemTime,
    pub(crate) crtime: SystemTime,
    /// Entries in some directory's current map that point here.
    pub(crate) current_links: u32,
    /// Entries in some directory's durable map that point here.
    pub(crate) durable_links: u32,
    /// Open file or directory handles on this inode.
    pub(crate) open_handles: u32,
    /// The kernel's lookup count (entry replies minus forgets).
    pub(crate) lookups: u64,
}

/// A snapshot of an inode's attributes, as `stat` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attr {
    pub(crate) ino: Ino,
    pub(crate) is_dir: bool,
    pub(crate) size: u64,
    pub(crate) perm: u16,
    /// Current names of a file (0 once unlinked but still open); 2 for a
    /// directory, as tools expect.
    pub(crate) nlink: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) atime: SystemTime,
    pub(crate) mtime: SystemTime,
    pub(crate) ctime: SystemTime,
    pub(crate) crtime: SystemTime,
}

/// Link count a directory reports (its entry in the parent, and `.`).
const DIR_NLINK: u32 = 2;

impl Inode {
    /// A fresh inode with no references yet.
    pub(crate) fn new(node: Node, perm: u16, uid: u32, gid: u32) -> Inode {
        let now = SystemTime::now();
        Inode {
            node,
            perm,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            current_links: 0,
            durable_links: 0,
            open_handles: 0,
            lookups: 0,
        }
    }

    /// Whether nothing refers to this inode any more, so it can be freed.
    pub(crate) fn is_unreferenced(&self) -> bool {
        self.current_links == 0
            && self.durable_links == 0
            && self.open_handles == 0
            && self.lookups == 0
    }

    /// Records a change of contents or entries.
    pub(crate) fn touch(&mut self) {
        let now = SystemTime::now();
        self.mtime = now;
        self.ctime = now;
    }

    pub(crate) fn attr(&self, ino: Ino) -> Attr {
        let (is_dir, size, nlink) = match &self.node {
            Node::File(contents) => (false, contents.len(), self.current_links),
            Node::Dir(_) => (true, 0, DIR_NLINK),
        };
        Attr {
            ino,
            is_dir,
            size,
            perm: self.perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            crtime: self.crtime,
        }
    }
}
