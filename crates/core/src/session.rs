//! The session state machine.
//!
//! ```text
//! PENDING ──all roles assigned──▶ FRAMING ──framework──▶ CONTRIBUTE(k) ──all specialists──▶
//!   SYNTHESIZE(k) ──proposal v k──▶ REVIEW(k) ──every participant approved v k──▶ CONSENSUS
//!                                        │ some objected, k < max_rounds ──▶ CONTRIBUTE(k+1)
//!                                        └ some objected, k = max_rounds ──▶ NO_CONSENSUS
//! any non-terminal ──cancel──▶ CANCELLED      any non-terminal ──deadline / give-up──▶ FAILED
//! ```
//!
//! A [`SessionMode::Broadcast`] session (the benchmark's round, `mesh-bench`) has no
//! supervisor and no negotiation: every round is one CONTRIBUTE phase to every specialist.
//!
//! ```text
//! PENDING ──all roles assigned──▶ CONTRIBUTE(1) ──all specialists──▶ CONTRIBUTE(2) ──▶ …
//!   CONTRIBUTE(R) ──all specialists──▶ COMPLETED
//! ```
//!
//! [`Session::apply`] is the one transition function: it takes the current time and an
//! [`Input`], and returns the [`Effect`]s the driver must carry out, or a [`Rejection`]
//! that changed nothing. It never reads a clock: deadlines are compared with the `now`
//! it is handed, and [`Session::next_deadline`] tells the driver when to come back.
//!
//! # Turns
//!
//! A turn is addressed by [`TurnKey`] (round, phase, role, attempt). When the worker
//! holding a role vanishes, its outstanding turn's attempt is retired and the turn is
//! dispatched again, with attempt + 1, to the replacement. A result for a retired attempt
//! is stale (FAILED_PRECONDITION). A result for a turn that was already accepted, from
//! the same worker, is an idempotent duplicate: it is acknowledged with the seq it got
//! the first time and appends nothing.

use crate::entry::{Entry, EntryType, Phase, Verdict};
use crate::hash::proposal_hash;
use crate::trust::{self, Certificate, Digest32, PublicKey, WorkerKey};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Limits and timings of one session. Pure numbers: the driver owns the clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// How long a phase may wait for its turns (including for a replacement worker).
    pub phase_timeout_ms: i64,
    /// How long a new session may wait in PENDING for a worker of every role.
    pub pending_timeout_ms: i64,
    /// How many times one turn may fail (worker-reported) before the session fails.
    pub max_turn_attempts: u32,
    /// The largest content a reply may carry.
    pub max_content_bytes: usize,
    /// The largest entry the store takes, every field counted as stored (its JSON): a
    /// reply whose entry would not fit is refused before it is accepted, so the phase's
    /// write can never be refused for its size.
    pub max_stored_entry_bytes: usize,
    /// Every result must carry its worker's Ed25519 signature over its statement
    /// ([`crate::trust::reply_statement`]), verified under the key the worker announced,
    /// before it is accepted. Off only to measure what signing costs (`mesh-bench`):
    /// then signatures are kept as sent, unchecked. The chain is kept either way.
    pub require_signatures: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            phase_timeout_ms: 60_000,
            pending_timeout_ms: 60_000,
            max_turn_attempts: 3,
            max_content_bytes: 512 * 1024,
            max_stored_entry_bytes: 1024 * 1024,
            require_signatures: true,
        }
    }
}

/// What a client asked for. Validated by [`SessionSpec::validate`] before a session exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSpec {
    pub id: String,
    pub task: String,
    /// Specialist roles, in the order given. The supervisor is implicit.
    pub specialists: Vec<String>,
    pub max_rounds: u32,
}

impl SessionSpec {
    /// Checks the request; the error says precisely what is wrong (INVALID_ARGUMENT).
    pub fn validate(&self) -> Result<(), Rejection> {
        if self.task.trim().is_empty() {
            return Err(Rejection::invalid("task must not be empty"));
        }
        if self.specialists.is_empty() {
            return Err(Rejection::invalid(
                "a session needs at least one specialist role",
            ));
        }
        let mut seen = BTreeSet::new();
        for role in &self.specialists {
            if let Err(why) = validate_role(role) {
                return Err(Rejection::invalid(why));
            }
            if role == crate::SUPERVISOR {
                return Err(Rejection::invalid(
                    "the supervisor always takes part; do not list it as a specialist",
                ));
            }
            if !seen.insert(role) {
                return Err(Rejection::invalid(format!("role {role:?} is listed twice")));
            }
        }
        if self.max_rounds == 0 || self.max_rounds > 100 {
            return Err(Rejection::invalid("max_rounds must be between 1 and 100"));
        }
        Ok(())
    }
}

/// A role name is a short lower-case identifier: it becomes an etcd key segment and a
/// markdown heading, so it must not be empty or carry separators.
pub fn validate_role(role: &str) -> Result<(), String> {
    if role.is_empty() {
        return Err("role must not be empty".into());
    }
    if role.len() > 64 {
        return Err(format!("role {role:?} is longer than 64 bytes"));
    }
    if !role
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "role {role:?} may only hold lower-case letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

/// How a session runs: the negotiation, or the benchmark's broadcast rounds.
///
/// Kept beside the [`SessionSpec`] (not in it) so that every existing spec literal still
/// means a negotiation; it is persisted in the header as
/// [`SessionSummary::broadcast_rounds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum SessionMode {
    /// Supervisor-led rounds until consensus or `max_rounds` (the module diagram).
    #[default]
    Negotiation,
    /// No supervisor and no verdicts: `rounds` rounds of one CONTRIBUTE phase to every
    /// specialist, then [`Status::Completed`]. `max_rounds` does not apply. A load
    /// generator for measuring the round machinery (dispatch, collect, write, publish).
    Broadcast { rounds: u32 },
}

impl SessionMode {
    /// The most rounds a broadcast session may ask for.
    pub const MAX_BROADCAST_ROUNDS: u32 = 1_000_000;

    /// A client's `broadcast_rounds` field: 0 means a negotiation.
    pub fn from_broadcast_rounds(rounds: u32) -> SessionMode {
        if rounds == 0 {
            SessionMode::Negotiation
        } else {
            SessionMode::Broadcast { rounds }
        }
    }

    /// The rounds of a broadcast session; 0 for a negotiation.
    pub fn broadcast_rounds(self) -> u32 {
        match self {
            SessionMode::Negotiation => 0,
            SessionMode::Broadcast { rounds } => rounds,
        }
    }

    pub fn is_broadcast(self) -> bool {
        matches!(self, SessionMode::Broadcast { .. })
    }

    /// Checks the mode (INVALID_ARGUMENT): a broadcast runs 1 to 1,000,000 rounds.
    pub fn validate(self) -> Result<(), Rejection> {
        match self {
            SessionMode::Broadcast { rounds }
                if rounds == 0 || rounds > Self::MAX_BROADCAST_ROUNDS =>
            {
                Err(Rejection::invalid(format!(
                    "broadcast_rounds must be between 1 and {}",
                    Self::MAX_BROADCAST_ROUNDS
                )))
            }
            _ => Ok(()),
        }
    }
}

/// Where a session is. The last five are terminal: nothing leaves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Pending,
    Framing,
    Contribute,
    Synthesize,
    Review,
    Consensus,
    NoConsensus,
    Cancelled,
    Failed,
    /// A broadcast session ran all its rounds ([`SessionMode::Broadcast`] only).
    Completed,
}

impl Status {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Consensus
                | Status::NoConsensus
                | Status::Cancelled
                | Status::Failed
                | Status::Completed
        )
    }

    /// The working phase this status is, if it is one.
    pub fn phase(self) -> Option<Phase> {
        match self {
            Status::Framing => Some(Phase::Framing),
            Status::Contribute => Some(Phase::Contribute),
            Status::Synthesize => Some(Phase::Synthesize),
            Status::Review => Some(Phase::Review),
            _ => None,
        }
    }

    fn of_phase(phase: Phase) -> Status {
        match phase {
            Phase::Framing => Status::Framing,
            Phase::Contribute => Status::Contribute,
            Phase::Synthesize => Status::Synthesize,
            Phase::Review => Status::Review,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Framing => "FRAMING",
            Status::Contribute => "CONTRIBUTE",
            Status::Synthesize => "SYNTHESIZE",
            Status::Review => "REVIEW",
            Status::Consensus => "CONSENSUS",
            Status::NoConsensus => "NO_CONSENSUS",
            Status::Cancelled => "CANCELLED",
            Status::Failed => "FAILED",
            Status::Completed => "COMPLETED",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The address of one turn within a session.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TurnKey {
    pub round: u32,
    pub phase: Phase,
    pub role: String,
    pub attempt: u32,
}

/// A worker's answer to a turn, before the core accepts it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub entry_type: Option<EntryType>,
    pub content: String,
    pub verdict: Option<Verdict>,
    pub concerns: Vec<String>,
    /// For a review: the hash of the version it judges.
    pub proposal_hash: String,
    pub signature: Vec<u8>,
    /// Tokens the model call(s) behind this reply consumed; 0 when not metered.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Proof, made by whoever received the reply, that `signature` verified over the
    /// statement the reply claims. The core still builds the statement it expects and
    /// accepts the proof only if it covers exactly that; without one it verifies itself.
    pub verified: Option<crate::trust::Verified>,
}

/// An objection still open at the end of a review.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Objection {
    pub role: String,
    pub concern: String,
}

/// Everything that can happen to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The driver found `worker_id` for `role` (answering [`Effect::NeedWorker`]); `key`
    /// is the public key the worker announced (its results must verify under it).
    Assign {
        role: String,
        worker_id: String,
        key: Option<PublicKey>,
    },
    /// A worker answered a turn.
    Result {
        worker_id: String,
        turn: TurnKey,
        reply: Reply,
    },
    /// A worker reports it could not complete a turn.
    TurnFailed {
        worker_id: String,
        turn: TurnKey,
        reason: String,
    },
    /// A worker left the mesh (stream closed, lease expired).
    WorkerLost { worker_id: String },
    /// Time passed; deadlines are checked against `now`.
    Tick,
    /// A client cancelled the session.
    Cancel { reason: String },
    /// The driver cannot go on with the session (its store refused the session's data
    /// for good): it ends FAILED with `reason`.
    Abort { reason: String },
}

/// What the driver must do after a transition. Effects are ordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Find a live worker for `role` and answer with [`Input::Assign`].
    NeedWorker { role: String },
    /// Send this turn to the worker that holds its role.
    Dispatch {
        worker_id: String,
        turn: TurnKey,
        deadline_ms: i64,
    },
    /// An entry joined the transcript: persist it, then publish it.
    Appended(Entry),
    /// The session moved to another status (or round).
    StatusChanged { status: Status, round: u32 },
    /// The session no longer needs this worker.
    Release { worker_id: String },
}

/// Why an input changed nothing. Each kind maps to exactly one gRPC status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectKind {
    /// Malformed input: empty task, wrong entry type, a review without a verdict.
    Invalid,
    /// The input is about a turn, round, phase or attempt that is not current, or the
    /// session has ended, or a sign-off names another version.
    Stale,
    /// The sender holds no right to this turn: not a participant, not the assigned worker.
    NotAssigned,
    /// The reply is larger than the session accepts.
    TooLarge,
    /// The result is not signed by the key its worker announced: no signature, a
    /// malformed one, or one that does not verify over this turn and what it says (another
    /// worker's key, another session's or round's result replayed, a changed field).
    BadSignature,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: RejectKind,
    pub message: String,
}

impl Rejection {
    fn new(kind: RejectKind, message: impl Into<String>) -> Self {
        Rejection {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(RejectKind::Invalid, message)
    }
    fn stale(message: impl Into<String>) -> Self {
        Self::new(RejectKind::Stale, message)
    }
    fn not_assigned(message: impl Into<String>) -> Self {
        Self::new(RejectKind::NotAssigned, message)
    }
    fn bad_signature(message: impl Into<String>) -> Self {
        Self::new(RejectKind::BadSignature, message)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Rejection {}

/// The result of an accepted input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    pub effects: Vec<Effect>,
    /// For a result: the seq of its entry.
    pub seq: Option<u64>,
    /// For a result: it had been accepted before, and nothing changed now.
    pub duplicate: bool,
}

/// A read-only view of a session for clients, stores and exports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub id: String,
    pub task: String,
    /// Every participant, supervisor first.
    pub roles: Vec<String>,
    pub max_rounds: u32,
    pub status: Status,
    pub round: u32,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub reason: String,
    pub final_version: u32,
    pub final_hash: String,
    pub open_objections: Vec<Objection>,
    /// role -> worker id, for the roles that hold a worker now.
    pub assignments: BTreeMap<String, String>,
    pub entry_count: u64,
    /// Model tokens over the whole transcript (0 for unmetered brains).
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    /// A broadcast session's rounds ([`SessionMode::Broadcast`]); 0 for a negotiation.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub broadcast_rounds: u32,
    /// A CONSENSUS session's unanimity certificate, signed by the coordinator that ran it
    /// (the core builds it unsigned: [`Session::certificate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Box<Certificate>>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl SessionSummary {
    /// How the session runs, as its header says.
    pub fn mode(&self) -> SessionMode {
        SessionMode::from_broadcast_rounds(self.broadcast_rounds)
    }

    /// The spec the session was created with, rebuilt from its header (for a coordinator
    /// that resumes or replays it). The supervisor, when it takes part, is listed first.
    pub fn spec(&self) -> SessionSpec {
        let skip = usize::from(!self.mode().is_broadcast());
        SessionSpec {
            id: self.id.clone(),
            task: self.task.clone(),
            specialists: self.roles.iter().skip(skip).cloned().collect(),
            max_rounds: self.max_rounds,
        }
    }
}

/// The current proposal version.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Proposal {
    version: u32,
    hash: String,
}

/// One negotiation. See the module docs for the state diagram.
#[derive(Debug, Clone)]
pub struct Session {
    spec: SessionSpec,
    mode: SessionMode,
    config: SessionConfig,
    /// Supervisor first, then the specialists in the order given.
    participants: Vec<String>,
    status: Status,
    round: u32,
    created_ms: i64,
    updated_ms: i64,
    /// When the current status gives up (PENDING or a working phase).
    deadline_ms: i64,
    reason: String,
    assignments: BTreeMap<String, String>,
    /// The public key each role's holder announced, parsed once.
    keys: BTreeMap<String, WorkerKey>,
    /// Where the transcript's hash chain starts ([`trust::genesis`]).
    genesis: Digest32,
    /// The turns of the current phase still awaited: role -> current attempt.
    awaiting: BTreeMap<String, u32>,
    /// Worker-reported failures of the current phase's turns, per role.
    failures: BTreeMap<String, u32>,
    /// Every accepted turn: its key -> (worker, seq). Makes duplicates idempotent.
    accepted: BTreeMap<TurnKey, (String, u64)>,
    transcript: Vec<Entry>,
    /// Model tokens summed over `transcript`, kept as entries are appended so that a
    /// summary costs nothing per entry.
    prompt_tokens: u64,
    completion_tokens: u64,
    proposal: Option<Proposal>,
    /// Verdicts of the current review: role -> (verdict, concerns).
    reviews: BTreeMap<String, (Verdict, Vec<String>)>,
    open_objections: Vec<Objection>,
    final_proposal: Option<Proposal>,
}

impl Session {
    /// A new negotiation in PENDING. The returned effects ask for a worker of every role.
    pub fn new(spec: SessionSpec, config: SessionConfig, now_ms: i64) -> (Session, Vec<Effect>) {
        Self::new_in(SessionMode::Negotiation, spec, config, now_ms)
    }

    /// A new session of `mode` in PENDING. The returned effects ask for a worker of every
    /// role (a broadcast session has no supervisor).
    pub fn new_in(
        mode: SessionMode,
        spec: SessionSpec,
        config: SessionConfig,
        now_ms: i64,
    ) -> (Session, Vec<Effect>) {
        let mut participants = Vec::with_capacity(spec.specialists.len() + 1);
        if !mode.is_broadcast() {
            participants.push(crate::SUPERVISOR.to_string());
        }
        participants.extend(spec.specialists.iter().cloned());
        let session = Session {
            deadline_ms: now_ms.saturating_add(config.pending_timeout_ms),
            genesis: trust::genesis(&spec.id, &spec.task),
            keys: BTreeMap::new(),
            spec,
            mode,
            config,
            status: Status::Pending,
            round: 0,
            created_ms: now_ms,
            updated_ms: now_ms,
            reason: String::new(),
            assignments: BTreeMap::new(),
            awaiting: BTreeMap::new(),
            failures: BTreeMap::new(),
            accepted: BTreeMap::new(),
            transcript: Vec::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            proposal: None,
            reviews: BTreeMap::new(),
            open_objections: Vec::new(),
            final_proposal: None,
            participants,
        };
        let effects = session
            .participants
            .iter()
            .map(|role| Effect::NeedWorker { role: role.clone() })
            .collect();
        (session, effects)
    }

    /// Rebuilds a session from its persisted transcript, for a coordinator that takes
    /// over from a dead leader or restarts on its own data.
    ///
    /// Every entry is replayed through [`Session::apply`] as the result of the worker that
    /// wrote it, so a restored session obeys exactly the rules it was built under, and a
    /// transcript that those rules could not have produced is refused. Afterwards no role
    /// holds a worker: the returned effects ask for one per role, and the open turns of
    /// the current phase go out (under a fresh attempt) as workers are assigned. The
    /// current status gets a full timeout from `now_ms`.
    pub fn restore(
        spec: SessionSpec,
        config: SessionConfig,
        created_ms: i64,
        transcript: &[Entry],
        now_ms: i64,
    ) -> Result<(Session, Vec<Effect>), String> {
        Self::restore_with_history(spec, config, created_ms, transcript, now_ms)
            .map(|(session, effects, _)| (session, effects))
    }

    /// [`Session::restore_with_history`] of a negotiation.
    pub fn restore_with_history(
        spec: SessionSpec,
        config: SessionConfig,
        created_ms: i64,
        transcript: &[Entry],
        now_ms: i64,
    ) -> Result<(Session, Vec<Effect>, Vec<Effect>), String> {
        Self::restore_in(
            SessionMode::Negotiation,
            spec,
            config,
            created_ms,
            transcript,
            now_ms,
        )
    }

    /// [`Session::restore`], plus the session's history: every `Appended` and
    /// `StatusChanged` effect the original run produced, in order. Status changes are a
    /// function of the transcript, so a new leader rebuilds exactly the event sequence
    /// watchers saw (only an ending by cancellation or failure is not in the transcript).
    pub fn restore_in(
        mode: SessionMode,
        spec: SessionSpec,
        config: SessionConfig,
        created_ms: i64,
        transcript: &[Entry],
        now_ms: i64,
    ) -> Result<(Session, Vec<Effect>, Vec<Effect>), String> {
        let mut history = Vec::new();
        let mut keep = |effects: Vec<Effect>| {
            history.extend(
                effects
                    .into_iter()
                    .filter(|e| matches!(e, Effect::Appended(_) | Effect::StatusChanged { .. })),
            )
        };
        let (mut session, _) = Session::new_in(mode, spec, config, created_ms);
        let id = session.spec.id.clone();
        let corrupt = |entry: &Entry, why: String| {
            format!(
                "session {id}: entry {} cannot be replayed: {why}",
                entry.seq
            )
        };
        if !transcript.is_empty() {
            // The transcript started, so every role was held; placeholders stand in for
            // workers whose entries come later (or never).
            for role in session.participants.clone() {
                let holder = format!("restored:{role}");
                keep(
                    session
                        .apply(
                            created_ms,
                            Input::Assign {
                                role,
                                worker_id: holder,
                                key: None,
                            },
                        )
                        .map_err(|r| format!("session {id}: {r}"))?
                        .effects,
                );
            }
        }
        for entry in transcript {
            let at = entry.timestamp_ms;
            let holds = session.assignments.get(&entry.role) == Some(&entry.worker_id)
                && session.keys.get(&entry.role).map(WorkerKey::public) == entry.public_key;
            if !holds {
                // The role's holder in the replay gives it up, and so does the entry's
                // worker if it holds another role here (worker ids are the workers' own:
                // one may be named like a placeholder, or have held another role before
                // it left and came back as this one).
                let holder = session.assignments.get(&entry.role).cloned();
                for worker_id in holder.into_iter().chain([entry.worker_id.clone()]) {
                    let _ = session.apply(at, Input::WorkerLost { worker_id });
                }
                session
                    .apply(
                        at,
                        Input::Assign {
                            role: entry.role.clone(),
                            worker_id: entry.worker_id.clone(),
                            key: entry.public_key,
                        },
                    )
                    .map_err(|r| corrupt(entry, r.message))?;
            }
            let mut turn = session
                .awaited_turn(&entry.role)
                .ok_or_else(|| corrupt(entry, format!("role {} has no open turn", entry.role)))?;
            if (turn.round, turn.phase) != (entry.round, entry.phase) {
                return Err(corrupt(
                    entry,
                    format!(
                        "it is round {} {}, not round {} {}",
                        turn.round, turn.phase, entry.round, entry.phase
                    ),
                ));
            }
            // The entry names the attempt its worker answered (and signed); the replay
            // cannot count the failed attempts before it, which left no entry.
            turn.attempt = entry.attempt;
            session.awaiting.insert(entry.role.clone(), entry.attempt);
            let reply = Reply {
                entry_type: Some(entry.entry_type),
                content: entry.content.clone(),
                verdict: entry.verdict,
                concerns: entry.concerns.clone(),
                proposal_hash: entry.proposal_hash.clone(),
                signature: entry.signature.clone(),
                prompt_tokens: entry.prompt_tokens,
                completion_tokens: entry.completion_tokens,
                // A new leader trusts no earlier check: every stored signature is
                // verified again here.
                verified: None,
            };
            let applied = session
                .apply(
                    at,
                    Input::Result {
                        worker_id: entry.worker_id.clone(),
                        turn,
                        reply,
                    },
                )
                .map_err(|r| corrupt(entry, r.message))?;
            keep(applied.effects.clone());
            if applied.seq != Some(entry.seq) {
                return Err(corrupt(
                    entry,
                    format!("it replays as seq {:?}", applied.seq),
                ));
            }
            // The chain: a new leader refuses a store whose entries were changed, removed
            // or reordered (signatures were verified by the replay itself).
            let rebuilt = session.transcript.last().map(|e| e.chain_hash);
            if rebuilt != Some(entry.chain_hash) {
                return Err(corrupt(
                    entry,
                    format!(
                        "its chain hash {} is not {}, the hash of the entry over the one \
                         before it: the stored transcript was altered",
                        entry.chain_hash,
                        rebuilt.unwrap_or_default()
                    ),
                ));
            }
            // What the rules derive (timestamp, proposal hash and version, verdict fields
            // only on reviews) must be what was stored, or the restored transcript would
            // differ from the durable one.
            if session.transcript.last() != Some(entry) {
                return Err(corrupt(
                    entry,
                    "the stored entry is not the one the rules make of it".to_string(),
                ));
            }
        }
        // Nobody holds a role after a takeover, and the old holders' attempts die with
        // the old coordinator: a late result from one of them is stale.
        session.assignments.clear();
        session.keys.clear();
        for attempt in session.awaiting.values_mut() {
            *attempt += 1;
        }
        let timeout = if session.status == Status::Pending {
            session.config.pending_timeout_ms
        } else {
            session.config.phase_timeout_ms
        };
        session.deadline_ms = now_ms.saturating_add(timeout);
        session.updated_ms = now_ms.max(session.updated_ms);
        let effects = if session.status.is_terminal() {
            Vec::new()
        } else {
            session
                .participants
                .iter()
                .map(|role| Effect::NeedWorker { role: role.clone() })
                .collect()
        };
        Ok((session, effects, history))
    }

    pub fn id(&self) -> &str {
        &self.spec.id
    }
    pub fn spec(&self) -> &SessionSpec {
        &self.spec
    }
    pub fn mode(&self) -> SessionMode {
        self.mode
    }
    pub fn status(&self) -> Status {
        self.status
    }
    pub fn round(&self) -> u32 {
        self.round
    }
    pub fn participants(&self) -> &[String] {
        &self.participants
    }
    pub fn transcript(&self) -> &[Entry] {
        &self.transcript
    }
    pub fn assignments(&self) -> &BTreeMap<String, String> {
        &self.assignments
    }
    /// Roles whose turn in the current phase is still awaited.
    pub fn awaiting(&self) -> impl Iterator<Item = &str> {
        self.awaiting.keys().map(String::as_str)
    }
    /// The current attempt of `role`'s turn, if it is awaited.
    pub fn awaited_turn(&self, role: &str) -> Option<TurnKey> {
        let phase = self.status.phase()?;
        self.awaiting.get(role).map(|&attempt| TurnKey {
            round: self.round,
            phase,
            role: role.to_string(),
            attempt,
        })
    }
    /// The proposal version under review and its hash, if there is one.
    pub fn current_proposal(&self) -> Option<(u32, &str)> {
        self.proposal.as_ref().map(|p| (p.version, p.hash.as_str()))
    }
    /// The unsigned unanimity certificate of a session that ended in CONSENSUS with every
    /// approval signed; the coordinator signs it ([`Certificate::sign`]) and stores it in
    /// the session's header.
    pub fn certificate(&self) -> Option<Certificate> {
        if self.status != Status::Consensus {
            return None;
        }
        let fin = self.final_proposal.as_ref()?;
        Certificate::build(
            &self.spec.id,
            &self.spec.task,
            &self.participants,
            fin.version,
            &fin.hash,
            &self.transcript,
        )
    }

    /// The public key `role`'s holder announced, if it holds the role.
    pub fn key_of(&self, role: &str) -> Option<PublicKey> {
        self.keys.get(role).map(WorkerKey::public)
    }

    /// Where the transcript's chain starts.
    pub fn genesis(&self) -> Digest32 {
        self.genesis
    }

    /// When the driver must next deliver [`Input::Tick`], if ever.
    pub fn next_deadline(&self) -> Option<i64> {
        (!self.status.is_terminal()).then_some(self.deadline_ms)
    }

    pub fn summary(&self) -> SessionSummary {
        SessionSummary {
            id: self.spec.id.clone(),
            task: self.spec.task.clone(),
            roles: self.participants.clone(),
            max_rounds: self.spec.max_rounds,
            status: self.status,
            round: self.round,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            reason: self.reason.clone(),
            final_version: self.final_proposal.as_ref().map_or(0, |p| p.version),
            final_hash: self
                .final_proposal
                .as_ref()
                .map_or(String::new(), |p| p.hash.clone()),
            open_objections: self.open_objections.clone(),
            assignments: self.assignments.clone(),
            entry_count: self.transcript.len() as u64,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            broadcast_rounds: self.mode.broadcast_rounds(),
            certificate: None,
        }
    }

    /// The one transition function. On `Err`, nothing changed.
    pub fn apply(&mut self, now_ms: i64, input: Input) -> Result<Applied, Rejection> {
        // An ended session changes no more: every input is ignored or refused here, before
        // any handler runs. The one exception is a result, which `on_result` first
        // matches against the accepted turns, so a worker's resend is still acknowledged
        // with its seq (idempotent), and only then refuses.
        if self.status.is_terminal() && !matches!(input, Input::Result { .. }) {
            return match input {
                // Nothing to do any more: not an error for the driver.
                Input::Tick | Input::WorkerLost { .. } => Ok(Applied::default()),
                _ => Err(Rejection::stale(format!(
                    "session {} has already ended ({})",
                    self.spec.id, self.status
                ))),
            };
        }
        let applied = match input {
            Input::Assign {
                role,
                worker_id,
                key,
            } => self.on_assign(now_ms, role, worker_id, key)?,
            Input::Result {
                worker_id,
                turn,
                reply,
            } => self.on_result(now_ms, worker_id, turn, reply)?,
            Input::TurnFailed {
                worker_id,
                turn,
                reason,
            } => self.on_turn_failed(now_ms, worker_id, turn, reason)?,
            Input::WorkerLost { worker_id } => self.on_worker_lost(now_ms, &worker_id),
            Input::Tick => self.on_tick(now_ms),
            Input::Cancel { reason } => {
                let reason = if reason.is_empty() {
                    "cancelled by client".to_string()
                } else {
                    reason
                };
                self.end_with(now_ms, Status::Cancelled, reason)
            }
            Input::Abort { reason } => self.end_with(now_ms, Status::Failed, reason),
        };
        Ok(applied)
    }

    /// Ends the session from outside its protocol (a client, the driver).
    fn end_with(&mut self, now_ms: i64, status: Status, reason: String) -> Applied {
        let mut effects = Vec::new();
        self.finish(now_ms, status, reason, &mut effects);
        Applied {
            effects,
            ..Applied::default()
        }
    }

    fn on_assign(
        &mut self,
        now_ms: i64,
        role: String,
        worker_id: String,
        key: Option<PublicKey>,
    ) -> Result<Applied, Rejection> {
        if !self.participants.contains(&role) {
            return Err(Rejection::not_assigned(format!(
                "role {role:?} is not a participant of session {}",
                self.spec.id
            )));
        }
        if let Some(holder) = self.assignments.get(&role) {
            return Err(Rejection::stale(format!(
                "role {role:?} is already held by worker {holder}"
            )));
        }
        if self.assignments.values().any(|w| *w == worker_id) {
            return Err(Rejection::stale(format!(
                "worker {worker_id} already holds a role in session {}",
                self.spec.id
            )));
        }
        let key = key
            .map(|k| k.verifier())
            .transpose()
            .map_err(|why| Rejection::invalid(format!("worker {worker_id}: {why}")))?;
        self.assignments.insert(role.clone(), worker_id);
        match key {
            Some(key) => self.keys.insert(role.clone(), key),
            None => self.keys.remove(&role),
        };
        self.updated_ms = now_ms;
        let mut effects = Vec::new();
        if self.status == Status::Pending {
            if self.assignments.len() == self.participants.len() {
                match self.mode {
                    SessionMode::Negotiation => {
                        self.enter_phase(now_ms, Phase::Framing, 0, &mut effects)
                    }
                    SessionMode::Broadcast { .. } => {
                        self.enter_phase(now_ms, Phase::Contribute, 1, &mut effects)
                    }
                }
            }
        } else if let Some(&attempt) = self.awaiting.get(&role) {
            // The replacement takes over the open turn under the attempt that losing the
            // old holder already opened, so any late result of the old holder is stale.
            let turn = TurnKey {
                round: self.round,
                phase: self.status.phase().expect("working status"),
                role,
                attempt,
            };
            self.dispatch(turn, &mut effects);
        }
        Ok(Applied {
            effects,
            ..Applied::default()
        })
    }

    fn on_result(
        &mut self,
        now_ms: i64,
        worker_id: String,
        turn: TurnKey,
        reply: Reply,
    ) -> Result<Applied, Rejection> {
        if reply.content.len() > self.config.max_content_bytes {
            return Err(Rejection::new(
                RejectKind::TooLarge,
                format!(
                    "reply content is {} bytes; the limit is {}",
                    reply.content.len(),
                    self.config.max_content_bytes
                ),
            ));
        }
        if let Some((author, seq)) = self.accepted.get(&turn) {
            if *author == worker_id {
                return Ok(Applied {
                    seq: Some(*seq),
                    duplicate: true,
                    ..Applied::default()
                });
            }
            return Err(Rejection::not_assigned(format!(
                "turn {}/{}/{} was answered by worker {author}, not {worker_id}",
                turn.round, turn.phase, turn.role
            )));
        }
        if self.status.is_terminal() {
            return Err(Rejection::stale(format!(
                "session {} has ended ({})",
                self.spec.id, self.status
            )));
        }
        if !self.participants.contains(&turn.role) {
            return Err(Rejection::not_assigned(format!(
                "role {:?} is not a participant of session {}",
                turn.role, self.spec.id
            )));
        }
        if self.assignments.get(&turn.role) != Some(&worker_id) {
            return Err(Rejection::not_assigned(format!(
                "worker {worker_id} is not assigned role {:?} in session {}",
                turn.role, self.spec.id
            )));
        }
        let phase = self.status.phase();
        if phase != Some(turn.phase) || turn.round != self.round {
            return Err(Rejection::stale(format!(
                "turn is for round {} {}, but the session is in round {} {}",
                turn.round, turn.phase, self.round, self.status
            )));
        }
        let Some(&attempt) = self.awaiting.get(&turn.role) else {
            return Err(Rejection::stale(format!(
                "role {:?} has no open turn in round {} {}",
                turn.role, self.round, turn.phase
            )));
        };
        if turn.attempt != attempt {
            return Err(Rejection::stale(format!(
                "attempt {} of this turn was retired; attempt {attempt} is current",
                turn.attempt
            )));
        }
        let entry = self.validate_reply(&turn, &worker_id, now_ms, reply)?;

        // Accepted: from here on, nothing fails.
        let mut effects = Vec::new();
        let seq = entry.seq;
        self.accepted.insert(turn.clone(), (worker_id, seq));
        self.awaiting.remove(&turn.role);
        self.failures.remove(&turn.role);
        self.updated_ms = now_ms;
        self.prompt_tokens = self.prompt_tokens.saturating_add(entry.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(entry.completion_tokens);
        self.transcript.push(entry.clone());
        self.record_effect_of(&entry, now_ms, &mut effects);
        effects.insert(0, Effect::Appended(entry));
        Ok(Applied {
            effects,
            seq: Some(seq),
            duplicate: false,
        })
    }

    /// Checks a reply against its turn and builds the entry it would append.
    fn validate_reply(
        &self,
        turn: &TurnKey,
        worker_id: &str,
        now_ms: i64,
        reply: Reply,
    ) -> Result<Entry, Rejection> {
        let entry_type = reply
            .entry_type
            .ok_or_else(|| Rejection::invalid("the reply names no entry type"))?;
        if !turn.phase.allows(entry_type, turn.round) {
            return Err(Rejection::invalid(format!(
                "a {entry_type} entry is not allowed in round {} {}",
                turn.round, turn.phase
            )));
        }
        if reply.content.trim().is_empty() && turn.phase != Phase::Review {
            return Err(Rejection::invalid("the reply content is empty"));
        }
        let verified = reply.verified;
        let mut entry = Entry {
            seq: self.transcript.len() as u64 + 1,
            round: turn.round,
            phase: turn.phase,
            role: turn.role.clone(),
            worker_id: worker_id.to_string(),
            entry_type,
            // Timestamps never go backwards within a transcript, even if clocks do.
            timestamp_ms: now_ms.max(self.transcript.last().map_or(i64::MIN, |e| e.timestamp_ms)),
            content: reply.content,
            verdict: None,
            concerns: Vec::new(),
            proposal_hash: String::new(),
            proposal_version: 0,
            signature: reply.signature,
            prompt_tokens: reply.prompt_tokens,
            completion_tokens: reply.completion_tokens,
            attempt: turn.attempt,
            public_key: self.keys.get(&turn.role).map(WorkerKey::public),
            chain_hash: Digest32::default(),
        };
        match turn.phase {
            Phase::Synthesize => {
                entry.proposal_hash = proposal_hash(&entry.content);
                entry.proposal_version = turn.round;
            }
            Phase::Review => {
                let proposal = self.proposal.as_ref().expect("a review follows a proposal");
                let verdict = reply
                    .verdict
                    .ok_or_else(|| Rejection::invalid("a review must carry a verdict"))?;
                match verdict {
                    Verdict::Approve => {
                        if reply.proposal_hash != proposal.hash {
                            return Err(Rejection::stale(format!(
                                "the sign-off names proposal {:?}, but version {} is {}",
                                reply.proposal_hash, proposal.version, proposal.hash
                            )));
                        }
                    }
                    Verdict::Object => {
                        if reply.concerns.iter().all(|c| c.trim().is_empty()) {
                            return Err(Rejection::invalid(
                                "an objection must state at least one concern",
                            ));
                        }
                    }
                    Verdict::Invalid => {}
                }
                entry.verdict = Some(verdict);
                entry.concerns =
                    trust::kept_concerns(Phase::Review, Some(verdict), &reply.concerns);
                entry.proposal_hash = proposal.hash.clone();
                entry.proposal_version = proposal.version;
            }
            Phase::Framing | Phase::Contribute => {}
        }
        let limit = self.config.max_stored_entry_bytes;
        if entry.stored_len_exceeds(limit) {
            return Err(Rejection::new(
                RejectKind::TooLarge,
                format!(
                    "the entry would take more than the store's {limit} bytes as stored \
                     (every field counted, JSON-escaped)"
                ),
            ));
        }
        let content_sha256 = Digest32::from_content(&entry.content);
        if self.config.require_signatures {
            self.check_signature(worker_id, &entry, content_sha256, verified.as_ref())?;
        }
        let prev = self
            .transcript
            .last()
            .map_or(self.genesis, |e| e.chain_hash);
        entry.chain_hash = trust::chain_hash(&prev, &entry, &content_sha256);
        Ok(entry)
    }

    /// The entry's signature must be its worker's, over its statement: this session, this
    /// turn (round, phase, role, attempt) and what it says. A result signed by another key,
    /// or replayed from another session, round or attempt, does not verify. A proof of
    /// verification counts only if it covers this very statement, signature and key.
    fn check_signature(
        &self,
        worker_id: &str,
        entry: &Entry,
        content_sha256: Digest32,
        verified: Option<&trust::Verified>,
    ) -> Result<(), Rejection> {
        let Some(key) = self.keys.get(&entry.role) else {
            return Err(Rejection::bad_signature(format!(
                "worker {worker_id} announced no public key; every result must be signed"
            )));
        };
        if entry.signature.is_empty() {
            return Err(Rejection::bad_signature(format!(
                "the result carries no signature; worker {worker_id} must sign it with \
                 its key {}",
                key.public().short()
            )));
        }
        if entry.signature.len() != trust::SIGNATURE_LEN {
            return Err(Rejection::bad_signature(format!(
                "the signature is {} bytes; an Ed25519 signature is {}",
                entry.signature.len(),
                trust::SIGNATURE_LEN
            )));
        }
        let statement = trust::entry_statement(&self.spec.id, entry, content_sha256).encode();
        let proven = verified.is_some_and(|v| v.covers(&statement, &entry.signature, key));
        if !proven && !key.verifies(&statement, &entry.signature) {
            return Err(Rejection::bad_signature(format!(
                "the signature does not verify under worker {worker_id}'s key {} over \
                 session {} round {} {} role {} attempt {} and what the result says \
                 (signed by another key, or for another session, turn or content)",
                key.public().short(),
                self.spec.id,
                entry.round,
                entry.phase,
                entry.role,
                entry.attempt
            )));
        }
        Ok(())
    }

    /// Folds an accepted entry into the phase logic: advance when the phase is complete.
    fn record_effect_of(&mut self, entry: &Entry, now_ms: i64, effects: &mut Vec<Effect>) {
        match entry.phase {
            Phase::Synthesize => {
                self.proposal = Some(Proposal {
                    version: entry.proposal_version,
                    hash: entry.proposal_hash.clone(),
                });
            }
            Phase::Review => {
                self.reviews.insert(
                    entry.role.clone(),
                    (
                        entry.verdict.unwrap_or(Verdict::Invalid),
                        entry.concerns.clone(),
                    ),
                );
            }
            Phase::Framing | Phase::Contribute => {}
        }
        if !self.awaiting.is_empty() {
            return;
        }
        match entry.phase {
            Phase::Framing => self.enter_phase(now_ms, Phase::Contribute, 1, effects),
            Phase::Contribute => match self.mode {
                SessionMode::Negotiation => {
                    self.enter_phase(now_ms, Phase::Synthesize, self.round, effects)
                }
                SessionMode::Broadcast { rounds } if self.round >= rounds => {
                    let reason = format!("completed {rounds} broadcast round(s)");
                    self.finish(now_ms, Status::Completed, reason, effects);
                }
                SessionMode::Broadcast { .. } => {
                    self.enter_phase(now_ms, Phase::Contribute, self.round + 1, effects)
                }
            },
            Phase::Synthesize => self.enter_phase(now_ms, Phase::Review, self.round, effects),
            Phase::Review => self.conclude_review(now_ms, effects),
        }
    }

    /// Every participant has reviewed the current version: consensus, another round, or
    /// the end without consensus.
    fn conclude_review(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        let proposal = self.proposal.clone().expect("reviews judge a proposal");
        let all_approved = self
            .participants
            .iter()
            .all(|role| matches!(self.reviews.get(role), Some((Verdict::Approve, _))));
        let objections: Vec<Objection> = self
            .participants
            .iter()
            .filter_map(|role| self.reviews.get(role).map(|r| (role, r)))
            .filter(|(_, (verdict, _))| *verdict != Verdict::Approve)
            .flat_map(|(role, (_, concerns))| {
                concerns.iter().map(|c| Objection {
                    role: role.clone(),
                    concern: c.clone(),
                })
            })
            .collect();
        self.reviews.clear();
        self.open_objections = objections;
        if all_approved {
            self.final_proposal = Some(proposal.clone());
            let reason = format!(
                "all {} participants signed proposal v{} ({})",
                self.participants.len(),
                proposal.version,
                &proposal.hash[..12]
            );
            self.finish(now_ms, Status::Consensus, reason, effects);
        } else if self.round >= self.spec.max_rounds {
            let reason = format!(
                "no consensus after {} round(s): {} objection(s) still open",
                self.round,
                self.open_objections.len()
            );
            self.finish(now_ms, Status::NoConsensus, reason, effects);
        } else {
            self.enter_phase(now_ms, Phase::Contribute, self.round + 1, effects);
        }
    }

    fn enter_phase(&mut self, now_ms: i64, phase: Phase, round: u32, effects: &mut Vec<Effect>) {
        self.status = Status::of_phase(phase);
        self.round = round;
        self.updated_ms = now_ms;
        self.deadline_ms = now_ms.saturating_add(self.config.phase_timeout_ms);
        self.failures.clear();
        let speakers: Vec<String> = match phase {
            Phase::Framing | Phase::Synthesize => vec![crate::SUPERVISOR.to_string()],
            Phase::Contribute => self.spec.specialists.clone(),
            Phase::Review => self.participants.clone(),
        };
        self.awaiting = speakers.iter().map(|r| (r.clone(), 1)).collect();
        effects.push(Effect::StatusChanged {
            status: self.status,
            round,
        });
        for role in speakers {
            let turn = TurnKey {
                round,
                phase,
                role,
                attempt: 1,
            };
            self.dispatch(turn, effects);
        }
    }

    /// Sends `turn` to its role's worker, or asks for one if the role has none right now.
    fn dispatch(&self, turn: TurnKey, effects: &mut Vec<Effect>) {
        // A role without a worker was already asked for (NeedWorker); its turn goes out
        // when the replacement is assigned.
        if let Some(worker_id) = self.assignments.get(&turn.role) {
            effects.push(Effect::Dispatch {
                worker_id: worker_id.clone(),
                turn,
                deadline_ms: self.deadline_ms,
            });
        }
    }

    fn on_turn_failed(
        &mut self,
        now_ms: i64,
        worker_id: String,
        turn: TurnKey,
        reason: String,
    ) -> Result<Applied, Rejection> {
        if self.assignments.get(&turn.role) != Some(&worker_id) {
            return Err(Rejection::not_assigned(format!(
                "worker {worker_id} is not assigned role {:?}",
                turn.role
            )));
        }
        if self.status.phase() != Some(turn.phase)
            || turn.round != self.round
            || self.awaiting.get(&turn.role) != Some(&turn.attempt)
        {
            return Err(Rejection::stale("the failed turn is not the current one"));
        }
        let mut effects = Vec::new();
        let failures = self.failures.entry(turn.role.clone()).or_insert(0);
        *failures += 1;
        if *failures >= self.config.max_turn_attempts {
            let why = format!(
                "role {} failed its round {} {} turn {} times; last: {reason}",
                turn.role, turn.round, turn.phase, failures
            );
            self.finish(now_ms, Status::Failed, why, &mut effects);
        } else {
            let attempt = self.awaiting.get_mut(&turn.role).expect("checked above");
            *attempt += 1;
            let retry = TurnKey {
                attempt: *attempt,
                ..turn
            };
            self.updated_ms = now_ms;
            self.dispatch(retry, &mut effects);
        }
        Ok(Applied {
            effects,
            ..Applied::default()
        })
    }

    fn on_worker_lost(&mut self, now_ms: i64, worker_id: &str) -> Applied {
        let mut effects = Vec::new();
        let lost: Vec<String> = self
            .assignments
            .iter()
            .filter(|(_, w)| w.as_str() == worker_id)
            .map(|(role, _)| role.clone())
            .collect();
        for role in lost {
            self.assignments.remove(&role);
            self.keys.remove(&role);
            self.updated_ms = now_ms;
            // Retire the open attempt now, so a late result from the lost worker is stale
            // even if it reconnects before a replacement is found.
            if let Some(attempt) = self.awaiting.get_mut(&role) {
                *attempt += 1;
            }
            effects.push(Effect::NeedWorker { role });
        }
        Applied {
            effects,
            ..Applied::default()
        }
    }

    fn on_tick(&mut self, now_ms: i64) -> Applied {
        let mut effects = Vec::new();
        if now_ms < self.deadline_ms {
            return Applied::default();
        }
        let secs = match self.status {
            Status::Pending => self.config.pending_timeout_ms,
            _ => self.config.phase_timeout_ms,
        } as f64
            / 1000.0;
        let reason = if self.status == Status::Pending {
            let missing: Vec<&str> = self
                .participants
                .iter()
                .filter(|r| !self.assignments.contains_key(*r))
                .map(String::as_str)
                .collect();
            format!(
                "no live worker for role(s) {} within {secs}s",
                missing.join(", ")
            )
        } else {
            let (unheld, silent): (Vec<&str>, Vec<&str>) = self
                .awaiting
                .keys()
                .map(String::as_str)
                .partition(|r| !self.assignments.contains_key(*r));
            let mut parts = Vec::new();
            if !unheld.is_empty() {
                parts.push(format!("no live worker for role(s) {}", unheld.join(", ")));
            }
            if !silent.is_empty() {
                parts.push(format!("no answer from role(s) {}", silent.join(", ")));
            }
            format!(
                "round {} {} timed out after {secs}s: {}",
                self.round,
                self.status,
                parts.join("; ")
            )
        };
        self.finish(now_ms, Status::Failed, reason, &mut effects);
        Applied {
            effects,
            ..Applied::default()
        }
    }

    fn finish(&mut self, now_ms: i64, status: Status, reason: String, effects: &mut Vec<Effect>) {
        debug_assert!(status.is_terminal());
        self.status = status;
        self.reason = reason;
        self.updated_ms = now_ms;
        self.awaiting.clear();
        effects.push(Effect::StatusChanged {
            status,
            round: self.round,
        });
        self.keys.clear();
        for (_, worker_id) in std::mem::take(&mut self.assignments) {
            effects.push(Effect::Release { worker_id });
        }
    }
}
