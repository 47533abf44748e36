//! The peer service (`raftpb.v1.RaftTransport`): decodes Raft messages and steps them into the
//! RaftActor. Anything malformed is refused here and never reaches raft-rs: undecodable bytes,
//! RPCs over [`MAX_PEER_RPC_BYTES`], snapshots whose data is not the state machine's format
//! (restoring it would stop the node, and the file it was saved to would stop it again at every
//! start). What a decoded message says is checked by `consensus::peer_check` in the RaftActor,
//! against the node's log.

use actix::prelude::*;
use protobuf::Message as _;
use raft::prelude::{Message as RaftMessage, MessageType};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::actors::inbox::{InboxSlot, PeerInbox};
use crate::actors::messages::StepMessage;
use crate::actors::RaftActor;
use crate::error::Reason;
use crate::proto::raftpb::raft_transport_server::RaftTransport;
use crate::proto::raftpb::*;

/// Largest snapshot accepted from a peer, in bytes.
pub const MAX_SNAPSHOT_BYTES: usize = 8 * 1024 * 1024 * 1024;
/// Largest peer RPC the server decodes, in bytes: a batch is capped at
/// [`crate::actors::peer::MAX_BATCH_BYTES`] unless one message alone is larger, and one message
/// holds at most one entry of the largest value allowed, so this leaves room for both.
pub const MAX_PEER_RPC_BYTES: usize =
    crate::config::MAX_VALUE_BYTES_LIMIT + 2 * crate::actors::peer::MAX_BATCH_BYTES;

/// Serves the peer transport for one node.
pub struct RaftService {
    /// This node's id; messages addressed to another id are dropped.
    node_id: u64,
    raft: Addr<RaftActor>,
    /// The room peer messages have in the RaftActor's mailbox, apart from client load.
    inbox: PeerInbox,
}

impl RaftService {
    pub fn new(node_id: u64, raft: Addr<RaftActor>) -> RaftService {
        RaftService {
            node_id,
            raft,
            inbox: PeerInbox::default(),
        }
    }

    /// Wraps `msg` for the RaftActor, refusing a message meant for another node.
    fn step_for_me(
        &self,
        msg: RaftMessage,
        from_client_addr: &str,
        slot: Option<InboxSlot>,
    ) -> Result<StepMessage, Status> {
        if msg.to != self.node_id {
            return Err(Reason::InvalidArgument.status(format!(
                "message for node {} reached node {}",
                msg.to, self.node_id
            )));
        }
        Ok(StepMessage {
            msg,
            from_client_addr: from_client_addr.to_string(),
            slot,
        })
    }

    fn deliver(&self, msg: RaftMessage, from_client_addr: &str) -> Result<(), Status> {
        // A full peer inbox drops the message: Raft resends what is not acknowledged. Within
        // the budget the message goes in whatever client load has done to the mailbox.
        let Some(slot) = self.inbox.take() else {
            tracing::debug!("peer inbox full, message dropped");
            return Ok(());
        };
        let step = self.step_for_me(msg, from_client_addr, Some(slot))?;
        self.raft.do_send(step);
        Ok(())
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn send(&self, request: Request<RaftBatch>) -> Result<Response<SendAck>, Status> {
        let batch = request.into_inner();
        for bytes in &batch.messages {
            let msg = RaftMessage::parse_from_bytes(bytes).map_err(|e| {
                Reason::InvalidArgument.status(format!("undecodable raft message: {e}"))
            })?;
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                return Err(Reason::InvalidArgument.status("snapshots must use SendSnapshot"));
            }
            self.deliver(msg, &batch.from_client_addr)?;
        }
        Ok(Response::new(SendAck {}))
    }

    async fn send_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotAck>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Reason::InvalidArgument.status("empty snapshot stream"))??;
        let mut msg = RaftMessage::parse_from_bytes(&first.message).map_err(|e| {
            Reason::InvalidArgument.status(format!("undecodable snapshot message: {e}"))
        })?;
        if msg.get_msg_type() != MessageType::MsgSnapshot {
            return Err(Reason::InvalidArgument.status("first chunk is not a snapshot message"));
        }
        let mut data = first.data;
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk?.data);
            if data.len() > MAX_SNAPSHOT_BYTES {
                return Err(Reason::Overloaded
                    .status(format!("snapshot exceeds {MAX_SNAPSHOT_BYTES} bytes")));
            }
        }
        crate::state_machine::check_snapshot(&data).map_err(|_| {
            Reason::InvalidArgument.status("snapshot data is not a state machine snapshot")
        })?;
        tracing::info!(from = first.from, bytes = data.len(), "snapshot received");
        msg.mut_snapshot().data = data.into();
        let step = self.step_for_me(msg, &first.from_client_addr, None)?;
        // Unlike ordinary messages, a snapshot is not dropped when the mailbox is full: the
        // leader would take it as delivered and only find out after another full transfer.
        self.raft
            .send(step)
            .await
            .map_err(|e| Reason::ShuttingDown.status(format!("raft is not running: {e}")))?;
        Ok(Response::new(SnapshotAck {}))
    }
}
