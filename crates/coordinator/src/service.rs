//! The coordinator's service: the one API every edge calls (gRPC and HTTP alike), over the
//! shared state of one coordinator ([`Mesh`]).
//!
//! Callers pass and get domain values (`agentmesh_core` types, [`MeshError`]); nothing
//! here knows a wire type or a protocol status. Below it: the session actors
//! ([`crate::session`]), the registry of live workers ([`crate::registry`]), the event
//! logs ([`crate::events`]) and the store.
//!
//! Who may call: the edges' gate (`edge::gate`) hands a call to the service only
//! on the leader. The service still checks the term where it writes (a session's
//! creation), because leadership can end between the gate and the write: such a call is
//! refused NOT_LEADER, never written under a stale fence.

use crate::errors::MeshError;
use crate::events::{EventLog, event_log_of};
use crate::registry::{ToWorker, WorkerInfo};
use crate::session::{SESSION_INBOX, SessionActor};
use crate::state::{Mesh, STRAY_LOOKUPS, SessionCmd, Term};
use agentmesh_core::{
    Applied, Effect, Entry, Reply, Session, SessionSpec, SessionSummary, TurnKey,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

impl Mesh {
    // ---- sessions --------------------------------------------------------------------

    /// Validates and admits a request, writes the session's header, starts its actor and
    /// returns its first summary. `broadcast_rounds` > 0 makes it a broadcast (benchmark)
    /// session ([`agentmesh_core::SessionMode::Broadcast`]).
    pub async fn create_session(
        self: &Arc<Self>,
        task: String,
        roles: Vec<String>,
        max_rounds: u32,
        broadcast_rounds: u32,
    ) -> Result<SessionSummary, MeshError> {
        if self.shutdown.is_cancelled() {
            return Err(MeshError::ShuttingDown);
        }
        let limit = self.config.max_task_bytes;
        if task.len() > limit {
            return Err(MeshError::TaskTooLarge {
                bytes: task.len(),
                limit,
            });
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
        let term = self.leading_term().await?;
        let _admitted = self.admit()?;
        let (session, effects) = Session::new_in(mode, spec, self.session_config(), self.now_ms());
        let summary = session.summary();
        let id = summary.id.clone();
        // The client is told the session exists only once the store holds it.
        self.store.write(&term.fence, &summary, &[]).await?;
        self.spawn_session(session, effects, term, &[]);
        self.mesh_log().session_created(self.now_ms(), &summary);
        tracing::info!(session = %id, "session created");
        Ok(summary)
    }

    /// Counts a session being created against `--max-sessions` until it runs (or fails).
    fn admit(&self) -> Result<Admitted<'_>, MeshError> {
        let live = self.live.lock().expect("live lock");
        let admitted = live.len() + self.creating.load(Ordering::SeqCst);
        let limit = self.config.max_sessions;
        if admitted >= limit {
            return Err(MeshError::TooManySessions {
                live: admitted,
                limit,
            });
        }
        self.creating.fetch_add(1, Ordering::SeqCst);
        Ok(Admitted(&self.creating))
    }

    pub(crate) fn spawn_session(
        self: &Arc<Self>,
        session: Session,
        effects: Vec<Effect>,
        term: Term,
        history: &[Effect],
    ) {
        let id = session.id().to_string();
        let mode = session.mode();
        let (tx, rx) = mpsc::channel(SESSION_INBOX);
        // A resumed session's watchers see the same events the old leader published.
        let summary = session.summary();
        let log = Arc::new(event_log_of(&summary, history, &summary));
        self.live.lock().expect("live lock").insert(id.clone(), tx);
        self.logs
            .lock()
            .expect("logs lock")
            .insert_running(&id, log.clone());
        let actor = SessionActor::new(self.clone(), session, log, rx, term);
        let span = session_span(&id, mode);
        tokio::spawn(actor.run(effects).instrument(span));
    }

    /// Rebuilds a stored session through the core: its state, the effects that continue
    /// it, and the history of effects its transcript implies (see `Session::restore_in`).
    pub(crate) fn replay(
        &self,
        header: &SessionSummary,
        entries: &[Entry],
    ) -> Result<(Session, Vec<Effect>, Vec<Effect>), String> {
        Session::restore_in(
            header.mode(),
            header.spec(),
            self.session_config(),
            header.created_ms,
            entries,
            self.now_ms(),
        )
    }

    /// The event log of a session: the live one, or one rebuilt from the store (a session
    /// that ended under another leader or before a restart).
    pub async fn session_log(&self, id: &str) -> Result<Arc<EventLog>, MeshError> {
        if let Some(log) = self.event_log(id) {
            return Ok(log);
        }
        let (header, entries) = self.transcript(id).await?;
        let (replayed, _, history) = self.replay(&header, &entries).map_err(MeshError::Store)?;
        let log = event_log_of(&replayed.summary(), &history, &header);
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

    pub async fn summary(&self, id: &str) -> Result<SessionSummary, MeshError> {
        Ok(self.store.get(id).await?)
    }

    pub async fn list_sessions(&self) -> Result<Vec<SessionSummary>, MeshError> {
        Ok(self.store.list().await?)
    }

    /// A session's header and its whole transcript.
    pub async fn transcript(&self, id: &str) -> Result<(SessionSummary, Vec<Entry>), MeshError> {
        let summary = self.summary(id).await?;
        let entries = self.store.entries(id, 1).await?;
        Ok((summary, entries))
    }

    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.registry.list()
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

    // ---- workers ---------------------------------------------------------------------

    /// Hands a worker's result to its session's actor, which acknowledges it on the
    /// worker's stream once its phase is written. A result for a session not running
    /// here is answered from the store, off the caller's path, within a bound.
    pub async fn submit_result(
        self: &Arc<Self>,
        worker_id: &str,
        session_id: &str,
        turn: TurnKey,
        reply: Reply,
    ) {
        let cmd = SessionCmd::Result {
            worker_id: worker_id.to_string(),
            result: Box::new((turn, reply)),
        };
        // Waiting here waits only for this worker's own session to take its result: the
        // caller is this worker's reader, and an actor always drains its inbox.
        let returned = match self.live_session(session_id) {
            Some(tx) => match tx.send(cmd).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(cmd)) => cmd,
            },
            None => cmd,
        };
        let SessionCmd::Result { result, .. } = returned else {
            unreachable!("the command is the result")
        };
        self.answer_stray(worker_id, session_id, result.0, true);
    }

    /// Hands a worker's failure report to its session's actor, which acknowledges it.
    pub async fn submit_failure(
        self: &Arc<Self>,
        worker_id: &str,
        session_id: &str,
        turn: TurnKey,
        reason: String,
    ) {
        let cmd = SessionCmd::TurnFailed {
            worker_id: worker_id.to_string(),
            failure: Box::new((turn, reason)),
        };
        let returned = match self.live_session(session_id) {
            Some(tx) => match tx.send(cmd).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(cmd)) => cmd,
            },
            None => cmd,
        };
        let SessionCmd::TurnFailed { failure, .. } = returned else {
            unreachable!("the command is the failure report")
        };
        self.answer_stray(worker_id, session_id, failure.0, false);
    }

    /// Answers a result (or failure report) for a session with no running actor: an
    /// idempotent duplicate if the transcript holds this worker's answer to this turn,
    /// else refused. At most [`STRAY_LOOKUPS`] are looked up at once; the rest are told
    /// to retry without any store read.
    fn answer_stray(
        self: &Arc<Self>,
        worker_id: &str,
        session_id: &str,
        turn: TurnKey,
        result: bool,
    ) {
        let Ok(permit) = self.stray_lookups.clone().try_acquire_owned() else {
            let busy = MeshError::Busy(format!(
                "session {session_id} is not running here and {STRAY_LOOKUPS} late results are being looked up"
            ));
            self.registry.send(
                worker_id,
                ToWorker::Ack {
                    session_id: session_id.to_string(),
                    turn,
                    outcome: Err(busy),
                },
            );
            return;
        };
        let (mesh, worker_id, session_id) =
            (self.clone(), worker_id.to_string(), session_id.to_string());
        tokio::spawn(async move {
            let outcome = mesh
                .lookup_stray(&worker_id, &session_id, &turn, result)
                .await;
            drop(permit);
            mesh.registry.send(
                &worker_id,
                ToWorker::Ack {
                    session_id,
                    turn,
                    outcome,
                },
            );
        });
    }

    async fn lookup_stray(
        &self,
        worker_id: &str,
        session_id: &str,
        turn: &TurnKey,
        result: bool,
    ) -> Result<Applied, MeshError> {
        let summary = self.summary(session_id).await?;
        if result {
            let entries = self.store.entries(session_id, 1).await?;
            if let Some(entry) = entries.iter().find(|e| {
                e.round == turn.round
                    && e.phase == turn.phase
                    && e.role == turn.role
                    && e.worker_id == worker_id
            }) {
                return Ok(Applied {
                    seq: Some(entry.seq),
                    duplicate: true,
                    ..Default::default()
                });
            }
        }
        Err(MeshError::SessionEnded {
            id: session_id.to_string(),
            status: summary.status.to_string(),
        })
    }

    /// Tells every session the worker held a role in that it is gone. Never waits on a
    /// session: a full inbox gets the news from a task of its own.
    pub fn worker_lost(&self, worker_id: &str, sessions: Vec<String>) {
        for id in sessions {
            let Some(tx) = self.live_session(&id) else {
                continue;
            };
            let cmd = SessionCmd::WorkerLost {
                worker_id: worker_id.to_string(),
            };
            if let Err(mpsc::error::TrySendError::Full(cmd)) = tx.try_send(cmd) {
                tokio::spawn(async move {
                    let _ = tx.send(cmd).await;
                });
            }
        }
    }

    /// A (re)connecting worker says it holds these sessions' transcripts. Each one that
    /// has ended, or that the store does not know, is ended for it at once; each one
    /// running here is asked whether the worker's role moved on meanwhile; one that is
    /// merely not running here yet (a new leader still resuming it) is left alone, as is
    /// any the store cannot answer for right now.
    pub async fn reconnected(&self, worker_id: &str, role: &str, held: Vec<String>) {
        for session_id in held {
            if let Some(tx) = self.live_session(&session_id) {
                let _ = tx.try_send(SessionCmd::Holds {
                    worker_id: worker_id.to_string(),
                    role: role.into(),
                });
                continue;
            }
            let (status, reason) = match self.store.get(&session_id).await {
                Ok(header) if header.status.is_terminal() => (Some(header.status), header.reason),
                Err(agentmesh_store::StoreError::NotFound(_)) => {
                    (None, "no such session on this coordinator".to_string())
                }
                _ => continue,
            };
            if !self.registry.send(
                worker_id,
                ToWorker::SessionEnd {
                    session_id,
                    status,
                    reason,
                },
            ) {
                return;
            }
        }
    }
}

/// A session counted as being created; uncounted when dropped (it runs, or it failed).
struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A session actor's span. In logs it is a root (`session{id=...}`); in the trace it is
/// the child of the span it was created in (a client's CreateSession), so the client's
/// span roots the session's trace. A resumed session (a new leader) starts a trace.
fn session_span(id: &str, mode: agentmesh_core::SessionMode) -> tracing::Span {
    use agentmesh_telemetry::OpenTelemetrySpanExt;
    use agentmesh_telemetry::genai::{GEN_AI_CONVERSATION_ID, MESH_SESSION_ID};
    let span = tracing::info_span!(parent: None, "session", id = %id);
    if agentmesh_telemetry::enabled() {
        let _ = span.set_parent(tracing::Span::current().context());
        span.set_attribute(MESH_SESSION_ID, id.to_string());
        span.set_attribute(GEN_AI_CONVERSATION_ID, id.to_string());
        let mode = if mode.is_broadcast() {
            "broadcast"
        } else {
            "negotiation"
        };
        span.set_attribute("agentmesh.session.mode", mode);
    }
    span
}
