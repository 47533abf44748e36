//! `kvctl lease …`, `kvctl set --lease` and `kvctl lock NAME -- COMMAND`, over etcd's Lease
//! API and lock recipe ([`kv_api::lease`]); any member answers, and they work against etcd.
//!
//! **Ids** are printed and read in hex, as etcdctl prints them.
//!
//! **Lock.** `lock` takes a lease (`--ttl`, 60 s by default, as etcdctl's session), waits for
//! the lock, runs the command while it holds it, then releases the lock and revokes the
//! lease, and exits with the command's status. If the lease may have expired while the
//! command runs — a keep-alive said it is gone, or none was answered for a whole TTL — the
//! lock may be another's already: the command is killed and kvctl exits with
//! [`EXIT_LOCK_LOST`], so a script never goes on believing it holds it.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use etcd_api::etcdserverpb::lease_client::LeaseClient;
use etcd_api::etcdserverpb::{
    LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest,
};
use etcd_api::EtcdError;
use kv_api::client::{on_first_reachable, ClientError};
use kv_api::lease::{keep_alive_once, Session};
use tonic::transport::Channel;
use tonic::Status;

use crate::etcd::{explain, kv_call, Call};
use crate::Failure;

/// Exit status: the lease does not exist (or has expired).
const EXIT_NOT_FOUND: u8 = 1;
/// Exit status of bad input.
const EXIT_USAGE: u8 = 2;
/// Exit status when no member answers.
const EXIT_UNREACHABLE: u8 = 3;
/// Exit status: `lock` lost its lease while the command ran; the command was killed.
pub const EXIT_LOCK_LOST: u8 = 10;

#[derive(Subcommand, Debug)]
pub enum LeaseCommand {
    /// Grant a lease of TTL seconds (the server may raise it to its least TTL) and print its
    /// id, in hex.
    Grant { ttl: i64 },
    /// Revoke lease ID (hex): every key attached to it is deleted. Exit 1 if it does not exist.
    Revoke { id: String },
    /// Print `granted=G remaining=R` (seconds) for lease ID, then with --keys its keys, one a
    /// line. Exit 1 if it does not exist or has expired.
    Ttl {
        id: String,
        #[arg(long)]
        keys: bool,
    },
    /// Print every lease id, one a line.
    List,
    /// Keep lease ID alive until stopped, a keep-alive every third of its TTL. Exit 1 once it
    /// is gone.
    KeepAlive { id: String },
}

/// A lease id as given on the command line (hex, as etcdctl takes it).
pub fn parse_id(id: &str) -> Result<i64, Failure> {
    i64::from_str_radix(id.trim_start_matches("0x"), 16).map_err(|_| Failure {
        code: EXIT_USAGE,
        message: format!("bad lease id {id}: expected hex, as `lease grant` prints it"),
    })
}

fn unreachable(e: ClientError) -> Failure {
    Failure {
        code: EXIT_UNREACHABLE,
        message: e.to_string(),
    }
}

/// One call to the Lease service on the first reachable endpoint.
async fn lease_call<T, F, Fut>(
    endpoints: &[String],
    timeout: Duration,
    writes: bool,
    mut f: F,
) -> Result<T, Failure>
where
    F: FnMut(LeaseClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
{
    on_first_reachable(endpoints, timeout, |channel| f(LeaseClient::new(channel)))
        .await
        .map_err(unreachable)?
        .map_err(|status| explain(&status, Call::Lease { writes }))
}

/// Runs one `lease` subcommand.
pub async fn lease(
    endpoints: &[String],
    timeout: Duration,
    command: LeaseCommand,
    out: &mut impl Write,
) -> Result<ExitCode, Failure> {
    match command {
        LeaseCommand::Grant { ttl } => {
            let session = Session::grant(endpoints, timeout, ttl)
                .await
                .map_err(grant_failure)?;
            let _ = writeln!(out, "{:016x}", session.id());
            // Dropping the session stops its keep-alives: the lease lives out its TTL.
        }
        LeaseCommand::Revoke { id } => {
            let id = parse_id(&id)?;
            let revoked = lease_call(endpoints, timeout, true, |mut c| async move {
                c.lease_revoke(LeaseRevokeRequest { id }).await
            })
            .await;
            if let Err(f) = &revoked {
                if f.message.contains(EtcdError::LeaseNotFound.message()) {
                    eprintln!("lease {id:016x} does not exist");
                    return Ok(ExitCode::from(EXIT_NOT_FOUND));
                }
            }
            revoked?;
        }
        LeaseCommand::Ttl { id, keys } => {
            let id = parse_id(&id)?;
            let r = lease_call(endpoints, timeout, false, |mut c| async move {
                c.lease_time_to_live(LeaseTimeToLiveRequest { id, keys })
                    .await
            })
            .await?;
            if r.ttl < 0 {
                eprintln!("lease {id:016x} does not exist (or has expired)");
                return Ok(ExitCode::from(EXIT_NOT_FOUND));
            }
            let _ = writeln!(out, "granted={} remaining={}", r.granted_ttl, r.ttl);
            for k in &r.keys {
                let _ = writeln!(out, "{}", String::from_utf8_lossy(k));
            }
        }
        LeaseCommand::List => {
            let r = lease_call(endpoints, timeout, false, |mut c| async move {
                c.lease_leases(LeaseLeasesRequest {}).await
            })
            .await?;
            for l in &r.leases {
                let _ = writeln!(out, "{:016x}", l.id);
            }
        }
        LeaseCommand::KeepAlive { id } => {
            let id = parse_id(&id)?;
            let mut every = Duration::from_millis(100);
            loop {
                match keep_alive_once(endpoints, id).await {
                    Some(0) => {
                        eprintln!("lease {id:016x} is gone");
                        return Ok(ExitCode::from(EXIT_NOT_FOUND));
                    }
                    Some(ttl) => every = Duration::from_secs(ttl.max(1) as u64) / 3,
                    None => eprintln!("kvctl: no member answered a keep-alive; trying again"),
                }
                tokio::time::sleep(every).await;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn grant_failure(e: ClientError) -> Failure {
    Failure {
        code: e.exit_code() as u8,
        message: e.to_string(),
    }
}

/// `set KEY VALUE --lease ID`: a Put with the lease, through etcd's API.
pub async fn put_with_lease(
    endpoints: &[String],
    timeout: Duration,
    key: Vec<u8>,
    value: Vec<u8>,
    lease: i64,
) -> Result<(), Failure> {
    let req = PutRequest {
        key,
        value,
        lease,
        ..Default::default()
    };
    kv_call(endpoints, timeout, Call::Lease { writes: true }, |mut c| {
        let req = req.clone();
        async move { c.put(req).await }
    })
    .await
    .map(|_| ())
}

/// `lock NAME -- COMMAND…` (see the module docs).
pub async fn lock(
    endpoints: &[String],
    timeout: Duration,
    name: &str,
    ttl: i64,
    command: &[String],
) -> Result<ExitCode, Failure> {
    let Some((program, args)) = command.split_first() else {
        return Err(Failure {
            code: EXIT_USAGE,
            message: "lock needs a command to run: kvctl lock NAME -- COMMAND [ARGS...]".into(),
        });
    };
    let session = Session::grant(endpoints, timeout, ttl)
        .await
        .map_err(grant_failure)?;
    let held = kv_api::lease::lock(endpoints, timeout, name, &session)
        .await
        .map_err(grant_failure)?;
    if !session.is_alive() {
        return Err(Failure {
            code: EXIT_LOCK_LOST,
            message: format!("the lease of lock {name} may have expired as it was taken"),
        });
    }
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure {
            code: EXIT_USAGE,
            message: format!("cannot run {program}: {e}"),
        })?;
    let status = tokio::select! {
        status = child.wait() => status,
        _ = session.lost() => {
            let _ = child.kill().await;
            return Err(Failure {
                code: EXIT_LOCK_LOST,
                message: format!(
                    "the lease of lock {name} may have expired while {program} ran: it was killed"
                ),
            });
        }
    };
    // Released either way; a failure to release leaves the key to the lease's expiry.
    let _ = kv_api::lease::unlock(endpoints, timeout, &held).await;
    let _ = session.revoke().await;
    let status = status.map_err(|e| Failure {
        code: EXIT_USAGE,
        message: format!("waiting for {program}: {e}"),
    })?;
    Ok(ExitCode::from(exit_code_of(status)))
}

/// The exit status to pass on for a command's: its own, or 128 + the signal that ended it.
fn exit_code_of(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.saturating_add(signal as u8),
        (None, None) => 1,
    }
}
