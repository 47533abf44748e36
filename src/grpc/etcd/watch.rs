//! etcd's Watch service: one bidirectional stream per call, many watchers on it.
//!
//! The service only carries messages: each stream is opened in the WatchHubActor with a
//! bounded outbox whose receiving half is the response stream, and a task reads the
//! client's requests and hands them to the hub one at a time (the next only once the hub
//! has acted on the last, so a stream's requests keep their order, and a client that sends
//! faster than the hub takes them is held back).
//!
//! A client that ends its side of the stream keeps its watchers, as in etcd: the stream
//! lives until the client goes, which the hub finds out from the outbox.
//!
//! **Require leader.** A client that sends the metadata `hasleader: true` (etcd's
//! `WithRequireLeader`, which etcdctl watch uses) wants to hear when the member it watches
//! has lost its cluster, so that it can go to another: a stream opened on a member that knows
//! no leader is refused with "no leader", and one whose member knows none for
//! [`NO_LEADER_CHECKS`] checks in a row, one per `leader_check` (the election timeout), is
//! ended with it — as etcd's `monitorLeader` does.

use std::pin::Pin;
use std::time::Duration;

use actix::Addr;
use etcd_api::etcdserverpb::watch_server::Watch;
use etcd_api::etcdserverpb::{WatchRequest, WatchResponse};
use etcd_api::EtcdError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::actors::messages::{CloseWatchStream, GetLeader, OpenWatchStream, WatchStreamRequest};
use crate::actors::watch_hub::ChannelOutbox;
use crate::actors::{ClientApiActor, WatchHubActor};

/// The metadata key, and value, of etcd's `WithRequireLeader`.
pub const REQUIRE_LEADER_KEY: &str = "hasleader";
pub const REQUIRE_LEADER_VALUE: &str = "true";

/// Checks in a row without a leader that end a require-leader stream (etcd's
/// `maxNoLeaderCnt`).
pub const NO_LEADER_CHECKS: u32 = 3;

/// etcd's Watch service of one member.
#[derive(Clone)]
pub struct EtcdWatch {
    hub: Addr<WatchHubActor>,
    /// Asked whether the member knows a leader, for require-leader streams.
    api: Addr<ClientApiActor>,
    /// How often a require-leader stream checks that there is a leader.
    leader_check: Duration,
}

impl EtcdWatch {
    pub fn new(
        hub: Addr<WatchHubActor>,
        api: Addr<ClientApiActor>,
        leader_check: Duration,
    ) -> EtcdWatch {
        EtcdWatch {
            hub,
            api,
            leader_check,
        }
    }

    async fn has_leader(api: &Addr<ClientApiActor>) -> bool {
        api.send(GetLeader).await.is_ok_and(|leader| leader != 0)
    }
}

/// The answers of one stream.
type Answers = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for EtcdWatch {
    type WatchStream = Answers;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Answers>, Status> {
        let require_leader = request
            .metadata()
            .get(REQUIRE_LEADER_KEY)
            .is_some_and(|v| v == REQUIRE_LEADER_VALUE);
        if require_leader && !Self::has_leader(&self.api).await {
            return Err(EtcdError::NoLeader.status());
        }
        let (outbox, answers) = ChannelOutbox::channel();
        let stream = self
            .hub
            .send(OpenWatchStream { outbox })
            .await
            .map_err(|_| etcd_api::EtcdError::Stopped.status())?;
        let mut requests = request.into_inner();
        let hub = self.hub.clone();
        tokio::spawn(async move {
            loop {
                match requests.message().await {
                    Ok(Some(WatchRequest {
                        request_union: Some(request),
                    })) => {
                        if hub
                            .send(WatchStreamRequest { stream, request })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    // etcd ignores a request with nothing in it.
                    Ok(Some(_)) => {}
                    // The client ended its side; its watchers live on (see the module docs).
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            hub.do_send(CloseWatchStream { stream });
        });
        if !require_leader {
            return Ok(Response::new(Box::pin(answers)));
        }
        // The monitor's one answer, "no leader", ends the stream; it stops when the stream is
        // gone (its channel closed).
        let (lost, lost_rx) = mpsc::channel(1);
        let (api, every) = (self.api.clone(), self.leader_check);
        tokio::spawn(async move {
            let mut without = 0;
            loop {
                tokio::select! {
                    _ = lost.closed() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                without = if Self::has_leader(&api).await {
                    0
                } else {
                    without + 1
                };
                if without >= NO_LEADER_CHECKS {
                    let _ = lost.send(Err(EtcdError::NoLeader.status())).await;
                    return;
                }
            }
        });
        let ended = ReceiverStream::new(lost_rx);
        Ok(Response::new(Box::pin(answers.merge(ended))))
    }
}
