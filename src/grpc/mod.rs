//! tonic services. They only translate: a gRPC request becomes an actor message, the answer
//! becomes a gRPC response, and an [`Error`](crate::Error) becomes a status — for kv.v1 in one
//! place (`From<Error> for Status`), for etcd's API in [`etcd::status_of`], with etcd's codes
//! and texts.

pub mod etcd;
pub mod kv_service;
pub mod raft_service;

pub use kv_service::KvService;
pub use raft_service::RaftService;

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::actors::messages::Reply;
use crate::actors::ClientApiActor;
use crate::error::Error;

/// Sends the message built around a fresh reply channel to the ClientApiActor, and waits up to
/// `timeout` for the answer. A full mailbox is answered overloaded at once rather than waited
/// on; past the deadline the answer is a timeout (for a write: outcome unknown), and dropping
/// the reply's receiver tells the actor the caller has gone.
pub(crate) async fn ask<T, M>(
    api: &Addr<ClientApiActor>,
    timeout: Duration,
    what: &str,
    make: impl FnOnce(Reply<T>) -> M,
) -> Result<T, Error>
where
    M: Message<Result = ()> + Send + 'static,
    ClientApiActor: Handler<M>,
{
    let (tx, rx) = oneshot::channel();
    api.try_send(make(tx)).map_err(|e| match e {
        SendError::Full(_) => Error::Overloaded("the node's request queue is full".into()),
        SendError::Closed(_) => Error::ShuttingDown("the client API has stopped".into()),
    })?;
    match tokio::time::timeout(timeout, rx).await {
        Ok(answer) => answer.map_err(Error::from)?,
        Err(_) => Err(Error::Timeout(format!(
            "{what} did not complete within {} ms; for a write, the outcome is unknown",
            timeout.as_millis()
        ))),
    }
}
