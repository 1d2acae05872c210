//! The live workers: who is connected, for which role, how loaded, and the link that
//! reaches each one.
//!
//! Assignment is least-loaded-first: a session that needs a role takes the connected,
//! non-draining worker of that role with the fewest sessions (ties: fewest turns done,
//! then id), and only while that worker is below its capacity. Every change of the
//! worker set bumps [`Registry::changes`], which PENDING sessions wait on.
//!
//! # Nobody waits on a worker
//!
//! Everything sent to a worker goes through its [`WorkerLink`]: a bounded channel,
//! written with `try_send` only. A worker that stops reading is cut off (its stream ends
//! with RESOURCE_EXHAUSTED, it is removed, and its sessions give its turns to a replica)
//! as soon as either its channel is full, or a message has waited in it for as long as
//! a silent worker is given ([`WorkerLink::stalled`], checked as its messages come in).
//! So a frozen or hostile peer can stall nothing but itself: no session actor, lease
//! follower or step-down ever waits for it.

use crate::errors::MeshError;
use agentmesh_core::{Applied, Entry, Status, TurnKey};
use agentmesh_store::{RegistryEvent, WorkerRecord, WorkerRegistry};
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// A worker as the registry sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WorkerInfo {
    pub worker_id: String,
    pub role: String,
    pub capacity: u32,
    /// Sessions it holds a role in now.
    pub load: u32,
    pub version: String,
    pub connected_ms: i64,
    pub draining: bool,
    pub turns_completed: u64,
    /// It holds a stream to this coordinator.
    pub connected: bool,
    /// Cluster mode: it holds a live lease (always true in the embedded mode).
    pub leased: bool,
    /// Where it runs, as its lease record says.
    pub address: String,
    /// The Ed25519 key it announced in its Hello: its results must verify under it.
    pub public_key: Option<agentmesh_core::trust::PublicKey>,
}

/// A worker key this coordinator has seen (`GET /.well-known/agentmesh-keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeenKey {
    pub worker_id: String,
    pub role: String,
    pub public_key: agentmesh_core::trust::PublicKey,
    /// When it was last announced (ms since the epoch).
    pub seen_ms: i64,
}

/// How many seen worker keys are remembered; beyond, the least recently announced go.
const SEEN_KEYS: usize = 4096;

/// The header a worker is sent the first time it hears of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionHeader {
    pub task: String,
    pub roles: Vec<String>,
    pub max_rounds: u32,
}

/// One turn for a worker: its address, what it needs to know, and when it is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TurnOrder {
    pub session_id: String,
    pub turn: TurnKey,
    pub header: Option<SessionHeader>,
    /// The transcript entries after the worker's cursor, in seq order.
    pub delta: Vec<Entry>,
    /// For a review: the version under review and its hash.
    pub proposal: Option<(u32, String)>,
    pub deadline_ms: i64,
    /// The trace the turn belongs to (its phase's span); empty when tracing is off.
    pub trace_context: agentmesh_telemetry::TraceContext,
}

/// What the coordinator's inner layers send a worker; the gRPC edge turns each into a
/// wire message.
#[derive(Debug)]
pub(crate) enum ToWorker {
    Turn(Box<TurnOrder>),
    /// The verdict on a result or a failure report.
    Ack {
        session_id: String,
        turn: TurnKey,
        outcome: Result<Applied, MeshError>,
    },
    /// The session ended, or this worker no longer takes part in it: drop its transcript.
    /// `status` is `None` for a session the coordinator does not know.
    SessionEnd {
        session_id: String,
        status: Option<Status>,
        reason: String,
    },
}

/// Why a worker's stream was ended by the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cut {
    /// It did not read its stream: its queue filled up.
    TooSlow,
    /// Its lease expired (frozen, or cut off from etcd).
    LeaseExpired,
    /// It sent nothing, not even a heartbeat, for three heartbeat intervals.
    Silent,
    /// This coordinator stepped down.
    SteppedDown,
    /// It sent a message over the size limit (the reason says how large).
    Oversized(String),
    /// It sent something that is not a valid message.
    Malformed(String),
    /// Its stream already ended (closed or broken): nobody reads the answer.
    Gone,
}

/// The way to one worker's stream.
#[derive(Clone)]
pub(crate) struct WorkerLink {
    tx: mpsc::Sender<ToWorker>,
    /// Cancelled to end the stream now, whatever is queued; `why` says why.
    cut: CancellationToken,
    why: Arc<Mutex<Option<Cut>>>,
    flow: Arc<Flow>,
}

/// How a worker keeps up with what it is sent.
struct Flow {
    /// Messages queued and not yet taken by the stream.
    pending: std::sync::atomic::AtomicUsize,
    /// When the stream last took a message, or the queue last became non-empty.
    progress_at: Mutex<tokio::time::Instant>,
}

impl WorkerLink {
    /// A link with room for `queue` messages.
    pub fn new(queue: usize) -> (WorkerLink, mpsc::Receiver<ToWorker>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        (
            WorkerLink {
                tx,
                cut: CancellationToken::new(),
                why: Arc::new(Mutex::new(None)),
                flow: Arc::new(Flow {
                    pending: std::sync::atomic::AtomicUsize::new(0),
                    progress_at: Mutex::new(tokio::time::Instant::now()),
                }),
            },
            rx,
        )
    }

    /// Queues `message` without waiting. A worker whose queue is full is cut off.
    /// Returns false when the message will not reach the worker.
    pub fn send(&self, message: ToWorker) -> bool {
        use std::sync::atomic::Ordering;
        match self.tx.try_send(message) {
            Ok(()) => {
                if self.flow.pending.fetch_add(1, Ordering::SeqCst) == 0 {
                    *self.flow.progress_at.lock().expect("flow lock") = tokio::time::Instant::now();
                }
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.cut(Cut::TooSlow);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Ends the stream (the first reason given is the one reported).
    pub fn cut(&self, why: Cut) {
        self.why.lock().expect("cut lock").get_or_insert(why);
        self.cut.cancel();
    }

    /// Resolves once the stream must end, with why.
    pub async fn cut_off(&self) -> Cut {
        self.cut.cancelled().await;
        self.why
            .lock()
            .expect("cut lock")
            .clone()
            .unwrap_or(Cut::Gone)
    }

    pub fn is_cut(&self) -> bool {
        self.cut.is_cancelled()
    }

    /// The stream took one message from the queue.
    pub fn taken(&self) {
        self.flow
            .pending
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        *self.flow.progress_at.lock().expect("flow lock") = tokio::time::Instant::now();
    }

    /// Whether messages have waited for this worker longer than `limit` with none taken:
    /// it does not read its stream.
    pub fn stalled(&self, limit: std::time::Duration) -> bool {
        self.flow.pending.load(std::sync::atomic::Ordering::SeqCst) > 0
            && self.flow.progress_at.lock().expect("flow lock").elapsed() > limit
    }
}

struct Worker {
    info: WorkerInfo,
    /// Which stream this is: a reconnect under the same id gets a new number, so the old
    /// stream's cleanup cannot remove the new one.
    connection: u64,
    /// Sessions this worker holds a role in.
    sessions: BTreeSet<String>,
    /// Transcript cursors the worker reported in its Hello: it already holds these.
    cursors: HashMap<String, u64>,
    link: WorkerLink,
}

pub(crate) struct Registry {
    workers: Mutex<BTreeMap<String, Worker>>,
    /// Cluster mode: a worker must also hold a live lease to be assigned work.
    lease_mode: bool,
    /// Workers registered under a live lease, by id (cluster mode).
    leased: Mutex<BTreeMap<String, WorkerRecord>>,
    changes: watch::Sender<u64>,
    next_connection: std::sync::atomic::AtomicU64,
    /// Worker keys announced to this coordinator, by (worker id, key).
    seen: Mutex<BTreeMap<(String, agentmesh_core::trust::PublicKey), SeenKey>>,
}

impl Registry {
    pub fn new(lease_mode: bool) -> Self {
        Registry {
            workers: Mutex::new(BTreeMap::new()),
            lease_mode,
            leased: Mutex::new(BTreeMap::new()),
            changes: watch::channel(0).0,
            next_connection: std::sync::atomic::AtomicU64::new(1),
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds a connected worker and returns its connection number; refuses a second
    /// connection under the same id.
    pub fn register(
        &self,
        info: WorkerInfo,
        cursors: HashMap<String, u64>,
        link: WorkerLink,
    ) -> Result<u64, MeshError> {
        let connection = self
            .next_connection
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut workers = self.workers.lock().expect("registry lock");
        if workers.contains_key(&info.worker_id) {
            return Err(MeshError::WorkerAlreadyConnected(info.worker_id.clone()));
        }
        if let Some(key) = info.public_key {
            self.saw_key(&info, key);
        }
        workers.insert(
            info.worker_id.clone(),
            Worker {
                info,
                connection,
                sessions: BTreeSet::new(),
                cursors,
                link,
            },
        );
        drop(workers);
        self.changes.send_modify(|n| *n += 1);
        Ok(connection)
    }

    /// Removes the worker if `connection` is still its current stream; returns its role
    /// and the sessions it held a role in (`None` if another stream has replaced it).
    pub fn remove_connection(
        &self,
        worker_id: &str,
        connection: u64,
    ) -> Option<(String, Vec<String>)> {
        let mut workers = self.workers.lock().expect("registry lock");
        if workers
            .get(worker_id)
            .is_none_or(|w| w.connection != connection)
        {
            return None;
        }
        let removed = workers.remove(worker_id).expect("just found");
        drop(workers);
        self.changes.send_modify(|n| *n += 1);
        Some((removed.info.role, removed.sessions.into_iter().collect()))
    }

    /// Takes the least-loaded live worker of `role` for `session_id`, skipping `exclude`.
    pub fn reserve(
        &self,
        role: &str,
        session_id: &str,
        exclude: &BTreeSet<String>,
    ) -> Option<String> {
        let leased = self.leased.lock().expect("lease lock");
        let mut workers = self.workers.lock().expect("registry lock");
        let chosen = workers
            .values()
            .filter(|w| w.info.role == role && !w.info.draining && !w.link.is_cut())
            .filter(|w| !self.lease_mode || leased.contains_key(&w.info.worker_id))
            .filter(|w| (w.sessions.len() as u32) < w.info.capacity)
            .filter(|w| !exclude.contains(&w.info.worker_id) && !w.sessions.contains(session_id))
            .min_by(|a, b| {
                a.sessions
                    .len()
                    .cmp(&b.sessions.len())
                    .then(a.info.turns_completed.cmp(&b.info.turns_completed))
                    .then(a.info.worker_id.cmp(&b.info.worker_id))
            })
            .map(|w| w.info.worker_id.clone())?;
        let worker = workers.get_mut(&chosen).expect("just found");
        worker.sessions.insert(session_id.to_string());
        worker.info.load = worker.sessions.len() as u32;
        Some(chosen)
    }

    /// The key the connected worker `worker_id` announced.
    pub fn public_key(&self, worker_id: &str) -> Option<agentmesh_core::trust::PublicKey> {
        self.workers
            .lock()
            .expect("registry lock")
            .get(worker_id)
            .and_then(|w| w.info.public_key)
    }

    fn saw_key(&self, info: &WorkerInfo, key: agentmesh_core::trust::PublicKey) {
        let mut seen = self.seen.lock().expect("seen lock");
        seen.insert(
            (info.worker_id.clone(), key),
            SeenKey {
                worker_id: info.worker_id.clone(),
                role: info.role.clone(),
                public_key: key,
                seen_ms: info.connected_ms,
            },
        );
        if seen.len() > SEEN_KEYS
            && let Some(oldest) = seen
                .iter()
                .min_by_key(|(_, k)| k.seen_ms)
                .map(|(id, _)| id.clone())
        {
            seen.remove(&oldest);
        }
    }

    /// Every worker key this coordinator has seen, by role and worker id.
    pub fn seen_keys(&self) -> Vec<SeenKey> {
        let mut keys: Vec<SeenKey> = self
            .seen
            .lock()
            .expect("seen lock")
            .values()
            .cloned()
            .collect();
        keys.sort_by(|a, b| (&a.role, &a.worker_id).cmp(&(&b.role, &b.worker_id)));
        keys
    }

    /// The session no longer uses this worker.
    pub fn release(&self, worker_id: &str, session_id: &str) {
        let mut workers = self.workers.lock().expect("registry lock");
        if let Some(w) = workers.get_mut(worker_id) {
            w.sessions.remove(session_id);
            w.cursors.remove(session_id);
            w.info.load = w.sessions.len() as u32;
            drop(workers);
            // Capacity was freed: a waiting session may now find a worker.
            self.changes.send_modify(|n| *n += 1);
        }
    }

    pub fn set_draining(&self, worker_id: &str) {
        if let Some(w) = self
            .workers
            .lock()
            .expect("registry lock")
            .get_mut(worker_id)
        {
            w.info.draining = true;
        }
    }

    pub fn count_turn(&self, worker_id: &str) {
        if let Some(w) = self
            .workers
            .lock()
            .expect("registry lock")
            .get_mut(worker_id)
        {
            w.info.turns_completed += 1;
        }
    }

    /// The seq up to which the worker said (in its Hello) it holds `session_id`.
    pub fn reported_cursor(&self, worker_id: &str, session_id: &str) -> u64 {
        let workers = self.workers.lock().expect("registry lock");
        workers
            .get(worker_id)
            .and_then(|w| w.cursors.get(session_id).copied())
            .unwrap_or(0)
    }

    /// Connected workers that said, when they connected, that they hold `session_id`.
    pub fn reported_holders(&self, session_id: &str) -> Vec<String> {
        let workers = self.workers.lock().expect("registry lock");
        workers
            .values()
            .filter(|w| w.cursors.contains_key(session_id))
            .map(|w| w.info.worker_id.clone())
            .collect()
    }

    /// The link to a worker, if it is still connected.
    pub fn link(&self, worker_id: &str) -> Option<WorkerLink> {
        let workers = self.workers.lock().expect("registry lock");
        workers.get(worker_id).map(|w| w.link.clone())
    }

    /// Queues `message` for a worker without waiting (see [`WorkerLink::send`]); false
    /// when the worker is gone or was cut off for not reading.
    pub fn send(&self, worker_id: &str, message: ToWorker) -> bool {
        self.link(worker_id).is_some_and(|link| link.send(message))
    }

    /// Every worker that is connected or (cluster mode) registered under a lease.
    pub fn list(&self) -> Vec<WorkerInfo> {
        let leased = self.leased.lock().expect("lease lock");
        let workers = self.workers.lock().expect("registry lock");
        let mut all: Vec<WorkerInfo> = workers
            .values()
            .map(|w| {
                let mut info = w.info.clone();
                info.connected = true;
                info.leased = !self.lease_mode || leased.contains_key(&info.worker_id);
                if let Some(record) = leased.get(&info.worker_id) {
                    info.address = record.address.clone();
                }
                info
            })
            .collect();
        for record in leased.values() {
            if !workers.contains_key(&record.worker_id) {
                all.push(WorkerInfo {
                    worker_id: record.worker_id.clone(),
                    role: record.role.clone(),
                    capacity: record.capacity,
                    version: record.version.clone(),
                    address: record.address.clone(),
                    leased: true,
                    ..Default::default()
                });
            }
        }
        all.sort_by(|a, b| a.role.cmp(&b.role).then(a.worker_id.cmp(&b.worker_id)));
        all
    }

    /// Ends a worker's stream now; its reader then removes it and its sessions reassign
    /// its turns.
    pub fn cut(&self, worker_id: &str, why: Cut) {
        if let Some(link) = self.link(worker_id) {
            link.cut(why);
        }
    }

    /// Ends every worker stream (stepping down): workers reconnect to the new leader.
    pub fn cut_all(&self, why: Cut) {
        for worker in self.workers.lock().expect("registry lock").values() {
            worker.link.cut(why.clone());
        }
    }

    /// Applies a lease change from the worker registry. Returns the ids whose lease is
    /// gone while they still hold a stream.
    pub fn apply_lease_event(&self, event: RegistryEvent) -> Vec<String> {
        let mut leased = self.leased.lock().expect("lease lock");
        let gone: Vec<String> = match event {
            RegistryEvent::Snapshot(records) => {
                let fresh: BTreeMap<String, WorkerRecord> = records
                    .into_iter()
                    .map(|r| (r.worker_id.clone(), r))
                    .collect();
                let gone = leased
                    .keys()
                    .filter(|id| !fresh.contains_key(*id))
                    .cloned()
                    .collect();
                *leased = fresh;
                gone
            }
            RegistryEvent::Up(record) => {
                leased.insert(record.worker_id.clone(), record);
                Vec::new()
            }
            RegistryEvent::Down { worker_id, .. } => {
                leased.remove(&worker_id);
                vec![worker_id]
            }
        };
        drop(leased);
        self.changes.send_modify(|n| *n += 1);
        let workers = self.workers.lock().expect("registry lock");
        gone.into_iter()
            .filter(|id| workers.contains_key(id))
            .collect()
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// Follows the worker leases (cluster mode): a worker whose lease expires — a frozen
/// process, one cut off from etcd — is cut off, and its sessions reassign its turns.
pub(crate) async fn follow_leases(
    registry: Arc<Registry>,
    workers: Arc<dyn WorkerRegistry>,
    shutdown: CancellationToken,
) {
    let mut events = workers.watch();
    let mut retry = agentmesh_proto::Backoff::new(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(5),
    );
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = shutdown.cancelled() => return,
        };
        let Some(event) = event else {
            let delay = retry.next_delay();
            tracing::error!(?delay, "the worker registry watch ended; restarting it");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return,
            }
            events = workers.watch();
            continue;
        };
        retry.reset();
        for worker_id in registry.apply_lease_event(event) {
            tracing::warn!(%worker_id, "lease expired; cutting the worker off");
            // Its reader sees the cut, removes it, and its sessions reassign its turns.
            registry.cut(&worker_id, Cut::LeaseExpired);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: &str, role: &str, capacity: u32) -> WorkerInfo {
        WorkerInfo {
            worker_id: id.into(),
            role: role.into(),
            capacity,
            ..Default::default()
        }
    }

    #[test]
    fn reserve_spreads_load_and_respects_capacity() {
        let registry = Registry::new(false);
        let (link, _rx) = WorkerLink::new(crate::config::DEFAULT_WORKER_QUEUE);
        registry
            .register(worker("b1", "backend", 2), HashMap::new(), link.clone())
            .unwrap();
        registry
            .register(worker("b2", "backend", 2), HashMap::new(), link.clone())
            .unwrap();
        assert!(
            registry
                .register(worker("b2", "backend", 2), HashMap::new(), link)
                .is_err()
        );
        let none = BTreeSet::new();
        let picks: Vec<_> = (0..4)
            .map(|i| {
                registry
                    .reserve("backend", &format!("s{i}"), &none)
                    .unwrap()
            })
            .collect();
        assert_eq!(picks, ["b1", "b2", "b1", "b2"]);
        assert_eq!(
            registry.reserve("backend", "s5", &none),
            None,
            "both at capacity"
        );
        assert_eq!(registry.reserve("frontend", "s5", &none), None);
        registry.release("b2", "s1");
        assert_eq!(
            registry.reserve("backend", "s5", &none).as_deref(),
            Some("b2")
        );
        assert_eq!(
            registry.remove_connection("b1", 1),
            Some(("backend".into(), vec!["s0".to_string(), "s2".to_string()]))
        );
    }

    #[test]
    fn a_worker_that_does_not_read_is_cut_off_and_never_waited_for() {
        let registry = Registry::new(false);
        let (link, mut rx) = WorkerLink::new(crate::config::DEFAULT_WORKER_QUEUE);
        registry
            .register(worker("b1", "backend", 1), HashMap::new(), link.clone())
            .unwrap();
        let end = |i: usize| ToWorker::SessionEnd {
            session_id: format!("s{i}"),
            status: None,
            reason: String::new(),
        };
        for i in 0..crate::config::DEFAULT_WORKER_QUEUE {
            assert!(registry.send("b1", end(i)), "room for message {i}");
        }
        assert!(!link.is_cut());
        // The queue is full: the next send returns at once, and cuts the worker off.
        assert!(!registry.send("b1", end(crate::config::DEFAULT_WORKER_QUEUE)));
        assert!(link.is_cut());
        assert_eq!(
            registry.reserve("backend", "s-new", &BTreeSet::new()),
            None,
            "a cut-off worker is assigned nothing"
        );
        // What was queued is still readable (the edge drops it when it ends the stream).
        assert!(rx.try_recv().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_takes_nothing_for_too_long_is_stalled() {
        let limit = std::time::Duration::from_secs(6);
        let (link, _rx) = WorkerLink::new(8);
        tokio::time::sleep(limit * 10).await;
        assert!(!link.stalled(limit), "an idle worker owes nothing");
        let end = || ToWorker::SessionEnd {
            session_id: "s".into(),
            status: None,
            reason: String::new(),
        };
        assert!(link.send(end()));
        assert!(
            !link.stalled(limit),
            "the clock starts when the queue fills"
        );
        tokio::time::sleep(limit / 2).await;
        assert!(link.send(end()));
        link.taken();
        tokio::time::sleep(limit / 2 + std::time::Duration::from_millis(1)).await;
        assert!(!link.stalled(limit), "it took a message half a limit ago");
        tokio::time::sleep(limit).await;
        assert!(link.stalled(limit), "one message has waited a whole limit");
        link.taken();
        assert!(!link.stalled(limit), "all taken");
    }
}
