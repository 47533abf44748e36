//! A key's lease, as the editor shows it under the value: which lease the key is attached to,
//! and how long it has left — asked of etcd's API after each get that finds the key (a Range
//! for the key's lease, then LeaseTimeToLive, which any member passes on to the leader), and
//! counted down on screen from there.

use std::time::{Duration, Instant};

use etcd_api::etcdserverpb::kv_client::KvClient;
use etcd_api::etcdserverpb::lease_client::LeaseClient;
use etcd_api::etcdserverpb::{LeaseTimeToLiveRequest, RangeRequest};
use kv_api::client::{on_first_reachable, ClientError};

/// A key's lease when it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLease {
    /// The key, as the editor showed it.
    pub key: String,
    pub id: i64,
    /// Seconds, as granted.
    pub granted: i64,
    /// Seconds left when asked; -1 when the lease was already gone.
    pub remaining: i64,
    pub asked: Instant,
}

impl KeyLease {
    /// Seconds left now, counted down from the answer.
    pub fn left_now(&self) -> i64 {
        let gone = self.asked.elapsed().as_secs() as i64;
        (self.remaining - gone).max(0)
    }

    /// The line the editor shows under the value.
    pub fn label(&self) -> String {
        if self.remaining < 0 {
            return format!("{}: lease {:016x}, expired", self.key, self.id);
        }
        format!(
            "{}: lease {:016x}, {} s of {} s left",
            self.key,
            self.id,
            self.left_now(),
            self.granted
        )
    }
}

fn failed(status: tonic::Status) -> ClientError {
    ClientError::Server(status.message().to_string())
}

/// The lease of `key` (shown as `shown`), or `None` when it has none or does not exist.
pub async fn key_lease(
    endpoints: &[String],
    timeout: Duration,
    key: &[u8],
    shown: String,
) -> Result<Option<KeyLease>, ClientError> {
    let req = RangeRequest {
        key: key.to_vec(),
        keys_only: true,
        ..Default::default()
    };
    let found = on_first_reachable(endpoints, timeout, |channel| {
        let req = req.clone();
        async move { KvClient::new(channel).range(req).await }
    })
    .await?
    .map_err(failed)?;
    let id = found.kvs.first().map_or(0, |kv| kv.lease);
    if id == 0 {
        return Ok(None);
    }
    let asked = Instant::now();
    let left = on_first_reachable(endpoints, timeout, |channel| async move {
        LeaseClient::new(channel)
            .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: false })
            .await
    })
    .await?
    .map_err(failed)?;
    Ok(Some(KeyLease {
        key: shown,
        id,
        granted: left.granted_ttl,
        remaining: left.ttl,
        asked,
    }))
}
