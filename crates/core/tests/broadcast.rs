//! The broadcast (benchmark) mode: no supervisor, every round one CONTRIBUTE phase to
//! every specialist, COMPLETED after R rounds. Worked examples first, then a property
//! test over arbitrary orders of answers, duplicates, stale results and lost workers.

use agentmesh_core::trust::testing::ApplySigned;
use agentmesh_core::{
    Effect, EntryType, Input, Phase, RejectKind, Reply, SUPERVISOR, Session, SessionConfig,
    SessionMode, SessionSpec, SessionSummary, Status, TurnKey,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

const T0: i64 = 1_700_000_000_000;
const PHASE_TIMEOUT: i64 = 10_000;

fn config() -> SessionConfig {
    SessionConfig {
        phase_timeout_ms: PHASE_TIMEOUT,
        pending_timeout_ms: 5_000,
        max_turn_attempts: 3,
        max_content_bytes: 256,
        max_stored_entry_bytes: 1024 * 1024,
        require_signatures: true,
    }
}

fn roles(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("b{i}")).collect()
}

fn spec(n: usize) -> SessionSpec {
    SessionSpec {
        id: "bench-1".into(),
        task: "broadcast".into(),
        specialists: roles(n),
        max_rounds: 4,
    }
}

fn worker(role: &str) -> String {
    format!("{role}-w")
}

fn turn(round: u32, role: &str, attempt: u32) -> TurnKey {
    TurnKey {
        round,
        phase: Phase::Contribute,
        role: role.into(),
        attempt,
    }
}

/// The bench brain's answer: exactly 200 bytes, ANALYSIS in round 1, PROPOSAL later.
fn reply(round: u32) -> Reply {
    Reply {
        entry_type: Some(if round <= 1 {
            EntryType::Analysis
        } else {
            EntryType::Proposal
        }),
        content: "x".repeat(200),
        ..Reply::default()
    }
}

fn broadcast(n: usize, rounds: u32) -> (Session, Vec<Effect>) {
    Session::new_in(SessionMode::Broadcast { rounds }, spec(n), config(), T0)
}

fn assign_all(s: &mut Session, n: usize) -> Vec<Effect> {
    let mut effects = Vec::new();
    for role in roles(n) {
        let applied = s
            .apply_signed(
                T0,
                Input::Assign {
                    worker_id: worker(&role),
                    role,
                    key: None,
                },
            )
            .unwrap();
        effects.extend(applied.effects);
    }
    effects
}

fn answer(s: &mut Session, at: i64, round: u32, role: &str) -> Vec<Effect> {
    s.apply_signed(
        at,
        Input::Result {
            worker_id: worker(role),
            turn: turn(round, role, 1),
            reply: reply(round),
        },
    )
    .unwrap()
    .effects
}

#[test]
fn a_broadcast_session_has_no_supervisor_and_runs_its_rounds_to_completed() {
    let (mut s, effects) = broadcast(3, 2);
    assert_eq!(s.participants(), roles(3).as_slice());
    assert_eq!(
        effects,
        roles(3)
            .into_iter()
            .map(|role| Effect::NeedWorker { role })
            .collect::<Vec<_>>(),
        "a worker for every specialist, none for the supervisor"
    );
    assert_eq!(s.status(), Status::Pending);
    let rejected = s
        .apply_signed(
            T0,
            Input::Assign {
                role: SUPERVISOR.into(),
                worker_id: "sup".into(),
                key: None,
            },
        )
        .unwrap_err();
    assert_eq!(rejected.kind, RejectKind::NotAssigned);

    // All assigned: straight to CONTRIBUTE(1), one turn to every specialist.
    let effects = assign_all(&mut s, 3);
    let mut expected = vec![Effect::StatusChanged {
        status: Status::Contribute,
        round: 1,
    }];
    expected.extend(roles(3).iter().map(|role| Effect::Dispatch {
        worker_id: worker(role),
        turn: turn(1, role, 1),
        deadline_ms: T0 + PHASE_TIMEOUT,
    }));
    assert_eq!(effects, expected);

    // Two answers keep the phase open; the third opens CONTRIBUTE(2).
    assert!(matches!(
        answer(&mut s, T0 + 1, 1, "b1").as_slice(),
        [Effect::Appended(e)] if e.seq == 1 && e.entry_type == EntryType::Analysis
    ));
    answer(&mut s, T0 + 2, 1, "b0");
    let effects = answer(&mut s, T0 + 3, 1, "b2");
    assert_eq!(
        effects[1],
        Effect::StatusChanged {
            status: Status::Contribute,
            round: 2
        }
    );
    assert_eq!(effects.len(), 2 + 3, "appended, status, three dispatches");
    assert_eq!((s.status(), s.round()), (Status::Contribute, 2));

    // A round-1 answer sent again is an idempotent duplicate: nothing is appended.
    let stale = s
        .apply_signed(
            T0 + 4,
            Input::Result {
                worker_id: worker("b0"),
                turn: turn(1, "b0", 1),
                reply: reply(1),
            },
        )
        .unwrap();
    assert!(stale.duplicate, "an accepted turn resent is a duplicate");

    for role in ["b2", "b0"] {
        answer(&mut s, T0 + 5, 2, role);
    }
    let effects = answer(&mut s, T0 + 6, 2, "b1");
    assert_eq!(
        effects[1],
        Effect::StatusChanged {
            status: Status::Completed,
            round: 2
        }
    );
    let released: Vec<_> = effects
        .iter()
        .filter(|e| matches!(e, Effect::Release { .. }))
        .collect();
    assert_eq!(released.len(), 3, "every worker released");
    assert!(Status::Completed.is_terminal());
    assert_eq!(s.next_deadline(), None);

    let summary = s.summary();
    assert_eq!(summary.status, Status::Completed);
    assert_eq!(summary.reason, "completed 2 broadcast round(s)");
    assert_eq!(summary.broadcast_rounds, 2);
    assert_eq!(summary.entry_count, 6);
    assert_eq!(summary.roles, roles(3));
    assert_eq!(
        s.transcript().iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    // No exit from COMPLETED.
    let err = s
        .apply_signed(
            T0 + 7,
            Input::Cancel {
                reason: String::new(),
            },
        )
        .unwrap_err();
    assert_eq!(err.kind, RejectKind::Stale);
}

#[test]
fn a_broadcast_round_refuses_the_wrong_entry_type_and_times_out_like_any_phase() {
    let (mut s, _) = broadcast(2, 5);
    assign_all(&mut s, 2);
    let review = Reply {
        entry_type: Some(EntryType::Review),
        content: "x".into(),
        ..Reply::default()
    };
    let err = s
        .apply_signed(
            T0 + 1,
            Input::Result {
                worker_id: worker("b0"),
                turn: turn(1, "b0", 1),
                reply: review,
            },
        )
        .unwrap_err();
    assert_eq!(err.kind, RejectKind::Invalid);
    answer(&mut s, T0 + 2, 1, "b0");
    let effects = s.apply(T0 + PHASE_TIMEOUT, Input::Tick).unwrap().effects;
    assert_eq!(
        effects[0],
        Effect::StatusChanged {
            status: Status::Failed,
            round: 1
        }
    );
    assert!(s.summary().reason.contains("no answer from role(s) b1"));
}

#[test]
fn the_mode_is_validated_and_travels_in_the_header() {
    assert!(SessionMode::Broadcast { rounds: 0 }.validate().is_err());
    assert!(
        SessionMode::Broadcast {
            rounds: SessionMode::MAX_BROADCAST_ROUNDS + 1
        }
        .validate()
        .is_err()
    );
    assert!(SessionMode::Broadcast { rounds: 2000 }.validate().is_ok());
    assert!(SessionMode::Negotiation.validate().is_ok());
    assert_eq!(
        SessionMode::from_broadcast_rounds(0),
        SessionMode::Negotiation
    );
    assert_eq!(
        SessionMode::from_broadcast_rounds(7),
        SessionMode::Broadcast { rounds: 7 }
    );

    let (s, _) = broadcast(4, 9);
    let header = s.summary();
    assert_eq!(header.mode(), SessionMode::Broadcast { rounds: 9 });
    assert_eq!(header.spec(), spec(4), "no supervisor to skip");
    let json = serde_json::to_string(&header).unwrap();
    assert!(json.contains("\"broadcast_rounds\":9"), "{json}");
    let back: SessionSummary = serde_json::from_str(&json).unwrap();
    assert_eq!(back, header);

    let (n, _) = Session::new(spec(2), config(), T0);
    let header = n.summary();
    assert_eq!(header.mode(), SessionMode::Negotiation);
    assert_eq!(header.spec(), spec(2), "the supervisor is skipped");
    let json = serde_json::to_string(&header).unwrap();
    assert!(
        !json.contains("broadcast_rounds"),
        "a negotiation's header is unchanged: {json}"
    );
}

#[test]
fn a_broadcast_session_restores_from_its_transcript() {
    let (mut s, _) = broadcast(2, 3);
    assign_all(&mut s, 2);
    for (at, (round, role)) in [(1, "b0"), (1, "b1"), (2, "b1")].into_iter().enumerate() {
        answer(&mut s, T0 + at as i64, round, role);
    }
    let header = s.summary();
    let (restored, effects, history) = Session::restore_in(
        header.mode(),
        header.spec(),
        config(),
        T0,
        s.transcript(),
        T0 + 100,
    )
    .unwrap();
    assert_eq!(restored.transcript(), s.transcript());
    assert_eq!(
        (restored.status(), restored.round()),
        (Status::Contribute, 2)
    );
    assert_eq!(restored.awaiting().collect::<Vec<_>>(), ["b0"]);
    assert_eq!(effects.len(), 2, "a worker for each role");
    let statuses: Vec<_> = history
        .iter()
        .filter_map(|e| match e {
            Effect::StatusChanged { status, round } => Some((*status, *round)),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, [(Status::Contribute, 1), (Status::Contribute, 2)]);
    // The same transcript does not replay as a negotiation.
    assert!(
        Session::restore(spec(2), config(), T0, s.transcript(), T0 + 100).is_err(),
        "a negotiation starts with FRAMING"
    );
}

/// What the driver does next, chosen by proptest.
#[derive(Debug, Clone)]
enum Step {
    /// The awaited role `i % awaiting` answers.
    Answer(usize),
    /// A worker resends an answer it already gave.
    Duplicate(usize),
    /// The worker holding role `i % n` is lost and replaced by a fresh one.
    Replace(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => any::<usize>().prop_map(Step::Answer),
        1 => any::<usize>().prop_map(Step::Duplicate),
        1 => any::<usize>().prop_map(Step::Replace),
    ]
}

proptest! {
    /// Whatever the order of answers, duplicates and replacements: rounds advance only
    /// when every specialist answered, the transcript is gapless and round-ordered, every
    /// dispatch addresses the current round, and the session completes after exactly R
    /// rounds with N × R entries.
    #[test]
    fn broadcast_rounds_complete_in_order(
        n in 1usize..6,
        rounds in 1u32..6,
        steps in proptest::collection::vec(step(), 0..400),
    ) {
        let (mut s, _) = broadcast(n, rounds);
        let mut holder: BTreeMap<String, String> = BTreeMap::new();
        for role in roles(n) {
            holder.insert(role.clone(), worker(&role));
        }
        assign_all(&mut s, n);
        let mut now = T0;
        let mut generation = 0;
        let mut answered: Vec<(String, TurnKey)> = Vec::new();
        let mut steps = steps.into_iter();
        while !s.status().is_terminal() {
            now += 1;
            let next = steps.next().unwrap_or(Step::Answer(0));
            let awaiting: Vec<String> = s.awaiting().map(str::to_string).collect();
            let effects = match next {
                Step::Answer(i) => {
                    let role = &awaiting[i % awaiting.len()];
                    let Some(turn) = s.awaited_turn(role) else { continue };
                    let w = holder[role].clone();
                    let round = turn.round;
                    let applied = s.apply_signed(now, Input::Result {
                        worker_id: w.clone(),
                        turn: turn.clone(),
                        reply: reply(round),
                    }).unwrap();
                    prop_assert!(!applied.duplicate);
                    answered.push((w, turn));
                    applied.effects
                }
                Step::Duplicate(i) => {
                    if answered.is_empty() { continue; }
                    let (w, turn) = answered[i % answered.len()].clone();
                    let before = s.transcript().len();
                    match s.apply_signed(now, Input::Result { worker_id: w, turn: turn.clone(), reply: reply(turn.round) }) {
                        Ok(applied) => prop_assert!(applied.duplicate),
                        // The answering worker was replaced since: not its turn any more.
                        Err(r) => prop_assert_eq!(r.kind, RejectKind::NotAssigned),
                    }
                    prop_assert_eq!(s.transcript().len(), before);
                    Vec::new()
                }
                Step::Replace(i) => {
                    let role = roles(n)[i % n].clone();
                    let old = holder[&role].clone();
                    let lost = s.apply_signed(now, Input::WorkerLost { worker_id: old }).unwrap();
                    prop_assert_eq!(lost.effects, vec![Effect::NeedWorker { role: role.clone() }]);
                    generation += 1;
                    let fresh = format!("{role}-g{generation}");
                    holder.insert(role.clone(), fresh.clone());
                    s.apply_signed(now, Input::Assign { role, worker_id: fresh, key: None }).unwrap().effects
                }
            };
            for effect in &effects {
                if let Effect::Dispatch { worker_id, turn, .. } = effect {
                    prop_assert_eq!(turn.round, s.round());
                    prop_assert_eq!(turn.phase, Phase::Contribute);
                    prop_assert_eq!(&holder[&turn.role], worker_id);
                }
                if let Effect::StatusChanged { status, .. } = effect {
                    prop_assert!(matches!(status, Status::Contribute | Status::Completed));
                }
            }
            prop_assert!(s.round() <= rounds);
        }
        prop_assert_eq!(s.status(), Status::Completed);
        prop_assert_eq!(s.round(), rounds);
        let t = s.transcript();
        prop_assert_eq!(t.len(), n * rounds as usize);
        for (i, e) in t.iter().enumerate() {
            prop_assert_eq!(e.seq, i as u64 + 1);
            prop_assert_eq!(e.round, i as u32 / n as u32 + 1, "round-ordered");
            prop_assert!(e.role != SUPERVISOR);
        }
        prop_assert!(s.assignments().is_empty());
    }
}
