//! The coordinator's shared state ([`Mesh`]), the leadership [`Term`] it runs under, and
//! the commands a session actor takes ([`SessionCmd`]): what the service and the session
//! actors share, below both, so neither imports the other's module.
//!
//! The service's API over this state is in [`crate::service`]; taking and leaving office
//! in [`crate::leadership`].

use crate::clock::Clock;
use crate::config::{Backends, CoordinatorConfig};
use crate::errors::MeshError;
use crate::events::{EventLog, MeshLog, SessionLogs};
use crate::registry::Registry;
use agentmesh_core::{Reply, SessionSummary, TurnKey};
use agentmesh_proto::LeaderAddress;
use agentmesh_store::{Election, Fence, SessionStore};
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How many results for sessions not running here (late, stray or hostile) may be looked
/// up in the store at once; more are answered "busy" without reading anything, so a
/// flood of them costs the coordinator nothing but the refusals.
pub(crate) const STRAY_LOOKUPS: usize = 8;

/// One leadership term (or the absence of one).
#[derive(Clone, Debug)]
pub(crate) struct Term {
    pub leading: bool,
    pub fence: Fence,
    /// Cancelled when the term ends; session actors of the term stop at once.
    pub token: CancellationToken,
}

impl Term {
    pub fn standby() -> Term {
        let token = CancellationToken::new();
        token.cancel();
        Term {
            leading: false,
            fence: Fence::Unfenced,
            token,
        }
    }
}

/// The commands a session actor takes, in order, from its inbox.
pub(crate) enum SessionCmd {
    /// A worker's result; the actor acknowledges it on the worker's stream once written.
    Result {
        worker_id: String,
        result: Box<(TurnKey, Reply)>,
    },
    /// A worker could not do its turn (the turn and why); acknowledged on its stream.
    TurnFailed {
        worker_id: String,
        failure: Box<(TurnKey, String)>,
    },
    WorkerLost {
        worker_id: String,
    },
    /// A worker (re)connected saying it holds this session's transcript: if its role has
    /// moved to another worker meanwhile, it is told the session is over for it.
    Holds {
        worker_id: String,
        role: Box<str>,
    },
    Cancel {
        reason: String,
        ack: oneshot::Sender<Result<SessionSummary, MeshError>>,
    },
}

/// Why every variant keeps its payload small: each session's inbox allocates room for 32
/// commands up front, so the largest variant's size is paid by every live session.
const _: () = assert!(std::mem::size_of::<SessionCmd>() <= 48);

/// The coordinator's shared state.
pub(crate) struct Mesh {
    pub config: CoordinatorConfig,
    /// Where this coordinator serves, as it campaigns with it.
    pub advertised: LeaderAddress,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn SessionStore>,
    pub election: Arc<dyn Election>,
    pub durable: bool,
    pub clock: Arc<dyn Clock>,
    /// The current leadership term; standby when not leading.
    pub(crate) term: tokio::sync::watch::Sender<Term>,
    /// Sessions whose actor is running, by id.
    pub(crate) live: Mutex<HashMap<String, mpsc::Sender<SessionCmd>>>,
    /// Sessions admitted but not running yet (their header is being written).
    pub(crate) creating: AtomicUsize,
    /// Running sessions' event logs, and the most recently ended ones'.
    pub(crate) logs: Mutex<SessionLogs>,
    /// The mesh-wide event log of the current term.
    pub(crate) mesh_log: Mutex<Arc<MeshLog>>,
    pub shutdown: CancellationToken,
    /// Signalled when a store write shows this coordinator may no longer lead.
    pub(crate) doubt: tokio::sync::Notify,
    /// What each role is needed for now (live sessions holding / waiting for it).
    pub demand: crate::demand::Demand,
    /// Durations and counts for `/metrics`.
    pub measures: crate::measure::Measures,
    /// Store lookups for results of sessions not running here.
    pub(crate) stray_lookups: Arc<tokio::sync::Semaphore>,
}

impl Mesh {
    pub fn new(
        config: CoordinatorConfig,
        backends: &Backends,
        advertised: LeaderAddress,
    ) -> Arc<Mesh> {
        let ended_logs_kept = config.ended_logs_kept;
        let first_mesh_seq = backends.clock.now_ms().max(1) as u64 * 1000;
        Arc::new(Mesh {
            config,
            advertised,
            registry: Arc::new(Registry::new(backends.workers.is_some())),
            store: backends.store.clone(),
            election: backends.election.clone(),
            durable: backends.durable,
            clock: backends.clock.clone(),
            term: tokio::sync::watch::channel(Term::standby()).0,
            live: Mutex::new(HashMap::new()),
            creating: AtomicUsize::new(0),
            logs: Mutex::new(SessionLogs::new(ended_logs_kept)),
            mesh_log: Mutex::new(Arc::new(MeshLog::new(first_mesh_seq))),
            shutdown: CancellationToken::new(),
            doubt: tokio::sync::Notify::new(),
            demand: crate::demand::Demand::default(),
            measures: crate::measure::Measures::default(),
            stray_lookups: Arc::new(tokio::sync::Semaphore::new(STRAY_LOOKUPS)),
        })
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term.borrow().clone()
    }

    pub fn is_leader(&self) -> bool {
        self.term.borrow().leading
    }

    /// The leader the election names, if any.
    pub async fn leader_address(&self) -> Result<Option<LeaderAddress>, MeshError> {
        Ok(self
            .election
            .leader()
            .await?
            .as_deref()
            .and_then(LeaderAddress::parse))
    }

    /// This coordinator's term if it leads; otherwise NOT_LEADER naming the leader.
    pub async fn leading_term(&self) -> Result<Term, MeshError> {
        let term = self.term();
        if term.leading {
            return Ok(term);
        }
        Err(self.not_leader().await)
    }

    /// The refusal a standby gives, naming the leader's gRPC address when it is known.
    pub async fn not_leader(&self) -> MeshError {
        // A key of this very coordinator (a candidacy from before an etcd outage, not yet
        // expired) names no leader: never send a caller back here.
        let leader = self
            .leader_address()
            .await
            .ok()
            .flatten()
            .map(|l| l.grpc)
            .filter(|grpc| *grpc != self.advertised.grpc);
        MeshError::NotLeader { leader }
    }

    /// A write was fenced or failed in a way that puts our leadership in question: the
    /// leadership loop steps down and campaigns again.
    pub(crate) fn leadership_in_doubt(&self) {
        self.doubt.notify_one();
    }

    pub fn mesh_log(&self) -> Arc<MeshLog> {
        self.mesh_log.lock().expect("mesh log lock").clone()
    }

    pub(crate) fn session_config(&self) -> agentmesh_core::SessionConfig {
        self.config.session_config(self.store.max_entry_bytes())
    }

    pub(crate) fn forget_live_session(&self, id: &str) {
        self.demand.remove(id);
        self.live.lock().expect("live lock").remove(id);
        self.logs.lock().expect("logs lock").ended(id);
    }

    /// Forgets every running session (the term ended).
    pub(crate) fn forget_all_sessions(&self) {
        self.live.lock().expect("live lock").clear();
        self.demand.clear();
        for log in self.logs.lock().expect("logs lock").drain() {
            log.close();
        }
    }

    pub(crate) fn live_session(&self, id: &str) -> Option<mpsc::Sender<SessionCmd>> {
        self.live.lock().expect("live lock").get(id).cloned()
    }

    pub(crate) fn event_log(&self, id: &str) -> Option<Arc<EventLog>> {
        self.logs.lock().expect("logs lock").get(id)
    }
}
