//! One node of a [`LocalCluster`](crate::LocalCluster): its generated config, its log, and its
//! process when it runs.

use crate::error::HarnessError;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use distributed_kv::config::NodeConfig;
use distributed_kv::state_machine::trust::BOOT_ID_ENV;

use crate::command::clean_env;
use crate::process::Proc;

/// One node: what it was generated with and what runs of it.
pub(crate) struct Node {
    /// The generated config, as written to `config_path`.
    pub(crate) config: NodeConfig,
    /// Where the config file is.
    pub(crate) config_path: PathBuf,
    /// Where the node's stdout and stderr go (appended across restarts).
    pub(crate) log_path: PathBuf,
    /// Its client and peer ports, still bound until its first start ([`reserve_addr`]).
    ///
    /// [`reserve_addr`]: crate::ports::reserve_addr
    pub(crate) held_ports: Vec<TcpListener>,
    /// The process, while it runs.
    proc: Option<Proc>,
    /// Whether the process is stopped with SIGSTOP.
    paused: bool,
    /// How many times it has been started.
    starts: u64,
    /// Power cuts it has been through: each is a new boot of its "machine", which the node
    /// sees as a new boot id.
    boots: u64,
}

impl Node {
    /// Writes `config` to `node<id>.toml` in `dir`; the log will be `node<id>.log` there.
    pub(crate) fn new(
        config: NodeConfig,
        dir: &Path,
        held_ports: Vec<TcpListener>,
    ) -> Result<Node, HarnessError> {
        let id = config.node_id;
        let config_path = dir.join(format!("node{id}.toml"));
        let text = toml::to_string(&config).map_err(|e| format!("node {id}'s config: {e}"))?;
        fs::write(&config_path, text).map_err(|e| format!("{}: {e}", config_path.display()))?;
        Ok(Node {
            config,
            config_path,
            log_path: dir.join(format!("node{id}.log")),
            held_ports,
            proc: None,
            paused: false,
            starts: 0,
            boots: 0,
        })
    }

    /// Starts `binary` on the config file, in `dir`, appending to the log.
    pub(crate) fn spawn(&mut self, binary: &Path, dir: &Path) -> Result<(), HarnessError> {
        let id = self.config.node_id;
        if self.proc.is_some() {
            return Err(crate::harness_error!("node {id} is already running"));
        }
        self.starts += 1;
        let io = |e: std::io::Error| format!("{}: {e}", self.log_path.display());
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(io)?;
        writeln!(log, "===== start #{} of node {id} =====", self.starts).map_err(io)?;
        let stdout = log.try_clone().map_err(io)?;
        let mut cmd = Command::new(binary);
        clean_env(&mut cmd)
            .current_dir(dir)
            .env(BOOT_ID_ENV, format!("local-node{id}-boot{}", self.boots))
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log);
        // The deliberate faults are switches only: no config file can turn them on.
        if self.config.testing.stale_reads {
            cmd.arg("--unsafe-stale-reads");
        }
        if self.config.testing.no_fsync {
            cmd.arg("--unsafe-no-fsync");
        }
        if self.config.testing.watch_gaps {
            cmd.arg("--unsafe-watch-gaps");
        }
        if self.config.testing.lease_expiry {
            cmd.arg("--unsafe-lease-expiry");
        }
        // The node binds its ports now.
        self.held_ports.clear();
        self.proc = Some(Proc::spawn(format!("node {id}"), &mut cmd)?);
        self.paused = false;
        Ok(())
    }

    /// Whether it has a process that is not stopped.
    pub(crate) fn is_running(&self) -> bool {
        self.proc.is_some() && !self.paused
    }

    /// Its process id, while it has a process.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Whether it has a process, stopped or not.
    pub(crate) fn has_process(&self) -> bool {
        self.proc.is_some()
    }

    /// The exit status of its process if that has ended without being asked to.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.proc.as_mut().and_then(Proc::try_status)
    }

    /// SIGKILLs and reaps its process, if any; returns the instant just before the signal.
    pub(crate) fn kill(&mut self) -> Instant {
        let at = Instant::now();
        if let Some(mut proc) = self.proc.take() {
            proc.kill9();
        }
        at
    }

    /// Sends SIGTERM to its process (which stays its own until [`reap`](Self::reap)).
    pub(crate) fn terminate(&mut self) -> Result<(), HarnessError> {
        let id = self.config.node_id;
        let proc = self
            .proc
            .as_mut()
            .ok_or_else(|| format!("node {id} is not running"))?;
        if self.paused {
            proc.signal(libc::SIGCONT)?;
            self.paused = false;
        }
        proc.terminate()
    }

    /// Takes its process, which has exited or is being stopped.
    pub(crate) fn reap(&mut self) -> Option<Proc> {
        self.proc.take()
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) its process, if any.
    pub(crate) fn set_paused(&mut self, paused: bool) -> Result<(), HarnessError> {
        if let Some(proc) = &mut self.proc {
            if self.paused != paused {
                proc.signal(if paused { libc::SIGSTOP } else { libc::SIGCONT })?;
                self.paused = paused;
            }
        }
        Ok(())
    }

    /// Counts a power cut: its next start is a new boot.
    pub(crate) fn reboot(&mut self) {
        self.boots += 1;
    }
}
