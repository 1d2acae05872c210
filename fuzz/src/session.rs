//! `core_session`: a session built from an arbitrary spec (or a fixed valid one), driven
//! by an arbitrary sequence of inputs, with the core's invariants checked after every
//! step, failovers (`Session::restore_in` from the transcript, then carrying on with the
//! restored session) at arbitrary points, and the lossless exports checked at the end.
//!
//! The inputs mirror [`agentmesh_core::Input`], with references into the session's state
//! (the holder of a role, the turn it awaits, a result accepted earlier) beside raw
//! values, so that the fuzzer reaches every phase and outcome as well as the rejections.

use crate::fixture::{self, Snapshot, snapshot};
use agentmesh_core::hash::proposal_hash;
use agentmesh_core::session::validate_role;
use agentmesh_core::{
    Applied, Effect, Entry, EntryType, Input, Phase, RejectKind, Reply, SUPERVISOR, Session,
    SessionConfig, SessionMode, SessionSpec, SessionSummary, Status, TurnKey, Verdict, export,
};
use agentmesh_proto::v1;
use arbitrary::Arbitrary;
use std::collections::{BTreeMap, BTreeSet};

/// Role names the fuzzer picks from besides raw strings: the defaults, and one that is
/// valid but takes part in no session here.
const ROLES: [&str; 6] = [
    SUPERVISOR, "backend", "security", "frontend", "database", "intruder",
];

/// Worker ids besides raw strings and the holders. Worker ids are chosen by workers
/// (1 to 128 bytes, anything), so they include the placeholders `Session::restore` uses.
const WORKERS: [&str; 6] = [
    "w0",
    "w1",
    "w2",
    "w3",
    "restored:supervisor",
    "restored:backend",
];

#[derive(Arbitrary, Debug)]
pub struct Plan {
    pub spec: SpecPlan,
    pub config: ConfigPlan,
    pub start: TimeMove,
    pub steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
pub enum SpecPlan {
    /// A valid negotiation: supervisor and 1-4 of the default specialists, 1-4 rounds.
    Negotiation { specialists: u8, max_rounds: u8 },
    /// A valid broadcast session: 1-4 specialists, 1-4 rounds.
    Broadcast { specialists: u8, rounds: u8 },
    /// Anything; when `SessionSpec::validate` or `SessionMode::validate` refuses it (as
    /// the coordinator would), the fixed negotiation is used.
    Raw {
        task: String,
        specialists: Vec<RoleName>,
        max_rounds: u32,
        broadcast_rounds: u32,
    },
}

#[derive(Arbitrary, Debug)]
pub enum ConfigPlan {
    /// Short timeouts, 3 attempts, a small content limit.
    Small,
    /// The coordinator's defaults (content limit 4 KiB instead of 512 KiB).
    Default,
    Raw {
        phase_timeout_ms: i64,
        pending_timeout_ms: i64,
        max_turn_attempts: u8,
        max_content_bytes: u16,
        /// `None`: the default (1 MiB).
        max_stored_entry_bytes: Option<u16>,
    },
}

#[derive(Arbitrary, Debug, Clone)]
pub enum RoleName {
    Known(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum RoleRef {
    /// The n-th participant (mod the number of participants).
    Participant(u8),
    Name(RoleName),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum WorkerRef {
    /// Whoever holds the role now (a pool worker if nobody does).
    Holder(RoleRef),
    Pool(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum TurnRef {
    /// Exactly the turn the session awaits from the role.
    Awaited(RoleRef),
    /// The awaited turn, nudged.
    Nudged {
        role: RoleRef,
        round: i8,
        attempt: i8,
        phase: Option<PhaseChoice>,
    },
    /// The key of a result accepted earlier.
    Accepted(u16),
    Raw {
        round: u32,
        phase: PhaseChoice,
        role: RoleName,
        attempt: u32,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum PhaseChoice {
    Framing,
    Contribute,
    Synthesize,
    Review,
}

impl From<PhaseChoice> for Phase {
    fn from(p: PhaseChoice) -> Phase {
        match p {
            PhaseChoice::Framing => Phase::Framing,
            PhaseChoice::Contribute => Phase::Contribute,
            PhaseChoice::Synthesize => Phase::Synthesize,
            PhaseChoice::Review => Phase::Review,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum VerdictChoice {
    Approve,
    Object,
    Invalid,
}

impl From<VerdictChoice> for Verdict {
    fn from(v: VerdictChoice) -> Verdict {
        match v {
            VerdictChoice::Approve => Verdict::Approve,
            VerdictChoice::Object => Verdict::Object,
            VerdictChoice::Invalid => Verdict::Invalid,
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum ReplyPlan {
    /// The correct reply for the turn (a review with this verdict).
    Good(VerdictChoice),
    Raw {
        /// An index into `EntryType::ALL`; out of range is "no entry type".
        entry_type: u8,
        content: ContentPlan,
        verdict: Option<VerdictChoice>,
        concerns: Vec<String>,
        hash: HashPlan,
        signature: Vec<u8>,
        prompt_tokens: u64,
        completion_tokens: u64,
    },
}

#[derive(Arbitrary, Debug, Clone)]
pub enum ContentPlan {
    Text(String),
    /// One byte over the session's limit.
    Oversized,
    /// Exactly at the session's limit.
    AtLimit,
    Blank,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum HashPlan {
    /// The proposal under review.
    Current,
    /// The hash of the first proposal version, if there was one.
    First,
    Raw(String),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum TimeMove {
    Stay,
    Forward(u16),
    /// To the session's next deadline, plus a little.
    PastDeadline(u8),
    Back(u32),
    Raw(i64),
}

#[derive(Arbitrary, Debug)]
pub enum Step {
    Assign {
        role: RoleRef,
        worker: WorkerRef,
    },
    /// Assigns a fresh worker to every participant that holds none.
    AssignAll,
    /// The holder of `role` answers its awaited turn correctly.
    Answer {
        role: RoleRef,
        verdict: VerdictChoice,
    },
    Result {
        worker: WorkerRef,
        turn: TurnRef,
        reply: ReplyPlan,
    },
    /// The n-th accepted result sent again, by its author or by `other`.
    Resend {
        index: u16,
        other: Option<WorkerRef>,
    },
    TurnFailed {
        worker: WorkerRef,
        turn: TurnRef,
        reason: String,
    },
    WorkerLost(WorkerRef),
    Cancel(String),
    Tick(TimeMove),
    /// A failover: a new leader restores the session from its transcript and carries on.
    Failover(TimeMove),
}

/// A result the session accepted as new.
#[derive(Debug, Clone)]
struct Sent {
    worker_id: String,
    turn: TurnKey,
    reply: Reply,
    seq: u64,
    /// The leadership term it was accepted in (failovers so far).
    term: u32,
}

/// What restoring the transcript must rebuild: the session as it was right after the
/// last entry was appended (later status changes, a cancellation or a failure, are not
/// in the transcript), and the history of durable effects up to then.
#[derive(Debug, Clone)]
struct AtAppend {
    summary: SessionSummary,
    awaiting: Vec<String>,
    proposal: Option<(u32, String)>,
    history_len: usize,
}

struct Driver {
    session: Session,
    mode: SessionMode,
    config: SessionConfig,
    now: i64,
    sent: Vec<Sent>,
    /// Every `Appended` and `StatusChanged` effect, in order.
    history: Vec<Effect>,
    at_append: AtAppend,
    /// Turn keys dispatched in this term.
    dispatched: BTreeSet<TurnKey>,
    terminal: Option<Snapshot>,
    term: u32,
    fresh: u64,
    /// Some input changed the session since the last [`Driver::check`] (a rejection or a
    /// duplicate is checked to change nothing where it is applied).
    changed: bool,
}

/// Where a run ended, for describing inputs.
#[derive(Debug)]
pub struct Outcome {
    pub status: Status,
    pub round: u32,
    pub entries: usize,
    pub failovers: u32,
    pub broadcast: bool,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} round {}, {} entries, {} failover(s)",
            if self.broadcast {
                "broadcast"
            } else {
                "negotiation"
            },
            self.status,
            self.round,
            self.entries,
            self.failovers
        )
    }
}

pub fn run(plan: &Plan) -> Outcome {
    let (spec, mode) = build_spec(&plan.spec);
    let config = build_config(&plan.config);
    let created = move_time(fixture::START_MS, None, plan.start);
    let (session, effects) = Session::new_in(mode, spec.clone(), config.clone(), created);
    // A new session asks for a worker of every role and does nothing else.
    let expected: Vec<Effect> = session
        .participants()
        .iter()
        .map(|r| Effect::NeedWorker { role: r.clone() })
        .collect();
    assert_eq!(effects, expected);
    assert_eq!(session.status(), Status::Pending);
    assert_eq!(
        session.summary().spec(),
        spec,
        "the header rebuilds the spec"
    );
    assert_eq!(
        session.summary().mode(),
        mode,
        "the header rebuilds the mode"
    );
    let at_append = AtAppend {
        summary: session.summary(),
        awaiting: Vec::new(),
        proposal: None,
        history_len: 0,
    };
    let mut driver = Driver {
        session,
        mode,
        config,
        now: created,
        sent: Vec::new(),
        history: Vec::new(),
        at_append,
        dispatched: BTreeSet::new(),
        terminal: None,
        term: 0,
        fresh: 0,
        changed: false,
    };
    driver.check();
    for step in plan.steps.iter().take(400) {
        driver.step(step);
        if std::mem::take(&mut driver.changed) {
            driver.check();
        }
    }
    driver.check_restore();
    driver.check_exports();
    Outcome {
        status: driver.session.status(),
        round: driver.session.round(),
        entries: driver.session.transcript().len(),
        failovers: driver.term,
        broadcast: driver.mode.is_broadcast(),
    }
}

fn build_spec(plan: &SpecPlan) -> (SessionSpec, SessionMode) {
    let defaults = ["backend", "security", "frontend", "database"];
    let pick = |n: u8| &defaults[..usize::from(n % 4) + 1];
    match plan {
        SpecPlan::Negotiation {
            specialists,
            max_rounds,
        } => (
            fixture::spec(pick(*specialists), u32::from(max_rounds % 4) + 1),
            SessionMode::Negotiation,
        ),
        SpecPlan::Broadcast {
            specialists,
            rounds,
        } => (
            fixture::spec(pick(*specialists), 1),
            SessionMode::Broadcast {
                rounds: u32::from(rounds % 4) + 1,
            },
        ),
        SpecPlan::Raw {
            task,
            specialists,
            max_rounds,
            broadcast_rounds,
        } => {
            let spec = SessionSpec {
                id: "s-raw".into(),
                task: task.clone(),
                specialists: specialists.iter().take(6).map(role_name).collect(),
                max_rounds: *max_rounds,
            };
            let mode = SessionMode::from_broadcast_rounds(*broadcast_rounds);
            match (spec.validate(), mode.validate()) {
                (Ok(()), Ok(())) => {
                    for role in &spec.specialists {
                        assert!(validate_role(role).is_ok() && role != SUPERVISOR);
                    }
                    assert!(!spec.task.trim().is_empty());
                    (spec, mode)
                }
                (spec_check, mode_check) => {
                    for rejection in [spec_check.err(), mode_check.err()].into_iter().flatten() {
                        assert_eq!(rejection.kind, RejectKind::Invalid);
                        assert!(!rejection.message.is_empty());
                    }
                    (
                        fixture::spec(&fixture::SPECIALISTS, 2),
                        SessionMode::Negotiation,
                    )
                }
            }
        }
    }
}

// `..default` even where every field is given, so a limit added to the config does not
// break the target.
#[allow(clippy::needless_update)]
fn build_config(plan: &ConfigPlan) -> SessionConfig {
    match plan {
        ConfigPlan::Small => SessionConfig {
            phase_timeout_ms: 5_000,
            pending_timeout_ms: 4_000,
            max_turn_attempts: 3,
            max_content_bytes: 96,
            // Ed25519 under coverage instrumentation costs milliseconds per result: only
            // the coordinator's defaults sign and verify (see README.md here).
            require_signatures: false,
            ..SessionConfig::default()
        },
        // The coordinator's defaults, but a content limit that keeps replies at the
        // limit cheap to build and to copy.
        ConfigPlan::Default => SessionConfig {
            max_content_bytes: 4096,
            ..SessionConfig::default()
        },
        ConfigPlan::Raw {
            phase_timeout_ms,
            pending_timeout_ms,
            max_turn_attempts,
            max_content_bytes,
            max_stored_entry_bytes,
        } => {
            let default = SessionConfig::default();
            SessionConfig {
                phase_timeout_ms: *phase_timeout_ms,
                pending_timeout_ms: *pending_timeout_ms,
                max_turn_attempts: u32::from(*max_turn_attempts % 6),
                max_content_bytes: usize::from(*max_content_bytes % 4097),
                max_stored_entry_bytes: max_stored_entry_bytes
                    .map_or(default.max_stored_entry_bytes, usize::from),
                require_signatures: false,
                ..default
            }
        }
    }
}

fn role_name(name: &RoleName) -> String {
    match name {
        RoleName::Known(i) => ROLES[usize::from(*i) % ROLES.len()].to_string(),
        RoleName::Raw(s) => s.clone(),
    }
}

fn move_time(now: i64, deadline: Option<i64>, m: TimeMove) -> i64 {
    match m {
        TimeMove::Stay => now,
        TimeMove::Forward(ms) => now.saturating_add(i64::from(ms)),
        TimeMove::PastDeadline(extra) => {
            deadline.map_or(now, |d| d.saturating_add(i64::from(extra)))
        }
        TimeMove::Back(ms) => now.saturating_sub(i64::from(ms)),
        TimeMove::Raw(t) => t,
    }
}

/// At most one entry per (round, phase, role) and per turn: how an entry's turn is named.
fn turn_of(e: &Entry) -> (u32, Phase, &str) {
    (e.round, e.phase, e.role.as_str())
}

impl Driver {
    fn role(&self, r: &RoleRef) -> String {
        match r {
            RoleRef::Participant(i) => {
                let p = self.session.participants();
                p[usize::from(*i) % p.len()].clone()
            }
            RoleRef::Name(n) => role_name(n),
        }
    }

    fn worker(&self, w: &WorkerRef) -> String {
        match w {
            WorkerRef::Holder(r) => {
                let role = self.role(r);
                self.session
                    .assignments()
                    .get(&role)
                    .cloned()
                    .unwrap_or_else(|| WORKERS[0].to_string())
            }
            WorkerRef::Pool(i) => WORKERS[usize::from(*i) % WORKERS.len()].to_string(),
            WorkerRef::Raw(s) => s.clone(),
        }
    }

    fn turn(&self, t: &TurnRef) -> TurnKey {
        let fallback = |role: String| TurnKey {
            round: self.session.round(),
            phase: self.session.status().phase().unwrap_or(Phase::Framing),
            role,
            attempt: 1,
        };
        match t {
            TurnRef::Awaited(r) => {
                let role = self.role(r);
                self.session
                    .awaited_turn(&role)
                    .unwrap_or_else(|| fallback(role))
            }
            TurnRef::Nudged {
                role,
                round,
                attempt,
                phase,
            } => {
                let role = self.role(role);
                let mut turn = self
                    .session
                    .awaited_turn(&role)
                    .unwrap_or_else(|| fallback(role));
                turn.round = turn.round.wrapping_add_signed(i32::from(*round));
                turn.attempt = turn.attempt.wrapping_add_signed(i32::from(*attempt));
                if let Some(p) = phase {
                    turn.phase = (*p).into();
                }
                turn
            }
            TurnRef::Accepted(i) => match self.sent.get(usize::from(*i) % self.sent.len().max(1)) {
                Some(sent) => sent.turn.clone(),
                None => fallback(SUPERVISOR.to_string()),
            },
            TurnRef::Raw {
                round,
                phase,
                role,
                attempt,
            } => TurnKey {
                round: *round,
                phase: (*phase).into(),
                role: role_name(role),
                attempt: *attempt,
            },
        }
    }

    fn reply(&mut self, turn: &TurnKey, plan: &ReplyPlan) -> Reply {
        match plan {
            ReplyPlan::Good(v) => {
                self.fresh += 1;
                fixture::good_reply(&self.session, turn, (*v).into(), self.fresh)
            }
            ReplyPlan::Raw {
                entry_type,
                content,
                verdict,
                concerns,
                hash,
                signature,
                prompt_tokens,
                completion_tokens,
            } => {
                let limit = self.config.max_content_bytes;
                Reply {
                    entry_type: EntryType::ALL.get(usize::from(*entry_type)).copied(),
                    content: match content {
                        ContentPlan::Text(t) => t.clone(),
                        ContentPlan::Oversized => "x".repeat(limit + 1),
                        ContentPlan::AtLimit => "y".repeat(limit),
                        ContentPlan::Blank => " \n\t".to_string(),
                    },
                    verdict: verdict.map(Verdict::from),
                    concerns: concerns.iter().take(8).cloned().collect(),
                    proposal_hash: match hash {
                        HashPlan::Current => self
                            .session
                            .current_proposal()
                            .map(|(_, h)| h.to_string())
                            .unwrap_or_default(),
                        HashPlan::First => self
                            .session
                            .transcript()
                            .iter()
                            .find(|e| e.is_proposal_version())
                            .map(|e| e.proposal_hash.clone())
                            .unwrap_or_default(),
                        HashPlan::Raw(h) => h.clone(),
                    },
                    signature: signature.clone(),
                    prompt_tokens: *prompt_tokens,
                    completion_tokens: *completion_tokens,
                    verified: None,
                }
            }
        }
    }

    fn step(&mut self, step: &Step) {
        match step {
            Step::Assign { role, worker } => {
                let input = Input::Assign {
                    role: self.role(role),
                    worker_id: self.worker(worker),
                    key: None,
                };
                let _ = self.apply(input);
            }
            Step::AssignAll => {
                for role in self.session.participants().to_vec() {
                    if self.session.assignments().contains_key(&role) {
                        continue;
                    }
                    self.fresh += 1;
                    let worker_id = format!("{role}-g{}", self.fresh);
                    // (A raw worker id may have taken the fresh name already.)
                    let taken = self.session.assignments().values().any(|w| *w == worker_id);
                    let terminal = self.session.status().is_terminal();
                    let outcome = self.apply(Input::Assign {
                        role,
                        worker_id,
                        key: None,
                    });
                    // A free worker for an unheld participant is always taken while the
                    // session runs.
                    assert_eq!(outcome.is_ok(), !terminal && !taken, "{outcome:?}");
                }
            }
            Step::Answer { role, verdict } => {
                let role = self.role(role);
                let (Some(turn), Some(worker_id)) = (
                    self.session.awaited_turn(&role),
                    self.session.assignments().get(&role).cloned(),
                ) else {
                    return;
                };
                self.fresh += 1;
                let reply =
                    fixture::good_reply(&self.session, &turn, (*verdict).into(), self.fresh);
                let fits = reply.content.len() <= self.config.max_content_bytes;
                // (An entry is also refused when it would not fit the store's limit; only a
                // raw config sets one that small.)
                let small_store = self.config.max_stored_entry_bytes
                    < SessionConfig::default().max_stored_entry_bytes;
                let outcome = self.apply(Input::Result {
                    worker_id,
                    turn,
                    reply,
                });
                // The holder's correct answer to the awaited turn is accepted as new.
                match outcome {
                    Ok(applied) => assert!(fits && !applied.duplicate, "{applied:?}"),
                    Err(r) => assert!(
                        r.kind == RejectKind::TooLarge && (!fits || small_store),
                        "{r:?}"
                    ),
                }
            }
            Step::Result {
                worker,
                turn,
                reply,
            } => {
                let worker_id = self.worker(worker);
                let turn = self.turn(turn);
                let reply = self.reply(&turn, reply);
                let _ = self.apply(Input::Result {
                    worker_id,
                    turn,
                    reply,
                });
            }
            Step::Resend { index, other } => {
                let Some(sent) = self
                    .sent
                    .get(usize::from(*index) % self.sent.len().max(1))
                    .cloned()
                else {
                    return;
                };
                let worker_id = match other {
                    Some(w) => self.worker(w),
                    None => sent.worker_id.clone(),
                };
                let outcome = self.apply(Input::Result {
                    worker_id: worker_id.clone(),
                    turn: sent.turn.clone(),
                    reply: sent.reply.clone(),
                });
                if sent.term == self.term
                    && sent.reply.content.len() <= self.config.max_content_bytes
                {
                    // Within one term an accepted turn is remembered: its author's resend
                    // is an idempotent duplicate with the first seq, anyone else's is
                    // refused.
                    if worker_id == sent.worker_id {
                        let applied = outcome.expect("a resend by the author is a duplicate");
                        assert!(applied.duplicate && applied.seq == Some(sent.seq));
                    } else {
                        assert_eq!(
                            outcome.map_err(|r| r.kind).err(),
                            Some(RejectKind::NotAssigned)
                        );
                    }
                }
            }
            Step::TurnFailed {
                worker,
                turn,
                reason,
            } => {
                let input = Input::TurnFailed {
                    worker_id: self.worker(worker),
                    turn: self.turn(turn),
                    reason: reason.clone(),
                };
                let _ = self.apply(input);
            }
            Step::WorkerLost(worker) => {
                let input = Input::WorkerLost {
                    worker_id: self.worker(worker),
                };
                self.apply(input).expect("losing a worker is never refused");
            }
            Step::Cancel(reason) => {
                let terminal = self.session.status().is_terminal();
                let outcome = self.apply(Input::Cancel {
                    reason: reason.clone(),
                });
                if terminal {
                    assert_eq!(outcome.map_err(|r| r.kind).err(), Some(RejectKind::Stale));
                } else {
                    outcome.expect("a running session can always be cancelled");
                    assert_eq!(self.session.status(), Status::Cancelled);
                }
            }
            Step::Tick(m) => {
                self.now = move_time(self.now, self.session.next_deadline(), *m);
                let due = self.session.next_deadline().is_some_and(|d| self.now >= d);
                self.apply(Input::Tick).expect("a tick is never refused");
                if due {
                    assert_eq!(self.session.status(), Status::Failed, "a deadline passed");
                }
            }
            Step::Failover(m) => {
                self.now = move_time(self.now, self.session.next_deadline(), *m);
                // A new leader only resumes unfinished sessions.
                if !self.session.status().is_terminal() {
                    self.failover();
                }
            }
        }
    }

    /// Applies one input, checks what it did (or that a rejection did nothing) and
    /// records it.
    fn apply(&mut self, input: Input) -> Result<Applied, agentmesh_core::Rejection> {
        // As a well-behaved worker sends it: an assignment with the worker's test key, a
        // result without a signature signed by its worker's test key. A raw signature
        // stays as drawn (and is refused unless it verifies).
        let input = if self.config.require_signatures {
            agentmesh_core::trust::testing::signed(&self.session, input)
        } else {
            input
        };
        let before = snapshot(&self.session);
        let outcome = self.session.apply(self.now, input.clone());
        let after = snapshot(&self.session);
        match &outcome {
            Err(r) => {
                assert_eq!(
                    before, after,
                    "rejected input {input:?} ({r:?}) changed the session"
                );
                assert!(!r.message.is_empty(), "a rejection says why");
            }
            Ok(applied) => {
                if let Some(t) = &self.terminal {
                    assert_eq!(t, &after, "a terminal session changed on {input:?}");
                    assert!(applied.effects.is_empty(), "{applied:?}");
                }
                self.changed |= before != after;
                self.absorb(&input, &before, &after, applied);
            }
        }
        outcome
    }

    /// Checks the effects of an accepted input against the session they came from.
    fn absorb(&mut self, input: &Input, before: &Snapshot, after: &Snapshot, applied: &Applied) {
        let s = &self.session;
        if applied.duplicate {
            assert_eq!(before, after, "a duplicate changes nothing");
            assert!(applied.effects.is_empty());
            let (
                Input::Result {
                    worker_id, turn, ..
                },
                Some(seq),
            ) = (input, applied.seq)
            else {
                panic!("only a result is a duplicate, with its seq: {input:?} {applied:?}");
            };
            let entry = &s.transcript()[usize::try_from(seq - 1).unwrap()];
            assert_eq!(turn_of(entry), (turn.round, turn.phase, turn.role.as_str()));
            assert_eq!(&entry.worker_id, worker_id);
            return;
        }
        let grew = after.transcript.len() - before.transcript.len();
        assert!(grew <= 1, "one input appends at most one entry");
        assert_eq!(
            &after.transcript[..before.transcript.len()],
            &before.transcript[..],
            "the transcript is append-only"
        );
        let mut status_changes = 0;
        let mut released = BTreeSet::new();
        for (i, effect) in applied.effects.iter().enumerate() {
            match effect {
                Effect::NeedWorker { role } => {
                    assert!(s.participants().contains(role), "{effect:?}");
                    assert!(
                        !s.assignments().contains_key(role),
                        "{effect:?}: role is held"
                    );
                }
                Effect::Dispatch {
                    worker_id,
                    turn,
                    deadline_ms,
                } => {
                    assert_eq!(s.assignments().get(&turn.role), Some(worker_id));
                    assert_eq!(s.awaited_turn(&turn.role).as_ref(), Some(turn));
                    assert_eq!(Some(*deadline_ms), s.next_deadline());
                    assert!(
                        self.dispatched.insert(turn.clone()),
                        "turn {turn:?} dispatched twice in one term"
                    );
                }
                Effect::Appended(entry) => {
                    assert_eq!(i, 0, "Appended must be the first effect");
                    assert_eq!(Some(entry), s.transcript().last());
                    assert_eq!(applied.seq, Some(entry.seq));
                    self.history.push(effect.clone());
                }
                Effect::StatusChanged { status, round } => {
                    status_changes += 1;
                    assert_eq!((*status, *round), (s.status(), s.round()));
                    self.history.push(effect.clone());
                }
                Effect::Release { worker_id } => {
                    assert!(s.status().is_terminal(), "{effect:?} before the end");
                    assert!(released.insert(worker_id.clone()), "released twice");
                }
            }
        }
        let moved = (before.summary.status, before.summary.round) != (s.status(), s.round());
        assert_eq!(
            status_changes,
            usize::from(moved),
            "StatusChanged iff status or round changed"
        );
        assert_eq!(
            grew,
            applied
                .effects
                .iter()
                .filter(|e| matches!(e, Effect::Appended(_)))
                .count()
        );
        if s.status().is_terminal() && !before.summary.status.is_terminal() {
            let held: BTreeSet<String> = before.summary.assignments.values().cloned().collect();
            assert_eq!(released, held, "finishing releases exactly the holders");
        } else {
            assert!(released.is_empty());
        }
        if grew == 1 {
            let entry = s.transcript().last().unwrap();
            let Input::Result {
                worker_id,
                turn,
                reply,
            } = input
            else {
                panic!("only a result appends: {input:?}");
            };
            assert_eq!(turn_of(entry), (turn.round, turn.phase, turn.role.as_str()));
            assert_eq!(&entry.worker_id, worker_id);
            assert_eq!(entry.content, reply.content);
            assert_eq!(Some(entry.entry_type), reply.entry_type);
            // Stamped on acceptance, never before the entry ahead of it.
            let previous = before
                .transcript
                .last()
                .map_or(i64::MIN, |e| e.timestamp_ms);
            assert_eq!(entry.timestamp_ms, self.now.max(previous));
            self.sent.push(Sent {
                worker_id: worker_id.clone(),
                turn: turn.clone(),
                reply: reply.clone(),
                seq: entry.seq,
                term: self.term,
            });
            self.at_append = AtAppend {
                summary: s.summary(),
                awaiting: s.awaiting().map(String::from).collect(),
                proposal: s.current_proposal().map(|(v, h)| (v, h.to_string())),
                history_len: self.history.len(),
            };
        } else if let Input::Result { .. } = input {
            panic!("an accepted result that is no duplicate appends: {applied:?}");
        }
        if s.status().is_terminal() && self.terminal.is_none() {
            self.terminal = Some(after.clone());
        }
    }

    fn check(&self) {
        invariants(&self.session, self.mode);
        if let Some(t) = &self.terminal {
            assert_eq!(t, &snapshot(&self.session), "no exit from a terminal state");
        }
    }

    fn restore(&self) -> (Session, Vec<Effect>, Vec<Effect>) {
        let header = self.session.summary();
        Session::restore_in(
            header.mode(),
            header.spec(),
            self.config.clone(),
            header.created_ms,
            self.session.transcript(),
            self.now,
        )
        .unwrap_or_else(|e| panic!("the transcript the session wrote does not restore: {e}"))
    }

    /// Restoring the transcript rebuilds the session as it was right after the last
    /// append, and the history of durable effects up to then.
    fn check_restore(&self) -> (Session, Vec<Effect>, Vec<Effect>) {
        let (restored, effects, history) = self.restore();
        let at = &self.at_append;
        assert_eq!(restored.transcript(), self.session.transcript());
        let mut got = restored.summary();
        let mut want = at.summary.clone();
        assert!(
            got.assignments.is_empty(),
            "nobody holds a role after a restore"
        );
        want.assignments.clear();
        // The restored session counts time from its own restart.
        got.updated_ms = 0;
        want.updated_ms = 0;
        assert_eq!(got, want, "restore rebuilds the session at its last entry");
        assert_eq!(
            restored.awaiting().map(String::from).collect::<Vec<_>>(),
            at.awaiting
        );
        assert_eq!(
            restored.current_proposal().map(|(v, h)| (v, h.to_string())),
            at.proposal
        );
        assert_eq!(
            history,
            self.history[..at.history_len],
            "restore rebuilds the history"
        );
        if restored.status().is_terminal() {
            assert!(effects.is_empty());
        } else {
            let need: Vec<Effect> = restored
                .participants()
                .iter()
                .map(|r| Effect::NeedWorker { role: r.clone() })
                .collect();
            assert_eq!(effects, need);
        }
        (restored, effects, history)
    }

    /// A new leader takes over: the restored session replaces the old one.
    fn failover(&mut self) {
        let (restored, _, history) = self.check_restore();
        self.session = restored;
        self.history = history;
        self.at_append.history_len = self.history.len();
        self.dispatched.clear();
        self.terminal = None;
        self.term += 1;
        self.check();
    }

    /// The exports that claim to be lossless are.
    fn check_exports(&self) {
        let summary = self.session.summary();
        let transcript = self.session.transcript();
        let text = export::json(&summary, transcript);
        let (s2, t2) = export::from_json(&text).expect("the JSON export reads back");
        assert_eq!(s2, summary);
        assert_eq!(t2, transcript);
        let _ = export::markdown(transcript);
        for e in transcript {
            let wire = v1::Entry::from(e);
            assert_eq!(agentmesh_core::Entry::try_from(&wire).as_ref(), Ok(e));
        }
        let wire = v1::Session::from(&summary);
        assert_eq!(SessionSummary::try_from(&wire), Ok(summary));
    }
}

/// The invariants of a session as it stands, whatever happened to it.
pub fn invariants(s: &Session, mode: SessionMode) {
    let summary = s.summary();
    let transcript = s.transcript();
    let participants = s.participants();
    // Participants: the supervisor first (negotiations only), then the specialists.
    let mut expected_roles = Vec::new();
    if !mode.is_broadcast() {
        expected_roles.push(SUPERVISOR.to_string());
    }
    expected_roles.extend(s.spec().specialists.iter().cloned());
    assert_eq!(participants, &expected_roles[..]);
    assert_eq!(summary.roles, participants);
    assert_eq!(summary.entry_count, transcript.len() as u64);
    assert_eq!(summary.status, s.status());
    // Seq gapless from 1; timestamps never go back; each entry fits its phase; one
    // entry per turn.
    let mut turns = BTreeSet::new();
    let mut versions: BTreeMap<u32, &str> = BTreeMap::new();
    for (i, e) in transcript.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "seq is gapless from 1");
        if i > 0 {
            assert!(e.timestamp_ms >= transcript[i - 1].timestamp_ms);
        }
        assert!(e.phase.allows(e.entry_type, e.round), "{e:?}");
        assert!(participants.contains(&e.role));
        assert!(turns.insert(turn_of(e)), "two entries for one turn: {e:?}");
        match e.phase {
            Phase::Synthesize => {
                assert_eq!(e.proposal_hash, proposal_hash(&e.content));
                assert_eq!(e.proposal_version, e.round);
                assert_eq!(e.role, SUPERVISOR);
                versions.insert(e.proposal_version, &e.proposal_hash);
            }
            Phase::Framing => assert_eq!(e.role, SUPERVISOR),
            Phase::Review => {
                // A review judges the version of its round, by that version's hash.
                assert_eq!(e.proposal_version, e.round);
                assert_eq!(
                    versions.get(&e.round).copied(),
                    Some(e.proposal_hash.as_str())
                );
                match e.verdict {
                    Some(Verdict::Approve) => {}
                    Some(Verdict::Object | Verdict::Invalid) => {
                        assert!(!e.concerns.is_empty());
                    }
                    None => panic!("a review without a verdict: {e:?}"),
                }
                assert!(e.concerns.iter().all(|c| !c.trim().is_empty()));
            }
            Phase::Contribute => assert_ne!(e.role, SUPERVISOR),
        }
        if mode.is_broadcast() {
            assert_eq!(e.phase, Phase::Contribute);
        }
    }
    let sum = |f: fn(&Entry) -> u64| {
        transcript
            .iter()
            .map(|e| u128::from(f(e)))
            .sum::<u128>()
            .min(u128::from(u64::MAX)) as u64
    };
    assert_eq!(summary.prompt_tokens, sum(|e| e.prompt_tokens));
    assert_eq!(summary.completion_tokens, sum(|e| e.completion_tokens));
    // A worker holds at most one role, and only a participant's.
    let holders: BTreeSet<&String> = s.assignments().values().collect();
    assert_eq!(
        holders.len(),
        s.assignments().len(),
        "a worker holds two roles"
    );
    assert!(s.assignments().keys().all(|r| participants.contains(r)));
    // Awaited turns belong to the current phase and round.
    for role in s.awaiting() {
        let turn = s.awaited_turn(role).expect("awaited");
        assert_eq!(Some(turn.phase), s.status().phase());
        assert_eq!(turn.round, s.round());
        assert!(participants.iter().any(|p| p == role));
    }
    match s.status() {
        Status::Consensus => {
            // Every participant approved the current version, by its hash.
            let version = summary.final_version;
            assert_eq!(version, s.round());
            assert_eq!(
                versions.get(&version).copied(),
                Some(summary.final_hash.as_str())
            );
            let approvers: BTreeSet<&str> = transcript
                .iter()
                .filter(|e| e.phase == Phase::Review && e.round == version)
                .map(|e| {
                    assert_eq!(e.verdict, Some(Verdict::Approve), "{e:?}");
                    assert_eq!(e.proposal_hash, summary.final_hash);
                    e.role.as_str()
                })
                .collect();
            let all: BTreeSet<&str> = participants.iter().map(String::as_str).collect();
            assert_eq!(
                approvers, all,
                "consensus needs every participant's approval"
            );
            assert!(summary.open_objections.is_empty());
            assert_eq!(transcript.last().map(|e| e.phase), Some(Phase::Review));
        }
        Status::NoConsensus => {
            assert_eq!(s.round(), s.spec().max_rounds);
            assert!((summary.final_version, summary.final_hash.as_str()) == (0, ""));
            let last = transcript
                .iter()
                .filter(|e| e.phase == Phase::Review && e.round == s.round());
            assert!(last.clone().any(|e| e.verdict != Some(Verdict::Approve)));
            assert_eq!(last.count(), participants.len());
        }
        Status::Completed => {
            let SessionMode::Broadcast { rounds } = mode else {
                panic!("only a broadcast session completes");
            };
            assert_eq!(s.round(), rounds);
            assert_eq!(transcript.len(), rounds as usize * participants.len());
        }
        Status::Cancelled | Status::Failed => assert!(!summary.reason.is_empty()),
        _ => {
            assert!(summary.reason.is_empty());
            assert_eq!(
                (summary.final_version, summary.final_hash.as_str()),
                (0, "")
            );
        }
    }
    if s.status().is_terminal() {
        assert!(
            s.assignments().is_empty(),
            "an ended session holds no worker"
        );
        assert_eq!(s.awaiting().count(), 0);
        assert_eq!(s.next_deadline(), None);
    } else {
        assert!(s.next_deadline().is_some());
    }
}
