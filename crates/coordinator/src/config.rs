//! What a coordinator is started with: its settings, its backends, its listeners.

use crate::clock::{Clock, SystemClock};
use agentmesh_core::SessionConfig;
use agentmesh_store::{Election, SessionStore, WorkerRegistry};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The largest live session count admitted by default (`--max-sessions`): far above what
/// one coordinator runs at once (docs/performance.md measures 100 in flight), and about
/// 100 MB of memory for sessions with a few KiB of task each, so a client that floods the
/// coordinator is refused long before the host runs short.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;

/// How many messages may wait for one worker to read them by default (`worker_queue`).
/// A worker that reads its stream is never near it: it holds at most `capacity` turns at
/// a time, plus their acks.
pub const DEFAULT_WORKER_QUEUE: usize = 256;

/// The largest task admitted by default (`--max-task-bytes`): a long design brief fits;
/// a task is copied into every turn prompt, so a huge one would cost every worker too.
pub const DEFAULT_MAX_TASK_BYTES: usize = 64 * 1024;

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
    /// Live sessions (pending or running) admitted at once; more are RESOURCE_EXHAUSTED.
    pub max_sessions: usize,
    /// The largest task a client may submit (RESOURCE_EXHAUSTED beyond).
    pub max_task_bytes: usize,
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
    /// How many messages may wait for one worker to read them; a worker that lets its
    /// queue fill is cut off and its turns reassigned.
    pub worker_queue: usize,
    /// Results must be signed by their worker's announced key (`--signatures required`,
    /// the default); off (`--signatures off`) only to measure the cost (`mesh-bench`).
    pub require_signatures: bool,
    /// The key this coordinator signs unanimity certificates with (`--signing-key`; an
    /// ephemeral one by default).
    pub signing_key: std::sync::Arc<agentmesh_core::trust::KeyPair>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            coordinator_id: "coordinator".into(),
            phase_timeout: Duration::from_secs(60),
            pending_timeout: Duration::from_secs(60),
            max_message_bytes: 1024 * 1024,
            max_entry_bytes: 512 * 1024,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_task_bytes: DEFAULT_MAX_TASK_BYTES,
            default_max_rounds: 4,
            heartbeat_interval: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(5),
            watch_batch_window: Duration::from_millis(10),
            ended_logs_kept: 256,
            worker_queue: DEFAULT_WORKER_QUEUE,
            require_signatures: true,
            signing_key: std::sync::Arc::new(
                agentmesh_proto::keys::generate().expect("the OS gives random bytes"),
            ),
        }
    }
}

impl CoordinatorConfig {
    /// The core's settings, with the store's limit on one stored entry.
    pub(crate) fn session_config(&self, store_entry_limit: usize) -> SessionConfig {
        SessionConfig {
            phase_timeout_ms: self.phase_timeout.as_millis() as i64,
            pending_timeout_ms: self.pending_timeout.as_millis() as i64,
            max_turn_attempts: 3,
            max_content_bytes: self.max_entry_bytes,
            max_stored_entry_bytes: store_entry_limit,
            require_signatures: self.require_signatures,
        }
    }
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
    /// The time, as the core and the session deadlines see it.
    pub clock: Arc<dyn Clock>,
}

impl Backends {
    /// Backends with the system clock.
    pub fn new(
        store: Arc<dyn SessionStore>,
        election: Arc<dyn Election>,
        workers: Option<Arc<dyn WorkerRegistry>>,
        durable: bool,
    ) -> Backends {
        Backends {
            store,
            election,
            workers,
            durable,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Where a coordinator listens.
pub struct Listeners {
    pub grpc: TcpListener,
    /// Probes, the dashboard, the JSON API and SSE, `/metrics`.
    pub http: Option<TcpListener>,
    /// The gRPC URL workers and clients should use to reach this coordinator when it
    /// leads (published through the election).
    pub advertise: String,
    /// The HTTP URL standbys forward browsers' and API calls to when this coordinator
    /// leads (published beside `advertise`); `None` without an HTTP listener.
    pub advertise_http: Option<String>,
}
