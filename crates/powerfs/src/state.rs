//! The in-memory filesystem model: inodes, names, open handles, sync and
//! power cut. Plain data, no FUSE: the adapter in `fuse.rs` translates
//! requests into these calls, and the unit tests below drive it directly.
//!
//! Durability rules (see the crate docs for the why):
//!
//! * a file's contents become durable only through an fsync of that file
//!   ([`State::fsync`]), whatever the path or handle used;
//! * a directory's entries become durable only through an fsync of that
//!   directory ([`State::fsyncdir`]); a file's fsync does not make its name
//!   durable, and a new directory's own entries need their own fsync;
//! * [`State::power_cut`] reverts every file and directory to its durable
//!   version, invalidates every open handle and frees whatever the durable
//!   tree no longer reaches.
//!
//! Errors are plain `libc` errno values; the adapter passes them on.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

use crate::contents::Contents;
use crate::dir::Dir;
use crate::inode::{Attr, Ino, Inode, Node, ROOT_INO};
use crate::{CutReport, Stats};

/// Result of a model operation: the value, or a `libc` errno.
pub(crate) type FsResult<T> = Result<T, i32>;

/// Open-handle number, as given to the kernel at open/opendir.
pub(crate) type Fh = u64;

/// Longest file name accepted (Linux `NAME_MAX`).
pub(crate) const NAME_MAX: usize = 255;

/// Permissions of the root directory of a new filesystem.
const ROOT_PERM: u16 = 0o755;

/// The permission bits of a mode (`st_mode` without the file type).
const PERM_MASK: u32 = 0o7777;

/// The first handle number given out. Zero is avoided so that a handle the
/// kernel forgot to fill in is never mistaken for a live one.
const FIRST_FH: Fh = 1;

/// What rename does when the target name exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RenameMode {
    /// Plain rename(2): replace the target.
    Replace,
    /// `RENAME_NOREPLACE`: fail with `EEXIST` instead.
    NoReplace,
    /// `RENAME_EXCHANGE`: swap the two names.
    Exchange,
}

/// The attribute changes of a setattr request.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SetAttr {
    pub(crate) mode: Option<u32>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    /// A truncation or extension: a pending operation like a write.
    pub(crate) size: Option<u64>,
    pub(crate) atime: Option<SystemTime>,
    pub(crate) mtime: Option<SystemTime>,
}

/// One directory-listing entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirEntry {
    pub(crate) ino: Ino,
    pub(crate) is_dir: bool,
    pub(crate) name: OsString,
    /// The offset to resume the listing after this entry.
    pub(crate) next_offset: u64,
}

/// The owner of a new inode.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// The whole filesystem model, behind one mutex that the FUSE thread and [`crate::PowerFs`]
/// share.
#[derive(Debug)]
pub(crate) struct State {
    inodes: HashMap<Ino, Inode>,
    next_ino: Ino,
    /// Open handles (files and directories) -> the inode they are on.
    /// Cleared by a power cut: no handle survives a reboot.
    handles: HashMap<Fh, Ino>,
    next_fh: Fh,
    stats: Stats,
}

impl State {
    /// An empty filesystem: just the root directory, owned by `root_owner`.
    /// The root's durable entries start empty too.
    pub(crate) fn new(root_owner: Owner) -> State {
        let root = Inode::new(
            Node::Dir(Dir::new(ROOT_INO)),
            ROOT_PERM,
            root_owner.uid,
            root_owner.gid,
        );
        State {
            inodes: HashMap::from([(ROOT_INO, root)]),
            next_ino: ROOT_INO + 1,
            handles: HashMap::new(),
            next_fh: FIRST_FH,
            stats: Stats::default(),
        }
    }

    /// Counters since creation.
    pub(crate) fn stats(&self) -> Stats {
        self.stats.clone()
    }

    /// Sum of the current sizes of all files, for statfs.
    pub(crate) fn used_bytes(&self) -> u64 {
        self.inodes
            .values()
            .map(|inode| match &inode.node {
                Node::File(contents) => contents.len(),
                Node::Dir(_) => 0,
            })
            .sum()
    }

    /// Number of live inodes, for statfs.
    pub(crate) fn inode_count(&self) -> u64 {
        self.inodes.len() as u64
    }

    // ---- names ----------------------------------------------------------

    /// Finds `name` in `parent`. Counts as a kernel lookup reference.
    pub(crate) fn lookup(&mut self, parent: Ino, name: &OsStr) -> FsResult<Attr> {
        let ino = self.dir(parent)?.get(name).ok_or(libc::ENOENT)?;
        let inode = self.inode_mut(ino)?;
        inode.lookups += 1;
        Ok(inode.attr(ino))
    }

    /// The kernel dropped `count` lookup references to `ino`.
    pub(crate) fn forget(&mut self, ino: Ino, count: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.lookups = inode.lookups.saturating_sub(count);
        }
        self.free_if_unreferenced(ino);
    }

    pub(crate) fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        Ok(self.inode(ino)?.attr(ino))
    }

    /// Changes attributes; a size change is a pending content operation.
    pub(crate) fn setattr(&mut self, ino: Ino, change: SetAttr) -> FsResult<Attr> {
        let inode = self.inode_mut(ino)?;
        if let Some(size) = change.size {
            let Node::File(contents) = &mut inode.node else {
                return Err(libc::EISDIR);
            };
            if size != contents.len() {
                contents.set_len(size)?;
                inode.touch();
            }
        }
        if let Some(mode) = change.mode {
            inode.perm = perm_bits(mode);
        }
        inode.uid = change.uid.unwrap_or(inode.uid);
        inode.gid = change.gid.unwrap_or(inode.gid);
        inode.atime = change.atime.unwrap_or(inode.atime);
        inode.mtime = change.mtime.unwrap_or(inode.mtime);
        inode.ctime = SystemTime::now();
        Ok(inode.attr(ino))
    }

    /// Creates an empty regular file (mknod). Counts as a lookup reference.
    pub(crate) fn mknod(
        &mut self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        owner: Owner,
    ) -> FsResult<Attr> {
        self.link_new(parent, name, Node::File(Contents::new()), mode, owner)
    }

    /// Creates a directory. Counts as a lookup reference.
    pub(crate) fn mkdir(
        &mut self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        owner: Owner,
    ) -> FsResult<Attr> {
        self.link_new(parent, name, Node::Dir(Dir::new(parent)), mode, owner)
    }

    /// open(O_CREAT): creates the file, or opens the existing one unless
    /// `exclusive`; `truncate` empties an existing file (a pending
    /// operation). Counts as a lookup reference.
    pub(crate) fn create(
        &mut self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        owner: Owner,
        exclusive: bool,
        truncate: bool,
    ) -> FsResult<(Attr, Fh)> {
        let existing = self.dir(parent)?.get(name);
        let ino = match existing {
            Some(_) if exclusive => return Err(libc::EEXIST),
            Some(ino) => {
                self.inode_mut(ino)?.lookups += 1;
                ino
            }
            None => self.mknod(parent, name, mode, owner)?.ino,
        };
        let fh = self.open(ino, truncate)?;
        Ok((self.getattr(ino)?, fh))
    }

    /// Removes a file's current name.
    pub(crate) fn unlink(&mut self, parent: Ino, name: &OsStr) -> FsResult<()> {
        let ino = self.dir(parent)?.get(name).ok_or(libc::ENOENT)?;
        if self.is_dir(ino)? {
            return Err(libc::EISDIR);
        }
        self.unlink_entry(parent, name, ino)
    }

    /// Removes an empty directory's current name. Emptiness is judged on
    /// its current entries; durable ones it may still have come back only
    /// if the cut also brings its name back.
    pub(crate) fn rmdir(&mut self, parent: Ino, name: &OsStr) -> FsResult<()> {
        let ino = self.dir(parent)?.get(name).ok_or(libc::ENOENT)?;
        if !self.dir(ino)?.current.is_empty() {
            return Err(libc::ENOTEMPTY);
        }
        self.unlink_entry(parent, name, ino)
    }

    /// Renames in the current entries only; nothing about it is durable
    /// until the directories involved are fsynced.
    pub(crate) fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        mode: RenameMode,
    ) -> FsResult<()> {
        check_name(new_name)?;
        let src = self.dir(parent)?.get(name).ok_or(libc::ENOENT)?;
        let dst = self.live_dir(new_parent)?.get(new_name);
        match (mode, dst) {
            (RenameMode::NoReplace, Some(_)) => return Err(libc::EEXIST),
            (RenameMode::Exchange, None) => return Err(libc::ENOENT),
            (_, Some(dst)) if dst == src => return Ok(()),
            _ => {}
        }
        let src_is_dir = self.is_dir(src)?;
        if src_is_dir && self.is_within(new_parent, src)? {
            return Err(libc::EINVAL);
        }
        if mode == RenameMode::Exchange {
            // `dst` exists here (checked above).
            let dst = dst.ok_or(libc::ENOENT)?;
            if self.is_dir(dst)? && self.is_within(parent, dst)? {
                return Err(libc::EINVAL);
            }
            self.dir_mut(parent)?.insert(name, dst);
            self.dir_mut(new_parent)?.insert(new_name, src);
            self.set_parent(dst, parent)?;
        } else {
            if let Some(dst) = dst {
                match (src_is_dir, self.is_dir(dst)?) {
                    (true, false) => return Err(libc::ENOTDIR),
                    (false, true) => return Err(libc::EISDIR),
                    (true, true) if !self.dir(dst)?.current.is_empty() => {
                        return Err(libc::ENOTEMPTY)
                    }
                    _ => {}
                }
            }
            self.dir_mut(parent)?.remove(name);
            let replaced = self.dir_mut(new_parent)?.insert(new_name, src);
            if let Some(old) = replaced {
                self.drop_current_link(old);
            }
        }
        self.set_parent(src, new_parent)?;
        self.inode_mut(parent)?.touch();
        self.inode_mut(new_parent)?.touch();
        self.inode_mut(src)?.ctime = SystemTime::now();
        Ok(())
    }

    // ---- handles and data -------------------------------------------------

    /// Opens a regular file; `truncate` (O_TRUNC) empties it as a pending
    /// operation.
    pub(crate) fn open(&mut self, ino: Ino, truncate: bool) -> FsResult<Fh> {
        let inode = self.inode_mut(ino)?;
        let Node::File(contents) = &mut inode.node else {
            return Err(libc::EISDIR);
        };
        if truncate && contents.len() > 0 {
            contents.set_len(0)?;
            inode.touch();
        }
        Ok(self.new_handle(ino))
    }

    pub(crate) fn opendir(&mut self, ino: Ino) -> FsResult<Fh> {
        self.dir(ino)?;
        Ok(self.new_handle(ino))
    }

    /// Closes a file or directory handle. Unknown handles (including those
    /// a power cut invalidated) are ignored: the kernel cannot be told no.
    pub(crate) fn release(&mut self, fh: Fh) {
        if let Some(ino) = self.handles.remove(&fh) {
            if let Some(inode) = self.inodes.get_mut(&ino) {
                inode.open_handles = inode.open_handles.saturating_sub(1);
            }
            self.free_if_unreferenced(ino);
        }
    }

    pub(crate) fn read(&self, ino: Ino, fh: Fh, offset: u64, size: u32) -> FsResult<&[u8]> {
        self.check_handle(ino, fh)?;
        match &self.inode(ino)?.node {
            Node::File(contents) => Ok(contents.read(offset, size)),
            Node::Dir(_) => Err(libc::EISDIR),
        }
    }

    /// Writes to the current contents only; durable after the next fsync.
    pub(crate) fn write(&mut self, ino: Ino, fh: Fh, offset: u64, data: &[u8]) -> FsResult<u32> {
        self.check_handle(ino, fh)?;
        let written = u32::try_from(data.len()).map_err(|_| libc::EINVAL)?;
        let inode = self.inode_mut(ino)?;
        let Node::File(contents) = &mut inode.node else {
            return Err(libc::EISDIR);
        };
        contents.write(offset, data)?;
        inode.touch();
        self.stats.writes += 1;
        Ok(written)
    }

    /// `fallocate`: mode 0 extends the file with zeros (a pending
    /// operation); `keep_size` (`FALLOC_FL_KEEP_SIZE`) only reserves space,
    /// which memory does not need, so it changes nothing.
    pub(crate) fn fallocate(
        &mut self,
        ino: Ino,
        fh: Fh,
        offset: u64,
        len: u64,
        keep_size: bool,
    ) -> FsResult<()> {
        self.check_handle(ino, fh)?;
        let inode = self.inode_mut(ino)?;
        let Node::File(contents) = &mut inode.node else {
            return Err(libc::EISDIR);
        };
        if !keep_size {
            let before = contents.len();
            contents.allocate(offset, len)?;
            if contents.len() != before {
                inode.touch();
            }
        }
        Ok(())
    }

    /// fsync/fdatasync of a file: its contents become durable (its name
    /// does not). On a directory handle it acts as [`State::fsyncdir`].
    pub(crate) fn fsync(&mut self, ino: Ino, fh: Fh) -> FsResult<()> {
        self.check_handle(ino, fh)?;
        match &mut self.inode_mut(ino)?.node {
            Node::File(contents) => {
                contents.sync();
                self.stats.fsyncs += 1;
                Ok(())
            }
            Node::Dir(_) => self.fsyncdir(ino, fh),
        }
    }

    /// fsync of a directory: its current entries become durable.
    pub(crate) fn fsyncdir(&mut self, ino: Ino, fh: Fh) -> FsResult<()> {
        self.check_handle(ino, fh)?;
        let synced = self.dir_mut(ino)?.sync();
        self.stats.dir_fsyncs += 1;
        if let Some((old, new)) = synced {
            // Count the new references first, so an inode named in both
            // versions never looks unreferenced in between.
            for child in &new {
                if let Some(inode) = self.inodes.get_mut(child) {
                    inode.durable_links += 1;
                }
            }
            for child in old {
                if let Some(inode) = self.inodes.get_mut(&child) {
                    inode.durable_links = inode.durable_links.saturating_sub(1);
                }
                self.free_if_unreferenced(child);
            }
        }
        Ok(())
    }

    /// Lists a directory from `offset` (0 = start): `.`, `..`, then the
    /// current entries in name order.
    pub(crate) fn readdir(&self, ino: Ino, fh: Fh, offset: u64) -> FsResult<Vec<DirEntry>> {
        self.check_handle(ino, fh)?;
        let dir = self.dir(ino)?;
        let dots = [(OsStr::new("."), ino), (OsStr::new(".."), dir.parent)];
        let entries =
            dots.into_iter()
                .map(|(name, ino)| (name, ino, true))
                .chain(dir.current.iter().map(|(name, &child)| {
                    let is_dir = self.is_dir(child).unwrap_or(false);
                    (name.as_os_str(), child, is_dir)
                }));
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        Ok(entries
            .enumerate()
            .skip(skip)
            .map(|(index, (name, ino, is_dir))| DirEntry {
                ino,
                is_dir,
                name: name.to_owned(),
                next_offset: index as u64 + 1,
            })
            .collect())
    }

    /// Access check: this filesystem allows everything to anyone, it only
    /// reports whether the inode exists.
    pub(crate) fn access(&self, ino: Ino) -> FsResult<()> {
        self.inode(ino).map(|_| ())
    }

    // ---- power cut --------------------------------------------------------

    /// Reverts everything to its durable version, as a disk losing its
    /// volatile cache would:
    ///
    /// 1. every file's contents go back to its last fsync (never synced:
    ///    empty), every directory's entries to its last fsync;
    /// 2. every open handle is invalidated (later use gets `EIO`);
    /// 3. the tree is walked from the root over the reverted entries;
    ///    whatever is not reached is freed. Durable states taken from
    ///    different syncs can name one directory twice (renamed from `a` to
    ///    `b`, only `b` fsynced): the first name in walk order wins, the
    ///    other is dropped, so the namespace stays a tree. A file named
    ///    twice simply keeps both names, like a hard link.
    pub(crate) fn power_cut(&mut self) -> CutReport {
        let mut report = CutReport::default();
        for inode in self.inodes.values_mut() {
            match &mut inode.node {
                Node::File(contents) => {
                    let dropped = contents.revert();
                    if dropped.ops > 0 {
                        report.files_reverted += 1;
                        report.writes_dropped += dropped.ops;
                        report.bytes_dropped += dropped.bytes;
                    }
                }
                Node::Dir(dir) => report.entries_reverted += dir.revert(),
            }
            inode.open_handles = 0;
        }
        self.handles.clear();
        report.entries_reverted += self.keep_reachable();
        self.stats.power_cuts += 1;
        report
    }

    /// Frees every inode the root does not reach, makes the namespace a
    /// tree again and recounts links. Returns the duplicate directory names
    /// it dropped. Call only when current and durable entries are equal.
    fn keep_reachable(&mut self) -> u64 {
        let mut dropped_names = 0;
        let mut reached = HashSet::from([ROOT_INO]);
        let mut queue = VecDeque::from([ROOT_INO]);
        while let Some(dir_ino) = queue.pop_front() {
            let Some(Node::Dir(dir)) = self.inodes.get(&dir_ino).map(|inode| &inode.node) else {
                continue;
            };
            let entries: Vec<(OsString, Ino)> =
                dir.current.iter().map(|(n, i)| (n.clone(), *i)).collect();
            for (name, child) in entries {
                let child_is_dir = match self.inodes.get(&child) {
                    Some(inode) => matches!(inode.node, Node::Dir(_)),
                    None => {
                        // Cannot happen (a durable entry keeps its inode
                        // alive), but never leave a dangling name.
                        self.forget_entry(dir_ino, &name);
                        continue;
                    }
                };
                if !reached.insert(child) && child_is_dir {
                    self.forget_entry(dir_ino, &name);
                    dropped_names += 1;
                } else if child_is_dir {
                    if let Some(Node::Dir(child_dir)) =
                        self.inodes.get_mut(&child).map(|inode| &mut inode.node)
                    {
                        child_dir.parent = dir_ino;
                    }
                    queue.push_back(child);
                }
            }
        }
        self.inodes.retain(|ino, _| reached.contains(ino));

        let mut links: HashMap<Ino, u32> = HashMap::new();
        for inode in self.inodes.values() {
            if let Node::Dir(dir) = &inode.node {
                for child in dir.current.values() {
                    *links.entry(*child).or_default() += 1;
                }
            }
        }
        for (ino, inode) in &mut self.inodes {
            let count = links.get(ino).copied().unwrap_or(0);
            inode.current_links = count;
            inode.durable_links = count;
        }
        dropped_names
    }

    // ---- helpers ----------------------------------------------------------

    fn inode(&self, ino: Ino) -> FsResult<&Inode> {
        self.inodes.get(&ino).ok_or(libc::ESTALE)
    }

    fn inode_mut(&mut self, ino: Ino) -> FsResult<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or(libc::ESTALE)
    }

    fn is_dir(&self, ino: Ino) -> FsResult<bool> {
        Ok(matches!(self.inode(ino)?.node, Node::Dir(_)))
    }

    fn dir(&self, ino: Ino) -> FsResult<&Dir> {
        match &self.inode(ino)?.node {
            Node::Dir(dir) => Ok(dir),
            Node::File(_) => Err(libc::ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> FsResult<&mut Dir> {
        match &mut self.inode_mut(ino)?.node {
            Node::Dir(dir) => Ok(dir),
            Node::File(_) => Err(libc::ENOTDIR),
        }
    }

    /// A directory new names may go into: not removed (rmdir'ed but still
    /// open or looked up).
    fn live_dir(&self, ino: Ino) -> FsResult<&Dir> {
        let dir = self.dir(ino)?;
        if ino != ROOT_INO && self.inode(ino)?.current_links == 0 {
            return Err(libc::ENOENT);
        }
        Ok(dir)
    }

    /// Whether directory `ino` is `ancestor` or lies below it (following
    /// current parents up to the root).
    fn is_within(&self, mut ino: Ino, ancestor: Ino) -> FsResult<bool> {
        // Bounded by the inode count so a corrupt parent chain cannot hang.
        for _ in 0..=self.inodes.len() {
            if ino == ancestor {
                return Ok(true);
            }
            if ino == ROOT_INO {
                return Ok(false);
            }
            ino = self.dir(ino)?.parent;
        }
        Err(libc::EIO)
    }

    fn set_parent(&mut self, ino: Ino, parent: Ino) -> FsResult<()> {
        if let Node::Dir(dir) = &mut self.inode_mut(ino)?.node {
            dir.parent = parent;
        }
        Ok(())
    }

    fn check_handle(&self, ino: Ino, fh: Fh) -> FsResult<()> {
        match self.handles.get(&fh) {
            Some(&open) if open == ino => Ok(()),
            _ => Err(libc::EIO),
        }
    }

    fn new_handle(&mut self, ino: Ino) -> Fh {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, ino);
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.open_handles += 1;
        }
        fh
    }

    /// Creates an inode and gives it its first (current) name.
    fn link_new(
        &mut self,
        parent: Ino,
        name: &OsStr,
        node: Node,
        mode: u32,
        owner: Owner,
    ) -> FsResult<Attr> {
        check_name(name)?;
        if self.live_dir(parent)?.get(name).is_some() {
            return Err(libc::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut inode = Inode::new(node, perm_bits(mode), owner.uid, owner.gid);
        inode.current_links = 1;
        inode.lookups = 1;
        let attr = inode.attr(ino);
        self.inodes.insert(ino, inode);
        self.dir_mut(parent)?.insert(name, ino);
        self.inode_mut(parent)?.touch();
        Ok(attr)
    }

    fn unlink_entry(&mut self, parent: Ino, name: &OsStr, ino: Ino) -> FsResult<()> {
        self.dir_mut(parent)?.remove(name);
        self.inode_mut(parent)?.touch();
        self.drop_current_link(ino);
        Ok(())
    }

    fn drop_current_link(&mut self, ino: Ino) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.current_links = inode.current_links.saturating_sub(1);
            inode.ctime = SystemTime::now();
        }
        self.free_if_unreferenced(ino);
    }

    fn forget_entry(&mut self, dir: Ino, name: &OsStr) {
        if let Ok(dir) = self.dir_mut(dir) {
            dir.forget_entry(name);
        }
    }

    /// Frees `ino` if nothing refers to it, and then whatever only it
    /// referred to.
    fn free_if_unreferenced(&mut self, ino: Ino) {
        let mut work = vec![ino];
        while let Some(ino) = work.pop() {
            let unreferenced = self.inodes.get(&ino).is_some_and(Inode::is_unreferenced);
            if ino == ROOT_INO || !unreferenced {
                continue;
            }
            let Some(inode) = self.inodes.remove(&ino) else {
                continue;
            };
            if let Node::Dir(dir) = inode.node {
                for child in dir.current.values() {
                    if let Some(child_inode) = self.inodes.get_mut(child) {
                        child_inode.current_links = child_inode.current_links.saturating_sub(1);
                    }
                    work.push(*child);
                }
                for child in dir.durable.values() {
                    if let Some(child_inode) = self.inodes.get_mut(child) {
                        child_inode.durable_links = child_inode.durable_links.saturating_sub(1);
                    }
                    work.push(*child);
                }
            }
        }
    }
}

/// Permission bits of a mode (file type bits stripped).
fn perm_bits(mode: u32) -> u16 {
    (mode & PERM_MASK) as u16
}

fn check_name(name: &OsStr) -> FsResult<()> {
    if name.len() > NAME_MAX {
        return Err(libc::ENAMETOOLONG);
    }
    if name.is_empty() || name == "." || name == ".." {
        return Err(libc::EINVAL);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: Owner = Owner { uid: 0, gid: 0 };
    const FILE_MODE: u32 = 0o644;
    const DIR_MODE: u32 = 0o755;

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    /// Creates `file` in `dir` and returns (ino, handle).
    fn create(st: &mut State, dir: Ino, file: &str) -> (Ino, Fh) {
        let (attr, fh) = st
            .create(dir, name(file), FILE_MODE, OWNER, true, false)
            .unwrap();
        (attr.ino, fh)
    }

    fn sync_dir(st: &mut State, dir: Ino) {
        let fh = st.opendir(dir).unwrap();
        st.fsyncdir(dir, fh).unwrap();
        st.release(fh);
    }

    /// Reads the whole file `path` (names separated by '/') through a new
    /// handle, as a restarted process would.
    fn read_path(st: &mut State, path: &str) -> FsResult<Vec<u8>> {
        let mut ino = ROOT_INO;
        for part in path.split('/') {
            ino = st.lookup(ino, name(part))?.ino;
        }
        let fh = st.open(ino, false)?;
        let data = st.read(ino, fh, 0, u32::MAX)?.to_vec();
        st.release(fh);
        Ok(data)
    }

    fn names(st: &mut State, dir: Ino) -> Vec<String> {
        let fh = st.opendir(dir).unwrap();
        let list = st.readdir(dir, fh, 0).unwrap();
        st.release(fh);
        list.into_iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .filter(|n| n != "." && n != "..")
            .collect()
    }

    #[test]
    fn only_the_synced_prefix_survives() {
        let mut st = State::new(OWNER);
        let (ino, fh) = create(&mut st, ROOT_INO, "log");
        sync_dir(&mut st, ROOT_INO);
        st.write(ino, fh, 0, b"synced").unwrap();
        st.fsync(ino, fh).unwrap();
        st.write(ino, fh, 6, b" lost").unwrap();
        assert_eq!(read_path(&mut st, "log").unwrap(), b"synced lost");

        let report = st.power_cut();
        assert_eq!(
            report,
            CutReport {
                writes_dropped: 1,
                bytes_dropped: 5,
                files_reverted: 1,
                entries_reverted: 0,
            }
        );
        assert_eq!(read_path(&mut st, "log").unwrap(), b"synced");
        assert_eq!(st.write(ino, fh, 0, b"x"), Err(libc::EIO), "stale handle");
        let stats = st.stats();
        assert_eq!((stats.writes, stats.fsyncs), (2, 1));
        assert_eq!((stats.dir_fsyncs, stats.power_cuts), (1, 1));
    }

    #[test]
    fn truncation_is_pending_until_fsync() {
        let mut st = State::new(OWNER);
        let (ino, fh) = create(&mut st, ROOT_INO, "f");
        sync_dir(&mut st, ROOT_INO);
        st.write(ino, fh, 0, b"0123456789").unwrap();
        st.fsync(ino, fh).unwrap();
        let shrink = SetAttr {
            size: Some(3),
            ..SetAttr::default()
        };
        assert_eq!(st.setattr(ino, shrink).unwrap().size, 3);
        st.power_cut();
        assert_eq!(read_path(&mut st, "f").unwrap(), b"0123456789");

        let fh = st.open(ino, true).unwrap();
        st.fsync(ino, fh).unwrap();
        st.power_cut();
        assert_eq!(read_path(&mut st, "f").unwrap(), b"");
    }

    #[test]
    fn a_file_whose_parent_was_not_synced_disappears() {
        let mut st = State::new(OWNER);
        let (ino, fh) = create(&mut st, ROOT_INO, "f");
        st.write(ino, fh, 0, b"data").unwrap();
        st.fsync(ino, fh).unwrap();
        let report = st.power_cut();
        assert_eq!(report.entries_reverted, 1);
        assert_eq!(read_path(&mut st, "f"), Err(libc::ENOENT));
        assert_eq!(st.getattr(ino), Err(libc::ESTALE), "inode freed");
        assert_eq!(st.inode_count(), 1);
    }

    #[test]
    fn a_synced_name_with_unsynced_contents_is_empty() {
        let mut st = State::new(OWNER);
        let (ino, fh) = create(&mut st, ROOT_INO, "f");
        st.write(ino, fh, 0, b"never synced").unwrap();
        sync_dir(&mut st, ROOT_INO);
        st.power_cut();
        assert_eq!(read_path(&mut st, "f").unwrap(), b"");
    }

    #[test]
    fn new_directories_need_their_parent_and_their_own_sync() {
        let mut st = State::new(OWNER);
        let dir = st.mkdir(ROOT_INO, name("d"), DIR_MODE, OWNER).unwrap().ino;
        let (ino, fh) = create(&mut st, dir, "f");
        st.write(ino, fh, 0, b"x").unwrap();
        st.fsync(ino, fh).unwrap();
        sync_dir(&mut st, dir);
        st.power_cut();
        assert!(names(&mut st, ROOT_INO).is_empty(), "root never synced");

        let dir = st.mkdir(ROOT_INO, name("d"), DIR_MODE, OWNER).unwrap().ino;
        create(&mut st, dir, "f");
        sync_dir(&mut st, ROOT_INO);
        st.power_cut();
        assert_eq!(names(&mut st, ROOT_INO), ["d"]);
        assert!(names(&mut st, dir).is_empty(), "d itself never synced");
    }

    #[test]
    fn rename_over_a_file_is_undone_without_a_dir_sync() {
        let mut st = State::new(OWNER);
        for (file, text) in [("a", "new"), ("b", "old")] {
            let (ino, fh) = create(&mut st, ROOT_INO, file);
            st.write(ino, fh, 0, text.as_bytes()).unwrap();
            st.fsync(ino, fh).unwrap();
            st.release(fh);
        }
        sync_dir(&mut st, ROOT_INO);

        st.rename(
            ROOT_INO,
            name("a"),
            ROOT_INO,
            name("b"),
            RenameMode::Replace,
        )
        .unwrap();
        assert_eq!(names(&mut st, ROOT_INO), ["b"]);
        assert_eq!(read_path(&mut st, "b").unwrap(), b"new");
        let report = st.power_cut();
        assert_eq!(report.entries_reverted, 2);
        assert_eq!(names(&mut st, ROOT_INO), ["a", "b"]);
        assert_eq!(read_path(&mut st, "a").unwrap(), b"new");
        assert_eq!(read_path(&mut st, "b").unwrap(), b"old");

        st.rename(
            ROOT_INO,
            name("a"),
            ROOT_INO,
            name("b"),
            RenameMode::Replace,
        )
        .unwrap();
        sync_dir(&mut st, ROOT_INO);
        st.power_cut();
        assert_eq!(names(&mut st, ROOT_INO), ["b"]);
        assert_eq!(read_path(&mut st, "b").unwrap(), b"new");
        assert_eq!(st.inode_count(), 2, "the replaced file was freed");
    }

    #[test]
    fn unlink_is_undone_without_a_dir_sync() {
        let mut st = State::new(OWNER);
        let (ino, fh) = create(&mut st, ROOT_INO, "f");
        st.write(ino, fh, 0, b"keep").unwrap();
        st.fsync(ino, fh).unwrap();
        st.release(fh);
        sync_dir(&mut st, ROOT_INO);
        st.unlink(ROOT_INO, name("f")).unwrap();
        assert_eq!(read_path(&mut st, "f"), Err(libc::ENOENT));
        st.power_cut();
        assert_eq!(read_path(&mut st, "f").unwrap(), b"keep");

        st.unlink(ROOT_INO, name("f")).unwrap();
        sync_dir(&mut st, ROOT_INO);
        st.power_cut();
        assert_eq!(read_path(&mut st, "f"), Err(libc::ENOENT));
    }

    #[test]
    fn unreferenced_inodes_are_freed_without_a_cut() {
        let mut st = State::new(OWNER);
        let (ino, fh) = create(&mut st, ROOT_INO, "tmp");
        st.write(ino, fh, 0, &[7; 1024]).unwrap();
        st.unlink(ROOT_INO, name("tmp")).unwrap();
        assert_eq!(st.read(ino, fh, 0, 4).unwrap(), [7; 4], "still open");
        assert_eq!(st.getattr(ino).unwrap().nlink, 0);
        st.release(fh);
        st.forget(ino, 1);
        assert_eq!(st.getattr(ino), Err(libc::ESTALE));
        assert_eq!(st.inode_count(), 1);
    }

    #[test]
    fn a_directory_named_twice_by_durable_states_keeps_one_name() {
        let mut st = State::new(OWNER);
        let a = st.mkdir(ROOT_INO, name("a"), DIR_MODE, OWNER).unwrap().ino;
        let b = st.mkdir(ROOT_INO, name("b"), DIR_MODE, OWNER).unwrap().ino;
        let d = st.mkdir(a, name("d"), DIR_MODE, OWNER).unwrap().ino;
        sync_dir(&mut st, ROOT_INO);
        sync_dir(&mut st, a);
        st.rename(a, name("d"), b, name("d"), RenameMode::Replace)
            .unwrap();
        sync_dir(&mut st, b);
        st.power_cut();
        assert_eq!(names(&mut st, a), ["d"]);
        assert!(names(&mut st, b).is_empty());
        let fh = st.opendir(d).unwrap();
        let dotdot = st.readdir(d, fh, 1).unwrap()[0].clone();
        assert_eq!((dotdot.name.to_str(), dotdot.ino), (Some(".."), a));
    }

    #[test]
    fn namespace_errors() {
        let mut st = State::new(OWNER);
        let dir = st.mkdir(ROOT_INO, name("d"), DIR_MODE, OWNER).unwrap().ino;
        let (file, _) = create(&mut st, dir, "f");
        let err = |r: FsResult<()>| r.unwrap_err();
        assert_eq!(err(st.rmdir(ROOT_INO, name("d"))), libc::ENOTEMPTY);
        assert_eq!(err(st.unlink(ROOT_INO, name("d"))), libc::EISDIR);
        assert_eq!(err(st.rmdir(dir, name("f"))), libc::ENOTDIR);
        assert_eq!(err(st.unlink(ROOT_INO, name("nope"))), libc::ENOENT);
        assert_eq!(
            st.mkdir(ROOT_INO, name("d"), DIR_MODE, OWNER).unwrap_err(),
            libc::EEXIST
        );
        assert_eq!(st.lookup(file, name("x")).unwrap_err(), libc::ENOTDIR);
        let long = "x".repeat(NAME_MAX + 1);
        assert_eq!(
            st.mknod(ROOT_INO, name(&long), FILE_MODE, OWNER)
                .unwrap_err(),
            libc::ENAMETOOLONG
        );
        let mv = |st: &mut State, from: Ino, n: &str, to: Ino, m: &str, mode| {
            st.rename(from, name(n), to, name(m), mode).unwrap_err()
        };
        assert_eq!(
            mv(&mut st, ROOT_INO, "d", dir, "sub", RenameMode::Replace),
            libc::EINVAL
        );
        assert_eq!(
            mv(&mut st, dir, "f", ROOT_INO, "d", RenameMode::Replace),
            libc::EISDIR
        );
        create(&mut st, ROOT_INO, "g");
        assert_eq!(
            mv(&mut st, ROOT_INO, "d", ROOT_INO, "g", RenameMode::Replace),
            libc::ENOTDIR
        );
        assert_eq!(
            mv(&mut st, ROOT_INO, "g", dir, "f", RenameMode::NoReplace),
            libc::EEXIST
        );

        st.rename(ROOT_INO, name("g"), dir, name("f"), RenameMode::Exchange)
            .unwrap();
        assert_eq!(names(&mut st, ROOT_INO), ["d", "g"]);
        assert_eq!(st.lookup(dir, name("f")).unwrap().ino, file + 1);
        assert_eq!(st.lookup(ROOT_INO, name("g")).unwrap().ino, file);
    }

    #[test]
    fn many_small_fsyncs_on_a_big_file() {
        // Tens of MB fsynced thousands of times: a sync that copied the
        // whole file would make this test take minutes, not milliseconds.
        const BIG: usize = 32 << 20;
        const SYNCS: u64 = 10_000;
        const RECORD: usize = 64;
        let mut st = State::new(OWNER);
        let (ino, fh) = create(&mut st, ROOT_INO, "big");
        sync_dir(&mut st, ROOT_INO);
        st.write(ino, fh, 0, &vec![1; BIG]).unwrap();
        st.fsync(ino, fh).unwrap();
        for i in 0..SYNCS {
            let offset = BIG as u64 + i * RECORD as u64;
            st.write(ino, fh, offset, &[2; RECORD]).unwrap();
            st.fsync(ino, fh).unwrap();
        }
        st.write(ino, fh, 0, b"unsynced").unwrap();
        st.power_cut();
        let data = read_path(&mut st, "big").unwrap();
        assert_eq!(data.len(), BIG + SYNCS as usize * RECORD);
        assert!(data[..BIG].iter().all(|&b| b == 1));
        assert!(data[BIG..].iter().all(|&b| b == 2));
    }
}
