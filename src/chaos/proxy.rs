//! A fault-injecting TCP proxy for one direction of one peer link.
//!
//! Node A reaches node B's peer port through its own proxy (A→B), so the nemesis can cut,
//! restore or slow that link without root and without touching the nodes: a network partition
//! for ordinary users. A gRPC call from A to B and its answer both travel on A's connection,
//! so cutting A→B stops A's messages to B and B's answers to them; B→A has its own proxy.
//!
//! States: `Up` relays bytes; `Down` closes every open connection through the proxy and
//! closes new ones as soon as they are accepted (peers see a dead link and retry); `Delay(d)`
//! holds every chunk of bytes for `d` before relaying it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Bytes relayed per read.
const RELAY_BUFFER_BYTES: usize = 64 * 1024;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Relay.
    Up,
    /// Drop every connection.
    Down,
    /// Relay, holding each chunk this long.
    Delay(Duration),
}

/// Shared between the proxy handle and its tasks.
struct Shared {
    /// Current state.
    state: LinkState,
    /// Relay tasks of open connections, aborted when the link goes down.
    conns: Vec<JoinHandle<()>>,
}

/// One proxied link. Dropping it stops the proxy and closes its connections.
pub struct LinkProxy {
    /// Where the proxy listens.
    addr: SocketAddr,
    /// State and open connections.
    shared: Arc<Mutex<Shared>>,
    /// The accept loop.
    acceptor: JoinHandle<()>,
}

impl LinkProxy {
    /// Starts a proxy on a free loopback port that relays to `target` (host:port).
    pub async fn start(target: String) -> std::io::Result<LinkProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared {
            state: LinkState::Up,
            conns: Vec::new(),
        }));
        let s = shared.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let state = s.lock().expect("proxy lock").state;
                if state == LinkState::Down {
                    drop(inbound);
                    continue;
                }
                let (target, s2) = (target.clone(), s.clone());
                let task = tokio::spawn(async move {
                    let _ = inbound.set_nodelay(true);
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = outbound.set_nodelay(true);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::select! {
                        _ = relay(ri, wo, s2.clone()) => {}
                        _ = relay(ro, wi, s2) => {}
                    }
                });
                let mut guard = s.lock().expect("proxy lock");
                guard.conns.retain(|c| !c.is_finished());
                guard.conns.push(task);
            }
        });
        Ok(LinkProxy {
            addr,
            shared,
            acceptor,
        })
    }

    /// Where peers should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the link's state; going down closes every open connection at once.
    pub fn set(&self, state: LinkState) {
        let mut guard = self.shared.lock().expect("proxy lock");
        guard.state = state;
        if state == LinkState::Down {
            for c in guard.conns.drain(..) {
                c.abort();
            }
        }
    }

    /// The link's state.
    pub fn state(&self) -> LinkState {
        self.shared.lock().expect("proxy lock").state
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.set(LinkState::Down);
    }
}

async fn relay(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    shared: Arc<Mutex<Shared>>,
) {
    let mut buf = vec![0u8; RELAY_BUFFER_BYTES];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let state = shared.lock().expect("proxy lock").state;
        match state {
            LinkState::Down => return,
            LinkState::Delay(d) => tokio::time::sleep(d).await,
            LinkState::Up => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
