//! `PeerActor`: the link to one other node.
//!
//! Raft messages for the peer go into a bounded outbox. A sender task takes everything queued,
//! sends it as one `RaftTransport.Send` batch, waits for the answer, and repeats; so one RPC
//! is in flight per peer and batches grow by themselves under load.
//!
//! Overflow policy: when the outbox is full the message is dropped, and the RaftActor is told
//! the peer is unreachable. Dropping is safe: Raft resends whatever was not acknowledged.
//! When a send fails, the task reports the peer unreachable, drops what is queued (it would be
//! stale by the time the peer is back), and retries with exponential backoff.
//!
//! Snapshots do not go through the outbox: each is streamed in chunks of
//! [`SNAPSHOT_CHUNK_BYTES`] by its own task, and the outcome is reported to the RaftActor.

use std::time::Duration;

use actix::prelude::*;
use protobuf::Message as _;
use raft::prelude::{Message as RaftMessage, MessageType};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::actors::messages::*;
use crate::proto::raftpb::raft_transport_client::RaftTransportClient;
use crate::proto::raftpb::{RaftBatch, SnapshotChunk};

/// Dropped messages between two warnings about a full outbox.
pub const DROP_WARNING_EVERY: u64 = 1_000;
/// Messages queued for one peer before new ones are dropped.
pub const PEER_OUTBOX_CAPACITY: usize = 4_096;
/// Most messages sent in one batch.
pub const MAX_BATCH_MESSAGES: usize = 512;
/// Size of one snapshot chunk in bytes; far below gRPC's 4 MiB message limit.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// First retry delay after a failed send.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest retry delay.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long to wait for a connection to the peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one batch may take before it counts as failed.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a snapshot transfer may take.
pub const SNAPSHOT_SEND_TIMEOUT: Duration = Duration::from_secs(300);

/// The link to one peer.
pub struct PeerActor {
    /// Our node id.
    self_id: u64,
    /// Our client address, sent along for leader hints.
    self_client_addr: String,
    /// The peer's id.
    peer_id: u64,
    /// The peer's client for the peer service (connects lazily, reconnects by itself).
    client: RaftTransportClient<Channel>,
    /// Bounded outbox; the sender task holds the other end.
    outbox: Option<mpsc::Sender<RaftMessage>>,
    /// Where delivery failures are reported.
    raft: Option<Recipient<PeerReport>>,
    /// Messages dropped because the outbox was full, since the last warning.
    dropped: u64,
}

impl PeerActor {
    /// A link from `self_id` to `peer_id` at `peer_addr` (host:port).
    pub fn new(
        self_id: u64,
        self_client_addr: String,
        peer_id: u64,
        peer_addr: &str,
    ) -> crate::Result<PeerActor> {
        let endpoint = Endpoint::from_shared(format!("http://{peer_addr}"))
            .map_err(|e| crate::Error::Transport(format!("bad peer address {peer_addr}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let client = RaftTransportClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Ok(PeerActor {
            self_id,
            self_client_addr,
            peer_id,
            client,
            outbox: None,
            raft: None,
            dropped: 0,
        })
    }

    fn report(&self, report: PeerReport) {
        if let Some(raft) = &self.raft {
            raft.do_send(report);
        }
    }

    fn send_snapshot(&self, mut msg: RaftMessage, ctx: &mut Context<Self>) {
        let mut client = self.client.clone();
        let (from, addr, peer) = (self.self_id, self.self_client_addr.clone(), self.peer_id);
        let data = msg.mut_snapshot().take_data();
        let head = match msg.write_to_bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot encode snapshot message: {e}");
                return;
            }
        };
        let size = data.len();
        let mut chunks = vec![SnapshotChunk {
            from,
            from_client_addr: addr,
            message: head,
            data: Vec::new(),
        }];
        chunks.extend(data.chunks(SNAPSHOT_CHUNK_BYTES).map(|c| SnapshotChunk {
            data: c.to_vec(),
            ..Default::default()
        }));
        let fut = async move {
            let req = tonic::Request::new(tokio_stream::iter(chunks));
            tokio::time::timeout(SNAPSHOT_SEND_TIMEOUT, client.send_snapshot(req)).await
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, _| {
            let ok = matches!(res, Ok(Ok(_)));
            if ok {
                tracing::info!(peer, bytes = size, "snapshot sent");
            } else {
                tracing::warn!(peer, "snapshot transfer failed: {res:?}");
            }
            act.report(PeerReport::SnapshotSent { peer, ok });
        }));
    }
}

/// The sender loop: batch, send, back off on failure.
async fn run_link(
    mut rx: mpsc::Receiver<RaftMessage>,
    mut client: RaftTransportClient<Channel>,
    from: u64,
    from_client_addr: String,
    peer: u64,
    owner: Addr<PeerActor>,
) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    while let Some(first) = rx.recv().await {
        let mut messages = Vec::with_capacity(16);
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m.write_to_bytes() {
                Ok(b) => messages.push(b),
                Err(e) => tracing::error!("cannot encode raft message: {e}"),
            }
            if messages.len() < MAX_BATCH_MESSAGES {
                next = rx.try_recv().ok();
            }
        }
        let batch = RaftBatch {
            from,
            from_client_addr: from_client_addr.clone(),
            messages,
        };
        match tokio::time::timeout(SEND_TIMEOUT, client.send(batch)).await {
            Ok(Ok(_)) => backoff = RECONNECT_BACKOFF_MIN,
            failure => {
                tracing::debug!(peer, "send failed: {failure:?}");
                owner.do_send(LinkFailed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                while rx.try_recv().is_ok() {}
            }
        }
    }
}

impl Actor for PeerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (tx, rx) = mpsc::channel(PEER_OUTBOX_CAPACITY);
        self.outbox = Some(tx);
        let link = run_link(
            rx,
            self.client.clone(),
            self.self_id,
            self.self_client_addr.clone(),
            self.peer_id,
            ctx.address(),
        );
        ctx.spawn(link.into_actor(self));
    }
}

/// Sender task → its PeerActor: a batch could not be delivered.
#[derive(Message)]
#[rtype(result = "()")]
struct LinkFailed;

impl Handler<LinkFailed> for PeerActor {
    type Result = ();
    fn handle(&mut self, _: LinkFailed, _: &mut Context<Self>) {
        self.report(PeerReport::Unreachable { peer: self.peer_id });
    }
}

impl Handler<Connect> for PeerActor {
    type Result = ();
    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) {
        self.raft = Some(msg.raft.recipient());
    }
}

impl Handler<SendToPeer> for PeerActor {
    type Result = ();
    fn handle(&mut self, msg: SendToPeer, ctx: &mut Context<Self>) {
        if msg.msg.get_msg_type() == MessageType::MsgSnapshot {
            self.send_snapshot(msg.msg, ctx);
            return;
        }
        let Some(outbox) = &self.outbox else { return };
        if outbox.try_send(msg.msg).is_err() {
            self.dropped += 1;
            if self.dropped == 1 || self.dropped.is_multiple_of(DROP_WARNING_EVERY) {
                tracing::warn!(
                    peer = self.peer_id,
                    dropped = self.dropped,
                    "peer outbox full: dropping messages"
                );
            }
            // Once per run of drops: Raft stops pipelining to the peer after the first report,
            // and a report per dropped message would only flood the RaftActor's mailbox.
            if self.dropped == 1 {
                self.report(PeerReport::Unreachable { peer: self.peer_id });
            }
        } else {
            self.dropped = 0;
        }
    }
}
