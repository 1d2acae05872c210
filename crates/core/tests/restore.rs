//! `Session::restore` rebuilds a session from any prefix of its transcript, exactly as
//! a standby coordinator does after a failover: same status, round, transcript, proposal
//! and objections; no worker held; and the restored session runs on to the same outcome.

use agentmesh_core::trust::testing::ApplySigned;
use agentmesh_core::{
    Effect, Entry, EntryType, Input, Phase, Reply, Session, SessionConfig, SessionSpec, Status,
    Verdict,
};

fn spec(max_rounds: u32) -> SessionSpec {
    SessionSpec {
        id: "s1".into(),
        task: "Design a ledger".into(),
        specialists: vec!["backend".into(), "security".into()],
        max_rounds,
    }
}

/// Whether `role` approves in `round`.
type Policy = fn(&str, u32) -> bool;

/// Answers every dispatched turn (worker ids carry a generation, so a restored session's
/// new workers differ from the old ones) and returns the final effects' dispatches.
fn answer_all(
    session: &mut Session,
    mut pending: Vec<Effect>,
    generation: u32,
    policy: Policy,
    clock: &mut i64,
) -> Vec<Effect> {
    let mut seen = Vec::new();
    let mut steps = 0;
    while !session.status().is_terminal() {
        steps += 1;
        assert!(steps < 200, "runaway session");
        let mut next = Vec::new();
        seen.extend(pending.iter().cloned());
        for effect in pending.drain(..) {
            match effect {
                Effect::NeedWorker { role } => {
                    let worker_id = format!("{role}-g{generation}");
                    *clock += 1;
                    next.extend(
                        session
                            .apply_signed(
                                *clock,
                                Input::Assign {
                                    role,
                                    worker_id,
                                    key: None,
                                },
                            )
                            .expect("assign")
                            .effects,
                    );
                }
                Effect::Dispatch {
                    worker_id, turn, ..
                } => {
                    *clock += 1;
                    let (entry_type, verdict, concerns, hash) = match turn.phase {
                        Phase::Framing => (EntryType::Framework, None, vec![], String::new()),
                        Phase::Contribute if turn.round == 1 => {
                            (EntryType::Analysis, None, vec![], String::new())
                        }
                        Phase::Contribute => (EntryType::Proposal, None, vec![], String::new()),
                        Phase::Synthesize => (EntryType::Proposal, None, vec![], String::new()),
                        Phase::Review => {
                            let (_, hash) = session.current_proposal().expect("proposal");
                            if policy(&turn.role, turn.round) {
                                (
                                    EntryType::Review,
                                    Some(Verdict::Approve),
                                    vec![],
                                    hash.to_string(),
                                )
                            } else {
                                let concern =
                                    format!("{} wants more in round {}", turn.role, turn.round);
                                (
                                    EntryType::Review,
                                    Some(Verdict::Object),
                                    vec![concern],
                                    String::new(),
                                )
                            }
                        }
                    };
                    let reply = Reply {
                        entry_type: Some(entry_type),
                        content: format!("{} says {} r{}", turn.role, turn.phase, turn.round),
                        verdict,
                        concerns,
                        proposal_hash: hash,
                        ..Reply::default()
                    };
                    let applied = session
                        .apply_signed(
                            *clock,
                            Input::Result {
                                worker_id,
                                turn,
                                reply,
                            },
                        )
                        .expect("accepted");
                    next.extend(applied.effects);
                }
                _ => {}
            }
        }
        if next.is_empty() {
            break;
        }
        pending = next;
    }
    seen.extend(pending);
    seen
}

/// Runs a whole session, recording the transcript.
fn full_run(max_rounds: u32, policy: Policy) -> (Session, Vec<Entry>) {
    let (mut session, effects) = Session::new(spec(max_rounds), SessionConfig::default(), 1_000);
    let mut clock = 1_000;
    let _ = answer_all(&mut session, effects, 1, policy, &mut clock);
    let transcript = session.transcript().to_vec();
    (session, transcript)
}

const POLICIES: [(&str, Policy); 4] = [
    ("all approve at once", |_, _| true),
    ("security objects once", |role, round| {
        role != "security" || round >= 2
    }),
    ("backend objects twice", |role, round| {
        role != "backend" || round >= 3
    }),
    ("security never approves", |role, _| role != "security"),
];

#[test]
fn every_prefix_restores_to_the_same_state_and_runs_to_the_same_outcome() {
    for (name, policy) in POLICIES {
        let (original, transcript) = full_run(3, policy);
        let outcome = original.summary();
        assert!(outcome.status.is_terminal(), "{name}");
        for k in 0..=transcript.len() {
            let prefix = &transcript[..k];
            let (mut restored, effects) =
                Session::restore(spec(3), SessionConfig::default(), 1_000, prefix, 50_000)
                    .unwrap_or_else(|e| panic!("{name}: prefix {k}: {e}"));
            assert_eq!(restored.transcript(), prefix, "{name}: prefix {k}");
            assert!(
                restored.assignments().is_empty(),
                "{name}: nobody holds a role after restore"
            );
            if restored.status().is_terminal() {
                assert_eq!(
                    k,
                    transcript.len(),
                    "{name}: only the whole transcript is terminal"
                );
                assert_eq!(restored.summary().status, outcome.status);
                assert_eq!(restored.summary().final_hash, outcome.final_hash);
                assert_eq!(restored.summary().open_objections, outcome.open_objections);
                continue;
            }
            let needed: Vec<&str> = effects
                .iter()
                .filter_map(|e| match e {
                    Effect::NeedWorker { role } => Some(role.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(
                needed,
                ["supervisor", "backend", "security"],
                "{name}: prefix {k}"
            );
            assert_eq!(
                restored.next_deadline(),
                Some(50_000 + 60_000),
                "a fresh timeout"
            );
            // New workers take over and the session ends exactly as the original did.
            let mut clock = 60_000;
            let _ = answer_all(&mut restored, effects, 2, policy, &mut clock);
            let end = restored.summary();
            assert_eq!(end.status, outcome.status, "{name}: prefix {k}");
            assert_eq!(end.round, outcome.round, "{name}: prefix {k}");
            assert_eq!(end.final_hash, outcome.final_hash, "{name}: prefix {k}");
            assert_eq!(
                end.open_objections, outcome.open_objections,
                "{name}: prefix {k}"
            );
            assert_eq!(
                restored.transcript().len(),
                transcript.len(),
                "{name}: prefix {k}"
            );
            for (a, b) in restored.transcript().iter().zip(&transcript) {
                assert_eq!(
                    (a.seq, a.round, a.phase, &a.role, &a.content),
                    (b.seq, b.round, b.phase, &b.role, &b.content)
                );
            }
        }
    }
}

#[test]
fn a_late_result_from_the_old_coordinators_worker_is_stale_after_restore() {
    let (_, transcript) = full_run(3, POLICIES[1].1);
    // Cut inside round 1 CONTRIBUTE: the framework and one analysis are persisted.
    let prefix = &transcript[..2];
    let (mut restored, effects) =
        Session::restore(spec(3), SessionConfig::default(), 1_000, prefix, 50_000).unwrap();
    assert_eq!(restored.status(), Status::Contribute);
    for effect in effects {
        if let Effect::NeedWorker { role } = effect {
            restored
                .apply_signed(
                    50_001,
                    Input::Assign {
                        worker_id: format!("{role}-new"),
                        key: None,
                        role,
                    },
                )
                .unwrap();
        }
    }
    let open = restored
        .awaiting()
        .next()
        .map(str::to_string)
        .expect("one specialist still owes its analysis");
    let mut old_turn = restored.awaited_turn(&open).unwrap();
    old_turn.attempt = 1;
    let late = restored.apply_signed(
        50_002,
        Input::Result {
            worker_id: format!("{open}-new"),
            turn: old_turn,
            reply: Reply {
                entry_type: Some(EntryType::Analysis),
                content: "late".into(),
                ..Reply::default()
            },
        },
    );
    assert!(
        late.is_err(),
        "attempt 1 belonged to the old coordinator's dispatch"
    );
}

#[test]
fn a_transcript_the_rules_could_not_produce_is_refused() {
    let (_, transcript) = full_run(3, POLICIES[0].1);
    let mut swapped = transcript.clone();
    swapped.swap(0, 1);
    assert!(Session::restore(spec(3), SessionConfig::default(), 1_000, &swapped, 9).is_err());

    let mut forged = transcript.clone();
    let review = forged
        .iter_mut()
        .find(|e| e.verdict == Some(Verdict::Approve))
        .unwrap();
    review.proposal_hash = "0".repeat(64);
    let err = Session::restore(spec(3), SessionConfig::default(), 1_000, &forged, 9).unwrap_err();
    assert!(err.contains("cannot be replayed"), "{err}");

    let mut gap = transcript;
    gap.remove(3);
    assert!(Session::restore(spec(3), SessionConfig::default(), 1_000, &gap, 9).is_err());
}

/// Found by the `core_session` fuzz target: a transcript the rules produced did not
/// restore when an entry's worker held another role in the replay, because it is named
/// like a restore placeholder (`restored:<role>`: worker ids are the workers' own), or
/// because it held another role before it left and came back as this one.
#[test]
fn an_entry_whose_worker_holds_another_role_in_the_replay_restores() {
    let spec = || SessionSpec {
        id: "s1".into(),
        task: "Design a ledger".into(),
        specialists: vec!["backend".into(), "security".into()],
        max_rounds: 1,
    };
    let assign = |s: &mut Session, role: &str, worker: &str| {
        s.apply_signed(
            1_000,
            Input::Assign {
                role: role.into(),
                worker_id: worker.into(),
                key: None,
            },
        )
        .unwrap()
    };
    let answer = |s: &mut Session, role: &str, worker: &str, ty: EntryType| {
        let turn = s.awaited_turn(role).unwrap();
        s.apply_signed(
            2_000,
            Input::Result {
                worker_id: worker.into(),
                turn,
                reply: Reply {
                    entry_type: Some(ty),
                    content: format!("{role} by {worker}"),
                    ..Reply::default()
                },
            },
        )
        .unwrap()
    };
    // The supervisor's worker is named like the backend's placeholder.
    let (mut s, _) = Session::new(spec(), SessionConfig::default(), 1_000);
    assign(&mut s, "supervisor", "restored:backend");
    assign(&mut s, "backend", "b1");
    assign(&mut s, "security", "s1");
    answer(
        &mut s,
        "supervisor",
        "restored:backend",
        EntryType::Framework,
    );
    answer(&mut s, "backend", "b1", EntryType::Analysis);
    // w1 answers as backend, leaves, and comes back as security.
    let (mut t, _) = Session::new(spec(), SessionConfig::default(), 1_000);
    assign(&mut t, "supervisor", "sup");
    assign(&mut t, "backend", "w1");
    assign(&mut t, "security", "s1");
    answer(&mut t, "supervisor", "sup", EntryType::Framework);
    answer(&mut t, "backend", "w1", EntryType::Analysis);
    t.apply_signed(
        2_000,
        Input::WorkerLost {
            worker_id: "w1".into(),
        },
    )
    .unwrap();
    t.apply_signed(
        2_000,
        Input::WorkerLost {
            worker_id: "s1".into(),
        },
    )
    .unwrap();
    assign(&mut t, "security", "w1");
    answer(&mut t, "security", "w1", EntryType::Analysis);
    assert_eq!(t.status(), Status::Synthesize);
    for original in [s, t] {
        let (restored, _) = Session::restore(
            spec(),
            SessionConfig::default(),
            1_000,
            original.transcript(),
            9_000,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(restored.transcript(), original.transcript());
        assert_eq!(restored.status(), original.status());
    }
}

/// Found by the `wire_conversions` fuzz target: a stored entry whose derived fields the
/// rules would have set otherwise (a proposal hash that is not its content's, a
/// timestamp before the previous entry's, a verdict on a contribution) replayed without
/// complaint, and the restored session held the rules' version of it, not the stored one.
#[test]
fn a_stored_entry_the_replay_would_rewrite_is_refused() {
    let (_, transcript) = full_run(3, POLICIES[1].1);
    assert!(Session::restore(spec(3), SessionConfig::default(), 1_000, &transcript, 9).is_ok());
    let synthesis = transcript
        .iter()
        .position(|e| e.phase == Phase::Synthesize)
        .unwrap();
    let contribution = transcript
        .iter()
        .position(|e| e.phase == Phase::Contribute)
        .unwrap();
    type Forgery = fn(&mut Entry);
    let forgeries: [(&str, usize, Forgery); 4] = [
        ("proposal hash", synthesis, |e| {
            e.proposal_hash.replace_range(0..1, "x")
        }),
        ("proposal version", synthesis, |e| e.proposal_version += 1),
        ("timestamp", 2, |e| e.timestamp_ms = 0),
        ("verdict on a contribution", contribution, |e| {
            e.verdict = Some(Verdict::Approve)
        }),
    ];
    for (what, at, forge) in forgeries {
        let mut stored = transcript.clone();
        forge(&mut stored[at]);
        let err =
            Session::restore(spec(3), SessionConfig::default(), 1_000, &stored, 9).expect_err(what);
        assert!(
            err.contains(&format!("entry {}", stored[at].seq)),
            "{what}: {err}"
        );
    }
}

/// What a watcher saw: entries and status changes, in order.
fn watched(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Appended(entry) => Some(format!("entry {}", entry.seq)),
            Effect::StatusChanged { status, round } => Some(format!("{status} r{round}")),
            _ => None,
        })
        .collect()
}

#[test]
fn the_replayed_history_is_the_event_sequence_watchers_saw() {
    for (name, policy) in POLICIES {
        let (mut session, effects) = Session::new(spec(3), SessionConfig::default(), 1_000);
        let mut clock = 1_000;
        let original = answer_all(&mut session, effects, 1, policy, &mut clock);
        let (_, _, history) = Session::restore_with_history(
            spec(3),
            SessionConfig::default(),
            1_000,
            session.transcript(),
            clock,
        )
        .unwrap();
        assert_eq!(watched(&history), watched(&original), "{name}");
    }
}

/// A new leader refuses a store whose transcript was altered (issue 13): a changed field
/// of a signed entry, an entry whose chain hash does not follow, a removed signature, a
/// signature by another key, and entries swapped — each refused, naming the entry.
#[test]
fn a_tampered_stored_transcript_is_refused_on_restore() {
    let (_, transcript) = full_run(3, POLICIES[1].1);
    let restore = |entries: &[agentmesh_core::Entry]| {
        Session::restore(spec(3), SessionConfig::default(), 1_000, entries, 50_000)
            .map(|_| ())
            .unwrap_err()
    };
    assert!(
        Session::restore(
            spec(3),
            SessionConfig::default(),
            1_000,
            &transcript,
            50_000
        )
        .is_ok()
    );
    let mut changed = transcript.clone();
    changed[2].content.push('!');
    let why = restore(&changed);
    assert!(
        why.contains("entry 3") && why.contains("signature does not verify"),
        "{why}"
    );
    let mut rechained = transcript.clone();
    rechained[2].chain_hash.0[0] ^= 1;
    let why = restore(&rechained);
    assert!(
        why.contains("entry 3") && why.contains("chain hash"),
        "{why}"
    );
    let mut unsigned = transcript.clone();
    unsigned[2].signature.clear();
    let why = restore(&unsigned);
    assert!(
        why.contains("entry 3") && why.contains("no signature"),
        "{why}"
    );
    let mut foreign = transcript.clone();
    foreign[2].signature = agentmesh_core::trust::testing::key_of("intruder").sign(b"x");
    let why = restore(&foreign);
    assert!(
        why.contains("entry 3") && why.contains("does not verify"),
        "{why}"
    );
    // An unsigned field (the timestamp) is covered by the chain.
    let mut retimed = transcript.clone();
    retimed[2].timestamp_ms += 1;
    let why = restore(&retimed);
    assert!(why.contains("entry 3"), "{why}");
    let mut swapped = transcript.clone();
    swapped.swap(1, 2);
    assert!(
        restore(&swapped).contains("entry"),
        "swapped entries are refused"
    );
}
