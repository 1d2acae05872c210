//! One task per session: the driver that feeds the pure core and carries out its effects.
//!
//! The actor owns its [`Session`] outright; everything else reaches it through
//! [`SessionCmd`] messages, so the core is only ever called from one place, in order.
//! For every transition it:
//!
//! 1. applies the input to the core (a rejection changes nothing and is answered at once);
//! 2. writes the header and the appended entries to the store, in one write;
//! 3. publishes the entries and status changes to the session's event log;
//! 4. dispatches turns, asks the registry for workers, releases workers;
//! 5. only then acknowledges the input — so nothing acknowledged is unwritten.

use crate::Mesh;
use crate::errors::MeshError;
use crate::events::EventLog;
use agentmesh_core::{
    Applied, Effect, Entry, Input, Phase, Reply, Session, SessionSummary, TurnKey,
};
use agentmesh_proto::v1::{self, coordinator_message::Msg, session_event::Event};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub enum SessionCmd {
    Result {
        worker_id: String,
        turn: TurnKey,
        reply: Reply,
        ack: oneshot::Sender<Result<Applied, MeshError>>,
    },
    TurnFailed {
        worker_id: String,
        turn: TurnKey,
        reason: String,
        ack: oneshot::Sender<Result<Applied, MeshError>>,
    },
    WorkerLost {
        worker_id: String,
    },
    Cancel {
        reason: String,
        ack: oneshot::Sender<Result<SessionSummary, MeshError>>,
    },
}

pub struct SessionActor {
    mesh: Arc<Mesh>,
    session: Session,
    log: Arc<EventLog>,
    rx: mpsc::Receiver<SessionCmd>,
    /// Roles that currently have no worker and wait for one.
    needed: BTreeSet<String>,
    /// The highest seq each worker holds of this transcript (what was sent or reported).
    cursors: HashMap<String, u64>,
    /// Workers that have been sent the session header.
    announced: HashSet<String>,
}

impl SessionActor {
    pub fn new(
        mesh: Arc<Mesh>,
        session: Session,
        log: Arc<EventLog>,
        rx: mpsc::Receiver<SessionCmd>,
    ) -> Self {
        SessionActor {
            mesh,
            session,
            log,
            rx,
            needed: BTreeSet::new(),
            cursors: HashMap::new(),
            announced: HashSet::new(),
        }
    }

    pub async fn run(mut self, initial: Vec<Effect>) {
        let id = self.session.id().to_string();
        if let Err(e) = self.carry_out(initial).await {
            tracing::error!(error = %e, "could not write the new session");
        }
        self.fill_needed().await;
        let mut changes = self.mesh.registry.changes();
        while !self.session.status().is_terminal() {
            let deadline = self.session.next_deadline().map(instant_of);
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => break,
                },
                () = sleep_until(deadline) => {
                    let _ = self.step(Input::Tick).await;
                }
                Ok(()) = changes.changed(), if !self.needed.is_empty() => {
                    self.fill_needed().await;
                }
            }
        }
        // Ended: stop routing to this actor, then answer whatever was already queued.
        // The core still answers correctly (duplicates acknowledged, the rest stale).
        self.mesh.forget_live_session(&id);
        self.rx.close();
        while let Some(cmd) = self.rx.recv().await {
            self.handle(cmd).await;
        }
        self.log.close();
        tracing::info!(status = %self.session.status(), reason = %self.session.summary().reason, "session ended");
    }

    async fn handle(&mut self, cmd: SessionCmd) {
        match cmd {
            SessionCmd::Result {
                worker_id,
                turn,
                reply,
                ack,
            } => {
                let result = self
                    .step(Input::Result {
                        worker_id: worker_id.clone(),
                        turn,
                        reply,
                    })
                    .await;
                if matches!(&result, Ok(a) if !a.duplicate) {
                    self.mesh.registry.count_turn(&worker_id);
                }
                let _ = ack.send(result);
            }
            SessionCmd::TurnFailed {
                worker_id,
                turn,
                reason,
                ack,
            } => {
                // The retry carries the whole transcript: a failed turn may have been a
                // worker that lost its copy.
                self.cursors.insert(worker_id.clone(), 0);
                self.announced.remove(&worker_id);
                let result = self
                    .step(Input::TurnFailed {
                        worker_id,
                        turn,
                        reason,
                    })
                    .await;
                let _ = ack.send(result);
            }
            SessionCmd::WorkerLost { worker_id } => {
                self.cursors.remove(&worker_id);
                self.announced.remove(&worker_id);
                let _ = self.step(Input::WorkerLost { worker_id }).await;
            }
            SessionCmd::Cancel { reason, ack } => {
                let result = self
                    .step(Input::Cancel { reason })
                    .await
                    .map(|_| self.session.summary());
                let _ = ack.send(result);
            }
        }
    }

    /// One transition: apply, write, publish, act. Errors are the core's rejections
    /// (nothing changed) or a store failure (the session cannot go on safely).
    async fn step(&mut self, input: Input) -> Result<Applied, MeshError> {
        let applied = self.session.apply(crate::now_ms(), input)?;
        self.carry_out(applied.effects.clone()).await?;
        self.fill_needed().await;
        Ok(applied)
    }

    async fn carry_out(&mut self, effects: Vec<Effect>) -> Result<(), MeshError> {
        let now = crate::now_ms();
        let summary = self.session.summary();
        let appended: Vec<Entry> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Appended(entry) => Some(entry.clone()),
                _ => None,
            })
            .collect();
        self.mesh
            .store
            .write(&summary, &appended)
            .await
            .map_err(|e| MeshError::Store(e.to_string()))?;

        for effect in effects {
            match effect {
                Effect::Appended(entry) => {
                    self.log.push(
                        &summary.id,
                        now,
                        Event::Entry(v1::Entry::from(&entry)),
                        None,
                    );
                }
                Effect::StatusChanged { status, round } => {
                    let awaiting = self.session.awaiting().map(str::to_string).collect();
                    tracing::info!(%status, round, "status");
                    self.log.push(
                        &summary.id,
                        now,
                        Event::Status(v1::StatusChange {
                            status: v1::SessionStatus::from(status) as i32,
                            round,
                            reason: summary.reason.clone(),
                            awaiting,
                        }),
                        Some(v1::Session::from(&summary)),
                    );
                }
                Effect::NeedWorker { role } => {
                    self.needed.insert(role);
                }
                Effect::Dispatch {
                    worker_id,
                    turn,
                    deadline_ms,
                } => self.dispatch(&worker_id, &turn, deadline_ms).await,
                Effect::Release { worker_id } => {
                    self.mesh.registry.release(&worker_id, &summary.id);
                    if let Some(tx) = self.mesh.registry.sender(&worker_id) {
                        let end = v1::SessionEnd {
                            session_id: summary.id.clone(),
                            status: v1::SessionStatus::from(summary.status) as i32,
                            reason: summary.reason.clone(),
                        };
                        let _ = tx
                            .send(Ok(v1::CoordinatorMessage {
                                msg: Some(Msg::SessionEnd(end)),
                            }))
                            .await;
                    }
                }
            }
        }
        if self.session.status().is_terminal() {
            self.needed.clear();
        }
        Ok(())
    }

    /// Assigns a live worker to every role that waits for one, least loaded first.
    async fn fill_needed(&mut self) {
        loop {
            let mut progressed = false;
            for role in self.needed.clone() {
                let holders: BTreeSet<String> =
                    self.session.assignments().values().cloned().collect();
                let Some(worker_id) =
                    self.mesh
                        .registry
                        .reserve(&role, self.session.id(), &holders)
                else {
                    continue;
                };
                self.needed.remove(&role);
                tracing::info!(%role, %worker_id, "assigned");
                let input = Input::Assign {
                    role,
                    worker_id: worker_id.clone(),
                };
                match self.session.apply(crate::now_ms(), input) {
                    Ok(applied) => {
                        progressed = true;
                        if let Err(e) = self.carry_out(applied.effects).await {
                            tracing::error!(error = %e, "store write failed");
                        }
                    }
                    Err(rejection) => {
                        tracing::warn!(%rejection, "assignment refused");
                        self.mesh.registry.release(&worker_id, self.session.id());
                    }
                }
            }
            if !progressed || self.needed.is_empty() {
                return;
            }
        }
    }

    /// Sends a turn with only the transcript the worker has not seen.
    async fn dispatch(&mut self, worker_id: &str, turn: &TurnKey, deadline_ms: i64) {
        let Some(tx) = self.mesh.registry.sender(worker_id) else {
            // Gone already; its WorkerLost is on the way and will reassign the turn.
            return;
        };
        let transcript = self.session.transcript();
        let reported = self
            .mesh
            .registry
            .reported_cursor(worker_id, self.session.id());
        let mut cursor = *self
            .cursors
            .entry(worker_id.to_string())
            .or_insert(reported);
        if cursor > transcript.len() as u64 {
            cursor = 0;
        }
        let delta = transcript[cursor as usize..]
            .iter()
            .map(v1::Entry::from)
            .collect();
        let header = (cursor == 0 && !self.announced.contains(worker_id)).then(|| {
            let spec = self.session.spec();
            v1::SessionHeader {
                session_id: spec.id.clone(),
                task: spec.task.clone(),
                roles: self.session.participants().to_vec(),
                max_rounds: spec.max_rounds,
            }
        });
        let (proposal_version, proposal_hash) = match (turn.phase, self.session.current_proposal())
        {
            (Phase::Review, Some((v, h))) => (v, h.to_string()),
            _ => (0, String::new()),
        };
        let mut turn_id = v1::TurnId::from(turn);
        turn_id.session_id = self.session.id().to_string();
        let request = v1::TurnRequest {
            turn: Some(turn_id),
            session: header,
            delta,
            proposal_version,
            proposal_hash,
            deadline_ms,
        };
        self.cursors
            .insert(worker_id.to_string(), transcript.len() as u64);
        self.announced.insert(worker_id.to_string());
        tracing::debug!(%worker_id, round = turn.round, phase = %turn.phase, attempt = turn.attempt, "dispatch");
        let _ = tx
            .send(Ok(v1::CoordinatorMessage {
                msg: Some(Msg::Turn(request)),
            }))
            .await;
    }
}

fn instant_of(deadline_ms: i64) -> Instant {
    let wait = deadline_ms.saturating_sub(crate::now_ms()).max(0) as u64;
    Instant::now() + std::time::Duration::from_millis(wait)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
