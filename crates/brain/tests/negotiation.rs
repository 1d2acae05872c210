//! In-process negotiations: the real `agentmesh_core::Session` driven by one
//! `ScriptedBrain` per role, with the driver's effects (NeedWorker, Dispatch) carried out
//! here. No network, zero think time, a fake clock that only moves when we move it.

use agentmesh_brain::catalogue::{self, Concern};
use agentmesh_brain::objection;
use agentmesh_brain::text::contains_normalized;
use agentmesh_brain::{Brain, BrainError, CONFLICT_TASK, DEMO_TASK, ScriptedBrain, TurnContext};
use agentmesh_core::trust::testing::{key_of, signed};
use agentmesh_core::{
    DEFAULT_SPECIALISTS, Effect, Entry, EntryType, Input, Phase, Session, SessionConfig,
    SessionSpec, Status, TurnKey, Verdict,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// 2026-09-21T00:00:00Z; every accepted input advances the fake clock by one second.
const T0: i64 = 1_790_000_000_000;

/// In which order the turns of one phase are answered.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Order {
    /// In dispatch order.
    Fifo,
    /// Last dispatched first: as if the network reordered every reply.
    Reversed,
}

struct Run {
    session: Session,
    /// Every effect the session produced, in order.
    effects: Vec<Effect>,
}

fn default_specialists() -> Vec<&'static str> {
    DEFAULT_SPECIALISTS.to_vec()
}

/// What a worker would hand its brain for `turn`, from the session state at dispatch.
fn context_for(session: &Session, turn: &TurnKey) -> TurnContext {
    let (proposal_version, proposal_hash) = match (turn.phase, session.current_proposal()) {
        (Phase::Review, Some((version, hash))) => (version, hash.to_string()),
        _ => (0, String::new()),
    };
    TurnContext {
        session_id: session.id().to_string(),
        task: session.spec().task.clone(),
        roles: session.participants().to_vec(),
        max_rounds: session.spec().max_rounds,
        role: turn.role.clone(),
        round: turn.round,
        phase: turn.phase,
        attempt: turn.attempt,
        transcript: session.transcript().to_vec().into(),
        proposal_version,
        proposal_hash,
    }
}

async fn negotiate(task: &str, specialists: &[&str], max_rounds: u32, order: Order) -> Run {
    let spec = SessionSpec {
        id: "sim-1".into(),
        task: task.into(),
        specialists: specialists.iter().map(|s| s.to_string()).collect(),
        max_rounds,
    };
    spec.validate().expect("a valid spec");
    let mut now = T0;
    let (mut session, initial) = Session::new(spec, SessionConfig::default(), now);
    let brains: BTreeMap<String, Arc<dyn Brain>> = session
        .participants()
        .iter()
        .map(|role| {
            let brain: Arc<dyn Brain> = Arc::new(ScriptedBrain::new(Duration::ZERO));
            (role.clone(), brain)
        })
        .collect();
    let mut effects: VecDeque<Effect> = initial.into();
    let mut log = Vec::new();
    let mut turns: VecDeque<(String, TurnKey, TurnContext)> = VecDeque::new();
    loop {
        while let Some(effect) = effects.pop_front() {
            log.push(effect.clone());
            match effect {
                Effect::NeedWorker { role } => {
                    now += 1000;
                    let worker_id = format!("w-{role}");
                    let applied = session
                        .apply(
                            now,
                            Input::Assign {
                                role,
                                key: Some(key_of(&worker_id).public()),
                                worker_id,
                            },
                        )
                        .expect("assignment accepted");
                    effects.extend(applied.effects);
                }
                Effect::Dispatch {
                    worker_id, turn, ..
                } => {
                    let ctx = context_for(&session, &turn);
                    turns.push_back((worker_id, turn, ctx));
                }
                Effect::Appended(_) | Effect::StatusChanged { .. } | Effect::Release { .. } => {}
            }
        }
        let next = match order {
            Order::Fifo => turns.pop_front(),
            Order::Reversed => turns.pop_back(),
        };
        let Some((worker_id, turn, ctx)) = next else {
            break;
        };
        let brain = &brains[&turn.role];
        assert_eq!(brain.name(), "scripted");
        let reply = brain.think(ctx).await.expect("the scripted brain answers");
        now += 1000;
        // Signed as a worker signs it: by its (test) key, over its turn.
        let input = signed(
            &session,
            Input::Result {
                worker_id,
                turn: turn.clone(),
                reply,
            },
        );
        let applied = session
            .apply(now, input)
            .unwrap_or_else(|r| panic!("the core refused the reply to {turn:?}: {r}"));
        assert!(!applied.duplicate);
        effects.extend(applied.effects);
    }
    assert!(
        session.status().is_terminal(),
        "the session stalled in {} round {}",
        session.status(),
        session.round()
    );
    Run {
        session,
        effects: log,
    }
}

fn entries(run: &Run, round: u32, phase: Phase) -> Vec<&Entry> {
    run.session
        .transcript()
        .iter()
        .filter(|e| e.round == round && e.phase == phase)
        .collect()
}

fn proposal(run: &Run, version: u32) -> &Entry {
    let found = entries(run, version, Phase::Synthesize);
    assert_eq!(found.len(), 1, "one proposal v{version}");
    assert!(found[0].is_proposal_version());
    found[0]
}

fn review_by<'a>(run: &'a Run, round: u32, role: &str) -> &'a Entry {
    entries(run, round, Phase::Review)
        .into_iter()
        .find(|e| e.role == role)
        .unwrap_or_else(|| panic!("{role} reviewed round {round}"))
}

fn concern_ids(entry: &Entry) -> Vec<String> {
    entry
        .concerns
        .iter()
        .map(|c| objection::parse(c).id.expect("concerns carry an id"))
        .collect()
}

fn requirement_of(concern: &str) -> String {
    objection::parse(concern).requirement
}

#[tokio::test]
async fn demo_task_reaches_consensus_in_exactly_round_two() {
    let specialists = default_specialists();
    let run = negotiate(DEMO_TASK, &specialists, 5, Order::Fifo).await;
    let summary = run.session.summary();
    assert_eq!(summary.status, Status::Consensus, "{}", summary.reason);
    assert_eq!(summary.round, 2);
    assert_eq!(summary.final_version, 2);
    assert_eq!(summary.final_hash, proposal(&run, 2).proposal_hash);
    assert!(summary.open_objections.is_empty());
    // FRAMEWORK, 6 analyses, v1, 7 reviews, 6 contributions, v2, 7 reviews.
    assert_eq!(summary.entry_count, 1 + 6 + 1 + 7 + 6 + 1 + 7);

    // The session went through both rounds in order.
    let statuses: Vec<(Status, u32)> = run
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::StatusChanged { status, round } => Some((*status, *round)),
            _ => None,
        })
        .collect();
    use Status::*;
    assert_eq!(
        statuses,
        [
            (Framing, 0),
            (Contribute, 1),
            (Synthesize, 1),
            (Review, 1),
            (Contribute, 2),
            (Synthesize, 2),
            (Review, 2),
            (Consensus, 2)
        ]
    );

    let v1 = proposal(&run, 1);
    let v2 = proposal(&run, 2);
    let framework = &run.session.transcript()[0];
    assert_eq!(framework.entry_type, EntryType::Framework);
    for role in &specialists {
        assert!(framework.content.contains(&format!("- {role}: ")));
    }

    // Review 1: the supervisor signs the structure; every specialist objects, and only
    // with the concerns of its own domain that the task triggers.
    let sup = review_by(&run, 1, "supervisor");
    assert_eq!(sup.verdict, Some(Verdict::Approve));
    assert_eq!(sup.proposal_hash, v1.proposal_hash);
    let mut all_round1: Vec<String> = Vec::new();
    for role in &specialists {
        let review = review_by(&run, 1, role);
        assert_eq!(
            review.verdict,
            Some(Verdict::Object),
            "{role} objects to v1"
        );
        assert_eq!(review.proposal_version, 1);
        let expected: Vec<String> = catalogue::concerns_for(role, DEMO_TASK)
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(
            concern_ids(review),
            expected,
            "{role} objects with its own concerns"
        );
        let own: BTreeSet<String> = catalogue::catalogue(role)
            .into_iter()
            .map(|c| c.id)
            .collect();
        for id in concern_ids(review) {
            assert!(own.contains(&id), "{role} raised foreign concern {id}");
        }
        for concern in &review.concerns {
            let parsed = objection::parse(concern);
            assert_eq!(parsed.contradicted_by, None, "nothing contradicts in v1");
            let known = catalogue::find(role, parsed.id.as_deref().unwrap()).unwrap();
            assert_eq!(parsed.requirement, known.requirement);
            all_round1.push(concern.clone());
        }
    }
    assert!(all_round1.len() >= 2 * specialists.len());

    // The analyses and v1 name the concerns, but never in requirement form; v2 carries
    // every round 1 requirement.
    for analysis in entries(&run, 1, Phase::Contribute) {
        assert_eq!(analysis.entry_type, EntryType::Analysis);
        for id in concern_ids(review_by(&run, 1, &analysis.role)) {
            assert!(
                analysis.content.contains(&format!("`{id}`")),
                "analysis names {id}"
            );
        }
    }
    for concern in &all_round1 {
        let requirement = requirement_of(concern);
        for analysis in entries(&run, 1, Phase::Contribute) {
            assert!(!contains_normalized(&analysis.content, &requirement));
        }
        assert!(
            !contains_normalized(&v1.content, &requirement),
            "v1 settles nothing"
        );
        assert!(
            contains_normalized(&v2.content, &requirement),
            "v2 adopts {concern:?}"
        );
    }

    // Round 2 contributions answer each specialist's own objections with detail that
    // the supervisor folds into v2.
    for contribution in entries(&run, 2, Phase::Contribute) {
        assert_eq!(contribution.entry_type, EntryType::Implementation);
        for id in concern_ids(review_by(&run, 1, &contribution.role)) {
            assert!(contribution.content.contains(&format!("**[{id}]**")));
            let how = catalogue::find(&contribution.role, &id).unwrap().how;
            assert!(contribution.content.contains(&how));
            assert!(v2.content.contains(&how), "v2 carries the detail for {id}");
        }
    }

    // Review 2: everybody signs v2 by its hash.
    for role in run.session.participants() {
        let review = review_by(&run, 2, role);
        assert_eq!(review.verdict, Some(Verdict::Approve), "{role} signs v2");
        assert_eq!(review.proposal_hash, v2.proposal_hash);
        assert!(review.concerns.is_empty());
    }
    assert_eq!(
        agentmesh_core::hash::proposal_hash(&v2.content),
        v2.proposal_hash
    );
}

#[tokio::test]
async fn entries_read_like_notes_and_stay_small() {
    for task in [DEMO_TASK, CONFLICT_TASK] {
        let run = negotiate(task, &default_specialists(), 3, Order::Fifo).await;
        let title = agentmesh_brain::text::title_of(task);
        for entry in run.session.transcript() {
            assert!(
                entry.content.len() < 8 * 1024,
                "entry #{} ({} {}) is {} bytes",
                entry.seq,
                entry.role,
                entry.entry_type,
                entry.content.len()
            );
            assert!(
                entry.content.contains(task) || entry.content.contains(&title),
                "entry #{} does not mention the task",
                entry.seq
            );
            assert!(
                entry.content.lines().count() >= 3,
                "entry #{} is multi-line",
                entry.seq
            );
        }
        let md = agentmesh_core::export::markdown(run.session.transcript());
        assert!(md.contains("**Type**: FRAMEWORK"));
    }
}

#[tokio::test]
async fn conflict_task_ends_without_consensus_with_the_conflict_open() {
    let run = negotiate(CONFLICT_TASK, &default_specialists(), 3, Order::Fifo).await;
    let summary = run.session.summary();
    assert_eq!(summary.status, Status::NoConsensus, "{}", summary.reason);
    assert_eq!(summary.round, 3);
    assert_eq!(summary.final_version, 0);
    assert!(summary.final_hash.is_empty());

    // Exactly the two conflicting concerns are open, each naming the other's sentence.
    let open: Vec<(String, String)> = summary
        .open_objections
        .iter()
        .map(|o| {
            let parsed = objection::parse(&o.concern);
            (o.role.clone(), parsed.id.expect("an id"))
        })
        .collect();
    assert_eq!(
        open,
        [
            ("security".to_string(), "sec-airgap".to_string()),
            ("devops".to_string(), "ops-public-images".to_string())
        ]
    );
    let airgap: Concern = catalogue::find("security", "sec-airgap").unwrap();
    let images: Concern = catalogue::find("devops", "ops-public-images").unwrap();
    for (objection, own, other) in [
        (&summary.open_objections[0], &airgap, &images),
        (&summary.open_objections[1], &images, &airgap),
    ] {
        let parsed = objection::parse(&objection.concern);
        assert_eq!(parsed.requirement, own.requirement);
        let phrase = parsed
            .contradicted_by
            .expect("a contradiction, not an omission");
        assert!(contains_normalized(&other.requirement, &phrase));
    }

    // v1 carries neither side, v2 and v3 both; from v3 on the supervisor names the
    // conflict it cannot resolve. Every version trips at least one of the two.
    let v1 = proposal(&run, 1);
    assert!(!contains_normalized(&v1.content, &airgap.requirement));
    assert!(!contains_normalized(&v1.content, &images.requirement));
    for version in [2, 3] {
        let v = proposal(&run, version);
        assert!(contains_normalized(&v.content, &airgap.requirement));
        assert!(contains_normalized(&v.content, &images.requirement));
    }
    assert!(!proposal(&run, 2).content.contains("Unresolved conflict"));
    let v3 = &proposal(&run, 3).content;
    assert!(v3.contains(
        "Unresolved conflict (review 2): security `sec-airgap` and devops `ops-public-images`"
    ));
    for round in 1..=3 {
        for role in ["security", "devops"] {
            let review = review_by(&run, round, role);
            assert_eq!(
                review.verdict,
                Some(Verdict::Object),
                "{role} objects in round {round}"
            );
        }
    }

    // Everyone else is satisfied from v2 on, and says so in round 3.
    for role in ["backend", "frontend", "architect", "database", "supervisor"] {
        for round in [2, 3] {
            assert_eq!(review_by(&run, round, role).verdict, Some(Verdict::Approve));
        }
    }
    for contribution in entries(&run, 3, Phase::Contribute) {
        match contribution.role.as_str() {
            "security" | "devops" => {
                assert_eq!(contribution.entry_type, EntryType::Proposal);
                assert!(contribution.content.contains("  - Conflict: "));
                assert!(contribution.content.contains("  - Position: "));
            }
            _ => {
                assert_eq!(contribution.entry_type, EntryType::Analysis);
                assert!(contribution.content.contains("No open objections"));
            }
        }
    }
}

#[tokio::test]
async fn conflict_task_never_reaches_consensus_at_any_max_rounds() {
    for max_rounds in 1..=5 {
        let run = negotiate(
            CONFLICT_TASK,
            &default_specialists(),
            max_rounds,
            Order::Fifo,
        )
        .await;
        let summary = run.session.summary();
        assert_eq!(
            summary.status,
            Status::NoConsensus,
            "max_rounds {max_rounds}"
        );
        assert_eq!(summary.round, max_rounds);
        let roles: BTreeSet<&str> = summary
            .open_objections
            .iter()
            .map(|o| o.role.as_str())
            .collect();
        if max_rounds == 1 {
            // Version 1 adopts nothing: every specialist is still waiting.
            assert_eq!(roles, default_specialists().into_iter().collect());
        } else {
            assert_eq!(roles, BTreeSet::from(["devops", "security"]));
        }
    }
}

#[tokio::test]
async fn demo_task_with_one_round_ends_without_consensus() {
    let run = negotiate(DEMO_TASK, &default_specialists(), 1, Order::Fifo).await;
    let summary = run.session.summary();
    assert_eq!(summary.status, Status::NoConsensus);
    let roles: BTreeSet<&str> = summary
        .open_objections
        .iter()
        .map(|o| o.role.as_str())
        .collect();
    assert_eq!(roles, default_specialists().into_iter().collect());
}

#[tokio::test]
async fn a_user_defined_role_negotiates_from_its_name() {
    let task = "Design a fraud-scoring API for card payments: an ML model scores each \
                transaction before authorization and analysts review flagged cases.";
    let specialists = ["backend", "ml-engineer", "security"];
    let run = negotiate(task, &specialists, 4, Order::Fifo).await;
    let summary = run.session.summary();
    assert_eq!(summary.status, Status::Consensus, "{}", summary.reason);
    assert_eq!(summary.round, 2);

    let analysis = entries(&run, 1, Phase::Contribute)
        .into_iter()
        .find(|e| e.role == "ml-engineer")
        .unwrap();
    assert!(analysis.content.contains("the task mentions \"ml\""));
    let review = review_by(&run, 1, "ml-engineer");
    assert_eq!(review.verdict, Some(Verdict::Object));
    assert_eq!(
        concern_ids(review),
        [
            "ml-engineer-owner",
            "ml-engineer-acceptance",
            "ml-engineer-lifecycle"
        ]
    );
    let v2 = proposal(&run, 2);
    for concern in &review.concerns {
        assert!(contains_normalized(&v2.content, &requirement_of(concern)));
    }
    // The generic role's decisions land in the architecture section of v2.
    let architecture = v2
        .content
        .split("## 2. Architecture")
        .nth(1)
        .and_then(|rest| rest.split("\n## 3.").next())
        .unwrap();
    assert!(architecture.contains("[ml-engineer-owner]"));
    assert_eq!(
        review_by(&run, 2, "ml-engineer").verdict,
        Some(Verdict::Approve)
    );
}

#[tokio::test]
async fn runs_are_deterministic() {
    for task in [DEMO_TASK, CONFLICT_TASK] {
        let a = negotiate(task, &default_specialists(), 3, Order::Fifo).await;
        let b = negotiate(task, &default_specialists(), 3, Order::Fifo).await;
        assert_eq!(a.session.transcript(), b.session.transcript());
        assert_eq!(a.session.summary(), b.session.summary());
        assert_eq!(a.effects, b.effects);
    }
}

#[tokio::test]
async fn reply_order_does_not_change_any_proposal() {
    for task in [DEMO_TASK, CONFLICT_TASK] {
        let fifo = negotiate(task, &default_specialists(), 3, Order::Fifo).await;
        let reversed = negotiate(task, &default_specialists(), 3, Order::Reversed).await;
        assert_ne!(
            fifo.session.transcript(),
            reversed.session.transcript(),
            "the orders really differ"
        );
        let hashes = |run: &Run| -> Vec<String> {
            run.session
                .transcript()
                .iter()
                .filter(|e| e.is_proposal_version())
                .map(|e| e.proposal_hash.clone())
                .collect()
        };
        assert_eq!(hashes(&fifo), hashes(&reversed));
        let (s1, s2) = (fifo.session.summary(), reversed.session.summary());
        assert_eq!((s1.status, s1.final_hash), (s2.status, s2.final_hash));
        assert_eq!(s1.open_objections, s2.open_objections);
    }
}

fn review_context(run: &Run, role: &str, version: u32) -> TurnContext {
    let v = proposal(run, version);
    TurnContext {
        session_id: "sim-1".into(),
        task: DEMO_TASK.into(),
        roles: run.session.participants().to_vec(),
        max_rounds: 5,
        role: role.into(),
        round: version,
        phase: Phase::Review,
        attempt: 1,
        transcript: run.session.transcript().to_vec().into(),
        proposal_version: version,
        proposal_hash: v.proposal_hash.clone(),
    }
}

#[tokio::test]
async fn unusable_contexts_are_errors_not_guesses() {
    let run = negotiate(DEMO_TASK, &default_specialists(), 5, Order::Fifo).await;
    let brain = ScriptedBrain::new(Duration::ZERO);

    // Reviewing v2 with a transcript that lacks it.
    let mut ctx = review_context(&run, "backend", 2);
    ctx.transcript.entries_mut().retain(|e| e.round < 2);
    let err = brain.think(ctx).await.unwrap_err();
    assert!(
        matches!(err, BrainError::BadContext(ref m) if m.contains("not in the")),
        "{err}"
    );

    // Reviewing text that does not hash to the version under review.
    let mut ctx = review_context(&run, "backend", 2);
    for entry in ctx.transcript.entries_mut() {
        if entry.is_proposal_version() && entry.round == 2 {
            entry.content.push_str("\nsmuggled line\n");
        }
    }
    let err = brain.think(ctx).await.unwrap_err();
    assert!(err.to_string().contains("refusing to sign"), "{err}");

    // A specialist asked to synthesize.
    let mut ctx = review_context(&run, "backend", 2);
    ctx.phase = Phase::Synthesize;
    let err = brain.think(ctx).await.unwrap_err();
    assert!(err.to_string().contains("only the supervisor"), "{err}");

    // The same valid context twice gives the same reply, and it signs the given hash.
    let ctx = review_context(&run, "security", 2);
    let first = brain.think(ctx.clone()).await.unwrap();
    let second = brain.think(ctx.clone()).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(first.verdict, Some(Verdict::Approve));
    assert_eq!(first.proposal_hash, ctx.proposal_hash);
}

#[tokio::test]
async fn brains_are_shareable_and_think_for_the_configured_time() {
    let run = negotiate(DEMO_TASK, &default_specialists(), 5, Order::Fifo).await;
    let brain: Arc<dyn Brain> = Arc::new(ScriptedBrain::new(Duration::from_millis(40)));
    let ctx = review_context(&run, "database", 2);
    let started = std::time::Instant::now();
    let handle = {
        let brain = Arc::clone(&brain);
        tokio::spawn(async move { brain.think(ctx).await })
    };
    let reply = handle.await.expect("joined").expect("a reply");
    assert!(started.elapsed() >= Duration::from_millis(40));
    assert_eq!(reply.verdict, Some(Verdict::Approve));
}
