//! Bad input gets a precise gRPC status and changes nothing. The test drives the worker
//! protocol by hand over a raw `WorkerService.Attach` stream, so it can send exactly the
//! malformed, stale, foreign, duplicate and oversized results a real worker never would.

use agentmesh_core::trust::KeyPair;
use agentmesh_core::trust::testing::key_of;
use agentmesh_e2e::{Cluster, CoordinatorOpts};
use agentmesh_proto::v1::worker_service_client::WorkerServiceClient;
use agentmesh_proto::v1::{
    self, CoordinatorMessage, WorkerMessage, coordinator_message::Msg, worker_message,
};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

/// A hand-driven worker stream.
struct RawWorker {
    tx: mpsc::Sender<WorkerMessage>,
    inbound: Streaming<CoordinatorMessage>,
    /// Its test key: announced in the Hello, and what `submit` signs with.
    key: KeyPair,
}

impl RawWorker {
    async fn attach(url: &str, role: &str, id: &str) -> Result<RawWorker, tonic::Status> {
        RawWorker::attach_with_key(url, role, id, Some(key_of(id).public())).await
    }

    async fn attach_with_key(
        url: &str,
        role: &str,
        id: &str,
        public_key: Option<agentmesh_core::trust::PublicKey>,
    ) -> Result<RawWorker, tonic::Status> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client =
            WorkerServiceClient::new(channel).max_encoding_message_size(8 * 1024 * 1024);
        let (tx, rx) = mpsc::channel(16);
        tx.send(WorkerMessage {
            msg: Some(worker_message::Msg::Hello(v1::Hello {
                role: role.into(),
                worker_id: id.into(),
                capacity: 4,
                version: "test".into(),
                cursors: vec![],
                public_key: public_key.map_or(Vec::new(), |k| k.0.to_vec()),
            })),
        })
        .await
        .unwrap();
        let mut inbound = client.attach(ReceiverStream::new(rx)).await?.into_inner();
        match inbound.message().await?.and_then(|m| m.msg) {
            Some(Msg::Welcome(_)) => Ok(RawWorker {
                tx,
                inbound,
                key: key_of(id),
            }),
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    async fn next(&mut self) -> Result<Msg, tonic::Status> {
        let message = tokio::time::timeout(Duration::from_secs(10), self.inbound.message())
            .await
            .expect("a message within 10s")?;
        message
            .and_then(|m| m.msg)
            .ok_or_else(|| tonic::Status::unknown("stream ended"))
    }

    async fn next_turn(&mut self) -> v1::TurnRequest {
        match self.next().await.unwrap() {
            Msg::Turn(t) => t,
            other => panic!("expected a turn, got {other:?}"),
        }
    }

    /// Sends a result, signed with this worker's key, and returns the coordinator's ack.
    async fn submit(
        &mut self,
        turn: v1::TurnId,
        entry_type: v1::EntryType,
        content: &str,
    ) -> v1::ResultAck {
        let mut result = v1::TurnResult {
            turn: Some(turn),
            entry_type: entry_type as i32,
            content: content.into(),
            ..Default::default()
        };
        agentmesh_proto::sign_result(&self.key, &mut result, "");
        self.send_result(result).await
    }

    /// Sends `result` as it is and returns the coordinator's ack.
    async fn send_result(&mut self, result: v1::TurnResult) -> v1::ResultAck {
        self.tx
            .send(WorkerMessage {
                msg: Some(worker_message::Msg::Result(result)),
            })
            .await
            .unwrap();
        match self.next().await.unwrap() {
            Msg::Ack(ack) => ack,
            other => panic!("expected an ack, got {other:?}"),
        }
    }
}

fn code(ack: &v1::ResultAck) -> Code {
    Code::from_i32(ack.code)
}

#[test]
fn worker_results_get_precise_statuses_and_change_nothing() {
    let cluster = Cluster::start(CoordinatorOpts::default());
    let url = cluster.url.clone();
    let mut client = cluster.client();
    cluster.rt.block_on(async move {
        let mut supervisor = RawWorker::attach(&url, "supervisor", "sup-raw")
            .await
            .unwrap();
        let mut backend = RawWorker::attach(&url, "backend", "backend-raw")
            .await
            .unwrap();
        let session = client
            .create_session(v1::CreateSessionRequest {
                task: "Design a payments ledger".into(),
                roles: vec!["backend".into()],
                max_rounds: 2,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let framing = supervisor.next_turn().await;
        let turn = framing.turn.clone().unwrap();
        assert_eq!(turn.session_id, session.id);
        assert_eq!(turn.phase, v1::Phase::Framing as i32);
        assert_eq!(
            framing.session.as_ref().unwrap().task,
            "Design a payments ledger"
        );

        let entries =
            |mut c: v1::session_service_client::SessionServiceClient<tonic::transport::Channel>,
             id: String| async move {
                c.get_transcript(v1::GetTranscriptRequest { session_id: id })
                    .await
                    .unwrap()
                    .into_inner()
                    .entries
                    .len()
            };

        // Stale round.
        let stale = v1::TurnId {
            round: 3,
            ..turn.clone()
        };
        let ack = supervisor
            .submit(stale, v1::EntryType::Framework, "framework")
            .await;
        assert_eq!(code(&ack), Code::FailedPrecondition, "{}", ack.message);
        // Stale phase.
        let wrong_phase = v1::TurnId {
            phase: v1::Phase::Review as i32,
            ..turn.clone()
        };
        let ack = supervisor
            .submit(wrong_phase, v1::EntryType::Framework, "framework")
            .await;
        assert_eq!(code(&ack), Code::FailedPrecondition, "{}", ack.message);
        // Retired or future attempt.
        let wrong_attempt = v1::TurnId {
            attempt: 7,
            ..turn.clone()
        };
        let ack = supervisor
            .submit(wrong_attempt, v1::EntryType::Framework, "framework")
            .await;
        assert_eq!(code(&ack), Code::FailedPrecondition, "{}", ack.message);
        // A worker that is not assigned this turn.
        let ack = backend
            .submit(turn.clone(), v1::EntryType::Framework, "framework")
            .await;
        assert_eq!(code(&ack), Code::PermissionDenied, "{}", ack.message);
        // A role that is not a participant.
        let foreign = v1::TurnId {
            role: "qa".into(),
            ..turn.clone()
        };
        let ack = supervisor
            .submit(foreign, v1::EntryType::Framework, "framework")
            .await;
        assert_eq!(code(&ack), Code::PermissionDenied, "{}", ack.message);
        // An unknown session.
        let unknown = v1::TurnId {
            session_id: "no-such-session".into(),
            ..turn.clone()
        };
        let ack = supervisor
            .submit(unknown, v1::EntryType::Framework, "framework")
            .await;
        assert_eq!(code(&ack), Code::NotFound, "{}", ack.message);
        // A type the phase does not allow, and an empty reply.
        let ack = supervisor
            .submit(turn.clone(), v1::EntryType::Review, "framework")
            .await;
        assert_eq!(code(&ack), Code::InvalidArgument, "{}", ack.message);
        let ack = supervisor
            .submit(turn.clone(), v1::EntryType::Framework, "  ")
            .await;
        assert_eq!(code(&ack), Code::InvalidArgument, "{}", ack.message);
        // Content over the entry limit (512 KiB by default) but within the message limit.
        let big = "x".repeat(600 * 1024);
        let ack = supervisor
            .submit(turn.clone(), v1::EntryType::Framework, &big)
            .await;
        assert_eq!(code(&ack), Code::ResourceExhausted, "{}", ack.message);
        // 300 KB of control characters: under the content limit, but about 1.8 MB once
        // JSON-escaped as the store keeps it. Refused on its ack, before it is accepted:
        // the phase's write can never be refused for it, the term goes on, and the
        // stream stays up (the real answer below goes through on it).
        let escaped = "\u{1}".repeat(300 * 1024);
        let ack = supervisor
            .submit(turn.clone(), v1::EntryType::Framework, &escaped)
            .await;
        assert_eq!(code(&ack), Code::ResourceExhausted, "{}", ack.message);
        assert!(ack.message.contains("as stored"), "{}", ack.message);
        assert_eq!(
            entries(client.clone(), session.id.clone()).await,
            0,
            "nothing was appended"
        );

        // Signatures (issue 13). Each refusal is UNAUTHENTICATED and changes nothing.
        let framework = |turn: &v1::TurnId| v1::TurnResult {
            turn: Some(turn.clone()),
            entry_type: v1::EntryType::Framework as i32,
            content: "the framework".into(),
            ..Default::default()
        };
        // No signature at all.
        let ack = supervisor.send_result(framework(&turn)).await;
        assert_eq!(code(&ack), Code::Unauthenticated, "{}", ack.message);
        assert!(ack.message.contains("no signature"), "{}", ack.message);
        // Signed with another worker's key (the backend's, which the backend announced).
        let mut forged = framework(&turn);
        agentmesh_proto::sign_result(&key_of("backend-raw"), &mut forged, "");
        let ack = supervisor.send_result(forged).await;
        assert_eq!(code(&ack), Code::Unauthenticated, "{}", ack.message);
        assert!(
            ack.message
                .contains("does not verify under worker sup-raw's key"),
            "{}",
            ack.message
        );
        // A valid signature for another round, replayed as this round's result.
        let mut other_round = framework(&v1::TurnId {
            round: 2,
            ..turn.clone()
        });
        agentmesh_proto::sign_result(&supervisor.key, &mut other_round, "");
        other_round.turn = Some(turn.clone());
        let ack = supervisor.send_result(other_round).await;
        assert_eq!(code(&ack), Code::Unauthenticated, "{}", ack.message);
        // A valid signature for another session, replayed into this one.
        let mut other_session = framework(&v1::TurnId {
            session_id: "another-session".into(),
            ..turn.clone()
        });
        agentmesh_proto::sign_result(&supervisor.key, &mut other_session, "");
        other_session.turn = Some(turn.clone());
        let ack = supervisor.send_result(other_session).await;
        assert_eq!(code(&ack), Code::Unauthenticated, "{}", ack.message);
        // A signed result whose content was changed after signing.
        let mut changed = framework(&turn);
        agentmesh_proto::sign_result(&supervisor.key, &mut changed, "");
        changed.content.push('!');
        let ack = supervisor.send_result(changed).await;
        assert_eq!(code(&ack), Code::Unauthenticated, "{}", ack.message);
        assert_eq!(
            entries(client.clone(), session.id.clone()).await,
            0,
            "no refused result was appended"
        );
        // A worker that announces no key is refused at its Hello.
        let refused = RawWorker::attach_with_key(&url, "backend", "keyless", None)
            .await
            .err()
            .expect("refused");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

        // The real answer is accepted once; its duplicate is acknowledged idempotently.
        let ack = supervisor
            .submit(turn.clone(), v1::EntryType::Framework, "the framework")
            .await;
        assert_eq!(
            (code(&ack), ack.seq, ack.duplicate),
            (Code::Ok, 1, false),
            "{}",
            ack.message
        );
        // The backend's contribute turn is now out: drain it before acking the duplicate.
        let contribute = backend.next_turn().await;
        assert_eq!(
            contribute.delta.len(),
            1,
            "the backend gets only the entries it lacks"
        );
        let ack = supervisor
            .submit(turn.clone(), v1::EntryType::Framework, "the framework")
            .await;
        assert_eq!(
            (code(&ack), ack.seq, ack.duplicate),
            (Code::Ok, 1, true),
            "{}",
            ack.message
        );
        assert_eq!(
            entries(client.clone(), session.id.clone()).await,
            1,
            "the duplicate appended nothing"
        );

        // A message over the 1 MiB limit ends the stream with RESOURCE_EXHAUSTED...
        let huge = "y".repeat(2 * 1024 * 1024);
        let mut oversized = v1::TurnResult {
            turn: contribute.turn.clone(),
            entry_type: v1::EntryType::Analysis as i32,
            content: huge,
            ..Default::default()
        };
        agentmesh_proto::sign_result(&backend.key, &mut oversized, "");
        backend
            .tx
            .send(WorkerMessage {
                msg: Some(worker_message::Msg::Result(oversized)),
            })
            .await
            .unwrap();
        let status = loop {
            match backend.next().await {
                Err(status) => break status,
                Ok(Msg::Ack(ack)) => {
                    panic!("an oversized message must not be acknowledged: {ack:?}")
                }
                Ok(_) => continue,
            }
        };
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        // ... and nothing of it reached the transcript.
        assert_eq!(entries(client.clone(), session.id.clone()).await, 1);

        // A Hello with an empty role is refused.
        let refused = RawWorker::attach(&url, "", "nobody")
            .await
            .err()
            .expect("refused");
        assert_eq!(refused.code(), Code::InvalidArgument);
        // A second stream under a connected worker's id is refused.
        let refused = RawWorker::attach(&url, "supervisor", "sup-raw")
            .await
            .err()
            .expect("refused");
        assert_eq!(refused.code(), Code::AlreadyExists);
    });
}

#[test]
fn client_requests_get_precise_statuses_and_change_nothing() {
    let cluster = Cluster::start(CoordinatorOpts::default());
    let mut client = cluster.client();
    cluster.rt.block_on(async move {
        let count = |mut c: v1::session_service_client::SessionServiceClient<
            tonic::transport::Channel,
        >| async move {
            c.list_sessions(v1::ListSessionsRequest {})
                .await
                .unwrap()
                .into_inner()
                .sessions
                .len()
        };
        let unknown = || "no-such-session".to_string();
        let status = client
            .get_session(v1::GetSessionRequest {
                session_id: unknown(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        let status = client
            .get_transcript(v1::GetTranscriptRequest {
                session_id: unknown(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        let status = client
            .cancel_session(v1::CancelSessionRequest {
                session_id: unknown(),
                reason: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        let status = client
            .watch_session(v1::WatchSessionRequest {
                session_id: unknown(),
                from_seq: 1,
                batch_window_ms: None,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);

        for (task, roles, what) in [
            ("", vec![], "empty task"),
            ("   ", vec![], "blank task"),
            ("Design X", vec![String::new()], "empty role"),
            ("Design X", vec!["Back End".to_string()], "malformed role"),
            (
                "Design X",
                vec!["backend".to_string(), "backend".to_string()],
                "duplicate role",
            ),
            (
                "Design X",
                vec!["supervisor".to_string()],
                "supervisor as specialist",
            ),
        ] {
            let status = client
                .create_session(v1::CreateSessionRequest {
                    task: task.into(),
                    roles,
                    max_rounds: 0,
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        }
        let status = client
            .create_session(v1::CreateSessionRequest {
                task: "Design X".into(),
                roles: vec![],
                max_rounds: 1000,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);

        let huge = "z".repeat(2 * 1024 * 1024);
        let status = client
            .create_session(v1::CreateSessionRequest {
                task: huge,
                roles: vec![],
                max_rounds: 0,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(
            count(client.clone()).await,
            0,
            "no refused request created a session"
        );

        // A watch from a seq the session has not reached is OUT_OF_RANGE.
        let session = client
            .create_session(v1::CreateSessionRequest {
                task: "Design X".into(),
                roles: vec![],
                max_rounds: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let status = client
            .watch_session(v1::WatchSessionRequest {
                session_id: session.id,
                from_seq: 1_000,
                batch_window_ms: None,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange);
    });
}
