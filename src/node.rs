//! Starting and stopping one node.
//!
//! [`Node::start`] must run inside an actix `System` (tonic's servers run on the same tokio
//! runtime). It:
//! 1. claims the data dir (a lock file, and an identity file naming the node and cluster,
//!    written durably: temporary file, fsync, rename, fsync of the directory);
//! 2. binds both listeners, so a taken port is reported at once, before any slow recovery;
//! 3. opens the WAL, the snapshot file and the state machine, and brings them back in step
//!    ([`crate::recovery`]);
//! 4. starts the StorageActor (sync, one thread), the ClientApiActor and one PeerActor per peer,
//!    then the RaftActor on its own arbiter, and connects them ([`crate::actors::wiring`]);
//! 5. serves gRPC on the bound listeners.
//!
//! [`Node::shutdown`] is designed so that stopping a leader costs its clients nothing:
//! 1. stop accepting client requests (those in flight go on), and end every watch stream
//!    (clients resume on another member);
//! 2. if this node leads, hand leadership to the most up-to-date follower — raft-rs sends it
//!    the rest of the log first, so every write pending here is in the new leader's log;
//! 3. wait (at most [`DRAIN_TIMEOUT`]) for the requests in flight: pending writes complete as
//!    the new leader's commits reach this node, pending reads fail over with a leader hint;
//! 4. only then stop the peer server (steps 2 and 3 need it), the Raft thread, and sync the
//!    state machine.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::prelude::*;
use fs2::FileExt;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::actors::messages::{EndWatchStreams, FlushStorage, GetRaftStatus, TransferLeadership};
use crate::actors::wiring::Settings;
use crate::actors::{
    Actors, ClientApiActor, ClientLimits, RaftActor, StorageActor, WatchHubActor, Wiring,
};
use crate::config::NodeConfig;
use crate::consensus::LogOptions;
use crate::durable::{sync_dir, write_durably};
use crate::error::{Error, Result};
use crate::grpc::etcd::{
    self, EtcdCluster, EtcdFront, EtcdKv, EtcdLease, EtcdMaintenance, EtcdWatch,
};
use crate::grpc::{KvService, RaftService};
use crate::proto::kv::kv_server::KvServer;
use crate::proto::raftpb::raft_transport_server::RaftTransportServer;
use crate::recovery::recover;
use etcd_api::etcdserverpb::cluster_server::ClusterServer;
use etcd_api::etcdserverpb::kv_server::KvServer as EtcdKvServer;
use etcd_api::etcdserverpb::lease_server::LeaseServer;
use etcd_api::etcdserverpb::maintenance_server::MaintenanceServer;
use etcd_api::etcdserverpb::watch_server::WatchServer;

/// Name of the lock file in the data dir.
pub const LOCK_FILE: &str = "LOCK";
/// Name of the identity file in the data dir.
pub const IDENTITY_FILE: &str = "identity.toml";
pub use crate::recovery::{DB_DIR, WAL_DIR};

/// What a data dir records about its owner.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Identity {
    /// The node this data belongs to.
    node_id: u64,
    /// The cluster it belongs to.
    cluster_name: String,
}

/// A running node: its two servers, its actors and the data dir lock, until
/// [`Node::shutdown`] stops them in order.
pub struct Node {
    config: NodeConfig,
    /// Where the client API really listens (port 0 in the config becomes a real port).
    client_addr: SocketAddr,
    /// Where the peer service really listens.
    peer_addr: SocketAddr,
    /// Tells the client server to stop accepting.
    client_stop: watch::Sender<bool>,
    /// Tells the peer server to stop accepting.
    peer_stop: watch::Sender<bool>,
    /// Given [`DRAIN_TIMEOUT`] at shutdown for the requests in flight, then aborted.
    client_server: JoinHandle<()>,
    /// Stopped only after the leadership handover and the drain, which both need it.
    peer_server: JoinHandle<()>,
    /// The state machine actor, flushed on shutdown.
    storage: Addr<StorageActor>,
    /// Told at shutdown to end every watch stream (they would keep the client server open).
    watch_hub: Addr<WatchHubActor>,
    /// The WatchHubActor's thread, stopped with the client server.
    watch_arbiter: Arbiter,
    /// The RaftActor's thread, stopped after the peer server.
    raft_arbiter: Arbiter,
    /// Asked at shutdown to hand leadership over, then polled until it has.
    raft: Addr<RaftActor>,
    client_api: Addr<ClientApiActor>,
    /// Held for the node's lifetime: the data dir lock.
    _lock: fs::File,
}

fn data_dir_err(path: &Path, message: impl Into<String>) -> Error {
    Error::DataDir {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Locks `dir` and checks (or writes) its identity.
fn claim_data_dir(dir: &Path, config: &NodeConfig) -> Result<fs::File> {
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(|e| data_dir_err(dir, format!("cannot create it: {e}")))?;
        // The new directory's name must survive a power cut too.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(|e| data_dir_err(dir, format!("is not writable: {e}")))?;
    lock.try_lock_exclusive()
        .map_err(|_| data_dir_err(dir, "is in use by another distributed_kv process"))?;
    let id_path = dir.join(IDENTITY_FILE);
    let mine = Identity {
        node_id: config.node_id,
        cluster_name: config.cluster_name.clone(),
    };
    match fs::read_to_string(&id_path) {
        Ok(text) => {
            let theirs: Identity = toml::from_str(&text).map_err(|e| {
                data_dir_err(
                    dir,
                    format!("{IDENTITY_FILE} is unreadable: {}", e.message()),
                )
            })?;
            if theirs != mine {
                return Err(data_dir_err(
                    dir,
                    format!(
                        "belongs to node {} of cluster `{}`, not node {} of cluster `{}`",
                        theirs.node_id, theirs.cluster_name, mine.node_id, mine.cluster_name
                    ),
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = toml::to_string(&mine).map_err(|e| Error::Disk(e.to_string()))?;
            write_durably(&id_path, text.as_bytes())
                .map_err(|e| data_dir_err(dir, format!("is not writable: {e}")))?;
        }
        Err(e) => {
            return Err(data_dir_err(
                dir,
                format!("cannot read {IDENTITY_FILE}: {e}"),
            ))
        }
    }
    Ok(lock)
}

async fn bind(addr: &str, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::config("<config>", what, format!("cannot listen on {addr}: {e}")))
}

impl Node {
    /// Starts a node. Must be called from within an actix `System`.
    pub async fn start(config: NodeConfig) -> Result<Node> {
        let dir: PathBuf = config.data_dir.clone();
        let lock = claim_data_dir(&dir, &config)?;
        let members = config
            .members()
            .map_err(|m| Error::config("<config>", "initial_cluster", m))?;
        let client_listener = bind(&config.client_addr, "client_addr").await?;
        let peer_listener = bind(&config.peer_addr, "peer_addr").await?;
        let client_addr = client_listener.local_addr()?;
        let peer_addr = peer_listener.local_addr()?;
        // What others are told: leader hints and Status carry these, so a node listening on
        // 0.0.0.0 (or on port 0) still names an address that can be connected to.
        let advertised_client = config.advertised_client_addr_bound(client_addr);
        let configured_peer_port = config.peer_addr.parse::<SocketAddr>().map(|a| a.port());
        let mut members = members;
        if config.advertise_peer_addr.is_empty() && configured_peer_port.ok() == Some(0) {
            members.insert(config.node_id, peer_addr.to_string());
        }

        let voters: Vec<u64> = members.keys().copied().collect();
        if config.testing.no_fsync {
            tracing::warn!(
                "unsafe_no_fsync is on: a power cut can lose acknowledged writes; for testing the power-cut test only"
            );
        }
        let options = LogOptions {
            fsync: !config.testing.no_fsync,
            ..LogOptions::default()
        };
        let recovered = recover(&dir, &voters, options)
            .map_err(|e| data_dir_err(&dir, format!("cannot open its storage: {e}")))?;
        let (applied, keys) = (recovered.sm.applied().index, recovered.sm.key_count());
        let settings = Settings {
            id: config.node_id,
            members,
            client_addr: advertised_client.clone(),
            tick_interval: config.tick_interval(),
            election_ticks: config.election_ticks,
            heartbeat_ticks: config.heartbeat_ticks,
            log_retain_entries: config.log_retain_entries,
            snapshot_threshold: config.snapshot_threshold,
            cluster_id: etcd::cluster_id(&config.cluster_name),
            watch_progress_interval: config.watch_progress_notify_interval(),
            unsafe_watch_gaps: config.testing.watch_gaps,
            lease_checkpoint_interval: config.lease_checkpoint_interval(),
            unsafe_lease_expiry: config.testing.lease_expiry,
            limits: ClientLimits {
                max_key_bytes: config.max_key_bytes,
                max_value_bytes: config.max_value_bytes,
                max_pending: config.max_pending_requests,
                max_list_limit: config.max_list_limit as usize,
                max_list_bytes: config.max_list_bytes,
                unsafe_stale_reads: config.testing.stale_reads,
            },
        };
        let advertised_peer = settings.members.get(&config.node_id).cloned();
        let wiring = Wiring::new(recovered, settings)?;
        tracing::info!(
            node = config.node_id,
            %client_addr,
            %peer_addr,
            %advertised_client,
            advertised_peer = advertised_peer.as_deref().unwrap_or(""),
            applied,
            keys,
            "node starting"
        );
        if config.testing.watch_gaps {
            tracing::warn!(
                "unsafe_watch_gaps is on: watchers silently miss events; for testing the watch checker only"
            );
        }
        if config.testing.lease_expiry {
            tracing::warn!(
                "unsafe_lease_expiry is on: keep-alives do not renew leases; for testing the lock checker only"
            );
        }
        if config.testing.stale_reads {
            tracing::warn!(
                "unsafe_stale_reads is on: reads may be stale; for testing the checker only"
            );
        }
        let Actors {
            storage,
            watch_hub,
            watch_arbiter,
            client_api,
            lease,
            raft,
            raft_arbiter,
            ..
        } = wiring.start()?;

        // gRPC.
        let (client_stop, client_stop_rx) = watch::channel(false);
        let (peer_stop, peer_stop_rx) = watch::channel(false);
        let kv = KvService::new(client_api.clone(), config.node_id, config.request_timeout());
        let etcd = EtcdFront::new(
            client_api.clone(),
            etcd::cluster_id(&config.cluster_name),
            config.node_id,
            config.request_timeout(),
        );
        // Beyond etcd's own limits, so that the etcd services refuse oversized requests with
        // etcd's answers.
        let etcd_max_msg = etcd::MAX_DECODED_BYTES;
        // Reflection in both versions: newer tools ask v1, older grpcurl builds v1alpha.
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(kv_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(etcd_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| Error::Transport(e.to_string()))?;
        let reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(kv_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(etcd_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| Error::Transport(e.to_string()))?;
        // Room for any request up to the hard value ceiling, so an oversized one reaches
        // validation and gets an error that names the configured limit, not a transport error.
        let max_msg = crate::config::MAX_VALUE_BYTES_LIMIT
            + config.max_key_bytes
            + GRPC_MESSAGE_OVERHEAD_BYTES;
        let client_server = tonic::transport::Server::builder()
            .add_service(
                KvServer::new(kv)
                    .max_decoding_message_size(max_msg)
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(
                EtcdKvServer::new(EtcdKv::new(etcd.clone()))
                    .max_decoding_message_size(etcd_max_msg)
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(
                MaintenanceServer::new(EtcdMaintenance::new(etcd.clone()))
                    .max_decoding_message_size(etcd_max_msg),
            )
            .add_service(
                LeaseServer::new(EtcdLease::new(
                    etcd.clone(),
                    lease,
                    storage.clone().recipient(),
                    storage.clone().recipient(),
                    etcd::lease::min_lease_ttl(
                        config.tick_interval() * config.election_ticks as u32,
                    ),
                ))
                .max_decoding_message_size(etcd_max_msg),
            )
            .add_service(
                ClusterServer::new(EtcdCluster::new(etcd)).max_decoding_message_size(etcd_max_msg),
            )
            .add_service(
                WatchServer::new(EtcdWatch::new(
                    watch_hub.clone(),
                    client_api.clone(),
                    config.tick_interval() * config.election_ticks as u32,
                ))
                .max_decoding_message_size(etcd_max_msg)
                .max_encoding_message_size(usize::MAX),
            )
            .add_service(reflection)
            .add_service(reflection_alpha)
            .serve_with_incoming_shutdown(nodelay(client_listener), wait_stop(client_stop_rx));
        let peer_server = tonic::transport::Server::builder()
            .add_service(
                RaftTransportServer::new(RaftService::new(config.node_id, raft.clone()))
                    .max_decoding_message_size(crate::grpc::raft_service::MAX_PEER_RPC_BYTES),
            )
            .serve_with_incoming_shutdown(nodelay(peer_listener), wait_stop(peer_stop_rx));
        let client_server = tokio::spawn(async move {
            if let Err(e) = client_server.await {
                tracing::error!("client server failed: {e}");
            }
        });
        let peer_server = tokio::spawn(async move {
            if let Err(e) = peer_server.await {
                tracing::error!("peer server failed: {e}");
            }
        });
        Ok(Node {
            config,
            client_addr,
            peer_addr,
            client_stop,
            peer_stop,
            client_server,
            peer_server,
            storage,
            watch_hub,
            watch_arbiter,
            raft_arbiter,
            raft,
            client_api,
            _lock: lock,
        })
    }

    /// Where the client API listens: the bound address, so a port 0 in the config comes back
    /// as the port the system picked.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// Where the peer service listens: the bound address, like [`Node::client_addr`].
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The RaftActor (for tests).
    pub fn raft(&self) -> &Addr<RaftActor> {
        &self.raft
    }

    /// The StorageActor (for tests).
    pub fn storage(&self) -> &Addr<StorageActor> {
        &self.storage
    }

    /// The ClientApiActor (for tests).
    pub fn client_api(&self) -> &Addr<ClientApiActor> {
        &self.client_api
    }

    /// Stops the node in the order the module docs give.
    pub async fn shutdown(self) -> Result<()> {
        let node = self.config.node_id;
        // 1. No new client requests, and no more watch streams: each ends with "server
        //    stopped", and its client goes on with another member.
        let _ = self.client_stop.send(true);
        let _ = self.watch_hub.send(EndWatchStreams).await;
        // 2. Hand leadership over, and wait until it has gone (or give up).
        if let Ok(Some(to)) = self.raft.send(TransferLeadership).await {
            let deadline = tokio::time::Instant::now() + TRANSFER_TIMEOUT;
            loop {
                match self.raft.send(GetRaftStatus).await {
                    Ok(s)
                        if s.raft.role == raft::StateRole::Leader
                            && tokio::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(SHUTDOWN_POLL).await;
                    }
                    Ok(s) if s.raft.role == raft::StateRole::Leader => {
                        tracing::warn!(node, to, "leadership was not taken over in time");
                        break;
                    }
                    _ => {
                        tracing::info!(node, to, "leadership handed over");
                        break;
                    }
                }
            }
        }
        // 3. Requests in flight finish, or are cut off after DRAIN_TIMEOUT.
        let mut client_server = self.client_server;
        if tokio::time::timeout(DRAIN_TIMEOUT, &mut client_server)
            .await
            .is_err()
        {
            tracing::warn!(
                node,
                "requests still in flight after {DRAIN_TIMEOUT:?}; cutting them off"
            );
            client_server.abort();
        }
        self.watch_arbiter.stop();
        // 4. Peers, Raft, storage.
        let _ = self.peer_stop.send(true);
        let _ = self.peer_server.await;
        self.raft_arbiter.stop();
        let synced = self.storage.send(FlushStorage).await?;
        tracing::info!(node, "node stopped");
        synced
    }
}

/// How long a stopping leader waits for a follower to take leadership over.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_millis(800);
/// How long a stopping node waits for the client requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_millis(800);
/// How often a stopping leader checks whether leadership has gone.
const SHUTDOWN_POLL: Duration = Duration::from_millis(10);

/// Room for a request's framing beyond its key and value, in bytes.
pub const GRPC_MESSAGE_OVERHEAD_BYTES: usize = 64 * 1024;

async fn wait_stop(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Accepted connections with Nagle's algorithm off. tonic sets `TCP_NODELAY` only on sockets it
/// binds itself; without it, small responses wait for the peer's delayed ACK (about 40 ms).
fn nodelay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY: {e}");
            }
        }
        conn
    })
}
