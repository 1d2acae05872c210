//! Example-based tests of the session state machine: one readable story per rule.
//!
//! The sessions here have a supervisor and two specialists (backend, security); every
//! role `r` is held by worker `r-1` unless a test replaces it. Times are explicit, so
//! every deadline in these tests can be read off the code.

use agentmesh_core::hash::proposal_hash;
use agentmesh_core::trust::testing::signed;
use agentmesh_core::{
    Applied, Effect, EntryType, Input, Objection, Phase, RejectKind, Rejection, Reply, Session,
    SessionConfig, SessionSpec, Status, TurnKey, Verdict,
};

const T0: i64 = 1_700_000_000_000;
const PHASE_TIMEOUT: i64 = 10_000;
const PENDING_TIMEOUT: i64 = 5_000;
const MAX_CONTENT: usize = 64;
/// The store's limit on one entry as stored (JSON): well above an entry of MAX_CONTENT
/// plain bytes (signature, key and chain hash included), but below one whose control
/// characters or concerns swell it.
const MAX_STORED: usize = 850;

fn config() -> SessionConfig {
    SessionConfig {
        phase_timeout_ms: PHASE_TIMEOUT,
        pending_timeout_ms: PENDING_TIMEOUT,
        max_turn_attempts: 3,
        max_content_bytes: MAX_CONTENT,
        max_stored_entry_bytes: MAX_STORED,
        require_signatures: true,
    }
}

fn spec(max_rounds: u32) -> SessionSpec {
    SessionSpec {
        id: "s1".into(),
        task: "design a rate limiter".into(),
        specialists: vec!["backend".into(), "security".into()],
        max_rounds,
    }
}

fn worker(role: &str) -> String {
    format!("{role}-1")
}

fn turn(round: u32, phase: Phase, role: &str, attempt: u32) -> TurnKey {
    TurnKey {
        round,
        phase,
        role: role.into(),
        attempt,
    }
}

fn reply(entry_type: EntryType, content: &str) -> Reply {
    Reply {
        entry_type: Some(entry_type),
        content: content.into(),
        ..Reply::default()
    }
}

fn approve(hash: &str) -> Reply {
    Reply {
        verdict: Some(Verdict::Approve),
        proposal_hash: hash.into(),
        ..reply(EntryType::Review, "lgtm")
    }
}

fn object(concern: &str) -> Reply {
    Reply {
        verdict: Some(Verdict::Object),
        concerns: vec![concern.into()],
        ..reply(EntryType::Review, "not yet")
    }
}

/// A session plus the clock its driver would own.
struct Fx {
    s: Session,
    now: i64,
}

impl Fx {
    /// A new session in PENDING, no worker assigned yet.
    fn pending(max_rounds: u32) -> Fx {
        let (s, effects) = Session::new(spec(max_rounds), config(), T0);
        assert_eq!(
            effects,
            ["supervisor", "backend", "security"]
                .map(|role| Effect::NeedWorker { role: role.into() })
                .to_vec()
        );
        Fx { s, now: T0 }
    }

    /// A session whose roles are all held, now in FRAMING.
    fn framing(max_rounds: u32) -> Fx {
        let mut fx = Fx::pending(max_rounds);
        for role in ["supervisor", "backend", "security"] {
            fx.assign(role, &worker(role));
        }
        assert_eq!(fx.s.status(), Status::Framing);
        fx
    }

    /// A session in round 1 CONTRIBUTE.
    fn contribute(max_rounds: u32) -> Fx {
        let mut fx = Fx::framing(max_rounds);
        fx.answer("supervisor", reply(EntryType::Framework, "the framework"));
        assert_eq!((fx.s.status(), fx.s.round()), (Status::Contribute, 1));
        fx
    }

    /// A session in round 1 REVIEW of proposal v1; returns its hash.
    fn review(max_rounds: u32) -> (Fx, String) {
        let mut fx = Fx::contribute(max_rounds);
        fx.answer("backend", reply(EntryType::Analysis, "backend analysis"));
        fx.answer("security", reply(EntryType::Analysis, "security analysis"));
        fx.answer("supervisor", reply(EntryType::Proposal, "proposal v1"));
        assert_eq!(fx.s.status(), Status::Review);
        (fx, proposal_hash("proposal v1"))
    }

    fn apply(&mut self, input: Input) -> Result<Applied, Rejection> {
        self.now += 1;
        self.s.apply(self.now, signed(&self.s, input))
    }

    fn assign(&mut self, role: &str, worker_id: &str) -> Applied {
        self.apply(Input::Assign {
            role: role.into(),
            worker_id: worker_id.into(),
            key: None,
        })
        .expect("assignment accepted")
    }

    fn send(&mut self, worker_id: &str, turn: TurnKey, reply: Reply) -> Result<Applied, Rejection> {
        self.apply(Input::Result {
            worker_id: worker_id.into(),
            turn,
            reply,
        })
    }

    /// The role's holder answers its current turn; the answer must be accepted.
    fn answer(&mut self, role: &str, reply: Reply) -> Applied {
        let turn = self.s.awaited_turn(role).expect("role has an open turn");
        let holder = self.s.assignments()[role].clone();
        let applied = self.send(&holder, turn, reply).expect("answer accepted");
        assert!(!applied.duplicate);
        applied
    }

    /// Applies an input that must be rejected with `kind`, and checks that it changed
    /// nothing a client or the driver can see.
    fn reject(&mut self, input: Input, kind: RejectKind) -> Rejection {
        let summary = self.s.summary();
        let transcript = self.s.transcript().to_vec();
        let awaited: Vec<_> = ["supervisor", "backend", "security"]
            .map(|r| self.s.awaited_turn(r))
            .to_vec();
        let deadline = self.s.next_deadline();
        let rejection = self.apply(input).expect_err("input must be rejected");
        assert_eq!(rejection.kind, kind, "{}", rejection.message);
        assert_eq!(self.s.summary(), summary);
        assert_eq!(self.s.transcript(), &transcript[..]);
        let awaited_after: Vec<_> = ["supervisor", "backend", "security"]
            .map(|r| self.s.awaited_turn(r))
            .to_vec();
        assert_eq!(awaited_after, awaited);
        assert_eq!(self.s.next_deadline(), deadline);
        rejection
    }

    fn tick_at(&mut self, at: i64) -> Applied {
        self.now = at;
        self.s
            .apply(at, Input::Tick)
            .expect("a tick is always accepted")
    }

    fn dispatches(applied: &Applied) -> Vec<(String, TurnKey)> {
        applied
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::Dispatch {
                    worker_id, turn, ..
                } => Some((worker_id.clone(), turn.clone())),
                _ => None,
            })
            .collect()
    }
}

fn released(applied: &Applied) -> Vec<String> {
    let mut ids: Vec<String> = applied
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Release { worker_id } => Some(worker_id.clone()),
            _ => None,
        })
        .collect();
    ids.sort();
    ids
}

fn all_workers() -> Vec<String> {
    let mut ids: Vec<String> = ["backend", "security", "supervisor"].map(worker).to_vec();
    ids.sort();
    ids
}

// -------------------------------------------------------------------------------------
// Happy paths
// -------------------------------------------------------------------------------------

#[test]
fn consensus_in_one_round_walks_every_phase() {
    let mut fx = Fx::pending(3);
    assert_eq!(fx.s.next_deadline(), Some(T0 + PENDING_TIMEOUT));

    // PENDING waits for every role; the supervisor alone does not start anything.
    assert!(fx.assign("supervisor", "supervisor-1").effects.is_empty());
    assert!(fx.assign("backend", "backend-1").effects.is_empty());
    assert_eq!(fx.s.status(), Status::Pending);

    // The last role arrives: FRAMING, and only the supervisor is asked to speak.
    let applied = fx.assign("security", "security-1");
    let framing_deadline = fx.now + PHASE_TIMEOUT;
    assert_eq!(
        applied.effects,
        vec![
            Effect::StatusChanged {
                status: Status::Framing,
                round: 0
            },
            Effect::Dispatch {
                worker_id: "supervisor-1".into(),
                turn: turn(0, Phase::Framing, "supervisor", 1),
                deadline_ms: framing_deadline,
            },
        ]
    );
    assert_eq!(fx.s.next_deadline(), Some(framing_deadline));

    // The framework opens round 1: every specialist contributes.
    let applied = fx.answer(
        "supervisor",
        reply(EntryType::Framework, "scope: per-tenant"),
    );
    assert_eq!(applied.seq, Some(1));
    assert!(matches!(&applied.effects[0], Effect::Appended(e) if e.seq == 1));
    assert_eq!(
        applied.effects[1],
        Effect::StatusChanged {
            status: Status::Contribute,
            round: 1
        }
    );
    assert_eq!(
        Fx::dispatches(&applied),
        vec![
            ("backend-1".into(), turn(1, Phase::Contribute, "backend", 1)),
            (
                "security-1".into(),
                turn(1, Phase::Contribute, "security", 1)
            ),
        ]
    );

    // One contribution is not enough to move on.
    let applied = fx.answer("backend", reply(EntryType::Analysis, "token bucket"));
    assert_eq!(applied.effects.len(), 1, "{:?}", applied.effects);
    assert_eq!(fx.s.status(), Status::Contribute);
    assert_eq!(fx.s.awaiting().collect::<Vec<_>>(), vec!["security"]);

    // The last one hands over to the supervisor for the synthesis.
    let applied = fx.answer("security", reply(EntryType::Analysis, "auth first"));
    assert_eq!(
        Fx::dispatches(&applied),
        vec![(
            "supervisor-1".into(),
            turn(1, Phase::Synthesize, "supervisor", 1)
        )]
    );
    assert_eq!((fx.s.status(), fx.s.round()), (Status::Synthesize, 1));

    // The synthesis is proposal v1, named by its hash; everybody reviews it.
    let applied = fx.answer("supervisor", reply(EntryType::Proposal, "proposal v1"));
    let hash = proposal_hash("proposal v1");
    assert_eq!(fx.s.current_proposal(), Some((1, hash.as_str())));
    let entry = fx.s.transcript().last().unwrap();
    assert_eq!((entry.proposal_version, &entry.proposal_hash), (1, &hash));
    assert_eq!(Fx::dispatches(&applied).len(), 3);
    assert_eq!(fx.s.status(), Status::Review);

    fx.answer("backend", approve(&hash));
    // A review entry records the version it judges.
    let review = fx.s.transcript().last().unwrap();
    assert_eq!(
        (
            review.verdict,
            review.proposal_version,
            &review.proposal_hash
        ),
        (Some(Verdict::Approve), 1, &hash)
    );
    fx.answer("security", approve(&hash));
    let applied = fx.answer("supervisor", approve(&hash));

    // Every participant signed v1: consensus, and every worker is let go.
    assert_eq!(
        applied.effects[1],
        Effect::StatusChanged {
            status: Status::Consensus,
            round: 1
        }
    );
    assert_eq!(released(&applied), all_workers());
    let summary = fx.s.summary();
    assert_eq!(summary.status, Status::Consensus);
    assert_eq!(
        (summary.final_version, summary.final_hash.as_str()),
        (1, hash.as_str())
    );
    assert!(summary.open_objections.is_empty());
    assert!(summary.assignments.is_empty());
    assert_eq!(fx.s.next_deadline(), None);

    let types: Vec<(Phase, &str, EntryType)> =
        fx.s.transcript()
            .iter()
            .map(|e| (e.phase, e.role.as_str(), e.entry_type))
            .collect();
    assert_eq!(
        types,
        vec![
            (Phase::Framing, "supervisor", EntryType::Framework),
            (Phase::Contribute, "backend", EntryType::Analysis),
            (Phase::Contribute, "security", EntryType::Analysis),
            (Phase::Synthesize, "supervisor", EntryType::Proposal),
            (Phase::Review, "backend", EntryType::Review),
            (Phase::Review, "security", EntryType::Review),
            (Phase::Review, "supervisor", EntryType::Review),
        ]
    );
    let seqs: Vec<u64> = fx.s.transcript().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<u64>>());

    // Consensus is final: a cancellation arriving now cannot turn it into CANCELLED.
    fx.reject(
        Input::Cancel {
            reason: "too late".into(),
        },
        RejectKind::Stale,
    );
    assert_eq!(fx.s.status(), Status::Consensus);
}

#[test]
fn consensus_needs_every_participant_including_the_supervisor() {
    let invalid = Reply {
        verdict: Some(Verdict::Invalid),
        ..reply(EntryType::Review, "garbled")
    };
    // One dissenting verdict (an objection, or an invalid review, which is never an
    // approval) from any participant is enough to go another round.
    for (dissent, objector) in [object("not convinced"), invalid]
        .into_iter()
        .flat_map(|d| ["supervisor", "backend", "security"].map(|r| (d.clone(), r)))
    {
        let (mut fx, v1) = Fx::review(2);
        for role in ["supervisor", "backend", "security"] {
            if role == objector {
                fx.answer(role, dissent.clone());
            } else {
                fx.answer(role, approve(&v1));
            }
        }
        assert_eq!(
            (fx.s.status(), fx.s.round()),
            (Status::Contribute, 2),
            "{objector} objected"
        );
        assert_eq!(
            fx.s.summary().open_objections.len(),
            1,
            "{objector} objected"
        );
    }
}

#[test]
fn timestamps_never_go_backwards_even_if_the_clock_does() {
    let mut fx = Fx::contribute(2);
    let framing_ts = fx.s.transcript()[0].timestamp_ms;
    // The driver's clock steps back a second (an NTP correction) before the reply.
    fx.now = framing_ts - 1_000;
    fx.answer("backend", reply(EntryType::Analysis, "a"));
    assert_eq!(fx.s.transcript()[1].timestamp_ms, framing_ts);
    // Once the clock is ahead again, its time is used as is.
    fx.now = framing_ts + 5_000;
    fx.answer("security", reply(EntryType::Analysis, "b"));
    assert_eq!(fx.s.transcript()[2].timestamp_ms, framing_ts + 5_001);
}

#[test]
fn an_objection_opens_a_second_round_that_ends_in_consensus() {
    let (mut fx, v1) = Fx::review(3);
    fx.answer("supervisor", approve(&v1));
    fx.answer("backend", approve(&v1));
    let applied = fx.answer("security", object("no per-tenant limits"));

    // Round 2 starts with the specialists, and the objection is on record.
    assert_eq!((fx.s.status(), fx.s.round()), (Status::Contribute, 2));
    assert_eq!(
        Fx::dispatches(&applied),
        vec![
            ("backend-1".into(), turn(2, Phase::Contribute, "backend", 1)),
            (
                "security-1".into(),
                turn(2, Phase::Contribute, "security", 1)
            ),
        ]
    );
    assert_eq!(
        fx.s.summary().open_objections,
        vec![Objection {
            role: "security".into(),
            concern: "no per-tenant limits".into()
        }]
    );

    // Later rounds answer objections with proposals and implementation detail.
    fx.answer(
        "backend",
        reply(EntryType::Implementation, "bucket per tenant"),
    );
    fx.answer(
        "security",
        reply(EntryType::Proposal, "tenant from the token"),
    );
    fx.answer("supervisor", reply(EntryType::Proposal, "proposal v2"));
    let v2 = proposal_hash("proposal v2");
    assert_eq!(fx.s.current_proposal(), Some((2, v2.as_str())));

    // A sign-off on the superseded version is refused; the current one is accepted.
    fx.reject(
        Input::Result {
            worker_id: "backend-1".into(),
            turn: turn(2, Phase::Review, "backend", 1),
            reply: approve(&v1),
        },
        RejectKind::Stale,
    );
    for role in ["backend", "security", "supervisor"] {
        fx.answer(role, approve(&v2));
    }

    let summary = fx.s.summary();
    assert_eq!(summary.status, Status::Consensus);
    assert_eq!(summary.round, 2);
    assert_eq!((summary.final_version, summary.final_hash), (2, v2));
    assert!(
        summary.open_objections.is_empty(),
        "consensus closes objections"
    );
    assert_eq!(summary.entry_count, 1 + 6 + 6);
}

#[test]
fn objections_in_the_last_round_end_without_consensus() {
    let (mut fx, v1) = Fx::review(1);
    // An approval may carry a remark; that does not make it an objection.
    fx.answer(
        "supervisor",
        Reply {
            concerns: vec!["nit: name the config key".into()],
            ..approve(&v1)
        },
    );
    fx.answer(
        "backend",
        Reply {
            verdict: Some(Verdict::Invalid),
            ..reply(EntryType::Review, "garbled")
        },
    );
    let applied = fx.answer("security", object("no audit log"));

    let summary = fx.s.summary();
    assert_eq!((summary.status, summary.round), (Status::NoConsensus, 1));
    // An invalid review is never an approval: it is listed as an open objection too.
    let roles: Vec<&str> = summary
        .open_objections
        .iter()
        .map(|o| o.role.as_str())
        .collect();
    assert_eq!(roles, vec!["backend", "security"]);
    assert!(summary.open_objections.contains(&Objection {
        role: "security".into(),
        concern: "no audit log".into()
    }));
    assert_eq!(
        (summary.final_version, summary.final_hash.as_str()),
        (0, "")
    );
    assert_eq!(released(&applied), all_workers());
}

// -------------------------------------------------------------------------------------
// Rejections: each kind with a precise case. Every rejection changes nothing.
// -------------------------------------------------------------------------------------

#[test]
fn malformed_replies_are_invalid() {
    let mut fx = Fx::framing(2);
    let framing = turn(0, Phase::Framing, "supervisor", 1);
    let send = |reply: Reply| Input::Result {
        worker_id: "supervisor-1".into(),
        turn: framing.clone(),
        reply,
    };
    // Framing takes a framework, nothing else.
    fx.reject(send(reply(EntryType::Analysis, "x")), RejectKind::Invalid);
    fx.reject(
        send(Reply {
            entry_type: None,
            ..reply(EntryType::Framework, "x")
        }),
        RejectKind::Invalid,
    );
    fx.reject(
        send(reply(EntryType::Framework, "  \n")),
        RejectKind::Invalid,
    );

    // Round 1 is analysis: a proposal before any analysis is refused.
    fx.answer("supervisor", reply(EntryType::Framework, "framework"));
    fx.reject(
        Input::Result {
            worker_id: "backend-1".into(),
            turn: turn(1, Phase::Contribute, "backend", 1),
            reply: reply(EntryType::Proposal, "jump ahead"),
        },
        RejectKind::Invalid,
    );

    // A review needs a verdict, and an objection needs a concern.
    let (mut fx, _) = Fx::review(2);
    let review = |reply: Reply| Input::Result {
        worker_id: "backend-1".into(),
        turn: turn(1, Phase::Review, "backend", 1),
        reply,
    };
    fx.reject(review(reply(EntryType::Review, "hmm")), RejectKind::Invalid);
    fx.reject(
        review(Reply {
            concerns: vec![" ".into()],
            ..object("")
        }),
        RejectKind::Invalid,
    );
    fx.reject(
        review(reply(EntryType::Signoff, "signed")),
        RejectKind::Invalid,
    );
}

#[test]
fn invalid_session_specs_are_refused_with_a_reason() {
    type Breakage = (&'static str, fn(&mut SessionSpec));
    let cases: [Breakage; 7] = [
        ("empty task", |s| s.task = "  ".into()),
        ("no specialists", |s| s.specialists.clear()),
        ("supervisor listed", |s| {
            s.specialists.push("supervisor".into())
        }),
        ("role twice", |s| s.specialists.push("backend".into())),
        ("bad role name", |s| s.specialists.push("Back End".into())),
        ("zero rounds", |s| s.max_rounds = 0),
        ("too many rounds", |s| s.max_rounds = 101),
    ];
    assert_eq!(spec(1).validate(), Ok(()));
    for (what, break_it) in cases {
        let mut s = spec(1);
        break_it(&mut s);
        let err = s.validate().expect_err(what);
        assert_eq!(err.kind, RejectKind::Invalid, "{what}");
        assert!(!err.message.is_empty(), "{what}");
    }
}

#[test]
fn results_for_turns_that_are_not_current_are_stale() {
    let mut fx = Fx::contribute(3);
    let analysis = reply(EntryType::Analysis, "analysis");
    // The right worker, the wrong round.
    fx.reject(
        Input::Result {
            worker_id: "backend-1".into(),
            turn: turn(2, Phase::Contribute, "backend", 1),
            reply: analysis.clone(),
        },
        RejectKind::Stale,
    );
    // The right round, a phase the session is not in.
    fx.reject(
        Input::Result {
            worker_id: "backend-1".into(),
            turn: turn(1, Phase::Review, "backend", 1),
            reply: approve(&proposal_hash("anything")),
        },
        RejectKind::Stale,
    );
    // An attempt that does not exist yet.
    fx.reject(
        Input::Result {
            worker_id: "backend-1".into(),
            turn: turn(1, Phase::Contribute, "backend", 2),
            reply: analysis.clone(),
        },
        RejectKind::Stale,
    );
    // The supervisor has no turn in CONTRIBUTE.
    fx.reject(
        Input::Result {
            worker_id: "supervisor-1".into(),
            turn: turn(1, Phase::Contribute, "supervisor", 1),
            reply: analysis,
        },
        RejectKind::Stale,
    );
    // Assignments that would clash with existing ones: a role that is held, and a
    // worker that already holds another role.
    fx.reject(
        Input::Assign {
            role: "backend".into(),
            worker_id: "backend-2".into(),
            key: None,
        },
        RejectKind::Stale,
    );
    fx.apply(Input::WorkerLost {
        worker_id: "backend-1".into(),
    })
    .unwrap();
    fx.reject(
        Input::Assign {
            role: "backend".into(),
            worker_id: "security-1".into(),
            key: None,
        },
        RejectKind::Stale,
    );
}

#[test]
fn an_approval_naming_another_hash_is_stale() {
    let (mut fx, v1) = Fx::review(2);
    for wrong in [
        String::new(),
        proposal_hash("proposal v0"),
        v1.to_uppercase(),
    ] {
        fx.reject(
            Input::Result {
                worker_id: "security-1".into(),
                turn: turn(1, Phase::Review, "security", 1),
                reply: approve(&wrong),
            },
            RejectKind::Stale,
        );
    }
    // The correct hash from the same worker for the same turn is then accepted.
    fx.answer("security", approve(&v1));
}

#[test]
fn senders_without_a_right_to_the_turn_are_not_assigned() {
    let mut fx = Fx::framing(2);
    let framework = reply(EntryType::Framework, "framework");
    // A worker that holds no role, and a worker that holds another role.
    for intruder in ["supervisor-2", "backend-1"] {
        fx.reject(
            Input::Result {
                worker_id: intruder.into(),
                turn: turn(0, Phase::Framing, "supervisor", 1),
                reply: framework.clone(),
            },
            RejectKind::NotAssigned,
        );
    }
    // A role that is not part of the session, for the current phase.
    fx.reject(
        Input::Result {
            worker_id: "frontend-1".into(),
            turn: turn(0, Phase::Framing, "frontend", 1),
            reply: framework.clone(),
        },
        RejectKind::NotAssigned,
    );
    fx.reject(
        Input::Assign {
            role: "frontend".into(),
            worker_id: "frontend-1".into(),
            key: None,
        },
        RejectKind::NotAssigned,
    );
    fx.reject(
        Input::TurnFailed {
            worker_id: "supervisor-2".into(),
            turn: turn(0, Phase::Framing, "supervisor", 1),
            reason: "not mine".into(),
        },
        RejectKind::NotAssigned,
    );

    // Once answered, the turn belongs to its author: another worker re-sending it is
    // refused, not acknowledged as a duplicate.
    fx.answer("supervisor", framework.clone());
    fx.reject(
        Input::Result {
            worker_id: "supervisor-2".into(),
            turn: turn(0, Phase::Framing, "supervisor", 1),
            reply: framework,
        },
        RejectKind::NotAssigned,
    );
}

#[test]
fn content_over_the_limit_is_too_large() {
    let mut fx = Fx::contribute(2);
    let at_limit = "a".repeat(MAX_CONTENT);
    let over = "a".repeat(MAX_CONTENT + 1);
    let rejection = fx.reject(
        Input::Result {
            worker_id: "backend-1".into(),
            turn: turn(1, Phase::Contribute, "backend", 1),
            reply: reply(EntryType::Analysis, &over),
        },
        RejectKind::TooLarge,
    );
    assert!(
        rejection.message.contains(&MAX_CONTENT.to_string()),
        "{rejection}"
    );
    // Exactly at the limit is fine.
    fx.answer("backend", reply(EntryType::Analysis, &at_limit));
    assert_eq!(fx.s.transcript().last().unwrap().content, at_limit);
    // Size is checked before anything else: even a re-send of an accepted turn.
    fx.reject(
        Input::Result {
            worker_id: "backend-1".into(),
            turn: turn(1, Phase::Contribute, "backend", 1),
            reply: reply(EntryType::Analysis, &over),
        },
        RejectKind::TooLarge,
    );
}

#[test]
fn an_entry_that_fits_the_content_limit_but_not_the_store_is_too_large() {
    // Control characters are 1 byte each in the content but 6 once JSON-escaped.
    let mut fx = Fx::contribute(2);
    let escaped = "\u{1}".repeat(MAX_CONTENT);
    let rejection = fx.reject(
        Input::Result {
            worker_id: "backend-1".into(),
            turn: turn(1, Phase::Contribute, "backend", 1),
            reply: reply(EntryType::Analysis, &escaped),
        },
        RejectKind::TooLarge,
    );
    assert!(rejection.message.contains("as stored"), "{rejection}");
    // Every field counts: a review's concerns are not limited by the content check.
    let (mut fx, hash) = Fx::review(2);
    let _ = hash;
    let concerns = Reply {
        concerns: vec!["x".repeat(MAX_CONTENT); 40],
        ..object("unused")
    };
    fx.reject(
        Input::Result {
            worker_id: "backend-1".into(),
            turn: turn(1, Phase::Review, "backend", 1),
            reply: concerns,
        },
        RejectKind::TooLarge,
    );
    // And the signature.
    let signed = Reply {
        signature: vec![255; MAX_STORED],
        ..approve(&proposal_hash("proposal v1"))
    };
    fx.reject(
        Input::Result {
            worker_id: "backend-1".into(),
            turn: turn(1, Phase::Review, "backend", 1),
            reply: signed,
        },
        RejectKind::TooLarge,
    );
    // An entry whose JSON fits exactly is taken: the check is exact, not a bound.
    fx.answer("backend", approve(&proposal_hash("proposal v1")));
    let stored = serde_json::to_vec(fx.s.transcript().last().unwrap())
        .unwrap()
        .len();
    assert!(stored < MAX_STORED);
    assert!(!fx.s.transcript().last().unwrap().stored_len_exceeds(stored));
    assert!(
        fx.s.transcript()
            .last()
            .unwrap()
            .stored_len_exceeds(stored - 1)
    );
}

#[test]
fn an_abort_fails_the_session_with_its_reason_and_releases_every_worker() {
    let mut fx = Fx::contribute(2);
    let applied = fx
        .apply(Input::Abort {
            reason: "the store refused the session's data".into(),
        })
        .expect("an abort is accepted while the session runs");
    assert_eq!(fx.s.status(), Status::Failed);
    assert_eq!(
        fx.s.summary().reason,
        "the store refused the session's data"
    );
    assert_eq!(released(&applied), all_workers());
    // Ended: everything else is refused or ignored, and nothing changes.
    fx.reject(
        Input::Abort {
            reason: "again".into(),
        },
        RejectKind::Stale,
    );
    fx.reject(
        Input::Assign {
            role: "backend".into(),
            worker_id: "backend-2".into(),
            key: None,
        },
        RejectKind::Stale,
    );
    let summary = fx.s.summary();
    assert_eq!(fx.tick_at(fx.now + 1_000_000).effects, vec![]);
    assert_eq!(fx.s.summary(), summary);
}

#[test]
fn a_duplicate_result_is_acknowledged_with_its_first_seq_and_changes_nothing() {
    let mut fx = Fx::contribute(2);
    let t = turn(1, Phase::Contribute, "backend", 1);
    let analysis = reply(EntryType::Analysis, "token bucket");
    let first = fx.send("backend-1", t.clone(), analysis.clone()).unwrap();
    let transcript = fx.s.transcript().to_vec();
    let summary = fx.s.summary();

    let again = fx.send("backend-1", t.clone(), analysis.clone()).unwrap();
    assert!(again.duplicate);
    assert_eq!(again.seq, first.seq);
    assert!(again.effects.is_empty());
    assert_eq!(fx.s.transcript(), &transcript[..]);
    assert_eq!(fx.s.summary(), summary);

    // Still acknowledged after the session has ended: a worker retrying a lost
    // acknowledgement must not be told its accepted work failed.
    fx.apply(Input::Cancel {
        reason: "done".into(),
    })
    .unwrap();
    let late = fx.send("backend-1", t, analysis).unwrap();
    assert!(late.duplicate);
    assert_eq!(late.seq, first.seq);
}

// -------------------------------------------------------------------------------------
// Time
// -------------------------------------------------------------------------------------

#[test]
fn pending_times_out_naming_the_missing_role() {
    let mut fx = Fx::pending(2);
    fx.assign("supervisor", "supervisor-1");
    fx.assign("security", "security-1");

    // Just before the deadline nothing happens.
    let applied = fx.tick_at(T0 + PENDING_TIMEOUT - 1);
    assert!(applied.effects.is_empty());
    assert_eq!(fx.s.status(), Status::Pending);

    let applied = fx.tick_at(T0 + PENDING_TIMEOUT);
    let summary = fx.s.summary();
    assert_eq!(summary.status, Status::Failed);
    assert!(summary.reason.contains("backend"), "{}", summary.reason);
    assert!(!summary.reason.contains("security"), "{}", summary.reason);
    assert!(!summary.reason.contains("supervisor"), "{}", summary.reason);
    assert_eq!(released(&applied), vec!["security-1", "supervisor-1"]);
    assert_eq!(fx.s.next_deadline(), None);
}

#[test]
fn each_phase_gets_its_own_deadline() {
    let mut fx = Fx::framing(2);
    let framing_deadline = fx.s.next_deadline().unwrap();
    fx.now = framing_deadline - 1;
    fx.answer("supervisor", reply(EntryType::Framework, "framework"));
    // CONTRIBUTE started at `now`: the old deadline no longer applies.
    let contribute_deadline = fx.s.next_deadline().unwrap();
    assert_eq!(contribute_deadline, fx.now + PHASE_TIMEOUT);
    assert!(fx.tick_at(framing_deadline + 1).effects.is_empty());
    assert_eq!(fx.s.status(), Status::Contribute);

    fx.answer("backend", reply(EntryType::Analysis, "analysis"));
    fx.tick_at(contribute_deadline);
    let reason = fx.s.summary().reason;
    assert_eq!(fx.s.status(), Status::Failed);
    // The silent role is named; the one that answered is not.
    assert!(reason.contains("security"), "{reason}");
    assert!(!reason.contains("backend"), "{reason}");
}

// -------------------------------------------------------------------------------------
// Lost workers
// -------------------------------------------------------------------------------------

#[test]
fn a_worker_lost_mid_turn_is_replaced_under_a_new_attempt() {
    let mut fx = Fx::contribute(2);
    let old = turn(1, Phase::Contribute, "backend", 1);
    let late = reply(EntryType::Analysis, "late analysis");

    let applied = fx
        .apply(Input::WorkerLost {
            worker_id: "backend-1".into(),
        })
        .unwrap();
    assert_eq!(
        applied.effects,
        vec![Effect::NeedWorker {
            role: "backend".into()
        }]
    );
    assert_eq!(fx.s.assignments().get("backend"), None);
    // The lost worker's attempt is retired at once.
    let retired_to = fx.s.awaited_turn("backend").unwrap();
    assert!(retired_to.attempt > old.attempt);

    // Its late result is refused: it no longer holds the role.
    fx.reject(
        Input::Result {
            worker_id: "backend-1".into(),
            turn: old.clone(),
            reply: late.clone(),
        },
        RejectKind::NotAssigned,
    );

    // The replacement receives the turn under the current attempt.
    let applied = fx.assign("backend", "backend-2");
    let current = fx.s.awaited_turn("backend").unwrap();
    assert!(current.attempt > old.attempt);
    assert_eq!(
        Fx::dispatches(&applied),
        vec![("backend-2".into(), current.clone())]
    );
    // Neither the old attempt (even from the new holder) nor the old worker is accepted.
    fx.reject(
        Input::Result {
            worker_id: "backend-2".into(),
            turn: old.clone(),
            reply: late.clone(),
        },
        RejectKind::Stale,
    );
    fx.reject(
        Input::Result {
            worker_id: "backend-1".into(),
            turn: old,
            reply: late,
        },
        RejectKind::NotAssigned,
    );

    // The replacement's answer is accepted and carries its name.
    let applied = fx
        .send(
            "backend-2",
            current,
            reply(EntryType::Analysis, "fresh analysis"),
        )
        .unwrap();
    let entry = fx.s.transcript().last().unwrap();
    assert_eq!(applied.seq, Some(entry.seq));
    assert_eq!(
        (entry.worker_id.as_str(), entry.content.as_str()),
        ("backend-2", "fresh analysis")
    );
}

#[test]
fn a_reconnected_worker_cannot_answer_its_retired_attempt() {
    let mut fx = Fx::contribute(2);
    let old = turn(1, Phase::Contribute, "security", 1);
    fx.apply(Input::WorkerLost {
        worker_id: "security-1".into(),
    })
    .unwrap();
    // The same worker comes back and is assigned again before answering.
    let applied = fx.assign("security", "security-1");
    let (_, current) = Fx::dispatches(&applied).pop().expect("re-dispatched");
    assert!(current.attempt > old.attempt);
    // The answer to the pre-disconnect dispatch is stale; the new one is accepted.
    fx.reject(
        Input::Result {
            worker_id: "security-1".into(),
            turn: old,
            reply: reply(EntryType::Analysis, "from before"),
        },
        RejectKind::Stale,
    );
    fx.send(
        "security-1",
        current,
        reply(EntryType::Analysis, "from after"),
    )
    .unwrap();
}

#[test]
fn a_role_lost_between_its_turns_is_dispatched_once_a_replacement_arrives() {
    let mut fx = Fx::contribute(2);
    // The supervisor has no turn in CONTRIBUTE; losing it retires nothing.
    fx.apply(Input::WorkerLost {
        worker_id: "supervisor-1".into(),
    })
    .unwrap();
    assert_eq!(fx.s.awaited_turn("supervisor"), None);
    fx.answer("backend", reply(EntryType::Analysis, "a"));
    // SYNTHESIZE starts without a supervisor: nothing can be dispatched yet.
    let applied = fx.answer("security", reply(EntryType::Analysis, "b"));
    assert_eq!(fx.s.status(), Status::Synthesize);
    assert!(Fx::dispatches(&applied).is_empty(), "{:?}", applied.effects);
    // The replacement gets the synthesis.
    let applied = fx.assign("supervisor", "supervisor-2");
    let dispatched = Fx::dispatches(&applied);
    assert_eq!(dispatched.len(), 1);
    assert_eq!(dispatched[0].0, "supervisor-2");
    assert_eq!(
        Some(&dispatched[0].1),
        fx.s.awaited_turn("supervisor").as_ref()
    );
    fx.answer("supervisor", reply(EntryType::Proposal, "v1"));
    assert_eq!(fx.s.status(), Status::Review);
}

#[test]
fn a_worker_the_session_does_not_use_can_be_lost_without_effect() {
    let mut fx = Fx::contribute(2);
    let summary = fx.s.summary();
    let applied = fx
        .apply(Input::WorkerLost {
            worker_id: "backend-2".into(),
        })
        .unwrap();
    assert!(applied.effects.is_empty());
    assert_eq!(fx.s.summary(), summary);
}

#[test]
fn without_a_replacement_the_phase_fails_at_its_deadline_naming_the_role() {
    let mut fx = Fx::contribute(2);
    let deadline = fx.s.next_deadline().unwrap();
    fx.apply(Input::WorkerLost {
        worker_id: "backend-1".into(),
    })
    .unwrap();
    fx.answer("security", reply(EntryType::Analysis, "security analysis"));

    // Losing a worker does not extend the phase, and nothing fails before the deadline.
    assert_eq!(fx.s.next_deadline(), Some(deadline));
    assert!(fx.tick_at(deadline - 1).effects.is_empty());
    assert_eq!(fx.s.status(), Status::Contribute);

    let applied = fx.tick_at(deadline);
    let summary = fx.s.summary();
    assert_eq!(summary.status, Status::Failed);
    assert!(summary.reason.contains("backend"), "{}", summary.reason);
    assert!(!summary.reason.contains("security"), "{}", summary.reason);
    // Only the workers still holding a role are released.
    assert_eq!(released(&applied), vec!["security-1", "supervisor-1"]);
}

// -------------------------------------------------------------------------------------
// Cancellation and worker-reported failures
// -------------------------------------------------------------------------------------

#[test]
fn cancellation_ends_the_session_for_good() {
    let (mut fx, v1) = Fx::review(2);
    fx.answer("backend", approve(&v1));
    let entries = fx.s.transcript().len();

    let applied = fx
        .apply(Input::Cancel {
            reason: "client went away".into(),
        })
        .unwrap();
    assert_eq!(
        applied.effects[0],
        Effect::StatusChanged {
            status: Status::Cancelled,
            round: 1
        }
    );
    assert_eq!(released(&applied), all_workers());
    let summary = fx.s.summary();
    assert_eq!(summary.status, Status::Cancelled);
    assert_eq!(summary.reason, "client went away");
    assert_eq!(fx.s.next_deadline(), None);

    // Nothing gets the session out of CANCELLED, and nothing is appended.
    fx.reject(
        Input::Cancel {
            reason: String::new(),
        },
        RejectKind::Stale,
    );
    fx.reject(
        Input::Result {
            worker_id: "security-1".into(),
            turn: turn(1, Phase::Review, "security", 1),
            reply: approve(&v1),
        },
        RejectKind::Stale,
    );
    fx.reject(
        Input::Assign {
            role: "backend".into(),
            worker_id: "backend-2".into(),
            key: None,
        },
        RejectKind::Stale,
    );
    fx.reject(
        Input::TurnFailed {
            worker_id: "security-1".into(),
            turn: turn(1, Phase::Review, "security", 1),
            reason: "too late".into(),
        },
        RejectKind::Stale,
    );
    let applied = fx.tick_at(fx.now + 10 * PHASE_TIMEOUT);
    assert!(applied.effects.is_empty());
    let applied = fx
        .apply(Input::WorkerLost {
            worker_id: "security-1".into(),
        })
        .unwrap();
    assert!(applied.effects.is_empty());
    assert_eq!(fx.s.summary(), summary);
    assert_eq!(fx.s.transcript().len(), entries);
}

#[test]
fn a_cancellation_without_a_reason_still_records_one() {
    let mut fx = Fx::pending(1);
    fx.apply(Input::Cancel {
        reason: String::new(),
    })
    .unwrap();
    assert_eq!(fx.s.status(), Status::Cancelled);
    assert!(!fx.s.summary().reason.is_empty());
}

#[test]
fn a_failed_turn_is_retried_up_to_max_turn_attempts() {
    let mut fx = Fx::framing(2);
    let fail = |attempt: u32| Input::TurnFailed {
        worker_id: "supervisor-1".into(),
        turn: turn(0, Phase::Framing, "supervisor", attempt),
        reason: format!("brain crashed on attempt {attempt}"),
    };

    // Failures 1 and 2 are retried, each under the next attempt, to the same worker.
    for attempt in 1..=2 {
        let applied = fx.apply(fail(attempt)).unwrap();
        assert_eq!(
            applied.effects,
            vec![Effect::Dispatch {
                worker_id: "supervisor-1".into(),
                turn: turn(0, Phase::Framing, "supervisor", attempt + 1),
                deadline_ms: fx.s.next_deadline().unwrap(),
            }]
        );
        assert_eq!(fx.s.status(), Status::Framing);
        // A report for the attempt just retired is stale and does not count: were it
        // counted, the second real failure would already end the session.
        fx.reject(fail(attempt), RejectKind::Stale);
    }

    // The third failure (max_turn_attempts = 3) gives up, naming the role.
    let applied = fx.apply(fail(3)).unwrap();
    let summary = fx.s.summary();
    assert_eq!(summary.status, Status::Failed);
    assert!(summary.reason.contains("supervisor"), "{}", summary.reason);
    assert!(
        summary.reason.contains("attempt 3"),
        "the last reason is kept: {}",
        summary.reason
    );
    assert_eq!(released(&applied), all_workers());
    assert!(fx.s.transcript().is_empty());
}

#[test]
fn a_retried_turn_can_still_succeed_and_the_next_phase_starts_afresh() {
    let mut fx = Fx::framing(2);
    for attempt in 1..=2 {
        fx.apply(Input::TurnFailed {
            worker_id: "supervisor-1".into(),
            turn: turn(0, Phase::Framing, "supervisor", attempt),
            reason: "flaky".into(),
        })
        .unwrap();
    }
    // The old attempt's answer is stale; the retry's is accepted.
    fx.reject(
        Input::Result {
            worker_id: "supervisor-1".into(),
            turn: turn(0, Phase::Framing, "supervisor", 1),
            reply: reply(EntryType::Framework, "framework"),
        },
        RejectKind::Stale,
    );
    fx.answer("supervisor", reply(EntryType::Framework, "framework"));
    assert_eq!(fx.s.status(), Status::Contribute);

    // Two failures in FRAMING do not count against the supervisor's later turns.
    fx.answer("backend", reply(EntryType::Analysis, "a"));
    fx.answer("security", reply(EntryType::Analysis, "b"));
    assert_eq!(
        fx.s.awaited_turn("supervisor"),
        Some(turn(1, Phase::Synthesize, "supervisor", 1))
    );
    for attempt in 1..=2 {
        fx.apply(Input::TurnFailed {
            worker_id: "supervisor-1".into(),
            turn: turn(1, Phase::Synthesize, "supervisor", attempt),
            reason: "flaky".into(),
        })
        .unwrap();
        assert_eq!(fx.s.status(), Status::Synthesize);
    }
}

/// A result verified on the way in carries proof of it, so the session only compares;
/// the proof counts for exactly the statement, signature and key it was made for, and a
/// result whose proof covers anything else is verified in full and refused.
#[test]
fn a_proof_of_verification_counts_only_for_what_it_covers() {
    use agentmesh_core::trust::{reply_statement, testing::key_of};
    let mut fx = Fx::contribute(3);
    let turn = fx.s.awaited_turn("backend").unwrap();
    let statement_of = |reply: &Reply| reply_statement("s1", &turn, "", reply);
    let honest = key_of(&worker("backend"));
    let verifier = honest.public().verifier().unwrap();

    // The proof of one reply, attached to a reply that says something else.
    let said = reply(EntryType::Analysis, "what was signed");
    let signature = honest.sign(&statement_of(&said));
    let proof = verifier.verify(&statement_of(&said), &signature).unwrap();
    let altered = Reply {
        signature: signature.clone(),
        verified: Some(proof),
        ..reply(EntryType::Analysis, "what is claimed")
    };
    let why = fx.reject(
        Input::Result {
            worker_id: worker("backend"),
            turn: turn.clone(),
            reply: altered,
        },
        RejectKind::BadSignature,
    );
    assert!(why.message.contains("does not verify"), "{}", why.message);

    // An intruder's own valid proof, over the right statement, under the wrong key.
    let intruder = key_of("intruder");
    let claimed = reply(EntryType::Analysis, "what was signed");
    let foreign = intruder.sign(&statement_of(&claimed));
    let foreign_proof = intruder
        .public()
        .verifier()
        .unwrap()
        .verify(&statement_of(&claimed), &foreign)
        .unwrap();
    fx.reject(
        Input::Result {
            worker_id: worker("backend"),
            turn: turn.clone(),
            reply: Reply {
                signature: foreign,
                verified: Some(foreign_proof),
                ..claimed
            },
        },
        RejectKind::BadSignature,
    );

    // The proof with the reply and signature it was made for is accepted.
    let applied = fx
        .send(
            &worker("backend"),
            turn,
            Reply {
                signature,
                verified: Some(proof),
                ..said
            },
        )
        .expect("a proven result is accepted");
    assert!(!applied.duplicate);
    assert_eq!(fx.s.transcript().last().unwrap().content, "what was signed");
}
