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
//!
//! The actor never waits on a worker: turns, acks and session ends go through the
//! registry's non-blocking links, and a worker that does not read is cut off and its
//! turns reassigned ([`crate::registry`]). Time comes from the mesh's [`crate::clock`],
//! so deadline tests run on paused tokio time.

use crate::errors::MeshError;
use crate::events::EventLog;
use crate::measure::{ModeLabels, PhaseLabels, RoleLabels, TurnOutcome};
use crate::registry::{SessionHeader, ToWorker, TurnOrder};
use crate::state::{Mesh, SessionCmd, Term};
use agentmesh_core::{Applied, Effect, Entry, Input, Phase, Session, SessionSummary, TurnKey};
use agentmesh_store::StoreError;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How many commands may wait for one session's actor.
pub(crate) const SESSION_INBOX: usize = 256;

pub(crate) struct SessionActor {
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
    /// Workers that held a role here and lost it (a stream blip, a lease, a failover):
    /// they may still hold the transcript, so they are told when the session ends.
    former_holders: BTreeSet<String>,
    /// The leadership term this actor runs under; its token stops the actor.
    term: Term,
    /// Entries accepted but not yet written (the current phase's results so far).
    unwritten: Vec<Entry>,
    /// The highest seq the store holds.
    written_seq: u64,
    /// Acknowledgements that wait for `unwritten` to be written: to whom, for what.
    held_acks: Vec<(String, TurnKey, Applied)>,
    /// An assignment changed since the roles were last reported to [`crate::demand`].
    demand_changed: bool,
    /// The session is being failed after a refused write (see `abort`).
    aborting: bool,
    /// The session's round and phase spans, boxed and made only while tracing is on:
    /// every live session has an actor, most of them waiting (the pending workload).
    trace: Option<Box<SessionTrace>>,
    /// When turns, phases and rounds began, for their histograms; made on the first
    /// status change, so a PENDING session carries only the pointer.
    timings: Option<Box<Timings>>,
}

/// The starts of what the actor times (`measure.rs` histograms).
#[derive(Default)]
struct Timings {
    /// When each role's open turn was dispatched (turn durations).
    dispatched_at: HashMap<String, Instant>,
    /// The working phase the session is in, and since when (phase durations).
    phase_since: Option<(Phase, Instant)>,
    /// When the current round began (round durations).
    round_since: Option<Instant>,
}

/// Why an actor stops before its session ends.
enum Stop {
    /// The leadership term ended: another coordinator continues the session.
    TermEnded,
    /// The store refuses even the session's FAILED header: nothing more can be recorded
    /// here. The session stays as last written (a later leader tries again).
    Abandoned,
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
            former_holders: BTreeSet::new(),
            written_seq: session_len,
            term,
            unwritten: Vec::new(),
            held_acks: Vec::new(),
            demand_changed: true,
            aborting: false,
            trace: None,
            timings: None,
        }
    }

    pub async fn run(mut self, initial: Vec<Effect>) {
        let id = self.session.id().to_string();
        match self.run_until_ended(initial).await {
            Ok(()) => self.mesh.measures.session_ended(self.session.status()),
            Err(Stop::TermEnded) => {
                self.mesh.demand.remove(&id);
                tracing::info!("leadership term ended; the next leader continues this session");
                return;
            }
            Err(Stop::Abandoned) => {
                tracing::error!(
                    "the store refuses this session's data; leaving it as last written"
                );
                self.mesh.forget_live_session(&id);
                self.log.close();
                return;
            }
        }
        // Ended: stop routing to this actor, then answer whatever was already queued.
        // The core still answers correctly (duplicates acknowledged, the rest stale).
        self.mesh.forget_live_session(&id);
        self.end_former_holdings();
        self.rx.close();
        while let Some(cmd) = self.rx.recv().await {
            if Box::pin(self.handle(cmd)).await.is_err() {
                return;
            }
        }
        self.log.close();
        tracing::info!(status = %self.session.status(), reason = %self.session.summary().reason, "session ended");
    }

    async fn run_until_ended(&mut self, initial: Vec<Effect>) -> Result<(), Stop> {
        Box::pin(self.carry_out(initial, false)).await?;
        Box::pin(self.fill_needed()).await?;
        let mut changes = self.mesh.registry.changes();
        let token = self.term.token.clone();
        while !self.session.status().is_terminal() {
            let deadline = self
                .session
                .next_deadline()
                .map(|ms| self.mesh.clock.instant_of(ms));
            // The work futures are boxed: a task is as large as its largest state, and
            // every session's task waits here, idle, most of its life. Boxed, an idle
            // session costs a few hundred bytes instead of the ~4 KiB of the write path.
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => Box::pin(self.handle(cmd)).await?,
                    None => return Err(Stop::TermEnded),
                },
                () = sleep_until(deadline) => Box::pin(self.tick()).await?,
                Ok(()) = changes.changed(), if !self.needed.is_empty() => {
                    Box::pin(self.fill_needed()).await?;
                }
                () = token.cancelled() => return Err(Stop::TermEnded),
            }
        }
        Ok(())
    }

    fn now_ms(&self) -> i64 {
        self.mesh.clock.now_ms()
    }

    async fn handle(&mut self, cmd: SessionCmd) -> Result<(), Stop> {
        match cmd {
            SessionCmd::Result { worker_id, result } => {
                let (turn, reply) = *result;
                let input = Input::Result {
                    worker_id: worker_id.clone(),
                    turn: turn.clone(),
                    reply,
                };
                match self.session.apply(self.now_ms(), input) {
                    Err(rejection) => {
                        let refusal = MeshError::from(rejection);
                        self.count_turn(&turn.role, TurnOutcome::rejected, refusal.kind().name());
                        self.ack(&worker_id, turn, Err(refusal));
                    }
                    Ok(mut applied) => {
                        if !applied.duplicate {
                            self.mesh.registry.count_turn(&worker_id);
                            self.count_accepted(&turn.role, &applied);
                        }
                        // The ack needs only the seq: the effects (and the entry) move on.
                        let effects = std::mem::take(&mut applied.effects);
                        // Acknowledged once its entry (or, for a duplicate, the original)
                        // is written: maybe now, maybe when the phase completes.
                        let fresh = !applied.duplicate;
                        self.held_acks.push((worker_id, turn, applied));
                        self.carry_out(effects, false).await?;
                        if fresh && !self.unwritten.is_empty() {
                            self.hint_progress();
                        }
                        self.fill_needed().await?;
                    }
                }
            }
            SessionCmd::TurnFailed { worker_id, failure } => {
                let (turn, reason) = *failure;
                let input = Input::TurnFailed {
                    worker_id: worker_id.clone(),
                    turn: turn.clone(),
                    reason,
                };
                // Validated by the core first: a refused report changes nothing here either.
                let outcome = match self.session.apply(self.now_ms(), input) {
                    Err(rejection) => Err(rejection.into()),
                    Ok(applied) => {
                        self.count_turn(&turn.role, TurnOutcome::failed, "");
                        // The retry carries the whole transcript: a failed turn may have
                        // been a worker that lost its copy.
                        self.cursors.insert(worker_id.clone(), 0);
                        self.announced.remove(&worker_id);
                        self.carry_out(applied.effects.clone(), false).await?;
                        self.fill_needed().await?;
                        Ok(applied)
                    }
                };
                self.ack(&worker_id, turn, outcome);
            }
            SessionCmd::WorkerLost { worker_id } => {
                self.cursors.remove(&worker_id);
                self.announced.remove(&worker_id);
                let lost_roles: Vec<String> = self
                    .session
                    .assignments()
                    .iter()
                    .filter(|(_, w)| **w == worker_id)
                    .map(|(role, _)| role.clone())
                    .collect();
                if !lost_roles.is_empty() {
                    self.former_holders.insert(worker_id.clone());
                }
                let open: Vec<String> = self.session.awaiting().map(str::to_string).collect();
                if self.step(Input::WorkerLost { worker_id }).await?.is_ok() {
                    for role in lost_roles.iter().filter(|r| open.contains(r)) {
                        self.count_turn(role, TurnOutcome::reassigned, "");
                    }
                }
            }
            SessionCmd::Holds { worker_id, role } => {
                let holder = self.session.assignments().get(&*role);
                let ended = self.session.status().is_terminal();
                if ended || holder.is_some_and(|h| *h != worker_id) {
                    // Its role is someone else's now (or the session is over): nothing
                    // it holds will be used again.
                    self.send_session_end(&worker_id);
                }
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

    /// A deadline passed. Turns still open when it fails the session timed out.
    async fn tick(&mut self) -> Result<(), Stop> {
        let open: Vec<String> = self.session.awaiting().map(str::to_string).collect();
        let _ = self.step(Input::Tick).await?;
        if self.session.status() == agentmesh_core::Status::Failed {
            for role in &open {
                self.count_turn(role, TurnOutcome::timed_out, "");
            }
        }
        Ok(())
    }

    /// Counts a turn's outcome, by role; a role that is no participant (a result naming
    /// any role it likes) counts as `other`, so the label stays bounded.
    fn count_turn(&self, role: &str, outcome: TurnOutcome, code: &'static str) {
        let role = if self.session.participants().iter().any(|r| r == role) {
            role
        } else {
            "other"
        };
        self.mesh.measures.turn(role, outcome, code);
    }

    /// An accepted result: its turn's duration and its tokens.
    fn count_accepted(&mut self, role: &str, applied: &Applied) {
        self.count_turn(role, TurnOutcome::accepted, "");
        if let Some(at) = self
            .timings
            .as_mut()
            .and_then(|t| t.dispatched_at.remove(role))
        {
            self.mesh
                .measures
                .turn_duration
                .get_or_create(&RoleLabels {
                    role: role.to_string(),
                })
                .observe(at.elapsed().as_secs_f64());
        }
        if let Some(Effect::Appended(entry)) = applied.effects.first() {
            self.mesh
                .measures
                .tokens(role, entry.prompt_tokens, entry.completion_tokens);
        }
    }

    /// The session moved to `status` in `round`: how long the phase (and the round)
    /// before it took.
    fn observe_status(&mut self, status: agentmesh_core::Status, round: u32) {
        let now = Instant::now();
        let timings = self.timings.get_or_insert_with(Box::default);
        if let Some((phase, since)) = timings.phase_since.take() {
            self.mesh
                .measures
                .phase_duration
                .get_or_create(&PhaseLabels {
                    phase: phase.to_string(),
                })
                .observe((now - since).as_secs_f64());
        }
        let round_begins = status == agentmesh_core::Status::Contribute && round > 0;
        if (round_begins || status.is_terminal())
            && let Some(since) = timings.round_since.take()
        {
            let mode = if self.session.mode().is_broadcast() {
                "broadcast"
            } else {
                "negotiation"
            };
            self.mesh
                .measures
                .round_duration
                .get_or_create(&ModeLabels { mode })
                .observe((now - since).as_secs_f64());
        }
        if round_begins {
            timings.round_since = Some(now);
        }
        timings.phase_since = status.phase().map(|phase| (phase, now));
    }

    /// One transition: apply, then carry out. The inner result is the core's verdict
    /// (a rejection changed nothing); the outer error means this actor must stop.
    async fn step(
        &mut self,
        input: Input,
    ) -> Result<Result<Applied, agentmesh_core::Rejection>, Stop> {
        let applied = match self.session.apply(self.now_ms(), input) {
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
                    // The next phase's span opens before its turns go out (some leave
                    // before the write).
                    if let Effect::StatusChanged { status, round } = &other
                        && agentmesh_telemetry::enabled()
                    {
                        self.trace
                            .get_or_insert_with(Box::default)
                            .status_changed(*status, *round);
                    }
                    rest.push(other);
                }
            }
        }
        if !write_now {
            // Only a transition that appended an entry and nothing else writes nothing.
            self.release_acks();
            return Ok(());
        }
        // Pipelining: a turn that carries no entry the store lacks goes out *before* the
        // write, so the worker thinks while the store syncs, and the round costs
        // max(write, turn) instead of their sum. Safe because what it tells the worker
        // (round, phase, attempt) a new leader would redo with a new attempt, and it
        // carries no unwritten entry (invariant 7 in ARCHITECTURE.md). In practice: the
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
                self.dispatch(&worker_id, &turn, deadline_ms);
            }
        }
        // Status events and releases show the header just written.
        let summary = match self.write().await {
            Ok(summary) => summary,
            Err(Written::Stop(stop)) => return Err(stop),
            Err(Written::Refused(why)) => return self.abort(why).await,
        };
        let now = self.now_ms();
        for effect in rest {
            match effect {
                // Published by `write`, in seq order, once durable.
                Effect::Appended(_) => {}
                Effect::StatusChanged { status, round } => {
                    self.observe_status(status, round);
                    let awaiting = self.session.awaiting().map(str::to_string).collect();
                    tracing::info!(%status, round, "status");
                    self.mesh.mesh_log().session_changed(now, &summary);
                    self.log.push_status(&summary, now, awaiting);
                }
                Effect::NeedWorker { role } => {
                    self.needed.insert(role);
                    self.demand_changed = true;
                }
                Effect::Dispatch {
                    worker_id,
                    turn,
                    deadline_ms,
                } => self.dispatch(&worker_id, &turn, deadline_ms),
                Effect::Release { worker_id } => {
                    self.mesh.registry.release(&worker_id, &summary.id);
                    self.send_session_end(&worker_id);
                }
            }
        }
        if self.session.status().is_terminal() {
            self.needed.clear();
            self.demand_changed = true;
        }
        self.release_acks();
        Ok(())
    }

    /// The store refused the session's data for good (neither a fence nor an outage):
    /// the session cannot go on, but nothing else is wrong. The actor goes back to what
    /// the store holds, and ends the session there, FAILED with the store's reason; every
    /// other session, and every worker stream, carries on.
    async fn abort(&mut self, why: String) -> Result<(), Stop> {
        if std::mem::replace(&mut self.aborting, true) {
            tracing::error!(%why, "the store refused the session's FAILED header too");
            return Err(Stop::Abandoned);
        }
        tracing::error!(%why, "the store refused this session's write; failing the session");
        // The workers that hold roles now are released once the session has ended.
        let holders: Vec<String> = self.session.assignments().values().cloned().collect();
        let unwritten = std::mem::take(&mut self.unwritten);
        // The results the store refused were never acknowledged: they are refused now.
        for (worker_id, turn, applied) in std::mem::take(&mut self.held_acks) {
            let outcome = if applied.seq.is_some_and(|seq| seq > self.written_seq) {
                Err(MeshError::Store(format!(
                    "the store refused this result's phase ({why}); the session failed"
                )))
            } else {
                Ok(applied)
            };
            self.ack(&worker_id, turn, outcome);
        }
        let durable = &self.session.transcript()[..self.written_seq as usize];
        let header = self.session.summary();
        let restored = Session::restore_in(
            header.mode(),
            header.spec(),
            self.session_config(),
            header.created_ms,
            durable,
            self.now_ms(),
        );
        match restored {
            Ok((session, _, _)) => self.session = session,
            Err(e) => tracing::error!(error = %e, "cannot rebuild the written state"),
        }
        tracing::warn!(
            dropped = unwritten.len(),
            "entries the store refused are dropped"
        );
        let reason = format!("the store refused the session's data: {why}");
        if let Ok(applied) = self.session.apply(self.now_ms(), Input::Abort { reason }) {
            Box::pin(self.carry_out(applied.effects, true)).await?;
        }
        for worker_id in holders {
            self.mesh.registry.release(&worker_id, self.session.id());
            self.send_session_end(&worker_id);
        }
        self.needed.clear();
        self.demand_changed = true;
        Ok(())
    }

    fn session_config(&self) -> agentmesh_core::SessionConfig {
        self.mesh
            .config
            .session_config(self.mesh.store.max_entry_bytes())
    }

    /// Writes the header and every held entry in one fenced store write, then publishes
    /// the entries. Retries while the store is unreachable; stops the actor when the
    /// store says this coordinator no longer leads; reports any other refusal.
    async fn write(&mut self) -> Result<SessionSummary, Written> {
        let mut summary = self.session.summary();
        // A CONSENSUS ends with the unanimity certificate, signed by this coordinator.
        if let Some(mut certificate) = self.session.certificate() {
            certificate.sign(&self.mesh.config.signing_key);
            summary.certificate = Some(Box::new(certificate));
        }
        let mut backoff =
            agentmesh_proto::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        // After an unanswered write, etcd may have committed it anyway.
        let mut maybe_applied = false;
        loop {
            let started = Instant::now();
            let written = self
                .mesh
                .store
                .write(&self.term.fence, &summary, &self.unwritten)
                .await;
            let outcome = match &written {
                Ok(()) => "ok",
                Err(e) if e.is_retryable() => "unavailable",
                Err(StoreError::Fenced(_)) => "fenced",
                Err(_) => "refused",
            };
            self.mesh.measures.store_write(outcome, started.elapsed());
            match written {
                Ok(()) => break,
                Err(StoreError::SeqGap { .. }) if maybe_applied && self.already_stored().await => {
                    tracing::info!("an unanswered write had been committed");
                    break;
                }
                Err(StoreError::Fenced(why)) => {
                    tracing::error!(%why, "write refused: this coordinator no longer leads");
                    self.mesh.leadership_in_doubt();
                    return Err(Written::Stop(Stop::TermEnded));
                }
                Err(e) if e.is_retryable() => {
                    maybe_applied = true;
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, ?delay, held = self.unwritten.len(), "store unavailable; retrying the write");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.term.token.cancelled() => return Err(Written::Stop(Stop::TermEnded)),
                    }
                }
                Err(e @ StoreError::SeqGap { .. }) => {
                    // Someone else wrote this session: continuing could fork the
                    // transcript, and only a coordinator that lost its lead could have.
                    tracing::error!(error = %e, "the stored transcript moved under this actor; handing the session over");
                    self.mesh.leadership_in_doubt();
                    return Err(Written::Stop(Stop::TermEnded));
                }
                Err(e) => return Err(Written::Refused(e.to_string())),
            }
        }
        if let Some(last) = self.unwritten.last() {
            self.written_seq = last.seq;
        }
        let now = self.now_ms();
        self.log.push_entries(&summary.id, now, &self.unwritten);
        self.unwritten.clear();
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
        self.log.hint_progress(
            self.session.id(),
            self.now_ms(),
            self.session.status(),
            self.session.round(),
            answered,
            awaiting,
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

    /// Answers a worker about its result or failure report, on its stream.
    fn ack(&self, worker_id: &str, turn: TurnKey, outcome: Result<Applied, MeshError>) {
        self.mesh.registry.send(
            worker_id,
            ToWorker::Ack {
                session_id: self.session.id().to_string(),
                turn,
                outcome,
            },
        );
    }

    /// Answers every held result whose entry is now written.
    fn release_acks(&mut self) {
        if self.held_acks.is_empty() {
            return;
        }
        let written = self.written_seq;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held_acks)
            .into_iter()
            .partition(|(_, _, applied)| applied.seq.is_none_or(|seq| seq <= written));
        self.held_acks = waiting;
        for (worker_id, turn, applied) in ready {
            self.ack(&worker_id, turn, Ok(applied));
        }
    }

    /// Tells a worker the session is over for it, so it drops the transcript.
    fn send_session_end(&self, worker_id: &str) {
        let summary = self.session.summary();
        self.mesh.registry.send(
            worker_id,
            ToWorker::SessionEnd {
                session_id: summary.id,
                status: Some(summary.status),
                reason: summary.reason,
            },
        );
    }

    /// The session ended: every worker that may still hold the transcript is told so —
    /// those that lost a role here, and those that said so when they connected (a
    /// failover may have moved their role before this actor ran). The last holders were
    /// told on release.
    fn end_former_holdings(&mut self) {
        let mut told: BTreeSet<String> = self.session.assignments().values().cloned().collect();
        let reported = self.mesh.registry.reported_holders(self.session.id());
        for worker_id in std::mem::take(&mut self.former_holders)
            .into_iter()
            .chain(reported)
        {
            if told.insert(worker_id.clone()) {
                self.send_session_end(&worker_id);
            }
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
                self.demand_changed = true;
                tracing::info!(%role, %worker_id, "assigned");
                let input = Input::Assign {
                    role,
                    key: self.mesh.registry.public_key(&worker_id),
                    worker_id: worker_id.clone(),
                };
                match self.session.apply(self.now_ms(), input) {
                    Ok(applied) => {
                        progressed = true;
                        self.former_holders.remove(&worker_id);
                        self.carry_out(applied.effects, false).await?;
                    }
                    Err(rejection) => {
                        tracing::warn!(%rejection, "assignment refused");
                        self.mesh.registry.release(&worker_id, self.session.id());
                    }
                }
            }
            if !progressed || self.needed.is_empty() {
                self.report_demand();
                return Ok(());
            }
        }
    }

    /// Tells [`crate::demand`] which roles this session holds and which it waits for,
    /// when that changed. An ended session needs nothing.
    fn report_demand(&mut self) {
        if !std::mem::take(&mut self.demand_changed) {
            return;
        }
        let id = self.session.id();
        if self.session.status().is_terminal() {
            self.mesh.demand.remove(id);
            return;
        }
        self.mesh.demand.set(
            id,
            crate::demand::SessionRoles {
                assigned: self.session.assignments().keys().cloned().collect(),
                waiting: self.needed.iter().cloned().collect(),
            },
        );
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

    /// Sends a turn with only the transcript the worker has not seen. A worker that is
    /// gone, or cut off for not reading, gets nothing: its WorkerLost reassigns the turn.
    fn dispatch(&mut self, worker_id: &str, turn: &TurnKey, deadline_ms: i64) {
        let cursor = self.cursor_of(worker_id);
        let transcript = self.session.transcript();
        // A broadcast (benchmark) session's workers answer blind: its turns carry no
        // transcript, so a round costs what the round machinery costs.
        let blind = self.session.mode().is_broadcast();
        let delta = if blind {
            Vec::new()
        } else {
            transcript[cursor as usize..].to_vec()
        };
        let header = ((cursor == 0 || blind) && !self.announced.contains(worker_id)).then(|| {
            let spec = self.session.spec();
            SessionHeader {
                task: spec.task.clone(),
                roles: self.session.participants().to_vec(),
                max_rounds: spec.max_rounds,
            }
        });
        let proposal = match (turn.phase, self.session.current_proposal()) {
            (Phase::Review, Some((v, h))) => Some((v, h.to_string())),
            _ => None,
        };
        let order = TurnOrder {
            session_id: self.session.id().to_string(),
            turn: turn.clone(),
            header,
            delta,
            proposal,
            deadline_ms,
            trace_context: self
                .trace
                .as_ref()
                .map(|trace| trace.turn_context())
                .unwrap_or_default(),
        };
        let transcript_len = transcript.len() as u64;
        tracing::debug!(%worker_id, round = turn.round, phase = %turn.phase, attempt = turn.attempt, "dispatch");
        if self
            .mesh
            .registry
            .send(worker_id, ToWorker::Turn(Box::new(order)))
        {
            self.timings
                .get_or_insert_with(Box::default)
                .dispatched_at
                .insert(turn.role.clone(), Instant::now());
            self.cursors.insert(worker_id.to_string(), transcript_len);
            self.announced.insert(worker_id.to_string());
        }
    }
}

/// How a write ended, when it did not succeed.
enum Written {
    Stop(Stop),
    /// The store refused the data itself (too large, corrupt, a backend fault).
    Refused(String),
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A session's trace below its `session` span: a `round` span per round (FRAMING, round 0,
/// sits directly under the session) and a span per phase (named by the phase) under it,
/// each opened on the status change that starts it and closed on the next. Turns carry
/// their phase span's context to the workers. Nothing is built while tracing is off.
#[derive(Default)]
struct SessionTrace {
    /// The actor's `session` span (the span its task runs in), once known.
    session: Option<tracing::Span>,
    round: Option<(u32, tracing::Span)>,
    phase: Option<tracing::Span>,
    /// The phase span's W3C context, shared by every turn of the phase.
    context: agentmesh_telemetry::TraceContext,
}

impl SessionTrace {
    fn status_changed(&mut self, status: agentmesh_core::Status, round: u32) {
        use agentmesh_telemetry::genai::{MESH_PHASE, MESH_ROUND, MESH_STATUS};
        if !agentmesh_telemetry::enabled() {
            return;
        }
        let session = self
            .session
            .get_or_insert_with(tracing::Span::current)
            .clone();
        // The previous phase ends here.
        self.phase = None;
        self.context = agentmesh_telemetry::TraceContext::default();
        let Some(phase) = status.phase() else {
            // Ended: the round closes and the session span says how it ended.
            self.round = None;
            agentmesh_telemetry::OpenTelemetrySpanExt::set_attribute(
                &session,
                MESH_STATUS,
                status.to_string(),
            );
            if matches!(
                status,
                agentmesh_core::Status::Failed | agentmesh_core::Status::Cancelled
            ) {
                agentmesh_telemetry::record_error(&session, &status.to_string(), "session ended");
            }
            return;
        };
        let parent = if round == 0 {
            self.round = None;
            session
        } else {
            if self.round.as_ref().is_none_or(|(n, _)| *n != round) {
                // Integers as i64: tracing-opentelemetry exports other types as text.
                let span = tracing::info_span!(parent: &session, "round", { MESH_ROUND } = i64::from(round));
                self.round = Some((round, span));
            }
            self.round
                .as_ref()
                .map(|(_, span)| span.clone())
                .expect("set above")
        };
        let name = phase.to_string();
        let span = tracing::info_span!(
            parent: &parent,
            "phase",
            otel.name = %name,
            { MESH_PHASE } = %name,
            { MESH_ROUND } = i64::from(round),
        );
        self.context = agentmesh_telemetry::TraceContext::of(&span);
        self.phase = Some(span);
    }

    /// The context a turn dispatched now carries.
    fn turn_context(&self) -> agentmesh_telemetry::TraceContext {
        self.context.clone()
    }
}
