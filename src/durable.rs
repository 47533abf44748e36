//! File-system steps that survive a power cut, shared by every store of a node.
//!
//! A write, a create or a rename is durable only once it is fsynced: the data by an fsync of
//! the file, the name by an fsync of the directory that holds it. These helpers do both.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use crate::error::{Error, Result};

fn storage_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Disk(format!("{}: {what}: {e}", path.display()))
}

/// Fsyncs a directory, so the names created, renamed or removed in it survive a power cut.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| storage_err(dir, "cannot sync the directory", e))
}

/// Fsyncs the parent directory of `path`, so `path`'s own name survives a power cut.
pub fn sync_parent(path: &Path) -> Result<()> {
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Writes `path` so that a power cut at any moment leaves either the old file (or none) or the
/// whole new one: a temporary file, fsynced, renamed into place, and the directory fsynced.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp).map_err(|e| storage_err(&tmp, "cannot create", e))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| storage_err(&tmp, "cannot write", e))?;
    }
    fs::rename(&tmp, path).map_err(|e| storage_err(path, "cannot rename into place", e))?;
    sync_parent(path)
}
