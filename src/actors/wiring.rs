//! Wiring one node's actors together, from its recovered storage.
//!
//! [`Wiring::start`] is the only place the actors of a node are started and connected:
//! `Node::start` uses it, and so do the actor tests (`tests/actors/`). Every actor sends to one
//! that sends back to it — the StorageActor reports to the ClientApiActor, which reads from it;
//! the RaftActor sends to all the others, which all send to it — so they cannot simply be
//! started one after another, each given the addresses of those before it. The order, and why:
//!
//! 1. **The ClientApiActor's context** is made first, but not started: that gives it an address,
//!    which the StorageActor needs to report applied entries (`Applied`). Messages sent to it
//!    wait in its mailbox until step 3.
//! 2. **The StorageActor** starts on a `SyncArbiter` of exactly one thread ([`start_storage`]):
//!    its sled calls block, so they stay off the async threads, and one thread keeps the order
//!    in which committed entries are applied. The **WatchHubActor** starts beside it, on an
//!    arbiter of its own, and the StorageActor is told where applied events go.
//! 3. **The ClientApiActor** starts on that context, reading from the StorageActor, and the
//!    **LeaseActor** beside it, proposing revokes through it; the StorageActor is told where
//!    lease changes go (and sends the lease table at once), and the LeaseActor joins the
//!    ClientApiActor in hearing role changes.
//! 4. **One PeerActor per other member**, before the RaftActor, which is given their addresses
//!    when it is made.
//! 5. **The RaftActor** starts last, on its own arbiter (its Ready loop blocks on the WAL's
//!    fdatasync), because it needs all the others: committed entries go to the StorageActor,
//!    messages to the PeerActors, role changes to the ClientApiActor. A cluster of one
//!    campaigns as soon as it starts.
//! 6. **`Connect`** then gives the others the RaftActor's address, each before it could need it:
//!    the StorageActor and the PeerActors send to the RaftActor only in answer to it
//!    (`ApplyProgress` and `SnapshotCreated` after an `Apply`, `PeerReport` after a
//!    `SendToPeer`), so theirs is sent on the RaftActor's thread just before it starts, ahead of
//!    anything it sends them; the ClientApiActor's is sent before `start` returns, so ahead of
//!    any client request (a node serves gRPC only after that).
//!
//! Tests put a test double in the place of one actor through the `with_*` methods: what the
//! RaftActor would send to the StorageActor, the PeerActors or the ClientApiActor, or what the
//! ClientApiActor would ask the StorageActor, goes to the given recipient instead. The rest of
//! the wiring is the node's own.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::messages::{
    Apply, Connect, ConnectLeases, ConnectWatch, GetStorageStatus, Read, RoleChanged, SendToPeer,
};
use crate::actors::watch_hub::{start_hub, HubStorage, WatchHubActor};
use crate::actors::{ClientApiActor, ClientLimits, LeaseActor, PeerActor, RaftActor, StorageActor};
use crate::consensus::{RaftNode, RaftParams, SnapshotStore};
use crate::error::Result;
use crate::recovery::Recovered;
use crate::state_machine::StateMachine;

/// What a node's actors are told about the node.
#[derive(Debug, Clone)]
pub struct Settings {
    pub id: u64,
    /// Peer addresses of every voter, this node's included; one PeerActor starts per other one.
    pub members: BTreeMap<u64, String>,
    /// The client address this node gives out (leader hints, status).
    pub client_addr: String,
    /// Wall-clock length of one Raft tick, the unit of the two timeouts below.
    pub tick_interval: Duration,
    /// Election timeout in ticks.
    pub election_ticks: usize,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: usize,
    /// Entries kept in the log behind a snapshot.
    pub log_retain_entries: u64,
    /// Applied entries between two snapshots of the state machine.
    pub snapshot_threshold: u64,
    /// What the ClientApiActor accepts.
    pub limits: ClientLimits,
    /// The cluster id in etcd's answer headers.
    pub cluster_id: u64,
    /// How often watchers that asked for progress notices get one.
    pub watch_progress_interval: Duration,
    /// The deliberate fault `unsafe_watch_gaps`, for the watch checker's teeth.
    pub unsafe_watch_gaps: bool,
    /// How often the leader checkpoints the remaining TTL of long leases.
    pub lease_checkpoint_interval: Duration,
    /// The deliberate fault `unsafe_lease_expiry`, for the lock checker's teeth.
    pub unsafe_lease_expiry: bool,
}

/// The running actors of a node.
pub struct Actors {
    pub storage: Addr<StorageActor>,
    pub watch_hub: Addr<WatchHubActor>,
    /// The WatchHubActor's thread; `Node::shutdown` stops it.
    pub watch_arbiter: Arbiter,
    pub client_api: Addr<ClientApiActor>,
    pub lease: Addr<LeaseActor>,
    pub raft: Addr<RaftActor>,
    /// The RaftActor's thread; `Node::shutdown` stops it last.
    pub raft_arbiter: Arbiter,
    /// The PeerActors, by peer id (none where a test double takes their place).
    pub peers: BTreeMap<u64, Addr<PeerActor>>,
}

/// A node's actors, made from its recovered storage and not yet started.
pub struct Wiring {
    settings: Settings,
    /// The Raft logic over the recovered log.
    raft_node: RaftNode,
    /// The recovered state machine.
    sm: StateMachine,
    /// The snapshot file the StorageActor writes.
    snapshots: SnapshotStore,
    /// The ClientApiActor's context, made first so that it has an address (step 1).
    api_ctx: Context<ClientApiActor>,
    /// A test double for the StorageActor, as the RaftActor sees it.
    apply_to: Option<Recipient<Apply>>,
    /// A test double for the StorageActor, as the ClientApiActor sees it.
    reads_from: Option<(Recipient<Read>, Recipient<GetStorageStatus>)>,
    /// Where the RaftActor reports role changes besides the LeaseActor: the ClientApiActor
    /// unless a test says otherwise.
    roles_to: Option<Recipient<RoleChanged>>,
    /// A test double for every PeerActor.
    peers_to: Option<Recipient<SendToPeer>>,
}

impl Wiring {
    /// Prepares the actors over `recovered`. The RaftNode starts at the state machine's applied
    /// index: committed entries after it are applied again through the Ready loop.
    pub fn new(recovered: Recovered, settings: Settings) -> Result<Wiring> {
        let params = RaftParams {
            id: settings.id,
            election_ticks: settings.election_ticks,
            heartbeat_ticks: settings.heartbeat_ticks,
            applied: recovered.sm.applied().index,
            log_retain_entries: settings.log_retain_entries,
        };
        let raft_node = RaftNode::new(&params, recovered.log)?;
        let api_ctx = Context::<ClientApiActor>::new();
        let roles_to = Some(api_ctx.address().recipient());
        Ok(Wiring {
            settings,
            raft_node,
            sm: recovered.sm,
            snapshots: recovered.snapshots,
            api_ctx,
            apply_to: None,
            reads_from: None,
            roles_to,
            peers_to: None,
        })
    }

    /// The ClientApiActor's address, before it starts (what is sent to it waits until then).
    pub fn client_api(&self) -> Addr<ClientApiActor> {
        self.api_ctx.address()
    }

    /// Test double: the RaftActor sends committed entries to `to`, not to the StorageActor
    /// (which still starts, and is connected, but has nothing to apply).
    pub fn with_apply_to(mut self, to: Recipient<Apply>) -> Self {
        self.apply_to = Some(to);
        self
    }

    /// Test double: the ClientApiActor reads from `read` and asks `status` about the state
    /// machine, not the StorageActor; it then answers no `ClientHash`.
    pub fn with_reads_from(
        mut self,
        read: Recipient<Read>,
        status: Recipient<GetStorageStatus>,
    ) -> Self {
        self.reads_from = Some((read, status));
        self
    }

    /// Test double: the RaftActor reports role changes to `to` (nowhere if `None`), not to the
    /// ClientApiActor.
    pub fn with_roles_to(mut self, to: Option<Recipient<RoleChanged>>) -> Self {
        self.roles_to = to;
        self
    }

    /// Test double: the RaftActor hands the messages for every peer to `to`; no PeerActor
    /// starts.
    pub fn with_peers_to(mut self, to: Recipient<SendToPeer>) -> Self {
        self.peers_to = Some(to);
        self
    }

    /// Starts and connects the actors, in the order the module docs give. Must be called from
    /// within an actix `System`.
    pub fn start(self) -> Result<Actors> {
        let Wiring {
            settings: s,
            raft_node,
            sm,
            snapshots,
            api_ctx,
            apply_to,
            reads_from,
            roles_to,
            peers_to,
        } = self;
        // 2. The StorageActor, reporting to the ClientApiActor's address, and the
        //    WatchHubActor it feeds, connected before anything can be applied (the RaftActor,
        //    the only sender of entries, starts in step 5).
        let applied_to = api_ctx.address().recipient();
        let revision = sm.revision();
        let mut storage_actor =
            StorageActor::new(sm, snapshots, s.snapshot_threshold, Some(applied_to));
        if s.unsafe_watch_gaps {
            storage_actor = storage_actor.with_watch_gaps();
        }
        let storage = start_storage(storage_actor);
        let header = etcd_api::etcdserverpb::ResponseHeader {
            cluster_id: s.cluster_id,
            member_id: s.id,
            ..Default::default()
        };
        let hub_storage = HubStorage {
            history: storage.clone().recipient(),
            revision: storage.clone().recipient(),
            prev_kv: storage.clone().recipient(),
        };
        let (watch_hub, watch_arbiter) = start_hub(WatchHubActor::new(
            header,
            revision,
            hub_storage,
            s.watch_progress_interval,
        ));
        storage.do_send(ConnectWatch {
            events_to: watch_hub.clone().recipient(),
        });
        // 3. The ClientApiActor.
        let api = match reads_from {
            Some((read, status)) => ClientApiActor::new(s.id, s.limits, read, status),
            None => ClientApiActor::new(
                s.id,
                s.limits,
                storage.clone().recipient(),
                storage.clone().recipient(),
            )
            .with_hash(storage.clone().recipient()),
        };
        let client_api = api_ctx.run(api);
        //    The LeaseActor beside it, proposing through it, fed by the StorageActor.
        let election_timeout = s.tick_interval * s.election_ticks as u32;
        let lease = LeaseActor::new(
            client_api.clone(),
            election_timeout,
            s.lease_checkpoint_interval,
        )
        .with_renewals_ignored(s.unsafe_lease_expiry)
        .start();
        storage.do_send(ConnectLeases {
            changes_to: lease.clone().recipient(),
            loaded_to: lease.clone().recipient(),
        });
        let roles_to: Vec<Recipient<RoleChanged>> = roles_to
            .into_iter()
            .chain([lease.clone().recipient()])
            .collect();
        // 4. The PeerActors.
        let mut peers = BTreeMap::new();
        let mut outboxes = HashMap::new();
        for (&id, addr) in s.members.iter().filter(|(id, _)| **id != s.id) {
            let outbox = match &peers_to {
                Some(to) => to.clone(),
                None => {
                    let peer = PeerActor::new(s.id, s.client_addr.clone(), id, addr)?.start();
                    peers.insert(id, peer.clone());
                    peer.recipient()
                }
            };
            outboxes.insert(id, outbox);
        }
        // 5. The RaftActor, on its own thread.
        let raft_arbiter = Arbiter::new();
        let apply_to = apply_to.unwrap_or_else(|| storage.clone().recipient());
        let storage_to_connect = storage.clone();
        let peers_to_connect: Vec<_> = peers.values().cloned().collect();
        let raft = RaftActor::start_in_arbiter(&raft_arbiter.handle(), move |ctx| {
            // 6. `Connect` for the actors that answer the RaftActor: here, before it starts.
            let raft = ctx.address();
            storage_to_connect.do_send(Connect { raft: raft.clone() });
            for peer in peers_to_connect {
                peer.do_send(Connect { raft: raft.clone() });
            }
            RaftActor::new(
                raft_node,
                s.tick_interval,
                s.client_addr,
                s.members,
                apply_to,
                outboxes,
                roles_to,
            )
        });
        // 6. `Connect` for the ClientApiActor and the LeaseActor, ahead of any client request.
        client_api.do_send(Connect { raft: raft.clone() });
        lease.do_send(Connect { raft: raft.clone() });
        Ok(Actors {
            storage,
            watch_hub,
            watch_arbiter,
            client_api,
            lease,
            raft,
            raft_arbiter,
            peers,
        })
    }
}

/// Starts `actor` on a `SyncArbiter` of exactly one thread: its blocking sled calls stay off
/// the async threads, and one thread keeps the order of the entries it applies.
pub fn start_storage(actor: StorageActor) -> Addr<StorageActor> {
    // The arbiter asks a factory for its actor; this one has exactly one to give.
    let actor = Mutex::new(Some(actor));
    SyncArbiter::start(1, move || {
        actor
            .lock()
            .expect("the storage actor's cell")
            .take()
            .expect("the storage actor starts once")
    })
}
