//! Watchers beside the load, over etcd's Watch API (both stores serve it), made before the
//! load starts and stopped after it:
//!
//! - **idle**: watchers of keys nobody writes (`idle/N`), [`WATCHERS_PER_STREAM`] to a
//!   stream, as a service with many watchers shares few connections; they cost only what
//!   matching every write against them costs;
//! - **slow**: one watcher of the whole load (`bench/`) per stream, whose client takes
//!   [`SLOW_EVENT_TIME`] over each event it is sent, and at least [`SLOW_READ_INTERVAL`] over
//!   each answer — at most 100 events a second, far fewer than the load writes, as a consumer
//!   that does real work per event would: it falls behind for good, and the server must hold
//!   or drop what it cannot send without letting that slow down writes;
//! - **fast**: one watcher of the whole load per stream, reading everything: each put carries
//!   the time it was sent, so every event it gets gives the latency from put to event, and
//!   their count the events delivered per second.
//!
//! Streams go to the endpoints in turn.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_api::etcdserverpb::watch_client::WatchClient;
use etcd_api::etcdserverpb::{watch_request, WatchCreateRequest, WatchRequest};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

/// Idle watchers that share one stream.
pub const WATCHERS_PER_STREAM: usize = 100;
/// The least time a slow watcher's client takes over one answer.
pub const SLOW_READ_INTERVAL: Duration = Duration::from_millis(100);
/// The time a slow watcher's client takes over each event of an answer.
pub const SLOW_EVENT_TIME: Duration = Duration::from_millis(10);
/// How long making the watchers may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// How many watchers of each kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchLoad {
    pub idle: usize,
    pub slow: usize,
    pub fast: usize,
}

impl WatchLoad {
    pub fn is_empty(&self) -> bool {
        self.idle + self.slow + self.fast == 0
    }
}

/// The running watchers.
pub struct Watching {
    load: WatchLoad,
    /// Events the fast watchers got, and their latencies from put to event.
    events: Arc<AtomicU64>,
    /// Events the slow watchers' clients have taken in: how much they kept up.
    slow_events: Arc<AtomicU64>,
    latencies: Arc<Mutex<Vec<Duration>>>,
    tasks: Vec<JoinHandle<()>>,
    /// The request halves of the streams: kept open while the load runs.
    _requests: Vec<mpsc::Sender<WatchRequest>>,
}

/// The time a put is sent, as it travels in its value: nanoseconds since `epoch`.
pub fn stamp(epoch: Instant, value: &mut [u8]) {
    let nanos = epoch.elapsed().as_nanos() as u64;
    if value.len() >= 8 {
        value[..8].copy_from_slice(&nanos.to_be_bytes());
    }
}

fn sent_at(epoch: Instant, value: &[u8]) -> Option<Instant> {
    let bytes: [u8; 8] = value.get(..8)?.try_into().ok()?;
    Some(epoch + Duration::from_nanos(u64::from_be_bytes(bytes)))
}

fn create(key: &[u8], range_end: &[u8], id: i64) -> WatchRequest {
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: key.to_vec(),
                range_end: range_end.to_vec(),
                watch_id: id,
                ..Default::default()
            },
        )),
    }
}

/// What a stream's reader does with its answers.
#[derive(Clone, Copy)]
enum Reader {
    Discard,
    Slow,
    Timed,
}

impl Watching {
    /// Makes the watchers of `load` on `endpoints`, and waits until each is created.
    pub async fn start(
        endpoints: &[String],
        load: WatchLoad,
        epoch: Instant,
    ) -> anyhow::Result<Watching> {
        let mut watching = Watching {
            load,
            events: Arc::new(AtomicU64::new(0)),
            slow_events: Arc::new(AtomicU64::new(0)),
            latencies: Arc::new(Mutex::new(Vec::new())),
            tasks: Vec::new(),
            _requests: Vec::new(),
        };
        let prefix = b"bench/".to_vec();
        let prefix_end = etcd_api::range::prefix_end(&prefix);
        let mut streams: Vec<(Vec<WatchRequest>, Reader)> = Vec::new();
        for chunk in (0..load.idle)
            .collect::<Vec<_>>()
            .chunks(WATCHERS_PER_STREAM)
        {
            let creates = chunk
                .iter()
                .map(|i| create(format!("idle/{i}").as_bytes(), b"", *i as i64 + 1))
                .collect();
            streams.push((creates, Reader::Discard));
        }
        for _ in 0..load.slow {
            streams.push((vec![create(&prefix, &prefix_end, 1)], Reader::Slow));
        }
        for _ in 0..load.fast {
            streams.push((vec![create(&prefix, &prefix_end, 1)], Reader::Timed));
        }
        let (created_tx, mut created_rx) = mpsc::unbounded_channel::<()>();
        let expected: usize = streams.iter().map(|(c, _)| c.len()).sum();
        for (i, (creates, reader)) in streams.into_iter().enumerate() {
            let addr = &endpoints[i % endpoints.len()];
            let channel = Endpoint::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect_lazy();
            let mut client = WatchClient::new(channel).max_decoding_message_size(usize::MAX);
            let (tx, rx) = mpsc::channel(creates.len().max(1));
            for c in creates {
                let _ = tx.try_send(c);
            }
            watching._requests.push(tx);
            let (events, slow_events, latencies, created) = (
                watching.events.clone(),
                watching.slow_events.clone(),
                watching.latencies.clone(),
                created_tx.clone(),
            );
            watching.tasks.push(tokio::spawn(async move {
                let Ok(response) = client.watch(ReceiverStream::new(rx)).await else {
                    return;
                };
                let mut stream = response.into_inner();
                while let Ok(Some(answer)) = stream.message().await {
                    if answer.created {
                        let _ = created.send(());
                        continue;
                    }
                    match reader {
                        Reader::Discard => {}
                        Reader::Slow => {
                            slow_events.fetch_add(answer.events.len() as u64, Ordering::Relaxed);
                            let busy = SLOW_EVENT_TIME * answer.events.len() as u32;
                            tokio::time::sleep(busy.max(SLOW_READ_INTERVAL)).await
                        }
                        Reader::Timed => {
                            let now = Instant::now();
                            let mut lat = latencies.lock().expect("the latencies");
                            for e in &answer.events {
                                let value = e.kv.as_ref().map_or(&[][..], |kv| &kv.value[..]);
                                if let Some(sent) = sent_at(epoch, value) {
                                    lat.push(now.saturating_duration_since(sent));
                                }
                            }
                            events.fetch_add(answer.events.len() as u64, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        let deadline = tokio::time::Instant::now() + CREATE_TIMEOUT;
        for n in 0..expected {
            match tokio::time::timeout_at(deadline, created_rx.recv()).await {
                Ok(Some(())) => {}
                _ => anyhow::bail!("only {n} of {expected} watchers were created in time"),
            }
        }
        Ok(watching)
    }

    /// ` watchers=IDLE/SLOW/FAST`, and with fast watchers what they got over `elapsed`.
    pub fn report(&self, elapsed: Duration) -> String {
        let WatchLoad { idle, slow, fast } = self.load;
        let mut out = format!(" watchers={idle}/{slow}/{fast}");
        if slow > 0 {
            let taken = self.slow_events.load(Ordering::Relaxed);
            out.push_str(&format!(" slow_events={taken}"));
        }
        if fast > 0 {
            let mut lat = self.latencies.lock().expect("the latencies").clone();
            lat.sort();
            let events = self.events.load(Ordering::Relaxed);
            out.push_str(&format!(
                " events={events} events/s={:.0} event_p50={:.2}ms event_p99={:.2}ms",
                events as f64 / elapsed.as_secs_f64(),
                crate::percentile(&lat, 0.50).as_secs_f64() * 1e3,
                crate::percentile(&lat, 0.99).as_secs_f64() * 1e3,
            ));
        }
        out
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
