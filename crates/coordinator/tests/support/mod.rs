//! What the coordinator's integration tests share: a real coordinator
//! (`agentmesh_coordinator::run`) on loopback, gRPC clients playing the workers, and a
//! memory store whose writes the test can hold back and whose reads it can count.

#![allow(dead_code)] // each test file uses its own part

use agentmesh_coordinator::{Backends, CoordinatorConfig, Listeners};
use agentmesh_core::trust::KeyPair;
use agentmesh_core::trust::testing::key_of;
use agentmesh_core::{Entry, SessionSummary};
use agentmesh_proto::v1::{
    self, coordinator_message::Msg, session_service_client::SessionServiceClient, worker_message,
    worker_service_client::WorkerServiceClient,
};
use agentmesh_store::{Fence, MemoryStore, SessionStore, SoleLeader, StoreError, StoreFuture};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// A memory store whose writes wait while the gate is closed, whose reads can be held
/// too, and which can refuse a session's entries for good.
pub struct GatedStore {
    inner: MemoryStore,
    open: watch::Sender<bool>,
    /// Writes waiting at the gate now.
    waiting: AtomicUsize,
    /// Transcript reads so far.
    entry_reads: AtomicUsize,
    /// Reads pass while true.
    reads_open: watch::Sender<bool>,
    /// Reads waiting at their gate now, and the most that ever waited at once.
    reads_waiting: AtomicUsize,
    most_reads_waiting: AtomicUsize,
    /// Entries of sessions whose task holds this text are refused (a backend fault).
    refuse_task: std::sync::Mutex<Option<String>>,
    /// How many of the next transcript reads fail as if etcd were unreachable.
    unavailable_reads: AtomicUsize,
}

impl GatedStore {
    pub fn new() -> Arc<GatedStore> {
        Arc::new(GatedStore {
            inner: MemoryStore::new(),
            open: watch::channel(true).0,
            waiting: AtomicUsize::new(0),
            entry_reads: AtomicUsize::new(0),
            reads_open: watch::channel(true).0,
            reads_waiting: AtomicUsize::new(0),
            most_reads_waiting: AtomicUsize::new(0),
            refuse_task: std::sync::Mutex::new(None),
            unavailable_reads: AtomicUsize::new(0),
        })
    }

    /// The next `n` transcript reads fail with [`StoreError::Unavailable`].
    pub fn fail_entry_reads(&self, n: usize) {
        self.unavailable_reads.store(n, Ordering::SeqCst);
    }

    /// How many of the reads [`GatedStore::fail_entry_reads`] set up have not failed yet.
    pub fn entry_reads_left_to_fail(&self) -> usize {
        self.unavailable_reads.load(Ordering::SeqCst)
    }

    /// Refuses, from now on, every write of entries for a session whose task holds `text`.
    pub fn refuse_entries_of_tasks_with(&self, text: &str) {
        *self.refuse_task.lock().unwrap() = Some(text.to_string());
    }

    pub fn hold_reads(&self) {
        self.reads_open.send_replace(false);
    }

    pub fn release_reads(&self) {
        self.reads_open.send_replace(true);
    }

    pub fn reads_waiting(&self) -> usize {
        self.reads_waiting.load(Ordering::SeqCst)
    }

    pub fn most_reads_waiting(&self) -> usize {
        self.most_reads_waiting.load(Ordering::SeqCst)
    }

    async fn read_gate(&self) {
        let mut open = self.reads_open.subscribe();
        if *open.borrow_and_update() {
            return;
        }
        let now = self.reads_waiting.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_reads_waiting.fetch_max(now, Ordering::SeqCst);
        while !*open.borrow_and_update() {
            open.changed()
                .await
                .expect("the gate lives as long as the store");
        }
        self.reads_waiting.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn hold(&self) {
        self.open.send_replace(false);
    }

    pub fn release(&self) {
        self.open.send_replace(true);
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    pub fn entry_reads(&self) -> usize {
        self.entry_reads.load(Ordering::SeqCst)
    }
}

impl SessionStore for GatedStore {
    fn write<'a>(
        &'a self,
        fence: &'a Fence,
        header: &'a SessionSummary,
        entries: &'a [Entry],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut open = self.open.subscribe();
            if !*open.borrow_and_update() {
                self.waiting.fetch_add(1, Ordering::SeqCst);
                while !*open.borrow_and_update() {
                    open.changed()
                        .await
                        .expect("the gate lives as long as the store");
                }
                self.waiting.fetch_sub(1, Ordering::SeqCst);
            }
            let refused = self.refuse_task.lock().unwrap().clone();
            if let Some(text) = refused
                && header.task.contains(&text)
                && !entries.is_empty()
            {
                return Err(StoreError::Backend(format!(
                    "refusing the entries of session {} (test)",
                    header.id
                )));
            }
            self.inner.write(fence, header, entries).await
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, SessionSummary> {
        Box::pin(async move {
            self.read_gate().await;
            self.inner.get(id).await
        })
    }

    fn entries<'a>(&'a self, id: &'a str, from_seq: u64) -> StoreFuture<'a, Vec<Entry>> {
        self.entry_reads.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            self.read_gate().await;
            let failing =
                self.unavailable_reads
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if failing.is_ok() {
                return Err(StoreError::Unavailable(format!(
                    "read transcript of session {id}: etcd did not answer (test)"
                )));
            }
            self.inner.entries(id, from_seq).await
        })
    }

    fn list(&self) -> StoreFuture<'_, Vec<SessionSummary>> {
        self.inner.list()
    }

    fn unfinished(&self) -> StoreFuture<'_, Vec<SessionSummary>> {
        self.inner.unfinished()
    }

    fn max_entry_bytes(&self) -> usize {
        self.inner.max_entry_bytes()
    }
}

/// How long the test waits for anything the coordinator should do at once.
pub const PROMPT: Duration = Duration::from_secs(10);

pub async fn start(store: Arc<GatedStore>) -> String {
    start_with(store, CoordinatorConfig::default()).await
}

pub async fn start_with(store: Arc<GatedStore>, config: CoordinatorConfig) -> String {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", grpc.local_addr().unwrap());
    let listeners = Listeners {
        grpc,
        http: None,
        advertise: url.clone(),
        advertise_http: None,
    };
    let backends = Backends::new(store, Arc::new(SoleLeader::new()), None, false);
    tokio::spawn(agentmesh_coordinator::run(
        listeners,
        config,
        backends,
        std::future::pending(),
    ));
    url
}

/// A worker's stream, played by the test.
pub struct FakeWorker {
    pub up: mpsc::Sender<v1::WorkerMessage>,
    pub down: Streaming<v1::CoordinatorMessage>,
    /// Its test key (`agentmesh_core::trust::testing`): announced in the Hello, and every
    /// result is signed with it.
    pub key: KeyPair,
}

impl FakeWorker {
    pub async fn attach(url: &str, role: &str) -> FakeWorker {
        FakeWorker::attach_holding(url, role, vec![]).await
    }

    /// Attaches saying it holds these sessions' transcripts (as a reconnecting worker).
    pub async fn attach_holding(
        url: &str,
        role: &str,
        cursors: Vec<v1::SessionCursor>,
    ) -> FakeWorker {
        FakeWorker::attach_as(url, role, &format!("{role}-1"), 1, cursors, None).await
    }

    /// Attaches as `worker_id` with `capacity`, holding `cursors`. `window` sets how many
    /// bytes the worker's connection takes before the coordinator must wait for it to
    /// read (HTTP/2 flow control), for a worker that stops reading.
    pub async fn attach_as(
        url: &str,
        role: &str,
        worker_id: &str,
        capacity: u32,
        cursors: Vec<v1::SessionCursor>,
        window: Option<u32>,
    ) -> FakeWorker {
        let channel = tonic::transport::Endpoint::from_shared(url.to_string())
            .unwrap()
            .initial_stream_window_size(window)
            .initial_connection_window_size(window)
            .connect()
            .await
            .unwrap();
        let mut client = WorkerServiceClient::new(channel);
        let (up, rx) = mpsc::channel(16);
        up.send(v1::WorkerMessage {
            msg: Some(worker_message::Msg::Hello(v1::Hello {
                role: role.into(),
                worker_id: worker_id.into(),
                capacity,
                version: "test".into(),
                cursors,
                public_key: key_of(worker_id).public().0.to_vec(),
            })),
        })
        .await
        .unwrap();
        let down = client
            .attach(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let mut worker = FakeWorker {
            up,
            down,
            key: key_of(worker_id),
        };
        assert!(matches!(worker.next().await, Msg::Welcome(_)));
        worker
    }

    /// The next message.
    pub async fn next(&mut self) -> Msg {
        let message = tokio::time::timeout(PROMPT, self.down.message())
            .await
            .expect("the coordinator answers promptly")
            .unwrap()
            .expect("the stream stays open");
        message.msg.unwrap()
    }

    pub async fn next_turn(&mut self) -> v1::TurnRequest {
        match self.next().await {
            Msg::Turn(turn) => turn,
            other => panic!("expected a turn, got {other:?}"),
        }
    }

    pub async fn answer(&self, turn: &v1::TurnRequest, entry_type: v1::EntryType, content: &str) {
        let mut result = v1::TurnResult {
            turn: turn.turn.clone(),
            entry_type: entry_type as i32,
            content: content.into(),
            ..Default::default()
        };
        agentmesh_proto::sign_result(&self.key, &mut result, &turn.proposal_hash);
        self.up
            .send(v1::WorkerMessage {
                msg: Some(worker_message::Msg::Result(result)),
            })
            .await
            .unwrap();
    }
}

impl FakeWorker {
    /// Plays a diligent worker until its stream ends: answers every turn as its phase
    /// asks (a review approves the version under review). Returns how many it answered.
    /// It sends a heartbeat every 100 ms, so it stays live however short the
    /// coordinator's heartbeat interval.
    pub async fn serve(mut self) -> usize {
        let mut answered = 0;
        let mut beat = tokio::time::interval(Duration::from_millis(100));
        loop {
            let message = tokio::select! {
                message = self.down.message() => message,
                _ = beat.tick() => {
                    let heartbeat = v1::WorkerMessage {
                        msg: Some(worker_message::Msg::Heartbeat(v1::Heartbeat {})),
                    };
                    if self.up.send(heartbeat).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let Ok(Some(message)) = message else { break };
            let Some(Msg::Turn(turn)) = message.msg else {
                continue;
            };
            if self
                .up
                .send(diligent_answer(&self.key, &turn))
                .await
                .is_err()
            {
                break;
            }
            answered += 1;
        }
        answered
    }

    /// Answers `first` (a turn already taken off the stream), then [`FakeWorker::serve`]s.
    pub async fn serve_from(self, first: v1::TurnRequest) -> usize {
        if self
            .up
            .send(diligent_answer(&self.key, &first))
            .await
            .is_err()
        {
            return 0;
        }
        1 + self.serve().await
    }
}

/// The answer a diligent worker gives to `turn`, signed with `key`.
fn diligent_answer(key: &KeyPair, turn: &v1::TurnRequest) -> v1::WorkerMessage {
    let phase = turn.turn.as_ref().unwrap().phase;
    let (entry_type, verdict) = match v1::Phase::try_from(phase).unwrap() {
        v1::Phase::Framing => (v1::EntryType::Framework, None),
        v1::Phase::Contribute => (v1::EntryType::Analysis, None),
        v1::Phase::Synthesize => (v1::EntryType::Proposal, None),
        _ => (v1::EntryType::Review, Some(v1::Verdict::Approve)),
    };
    let mut result = v1::TurnResult {
        turn: turn.turn.clone(),
        entry_type: entry_type as i32,
        content: format!("{entry_type:?} answer"),
        verdict: verdict.map_or(0, |v| v as i32),
        proposal_hash: turn.proposal_hash.clone(),
        ..Default::default()
    };
    agentmesh_proto::sign_result(key, &mut result, &turn.proposal_hash);
    v1::WorkerMessage {
        msg: Some(worker_message::Msg::Result(result)),
    }
}

/// Creates a session with `task`; returns its id.
pub async fn create_task(url: &str, task: &str, roles: &[&str]) -> String {
    let mut client = SessionServiceClient::connect(url.to_string())
        .await
        .unwrap();
    client
        .create_session(v1::CreateSessionRequest {
            task: task.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            max_rounds: 0,
            broadcast_rounds: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .id
}

/// Polls the session until it has ended; returns it.
pub async fn wait_end(url: &str, id: &str, timeout: Duration) -> v1::Session {
    let mut client = SessionServiceClient::connect(url.to_string())
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    loop {
        let session = client
            .get_session(v1::GetSessionRequest {
                session_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let status = v1::SessionStatus::try_from(session.status).unwrap();
        if matches!(
            status,
            v1::SessionStatus::Consensus
                | v1::SessionStatus::NoConsensus
                | v1::SessionStatus::Failed
                | v1::SessionStatus::Cancelled
                | v1::SessionStatus::Completed
        ) {
            return session;
        }
        assert!(
            start.elapsed() < timeout,
            "session {id} still {status:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn create(url: &str, roles: &[&str], broadcast_rounds: u32) -> String {
    let mut client = SessionServiceClient::connect(url.to_string())
        .await
        .unwrap();
    client
        .create_session(v1::CreateSessionRequest {
            task: "pipelining test".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            max_rounds: 0,
            broadcast_rounds,
        })
        .await
        .unwrap()
        .into_inner()
        .id
}
