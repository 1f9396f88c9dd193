//! The workload: clients making a seeded mix of gets (linearizable and
//! serializable), ranges, puts (some with a lease), deletes, compare-and-
//! swaps on mod revisions, lease grants and revokes, and compactions;
//! watchers opening watches at ±100 revisions from the current one on a
//! key or on every key, asking for progress; and the observer, a watch on
//! every key from revision 1 whose events are the server's history. Each
//! operation is recorded with its call and return times and its outcome.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::connect;
use crate::history::{
    Event, History, Kv, Micros, Op, Outcome, Request, Response, Segment, WatchLog, WatchResponse,
    NEVER,
};

/// Microseconds since the run started.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    /// A clock starting now.
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    /// Now, microseconds since the start.
    pub fn now(&self) -> Micros {
        self.0.elapsed().as_micros() as Micros
    }
}

/// The shape of a workload.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Concurrent clients.
    pub clients: usize,
    /// Concurrent watchers (besides the observer).
    pub watchers: usize,
    /// Keys `k0 … k<keys-1>`.
    pub keys: usize,
    /// The seed of every random choice.
    pub seed: u64,
    /// Longest wait for one answer.
    pub op_timeout: Duration,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            clients: 6,
            watchers: 3,
            keys: 8,
            seed: 1,
            op_timeout: Duration::from_secs(2),
        }
    }
}

struct Shared {
    clock: Clock,
    endpoints: Vec<String>,
    config: WorkloadConfig,
    /// Highest revision any answer carried.
    max_revision: AtomicI64,
    /// Highest revision the observer has seen (events or progress).
    observer_revision: AtomicI64,
    /// Clients stop when this turns true.
    stop: watch::Receiver<bool>,
    /// Watchers finish once they reached this revision.
    drain: watch::Receiver<Option<i64>>,
}

/// A running workload.
pub struct Workload {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    drain: watch::Sender<Option<i64>>,
    clients: Vec<JoinHandle<Vec<Op>>>,
    watchers: Vec<JoinHandle<Vec<WatchLog>>>,
    observer: JoinHandle<WatchLog>,
}

impl Workload {
    /// Starts clients, watchers and the observer against `endpoints`.
    pub fn start(endpoints: Vec<String>, config: WorkloadConfig, clock: Clock) -> Workload {
        let (stop, stop_rx) = watch::channel(false);
        let (drain, drain_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            clock,
            endpoints,
            config: config.clone(),
            max_revision: AtomicI64::new(1),
            observer_revision: AtomicI64::new(0),
            stop: stop_rx,
            drain: drain_rx,
        });
        let observer = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut log = WatchLog {
                    id: 0,
                    prefix: String::new(),
                    segments: Vec::new(),
                };
                run_watch(&shared, &mut log, 1, None, true).await;
                log
            })
        };
        let clients = (0..config.clients)
            .map(|id| tokio::spawn(client_loop(id as u32, shared.clone())))
            .collect();
        let watchers = (0..config.watchers)
            .map(|id| tokio::spawn(watcher_loop(id as u32, shared.clone())))
            .collect();
        Workload {
            shared,
            stop,
            drain,
            clients,
            watchers,
            observer,
        }
    }

    /// Successful operations so far are not counted here; see the history.
    /// The highest revision the observer has seen.
    pub fn observer_revision(&self) -> i64 {
        self.shared.observer_revision.load(Ordering::Relaxed)
    }

    /// Stops the clients (each finishes its operation in flight).
    pub async fn stop_clients(&mut self) -> Vec<Op> {
        self.stop.send_replace(true);
        let mut ops = Vec::new();
        for c in self.clients.drain(..) {
            if let Ok(mut list) = c.await {
                ops.append(&mut list);
            }
        }
        ops
    }

    /// Lets every watch reach `revision` (within `timeout`), then ends them
    /// and returns the history with `ops`.
    pub async fn finish(self, ops: Vec<Op>, revision: i64, timeout: Duration) -> History {
        self.drain.send_replace(Some(revision));
        let deadline = tokio::time::Instant::now() + timeout;
        let mut watches = Vec::new();
        let observer = match tokio::time::timeout_at(deadline, self.observer).await {
            Ok(Ok(log)) => log,
            _ => WatchLog {
                id: 0,
                prefix: String::new(),
                segments: Vec::new(),
            },
        };
        watches.push(observer);
        for w in self.watchers {
            if let Ok(Ok(mut logs)) = tokio::time::timeout_at(deadline, w).await {
                watches.append(&mut logs);
            }
        }
        History { ops, watches }
    }
}

fn key(n: usize) -> String {
    format!("k{n}")
}

async fn client_loop(id: u32, shared: Arc<Shared>) -> Vec<Op> {
    let cfg = &shared.config;
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_mul(1000).wrapping_add(u64::from(id)));
    let mut ops = Vec::new();
    let Ok(mut client) = connect(&shared.endpoints).await else {
        return ops;
    };
    let mut seq = 0u64;
    let mut lease = 0i64;
    let mut known_mod: HashMap<String, i64> = HashMap::new();
    let mut next_compaction = Instant::now() + Duration::from_secs(2);
    let mut last_compaction = 0i64;
    while !*shared.stop.borrow() {
        seq += 1;
        let value = format!("c{id}-{seq}");
        let k = key(rng.gen_range(0..cfg.keys));
        let request = if id == 0 && Instant::now() >= next_compaction {
            next_compaction = Instant::now() + Duration::from_secs(2);
            let target = shared.observer_revision.load(Ordering::Relaxed) - 20;
            if target <= last_compaction.max(1) {
                continue;
            }
            last_compaction = target;
            Request::Compact { revision: target }
        } else if lease == 0 && rng.gen_bool(0.05) {
            Request::LeaseGrant { ttl: 600 }
        } else {
            match rng.gen_range(0..100) {
                0..=21 => Request::Get {
                    key: k,
                    serializable: false,
                },
                22..=29 => Request::Get {
                    key: k,
                    serializable: true,
                },
                30..=34 => Request::Range {
                    prefix: if rng.gen_bool(0.5) { "k".into() } else { k },
                },
                35..=59 => Request::Put {
                    key: k,
                    value,
                    lease: 0,
                },
                60..=67 => Request::Delete { key: k },
                68..=89 => Request::Cas {
                    expect_mod: known_mod.get(&k).copied().unwrap_or(0),
                    key: k,
                    value,
                },
                90..=96 if lease != 0 => Request::Put {
                    key: k,
                    value,
                    lease,
                },
                97..=99 if lease != 0 => {
                    let id = lease;
                    lease = 0;
                    Request::LeaseRevoke { id }
                }
                _ => Request::Get {
                    key: k,
                    serializable: false,
                },
            }
        };
        let invoke = shared.clock.now();
        let answer = tokio::time::timeout(cfg.op_timeout, execute(&mut client, &request)).await;
        let outcome = match answer {
            Ok(Ok(r)) => Outcome::Ok(r),
            Ok(Err(e)) => classify(e),
            Err(_) => Outcome::Unknown("timed out".into()),
        };
        let ret = match &outcome {
            Outcome::Unknown(_) if request.writes() => NEVER,
            _ => shared.clock.now(),
        };
        if let Outcome::Ok(r) = &outcome {
            shared
                .max_revision
                .fetch_max(r.revision(), Ordering::Relaxed);
            match (r, &request) {
                (Response::LeaseGrant { id }, _) => lease = *id,
                (Response::Get { kv, .. }, Request::Get { key, .. }) => {
                    known_mod.insert(key.clone(), kv.as_ref().map_or(0, |kv| kv.mod_revision));
                }
                (Response::Put { revision }, Request::Put { key, .. }) => {
                    known_mod.insert(key.clone(), *revision);
                }
                (
                    Response::Cas {
                        revision,
                        succeeded: true,
                    },
                    Request::Cas { key, .. },
                ) => {
                    known_mod.insert(key.clone(), *revision);
                }
                _ => {}
            }
        }
        ops.push(Op {
            client: id,
            invoke,
            ret,
            request,
            outcome,
        });
        let unreachable = matches!(&ops.last(), Some(Op { outcome: Outcome::Failed(m), .. }) if m == "tcp connect error");
        if ret == NEVER || unreachable {
            // The connection may be broken, or the member down: the next
            // request redials, a little later.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    ops
}

/// A refusal that certainly changed nothing, or an error after which the
/// request may still take effect. A connection that could not be made
/// means the request never left the client.
fn classify(e: etcd_client::Error) -> Outcome {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(s) if s.message() == "tcp connect error" => {
            Outcome::Failed(s.message().to_string())
        }
        etcd_client::Error::GRpcStatus(s) => match s.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::OutOfRange
            | Code::FailedPrecondition
            | Code::ResourceExhausted
            | Code::AlreadyExists
            | Code::PermissionDenied => Outcome::Failed(s.message().to_string()),
            _ => Outcome::Unknown(s.message().to_string()),
        },
        other => Outcome::Unknown(other.to_string()),
    }
}

fn kv_of(kv: &etcd_client::KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: String::from_utf8_lossy(kv.value()).into_owned(),
        mod_revision: kv.mod_revision(),
    }
}

async fn execute(c: &mut Client, request: &Request) -> Result<Response, etcd_client::Error> {
    let revision = |h: Option<&etcd_client::ResponseHeader>| h.map_or(0, |h| h.revision());
    Ok(match request {
        Request::Get { key, serializable } => {
            let opts = serializable.then(|| GetOptions::new().with_serializable());
            let r = c.get(key.as_str(), opts).await?;
            Response::Get {
                revision: revision(r.header()),
                kv: r.kvs().first().map(kv_of),
            }
        }
        Request::Range { prefix } => {
            let r = c
                .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
                .await?;
            Response::Range {
                revision: revision(r.header()),
                kvs: r.kvs().iter().map(kv_of).collect(),
            }
        }
        Request::Put { key, value, lease } => {
            let opts = (*lease != 0).then(|| PutOptions::new().with_lease(*lease));
            let r = c.put(key.as_str(), value.as_str(), opts).await?;
            Response::Put {
                revision: revision(r.header()),
            }
        }
        Request::Delete { key } => {
            let r = c.delete(key.as_str(), None).await?;
            Response::Delete {
                revision: revision(r.header()),
                deleted: r.deleted(),
            }
        }
        Request::Cas {
            key,
            expect_mod,
            value,
        } => {
            let txn = Txn::new()
                .when(vec![Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    *expect_mod,
                )])
                .and_then(vec![TxnOp::put(key.as_str(), value.as_str(), None)]);
            let r = c.txn(txn).await?;
            Response::Cas {
                revision: revision(r.header()),
                succeeded: r.succeeded(),
            }
        }
        Request::LeaseGrant { ttl } => Response::LeaseGrant {
            id: c.lease_grant(*ttl, None).await?.id(),
        },
        Request::LeaseRevoke { id } => Response::LeaseRevoke {
            revision: revision(c.lease_revoke(*id).await?.header()),
        },
        Request::Compact { revision: target } => {
            let r = c
                .compact(
                    *target,
                    Some(etcd_client::CompactionOptions::new().with_physical()),
                )
                .await?;
            Response::Compact {
                revision: revision(r.header()),
            }
        }
    })
}

async fn watcher_loop(id: u32, shared: Arc<Shared>) -> Vec<WatchLog> {
    let mut rng = StdRng::seed_from_u64(
        shared
            .config
            .seed
            .wrapping_mul(7919)
            .wrapping_add(u64::from(id)),
    );
    let mut logs = Vec::new();
    let mut n = 0;
    loop {
        let draining = shared.drain.borrow().is_some();
        n += 1;
        let prefix = if rng.gen_bool(0.3) {
            String::new()
        } else {
            key(rng.gen_range(0..shared.config.keys))
        };
        let current = shared.max_revision.load(Ordering::Relaxed);
        let start = (current + rng.gen_range(-100..=100)).max(1);
        let mut log = WatchLog {
            id: 1000 * (id + 1) + n,
            prefix,
            segments: Vec::new(),
        };
        let until =
            (!draining).then(|| Instant::now() + Duration::from_millis(rng.gen_range(2000..6000)));
        run_watch(&shared, &mut log, start, until, false).await;
        logs.push(log);
        if draining || shared.drain.borrow().is_some() {
            return logs;
        }
    }
}

/// Runs one logical watch, resuming after failures, until `until` (or,
/// without one, until the drain revision is reached). The observer also
/// publishes how far it got.
async fn run_watch(
    shared: &Shared,
    log: &mut WatchLog,
    start: i64,
    until: Option<Instant>,
    observer: bool,
) {
    let mut next_start = start;
    let mut last_seen = start - 1;
    loop {
        let opened = shared.clock.now();
        let key = if log.prefix.is_empty() {
            "\0".to_string()
        } else {
            log.prefix.clone()
        };
        let mut options = WatchOptions::new().with_start_revision(next_start);
        options = if log.prefix.is_empty() {
            options.with_from_key()
        } else {
            options.with_prefix()
        };
        let mut segment = Segment {
            endpoint: shared.endpoints.join(","),
            opened,
            start_revision: next_start,
            responses: Vec::new(),
            ended: None,
            progress_requests: Vec::new(),
        };
        let stream = match connect(&shared.endpoints).await {
            Ok(mut c) => {
                tokio::time::timeout(Duration::from_secs(2), c.watch(key, Some(options))).await
            }
            Err(e) => {
                segment.ended = Some(format!("connect: {e}"));
                log.segments.push(segment);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut stream = match stream {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                segment.ended = Some(format!("watch: {e}"));
                log.segments.push(segment);
                tokio::time::sleep(Duration::from_millis(100)).await;
                if done(shared, until, last_seen) {
                    return;
                }
                continue;
            }
            Err(_) => {
                segment.ended = Some("watch: timed out".into());
                log.segments.push(segment);
                if done(shared, until, last_seen) {
                    return;
                }
                continue;
            }
        };
        let mut progress_at = Instant::now() + Duration::from_millis(800);
        let over = loop {
            if done(shared, until, last_seen) {
                break true;
            }
            let draining = shared.drain.borrow().is_some();
            if Instant::now() >= progress_at {
                segment.progress_requests.push(shared.clock.now());
                if let Err(e) = stream.request_progress().await {
                    segment.ended = Some(format!("progress request: {e}"));
                    break false;
                }
                progress_at =
                    Instant::now() + Duration::from_millis(if draining { 200 } else { 800 });
            }
            let message = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
            let resp = match message {
                Err(_) => continue,
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) => {
                    segment.ended = Some("stream ended".into());
                    break false;
                }
                Ok(Err(e)) => {
                    segment.ended = Some(format!("stream: {e}"));
                    break false;
                }
            };
            let events: Vec<Event> = resp
                .events()
                .iter()
                .filter_map(|e| {
                    let kv = e.kv()?;
                    Some(Event {
                        put: e.event_type() == EventType::Put,
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        value: String::from_utf8_lossy(kv.value()).into_owned(),
                        mod_revision: kv.mod_revision(),
                    })
                })
                .collect();
            let revision = resp.header().map_or(0, |h| h.revision());
            if let Some(last) = events.last() {
                last_seen = last_seen.max(last.mod_revision);
                next_start = last.mod_revision + 1;
            } else if !resp.created() && !resp.canceled() {
                // A progress notification: everything up to `revision` came,
                // so a resumed watch may start after it (a bookmark).
                last_seen = last_seen.max(revision);
                next_start = next_start.max(revision + 1);
            }
            if observer {
                shared
                    .observer_revision
                    .fetch_max(last_seen, Ordering::Relaxed);
            }
            let canceled = resp.canceled();
            segment.responses.push(WatchResponse {
                at: shared.clock.now(),
                revision,
                created: resp.created(),
                canceled,
                compact_revision: resp.compact_revision(),
                events,
            });
            if canceled {
                segment.ended = Some(format!("canceled: {}", resp.cancel_reason()));
                break true;
            }
        };
        log.segments.push(segment);
        if over {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a watch is over: its time is up, or, while draining, it has
/// reached the drain revision.
fn done(shared: &Shared, until: Option<Instant>, last_seen: i64) -> bool {
    if let Some(target) = *shared.drain.borrow() {
        return last_seen >= target;
    }
    until.is_some_and(|u| Instant::now() >= u)
}
