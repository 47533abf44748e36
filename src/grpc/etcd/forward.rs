//! `Forwarder`: a follower's link to the leader, for etcd's writes (and a member list the
//! follower cannot complete itself).
//!
//! etcd's clients send a write to whichever member they are connected to and do not follow
//! redirects, so a follower passes the write on to the leader over the leader's own etcd API
//! and returns the leader's answer. The request carries [`FORWARDED_METADATA`] so that a
//! member that is no longer the leader when it arrives answers "leader changed" rather than
//! passing it on again. Failures keep etcd's meaning: a write that never left this member
//! failed for want of a reachable leader ("no leader"), one lost on the way has an unknown
//! outcome ("request timed out, possibly due to connection lost").
//!
//! One lazily connected channel per leader address is kept and reused; a channel reconnects
//! by itself, so an address is never dropped from the map (there are as many as members).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use etcd_api::EtcdError;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::FORWARDED_METADATA;

/// How long a forwarding member waits to connect to the leader, in milliseconds.
pub const FORWARD_CONNECT_TIMEOUT_MS: u64 = 1_000;

/// Passes writes on to the leader (see the module docs).
pub struct Forwarder {
    /// Put on every forwarded request as [`FORWARDED_METADATA`].
    member_id: u64,
    /// A channel per leader client address.
    channels: Mutex<HashMap<String, Channel>>,
}

impl Forwarder {
    pub fn new(member_id: u64) -> Forwarder {
        Forwarder {
            member_id,
            channels: Mutex::new(HashMap::new()),
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|_| EtcdError::NoLeader.status())?
            .connect_timeout(Duration::from_millis(FORWARD_CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// Sends `req` to the leader at `addr` through `call` (a client method, given a channel to
    /// the leader), with at most `timeout` to answer, and gives back its answer.
    pub async fn forward<Req, Resp, F, Fut>(
        &self,
        addr: &str,
        req: Req,
        timeout: Duration,
        call: F,
    ) -> Result<Resp, Status>
    where
        F: FnOnce(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let mut request = tonic::Request::new(req);
        request.set_timeout(timeout);
        if let Ok(v) = self.member_id.to_string().parse() {
            request.metadata_mut().insert(FORWARDED_METADATA, v);
        }
        let channel = self.channel(addr)?;
        match tokio::time::timeout(timeout, call(channel, request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            // The leader's own answer, etcd's error or not, goes back as it came.
            Ok(Err(status)) if EtcdError::from_status(&status).is_some() => Err(status),
            Ok(Err(status)) if kv_api::status::never_sent(&status) => {
                Err(EtcdError::NoLeader.status())
            }
            Ok(Err(status)) if status.code() == Code::DeadlineExceeded => {
                Err(EtcdError::Timeout.status())
            }
            Ok(Err(status)) if status.code() == Code::Unavailable => {
                Err(EtcdError::TimeoutDueToConnectionLost.status())
            }
            Ok(Err(status)) => Err(status),
            Err(_) => Err(EtcdError::Timeout.status()),
        }
    }
}
