//! Integration tests: mount a real powerfs and drive it with `std::fs`, the
//! way node processes do. They need root and `/dev/fuse`; without them they
//! fail (never silently pass) with a message saying so.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use powerfs::{CutReport, PowerFs};
use tempfile::TempDir;

/// A mount in a fresh temporary directory. Field order matters: the mount
/// is dropped (unmounted) before the directory is removed.
struct Mounted {
    fs: PowerFs,
    _dir: TempDir,
}

fn mount() -> Mounted {
    let dir = tempfile::tempdir().expect("create a temporary mountpoint");
    Mounted {
        fs: mount_at(dir.path()),
        _dir: dir,
    }
}

fn mount_at(path: &Path) -> PowerFs {
    match PowerFs::mount(path) {
        Ok(fs) => fs,
        Err(e) => {
            // SAFETY: geteuid cannot fail and touches no memory.
            let euid = unsafe { libc::geteuid() };
            panic!(
                "cannot mount powerfs at {}: {e}. These tests need root (euid is {euid}) \
                 and /dev/fuse (present: {}).",
                path.display(),
                Path::new("/dev/fuse").exists()
            )
        }
    }
}

/// fsync of a directory, as durable-write code does it.
fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn durable_write_sequence_survives_a_cut_and_a_plain_write_does_not() {
    let m = mount();
    let root = m.fs.mountpoint();

    // The classic sequence: write a temporary file, fsync it, rename it
    // into place, fsync the directory.
    let tmp = root.join("state.tmp");
    let mut f = File::create(&tmp).unwrap();
    f.write_all(b"term=3").unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs::rename(&tmp, root.join("state")).unwrap();
    sync_dir(root);

    // A plain write: neither the contents nor the name are synced.
    fs::write(root.join("careless"), b"gone").unwrap();
    assert_eq!(names(root), ["careless", "state"]);

    let report = m.fs.power_cut();
    assert_eq!(
        report,
        CutReport {
            writes_dropped: 1,
            bytes_dropped: 4,
            files_reverted: 1,
            entries_reverted: 1,
        }
    );
    assert_eq!(names(root), ["state"]);
    assert_eq!(fs::read(root.join("state")).unwrap(), b"term=3");
    let err = fs::read(root.join("careless")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn fresh_opens_after_a_cut_see_durable_contents_and_old_handles_fail() {
    let m = mount();
    let root = m.fs.mountpoint();
    let path = root.join("log");
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(&path)
        .unwrap();
    sync_dir(root);
    f.write_all(b"entry-1\n").unwrap();
    f.sync_data().unwrap();
    f.write_all(b"entry-2\n").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"entry-1\nentry-2\n");

    let report = m.fs.power_cut();
    assert_eq!((report.writes_dropped, report.bytes_dropped), (1, 8));

    assert_eq!(fs::read(&path).unwrap(), b"entry-1\n");
    assert_eq!(fs::metadata(&path).unwrap().len(), 8);
    // The handle from before the cut belongs to a dead process's world:
    // writes and syncs through it fail (reads may be served from the
    // kernel's page cache, so they are not checked).
    let err = f.write_all(b"late").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let err = f.sync_all().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    drop(f);
    assert_eq!(fs::read(&path).unwrap(), b"entry-1\n");
}

#[test]
fn std_fs_operations_and_what_a_cut_undoes() {
    let m = mount();
    let root = m.fs.mountpoint();
    let data = root.join("data");
    fs::create_dir(&data).unwrap();
    sync_dir(root);

    // A file synced in a synced directory.
    let mut f = File::create(data.join("a")).unwrap();
    f.write_all(&[1; 10_000]).unwrap();
    f.sync_all().unwrap();
    f.set_len(100).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 100);
    drop(f);
    sync_dir(&data);

    // Unsynced namespace changes: rename over, remove, new directory.
    fs::write(data.join("b"), b"bee").unwrap();
    File::open(data.join("b")).unwrap().sync_all().unwrap();
    fs::rename(data.join("b"), data.join("a")).unwrap();
    fs::create_dir(data.join("sub")).unwrap();
    fs::write(data.join("sub").join("c"), b"sea").unwrap();
    assert_eq!(names(&data), ["a", "sub"]);
    assert_eq!(fs::read(data.join("a")).unwrap(), b"bee");
    assert_eq!(names(&data.join("sub")), ["c"]);

    let report = m.fs.power_cut();
    // In data: a (re-pointed) and sub (new); in sub: c. (b was created and
    // renamed away, never durable, so there is nothing of it to undo.)
    assert_eq!(report.entries_reverted, 3);
    assert_eq!(names(&data), ["a"]);
    let a = fs::read(data.join("a")).unwrap();
    assert_eq!(a, vec![1; 10_000], "the truncation was never synced");

    // remove_file then sync: the removal is durable.
    fs::remove_file(data.join("a")).unwrap();
    sync_dir(&data);
    m.fs.power_cut();
    assert!(names(&data).is_empty());

    let stats = m.fs.stats();
    assert_eq!(stats.power_cuts, 2);
    assert!(stats.writes >= 3, "{stats:?}");
    assert_eq!(stats.fsyncs, 2);
    assert_eq!(stats.dir_fsyncs, 3);
}

#[test]
fn errors_are_reported_not_panicked() {
    let m = mount();
    let root = m.fs.mountpoint();
    fs::create_dir(root.join("d")).unwrap();
    fs::write(root.join("d").join("f"), b"x").unwrap();
    let kind = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    assert_eq!(kind(fs::remove_dir(root.join("d"))), Some(libc::ENOTEMPTY));
    assert_eq!(kind(fs::create_dir(root.join("d"))), Some(libc::EEXIST));
    assert_eq!(kind(fs::remove_file(root.join("nope"))), Some(libc::ENOENT));
    assert_eq!(
        kind(std::os::unix::fs::symlink("d", root.join("link"))),
        Some(libc::EPERM)
    );

    let path = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `path` is NUL-terminated and `st` is a valid out-parameter.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(path.as_ptr(), &mut st), 0);
        st
    };
    assert!(st.f_bavail * st.f_bsize >= 1 << 30, "plenty of free space");
}

/// How long the killed-writer test lets its child append before the kill.
const WRITER_RUN_TIME: Duration = Duration::from_millis(100);

/// Upper bound for waits that normally take milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

/// How often the killed-writer test checks whether its child is ready.
const POLL: Duration = Duration::from_millis(5);

/// What the killed writer writes and syncs before appending unsynced data.
const SYNCED_BLOCK: usize = 4096;

#[test]
fn a_killed_writer_loses_what_it_did_not_sync() {
    let m = mount();
    let root = m.fs.mountpoint();
    // The child writes and fsyncs one block, says so, then appends without
    // ever syncing until it is killed.
    let script = format!(
        "dd if=/dev/zero of=f bs={SYNCED_BLOCK} count=1 conv=fsync 2>/dev/null && : > ready \
         && while :; do echo x >> f; done"
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .current_dir(root)
        .spawn()
        .expect("spawn sh");
    let deadline = Instant::now() + PATIENCE;
    while !root.join("ready").exists() {
        assert!(Instant::now() < deadline, "the writer never got ready");
        thread::sleep(POLL);
    }
    sync_dir(root);
    thread::sleep(WRITER_RUN_TIME);
    child.kill().unwrap();
    child.wait().unwrap();

    let report = m.fs.power_cut();
    assert!(report.writes_dropped > 0, "{report}");
    assert_eq!(names(root), ["f", "ready"]);
    assert_eq!(fs::read(root.join("f")).unwrap(), vec![0; SYNCED_BLOCK]);
}

#[test]
fn dropping_while_a_file_is_open_detaches_without_hanging() {
    let Mounted { fs, _dir: dir } = mount();
    let mut f = File::create(fs.mountpoint().join("busy")).unwrap();
    let started = Instant::now();
    drop(fs);
    assert!(started.elapsed() < PATIENCE);
    // The detached filesystem still serves the open file until it closes.
    f.write_all(b"still served").unwrap();
    drop(f);
    assert!(names(dir.path()).is_empty(), "the mountpoint is bare again");
}

#[test]
fn a_stale_mount_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let stale = mount_at(dir.path());
    fs::write(stale.mountpoint().join("old"), b"x").unwrap();
    // As if the process that mounted it had crashed: never unmounted.
    std::mem::forget(stale);
    let fresh = mount_at(dir.path());
    assert!(names(fresh.mountpoint()).is_empty());
}
