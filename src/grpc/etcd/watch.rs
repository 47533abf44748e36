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

use std::pin::Pin;

use actix::Addr;
use etcd_api::etcdserverpb::watch_server::Watch;
use etcd_api::etcdserverpb::{WatchRequest, WatchResponse};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::actors::messages::{CloseWatchStream, OpenWatchStream, WatchStreamRequest};
use crate::actors::watch_hub::ChannelOutbox;
use crate::actors::WatchHubActor;

/// etcd's Watch service of one member.
#[derive(Clone)]
pub struct EtcdWatch {
    hub: Addr<WatchHubActor>,
}

impl EtcdWatch {
    pub fn new(hub: Addr<WatchHubActor>) -> EtcdWatch {
        EtcdWatch { hub }
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
        Ok(Response::new(Box::pin(ReceiverStream::new(answers))))
    }
}
