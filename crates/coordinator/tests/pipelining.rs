//! A phase's store write overlaps the next phase's turns exactly when those turns carry
//! no entry the store lacks:
//! - a broadcast session's next round (blind turns) goes out while the write is held,
//!   and the result's acknowledgement still waits for the write;
//! - a negotiation's next phase (whose turns carry the entries being written) waits.
//!
//! A real coordinator (`agentmesh_coordinator::run`) on loopback, gRPC clients playing
//! the workers, and a store whose writes the test can hold back.

mod support;

use agentmesh_proto::v1::{self, coordinator_message::Msg};
use std::time::Duration;
use support::{FakeWorker, GatedStore, create, start};

#[tokio::test]
async fn a_broadcast_round_goes_out_while_the_last_one_is_written_and_its_ack_waits() {
    let store = GatedStore::new();
    let url = start(store.clone()).await;
    let mut worker = FakeWorker::attach(&url, "b0").await;
    create(&url, &["b0"], 2).await;

    let round1 = worker.next_turn().await;
    assert_eq!(round1.turn.as_ref().unwrap().round, 1);
    store.hold();
    worker
        .answer(&round1, v1::EntryType::Analysis, "round one")
        .await;

    // Round 2 arrives while round 1's write is still held at the gate...
    let round2 = worker.next_turn().await;
    assert_eq!(round2.turn.as_ref().unwrap().round, 2);
    assert!(round2.delta.is_empty(), "a blind turn carries no entry");
    assert_eq!(store.waiting(), 1, "round 1's write is still held");

    // ...and round 1's acknowledgement only once the write is done.
    store.release();
    match worker.next().await {
        Msg::Ack(ack) => {
            assert_eq!(ack.turn.unwrap().round, 1);
            assert_eq!(ack.code, tonic::Code::Ok as i32);
            assert_eq!(ack.seq, 1);
        }
        other => panic!("expected round 1's ack, got {other:?}"),
    }
    worker
        .answer(&round2, v1::EntryType::Proposal, "round two")
        .await;
    // The last write ends the session: its ack and the SessionEnd follow it.
    let (mut acked, mut ended) = (false, false);
    while !(acked && ended) {
        match worker.next().await {
            Msg::Ack(ack) => acked = ack.turn.unwrap().round == 2,
            Msg::SessionEnd(end) => {
                ended = end.status == v1::SessionStatus::Completed as i32;
            }
            other => panic!("expected round 2's ack and the end, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_negotiation_phase_waits_for_the_write_of_the_entries_it_carries() {
    let store = GatedStore::new();
    let url = start(store.clone()).await;
    let mut supervisor = FakeWorker::attach(&url, "supervisor").await;
    let mut backend = FakeWorker::attach(&url, "backend").await;
    create(&url, &["backend"], 0).await;

    let framing = supervisor.next_turn().await;
    assert_eq!(
        framing.turn.as_ref().unwrap().phase,
        v1::Phase::Framing as i32
    );
    store.hold();
    supervisor
        .answer(&framing, v1::EntryType::Framework, "the framework")
        .await;

    // While the framework's write is held, the backend is sent nothing: its turn would
    // carry the unwritten framework.
    let early = tokio::time::timeout(Duration::from_millis(300), backend.down.message()).await;
    assert!(early.is_err(), "nothing before the write: {early:?}");
    assert_eq!(store.waiting(), 1);

    store.release();
    let contribute = backend.next_turn().await;
    assert_eq!(
        contribute.turn.as_ref().unwrap().phase,
        v1::Phase::Contribute as i32
    );
    assert_eq!(
        contribute
            .delta
            .iter()
            .map(|e| e.content.as_str())
            .collect::<Vec<_>>(),
        ["the framework"]
    );
    match supervisor.next().await {
        Msg::Ack(ack) => assert_eq!(ack.code, tonic::Code::Ok as i32),
        other => panic!("expected the framework's ack, got {other:?}"),
    }
}
