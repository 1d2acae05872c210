//! Deadlines and timeouts of the session actor, on paused tokio time.
//!
//! The whole mesh runs in-process: the service, the actors and the registry, with
//! workers played through their registry links (no network, so pausing time is exact),
//! a memory store, and the [`TokioClock`], whose time is tokio's. A 60-second timeout
//! then passes in no real time, and each test asserts the time at which things happen,
//! to the millisecond.

use crate::clock::TokioClock;
use crate::config::{Backends, CoordinatorConfig};
use crate::registry::{ToWorker, TurnOrder, WorkerInfo, WorkerLink};
use crate::state::Mesh;
use agentmesh_core::{Phase, Reply, Status};
use agentmesh_proto::LeaderAddress;
use agentmesh_store::{Fence, MemoryStore, SoleLeader};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

const PHASE: Duration = Duration::from_secs(60);
const PENDING: Duration = Duration::from_secs(45);

fn mesh() -> Arc<Mesh> {
    let config = CoordinatorConfig {
        phase_timeout: PHASE,
        pending_timeout: PENDING,
        ..CoordinatorConfig::default()
    };
    let mut backends = Backends::new(
        Arc::new(MemoryStore::new()),
        Arc::new(SoleLeader::new()),
        None,
        false,
    );
    backends.clock = Arc::new(TokioClock::default());
    let mesh = Mesh::new(
        config,
        &backends,
        LeaderAddress {
            grpc: "http://127.0.0.1:1".into(),
            http: None,
            key: None,
        },
    );
    mesh.begin_term(Fence::Unfenced);
    mesh
}

/// A worker played by the test, through its registry link.
struct Worker {
    id: String,
    connection: u64,
    queue: mpsc::Receiver<ToWorker>,
}

fn join(mesh: &Mesh, id: &str, role: &str) -> Worker {
    let (link, queue) = WorkerLink::new(64);
    let info = WorkerInfo {
        worker_id: id.into(),
        role: role.into(),
        capacity: 4,
        connected: true,
        leased: true,
        public_key: Some(agentmesh_core::trust::testing::key_of(id).public()),
        ..WorkerInfo::default()
    };
    let connection = mesh
        .registry
        .register(info, HashMap::new(), link)
        .expect("registered");
    Worker {
        id: id.into(),
        connection,
        queue,
    }
}

impl Worker {
    async fn next(&mut self) -> ToWorker {
        self.queue.recv().await.expect("the link stays open")
    }

    async fn turn(&mut self) -> TurnOrder {
        loop {
            match self.next().await {
                ToWorker::Turn(order) => return *order,
                ToWorker::Ack { outcome, .. } => assert!(outcome.is_ok(), "{outcome:?}"),
                other => panic!("expected a turn, got {other:?}"),
            }
        }
    }

    async fn answer(
        &self,
        mesh: &Arc<Mesh>,
        order: &TurnOrder,
        entry_type: agentmesh_core::EntryType,
    ) {
        let mut reply = Reply {
            entry_type: Some(entry_type),
            content: format!("{} by {}", order.turn.phase, self.id),
            ..Reply::default()
        };
        let reviewed = order.proposal.as_ref().map_or("", |(_, h)| h.as_str());
        agentmesh_core::trust::testing::key_of(&self.id).sign_reply(
            &order.session_id,
            &order.turn,
            reviewed,
            &mut reply,
        );
        mesh.submit_result(&self.id, &order.session_id, order.turn.clone(), reply)
            .await;
    }
}

async fn ended(mesh: &Mesh, id: &str) -> agentmesh_core::SessionSummary {
    loop {
        let summary = mesh.summary(id).await.expect("the session exists");
        if summary.status.is_terminal() {
            return summary;
        }
        // Lets the actor run; on paused time this takes no time at all.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_session_waits_in_pending_exactly_its_pending_timeout_then_fails_naming_the_role() {
    let mesh = mesh();
    let _supervisor = join(&mesh, "supervisor-1", "supervisor");
    let start = Instant::now();
    let session = mesh
        .create_session("Design a ledger".into(), vec!["backend".into()], 0, 0)
        .await
        .unwrap();
    let summary = ended(&mesh, &session.id).await;
    assert_eq!(summary.status, Status::Failed);
    assert!(summary.reason.contains("backend"), "{}", summary.reason);
    let waited = start.elapsed();
    assert!(
        waited >= PENDING && waited < PENDING + Duration::from_millis(10),
        "failed after {waited:?}, the pending timeout is {PENDING:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_registers_before_the_pending_timeout_takes_the_session() {
    let mesh = mesh();
    let mut supervisor = join(&mesh, "supervisor-1", "supervisor");
    let session = mesh
        .create_session("Design a ledger".into(), vec!["backend".into()], 0, 0)
        .await
        .unwrap();
    // Scaled from zero: the backend's worker starts well inside the pending timeout.
    tokio::time::sleep(PENDING - Duration::from_secs(1)).await;
    let _backend = join(&mesh, "backend-1", "backend");
    let framing = supervisor.turn().await;
    assert_eq!(framing.turn.phase, Phase::Framing);
    assert_eq!(
        mesh.summary(&session.id).await.unwrap().status,
        Status::Framing
    );
}

#[tokio::test(start_paused = true)]
async fn a_phase_that_gets_no_answer_fails_at_its_phase_timeout_and_not_before() {
    let mesh = mesh();
    let mut supervisor = join(&mesh, "supervisor-1", "supervisor");
    let mut backend = join(&mesh, "backend-1", "backend");
    let session = mesh
        .create_session("Design a ledger".into(), vec!["backend".into()], 0, 0)
        .await
        .unwrap();
    let framing = supervisor.turn().await;
    supervisor
        .answer(&mesh, &framing, agentmesh_core::EntryType::Framework)
        .await;
    let contribute = backend.turn().await;
    assert_eq!(contribute.turn.phase, Phase::Contribute);
    // The backend never answers. Its turn's deadline is the phase's.
    let start = Instant::now();
    let deadline_in = contribute.deadline_ms - mesh.now_ms();
    assert_eq!(deadline_in, PHASE.as_millis() as i64);
    tokio::time::sleep(PHASE - Duration::from_millis(1)).await;
    assert_eq!(
        mesh.summary(&session.id).await.unwrap().status,
        Status::Contribute,
        "still waiting a millisecond before the timeout"
    );
    let summary = ended(&mesh, &session.id).await;
    assert_eq!(summary.status, Status::Failed);
    assert!(summary.reason.contains("backend"), "{}", summary.reason);
    let waited = start.elapsed();
    assert!(
        waited >= PHASE && waited < PHASE + Duration::from_millis(10),
        "failed after {waited:?}"
    );
    // Both workers are released and told.
    for worker in [&mut supervisor, &mut backend] {
        loop {
            match worker.next().await {
                ToWorker::SessionEnd { status, .. } => {
                    assert_eq!(status, Some(Status::Failed));
                    break;
                }
                ToWorker::Ack { .. } => {}
                other => panic!("expected the session's end, got {other:?}"),
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_lost_worker_is_replaced_within_the_phase_and_the_deadline_does_not_move() {
    let mesh = mesh();
    let mut supervisor = join(&mesh, "supervisor-1", "supervisor");
    let mut first = join(&mesh, "backend-1", "backend");
    let session = mesh
        .create_session("Design a ledger".into(), vec!["backend".into()], 0, 0)
        .await
        .unwrap();
    let framing = supervisor.turn().await;
    supervisor
        .answer(&mesh, &framing, agentmesh_core::EntryType::Framework)
        .await;
    let contribute = first.turn().await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    // The first backend vanishes; a replica joins 10 s later and gets the turn, under a
    // new attempt, with the same deadline: the phase does not start over.
    let (_, sessions) = mesh
        .registry
        .remove_connection(&first.id, first.connection)
        .unwrap();
    mesh.worker_lost("backend-1", sessions);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut replica = join(&mesh, "backend-2", "backend");
    let retry = replica.turn().await;
    assert_eq!(retry.turn.phase, Phase::Contribute);
    assert_eq!(retry.turn.attempt, contribute.turn.attempt + 1);
    assert_eq!(retry.deadline_ms, contribute.deadline_ms);
    assert_eq!(retry.delta.len(), 1, "the replica gets the framework");
    replica
        .answer(&mesh, &retry, agentmesh_core::EntryType::Analysis)
        .await;
    let synthesize = supervisor.turn().await;
    assert_eq!(synthesize.turn.phase, Phase::Synthesize);
    assert_eq!(mesh.summary(&session.id).await.unwrap().round, 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_turn_failure_changes_nothing_not_even_the_workers_cursor() {
    let mesh = mesh();
    let mut supervisor = join(&mesh, "supervisor-1", "supervisor");
    let mut backend = join(&mesh, "backend-1", "backend");
    mesh.create_session("Design a ledger".into(), vec!["backend".into()], 0, 0)
        .await
        .unwrap();
    let framing = supervisor.turn().await;
    supervisor
        .answer(&mesh, &framing, agentmesh_core::EntryType::Framework)
        .await;
    let contribute = backend.turn().await;
    assert_eq!(contribute.delta.len(), 1, "the framework");
    // A report about an attempt that is not current is refused...
    let mut stale = contribute.turn.clone();
    stale.attempt += 5;
    mesh.submit_failure(&backend.id, &contribute.session_id, stale, "boom".into())
        .await;
    match backend.next().await {
        ToWorker::Ack { outcome, .. } => {
            let refusal = outcome.expect_err("a stale report is refused");
            assert_eq!(refusal.kind(), crate::errors::ErrorKind::Stale);
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    // ...and changed nothing: the backend's next turn still carries only what it lacks,
    // not the whole transcript again.
    backend
        .answer(&mesh, &contribute, agentmesh_core::EntryType::Analysis)
        .await;
    let synthesize = supervisor.turn().await;
    supervisor
        .answer(&mesh, &synthesize, agentmesh_core::EntryType::Proposal)
        .await;
    let review = backend.turn().await;
    assert_eq!(review.turn.phase, Phase::Review);
    let seqs: Vec<u64> = review.delta.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        [2, 3],
        "its own contribution and the proposal, from its cursor"
    );
    assert!(review.header.is_none(), "it knows the session already");
}
