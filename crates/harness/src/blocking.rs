//! [`BlockingCluster`]: a [`LocalCluster`] for synchronous tests.
//!
//! It owns the multi-threaded tokio runtime the cluster's link proxies and the tests' clients
//! run on, and gives the cluster's `async` methods a blocking face that panics with the
//! harness's message where the cluster would return an error (so do `spawn` and `terminate`).
//! Everything else — addresses, configs, `kill`, `pause`, `partition` — is the
//! [`LocalCluster`]'s own, reached through `Deref`.

use crate::error::HarnessError;
use std::ops::{Deref, DerefMut};
use std::process::ExitStatus;

use kv_api::proto::StatusResponse;
use kv_api::ClientError;
use tokio::runtime::Runtime;

use crate::cluster::{ClusterOptions, LocalCluster};
use crate::command::{kvctl, Finished};
use crate::timing::CATCH_UP_TIMEOUT;

/// A [`LocalCluster`] and the runtime it runs on. Dropping it kills every node, then stops the
/// runtime.
pub struct BlockingCluster {
    /// The cluster; declared first, so it is dropped while the runtime still runs.
    cluster: LocalCluster,
    /// Runs the link proxies, and whatever the test spawns or blocks on.
    rt: Runtime,
}

/// The value of a harness step, or a panic naming what failed.
fn expect<T>(result: Result<T, HarnessError>) -> T {
    result.unwrap_or_else(|e| panic!("harness: {e}"))
}

impl BlockingCluster {
    /// Starts the cluster [`LocalCluster::start`] would; returns once every node answers.
    pub fn start(options: ClusterOptions) -> BlockingCluster {
        let rt = Runtime::new().expect("harness: a tokio runtime");
        let cluster = expect(rt.block_on(LocalCluster::start(options)));
        BlockingCluster { cluster, rt }
    }

    /// The runtime: for the test's own clients and tasks.
    pub fn rt(&self) -> &Runtime {
        &self.rt
    }

    /// [`LocalCluster::spawn`]: starts node `id` without waiting for it to answer.
    pub fn spawn(&mut self, id: u64) {
        expect(self.cluster.spawn(id))
    }

    /// [`LocalCluster::restart`]: starts each node of `ids` that has no process, then waits
    /// until each answers.
    pub fn restart(&mut self, ids: &[u64]) {
        expect(self.rt.block_on(self.cluster.restart(ids)))
    }

    /// [`LocalCluster::terminate`]: SIGTERMs `ids` at once and waits for each to exit.
    pub fn terminate(&mut self, ids: &[u64]) -> Vec<ExitStatus> {
        expect(self.cluster.terminate(ids))
    }

    /// [`LocalCluster::status`]: node `id`'s status, asked once.
    pub fn status(&self, id: u64) -> Result<StatusResponse, ClientError> {
        self.rt.block_on(self.cluster.status(id))
    }

    /// [`LocalCluster::wait_leader`]: the id of a leader every running node follows.
    pub fn wait_leader(&self) -> u64 {
        expect(self.rt.block_on(self.cluster.wait_leader()))
    }

    /// [`LocalCluster::converge`] within [`CATCH_UP_TIMEOUT`]: waits until every node has
    /// applied the same entries to the same state.
    pub fn converge(&self) -> (u64, u64) {
        expect(self.rt.block_on(self.cluster.converge(CATCH_UP_TIMEOUT)))
    }

    /// Runs `kvctl --endpoints <endpoints> <args>` in the cluster's directory.
    pub fn kvctl(&self, endpoints: &str, args: &[&str]) -> Finished {
        kvctl(self.cluster.dir(), endpoints, args)
    }
}

impl Deref for BlockingCluster {
    type Target = LocalCluster;

    fn deref(&self) -> &LocalCluster {
        &self.cluster
    }
}

impl DerefMut for BlockingCluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.cluster
    }
}
