//! `PeerActor`: the link to one other node.
//!
//! Raft messages for the peer go into one of two bounded outboxes, each drained by its own
//! sender task over its own connection:
//! - the **bulk lane** carries appends (entries travel here, up to 1 MiB per message);
//! - the **control lane** carries everything else — heartbeats, votes, their responses, append
//!   acknowledgements, leadership transfer, read index — which is small and must not wait: a
//!   heartbeat stuck behind megabytes of entries on a slow link lets check-quorum depose a
//!   healthy leader, and a vote stuck there delays an election.
//!
//! A sender task takes what is queued, sends it as one `RaftTransport.Send` batch of at most
//! [`MAX_BATCH_BYTES`] (a message larger than that goes alone) and [`MAX_BATCH_MESSAGES`],
//! waits for the answer, and repeats; so one RPC is in flight per lane and batches grow by
//! themselves under load. A batch's deadline grows with its size, at [`MIN_LINK_BYTES_PER_SEC`].
//!
//! A message from a term older than the newest this node has sent to the peer is dropped when
//! it reaches the front of its lane: after a leadership change, megabytes of the old term's
//! appends would otherwise cross a slow link ahead of the new term's first message, though the
//! peer would throw them away.
//!
//! Overflow policy: when an outbox is full the message is dropped, and the RaftActor is told
//! the peer is unreachable. Dropping is safe: Raft resends whatever was not acknowledged.
//! When a send fails, the task reports the peer unreachable, drops what is queued (it would be
//! stale by the time the peer is back), and retries with exponential backoff.
//!
//! Snapshots go through neither outbox: each is streamed in chunks of [`SNAPSHOT_CHUNK_BYTES`]
//! by its own task, over the bulk connection, and the outcome is reported to the RaftActor. A
//! transfer fails only when it stops making progress for [`SNAPSHOT_STALL_TIMEOUT`], however
//! long the whole takes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
/// Messages queued in each lane of one peer before new ones are dropped.
pub const PEER_OUTBOX_CAPACITY: usize = 4_096;
/// Most messages sent in one batch.
pub const MAX_BATCH_MESSAGES: usize = 512;
/// Most bytes of messages in one batch, unless a single message is larger (it then goes alone).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Slowest link a batch's deadline allows for, in bytes per second (1 MiB/s, 8 Mbit/s): a
/// batch may take [`SEND_TIMEOUT`] plus its size at this speed.
pub const MIN_LINK_BYTES_PER_SEC: u64 = 1024 * 1024;
/// Size of one snapshot chunk in bytes; far below gRPC's 4 MiB message limit.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// First retry delay after a failed send.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest retry delay: the delay doubles after each failed send up to this, and falls back to
/// [`RECONNECT_BACKOFF_MIN`] after a success.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long to wait for a connection to the peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one batch may take before it counts as failed, beyond the time its bytes need.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// A snapshot transfer that has not handed a chunk to the connection for this long has failed.
pub const SNAPSHOT_STALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a snapshot transfer's progress is checked.
const SNAPSHOT_PROGRESS_CHECK: Duration = Duration::from_secs(1);

/// Sorts the messages for one peer into its two lanes and streams its snapshots (see the
/// module docs).
pub struct PeerActor {
    /// Sent as the `from` of every batch and snapshot.
    self_id: u64,
    /// Our client address, sent along for leader hints.
    self_client_addr: String,
    peer_id: u64,
    /// The peer's client for appends and snapshots (connects lazily, reconnects by itself).
    bulk_client: RaftTransportClient<Channel>,
    /// The peer's client for everything else, on a connection of its own.
    control_client: RaftTransportClient<Channel>,
    /// Bounded outbox of the bulk lane; its sender task holds the other end.
    bulk: Option<mpsc::Sender<RaftMessage>>,
    /// Bounded outbox of the control lane. Both outboxes are `None` until the actor starts.
    control: Option<mpsc::Sender<RaftMessage>>,
    /// Where delivery failures and snapshot outcomes go; set by [`Connect`], and until then
    /// nothing is reported.
    raft: Option<Recipient<PeerReport>>,
    /// Messages dropped in a row because an outbox was full; the next one queued resets it.
    /// The first of a run is reported as unreachable, every [`DROP_WARNING_EVERY`]th logged.
    dropped: u64,
    /// The newest term of a message handed to this link; the lanes drop older ones.
    term: Arc<AtomicU64>,
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
        // Each `connect_lazy` is a connection of its own, so control messages never queue
        // behind bulk bytes in one TCP stream.
        let client = |endpoint: &Endpoint| {
            RaftTransportClient::new(endpoint.connect_lazy())
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX)
        };
        Ok(PeerActor {
            self_id,
            self_client_addr,
            peer_id,
            bulk_client: client(&endpoint),
            control_client: client(&endpoint),
            bulk: None,
            control: None,
            raft: None,
            dropped: 0,
            term: Arc::new(AtomicU64::new(0)),
        })
    }

    fn report(&self, report: PeerReport) {
        if let Some(raft) = &self.raft {
            raft.do_send(report);
        }
    }

    fn send_snapshot(&self, mut msg: RaftMessage, ctx: &mut Context<Self>) {
        let mut client = self.bulk_client.clone();
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
            // Each chunk the connection takes is progress; the transfer fails only when there
            // has been none for SNAPSHOT_STALL_TIMEOUT.
            let started = std::time::Instant::now();
            let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let seen = progress.clone();
            let stream = tokio_stream::StreamExt::map(tokio_stream::iter(chunks), move |c| {
                let ms = started.elapsed().as_millis() as u64;
                seen.store(ms, std::sync::atomic::Ordering::Relaxed);
                c
            });
            let send = client.send_snapshot(tonic::Request::new(stream));
            tokio::pin!(send);
            loop {
                tokio::select! {
                    res = &mut send => break res.map(|_| ()).map_err(|e| e.to_string()),
                    _ = tokio::time::sleep(SNAPSHOT_PROGRESS_CHECK) => {
                        let last = progress.load(std::sync::atomic::Ordering::Relaxed);
                        let idle = started.elapsed().saturating_sub(Duration::from_millis(last));
                        if idle > SNAPSHOT_STALL_TIMEOUT {
                            break Err(format!("no progress for {idle:?}"));
                        }
                    }
                }
            }
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, _| {
            let ok = res.is_ok();
            if ok {
                tracing::info!(peer, bytes = size, "snapshot sent");
            } else {
                tracing::warn!(peer, "snapshot transfer failed: {res:?}");
            }
            act.report(PeerReport::SnapshotSent { peer, ok });
        }));
    }
}

/// Whether `m` belongs to a term older than the newest sent to this peer. Messages without a
/// term (forwarded read index requests) are never stale.
fn stale(m: &RaftMessage, newest: &AtomicU64) -> bool {
    let pre_vote = matches!(
        m.get_msg_type(),
        MessageType::MsgRequestPreVote | MessageType::MsgRequestPreVoteResponse
    );
    !pre_vote && m.term != 0 && m.term < newest.load(Ordering::Relaxed)
}

/// Whether a message takes the bulk lane: appends do, all else takes the control lane
/// (snapshots take neither).
fn is_bulk(msg: &RaftMessage) -> bool {
    msg.get_msg_type() == MessageType::MsgAppend
}

/// The sender loop of one lane: batch, send, back off on failure.
async fn run_link(
    mut rx: mpsc::Receiver<RaftMessage>,
    term: Arc<AtomicU64>,
    mut client: RaftTransportClient<Channel>,
    from: u64,
    from_client_addr: String,
    peer: u64,
    owner: Addr<PeerActor>,
) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    // A message that did not fit the last batch; it opens the next one.
    let mut carried: Option<Vec<u8>> = None;
    loop {
        let first = match carried.take() {
            Some(b) => b,
            None => match rx.recv().await {
                Some(m) if stale(&m, &term) => continue,
                Some(m) => match m.write_to_bytes() {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!("cannot encode raft message: {e}");
                        continue;
                    }
                },
                None => return,
            },
        };
        let mut bytes = first.len();
        let mut messages = vec![first];
        while messages.len() < MAX_BATCH_MESSAGES {
            let Ok(m) = rx.try_recv() else { break };
            if stale(&m, &term) {
                continue;
            }
            let b = match m.write_to_bytes() {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("cannot encode raft message: {e}");
                    continue;
                }
            };
            if bytes + b.len() > MAX_BATCH_BYTES {
                carried = Some(b);
                break;
            }
            bytes += b.len();
            messages.push(b);
        }
        let batch = RaftBatch {
            from,
            from_client_addr: from_client_addr.clone(),
            messages,
        };
        let deadline =
            SEND_TIMEOUT + Duration::from_millis(bytes as u64 * 1000 / MIN_LINK_BYTES_PER_SEC);
        match tokio::time::timeout(deadline, client.send(batch)).await {
            Ok(Ok(_)) => backoff = RECONNECT_BACKOFF_MIN,
            failure => {
                tracing::debug!(peer, "send failed: {failure:?}");
                owner.do_send(LinkFailed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                carried = None;
                while rx.try_recv().is_ok() {}
            }
        }
    }
}

impl Actor for PeerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        for bulk in [true, false] {
            let (tx, rx) = mpsc::channel(PEER_OUTBOX_CAPACITY);
            let client = if bulk {
                self.bulk = Some(tx);
                self.bulk_client.clone()
            } else {
                self.control = Some(tx);
                self.control_client.clone()
            };
            let link = run_link(
                rx,
                self.term.clone(),
                client,
                self.self_id,
                self.self_client_addr.clone(),
                self.peer_id,
                ctx.address(),
            );
            ctx.spawn(link.into_actor(self));
        }
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
        // A pre-vote names the term it would campaign for without this node being in it.
        if !matches!(
            msg.msg.get_msg_type(),
            MessageType::MsgRequestPreVote | MessageType::MsgRequestPreVoteResponse
        ) {
            self.term.fetch_max(msg.msg.term, Ordering::Relaxed);
        }
        if msg.msg.get_msg_type() == MessageType::MsgSnapshot {
            self.send_snapshot(msg.msg, ctx);
            return;
        }
        let lane = if is_bulk(&msg.msg) {
            &self.bulk
        } else {
            &self.control
        };
        let Some(outbox) = lane else { return };
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
