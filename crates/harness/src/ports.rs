//! Loopback ports for local clusters.
//!
//! The kernel hands out a free port on `bind(127.0.0.1:0)`, but once the listener is dropped
//! the same port may be handed to the next bind — another test's node, or a proxy. Two
//! defences: a process-wide registry, so this process never gives one port out twice, and
//! [`reserve_addr`], which keeps the port bound until the caller drops the listener just
//! before the node that will listen there starts.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// Ports handed out so far in this process.
static PORTS_TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback address no one else in this process was given, still bound by the returned
/// listener: while it is held, no other bind can get the same port.
pub fn reserve_addr() -> std::io::Result<(String, TcpListener)> {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        if PORTS_TAKEN
            .lock()
            .expect("ports registry")
            .insert(addr.port())
        {
            return Ok((addr.to_string(), listener));
        }
    }
}

/// A loopback port that no one else in this process was given, already released: for an
/// address that nothing must listen on, or that a test binds itself at once.
pub fn free_port() -> u16 {
    let (_, listener) = reserve_addr().expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// `127.0.0.1:<a free port>`, as [`free_port`].
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}
