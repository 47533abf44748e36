//! [`Proc`]: the owner of one child process, which kills it when dropped.
//!
//! Every process the harness starts — nodes, `kvctl`, a node a test starts by hand — is owned
//! by a `Proc`, so none is left running when a test ends or panics: dropping a `Proc` sends
//! SIGKILL and reaps the child. Binaries built with `panic = "abort"` (kvctl's chaos command,
//! `kvcluster`) never run destructors on a panic, and a harness can itself be killed; so on
//! Linux the child is also told to get SIGKILL when the thread that started it ends
//! (`PR_SET_PDEATHSIG`). A `Proc` must therefore be started on a thread that outlives it, as
//! a test's own thread or a program's main thread does.

use crate::error::HarnessError;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::timing::POLL_INTERVAL;

/// One child process, killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    /// The process.
    child: Child,
    /// What it is, for messages.
    name: String,
    /// Its exit status once it has been reaped.
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd`, named `name` in messages.
    pub fn spawn(name: impl Into<String>, cmd: &mut Command) -> Result<Proc, HarnessError> {
        let name = name.into();
        die_with_parent(cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Proc {
            child,
            name,
            status: None,
        })
    }

    /// What it is.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends `signal` (`libc::SIGTERM`, `SIGSTOP`, ...) unless the process has been reaped.
    pub fn signal(&mut self, signal: libc::c_int) -> Result<(), HarnessError> {
        if !self.is_running() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.pid()).map_err(|e| e.to_string())?;
        // SAFETY: kill(2) only sends a signal; the pid is our own unreaped child, so it cannot
        // name another process.
        if unsafe { libc::kill(pid, signal) } == 0 {
            Ok(())
        } else {
            Err(crate::harness_error!(
                "cannot send signal {signal} to {} (pid {pid}): {}",
                self.name,
                std::io::Error::last_os_error()
            ))
        }
    }

    /// Sends SIGTERM (a graceful stop) unless the process has exited.
    pub fn terminate(&mut self) -> Result<(), HarnessError> {
        self.signal(libc::SIGTERM)
    }

    /// Sends SIGKILL and reaps the process; returns its exit status.
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        self.status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Makes the kernel SIGKILL the child when the thread that spawns it ends.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid is async-signal-safe, and so is what the closure calls between fork and
    // exec: prctl and getppid, no allocation, no lock.
    unsafe {
        let parent = libc::getpid();
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have ended before the prctl took effect.
            if libc::getppid() != parent {
                return Err(std::io::Error::other(
                    "the harness ended before the child started",
                ));
            }
            Ok(())
        });
    }
}

/// Only Linux has `PR_SET_PDEATHSIG`; elsewhere dropping the [`Proc`] is the only guard.
#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}
