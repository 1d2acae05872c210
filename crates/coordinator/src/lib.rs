//! The agentmesh coordinator: runs negotiation sessions between worker processes that
//! hold a bidirectional gRPC stream to it.
//!
//! # Layout
//!
//! - [`run`]: serve on a listener until a shutdown future resolves, then drain.
//! - [`Mesh`]: the shared state — config, [`registry::Registry`] of live workers, the
//!   session store, the current leadership [`leadership::Term`], the live session actors
//!   and their event logs.
//! - [`leadership`]: campaign, lead (resume unfinished sessions), step down, repeat.
//! - [`http`]: `/healthz` (alive) and `/readyz` (leading) for probes and Services.
//! - [`sessions`]: one actor task per session, driving the pure core
//!   (`agentmesh_core::Session`) and carrying out its effects.
//! - [`worker_api`]: the `WorkerService.Attach` stream — Hello, turn results, failures,
//!   heartbeats, draining.
//! - [`client_api`]: the `SessionService` — create, get, list, cancel, workers,
//!   transcript, watch.
//! - [`events`]: the per-session ordered event log behind `WatchSession` (each event
//!   encoded once, shared by every watcher) and the mesh log behind `WatchMesh`.
//! - [`watch`]: one follower task per watcher, reading a log from its own cursor, with
//!   a batch window so many watchers of a busy session cost few writes.
//! - [`watch_grpc`]: serves `WatchSession` from the shared encodings (a wrapper around
//!   the generated `SessionService` server).
//! - [`errors`]: the one table from failures to gRPC status codes.
//! - [`oversize`]: the tower layer that reports oversized requests as RESOURCE_EXHAUSTED.

pub mod client_api;
pub mod errors;
pub mod events;
pub mod http;
pub mod leadership;
pub mod oversize;
pub mod registry;
pub mod sessions;
pub mod watch;
pub mod watch_grpc;
pub mod worker_api;

use agentmesh_core::{Reply, Session, SessionConfig, SessionSpec, SessionSummary, TurnKey};
use agentmesh_proto::v1::session_service_server::SessionServiceServer;
use agentmesh_proto::v1::worker_service_server::WorkerServiceServer;
use agentmesh_store::{Election, Fence, SessionStore, WorkerRegistry};
use errors::MeshError;
use events::{EventLog, MeshLog, SessionLogs};
use leadership::Term;
use registry::Registry;
use sessions::{SessionActor, SessionCmd};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Largest message the coordinator sends. Turn requests to a replacement worker carry
/// the whole transcript so far, which may exceed the inbound limit.
pub const MAX_ENCODE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Identifies this coordinator in Welcome messages and logs.
    pub coordinator_id: String,
    /// How long a phase waits for its turns, including for a replacement worker.
    pub phase_timeout: Duration,
    /// How long a new session waits in PENDING for a worker of every role.
    pub pending_timeout: Duration,
    /// The largest message the coordinator accepts (RESOURCE_EXHAUSTED beyond).
    pub max_message_bytes: usize,
    /// The largest entry content a worker may submit (RESOURCE_EXHAUSTED beyond).
    pub max_entry_bytes: usize,
    /// Rounds a session gets when the client does not say.
    pub default_max_rounds: u32,
    /// How often workers must show signs of life; silence for 3 intervals drops them.
    pub heartbeat_interval: Duration,
    /// How long shutdown waits for connections to close.
    pub drain_timeout: Duration,
    /// How long a session watcher may hold events back to send them together, unless it
    /// asks for another window. One write per watcher per window instead of per event
    /// is what keeps many watchers from slowing the sessions they watch.
    pub watch_batch_window: Duration,
    /// How many ended sessions keep their event log in memory; older ones are rebuilt
    /// from the store when watched.
    pub ended_logs_kept: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            coordinator_id: "coordinator".into(),
            phase_timeout: Duration::from_secs(60),
            pending_timeout: Duration::from_secs(60),
            max_message_bytes: 1024 * 1024,
            max_entry_bytes: 512 * 1024,
            default_max_rounds: 4,
            heartbeat_interval: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(5),
            watch_batch_window: Duration::from_millis(10),
            ended_logs_kept: 256,
        }
    }
}

impl CoordinatorConfig {
    fn session_config(&self) -> SessionConfig {
        SessionConfig {
            phase_timeout_ms: self.phase_timeout.as_millis() as i64,
            pending_timeout_ms: self.pending_timeout.as_millis() as i64,
            max_turn_attempts: 3,
            max_content_bytes: self.max_entry_bytes,
        }
    }
}

/// A session event log holding `history` (entries and status changes, in order).
fn event_log_of(summary: &SessionSummary, history: &[agentmesh_core::Effect]) -> EventLog {
    use agentmesh_proto::v1;
    let log = EventLog::default();
    for effect in history {
        match effect {
            agentmesh_core::Effect::Appended(entry) => log.push(
                &summary.id,
                entry.timestamp_ms,
                v1::session_event::Event::Entry(v1::Entry::from(entry)),
                None,
            ),
            agentmesh_core::Effect::StatusChanged { status, round } => log.push(
                &summary.id,
                summary.updated_ms,
                v1::session_event::Event::Status(v1::StatusChange {
                    status: v1::SessionStatus::from(*status) as i32,
                    round: *round,
                    reason: if status.is_terminal() {
                        summary.reason.clone()
                    } else {
                        String::new()
                    },
                    awaiting: Vec::new(),
                }),
                None,
            ),
            _ => {}
        }
    }
    log
}

/// Where a coordinator keeps state and finds its peers.
pub struct Backends {
    pub store: Arc<dyn SessionStore>,
    pub election: Arc<dyn Election>,
    /// Worker leases (cluster mode). Without it, a connected stream is enough to be live.
    pub workers: Option<Arc<dyn WorkerRegistry>>,
    /// Whether the store survives this process: then shutdown hands sessions over
    /// (leaves them unfinished for the next leader) instead of cancelling them.
    pub durable: bool,
}

/// The coordinator's shared state.
pub struct Mesh {
    pub config: CoordinatorConfig,
    pub registry: Registry,
    pub store: Arc<dyn SessionStore>,
    pub election: Arc<dyn Election>,
    pub durable: bool,
    /// The current leadership term; standby when not leading.
    term: tokio::sync::watch::Sender<Term>,
    /// Sessions whose actor is running, by id.
    live: Mutex<HashMap<String, mpsc::Sender<SessionCmd>>>,
    /// Running sessions' event logs, and the most recently ended ones'.
    logs: Mutex<SessionLogs>,
    /// The mesh-wide event log of the current term.
    mesh_log: Mutex<Arc<MeshLog>>,
    pub shutdown: CancellationToken,
    /// Signalled when a store write shows this coordinator may no longer lead.
    doubt: tokio::sync::Notify,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Mesh {
    pub fn new(mut config: CoordinatorConfig, backends: &Backends) -> Arc<Mesh> {
        // A reply the store could not hold in one write is refused up front
        // (RESOURCE_EXHAUSTED), before it is accepted. 4 KiB covers the entry's fields.
        let store_limit = backends.store.max_entry_bytes().saturating_sub(4096);
        config.max_entry_bytes = config.max_entry_bytes.min(store_limit);
        let ended_logs_kept = config.ended_logs_kept;
        Arc::new(Mesh {
            config,
            registry: Registry::new(backends.workers.is_some()),
            store: backends.store.clone(),
            election: backends.election.clone(),
            durable: backends.durable,
            term: tokio::sync::watch::channel(Term::standby()).0,
            live: Mutex::new(HashMap::new()),
            logs: Mutex::new(SessionLogs::new(ended_logs_kept)),
            mesh_log: Mutex::new(Arc::new(MeshLog::new(now_ms().max(1) as u64 * 1000))),
            shutdown: CancellationToken::new(),
            doubt: tokio::sync::Notify::new(),
        })
    }

    /// A write was fenced or failed in a way that puts our leadership in question: the
    /// leadership loop steps down and campaigns again.
    pub(crate) async fn doubted(&self) {
        self.doubt.notified().await
    }

    pub(crate) fn leadership_in_doubt(&self) {
        self.doubt.notify_one();
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term.borrow().clone()
    }

    pub fn is_leader(&self) -> bool {
        self.term.borrow().leading
    }

    /// Refuses a call on a standby, naming the leader when it is known.
    pub async fn require_leader(&self) -> Result<Term, tonic::Status> {
        let term = self.term();
        if term.leading {
            return Ok(term);
        }
        let leader = self.election.leader().await.ok().flatten();
        let mut status = tonic::Status::unavailable(match &leader {
            Some(addr) => format!("this coordinator is a standby; the leader is {addr}"),
            None => "this coordinator is a standby and no leader is elected yet".to_string(),
        });
        if let Some(addr) = leader
            && let Ok(value) = addr.parse()
        {
            status
                .metadata_mut()
                .insert(leadership::LEADER_METADATA, value);
        }
        Err(status)
    }

    /// Starts a leadership term with `fence` guarding every write.
    pub(crate) fn begin_term(&self, fence: Fence) -> Term {
        *self.mesh_log.lock().expect("mesh log lock") =
            Arc::new(MeshLog::new(now_ms().max(1) as u64 * 1000));
        let term = Term {
            leading: true,
            fence,
            token: CancellationToken::new(),
        };
        self.term.send_replace(term.clone());
        term
    }

    /// Ends the term: session actors stop without writing, workers are disconnected so
    /// they look for the new leader, and in-memory session state is dropped.
    pub(crate) async fn end_term(&self) {
        let old = self.term.send_replace(Term::standby());
        old.token.cancel();
        self.live.lock().expect("live lock").clear();
        for log in self.logs.lock().expect("logs lock").drain() {
            log.close();
        }
        self.registry
            .disconnect_all(tonic::Status::unavailable(
                "this coordinator lost its leadership; reconnect to the new leader",
            ))
            .await;
    }

    /// Loads every unfinished session from the store and continues it (new leader, or a
    /// restart on durable data). Retries while the store is unreachable.
    pub(crate) async fn resume_unfinished(self: &Arc<Self>, term: &Term) {
        let mut delay = Duration::from_millis(200);
        let unfinished = loop {
            match self.store.unfinished().await {
                Ok(list) => break list,
                Err(e) => {
                    tracing::error!(error = %e, ?delay, "cannot list unfinished sessions; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = term.token.cancelled() => return,
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        for header in unfinished {
            let entries = match self.store.entries(&header.id, 1).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(session = %header.id, error = %e, "cannot load transcript; skipping");
                    continue;
                }
            };
            match self.replay(&header, &entries) {
                Ok((session, effects, history)) => {
                    tracing::info!(session = %header.id, entries = entries.len(), status = %session.status(), round = session.round(), "resumed");
                    self.spawn_session(session, effects, term.clone(), &history);
                }
                Err(e) => {
                    tracing::error!(session = %header.id, error = %e, "cannot resume session")
                }
            }
        }
    }

    fn spawn_session(
        self: &Arc<Self>,
        session: Session,
        effects: Vec<agentmesh_core::Effect>,
        term: Term,
        history: &[agentmesh_core::Effect],
    ) {
        let id = session.id().to_string();
        let (tx, rx) = mpsc::channel(256);
        // A resumed session's watchers see the same events the old leader published.
        let log = Arc::new(event_log_of(&session.summary(), history));
        self.live.lock().expect("live lock").insert(id.clone(), tx);
        self.logs
            .lock()
            .expect("logs lock")
            .insert_running(&id, log.clone());
        let actor = SessionActor::new(self.clone(), session, log, rx, term);
        tokio::spawn(
            actor
                .run(effects)
                .instrument(tracing::info_span!("session", id = %id)),
        );
    }

    /// Publishes a mesh-wide event.
    pub(crate) fn publish(&self, event: agentmesh_proto::v1::mesh_event::Event) {
        self.mesh_log().push(now_ms(), event);
    }

    pub fn mesh_log(&self) -> Arc<MeshLog> {
        self.mesh_log.lock().expect("mesh log lock").clone()
    }

    /// Rebuilds a stored session through the core: its state, the effects that continue
    /// it, and the history of effects its transcript implies (see `Session::restore_in`).
    fn replay(
        &self,
        header: &SessionSummary,
        entries: &[agentmesh_core::Entry],
    ) -> Result<
        (
            Session,
            Vec<agentmesh_core::Effect>,
            Vec<agentmesh_core::Effect>,
        ),
        String,
    > {
        Session::restore_in(
            header.mode(),
            header.spec(),
            self.config.session_config(),
            header.created_ms,
            entries,
            now_ms(),
        )
    }

    /// The event log of a session: the live one, or one rebuilt from the store (a session
    /// that ended under another leader or before a restart).
    pub async fn session_log(&self, id: &str) -> Result<Arc<EventLog>, MeshError> {
        if let Some(log) = self.event_log(id) {
            return Ok(log);
        }
        let header = self.summary(id).await?;
        let entries = self
            .store
            .entries(id, 1)
            .await
            .map_err(|e| MeshError::Store(e.to_string()))?;
        let (replayed, _, history) = self.replay(&header, &entries).map_err(MeshError::Store)?;
        let log = event_log_of(&replayed.summary(), &history);
        if replayed.status() != header.status {
            // Cancelled, failed, or not finished and not running here: the header says how.
            log.push(
                id,
                header.updated_ms,
                agentmesh_proto::v1::session_event::Event::Status(
                    agentmesh_proto::v1::StatusChange {
                        status: agentmesh_proto::v1::SessionStatus::from(header.status) as i32,
                        round: header.round,
                        reason: header.reason.clone(),
                        awaiting: Vec::new(),
                    },
                ),
                Some(agentmesh_proto::v1::Session::from(&header)),
            );
        }
        if header.status.is_terminal() {
            log.close();
        }
        let log = Arc::new(log);
        if header.status.is_terminal() {
            self.logs
                .lock()
                .expect("logs lock")
                .insert_ended(id, log.clone());
        }
        Ok(log)
    }

    /// Validates the request, starts the session's actor and returns its first summary.
    pub async fn create_session(
        self: &Arc<Self>,
        term: Term,
        task: String,
        roles: Vec<String>,
        max_rounds: u32,
    ) -> Result<SessionSummary, MeshError> {
        self.create_session_in(term, task, roles, max_rounds, 0)
            .await
    }

    /// [`Mesh::create_session`]; `broadcast_rounds` > 0 makes it a broadcast (benchmark)
    /// session ([`agentmesh_core::SessionMode::Broadcast`]).
    pub async fn create_session_in(
        self: &Arc<Self>,
        term: Term,
        task: String,
        roles: Vec<String>,
        max_rounds: u32,
        broadcast_rounds: u32,
    ) -> Result<SessionSummary, MeshError> {
        if self.shutdown.is_cancelled() {
            return Err(MeshError::ShuttingDown);
        }
        let specialists = if roles.is_empty() {
            agentmesh_core::DEFAULT_SPECIALISTS
                .iter()
                .map(|r| r.to_string())
                .collect()
        } else {
            roles
        };
        let spec = SessionSpec {
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            task,
            specialists,
            max_rounds: if max_rounds == 0 {
                self.config.default_max_rounds
            } else {
                max_rounds
            },
        };
        spec.validate()?;
        let mode = agentmesh_core::SessionMode::from_broadcast_rounds(broadcast_rounds);
        mode.validate()?;
        let (session, effects) =
            Session::new_in(mode, spec, self.config.session_config(), now_ms());
        let summary = session.summary();
        let id = summary.id.clone();
        // The client is told the session exists only once the store holds it.
        self.store
            .write(&term.fence, &summary, &[])
            .await
            .map_err(|e| match e {
                agentmesh_store::StoreError::Fenced(_) => MeshError::ShuttingDown,
                other => MeshError::Store(other.to_string()),
            })?;
        self.spawn_session(session, effects, term, &[]);
        self.publish(agentmesh_proto::v1::mesh_event::Event::SessionCreated(
            agentmesh_proto::v1::Session::from(&summary),
        ));
        tracing::info!(session = %id, "session created");
        Ok(summary)
    }

    pub(crate) fn forget_live_session(&self, id: &str) {
        self.live.lock().expect("live lock").remove(id);
        self.logs.lock().expect("logs lock").ended(id);
    }

    /// Whether this coordinator runs the session's actor now.
    pub fn is_running(&self, id: &str) -> bool {
        self.live.lock().expect("live lock").contains_key(id)
    }

    fn live_session(&self, id: &str) -> Option<mpsc::Sender<SessionCmd>> {
        self.live.lock().expect("live lock").get(id).cloned()
    }

    pub fn event_log(&self, id: &str) -> Option<Arc<EventLog>> {
        self.logs.lock().expect("logs lock").get(id)
    }

    pub async fn summary(&self, id: &str) -> Result<SessionSummary, MeshError> {
        self.store
            .get(id)
            .await
            .map_err(|_| MeshError::SessionNotFound(id.to_string()))
    }

    /// Routes a worker's result to its session and waits for the verdict.
    pub async fn submit_result(
        &self,
        worker_id: &str,
        session_id: &str,
        turn: TurnKey,
        reply: Reply,
    ) -> Result<agentmesh_core::Applied, MeshError> {
        if let Some(tx) = self.live_session(session_id) {
            let (ack, answer) = oneshot::channel();
            let cmd = SessionCmd::Result {
                worker_id: worker_id.to_string(),
                turn: turn.clone(),
                reply,
                ack: sessions::AckTo::Caller(ack),
            };
            if tx.send(cmd).await.is_ok()
                && let Ok(result) = answer.await
            {
                return result;
            }
        }
        self.answer_for_ended(worker_id, session_id, &turn).await
    }

    /// Routes a worker's result to its session's actor, which answers `ack` once the
    /// result's phase is written. Returns the result's turn and `ack` when no actor took
    /// it: the session is not running here, and [`Mesh::answer_for_ended`] must answer.
    pub(crate) async fn route_result(
        &self,
        worker_id: &str,
        session_id: &str,
        turn: TurnKey,
        reply: Reply,
        ack: sessions::AckTo,
    ) -> Option<(TurnKey, sessions::AckTo)> {
        let Some(tx) = self.live_session(session_id) else {
            return Some((turn, ack));
        };
        let cmd = SessionCmd::Result {
            worker_id: worker_id.to_string(),
            turn,
            reply,
            ack,
        };
        match tx.send(cmd).await {
            Ok(()) => None,
            Err(mpsc::error::SendError(SessionCmd::Result { turn, ack, .. })) => Some((turn, ack)),
            Err(_) => unreachable!("the command sent was a result"),
        }
    }

    /// A result for a session with no running actor: an idempotent duplicate if the
    /// transcript already holds this worker's answer to this turn, else refused.
    pub(crate) async fn answer_for_ended(
        &self,
        worker_id: &str,
        session_id: &str,
        turn: &TurnKey,
    ) -> Result<agentmesh_core::Applied, MeshError> {
        let summary = self.summary(session_id).await?;
        let entries = self
            .store
            .entries(session_id, 1)
            .await
            .map_err(|e| MeshError::Store(e.to_string()))?;
        if let Some(entry) = entries.iter().find(|e| {
            e.round == turn.round
                && e.phase == turn.phase
                && e.role == turn.role
                && e.worker_id == worker_id
        }) {
            return Ok(agentmesh_core::Applied {
                seq: Some(entry.seq),
                duplicate: true,
                ..Default::default()
            });
        }
        Err(MeshError::SessionEnded {
            id: session_id.to_string(),
            status: summary.status.to_string(),
        })
    }

    pub async fn submit_failure(
        &self,
        worker_id: &str,
        session_id: &str,
        turn: TurnKey,
        reason: String,
    ) -> Result<agentmesh_core::Applied, MeshError> {
        let Some(tx) = self.live_session(session_id) else {
            let summary = self.summary(session_id).await?;
            return Err(MeshError::SessionEnded {
                id: session_id.to_string(),
                status: summary.status.to_string(),
            });
        };
        let (ack, answer) = oneshot::channel();
        let cmd = SessionCmd::TurnFailed {
            worker_id: worker_id.to_string(),
            turn,
            reason,
            ack,
        };
        tx.send(cmd).await.map_err(|_| MeshError::ShuttingDown)?;
        answer.await.map_err(|_| MeshError::ShuttingDown)?
    }

    pub async fn cancel(
        &self,
        session_id: &str,
        reason: String,
    ) -> Result<SessionSummary, MeshError> {
        if let Some(tx) = self.live_session(session_id) {
            let (ack, answer) = oneshot::channel();
            if tx.send(SessionCmd::Cancel { reason, ack }).await.is_ok()
                && let Ok(result) = answer.await
            {
                return result;
            }
        }
        let summary = self.summary(session_id).await?;
        Err(MeshError::SessionEnded {
            id: session_id.to_string(),
            status: summary.status.to_string(),
        })
    }

    /// Tells every session the worker held a role in that it is gone.
    pub async fn worker_lost(&self, worker_id: &str, sessions: Vec<String>) {
        for id in sessions {
            if let Some(tx) = self.live_session(&id) {
                let _ = tx
                    .send(SessionCmd::WorkerLost {
                        worker_id: worker_id.to_string(),
                    })
                    .await;
            }
        }
    }

    /// Cancels every running session (used on shutdown) and waits for them to end.
    pub async fn cancel_all(&self, reason: &str) {
        let ids: Vec<String> = self
            .live
            .lock()
            .expect("live lock")
            .keys()
            .cloned()
            .collect();
        for id in ids {
            let _ = self.cancel(&id, reason.to_string()).await;
        }
    }
}

/// Where a coordinator listens.
pub struct Listeners {
    pub grpc: TcpListener,
    /// `/healthz` and `/readyz` (and later the dashboard).
    pub http: Option<TcpListener>,
    /// The gRPC URL workers and clients should use to reach this coordinator when it
    /// leads (published through the election).
    pub advertise: String,
}

/// Serves the coordinator until `shutdown` resolves, then drains: with a memory store,
/// running sessions are cancelled (their workers are told); with a durable one they are
/// left for the next leader. Worker and watch streams end, leadership is resigned, and
/// the server stops within `drain_timeout`.
pub async fn run(
    listeners: Listeners,
    config: CoordinatorConfig,
    backends: Backends,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mesh = Mesh::new(config, &backends);
    let addr = listeners.grpc.local_addr()?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<WorkerServiceServer<worker_api::WorkerApi>>()
        .await;
    health
        .set_serving::<SessionServiceServer<client_api::ClientApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(agentmesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let max = mesh.config.max_message_bytes;
    let worker_service = WorkerServiceServer::new(worker_api::WorkerApi::new(mesh.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(MAX_ENCODE_BYTES);
    let session_service = watch_grpc::SessionRoutes::new(
        SessionServiceServer::new(client_api::ClientApi::new(mesh.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(MAX_ENCODE_BYTES),
        mesh.clone(),
    );

    if let Some(workers) = backends.workers.clone() {
        tokio::spawn(registry::follow_leases(mesh.clone(), workers));
    }
    let leader_task = tokio::spawn(leadership::lead(
        mesh.clone(),
        backends.election.clone(),
        listeners.advertise.clone(),
    ));
    let http_task = listeners
        .http
        .map(|listener| tokio::spawn(http::serve(listener, mesh.clone())));

    let drain_mesh = mesh.clone();
    let (drained_tx, drained_rx) = oneshot::channel::<()>();
    let on_shutdown = async move {
        shutdown.await;
        health
            .set_not_serving::<SessionServiceServer<client_api::ClientApi>>()
            .await;
        if drain_mesh.durable {
            tracing::info!("shutting down: running sessions stay unfinished for the next leader");
        } else {
            tracing::info!("shutting down: cancelling running sessions");
            drain_mesh.cancel_all("coordinator shutting down").await;
        }
        // Worker and watch streams end when the token fires; the leadership loop ends
        // the term and resigns; then the server drains.
        drain_mesh.shutdown.cancel();
        let _ = leader_task.await;
        let _ = drained_tx.send(());
    };

    tracing::info!(%addr, advertise = %listeners.advertise, "coordinator listening");
    // Turn requests, results and acks are small and latency-bound: no Nagle delay. Set on
    // the incoming stream, since the builder's `tcp_nodelay` only applies to listeners
    // tonic binds itself.
    let incoming =
        tonic::transport::server::TcpIncoming::from(listeners.grpc).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        // Detect a dead worker connection (cable cut, frozen peer) even when no
        // message is due; heartbeats cover the application level.
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // Outermost, so it sees the answers tonic gives before any handler runs: an
        // oversized request must read RESOURCE_EXHAUSTED, whichever service it hit.
        .layer(tower::util::MapResponseLayer::new(
            oversize::correct_oversize_status,
        ))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(worker_service)
        .add_service(session_service)
        .serve_with_incoming_shutdown(incoming, on_shutdown);

    let drain_timeout = mesh.config.drain_timeout;
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result?,
        () = async {
            let _ = drained_rx.await;
            tokio::time::sleep(drain_timeout).await;
        } => {
            tracing::warn!("connections still open after the drain timeout; stopping anyway");
        }
    }
    if let Some(task) = http_task {
        task.abort();
    }
    tracing::info!("coordinator stopped");
    Ok(())
}
