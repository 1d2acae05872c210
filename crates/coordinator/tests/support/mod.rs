//! What the coordinator's integration tests share: a real coordinator
//! (`agentmesh_coordinator::run`) on loopback, gRPC clients playing the workers, and a
//! memory store whose writes the test can hold back and whose reads it can count.

#![allow(dead_code)] // each test file uses its own part

use agentmesh_coordinator::{Backends, CoordinatorConfig, Listeners};
use agentmesh_core::{Entry, SessionSummary};
use agentmesh_proto::v1::{
    self, coordinator_message::Msg, session_service_client::SessionServiceClient, worker_message,
    worker_service_client::WorkerServiceClient,
};
use agentmesh_store::{Fence, MemoryStore, SessionStore, SoleLeader, StoreFuture};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// A memory store whose writes wait while the gate is closed.
pub struct GatedStore {
    inner: MemoryStore,
    open: watch::Sender<bool>,
    /// Writes waiting at the gate now.
    waiting: AtomicUsize,
    /// Transcript reads so far.
    entry_reads: AtomicUsize,
}

impl GatedStore {
    pub fn new() -> Arc<GatedStore> {
        Arc::new(GatedStore {
            inner: MemoryStore::new(),
            open: watch::channel(true).0,
            waiting: AtomicUsize::new(0),
            entry_reads: AtomicUsize::new(0),
        })
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
            self.inner.write(fence, header, entries).await
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, SessionSummary> {
        self.inner.get(id)
    }

    fn entries<'a>(&'a self, id: &'a str, from_seq: u64) -> StoreFuture<'a, Vec<Entry>> {
        self.entry_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.entries(id, from_seq)
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
    };
    let backends = Backends {
        store,
        election: Arc::new(SoleLeader::new()),
        workers: None,
        durable: false,
    };
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
        let mut client = WorkerServiceClient::connect(url.to_string()).await.unwrap();
        let (up, rx) = mpsc::channel(16);
        up.send(v1::WorkerMessage {
            msg: Some(worker_message::Msg::Hello(v1::Hello {
                role: role.into(),
                worker_id: format!("{role}-1"),
                capacity: 1,
                version: "test".into(),
                cursors,
            })),
        })
        .await
        .unwrap();
        let down = client
            .attach(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let mut worker = FakeWorker { up, down };
        assert!(matches!(worker.next().await, Msg::Welcome(_)));
        worker
    }

    /// The next message that is not a ping.
    pub async fn next(&mut self) -> Msg {
        loop {
            let message = tokio::time::timeout(PROMPT, self.down.message())
                .await
                .expect("the coordinator answers promptly")
                .unwrap()
                .expect("the stream stays open");
            match message.msg.unwrap() {
                Msg::Ping(_) => continue,
                msg => return msg,
            }
        }
    }

    pub async fn next_turn(&mut self) -> v1::TurnRequest {
        match self.next().await {
            Msg::Turn(turn) => turn,
            other => panic!("expected a turn, got {other:?}"),
        }
    }

    pub async fn answer(&self, turn: &v1::TurnRequest, entry_type: v1::EntryType, content: &str) {
        self.up
            .send(v1::WorkerMessage {
                msg: Some(worker_message::Msg::Result(v1::TurnResult {
                    turn: turn.turn.clone(),
                    entry_type: entry_type as i32,
                    content: content.into(),
                    ..Default::default()
                })),
            })
            .await
            .unwrap();
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
