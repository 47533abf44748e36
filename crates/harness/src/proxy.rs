//! A fault-injecting TCP proxy for one direction of one peer link.
//!
//! Node A reaches node B's peer port through its own proxy (A→B), so the nemesis can cut,
//! restore or slow that link without root and without touching the nodes: a network partition
//! for ordinary users. A gRPC call from A to B and its answer both travel on A's connection,
//! so cutting A→B stops A's messages to B and B's answers to them; B→A has its own proxy.
//!
//! States: `Up` relays bytes; `Down` closes every open connection through the proxy and
//! closes new ones as soon as they are accepted (peers see a dead link and retry); `Delay(d)`
//! holds every chunk of bytes for `d` before relaying it; `Throttle` limits the bandwidth.
//!
//! A throttle limits each direction of each connection through the proxy on its own, as a
//! router's per-flow fair queueing would: a node that opens several connections to one peer
//! (the peer link has a bulk and a control connection) gets the rate on each of them, so a
//! control connection is never slowed by bulk bytes queued on the other.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::ports::reserve_addr;

/// Bytes relayed per read.
const RELAY_BUFFER_BYTES: usize = 64 * 1024;
/// Under a throttle, bytes are written in pieces of at most this many bytes, each when the
/// rate allows it, so a 64 KiB read trickles out evenly instead of in one burst (one piece takes
/// about 6.5 ms at 20 Mbit/s).
const THROTTLE_PIECE_BYTES: usize = 16 * 1024;
/// How long an idle throttled direction saves up its allowance, in milliseconds: the bytes the
/// rate allows in this time may then go at once. It must cover a timer's oversleep (about a
/// millisecond), or the rate would be missed by what was lost to it.
const THROTTLE_BURST_MS: u64 = 20;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Relay.
    Up,
    /// Drop every connection.
    Down,
    /// Relay, holding each chunk this long.
    Delay(Duration),
    /// Relay at most this many bytes per second in each direction of each connection (each
    /// connection has its own allowance; see the module doc). 0 counts as 1.
    Throttle {
        /// The rate, in bytes per second.
        bytes_per_sec: u64,
    },
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
    /// Starts a proxy on a loopback port from [`reserve_addr`] that relays to `target`
    /// (host:port).
    pub async fn start(target: String) -> std::io::Result<LinkProxy> {
        let (_, listener) = reserve_addr()?;
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
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

/// A token bucket pacing one direction of one connection.
struct TokenBucket {
    /// Bytes that may go now; below zero after a piece went on credit, which is then waited off.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    refilled: Instant,
}

impl TokenBucket {
    fn new() -> TokenBucket {
        TokenBucket {
            tokens: 0.0,
            refilled: Instant::now(),
        }
    }

    /// Takes `bytes` from the bucket at `bytes_per_sec`, waiting until the rate allows them.
    async fn take(&mut self, bytes: usize, bytes_per_sec: u64) {
        let rate = bytes_per_sec.max(1) as f64;
        let burst = (rate * THROTTLE_BURST_MS as f64 / 1000.0).max(THROTTLE_PIECE_BYTES as f64);
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * rate;
        self.tokens = (self.tokens + earned).min(burst) - bytes as f64;
        self.refilled = now;
        if self.tokens < 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(-self.tokens / rate)).await;
        }
    }
}

async fn relay(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    shared: Arc<Mutex<Shared>>,
) {
    let mut buf = vec![0u8; RELAY_BUFFER_BYTES];
    let mut bucket = TokenBucket::new();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let state = shared.lock().expect("proxy lock").state;
        let piece_bytes = match state {
            LinkState::Down => return,
            LinkState::Delay(d) => {
                tokio::time::sleep(d).await;
                n
            }
            LinkState::Up => n,
            LinkState::Throttle { .. } => THROTTLE_PIECE_BYTES,
        };
        for piece in buf[..n].chunks(piece_bytes) {
            if let LinkState::Throttle { bytes_per_sec } = state {
                bucket.take(piece.len(), bytes_per_sec).await;
            }
            if to.write_all(piece).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rate of the throttled link in these tests, in bytes per second.
    const TEST_RATE_BYTES_PER_SEC: u64 = 1_000_000;
    /// Bytes the bulk connection pushes through the throttled link: half a second's worth.
    const BULK_BYTES: usize = 500_000;
    /// Bytes of the small message sent on a second connection meanwhile.
    const SMALL_BYTES: usize = 100;
    /// Marks the end of a message to the sink.
    const END: u8 = 0xFF;

    /// A server that reads each connection's bytes and answers one byte once it has read a
    /// message's [`END`].
    async fn sink() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; RELAY_BUFFER_BYTES];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        if buf[..n].contains(&END) && conn.write_all(b"!").await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Sends a message of `bytes` through `proxy` on a new connection; returns how long the
    /// answer took.
    async fn send(proxy: SocketAddr, bytes: usize) -> Duration {
        let mut conn = TcpStream::connect(proxy).await.unwrap();
        let started = Instant::now();
        let mut msg = vec![0u8; bytes];
        msg.push(END);
        conn.write_all(&msg).await.unwrap();
        let mut answer = [0u8; 1];
        conn.read_exact(&mut answer).await.unwrap();
        started.elapsed()
    }

    #[tokio::test]
    async fn a_throttle_holds_each_connection_to_the_rate_on_its_own() {
        let proxy = LinkProxy::start(sink().await).await.unwrap();
        proxy.set(LinkState::Throttle {
            bytes_per_sec: TEST_RATE_BYTES_PER_SEC,
        });
        let expected = Duration::from_secs_f64(BULK_BYTES as f64 / TEST_RATE_BYTES_PER_SEC as f64);
        let bulk = tokio::spawn(send(proxy.addr(), BULK_BYTES));
        // Let the bulk connection fill its lane before the small message starts.
        tokio::time::sleep(expected / 5).await;
        let small = send(proxy.addr(), SMALL_BYTES).await;
        let bulk = bulk.await.unwrap();
        // No faster than the rate allows (less the one burst a bucket may save up), and not
        // much slower.
        assert!(bulk >= expected * 9 / 10, "{bulk:?} for {expected:?} worth");
        assert!(bulk <= expected * 3, "{bulk:?} for {expected:?} worth");
        // The second connection has an allowance of its own: it does not queue behind the bulk.
        assert!(small < expected / 2, "a small message took {small:?}");
    }

    #[tokio::test]
    async fn an_up_link_is_not_throttled() {
        let proxy = LinkProxy::start(sink().await).await.unwrap();
        let expected = Duration::from_secs_f64(BULK_BYTES as f64 / TEST_RATE_BYTES_PER_SEC as f64);
        let took = send(proxy.addr(), BULK_BYTES).await;
        assert!(took < expected / 2, "{took:?}");
    }
}
