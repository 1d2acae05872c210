//! A coordinator keeps only the newest ended sessions' event logs in memory; watching an
//! older one rebuilds its log from the store, with exactly the events (and seqs) its
//! watchers saw live.

mod support;

use agentmesh_coordinator::CoordinatorConfig;
use agentmesh_proto::v1::{
    self, coordinator_message::Msg, session_event::Event,
    session_service_client::SessionServiceClient,
};
use support::{FakeWorker, GatedStore, PROMPT, create, start_with};

/// An event without its timestamps and session snapshot (a rebuilt log stamps status
/// changes when it is rebuilt): its seq and what happened.
fn essence(event: &v1::SessionEvent) -> (u64, String) {
    let what = match &event.event {
        Some(Event::Entry(e)) => format!("entry {} {} {:?}", e.seq, e.role, e.content),
        Some(Event::Status(s)) => format!("status {} r{} {}", s.status, s.round, s.reason),
        other => format!("{other:?}"),
    };
    (event.seq, what)
}

/// Every durable event of a session, from seq 1 to its end.
async fn watch_all(url: &str, session_id: &str) -> Vec<(u64, String)> {
    let mut client = SessionServiceClient::connect(url.to_string())
        .await
        .unwrap();
    let mut stream = client
        .watch_session(v1::WatchSessionRequest {
            session_id: session_id.into(),
            from_seq: 1,
            batch_window_ms: Some(0),
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = tokio::time::timeout(PROMPT, stream.message())
        .await
        .expect("the watch moves")
        .unwrap()
    {
        if !event.ephemeral {
            events.push(essence(&event));
        }
    }
    events
}

/// Plays a two-round broadcast session to its end: answers every turn, and returns once
/// the session has ended and both answers are acknowledged.
async fn complete(worker: &mut FakeWorker) {
    let (mut acks, mut ended) = (0, false);
    while !(ended && acks == 2) {
        match worker.next().await {
            Msg::Turn(turn) => {
                let round = turn.turn.as_ref().unwrap().round;
                let kind = if round == 1 {
                    v1::EntryType::Analysis
                } else {
                    v1::EntryType::Proposal
                };
                worker.answer(&turn, kind, &format!("round {round}")).await;
            }
            Msg::Ack(ack) => {
                assert_eq!(ack.code, tonic::Code::Ok as i32, "{ack:?}");
                acks += 1;
            }
            Msg::SessionEnd(_) => ended = true,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_ended_session_beyond_the_kept_ones_is_rebuilt_from_the_store_unchanged() {
    let store = GatedStore::new();
    let config = CoordinatorConfig {
        ended_logs_kept: 1,
        ..CoordinatorConfig::default()
    };
    let url = start_with(store.clone(), config).await;
    let mut worker = FakeWorker::attach(&url, "b0").await;

    let mut sessions = Vec::new();
    for _ in 0..2 {
        let id = create(&url, &["b0"], 2).await;
        let live = tokio::spawn({
            let (url, id) = (url.clone(), id.clone());
            async move { watch_all(&url, &id).await }
        });
        complete(&mut worker).await;
        sessions.push((id, live.await.unwrap()));
    }
    let (first, first_live) = &sessions[0];
    let (second, second_live) = &sessions[1];
    assert!(
        first_live.len() >= 5,
        "two entries and three status changes at least"
    );

    // The second session is the one ended log kept: watched from memory.
    let reads = store.entry_reads();
    assert_eq!(&watch_all(&url, second).await, second_live);
    assert_eq!(store.entry_reads(), reads, "a kept log is not read back");

    // The first was dropped: watched from the store, with the same events and seqs.
    assert_eq!(&watch_all(&url, first).await, first_live);
    assert_eq!(store.entry_reads(), reads + 1, "a dropped log is rebuilt");
}

#[tokio::test]
async fn a_worker_reporting_ended_or_unknown_sessions_is_told_they_ended() {
    let store = GatedStore::new();
    let url = start_with(store, CoordinatorConfig::default()).await;
    let mut worker = FakeWorker::attach(&url, "b0").await;
    let ended = create(&url, &["b0"], 2).await;
    complete(&mut worker).await;
    // Waits in PENDING (no worker plays b9): running, so not to be ended.
    let running = create(&url, &["b9"], 2).await;

    let cursor = |id: &str| v1::SessionCursor {
        session_id: id.into(),
        seq: 2,
    };
    // As after a restart: this worker says it still holds all three transcripts.
    let mut back = FakeWorker::attach_holding(
        &url,
        "b1",
        vec![cursor(&running), cursor(&ended), cursor("never-existed")],
    )
    .await;
    // Ends go out in the order reported, so an end for the running session would come
    // first: the first two must be these.
    let mut told = Vec::new();
    while told.len() < 2 {
        match back.next().await {
            Msg::SessionEnd(end) => told.push((end.session_id, end.status)),
            other => panic!("expected session ends, got {other:?}"),
        }
    }
    assert_eq!(
        told,
        [
            (ended, v1::SessionStatus::Completed as i32),
            (
                "never-existed".to_string(),
                v1::SessionStatus::Unspecified as i32
            ),
        ]
    );
}
