//! The `fuser::Filesystem` adapter: translates kernel requests into calls on
//! the shared [`State`] and its results into replies.
//!
//! Everything here is translation; the semantics live in `state.rs`. Two
//! choices matter for power-cut testing:
//!
//! * every entry and attribute is replied with a zero TTL and files are
//!   opened without `FOPEN_KEEP_CACHE`, so the kernel caches nothing across
//!   a cut: after [`State::power_cut`], the next lookup, stat or open sees
//!   the reverted state;
//! * fuser's default init flags do not ask for `FUSE_WRITEBACK_CACHE`, so the
//!   kernel writes through: each write(2) reaches the model before it
//!   returns, and nothing is buffered in the kernel that a cut could miss.
//!
//! Ops not implemented fall back to fuser's defaults: symlink and link get
//! `EPERM`, readlink, xattrs, lseek and copy_file_range get `ENOSYS` (the
//! kernel then emulates lseek and copy_file_range), and flock/POSIX locks
//! are left to the kernel, which handles them locally.

use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use tracing::debug;

use crate::inode::Attr;
use crate::state::{FsResult, Owner, RenameMode, SetAttr, State, NAME_MAX};

/// Entries and attributes may not be cached at all: a power cut changes
/// them behind the kernel's back.
const TTL: Duration = Duration::ZERO;

/// Inode numbers are never reused, so generations are not needed.
const GENERATION: Generation = Generation(0);

/// Block size reported by stat and statfs.
const BLOCK_SIZE: u32 = 4096;

/// Unit of `st_blocks`, fixed by POSIX.
const STAT_BLOCK_BYTES: u64 = 512;

/// Capacity statfs reports. The data lives in memory, so this is only a
/// number large enough that no program refuses to write for lack of space.
const REPORTED_CAPACITY_BYTES: u64 = 64 << 30;

/// Inode capacity statfs reports, for the same reason.
const REPORTED_INODES: u64 = 1 << 24;

/// Serves the shared state to the kernel.
#[derive(Debug)]
pub(crate) struct PowerFsAdapter {
    state: Arc<Mutex<State>>,
}

impl PowerFsAdapter {
    pub(crate) fn new(state: Arc<Mutex<State>>) -> PowerFsAdapter {
        PowerFsAdapter { state }
    }

    /// The state, even if a panic elsewhere poisoned the lock: every
    /// operation leaves the model consistent before it could panic, and
    /// refusing service would hang the processes using the mount.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn owner(req: &Request) -> Owner {
    Owner {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(STAT_BLOCK_BYTES),
        atime: attr.atime,
        mtime: attr.mtime,
        ctime: attr.ctime,
        crtime: attr.crtime,
        kind: if attr.is_dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

fn errno(code: i32) -> Errno {
    Errno::from_i32(code)
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

fn reply_entry(reply: ReplyEntry, result: FsResult<Attr>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &file_attr(&attr), GENERATION),
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_empty(reply: ReplyEmpty, result: FsResult<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_attr(reply: ReplyAttr, result: FsResult<Attr>) {
    match result {
        Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_open(reply: ReplyOpen, result: FsResult<u64>) {
    match result {
        // No FOPEN_KEEP_CACHE: the kernel drops its page cache at open.
        Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
        Err(e) => reply.error(errno(e)),
    }
}

impl Filesystem for PowerFsAdapter {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.state().lookup(parent.0, name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.state().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply_attr(reply, self.state().getattr(ino.0));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        debug!(ino = ino.0, ?size, ?mode, "setattr");
        let change = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        reply_attr(reply, self.state().setattr(ino.0, change));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let file_type = mode & libc::S_IFMT;
        if file_type != libc::S_IFREG && file_type != 0 {
            // Only regular files and directories are modelled.
            reply.error(Errno::EPERM);
            return;
        }
        let result = self
            .state()
            .mknod(parent.0, name, mode & !umask, owner(req));
        reply_entry(reply, result);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        debug!(parent = parent.0, ?name, "mkdir");
        let result = self
            .state()
            .mkdir(parent.0, name, mode & !umask, owner(req));
        reply_entry(reply, result);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        debug!(parent = parent.0, ?name, "unlink");
        reply_empty(reply, self.state().unlink(parent.0, name));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        debug!(parent = parent.0, ?name, "rmdir");
        reply_empty(reply, self.state().rmdir(parent.0, name));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        debug!(parent = parent.0, ?name, newparent = newparent.0, ?newname, %flags, "rename");
        let mode = if flags.is_empty() {
            RenameMode::Replace
        } else if flags == RenameFlags::RENAME_NOREPLACE {
            RenameMode::NoReplace
        } else if flags == RenameFlags::RENAME_EXCHANGE {
            RenameMode::Exchange
        } else {
            // RENAME_WHITEOUT (overlayfs only) or a combination.
            reply.error(Errno::EINVAL);
            return;
        };
        let result = self
            .state()
            .rename(parent.0, name, newparent.0, newname, mode);
        reply_empty(reply, result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        // The kernel turns O_TRUNC into a setattr before open unless atomic
        // O_TRUNC was negotiated (fuser does not), but honour it either way.
        let truncate = flags.0 & libc::O_TRUNC != 0;
        reply_open(reply, self.state().open(ino.0, truncate));
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let state = self.state();
        match state.read(ino.0, fh.0, offset, size) {
            Ok(data) => reply.data(data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.state().write(ino.0, fh.0, offset, data) {
            Ok(written) => reply.written(written),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable; only fsync does.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.state().release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        debug!(ino = ino.0, datasync, "fsync");
        reply_empty(reply, self.state().fsync(ino.0, fh.0));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply_open(reply, self.state().opendir(ino.0));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.state().readdir(ino.0, fh.0, offset) {
            Ok(entries) => entries,
            Err(e) => {
                reply.error(errno(e));
                return;
            }
        };
        for entry in entries {
            let kind = if entry.is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            if reply.add(INodeNo(entry.ino), entry.next_offset, kind, &entry.name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.state().release(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        debug!(ino = ino.0, "fsyncdir");
        reply_empty(reply, self.state().fsyncdir(ino.0, fh.0));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (used_bytes, inodes) = {
            let state = self.state();
            (state.used_bytes(), state.inode_count())
        };
        let block = u64::from(BLOCK_SIZE);
        let blocks = REPORTED_CAPACITY_BYTES / block;
        let free = blocks.saturating_sub(used_bytes.div_ceil(block));
        let free_inodes = REPORTED_INODES.saturating_sub(inodes);
        reply.statfs(
            blocks,
            free,
            free,
            REPORTED_INODES,
            free_inodes,
            BLOCK_SIZE,
            NAME_MAX as u32,
            BLOCK_SIZE,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply_empty(reply, self.state().access(ino.0));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        debug!(parent = parent.0, ?name, "create");
        let exclusive = flags & libc::O_EXCL != 0;
        let truncate = flags & libc::O_TRUNC != 0;
        let result = self.state().create(
            parent.0,
            name,
            mode & !umask,
            owner(req),
            exclusive,
            truncate,
        );
        match result {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &file_attr(&attr),
                GENERATION,
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let keep_size = match mode {
            0 => false,
            libc::FALLOC_FL_KEEP_SIZE => true,
            _ => {
                // Punching holes, zeroing or collapsing ranges: not modelled.
                reply.error(Errno::EOPNOTSUPP);
                return;
            }
        };
        let result = self
            .state()
            .fallocate(ino.0, fh.0, offset, length, keep_size);
        reply_empty(reply, result);
    }
}
