//! Leases beside the load, over etcd's Lease API (both stores serve it):
//!
//! - **`--leases N`**: N leases of `--lease-ttl` seconds, granted before the load starts (by
//!   [`GRANTERS`] concurrent clients, not timed), each with one key (`lease/N`) attached when
//!   `--leased-keys` is given — so with a TTL shorter than the run, all of them expire during
//!   it, and their revokes and key deletes share the log with the load's writes;
//! - **`--keep-alives R`**: keep-alives at R a second over the leases in turn, on
//!   [`KEEP_ALIVE_STREAMS`] streams spread over the endpoints, for the length of the run.
//!
//! The report says how many leases, the keep-alives answered per second, and, after the run,
//! how many leased keys are left.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_api::etcdserverpb::kv_client::KvClient;
use etcd_api::etcdserverpb::lease_client::LeaseClient;
use etcd_api::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Clients granting the leases before the load.
pub const GRANTERS: usize = 64;
/// Streams the keep-alives go out on.
pub const KEEP_ALIVE_STREAMS: usize = 8;
/// How often each keep-alive stream sends its share of the rate.
const KEEP_ALIVE_TICK: Duration = Duration::from_millis(10);
/// Prefix of the leased keys.
const LEASED_PREFIX: &[u8] = b"lease/";

/// A channel to `addr`, made as every client of the port makes one.
fn channel(addr: &str) -> anyhow::Result<Channel> {
    Ok(kv_api::client::lazy_channel(addr)?)
}

/// The leases of a run.
pub struct Leases {
    ids: Arc<Vec<i64>>,
    answered: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
    endpoints: Vec<String>,
}

impl Leases {
    /// Grants `n` leases of `ttl` seconds on `endpoints` (a key with each if `keyed`).
    pub async fn grant(
        endpoints: &[String],
        n: usize,
        ttl: i64,
        keyed: bool,
    ) -> anyhow::Result<Leases> {
        let next = Arc::new(AtomicU64::new(0));
        let mut granters = Vec::new();
        for g in 0..GRANTERS.min(n.max(1)) {
            let ch = channel(&endpoints[g % endpoints.len()])?;
            let next = next.clone();
            granters.push(tokio::spawn(async move {
                let mut leases = LeaseClient::new(ch.clone());
                let mut kv = KvClient::new(ch);
                let mut ids = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n as u64 {
                        return Ok::<_, anyhow::Error>(ids);
                    }
                    let id = leases
                        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                        .await?
                        .into_inner()
                        .id;
                    if keyed {
                        let mut key = LEASED_PREFIX.to_vec();
                        key.extend_from_slice(format!("{i:08}").as_bytes());
                        kv.put(PutRequest {
                            key,
                            value: b"v".to_vec(),
                            lease: id,
                            ..Default::default()
                        })
                        .await?;
                    }
                    ids.push(id);
                }
            }));
        }
        let mut ids = Vec::with_capacity(n);
        for g in granters {
            ids.extend(g.await??);
        }
        Ok(Leases {
            ids: Arc::new(ids),
            answered: Arc::new(AtomicU64::new(0)),
            tasks: Vec::new(),
            endpoints: endpoints.to_vec(),
        })
    }

    /// Starts keep-alives at `rate` a second over the leases in turn, until dropped.
    pub fn keep_alive(&mut self, rate: u64) -> anyhow::Result<()> {
        if rate == 0 || self.ids.is_empty() {
            return Ok(());
        }
        let per_tick = (rate as f64 * KEEP_ALIVE_TICK.as_secs_f64() / KEEP_ALIVE_STREAMS as f64)
            .max(1.0 / KEEP_ALIVE_STREAMS as f64);
        for s in 0..KEEP_ALIVE_STREAMS {
            let ch = channel(&self.endpoints[s % self.endpoints.len()])?;
            let (ids, answered) = (self.ids.clone(), self.answered.clone());
            self.tasks.push(tokio::spawn(async move {
                let (tx, rx) = mpsc::channel(1024);
                // A request before the call: etcd's server sends the response headers the
                // call waits for only with its first answer.
                let _ = tx.try_send(LeaseKeepAliveRequest {
                    id: ids[s % ids.len()],
                });
                let Ok(response) = LeaseClient::new(ch)
                    .lease_keep_alive(ReceiverStream::new(rx))
                    .await
                else {
                    return;
                };
                let mut answers = response.into_inner();
                let reader = tokio::spawn(async move {
                    while let Ok(Some(_)) = answers.message().await {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                });
                let mut i = s;
                let mut owed = 0.0;
                let mut tick = tokio::time::interval(KEEP_ALIVE_TICK);
                loop {
                    tick.tick().await;
                    owed += per_tick;
                    while owed >= 1.0 {
                        owed -= 1.0;
                        let id = ids[i % ids.len()];
                        i += KEEP_ALIVE_STREAMS;
                        if tx.try_send(LeaseKeepAliveRequest { id }).is_err() {
                            // The server is behind: this keep-alive is skipped, not queued.
                            continue;
                        }
                    }
                    if reader.is_finished() {
                        return;
                    }
                }
            }));
        }
        Ok(())
    }

    /// ` leases=N keep_alives/s=R`, and the leased keys left when there were any.
    pub async fn report(&self, elapsed: Duration, keyed: bool) -> String {
        let mut out = format!(
            " leases={} keep_alives/s={:.0}",
            self.ids.len(),
            self.answered.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
        );
        if keyed {
            let left = self.leased_keys_left().await.unwrap_or(-1);
            out.push_str(&format!(" leased_keys_left={left}"));
        }
        out
    }

    async fn leased_keys_left(&self) -> anyhow::Result<i64> {
        let mut kv = KvClient::new(channel(&self.endpoints[0])?);
        let r = kv
            .range(RangeRequest {
                key: LEASED_PREFIX.to_vec(),
                range_end: etcd_api::range::prefix_end(LEASED_PREFIX),
                count_only: true,
                ..Default::default()
            })
            .await?;
        Ok(r.into_inner().count)
    }
}

impl Drop for Leases {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
