//! Whether the sled database may be believed after a restart.
//!
//! sled is not built for power cuts: between two of our syncs it writes pages, reuses segments
//! and removes blob files without syncing, so after a power cut its files can hold any mix of
//! old and new writes. A process crash (kill -9) is different: the kernel keeps every write, and
//! sled recovers as it was built to. The state machine is derived data — the snapshot file and
//! the Raft log always cover it — so when in doubt it is thrown away and rebuilt.
//!
//! The marker file beside the database says which case a restart is in. It holds one of:
//!
//! | content | written | a restart then |
//! |---|---|---|
//! | `clean` | after every file of the database was fsynced | trusts sled |
//! | `dirty <boot id>` | before the first write after a `clean` | trusts sled if the machine has not rebooted since (same boot id), else rebuilds |
//! | `rebuild` | when sled failed at run time | rebuilds |
//!
//! Each is written durably (temporary file, fsync, rename, fsync of the directory) before the
//! state it announces begins. No marker means a database from before markers existed, or one
//! being created: it is trusted.
//!
//! The boot id is the kernel's (`/proc/sys/kernel/random/boot_id`); the environment variable
//! [`BOOT_ID_ENV`] replaces it, so a test that simulates a power cut can simulate the reboot too.

use std::fs;
use std::path::{Path, PathBuf};

use crate::durable::write_durably;
use crate::error::Result;

/// Environment variable that, when set, stands in for the kernel's boot id (tests only).
pub const BOOT_ID_ENV: &str = "KV_BOOT_ID";
/// Where the kernel publishes the id of the current boot.
const KERNEL_BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// What the marker says about the database found at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// It may be used as it is.
    Trusted,
    /// It must be rebuilt, for this reason.
    Untrusted(String),
}

/// The marker of one database.
#[derive(Debug)]
pub struct TrustMarker {
    /// The marker file, beside the database: its path with the extension `trust`.
    path: PathBuf,
    /// Whether the file now says `clean`, so the next write must first say `dirty`.
    clean: bool,
}

/// The current boot's id: [`BOOT_ID_ENV`] if set, else the kernel's; empty if neither is there.
pub fn boot_id() -> String {
    std::env::var(BOOT_ID_ENV)
        .ok()
        .or_else(|| fs::read_to_string(KERNEL_BOOT_ID).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl TrustMarker {
    /// Reads the marker at `path` and judges the database it describes.
    pub fn read(path: &Path) -> (TrustMarker, Trust) {
        let marker = TrustMarker {
            path: path.to_path_buf(),
            clean: false,
        };
        let trust = match fs::read_to_string(path) {
            Err(_) => Trust::Trusted,
            Ok(text) => {
                let text = text.trim();
                match text.split_once(' ') {
                    _ if text == "clean" => Trust::Trusted,
                    Some(("dirty", boot)) if boot == boot_id() => Trust::Trusted,
                    Some(("dirty", _)) => Trust::Untrusted(
                        "the machine restarted (or lost power) while the database had unsynced writes"
                            .into(),
                    ),
                    _ if text == "rebuild" => {
                        Trust::Untrusted("the database failed while the node was running".into())
                    }
                    _ => Trust::Untrusted(format!("its marker says {text:?}")),
                }
            }
        };
        (marker, trust)
    }

    /// Records that every file of the database is synced.
    pub fn set_clean(&mut self) -> Result<()> {
        write_durably(&self.path, b"clean\n")?;
        self.clean = true;
        Ok(())
    }

    /// Records, before a write, that the database is about to hold unsynced writes. Costs a
    /// durable write only for the first write after [`TrustMarker::set_clean`].
    pub fn set_dirty(&mut self) -> Result<()> {
        if self.clean {
            write_durably(&self.path, format!("dirty {}\n", boot_id()).as_bytes())?;
            self.clean = false;
        }
        Ok(())
    }

    /// Records that the database failed, so the next start rebuilds it. Best effort: it runs
    /// on the way to stopping the node.
    pub fn set_untrusted(&mut self) {
        if let Err(e) = write_durably(&self.path, b"rebuild\n") {
            tracing::error!("cannot mark the state machine for rebuilding: {e}");
        }
        self.clean = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dirty_database_is_trusted_only_within_the_same_boot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.trust");
        assert_eq!(TrustMarker::read(&path).1, Trust::Trusted, "no marker yet");
        let (mut m, _) = TrustMarker::read(&path);
        m.set_clean().unwrap();
        assert_eq!(TrustMarker::read(&path).1, Trust::Trusted);
        m.set_dirty().unwrap();
        assert_eq!(TrustMarker::read(&path).1, Trust::Trusted, "same boot");
        fs::write(&path, "dirty another-boot\n").unwrap();
        assert!(matches!(TrustMarker::read(&path).1, Trust::Untrusted(_)));
        m.set_untrusted();
        assert!(matches!(TrustMarker::read(&path).1, Trust::Untrusted(_)));
    }
}
