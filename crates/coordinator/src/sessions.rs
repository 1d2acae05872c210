//! One task per session: the driver that feeds the pure core and carries out its effects.
//!
//! The actor owns its [`Session`] outright; everything else reaches it through
//! [`SessionCmd`] messages, so the core is only ever called from one place, in order.
//! For every transition it:
//!
//! 1. applies the input to the core (a rejection changes nothing and is answered at once);
//! 2. if the transition only appended an entry (a result inside a phase), holds it and its
//!    acknowledgement back: the results of one phase are written together;
//! 3. otherwise (the phase completed, a turn goes out, the session ended) writes the
//!    header and every held entry in one fenced store write, retrying while the store is
//!    unreachable and stopping if the leadership is gone;
//! 4. publishes the entries and status changes to the session's event log;
//! 5. dispatches turns, asks the registry for workers, releases workers;
//! 6. only then acknowledges the held results — so nothing acknowledged is unwritten, and
//!    no worker is ever sent an entry that a new leader would not have.
//!
//! One exception to the order, for speed: a turn whose request carries no unwritten
//! entry (a broadcast session's blind turns) is dispatched before step 3, so the
//! worker's turn overlaps the store write (see `carry_out`). The guarantees of step 6
//! hold unchanged.

use crate::Mesh;
use crate::errors::MeshError;
use crate::events::EventLog;
use crate::leadership::Term;
use agentmesh_core::{
    Applied, Effect, Entry, Input, Phase, Reply, Session, SessionSummary, TurnKey,
};
use agentmesh_proto::v1::{
    self, coordinator_message::Msg, mesh_event::Event as MeshEvent, session_event::Event,
};
use agentmesh_store::StoreError;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Where the verdict on a worker's result goes.
pub enum AckTo {
    /// A caller that waits for it.
    Caller(oneshot::Sender<Result<Applied, MeshError>>),
    /// Straight onto the worker's stream as a [`v1::ResultAck`], from the actor itself:
    /// no task per result waits for it, and the acks of a phase go out right behind the
    /// next phase's turns, in the same writes.
    Stream {
        tx: crate::registry::WorkerTx,
        turn: v1::TurnId,
    },
}

impl AckTo {
    pub async fn answer(self, outcome: Result<Applied, MeshError>) {
        match self {
            AckTo::Caller(tx) => {
                let _ = tx.send(outcome);
            }
            AckTo::Stream { tx, turn } => {
                crate::worker_api::send_ack(&tx, crate::worker_api::ack_of(turn, outcome)).await
            }
        }
    }
}

pub enum SessionCmd {
    Result {
        worker_id: String,
        turn: TurnKey,
        reply: Reply,
        ack: AckTo,
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
    /// The leadership term this actor runs under; its token stops the actor.
    term: Term,
    /// Entries accepted but not yet written (the current phase's results so far).
    unwritten: Vec<Entry>,
    /// The highest seq the store holds.
    written_seq: u64,
    /// Acknowledgements that wait for `unwritten` to be written.
    held_acks: Vec<(AckTo, Applied)>,
}

/// Why an actor stops before its session ends.
enum Stop {
    /// The leadership term ended: another coordinator continues the session.
    TermEnded,
}

impl SessionActor {
    pub fn new(
        mesh: Arc<Mesh>,
        session: Session,
        log: Arc<EventLog>,
        rx: mpsc::Receiver<SessionCmd>,
        term: Term,
    ) -> Self {
        let session_len = session.transcript().len() as u64;
        SessionActor {
            mesh,
            session,
            log,
            rx,
            needed: BTreeSet::new(),
            cursors: HashMap::new(),
            announced: HashSet::new(),
            written_seq: session_len,
            term,
            unwritten: Vec::new(),
            held_acks: Vec::new(),
        }
    }

    pub async fn run(mut self, initial: Vec<Effect>) {
        let id = self.session.id().to_string();
        if self.run_until_ended(initial).await.is_err() {
            tracing::info!("leadership term ended; the next leader continues this session");
            return;
        }
        // Ended: stop routing to this actor, then answer whatever was already queued.
        // The core still answers correctly (duplicates acknowledged, the rest stale).
        self.mesh.forget_live_session(&id);
        self.rx.close();
        while let Some(cmd) = self.rx.recv().await {
            if self.handle(cmd).await.is_err() {
                return;
            }
        }
        self.log.close();
        tracing::info!(status = %self.session.status(), reason = %self.session.summary().reason, "session ended");
    }

    async fn run_until_ended(&mut self, initial: Vec<Effect>) -> Result<(), Stop> {
        self.carry_out(initial, false).await?;
        self.fill_needed().await?;
        let mut changes = self.mesh.registry.changes();
        let token = self.term.token.clone();
        while !self.session.status().is_terminal() {
            let deadline = self.session.next_deadline().map(instant_of);
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await?,
                    None => return Err(Stop::TermEnded),
                },
                () = sleep_until(deadline) => {
                    let _ = self.step(Input::Tick).await?;
                }
                Ok(()) = changes.changed(), if !self.needed.is_empty() => {
                    self.fill_needed().await?;
                }
                () = token.cancelled() => return Err(Stop::TermEnded),
            }
        }
        Ok(())
    }

    async fn handle(&mut self, cmd: SessionCmd) -> Result<(), Stop> {
        match cmd {
            SessionCmd::Result {
                worker_id,
                turn,
                reply,
                ack,
            } => {
                let input = Input::Result {
                    worker_id: worker_id.clone(),
                    turn,
                    reply,
                };
                match self.session.apply(crate::now_ms(), input) {
                    Err(rejection) => ack.answer(Err(rejection.into())).await,
                    Ok(mut applied) => {
                        if !applied.duplicate {
                            self.mesh.registry.count_turn(&worker_id);
                        }
                        // The ack needs only the seq: the effects (and the entry) move on.
                        let effects = std::mem::take(&mut applied.effects);
                        // Acknowledged once its entry (or, for a duplicate, the original)
                        // is written: maybe now, maybe when the phase completes.
                        let fresh = !applied.duplicate;
                        self.held_acks.push((ack, applied));
                        self.carry_out(effects, false).await?;
                        if fresh && !self.unwritten.is_empty() {
                            self.hint_progress();
                        }
                        self.fill_needed().await?;
                    }
                }
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
                    .await?;
                let _ = ack.send(result.map_err(MeshError::from));
            }
            SessionCmd::WorkerLost { worker_id } => {
                self.cursors.remove(&worker_id);
                self.announced.remove(&worker_id);
                let _ = self.step(Input::WorkerLost { worker_id }).await?;
            }
            SessionCmd::Cancel { reason, ack } => {
                let result = self.step(Input::Cancel { reason }).await?;
                let _ = ack.send(
                    result
                        .map(|_| self.session.summary())
                        .map_err(MeshError::from),
                );
            }
        }
        Ok(())
    }

    /// One transition: apply, then carry out. The inner result is the core's verdict
    /// (a rejection changed nothing); the outer error means this actor must stop.
    async fn step(
        &mut self,
        input: Input,
    ) -> Result<Result<Applied, agentmesh_core::Rejection>, Stop> {
        let applied = match self.session.apply(crate::now_ms(), input) {
            Ok(applied) => applied,
            Err(rejection) => return Ok(Err(rejection)),
        };
        self.carry_out(applied.effects.clone(), false).await?;
        self.fill_needed().await?;
        Ok(Ok(applied))
    }

    /// Carries out a transition's effects. Entries appended inside a phase are held
    /// back; anything else first writes the header and every held entry in one write.
    async fn carry_out(&mut self, effects: Vec<Effect>, force_write: bool) -> Result<(), Stop> {
        let mut write_now = force_write;
        let mut rest = Vec::with_capacity(effects.len());
        for effect in effects {
            match effect {
                Effect::Appended(entry) => self.unwritten.push(entry),
                // Everything else changes the header or sends something out: write first.
                other => {
                    write_now = true;
                    rest.push(other);
                }
            }
        }
        if !write_now {
            // Only a transition that appended an entry and nothing else writes nothing.
            self.release_acks().await;
            return Ok(());
        }
        // Pipelining: a turn that carries no entry the store lacks goes out *before* the
        // write, so the worker thinks while the store syncs, and the round costs
        // max(write, turn) instead of their sum. Safe because what it tells the worker
        // (round, phase, attempt) a new leader would redo with a new attempt, and it
        // carries no unwritten entry (invariant 6 in the module docs). In practice: the
        // blind turns of broadcast sessions; a negotiation's next phase needs the
        // entries being written, so its turns wait.
        let (early, rest): (Vec<Effect>, Vec<Effect>) = rest.into_iter().partition(|effect| {
            matches!(effect, Effect::Dispatch { worker_id, .. } if self.sends_only_durable(worker_id))
        });
        for effect in early {
            if let Effect::Dispatch {
                worker_id,
                turn,
                deadline_ms,
            } = effect
            {
                self.dispatch(&worker_id, &turn, deadline_ms).await;
            }
        }
        // Status events and releases show the header just written.
        let summary = self.write().await?;
        let now = crate::now_ms();
        for effect in rest {
            match effect {
                // Published by `write`, in seq order, once durable.
                Effect::Appended(_) => {}
                Effect::StatusChanged { status, round } => {
                    let awaiting = self.session.awaiting().map(str::to_string).collect();
                    tracing::info!(%status, round, "status");
                    let snapshot = v1::Session::from(&summary);
                    self.mesh.publish(if status.is_terminal() {
                        MeshEvent::SessionEnded(snapshot.clone())
                    } else {
                        MeshEvent::PhaseChanged(snapshot.clone())
                    });
                    self.log.push(
                        &summary.id,
                        now,
                        Event::Status(v1::StatusChange {
                            status: v1::SessionStatus::from(status) as i32,
                            round,
                            reason: summary.reason.clone(),
                            awaiting,
                        }),
                        Some(snapshot),
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
        self.release_acks().await;
        Ok(())
    }

    /// Writes the header and every held entry in one fenced store write, then publishes
    /// the entries. Retries while the store is unreachable; stops the actor when the
    /// store says this coordinator no longer leads.
    async fn write(&mut self) -> Result<SessionSummary, Stop> {
        let summary = self.session.summary();
        let mut delay = Duration::from_millis(100);
        // After an unanswered write, etcd may have committed it anyway.
        let mut maybe_applied = false;
        loop {
            match self
                .mesh
                .store
                .write(&self.term.fence, &summary, &self.unwritten)
                .await
            {
                Ok(()) => break,
                Err(StoreError::SeqGap { .. }) if maybe_applied && self.already_stored().await => {
                    tracing::info!("an unanswered write had been committed");
                    break;
                }
                Err(StoreError::Fenced(why)) => {
                    tracing::error!(%why, "write refused: this coordinator no longer leads");
                    self.mesh.leadership_in_doubt();
                    return Err(Stop::TermEnded);
                }
                Err(e) if e.is_retryable() => {
                    maybe_applied = true;
                    tracing::warn!(error = %e, ?delay, held = self.unwritten.len(), "store unavailable; retrying the write");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.term.token.cancelled() => return Err(Stop::TermEnded),
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    // A gap or a backend fault: continuing could fork the transcript.
                    tracing::error!(error = %e, "store write failed; handing the session over");
                    self.mesh.leadership_in_doubt();
                    return Err(Stop::TermEnded);
                }
            }
        }
        if let Some(last) = self.unwritten.last() {
            self.written_seq = last.seq;
        }
        self.log.push_all(
            &summary.id,
            crate::now_ms(),
            self.unwritten
                .drain(..)
                .map(|entry| Event::Entry(v1::Entry::from(&entry))),
        );
        Ok(summary)
    }

    /// Tells watchers who has answered so far in the current phase. The answers
    /// themselves are published when the phase is written.
    fn hint_progress(&self) {
        let Some(phase) = self.session.status().phase() else {
            return;
        };
        if !self.log.has_hint_listeners() {
            return;
        }
        let participants = self.session.participants();
        let speakers: &[String] = match phase {
            Phase::Framing | Phase::Synthesize => &participants[..1],
            Phase::Contribute => &self.session.spec().specialists,
            Phase::Review => participants,
        };
        let awaiting: Vec<String> = self.session.awaiting().map(str::to_string).collect();
        let answered = speakers
            .iter()
            .filter(|r| !awaiting.contains(r))
            .cloned()
            .collect();
        self.log.hint(
            self.session.id(),
            crate::now_ms(),
            v1::Progress {
                status: v1::SessionStatus::from(self.session.status()) as i32,
                round: self.session.round(),
                answered,
                awaiting,
            },
        );
    }

    /// Whether the store already holds exactly the entries this actor still holds back.
    async fn already_stored(&self) -> bool {
        let Some(first) = self.unwritten.first() else {
            return false;
        };
        match self.mesh.store.entries(self.session.id(), first.seq).await {
            Ok(stored) => {
                stored.len() >= self.unwritten.len()
                    && stored.iter().zip(&self.unwritten).all(|(a, b)| a == b)
            }
            Err(_) => false,
        }
    }

    /// Answers every held result whose entry is now written.
    async fn release_acks(&mut self) {
        if self.held_acks.is_empty() {
            return;
        }
        let written = self.written_seq;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held_acks)
            .into_iter()
            .partition(|(_, applied)| applied.seq.is_none_or(|seq| seq <= written));
        self.held_acks = waiting;
        for (ack, applied) in ready {
            ack.answer(Ok(applied)).await;
        }
    }

    /// Assigns a live worker to every role that waits for one, least loaded first.
    async fn fill_needed(&mut self) -> Result<(), Stop> {
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
                        self.carry_out(applied.effects, false).await?;
                    }
                    Err(rejection) => {
                        tracing::warn!(%rejection, "assignment refused");
                        self.mesh.registry.release(&worker_id, self.session.id());
                    }
                }
            }
            if !progressed || self.needed.is_empty() {
                return Ok(());
            }
        }
    }

    /// The transcript seq a worker holds up to, as the next turn to it will assume.
    fn cursor_of(&self, worker_id: &str) -> u64 {
        let cursor = self.cursors.get(worker_id).copied().unwrap_or_else(|| {
            self.mesh
                .registry
                .reported_cursor(worker_id, self.session.id())
        });
        // A cursor past the transcript (a worker that saw another leader's entries)
        // gets the whole transcript again.
        if cursor > self.session.transcript().len() as u64 {
            0
        } else {
            cursor
        }
    }

    /// Whether a turn to `worker_id` now would carry only entries the store holds.
    fn sends_only_durable(&self, worker_id: &str) -> bool {
        self.session.mode().is_broadcast()
            || self.session.transcript()[self.cursor_of(worker_id) as usize..]
                .iter()
                .all(|entry| entry.seq <= self.written_seq)
    }

    /// Sends a turn with only the transcript the worker has not seen.
    async fn dispatch(&mut self, worker_id: &str, turn: &TurnKey, deadline_ms: i64) {
        let Some(tx) = self.mesh.registry.sender(worker_id) else {
            // Gone already; its WorkerLost is on the way and will reassign the turn.
            return;
        };
        let cursor = self.cursor_of(worker_id);
        let transcript = self.session.transcript();
        // A broadcast (benchmark) session's workers answer blind: its turns carry no
        // transcript, so a round costs what the round machinery costs.
        let blind = self.session.mode().is_broadcast();
        let delta = if blind {
            Vec::new()
        } else {
            transcript[cursor as usize..]
                .iter()
                .map(v1::Entry::from)
                .collect()
        };
        let header = ((cursor == 0 || blind) && !self.announced.contains(worker_id)).then(|| {
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
