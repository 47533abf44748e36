//! Running a command to completion under a deadline, as the tests run `kvctl` and the node
//! binary with bad input: [`run_to_exit`] and the `kvctl` runners, each giving a [`Finished`].

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::process::Proc;
use crate::timing::KVCTL_TIMEOUT;

/// What a finished command produced.
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Finished {
    /// The exit code; panics if the process died from a signal (for example an abort).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {:?}\n{}", self.status, self))
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Removes every `KV_*` variable from `cmd`'s environment, so the caller's environment cannot
/// change what a test starts, and turns off colours in logs.
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KV_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1")
}

/// The last `n` lines of the file at `path` (or why it cannot be read).
pub fn tail(path: &Path, n: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Runs `cmd` to completion with stdin closed and its output captured in files under `dir`;
/// panics (after killing it) if it takes longer than `timeout`.
pub fn run_to_exit(cmd: &mut Command, dir: &Path, timeout: Duration) -> Finished {
    run_to_exit_with_stdin(cmd, Stdio::null(), dir, timeout)
}

/// [`run_to_exit`] with `stdin` as the command's standard input.
pub fn run_to_exit_with_stdin(
    cmd: &mut Command,
    stdin: Stdio,
    dir: &Path,
    timeout: Duration,
) -> Finished {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let out_path = dir.join(format!("cmd{n}.stdout"));
    let err_path = dir.join(format!("cmd{n}.stderr"));
    cmd.stdin(stdin)
        .stdout(File::create(&out_path).expect("create stdout file"))
        .stderr(File::create(&err_path).expect("create stderr file"));
    let name = format!("{cmd:?}");
    let mut proc = Proc::spawn(name.clone(), cmd).unwrap_or_else(|e| panic!("{e}"));
    let status = proc.wait_timeout(timeout);
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    match status {
        Some(status) => Finished {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{name} still runs after {timeout:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        ),
    }
}

/// Runs `kvctl --endpoints <endpoints> <args>` in `dir`.
pub fn kvctl(dir: &Path, endpoints: &str, args: &[&str]) -> Finished {
    run_kvctl(dir, endpoints, args, Stdio::null())
}

/// Runs `kvctl --endpoints <endpoints> <args>` in `dir` with the file at `input` as its
/// standard input.
pub fn kvctl_with_stdin(dir: &Path, endpoints: &str, args: &[&str], input: &Path) -> Finished {
    let stdin = File::open(input).expect("open kvctl's stdin file");
    run_kvctl(dir, endpoints, args, stdin.into())
}

fn run_kvctl(dir: &Path, endpoints: &str, args: &[&str], stdin: Stdio) -> Finished {
    let mut cmd = Command::new(crate::kvctl_bin());
    clean_env(&mut cmd)
        .current_dir(dir)
        .arg("--endpoints")
        .arg(endpoints)
        .args(args);
    run_to_exit_with_stdin(&mut cmd, stdin, dir, KVCTL_TIMEOUT)
}
