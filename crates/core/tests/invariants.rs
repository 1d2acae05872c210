//! Property tests of the session state machine.
//!
//! A small deterministic *simulated driver* owns one [`Session`] and a pool of fake
//! workers (two per role). It carries out the effects the session returns (a
//! `NeedWorker` is answered later by an `Assign`, a `Dispatch` becomes an outstanding
//! turn), and proptest hands it a list of choices that pick, at every step, among the
//! things a real mesh does to a coordinator: correct answers, duplicates, stale and
//! foreign results, wrong hashes, malformed and oversized replies, disconnects and
//! replacements, worker-reported failures, the passing of time and cancellation.
//!
//! Every input is checked twice: locally (an input the driver knows to be valid must be
//! accepted with the precise consequences; a bad one must be rejected with the precise
//! [`RejectKind`] and must leave every observable part of the session unchanged), and
//! globally, by [`Driver::check`], which runs the session invariants after every step.

use agentmesh_core::hash::proposal_hash;
use agentmesh_core::trust::testing::signed;
use agentmesh_core::{
    Applied, Effect, Entry, EntryType, Input, Objection, Phase, RejectKind, Reply, SUPERVISOR,
    Session, SessionConfig, SessionSpec, SessionSummary, Status, TurnKey, Verdict,
};
use proptest::prelude::*;
use proptest::sample::Index;
use std::collections::{BTreeMap, BTreeSet};

/// Small enough that an oversized reply is cheap to build, large enough for every
/// well-formed reply the driver writes.
const MAX_CONTENT: usize = 96;
/// Far above any entry these tests build: the stored-size check has its own worked
/// examples in `transitions.rs`.
const MAX_STORED: usize = 1024 * 1024;
const PHASE_TIMEOUT: i64 = 5_000;
const PENDING_TIMEOUT: i64 = 4_000;
const MAX_ATTEMPTS: u32 = 3;
const WORKERS_PER_ROLE: usize = 2;
/// An arbitrary, realistic epoch: nothing may depend on time starting at zero.
const START_MS: i64 = 1_700_000_000_000;
/// A worker that belongs to no role of any session.
const STRANGER: &str = "stranger-w0";
/// A role no session in these tests has.
const INTRUDER_ROLE: &str = "intruder";

/// True for one choice byte in `n`: how the driver makes an option rare (or, with
/// n = 2, tosses a coin).
fn one_in(n: u8, choice: u8) -> bool {
    choice % n == n - 1
}

fn config() -> SessionConfig {
    SessionConfig {
        phase_timeout_ms: PHASE_TIMEOUT,
        pending_timeout_ms: PENDING_TIMEOUT,
        max_turn_attempts: MAX_ATTEMPTS,
        max_content_bytes: MAX_CONTENT,
        max_stored_entry_bytes: MAX_STORED,
        require_signatures: true,
    }
}

/// Everything a client or the driver can observe of a session. A rejected input must
/// leave all of it unchanged, and a terminal session must never change it again.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    summary: SessionSummary,
    transcript: Vec<Entry>,
    /// The awaited turn of every participant that has one, in participant order.
    awaited: Vec<TurnKey>,
    proposal: Option<(u32, String)>,
    next_deadline: Option<i64>,
}

fn snapshot(s: &Session) -> Snapshot {
    Snapshot {
        summary: s.summary(),
        transcript: s.transcript().to_vec(),
        awaited: s
            .participants()
            .iter()
            .filter_map(|r| s.awaited_turn(r))
            .collect(),
        proposal: s.current_proposal().map(|(v, h)| (v, h.to_string())),
        next_deadline: s.next_deadline(),
    }
}

#[derive(Debug, Clone)]
struct Worker {
    id: String,
    role: String,
    live: bool,
}

/// A reply the session accepted as new: the transcript must hold it exactly once.
#[derive(Debug, Clone)]
struct Sent {
    worker_id: String,
    turn: TurnKey,
    reply: Reply,
    seq: u64,
}

/// The simulated coordinator around one session.
struct Driver {
    session: Session,
    now: i64,
    workers: Vec<Worker>,
    /// Roles the session asked a worker for (`NeedWorker`) that have none yet.
    needs: BTreeSet<String>,
    /// Every `Dispatch` ever received. The ones the session still awaits are answered;
    /// the retired ones are the material for stale results.
    dispatched: Vec<(String, TurnKey)>,
    /// Every reply accepted as new, in order.
    sent: Vec<Sent>,
    /// Model of the worker-reported failures of the current phase, per role.
    failures: BTreeMap<String, u32>,
    /// The session as it was when it first became terminal.
    terminal: Option<Snapshot>,
    /// Makes every content unique, so "this seq holds what was sent" means something.
    counter: u64,
    /// How often each interesting path was taken; lets a test prove the driver is not
    /// silently skipping the hard cases.
    stats: BTreeMap<&'static str, u32>,
}

impl Driver {
    fn new(specialists: &[&str], max_rounds: u32) -> Driver {
        let spec = SessionSpec {
            id: "s-prop".into(),
            task: "design a rate limiter".into(),
            specialists: specialists.iter().map(|s| s.to_string()).collect(),
            max_rounds,
        };
        spec.validate().expect("the test spec is valid");
        let (session, effects) = Session::new(spec, config(), START_MS);
        // A new session asks for a worker of every role, supervisor first, and nothing else.
        let expected: Vec<Effect> = session
            .participants()
            .iter()
            .map(|r| Effect::NeedWorker { role: r.clone() })
            .collect();
        assert_eq!(effects, expected);
        assert_eq!(session.status(), Status::Pending);
        assert_eq!(session.next_deadline(), Some(START_MS + PENDING_TIMEOUT));
        let workers = session
            .participants()
            .iter()
            .flat_map(|role| {
                (0..WORKERS_PER_ROLE).map(move |i| Worker {
                    id: format!("{role}-w{i}"),
                    role: role.clone(),
                    live: true,
                })
            })
            .collect();
        let needs = session.participants().iter().cloned().collect();
        let mut driver = Driver {
            session,
            now: START_MS,
            workers,
            needs,
            dispatched: Vec::new(),
            sent: Vec::new(),
            failures: BTreeMap::new(),
            terminal: None,
            counter: 0,
            stats: BTreeMap::new(),
        };
        driver.check();
        driver
    }

    fn snapshot(&self) -> Snapshot {
        snapshot(&self.session)
    }

    fn terminal(&self) -> bool {
        self.session.status().is_terminal()
    }

    fn holder(&self, role: &str) -> Option<String> {
        self.session.assignments().get(role).cloned()
    }

    /// The author of an accepted turn, if that exact turn key was accepted.
    fn accepted_author(&self, turn: &TurnKey) -> Option<&str> {
        self.sent
            .iter()
            .find(|s| s.turn == *turn)
            .map(|s| s.worker_id.as_str())
    }

    /// Dispatched turns the session still awaits from the worker they were sent to.
    fn current_turns(&self) -> Vec<(String, TurnKey)> {
        self.dispatched
            .iter()
            .filter(|(w, t)| {
                self.session.awaited_turn(&t.role).as_ref() == Some(t)
                    && self.holder(&t.role).as_deref() == Some(w.as_str())
            })
            .cloned()
            .collect()
    }

    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_default() += 1;
    }

    fn fresh(&mut self, what: &str) -> String {
        self.counter += 1;
        format!("{what} #{}", self.counter)
    }

    /// A reply that is correct for `turn`. `c` picks the entry type or the verdict.
    fn good_reply(&mut self, turn: &TurnKey, c: u8) -> Reply {
        let mut content = self.fresh(&format!(
            "{} r{} {} a{}",
            turn.role, turn.round, turn.phase, turn.attempt
        ));
        if c % 11 == 3 {
            // Exactly at the limit is still acceptable.
            content.extend(std::iter::repeat_n('.', MAX_CONTENT - content.len()));
        }
        let entry_type = match turn.phase {
            Phase::Framing => EntryType::Framework,
            Phase::Contribute if turn.round <= 1 => {
                if one_in(5, c) {
                    EntryType::Question
                } else {
                    EntryType::Analysis
                }
            }
            Phase::Contribute => [EntryType::Proposal, EntryType::Implementation][c as usize % 2],
            Phase::Synthesize => EntryType::Proposal,
            Phase::Review => EntryType::Review,
        };
        let mut reply = Reply {
            entry_type: Some(entry_type),
            content,
            ..Reply::default()
        };
        if turn.phase == Phase::Review {
            match c % 8 {
                0..=5 => {
                    reply.verdict = Some(Verdict::Approve);
                    if c % 8 == 5 {
                        // An approval may carry a remark; it is not an objection.
                        reply.concerns = vec!["nit: naming".into()];
                    }
                    reply.proposal_hash = self
                        .session
                        .current_proposal()
                        .expect("a review judges a proposal")
                        .1
                        .to_string();
                }
                6 => {
                    reply.verdict = Some(Verdict::Object);
                    reply.concerns = vec![self.fresh(&format!("{} concern", turn.role))];
                }
                _ => reply.verdict = Some(Verdict::Invalid),
            }
        }
        reply
    }

    // ---------------------------------------------------------------------------------
    // Applying inputs
    // ---------------------------------------------------------------------------------

    /// Applies an input the driver knows to be valid, then checks and carries out its
    /// effects.
    fn accept(&mut self, at: i64, input: Input) -> Applied {
        let before = self.snapshot();
        let applied = match self.session.apply(at, signed(&self.session, input.clone())) {
            Ok(applied) => applied,
            Err(r) => panic!("valid input {input:?} was rejected: {r:?}"),
        };
        self.absorb(&before, &applied);
        applied
    }

    /// Applies an input that must be rejected with `kind` and must change nothing.
    fn reject(&mut self, input: Input, kind: RejectKind) {
        let before = self.snapshot();
        match self
            .session
            .apply(self.now, signed(&self.session, input.clone()))
        {
            Ok(applied) => panic!("{input:?} must be rejected ({kind:?}), got {applied:?}"),
            Err(r) => {
                assert_eq!(r.kind, kind, "wrong rejection of {input:?}: {}", r.message);
                assert!(!r.message.is_empty(), "a rejection must say why");
            }
        }
        self.count(match kind {
            RejectKind::Invalid => "rejected invalid",
            RejectKind::Stale => "rejected stale",
            RejectKind::NotAssigned => "rejected not-assigned",
            RejectKind::TooLarge => "rejected too-large",
            RejectKind::BadSignature => "rejected bad-signature",
        });
        assert_eq!(
            before,
            self.snapshot(),
            "rejected input {input:?} changed the session"
        );
    }

    /// Checks the effects of an accepted input against the session they came from, and
    /// carries them out.
    fn absorb(&mut self, before: &Snapshot, applied: &Applied) {
        let s = &self.session;
        let after = snapshot(s);
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
                    self.needs.insert(role.clone());
                }
                Effect::Dispatch {
                    worker_id,
                    turn,
                    deadline_ms,
                } => {
                    // A dispatch goes to the role's holder, for the very turn the session
                    // now awaits, with the deadline the driver will enforce.
                    assert_eq!(s.assignments().get(&turn.role), Some(worker_id));
                    assert_eq!(s.awaited_turn(&turn.role).as_ref(), Some(turn));
                    assert_eq!(Some(*deadline_ms), s.next_deadline());
                    assert!(
                        !self.dispatched.iter().any(|(_, t)| t == turn),
                        "turn {turn:?} dispatched twice"
                    );
                    self.dispatched.push((worker_id.clone(), turn.clone()));
                }
                Effect::Appended(entry) => {
                    // The appended entry comes first, and it is the transcript's new tail.
                    assert_eq!(i, 0, "Appended must be the first effect");
                    assert_eq!(Some(entry), s.transcript().last());
                    assert_eq!(applied.seq, Some(entry.seq));
                }
                Effect::StatusChanged { status, round } => {
                    status_changes += 1;
                    assert_eq!((*status, *round), (s.status(), s.round()));
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
            "StatusChanged iff status or round changed: {:?}",
            applied.effects
        );
        let grew = after.transcript.len() - before.transcript.len();
        assert!(grew <= 1, "one input appends at most one entry");
        assert_eq!(
            grew,
            applied
                .effects
                .iter()
                .filter(|e| matches!(e, Effect::Appended(_)))
                .count()
        );
        if s.status().is_terminal() && !before.summary.status.is_terminal() {
            // Finishing releases exactly the workers that held a role.
            let held: BTreeSet<String> = before.summary.assignments.values().cloned().collect();
            assert_eq!(released, held);
        } else {
            assert!(released.is_empty());
        }
        if moved {
            // A new phase (or the end) starts with a clean failure count.
            self.failures.clear();
        }
    }

    /// Sends a correct reply for a current turn and checks what it must do.
    fn deliver(&mut self, at: i64, worker_id: String, turn: TurnKey, reply: Reply) {
        let before = self.snapshot();
        let applied = self.accept(
            at,
            Input::Result {
                worker_id: worker_id.clone(),
                turn: turn.clone(),
                reply: reply.clone(),
            },
        );
        assert!(!applied.duplicate);
        let seq = before.transcript.len() as u64 + 1;
        assert_eq!(applied.seq, Some(seq));
        let entry = self.session.transcript()[seq as usize - 1].clone();
        assert_eq!(
            (
                entry.round,
                entry.phase,
                &entry.role,
                &entry.worker_id,
                &entry.content
            ),
            (
                turn.round,
                turn.phase,
                &turn.role,
                &worker_id,
                &reply.content
            )
        );
        assert_eq!(Some(entry.entry_type), reply.entry_type);
        let last_ts = before
            .transcript
            .last()
            .map_or(i64::MIN, |e| e.timestamp_ms);
        assert_eq!(entry.timestamp_ms, at.max(last_ts));
        match turn.phase {
            Phase::Synthesize => {
                assert_eq!(entry.proposal_hash, proposal_hash(&reply.content));
                assert_eq!(entry.proposal_version, turn.round);
            }
            Phase::Review => {
                let (version, hash) = before.proposal.clone().expect("under review");
                assert_eq!(
                    (entry.proposal_version, &entry.proposal_hash),
                    (version, &hash)
                );
                assert_eq!(entry.verdict, reply.verdict);
                if entry.verdict != Some(Verdict::Approve) {
                    // An objection or an invalid review always leaves a concern to list.
                    assert!(!entry.concerns.is_empty());
                }
            }
            Phase::Framing | Phase::Contribute => {
                assert_eq!((entry.verdict, entry.proposal_version), (None, 0));
            }
        }
        self.sent.push(Sent {
            worker_id,
            turn: turn.clone(),
            reply,
            seq,
        });
        self.failures.remove(&turn.role);
        self.count("accepted");
        self.check_progress(&before, at, &turn);
    }

    /// After an accepted reply: the phase goes on while turns remain, and advances
    /// exactly as the state diagram says when this was the last one.
    fn check_progress(&self, before: &Snapshot, at: i64, turn: &TurnKey) {
        let s = &self.session;
        let remaining: Vec<TurnKey> = before
            .awaited
            .iter()
            .filter(|t| t.role != turn.role)
            .cloned()
            .collect();
        if !remaining.is_empty() {
            assert_eq!(
                (s.status(), s.round()),
                (before.summary.status, before.summary.round)
            );
            assert_eq!(self.snapshot().awaited, remaining);
            return;
        }
        let k = turn.round;
        let summary = s.summary();
        let expected = match turn.phase {
            Phase::Framing => (Status::Contribute, 1),
            Phase::Contribute => (Status::Synthesize, k),
            Phase::Synthesize => {
                let last = s.transcript().last().unwrap();
                assert_eq!(
                    s.current_proposal(),
                    Some((k, proposal_hash(&last.content).as_str()))
                );
                (Status::Review, k)
            }
            Phase::Review => {
                let reviews: Vec<&Entry> = s
                    .transcript()
                    .iter()
                    .filter(|e| e.round == k && e.phase == Phase::Review)
                    .collect();
                assert_eq!(reviews.len(), s.participants().len());
                let objections: Vec<Objection> = s
                    .participants()
                    .iter()
                    .flat_map(|role| {
                        let review = reviews.iter().find(|e| e.role == *role).unwrap();
                        let concerns = if review.verdict == Some(Verdict::Approve) {
                            Vec::new()
                        } else {
                            review.concerns.clone()
                        };
                        concerns.into_iter().map(|concern| Objection {
                            role: role.clone(),
                            concern,
                        })
                    })
                    .collect();
                assert_eq!(summary.open_objections, objections);
                if reviews.iter().all(|e| e.verdict == Some(Verdict::Approve)) {
                    (Status::Consensus, k)
                } else if k == summary.max_rounds {
                    (Status::NoConsensus, k)
                } else {
                    (Status::Contribute, k + 1)
                }
            }
        };
        assert_eq!((s.status(), s.round()), expected);
        if let Some(phase) = expected.0.phase() {
            let speakers: Vec<TurnKey> = s
                .participants()
                .iter()
                .filter(|r| match phase {
                    Phase::Framing | Phase::Synthesize => r.as_str() == SUPERVISOR,
                    Phase::Contribute => r.as_str() != SUPERVISOR,
                    Phase::Review => true,
                })
                .map(|r| TurnKey {
                    round: expected.1,
                    phase,
                    role: r.clone(),
                    attempt: 1,
                })
                .collect();
            assert_eq!(self.snapshot().awaited, speakers);
            assert_eq!(s.next_deadline(), Some(at + PHASE_TIMEOUT));
        }
    }

    // ---------------------------------------------------------------------------------
    // Actions. Each one reads the current state and does one thing to the session.
    // ---------------------------------------------------------------------------------

    fn step(&mut self, (a, b, c): (u8, u8, u8)) {
        self.now += i64::from(c % 8);
        match a % 20 {
            0..=7 => self.answer(b, c),
            8 | 16 => self.turn_failed(b, c),
            9 => self.duplicate(b, c),
            10 => self.stale(b, c),
            11 => self.foreign(b, c),
            12 => self.wrong_hash(b, c),
            13 => self.malformed(b, c),
            14 => self.oversized(b, c),
            15 => self.lose_or_revive(b, c),
            17 | 18 => self.tick(b, c),
            _ if one_in(16, b) => self.cancel(c),
            _ => self.assign(b),
        }
        self.check();
    }

    /// Answers one outstanding turn correctly; with nothing to answer, finds a worker.
    fn answer(&mut self, b: u8, c: u8) {
        let current = self.current_turns();
        if current.is_empty() {
            return self.assign(b);
        }
        let (worker_id, turn) = current[b as usize % current.len()].clone();
        let reply = self.good_reply(&turn, c);
        // The driver's clock may step back a little between inputs (another core, an
        // NTP slew); the transcript's timestamps must not.
        let at = self.now - i64::from(b % 4) * 3;
        self.deliver(at, worker_id, turn, reply);
    }

    /// Answers an outstanding `NeedWorker` with a live, idle worker of that role.
    fn assign(&mut self, b: u8) {
        let needs: Vec<String> = self.needs.iter().cloned().collect();
        if needs.is_empty() {
            return;
        }
        let role = needs[b as usize % needs.len()].clone();
        let busy: BTreeSet<&String> = self.session.assignments().values().collect();
        let candidates: Vec<String> = self
            .workers
            .iter()
            .filter(|w| w.role == role && w.live && !busy.contains(&w.id))
            .map(|w| w.id.clone())
            .collect();
        if candidates.is_empty() {
            return;
        }
        let worker_id = candidates[b as usize / 7 % candidates.len()].clone();
        let input = Input::Assign {
            role: role.clone(),
            worker_id: worker_id.clone(),
            key: None,
        };
        if self.terminal() {
            // A late answer to a NeedWorker: the session needs nobody any more.
            return self.reject(input, RejectKind::Stale);
        }
        let before = self.snapshot();
        let applied = self.accept(self.now, input);
        self.needs.remove(&role);
        assert_eq!(self.holder(&role).as_deref(), Some(worker_id.as_str()));
        let dispatches: Vec<&Effect> = applied
            .effects
            .iter()
            .filter(|e| matches!(e, Effect::Dispatch { .. }))
            .collect();
        if let Some(old) = before.awaited.iter().find(|t| t.role == role) {
            // The replacement takes over the open turn. Its attempt was retired when the
            // holder was lost, and `absorb` checks that no turn key is dispatched twice.
            let new = self.session.awaited_turn(&role).unwrap();
            assert!(new.attempt >= old.attempt, "{old:?} -> {new:?}");
            self.count("replacement took over a turn");
            assert_eq!(
                dispatches,
                vec![&Effect::Dispatch {
                    worker_id,
                    turn: new,
                    deadline_ms: before.next_deadline.unwrap(),
                }]
            );
        } else if before.summary.status == Status::Pending
            && self.session.assignments().len() == self.session.participants().len()
        {
            // The last role found: framing starts, and only the supervisor speaks.
            assert_eq!(
                (self.session.status(), self.session.round()),
                (Status::Framing, 0)
            );
            assert_eq!(dispatches.len(), 1);
            assert_eq!(self.session.next_deadline(), Some(self.now + PHASE_TIMEOUT));
        } else {
            assert_eq!(self.session.status(), before.summary.status);
            assert!(dispatches.is_empty(), "{:?}", applied.effects);
        }
    }

    /// Re-sends an accepted reply: acknowledged with its first seq, and nothing changes.
    /// The same turn from another worker is refused.
    fn duplicate(&mut self, b: u8, c: u8) {
        if self.sent.is_empty() {
            return;
        }
        let sent = self.sent[b as usize % self.sent.len()].clone();
        let input = |worker_id: String| Input::Result {
            worker_id,
            turn: sent.turn.clone(),
            reply: sent.reply.clone(),
        };
        if one_in(4, c) {
            let other = self
                .workers
                .iter()
                .find(|w| w.role == sent.turn.role && w.id != sent.worker_id)
                .map_or(STRANGER.to_string(), |w| w.id.clone());
            return self.reject(input(other), RejectKind::NotAssigned);
        }
        let before = self.snapshot();
        let applied = self
            .session
            .apply(self.now, input(sent.worker_id.clone()))
            .expect("a duplicate is acknowledged, even after the end");
        assert!(applied.duplicate);
        assert_eq!(applied.seq, Some(sent.seq));
        assert!(applied.effects.is_empty(), "{:?}", applied.effects);
        assert_eq!(before, self.snapshot(), "a duplicate changed the session");
        self.count(if self.terminal() {
            "duplicate after the end"
        } else {
            "duplicate"
        });
    }

    /// Sends a result for a turn that is not current: a retired attempt, the wrong
    /// round, the wrong phase, or an attempt that never existed.
    fn stale(&mut self, b: u8, c: u8) {
        let (worker_id, turn) = match c % 4 {
            0 => {
                let retired: Vec<(String, TurnKey)> = self
                    .dispatched
                    .iter()
                    .filter(|(_, t)| {
                        self.session.awaited_turn(&t.role).as_ref() != Some(t)
                            && self.accepted_author(t).is_none()
                    })
                    .cloned()
                    .collect();
                if retired.is_empty() {
                    return;
                }
                retired[b as usize % retired.len()].clone()
            }
            1 | 2 => {
                let current = self.current_turns();
                if current.is_empty() {
                    return;
                }
                let (w, mut t) = current[b as usize % current.len()].clone();
                if c % 4 == 1 {
                    t.round += 1;
                } else {
                    let others: Vec<Phase> = [
                        Phase::Framing,
                        Phase::Contribute,
                        Phase::Synthesize,
                        Phase::Review,
                    ]
                    .into_iter()
                    .filter(|p| *p != t.phase)
                    .collect();
                    t.phase = others[b as usize % 3];
                    if self.accepted_author(&t).is_some() {
                        // That key was a real, accepted turn: this would be a duplicate.
                        return;
                    }
                }
                (w, t)
            }
            _ => {
                if self.sent.is_empty() {
                    return;
                }
                let sent = &self.sent[b as usize % self.sent.len()];
                let mut t = sent.turn.clone();
                t.attempt += 100;
                (sent.worker_id.clone(), t)
            }
        };
        let reply = self.plausible_reply(&turn);
        let kind = self.kind_for_noncurrent(&worker_id, &turn);
        self.reject(
            Input::Result {
                worker_id,
                turn,
                reply,
            },
            kind,
        );
    }

    /// A reply that would be valid if its turn were current, so that only the turn's
    /// address can be the reason for a rejection.
    fn plausible_reply(&mut self, turn: &TurnKey) -> Reply {
        if turn.phase == Phase::Review && self.session.current_proposal().is_none() {
            return Reply {
                entry_type: Some(EntryType::Review),
                content: self.fresh("late review"),
                verdict: Some(Verdict::Object),
                concerns: vec!["late".into()],
                ..Reply::default()
            };
        }
        self.good_reply(turn, 0)
    }

    /// How a result (or failure report) for a turn that is not current is refused:
    /// after the end everything is stale; otherwise a sender that does not hold the
    /// role has no right to it, and the holder's result is merely out of date.
    fn kind_for_noncurrent(&self, worker_id: &str, turn: &TurnKey) -> RejectKind {
        if self.terminal() {
            RejectKind::Stale
        } else if self.holder(&turn.role).as_deref() != Some(worker_id) {
            RejectKind::NotAssigned
        } else {
            RejectKind::Stale
        }
    }

    /// Results and assignments from senders with no right to them.
    fn foreign(&mut self, b: u8, c: u8) {
        match c % 4 {
            0 | 1 => {
                let current = self.current_turns();
                if current.is_empty() {
                    return;
                }
                let (holder, turn) = current[b as usize % current.len()].clone();
                // A stranger, or the holder's idle colleague of the same role.
                let sender = if c % 4 == 1 {
                    self.workers
                        .iter()
                        .find(|w| w.role == turn.role && w.id != holder)
                        .unwrap()
                        .id
                        .clone()
                } else {
                    STRANGER.to_string()
                };
                let reply = self.good_reply(&turn, b);
                self.reject(
                    Input::Result {
                        worker_id: sender,
                        turn,
                        reply,
                    },
                    RejectKind::NotAssigned,
                );
            }
            2 => {
                // A role that is not a participant, for the current round and phase.
                let turn = TurnKey {
                    round: self.session.round(),
                    phase: self.session.status().phase().unwrap_or(Phase::Contribute),
                    role: INTRUDER_ROLE.into(),
                    attempt: 1,
                };
                let kind = if self.terminal() {
                    RejectKind::Stale
                } else {
                    RejectKind::NotAssigned
                };
                let reply = Reply {
                    entry_type: Some(EntryType::Analysis),
                    content: self.fresh("intrusion"),
                    ..Reply::default()
                };
                self.reject(
                    Input::Result {
                        worker_id: STRANGER.into(),
                        turn,
                        reply,
                    },
                    kind,
                );
            }
            _ => {
                // Assignments the session must refuse: a role it does not have, or a
                // role that is already held.
                let terminal = self.terminal();
                let held: Vec<(String, String)> = self
                    .session
                    .assignments()
                    .iter()
                    .map(|(r, w)| (r.clone(), w.clone()))
                    .collect();
                let unheld: Vec<String> = self
                    .session
                    .participants()
                    .iter()
                    .filter(|r| !self.session.assignments().contains_key(*r))
                    .cloned()
                    .collect();
                if b % 3 == 2 && !held.is_empty() && !unheld.is_empty() {
                    // One worker may not hold two roles of a session.
                    let (_, holder) = held[b as usize % held.len()].clone();
                    let role = unheld[c as usize / 4 % unheld.len()].clone();
                    self.reject(
                        Input::Assign {
                            role,
                            worker_id: holder,
                            key: None,
                        },
                        RejectKind::Stale,
                    );
                } else if one_in(2, b) || held.is_empty() {
                    let kind = if terminal {
                        RejectKind::Stale
                    } else {
                        RejectKind::NotAssigned
                    };
                    self.reject(
                        Input::Assign {
                            role: INTRUDER_ROLE.into(),
                            worker_id: STRANGER.into(),
                            key: None,
                        },
                        kind,
                    );
                } else {
                    let (role, holder) = held[b as usize % held.len()].clone();
                    let other = self
                        .workers
                        .iter()
                        .find(|w| w.role == role && w.id != holder)
                        .unwrap()
                        .id
                        .clone();
                    self.reject(
                        Input::Assign {
                            role,
                            worker_id: other,
                            key: None,
                        },
                        RejectKind::Stale,
                    );
                }
            }
        }
    }

    /// An approval that names a version other than the one under review.
    fn wrong_hash(&mut self, b: u8, c: u8) {
        let reviews: Vec<(String, TurnKey)> = self
            .current_turns()
            .into_iter()
            .filter(|(_, t)| t.phase == Phase::Review)
            .collect();
        if reviews.is_empty() {
            return;
        }
        let (worker_id, turn) = reviews[b as usize % reviews.len()].clone();
        let current = self.session.current_proposal().unwrap().1.to_string();
        let wrong = match c % 3 {
            0 => String::new(),
            1 => proposal_hash("some other proposal"),
            // The right hash in the wrong case is still another string.
            _ => current.to_uppercase(),
        };
        assert_ne!(wrong, current);
        let mut reply = self.good_reply(&turn, 0);
        reply.verdict = Some(Verdict::Approve);
        reply.proposal_hash = wrong;
        self.reject(
            Input::Result {
                worker_id,
                turn,
                reply,
            },
            RejectKind::Stale,
        );
    }

    /// Replies to a current turn, from its holder, that are malformed in one way.
    fn malformed(&mut self, b: u8, c: u8) {
        let current = self.current_turns();
        if current.is_empty() {
            return;
        }
        let (worker_id, turn) = current[b as usize % current.len()].clone();
        let mut reply = self.good_reply(&turn, 0);
        match c % 4 {
            0 => {
                let wrong: Vec<EntryType> = EntryType::ALL
                    .into_iter()
                    .filter(|t| !turn.phase.allows(*t, turn.round))
                    .collect();
                reply.entry_type = Some(wrong[b as usize % wrong.len()]);
            }
            1 => reply.entry_type = None,
            2 if turn.phase != Phase::Review => reply.content = " \n\t".into(),
            2 => reply.verdict = None,
            _ if turn.phase == Phase::Review => {
                reply.verdict = Some(Verdict::Object);
                reply.concerns = if one_in(2, b) {
                    Vec::new()
                } else {
                    vec!["  ".into(), String::new()]
                };
            }
            _ => reply.entry_type = Some(EntryType::Signoff),
        }
        self.reject(
            Input::Result {
                worker_id,
                turn,
                reply,
            },
            RejectKind::Invalid,
        );
    }

    /// A reply larger than the limit is refused before anything else is looked at, even
    /// for a turn that was already accepted.
    fn oversized(&mut self, b: u8, c: u8) {
        let (worker_id, turn) = if self.dispatched.is_empty() {
            (
                STRANGER.to_string(),
                TurnKey {
                    round: 0,
                    phase: Phase::Framing,
                    role: SUPERVISOR.into(),
                    attempt: 1,
                },
            )
        } else {
            self.dispatched[b as usize % self.dispatched.len()].clone()
        };
        let mut reply = self.plausible_reply(&turn);
        reply.content = "x".repeat(MAX_CONTENT + 1 + c as usize);
        self.reject(
            Input::Result {
                worker_id,
                turn,
                reply,
            },
            RejectKind::TooLarge,
        );
    }

    /// A worker drops off the mesh (or, sometimes, a dropped one comes back, idle).
    fn lose_or_revive(&mut self, b: u8, c: u8) {
        let dead: Vec<usize> = (0..self.workers.len())
            .filter(|&i| !self.workers[i].live)
            .collect();
        if one_in(3, c) && !dead.is_empty() {
            self.workers[dead[b as usize % dead.len()]].live = true;
            return;
        }
        let i = b as usize % self.workers.len();
        self.workers[i].live = false;
        let worker_id = self.workers[i].id.clone();
        let before = self.snapshot();
        let held: Vec<String> = before
            .summary
            .assignments
            .iter()
            .filter(|(_, w)| **w == worker_id)
            .map(|(r, _)| r.clone())
            .collect();
        let applied = self.accept(
            self.now,
            Input::WorkerLost {
                worker_id: worker_id.clone(),
            },
        );
        if held.is_empty() || before.summary.status.is_terminal() {
            // A worker the session does not use (or no longer needs) changes nothing.
            assert!(applied.effects.is_empty(), "{:?}", applied.effects);
            assert_eq!(before, self.snapshot());
            return;
        }
        let needs: Vec<Effect> = held
            .iter()
            .map(|r| Effect::NeedWorker { role: r.clone() })
            .collect();
        assert_eq!(applied.effects, needs);
        self.count("lost a holder");
        for role in &held {
            assert_eq!(self.holder(role), None);
            // The lost worker's open attempt is retired at once.
            if let Some(old) = before.awaited.iter().find(|t| t.role == *role) {
                let now = self.session.awaited_turn(role).unwrap();
                assert!(now.attempt > old.attempt);
            }
        }
    }

    /// A holder reports it could not complete its turn (or a non-current turn is
    /// reported failed, which must be refused).
    fn turn_failed(&mut self, b: u8, c: u8) {
        if one_in(4, c) {
            if self.dispatched.is_empty() {
                return;
            }
            let (worker_id, turn) = self.dispatched[b as usize % self.dispatched.len()].clone();
            if self.session.awaited_turn(&turn.role).as_ref() == Some(&turn)
                && self.holder(&turn.role).as_deref() == Some(worker_id.as_str())
            {
                return; // That one is current; the other branch reports those.
            }
            let kind = self.kind_for_noncurrent(&worker_id, &turn);
            return self.reject(
                Input::TurnFailed {
                    worker_id,
                    turn,
                    reason: "late".into(),
                },
                kind,
            );
        }
        let current = self.current_turns();
        if current.is_empty() {
            return;
        }
        // Half the time, keep hitting a turn that already failed, so that running out of
        // attempts actually happens.
        let failing = current
            .iter()
            .find(|(_, t)| self.failures.contains_key(&t.role))
            .filter(|_| one_in(2, c));
        let (worker_id, turn) = failing
            .unwrap_or(&current[b as usize % current.len()])
            .clone();
        let failures = self.failures.get(&turn.role).copied().unwrap_or(0) + 1;
        let applied = self.accept(
            self.now,
            Input::TurnFailed {
                worker_id: worker_id.clone(),
                turn: turn.clone(),
                reason: "brain timed out".into(),
            },
        );
        if failures >= MAX_ATTEMPTS {
            self.count("failed after max attempts");
            assert_eq!(self.session.status(), Status::Failed);
            let reason = self.session.summary().reason;
            assert!(reason.contains(&turn.role), "{reason}");
        } else {
            self.failures.insert(turn.role.clone(), failures);
            self.count("retried a failed turn");
            let retry = TurnKey {
                attempt: turn.attempt + 1,
                ..turn
            };
            assert_eq!(self.session.awaited_turn(&retry.role), Some(retry.clone()));
            assert_eq!(
                applied.effects,
                vec![Effect::Dispatch {
                    worker_id,
                    turn: retry,
                    deadline_ms: self.session.next_deadline().unwrap(),
                }]
            );
        }
    }

    /// Time passes; sometimes right up to (or past) the deadline.
    fn tick(&mut self, b: u8, c: u8) {
        // PENDING is short-lived, so its deadline is hit more eagerly than a phase's.
        let rarity = if self.session.status() == Status::Pending {
            4
        } else {
            16
        };
        match self.session.next_deadline() {
            Some(deadline) if one_in(rarity, b) => {
                self.now = self.now.max(deadline + i64::from(c % 3))
            }
            _ => self.now += i64::from(b % 64) * 10,
        }
        let before = self.snapshot();
        let applied = self.accept(self.now, Input::Tick);
        match before.next_deadline {
            Some(deadline) if self.now >= deadline => {
                self.count(if before.summary.status == Status::Pending {
                    "pending timed out"
                } else {
                    "phase timed out"
                });
                assert_eq!(self.session.status(), Status::Failed);
                // The reason names who the session was waiting for.
                let reason = self.session.summary().reason;
                let waiting: Vec<String> = if before.summary.status == Status::Pending {
                    before
                        .summary
                        .roles
                        .iter()
                        .filter(|r| !before.summary.assignments.contains_key(*r))
                        .cloned()
                        .collect()
                } else {
                    before.awaited.iter().map(|t| t.role.clone()).collect()
                };
                assert!(!waiting.is_empty());
                for role in waiting {
                    assert!(reason.contains(&role), "{reason:?} misses {role}");
                }
            }
            _ => {
                assert!(applied.effects.is_empty());
                assert_eq!(before, self.snapshot(), "a tick before the deadline acted");
            }
        }
    }

    fn cancel(&mut self, c: u8) {
        let reason = format!("client gave up ({c})");
        let input = Input::Cancel {
            reason: reason.clone(),
        };
        if self.terminal() {
            return self.reject(input, RejectKind::Stale);
        }
        self.accept(self.now, input);
        assert_eq!(self.session.status(), Status::Cancelled);
        assert_eq!(self.session.summary().reason, reason);
    }

    // ---------------------------------------------------------------------------------
    // Invariants
    // ---------------------------------------------------------------------------------

    fn check(&mut self) {
        let s = &self.session;
        let summary = s.summary();
        let t = s.transcript();
        let max_rounds = summary.max_rounds;

        // The transcript: seq gapless from 1, time never goes backwards.
        for (i, e) in t.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1, "seq gap at index {i}");
        }
        for w in t.windows(2) {
            assert!(w[0].timestamp_ms <= w[1].timestamp_ms, "{w:?}");
        }
        assert_eq!(summary.entry_count, t.len() as u64);

        // Every accepted reply is in the transcript exactly once, at the seq it was
        // given, and nothing else is: the transcript is exactly the accepted replies.
        assert_eq!(self.sent.len(), t.len());
        let mut keys = BTreeSet::new();
        for sent in &self.sent {
            let e = &t[sent.seq as usize - 1];
            assert_eq!(e.content, sent.reply.content);
            assert_eq!(
                (e.round, e.phase, &e.role, &e.worker_id),
                (
                    sent.turn.round,
                    sent.turn.phase,
                    &sent.turn.role,
                    &sent.worker_id
                )
            );
            assert!(
                keys.insert((e.round, e.phase, e.role.clone())),
                "two entries for round {} {} {}",
                e.round,
                e.phase,
                e.role
            );
        }

        // Rounds and proposal versions stay within max_rounds; one version per round.
        assert!(summary.round <= max_rounds);
        let versions: Vec<&Entry> = t.iter().filter(|e| e.is_proposal_version()).collect();
        assert!(versions.len() as u32 <= max_rounds);
        for (i, v) in versions.iter().enumerate() {
            assert_eq!(v.proposal_version, i as u32 + 1);
            assert_eq!(v.round, v.proposal_version);
            assert_eq!(v.proposal_hash, proposal_hash(&v.content));
        }

        match summary.status {
            Status::Consensus => {
                let last = versions.last().expect("consensus on some version");
                assert_eq!(summary.final_hash, proposal_hash(&last.content));
                assert_eq!(summary.final_version, last.proposal_version);
                assert_eq!(summary.final_version, summary.round);
                for role in &summary.roles {
                    assert!(
                        t.iter().any(|e| e.round == summary.round
                            && e.phase == Phase::Review
                            && e.role == *role
                            && e.verdict == Some(Verdict::Approve)
                            && e.proposal_hash == summary.final_hash),
                        "consensus without {role}'s sign-off on {}",
                        summary.final_hash
                    );
                }
                assert!(summary.open_objections.is_empty());
            }
            Status::NoConsensus => {
                assert_eq!(summary.round, max_rounds);
                assert!(!summary.open_objections.is_empty());
                assert_eq!(versions.len() as u32, max_rounds);
            }
            _ => {
                assert_eq!(
                    (summary.final_version, summary.final_hash.as_str()),
                    (0, "")
                );
            }
        }
        if summary.status != Status::NoConsensus && summary.status != Status::Consensus {
            // Objections are only ever the outcome of a concluded review.
            if !summary.open_objections.is_empty() {
                assert!(summary.round >= 2);
            }
        }

        // Every worker holds at most one role, and only a live worker of that role.
        let holders: BTreeSet<&String> = summary.assignments.values().collect();
        assert_eq!(holders.len(), summary.assignments.len());
        for (role, w) in &summary.assignments {
            let worker = self.workers.iter().find(|x| x.id == *w).unwrap();
            assert_eq!(&worker.role, role);
            assert!(worker.live, "lost worker {w} still holds {role}");
        }

        if summary.status.is_terminal() {
            let now = snapshot(s);
            assert!(now.awaited.is_empty());
            assert!(summary.assignments.is_empty());
            assert_eq!(s.next_deadline(), None);
            assert!(!summary.reason.is_empty());
            match &self.terminal {
                // Nothing leaves a terminal state, and nothing changes in it.
                Some(first) => assert_eq!(first, &now, "a terminal session changed"),
                None => {
                    self.terminal = Some(now);
                    let status = match summary.status {
                        Status::Consensus => "ended CONSENSUS",
                        Status::NoConsensus => "ended NO_CONSENSUS",
                        Status::Cancelled => "ended CANCELLED",
                        _ => "ended FAILED",
                    };
                    self.count(status);
                }
            }
        } else {
            assert!(self.terminal.is_none(), "left a terminal state");
            assert!(s.next_deadline().is_some());
            // Nothing is forgotten: every role without a worker has been asked for, and
            // every awaited turn with a worker has been dispatched to that worker.
            for role in s.participants() {
                if !summary.assignments.contains_key(role) {
                    assert!(self.needs.contains(role), "nobody is looking for {role}");
                }
            }
            for turn in snapshot(s).awaited {
                if let Some(w) = summary.assignments.get(&turn.role) {
                    assert!(
                        self.dispatched.contains(&(w.clone(), turn.clone())),
                        "{turn:?} is awaited from {w} but was never dispatched"
                    );
                }
            }
            if summary.status == Status::Pending {
                assert!(t.is_empty());
            }
        }
    }

    /// Drives the session to the end with correct answers only. `verdict` decides each
    /// review; `order` picks which outstanding turn goes next.
    fn run_well_behaved(
        &mut self,
        order: &[u8],
        mut verdict: impl FnMut(&TurnKey) -> (Verdict, Vec<String>),
    ) {
        let mut i = 0;
        while !self.terminal() {
            assert!(i < 10_000, "a well-behaved run does not end");
            while !self.needs.is_empty() {
                self.assign(0);
            }
            let current = self.current_turns();
            assert!(!current.is_empty(), "a live session awaits nothing");
            let pick = order[i % order.len()] as usize % current.len();
            let (worker_id, turn) = current[pick].clone();
            let mut reply = self.good_reply(&turn, 1);
            if turn.phase == Phase::Review {
                let (v, concerns) = verdict(&turn);
                reply.verdict = Some(v);
                reply.concerns = concerns;
            }
            self.now += 1;
            self.deliver(self.now, worker_id, turn, reply);
            self.check();
            i += 1;
        }
    }
}

fn specialists(n: usize) -> Vec<&'static str> {
    agentmesh_core::DEFAULT_SPECIALISTS[..n].to_vec()
}

/// The random driver is only as good as the paths it takes. Runs it over a fixed set of
/// deterministic inputs and requires every outcome and every kind of bad input to
/// occur, so a change that makes the driver skip (say) every review cannot go unnoticed.
#[test]
fn random_driver_reaches_every_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = (
        1usize..=3,
        1u32..=3,
        proptest::collection::vec(any::<(u8, u8, u8)>(), 1..250),
    );
    let mut stats: BTreeMap<&'static str, u32> = BTreeMap::new();
    for _ in 0..300 {
        let (n, max_rounds, choices) = strategy.new_tree(&mut runner).unwrap().current();
        let mut driver = Driver::new(&specialists(n), max_rounds);
        for choice in choices {
            driver.step(choice);
        }
        for (what, count) in driver.stats {
            *stats.entry(what).or_default() += count;
        }
    }
    let required = [
        "accepted",
        "duplicate",
        "duplicate after the end",
        "rejected invalid",
        "rejected stale",
        "rejected not-assigned",
        "rejected too-large",
        "lost a holder",
        "replacement took over a turn",
        "retried a failed turn",
        "failed after max attempts",
        "pending timed out",
        "phase timed out",
        "ended CONSENSUS",
        "ended NO_CONSENSUS",
        "ended CANCELLED",
        "ended FAILED",
    ];
    for what in required {
        assert!(
            stats.get(what).copied().unwrap_or(0) > 0,
            "never: {what}; saw {stats:?}"
        );
    }
    eprintln!("{stats:#?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary interleavings of everything a mesh can do to a session keep every
    /// invariant, after every step.
    #[test]
    fn invariants_hold_under_arbitrary_interleavings(
        n_specialists in 1usize..=3,
        max_rounds in 1u32..=3,
        choices in proptest::collection::vec(any::<(u8, u8, u8)>(), 1..250),
    ) {
        let mut driver = Driver::new(&specialists(n_specialists), max_rounds);
        for choice in choices {
            driver.step(choice);
        }
        driver.check();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// When everyone answers correctly and everybody approves in round r (somebody
    /// objects in every earlier round), the session reaches consensus on version r.
    #[test]
    fn well_behaved_run_reaches_consensus(
        n_specialists in 1usize..=4,
        max_rounds in 1u32..=4,
        approve_in in any::<Index>(),
        objector in any::<Index>(),
        order in proptest::collection::vec(any::<u8>(), 1..16),
    ) {
        let mut driver = Driver::new(&specialists(n_specialists), max_rounds);
        let r = approve_in.index(max_rounds as usize) as u32 + 1;
        let participants = driver.session.participants().to_vec();
        let objector = participants[objector.index(participants.len())].clone();
        driver.run_well_behaved(&order, |turn| {
            if turn.round < r && turn.role == objector {
                (Verdict::Object, vec![format!("round {} is not good enough", turn.round)])
            } else {
                (Verdict::Approve, Vec::new())
            }
        });
        let summary = driver.session.summary();
        prop_assert_eq!(summary.status, Status::Consensus);
        prop_assert_eq!((summary.round, summary.final_version), (r, r));
        prop_assert!(summary.open_objections.is_empty());
        // Framing, then per round: every specialist, one synthesis, every participant.
        let s = n_specialists as u64;
        prop_assert_eq!(summary.entry_count, 1 + u64::from(r) * (s + 1 + (s + 1)));
    }

    /// When one participant objects to every version, the session ends without
    /// consensus after max_rounds, with that objection open.
    #[test]
    fn persistent_objection_ends_without_consensus(
        n_specialists in 1usize..=4,
        max_rounds in 1u32..=4,
        objector in any::<Index>(),
        order in proptest::collection::vec(any::<u8>(), 1..16),
    ) {
        let mut driver = Driver::new(&specialists(n_specialists), max_rounds);
        let participants = driver.session.participants().to_vec();
        let objector = participants[objector.index(participants.len())].clone();
        let concern = "the rate limits are not per tenant".to_string();
        driver.run_well_behaved(&order, |turn| {
            if turn.role == objector {
                (Verdict::Object, vec![concern.clone()])
            } else {
                (Verdict::Approve, Vec::new())
            }
        });
        let summary = driver.session.summary();
        prop_assert_eq!(summary.status, Status::NoConsensus);
        prop_assert_eq!(summary.round, max_rounds);
        prop_assert_eq!(
            summary.open_objections,
            vec![Objection { role: objector, concern }]
        );
        let versions = driver
            .session
            .transcript()
            .iter()
            .filter(|e| e.is_proposal_version())
            .count();
        prop_assert_eq!(versions as u32, max_rounds);
        prop_assert_eq!((summary.final_version, summary.final_hash.as_str()), (0, ""));
    }
}
