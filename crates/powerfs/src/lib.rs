//! powerfs: an in-memory FUSE filesystem that can lose, on command,
//! everything not yet made durable — a power cut for tests.
//!
//! A disk with a volatile write cache may, when the power fails, lose every
//! write and every namespace change the software did not explicitly flush.
//! Real filesystems usually lose less (ext4 journals renames atomically, for
//! instance), so software that is only correct because of such kindness
//! passes ordinary crash tests and still loses data on other setups. powerfs
//! is deliberately as harsh as POSIX allows, in the spirit of Jepsen's
//! LazyFS: the chaos suite keeps node data directories on a powerfs mount,
//! kills the nodes with SIGKILL, calls [`PowerFs::power_cut`], and restarts
//! them on whatever survived.
//!
//! # The model
//!
//! Every file and directory exists in two versions: *current*, which every
//! operation reads and changes, and *durable*, which is what a power cut
//! leaves behind.
//!
//! * **File contents.** Writes, size changes (truncate/extend through
//!   setattr, `O_TRUNC`) and `fallocate` change only the current contents.
//!   An `fsync` or `fdatasync` of the file makes its current contents
//!   durable. The cost of a sync is proportional to what changed since the
//!   previous one, not to the file size: the model remembers which byte
//!   ranges were written and how far the file was truncated, and copies
//!   just those. A file never synced is durably empty.
//! * **Names.** Create, mknod, mkdir, unlink, rmdir and rename change only
//!   the current entries of the directories involved. Only an `fsync` of a
//!   directory makes its current entries durable. A file's fsync does *not*
//!   make its name durable, and a new directory survives only if its parent
//!   was synced after the mkdir, with only the entries its own last fsync
//!   recorded. The root starts durably empty.
//! * **Power cut.** Every file's contents and every directory's entries go
//!   back to their durable version: unsynced writes vanish, unsynced
//!   creations disappear, unsynced unlinks and renames are undone (after
//!   `rename(a, b)` over an existing `b` without a directory fsync, both `a`
//!   and the old `b` are back, each with its own durable contents). Open
//!   handles die with the cut (using one afterwards gives `EIO`), and
//!   inodes the durable tree no longer reaches are freed (their numbers then
//!   give `ESTALE`).
//!
//! Invariants the model keeps:
//!
//! * an inode lives while a current entry, a durable entry, an open handle
//!   or a kernel lookup reference refers to it; the last one to go frees it,
//!   so deleted files do not pile up in memory between cuts;
//! * inode numbers are never reused, so a number the kernel still holds
//!   from before a cut never reaches a different file;
//! * mode, owner and timestamps are not part of the model: they keep their
//!   latest values across a cut.
//!
//! # Caching
//!
//! The kernel must not paper over a cut with cached data, so entries and
//! attributes are replied with a zero TTL, files are opened without
//! `keep_cache` (the kernel drops its page cache at each open), and writes
//! go straight through to the model (no writeback cache is negotiated).
//! The caller must kill every process using the mount before calling
//! [`PowerFs::power_cut`]; a file opened afresh afterwards shows its
//! durable contents.
//!
//! # Serving
//!
//! [`PowerFs::mount`] mounts with `mount(2)` directly (the process must be
//! root and `/dev/fuse` must exist; no `fusermount` is needed) and serves
//! requests from a background thread. The state sits behind one mutex
//! shared by that thread and the test harness. Files are plain byte
//! vectors (two copies each), so they are capped at 1 GiB (`EFBIG` beyond:
//! see `contents::MAX_FILE_BYTES`).
//!
//! Modules: `state` is the model (no FUSE in it, unit-tested directly),
//! built from `inode`, `contents` and `dir`; `fuse` adapts it to
//! `fuser::Filesystem`.

mod contents;
mod dir;
mod fuse;
mod inode;
mod state;

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use tracing::{debug, warn};

use crate::fuse::PowerFsAdapter;
use crate::state::{Owner, State};

/// Name shown as the mount source (in `/proc/mounts`, `df`).
const FS_NAME: &str = "powerfs";

/// How long drop waits for the serving thread to finish after a clean
/// unmount. It normally ends at once; the bound only guarantees that a
/// misbehaving kernel connection cannot hang the test harness.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How often drop checks whether the serving thread has finished.
const JOIN_POLL: Duration = Duration::from_millis(5);

/// A mounted powerfs. Unmounts when dropped.
#[derive(Debug)]
pub struct PowerFs {
    /// The model, shared with the serving thread.
    state: Arc<Mutex<State>>,
    /// The fuser session; `None` only while dropping.
    session: Option<BackgroundSession>,
    /// Canonical path of the mount.
    mountpoint: PathBuf,
}

/// What a power cut threw away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Unsynced content operations undone: write calls, size changes and
    /// fallocate extensions.
    pub writes_dropped: u64,
    /// Bytes carried by the undone write calls.
    pub bytes_dropped: u64,
    /// Files whose contents had unsynced changes.
    pub files_reverted: u64,
    /// Directory entries undone: names created, removed or re-pointed since
    /// their directory's last fsync.
    pub entries_reverted: u64,
}

impl fmt::Display for CutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dropped {} writes ({} bytes) in {} files, {} directory entries",
            self.writes_dropped, self.bytes_dropped, self.files_reverted, self.entries_reverted
        )
    }
}

/// Counters since mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Write requests served.
    pub writes: u64,
    /// File fsync/fdatasync requests served.
    pub fsyncs: u64,
    /// Directory fsync requests served.
    pub dir_fsyncs: u64,
    /// Power cuts simulated.
    pub power_cuts: u64,
}

impl PowerFs {
    /// Mounts a new, empty filesystem at `mountpoint` (an existing empty
    /// directory) and serves it from a background thread until dropped.
    ///
    /// A stale mount left at `mountpoint` by an earlier crashed run is
    /// lazily detached first. Fails if the process may not mount FUSE
    /// filesystems (not root) or `/dev/fuse` is missing.
    pub fn mount(mountpoint: &Path) -> io::Result<PowerFs> {
        // Ignore the result: usually there is nothing mounted there.
        detach(mountpoint);
        let mountpoint = mountpoint.canonicalize()?;
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let root_owner = unsafe {
            Owner {
                uid: libc::getuid(),
                gid: libc::getgid(),
            }
        };
        let state = Arc::new(Mutex::new(State::new(root_owner)));
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName(FS_NAME.to_owned())];
        // Processes of any user may use the mount (the harness is root, the
        // nodes need not be); permissions are not checked at all.
        config.acl = SessionACL::All;
        let session = fuser::spawn_mount(PowerFsAdapter::new(state.clone()), &mountpoint, &config)?;
        debug!(mountpoint = %mountpoint.display(), "powerfs mounted");
        Ok(PowerFs {
            state,
            session: Some(session),
            mountpoint,
        })
    }

    /// Where it is mounted (canonicalized).
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Simulates a power cut: every file's contents go back to what its last
    /// fsync/fdatasync made durable (a file never synced is empty), and every
    /// directory's entries go back to what its last fsync made durable
    /// (entries created, renamed or removed since are undone). Inodes no
    /// longer reachable are freed.
    ///
    /// The caller must have killed every process using the mount first:
    /// open handles are invalidated (later operations on them get `EIO`,
    /// or `ESTALE` for freed inodes). Returns what was thrown away.
    pub fn power_cut(&self) -> CutReport {
        let report = self.lock().power_cut();
        debug!(%report, "power cut");
        report
    }

    /// Counters since mount, for tests and reports.
    pub fn stats(&self) -> Stats {
        self.lock().stats()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for PowerFs {
    /// Unmounts without ever blocking for long: a plain unmount when the
    /// mount is idle (then waits, bounded, for the serving thread to end),
    /// or a lazy detach when something still uses it (the serving thread
    /// then ends once the last user lets go).
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        match unmount(&self.mountpoint) {
            Ok(()) => {
                let deadline = Instant::now() + JOIN_TIMEOUT;
                while !session.guard.is_finished() && Instant::now() < deadline {
                    thread::sleep(JOIN_POLL);
                }
                if session.guard.is_finished() {
                    if let Err(e) = session.join() {
                        warn!(error = %e, "powerfs serving thread failed");
                    }
                } else {
                    warn!("powerfs serving thread did not stop; leaving it");
                }
            }
            Err(e) => {
                warn!(error = %e, "powerfs busy at unmount; detaching lazily");
                detach(&self.mountpoint);
            }
        }
    }
}

/// `umount(2)`: fails with `EBUSY` if the mount is in use.
fn unmount(path: &Path) -> io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `path` is a valid NUL-terminated string for the call's duration.
    if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Lazy unmount (`MNT_DETACH`), errors ignored: used on paths that may or
/// may not be mounted.
fn detach(path: &Path) {
    if let Ok(path) = CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: `path` is a valid NUL-terminated string for the call's duration.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    }
}
