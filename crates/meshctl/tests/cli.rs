//! The meshctl binary against a scripted `SessionService` on a loopback port: exact
//! output, exit codes, error lines, resuming a watch across broken streams and a server
//! restart, and waiting for a leader (`--wait`): what is retried, what is not, the bound.
//! (End-to-end runs against the real coordinator, a SIGKILLed leader included, live in
//! `tests/e2e`.)

use agentmesh_proto::v1::session_event::Event;
use agentmesh_proto::v1::session_service_server::{SessionService, SessionServiceServer};
use agentmesh_proto::v1::{self, SessionEvent, SessionStatus as S};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const T0: i64 = 1_795_498_212_345;

/// How one `WatchSession` call misbehaves after sending some events.
#[derive(Debug, Clone, Copy)]
enum Interrupt {
    /// Send this many events, then fail the stream with UNAVAILABLE.
    FailAfter(usize),
    /// Send this many events, then end the stream cleanly (a coordinator shutting down).
    EndAfter(usize),
    /// Send this many events, then hang (until the server dies).
    StallAfter(usize),
    /// Ignore `from_seq` and replay everything from seq 1.
    ReplayAll,
}

#[derive(Default)]
struct State {
    session: v1::Session,
    entries: Vec<v1::Entry>,
    events: Vec<SessionEvent>,
    workers: Vec<v1::WorkerInfo>,
    /// One per watch call, in order; once empty, calls behave.
    interrupts: VecDeque<Interrupt>,
    /// The `from_seq` of every watch call received.
    watch_from: Vec<u64>,
    created: Vec<v1::CreateSessionRequest>,
    cancelled: Vec<v1::CancelSessionRequest>,
    /// Answers the next unary calls give instead of serving (one each, in order).
    refusals: VecDeque<Status>,
    /// Unary calls received, refused ones included.
    unary_calls: usize,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    /// Counts a unary call; the next scripted refusal, if any, is its answer.
    fn refusal(&self) -> Result<(), Status> {
        let mut state = self.0.lock().unwrap();
        state.unary_calls += 1;
        match state.refusals.pop_front() {
            Some(status) => Err(status),
            None => Ok(()),
        }
    }

    fn session(&self, id: &str) -> Result<v1::Session, Status> {
        let state = self.0.lock().unwrap();
        if state.session.id == id {
            Ok(state.session.clone())
        } else {
            Err(Status::not_found(format!("session {id} not found")))
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<SessionEvent, Status>> + Send>>;

#[tonic::async_trait]
impl SessionService for Fake {
    async fn create_session(
        &self,
        request: Request<v1::CreateSessionRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        self.refusal()?;
        let mut state = self.0.lock().unwrap();
        state.created.push(request.into_inner());
        Ok(Response::new(state.session.clone()))
    }

    async fn get_session(
        &self,
        request: Request<v1::GetSessionRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        self.session(&request.into_inner().session_id)
            .map(Response::new)
    }

    async fn list_sessions(
        &self,
        _: Request<v1::ListSessionsRequest>,
    ) -> Result<Response<v1::ListSessionsResponse>, Status> {
        self.refusal()?;
        let state = self.0.lock().unwrap();
        let mut older = state.session.clone();
        older.id = "s0".into();
        older.created_ms -= 60_000;
        Ok(Response::new(v1::ListSessionsResponse {
            sessions: vec![older, state.session.clone()],
        }))
    }

    async fn cancel_session(
        &self,
        request: Request<v1::CancelSessionRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        self.refusal()?;
        let request = request.into_inner();
        let mut session = self.session(&request.session_id)?;
        session.status = S::Cancelled as i32;
        session.reason = request.reason.clone();
        self.0.lock().unwrap().cancelled.push(request);
        Ok(Response::new(session))
    }

    async fn list_workers(
        &self,
        _: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        self.refusal()?;
        let workers = self.0.lock().unwrap().workers.clone();
        Ok(Response::new(v1::ListWorkersResponse { workers }))
    }

    async fn get_transcript(
        &self,
        request: Request<v1::GetTranscriptRequest>,
    ) -> Result<Response<v1::Transcript>, Status> {
        self.refusal()?;
        let session = self.session(&request.into_inner().session_id)?;
        let entries = self.0.lock().unwrap().entries.clone();
        Ok(Response::new(v1::Transcript {
            session: Some(session),
            entries,
        }))
    }

    type WatchMeshStream = tokio_stream::Iter<std::vec::IntoIter<Result<v1::MeshEvent, Status>>>;

    async fn watch_mesh(
        &self,
        _request: Request<v1::WatchMeshRequest>,
    ) -> Result<Response<Self::WatchMeshStream>, Status> {
        Err(Status::unimplemented("meshctl does not watch the mesh"))
    }

    type WatchSessionStream = EventStream;

    async fn watch_session(
        &self,
        request: Request<v1::WatchSessionRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let request = request.into_inner();
        self.session(&request.session_id)?;
        let mut state = self.0.lock().unwrap();
        state.watch_from.push(request.from_seq);
        let interrupt = state.interrupts.pop_front();
        let from = match interrupt {
            Some(Interrupt::ReplayAll) => 0,
            _ => request.from_seq.saturating_sub(1) as usize,
        };
        let mut events: Vec<Result<SessionEvent, Status>> =
            state.events.iter().skip(from).cloned().map(Ok).collect();
        let stream: EventStream = match interrupt {
            Some(Interrupt::FailAfter(n)) => {
                events.truncate(n);
                events.push(Err(Status::unavailable("coordinator restarting")));
                Box::pin(tokio_stream::iter(events))
            }
            Some(Interrupt::EndAfter(n)) => {
                events.truncate(n);
                Box::pin(tokio_stream::iter(events))
            }
            Some(Interrupt::StallAfter(n)) => {
                events.truncate(n);
                use tokio_stream::StreamExt;
                Box::pin(tokio_stream::iter(events).chain(tokio_stream::pending()))
            }
            Some(Interrupt::ReplayAll) | None => Box::pin(tokio_stream::iter(events)),
        };
        Ok(Response::new(stream))
    }
}

fn entry(seq: u64, phase: v1::Phase, role: &str, ty: v1::EntryType, content: &str) -> v1::Entry {
    v1::Entry {
        seq,
        round: 1,
        phase: phase as i32,
        role: role.into(),
        worker_id: format!("{role}-1"),
        entry_type: ty as i32,
        timestamp_ms: T0 + seq as i64 * 1000,
        content: content.into(),
        ..Default::default()
    }
}

fn review(seq: u64, role: &str, verdict: v1::Verdict, concerns: &[&str]) -> v1::Entry {
    v1::Entry {
        verdict: verdict as i32,
        concerns: concerns.iter().map(|c| c.to_string()).collect(),
        proposal_version: 1,
        proposal_hash: HASH.into(),
        ..entry(
            seq,
            v1::Phase::Review,
            role,
            v1::EntryType::Review,
            "reviewed",
        )
    }
}

/// A one-round session between the supervisor and backend, ending in `end`.
fn scripted(end: S) -> State {
    let backend_verdict = if end == S::Consensus {
        review(5, "backend", v1::Verdict::Approve, &[])
    } else {
        review(
            5,
            "backend",
            v1::Verdict::Object,
            &["no rate limit per tenant", "no metrics"],
        )
    };
    let entries = vec![
        entry(
            1,
            v1::Phase::Framing,
            "supervisor",
            v1::EntryType::Framework,
            "Frame: two roles.",
        ),
        entry(
            2,
            v1::Phase::Contribute,
            "backend",
            v1::EntryType::Analysis,
            "Use token buckets.\nDetails follow.",
        ),
        v1::Entry {
            proposal_version: 1,
            proposal_hash: HASH.into(),
            ..entry(
                3,
                v1::Phase::Synthesize,
                "supervisor",
                v1::EntryType::Proposal,
                "# Proposal v1\nbody",
            )
        },
        review(4, "supervisor", v1::Verdict::Approve, &[]),
        backend_verdict,
    ];
    let mut session = v1::Session {
        id: "s1".into(),
        task: "Design a rate limiter".into(),
        roles: vec!["supervisor".into(), "backend".into()],
        max_rounds: 1,
        status: end as i32,
        round: 1,
        created_ms: T0,
        updated_ms: T0 + 6_000,
        entry_count: entries.len() as u64,
        assignments: vec![
            v1::Assignment {
                role: "supervisor".into(),
                worker_id: "supervisor-1".into(),
            },
            v1::Assignment {
                role: "backend".into(),
                worker_id: "backend-1".into(),
            },
        ],
        ..Default::default()
    };
    let reason = if end == S::Consensus {
        session.final_version = 1;
        session.final_hash = HASH.into();
        "every participant approved v1"
    } else {
        session.open_objections = vec![
            v1::Objection {
                role: "backend".into(),
                concern: "no rate limit per tenant".into(),
            },
            v1::Objection {
                role: "backend".into(),
                concern: "no metrics".into(),
            },
        ];
        "max rounds reached"
    };
    session.reason = reason.into();

    let status = |status: S, round: u32, awaiting: &[&str], reason: &str| {
        Event::Status(v1::StatusChange {
            status: status as i32,
            round,
            reason: reason.into(),
            awaiting: awaiting.iter().map(|a| a.to_string()).collect(),
        })
    };
    let mut timeline = vec![
        status(S::Pending, 0, &["supervisor", "backend"], ""),
        status(S::Framing, 1, &["supervisor"], ""),
        Event::Entry(entries[0].clone()),
        status(S::Contribute, 1, &["backend"], ""),
        Event::Entry(entries[1].clone()),
        status(S::Synthesize, 1, &["supervisor"], ""),
        Event::Entry(entries[2].clone()),
        status(S::Review, 1, &["supervisor", "backend"], ""),
        Event::Entry(entries[3].clone()),
        Event::Entry(entries[4].clone()),
    ];
    timeline.push(status(end, 1, &[], reason));
    let last = timeline.len();
    let events = timeline
        .into_iter()
        .enumerate()
        .map(|(i, event)| SessionEvent {
            seq: i as u64 + 1,
            session_id: "s1".into(),
            timestamp_ms: T0 + i as i64,
            event: Some(event),
            // Only the terminal event's snapshot matters to meshctl.
            session: (i + 1 == last).then(|| session.clone()),
            ephemeral: false,
        })
        .collect();
    State {
        session,
        entries,
        events,
        workers: vec![
            worker("security-1", "security", false),
            worker("backend-2", "backend", true),
            worker("backend-1", "backend", false),
        ],
        ..Default::default()
    }
}

fn worker(id: &str, role: &str, draining: bool) -> v1::WorkerInfo {
    v1::WorkerInfo {
        worker_id: id.into(),
        role: role.into(),
        capacity: 4,
        load: 1,
        version: "0.1.0".into(),
        connected_ms: T0,
        draining,
        turns_completed: 3,
        connected: true,
        leased: true,
        address: format!("node-{role}"),
    }
}

/// The live lines every follow of the scripted session prints, in order.
fn live_lines(end: S) -> Vec<String> {
    let mut lines: Vec<String> = [
        "[round 0] PENDING  awaiting: supervisor, backend",
        "[round 1] FRAMING  awaiting: supervisor",
        "#1 r1 FRAMING supervisor FRAMEWORK: Frame: two roles.",
        "[round 1] CONTRIBUTE  awaiting: backend",
        "#2 r1 CONTRIBUTE backend ANALYSIS: Use token buckets.",
        "[round 1] SYNTHESIZE  awaiting: supervisor",
        "#3 r1 SYNTHESIZE supervisor PROPOSAL v1: # Proposal v1",
        "[round 1] REVIEW  awaiting: supervisor, backend",
        "#4 r1 REVIEW supervisor  APPROVE: v1 (sha256 9f86d081884c)",
    ]
    .map(String::from)
    .to_vec();
    if end == S::Consensus {
        lines.extend([
            "#5 r1 REVIEW backend  APPROVE: v1 (sha256 9f86d081884c)".to_string(),
            "[round 1] CONSENSUS  reason: every participant approved v1".to_string(),
            "result: CONSENSUS after round 1".to_string(),
            "reason: every participant approved v1".to_string(),
            format!("final proposal: v1 sha256 {HASH}"),
        ]);
    } else {
        lines.extend(
            [
                "#5 r1 REVIEW backend  OBJECT: no rate limit per tenant (+1 more)",
                "[round 1] NO_CONSENSUS  reason: max rounds reached",
                "result: NO_CONSENSUS after round 1",
                "reason: max rounds reached",
                "open objections:",
                "  backend: no rate limit per tenant",
                "  backend: no metrics",
            ]
            .map(String::from),
        );
    }
    lines
}

/// A fake coordinator on its own runtime, so a test can kill it like a process.
struct Server {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
}

impl Server {
    fn start(fake: &Fake, addr: SocketAddr) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .expect("bind the fake coordinator");
        let addr = listener.local_addr().unwrap();
        let service = SessionServiceServer::new(fake.clone());
        runtime.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Server { runtime, addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Dies abruptly: every connection drops, as when the coordinator process is killed.
    fn kill(self) {
        self.runtime.shutdown_background();
    }
}

fn serve(state: State) -> (Fake, Server) {
    let fake = Fake(Arc::new(Mutex::new(state)));
    let server = Server::start(&fake, "127.0.0.1:0".parse().unwrap());
    (fake, server)
}

fn meshctl(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    command
        .args(args)
        .env("MESH_COORDINATOR", url)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

fn run(url: &str, args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = meshctl(url, args).output().expect("run meshctl");
    (
        status.code().expect("meshctl exited by a signal"),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(String::from).collect()
}

#[test]
fn watch_prints_every_event_once_across_broken_streams() {
    let mut state = scripted(S::NoConsensus);
    state.interrupts = [
        Interrupt::FailAfter(3),
        Interrupt::EndAfter(2),
        Interrupt::ReplayAll,
    ]
    .into();
    let (fake, server) = serve(state);
    let (code, stdout, stderr) = run(&server.url(), &["watch", "s1"]);
    assert_eq!(code, 2, "stderr: {stderr}");
    assert_eq!(lines(&stdout), live_lines(S::NoConsensus));
    // Resumed after seq 3, then after seq 5; the replay from 1 was deduplicated.
    assert_eq!(fake.0.lock().unwrap().watch_from, vec![1, 4, 6]);
    assert!(stderr.contains("reconnecting"), "stderr: {stderr}");
    server.kill();
}

#[test]
fn watch_resumes_after_the_coordinator_restarts() {
    let mut state = scripted(S::Consensus);
    state.interrupts = [Interrupt::StallAfter(4)].into();
    let fake = Fake(Arc::new(Mutex::new(state)));
    let server = Server::start(&fake, "127.0.0.1:0".parse().unwrap());
    let addr = server.addr;
    let mut child = meshctl(&server.url(), &["watch", "s1", "--reconnect-timeout", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    for _ in 0..4 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        seen.push(line.trim_end().to_string());
    }
    // meshctl's stderr, line by line, as it comes.
    let (err_tx, err_rx) = std::sync::mpsc::channel::<String>();
    let err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = err_tx.send(line);
        }
    });
    server.kill();
    // The coordinator stays down until meshctl has found nobody listening at least once.
    let mut stderr = String::new();
    loop {
        let line = err_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("meshctl says it is reconnecting");
        stderr.push_str(&line);
        stderr.push('\n');
        if line.contains("reconnecting") && line.to_lowercase().contains("refused") {
            break;
        }
    }
    let restarted = Server::start(&fake, addr);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    for line in err_rx.try_iter() {
        stderr.push_str(&line);
        stderr.push('\n');
    }
    seen.extend(lines(&rest));
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(seen, live_lines(S::Consensus));
    let watch_from = fake.0.lock().unwrap().watch_from.clone();
    assert_eq!(watch_from, vec![1, 5]);
    restarted.kill();
}

#[test]
fn run_prints_the_session_id_first_and_follows() {
    let (fake, server) = serve(scripted(S::Consensus));
    let (code, stdout, stderr) = run(
        &server.url(),
        &[
            "run",
            "Design a rate limiter",
            "--roles",
            "backend",
            "--max-rounds",
            "1",
        ],
    );
    assert_eq!(code, 0, "stderr: {stderr}");
    let mut expected = vec!["session s1".to_string()];
    expected.extend(live_lines(S::Consensus));
    assert_eq!(lines(&stdout), expected);
    let created = fake.0.lock().unwrap().created.clone();
    assert_eq!(
        created,
        vec![v1::CreateSessionRequest {
            task: "Design a rate limiter".into(),
            roles: vec!["backend".into()],
            max_rounds: 1,
            ..Default::default()
        }]
    );
    server.kill();
}

#[test]
fn run_detached_prints_only_the_session_id() {
    let (fake, server) = serve(scripted(S::Failed));
    let (code, stdout, _) = run(&server.url(), &["run", "t", "--detach"]);
    assert_eq!(code, 0);
    assert_eq!(stdout, "session s1\n");
    let state = fake.0.lock().unwrap();
    assert!(state.watch_from.is_empty());
    assert_eq!(state.created[0].roles, Vec::<String>::new());
    assert_eq!(state.created[0].max_rounds, 0);
    drop(state);
    server.kill();
}

#[test]
fn a_failed_session_exits_1() {
    let (_, server) = serve(scripted(S::Failed));
    let (code, stdout, _) = run(&server.url(), &["watch", "s1"]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("\nresult: FAILED after round 1\n"),
        "{stdout}"
    );
    server.kill();
}

#[test]
fn grpc_errors_print_code_and_message() {
    let (_, server) = serve(scripted(S::Consensus));
    for args in [
        &["watch", "nope"][..],
        &["show", "nope"],
        &["export", "nope"],
        &["cancel", "nope"],
    ] {
        let (code, stdout, stderr) = run(&server.url(), args);
        assert_eq!(code, 1, "{args:?}");
        assert_eq!(stdout, "", "{args:?}");
        assert_eq!(
            stderr, "error: NotFound: session nope not found\n",
            "{args:?}"
        );
    }
    server.kill();
}

/// A port that was just free: nothing listens there (until a test starts a server on it).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn an_unreachable_coordinator_is_named() {
    let port = free_addr().port();
    let (code, _, stderr) = run(&format!("127.0.0.1:{port}"), &["sessions", "--wait", "0"]);
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with(&format!(
            "error: cannot reach coordinator at http://127.0.0.1:{port}: "
        )),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "--wait 0 does not wait: {stderr}"
    );
}

#[test]
fn nothing_listening_gives_up_after_the_bound_with_one_waiting_line() {
    let port = free_addr().port();
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = run(&format!("127.0.0.1:{port}"), &["--wait", "1s", "sessions"]);
    let took = started.elapsed();
    assert_eq!(code, 1);
    assert_eq!(stdout, "");
    let lines = lines(&stderr);
    assert_eq!(lines.len(), 2, "{stderr}");
    assert_eq!(
        lines[0],
        format!(
            "waiting for a leader (cannot reach coordinator at http://127.0.0.1:{port}: connection refused): retrying for up to 1s"
        )
    );
    assert!(
        lines[1].starts_with(&format!(
            "error: cannot reach coordinator at http://127.0.0.1:{port}: "
        )) && lines[1].ends_with(" (no leader answered within 1s)"),
        "{}",
        lines[1]
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "gave up after {took:?}"
    );
}

/// Spawns meshctl against `addr` (nothing listens yet), waits until it says it is
/// waiting, then starts the server there: the command must go through.
fn waits_for_a_coordinator_that_comes_up(args: &[&str], state: State) -> (Fake, String) {
    let addr = free_addr();
    let url = format!("http://{addr}");
    let mut child = meshctl(&url, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert_eq!(
        first,
        format!(
            "waiting for a leader (cannot reach coordinator at {url}: connection refused): retrying for up to 15s\n"
        ),
        "{args:?}"
    );
    let fake = Fake(Arc::new(Mutex::new(state)));
    let server = Server::start(&fake, addr);
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{args:?}: {rest}");
    assert_eq!(rest, "", "one waiting line, nothing else: {args:?}");
    server.kill();
    (fake, stdout)
}

#[test]
fn one_shot_commands_wait_for_a_coordinator_that_is_restarting() {
    let (_, stdout) = waits_for_a_coordinator_that_comes_up(&["sessions"], scripted(S::Review));
    assert!(stdout.starts_with("ID  STATUS"), "{stdout}");
    let (_, stdout) = waits_for_a_coordinator_that_comes_up(&["show", "s1"], scripted(S::Review));
    assert!(stdout.starts_with("id        s1\n"), "{stdout}");
    let (fake, stdout) = waits_for_a_coordinator_that_comes_up(
        &["cancel", "s1", "--reason", "r"],
        scripted(S::Review),
    );
    assert_eq!(stdout, "session s1 CANCELLED\n");
    assert_eq!(fake.0.lock().unwrap().cancelled.len(), 1);
    // Refused connections prove CreateSession reached nobody: it is sent once it can be.
    let (fake, stdout) =
        waits_for_a_coordinator_that_comes_up(&["run", "t", "--detach"], scripted(S::Review));
    assert_eq!(stdout, "session s1\n");
    assert_eq!(fake.0.lock().unwrap().created.len(), 1);
}

/// What a standby answers while an election is under way (the coordinator's gate).
fn standby_refusal() -> Status {
    Status::unavailable(
        "this coordinator is a standby and no leader is elected yet; retry shortly; no leader is elected yet",
    )
}

#[test]
fn unavailable_is_waited_out_and_the_wait_is_said_once() {
    let mut state = scripted(S::Consensus);
    state.refusals = [
        standby_refusal(),
        Status::unavailable(
            "cannot reach the leader at http://10.0.0.1:7700 (transport error); retry shortly",
        ),
        standby_refusal(),
    ]
    .into();
    let (fake, server) = serve(state);
    let (code, stdout, stderr) = run(&server.url(), &["sessions"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("ID  STATUS"), "{stdout}");
    assert_eq!(
        stderr,
        "waiting for a leader (Unavailable: this coordinator is a standby and no leader is elected yet; retry shortly; no leader is elected yet): retrying for up to 15s\n"
    );
    assert_eq!(fake.0.lock().unwrap().unary_calls, 4);
    server.kill();
}

#[test]
fn answers_that_will_not_change_are_not_retried() {
    for refusal in [
        Status::invalid_argument("task must not be empty"),
        Status::not_found("session s9 not found"),
        Status::failed_precondition("session s1 has already ended (CANCELLED)"),
        Status::internal("store failure: boom"),
    ] {
        let mut state = scripted(S::Consensus);
        let expected = format!("error: {:?}: {}\n", refusal.code(), refusal.message());
        state.refusals = [refusal].into();
        let (fake, server) = serve(state);
        let (code, _, stderr) = run(&server.url(), &["sessions"]);
        assert_eq!(code, 1);
        assert_eq!(stderr, expected);
        assert_eq!(fake.0.lock().unwrap().unary_calls, 1);
        server.kill();
    }
}

#[test]
fn create_session_is_sent_again_only_when_no_leader_got_it() {
    // A standby refused to forward it (mid-election), then could not connect to the
    // leader: neither reached a leader, so resending cannot create a second session.
    let mut state = scripted(S::Review);
    state.refusals = [
        standby_refusal(),
        Status::unavailable(
            "cannot reach the leader at http://10.0.0.1:7700 (transport error: tcp connect error: Connection refused (os error 111)); retry shortly; the leader is http://10.0.0.1:7700",
        ),
        Status::unavailable("this coordinator is taking over as leader; retry shortly; the leader is http://10.0.0.2:7700"),
    ]
    .into();
    let (fake, server) = serve(state);
    let (code, stdout, stderr) = run(&server.url(), &["run", "t", "--detach"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "session s1\n");
    assert!(stderr.starts_with("waiting for a leader ("), "{stderr}");
    let state = fake.0.lock().unwrap();
    assert_eq!((state.unary_calls, state.created.len()), (4, 1));
    drop(state);
    server.kill();

    // The leader itself answered UNAVAILABLE, or a standby lost the leader mid-call:
    // the session may exist, so meshctl reports instead of creating another.
    for refusal in [
        Status::unavailable("the coordinator is shutting down"),
        Status::unavailable(
            "cannot reach the leader at http://10.0.0.1:7700 (connection reset by peer); retry shortly",
        ),
        Status::unknown("h2 protocol error: stream reset"),
    ] {
        let mut state = scripted(S::Review);
        let expected = format!("error: {:?}: {}\n", refusal.code(), refusal.message());
        state.refusals = [refusal].into();
        let (fake, server) = serve(state);
        let (code, stdout, stderr) = run(&server.url(), &["run", "t", "--detach"]);
        assert_eq!(code, 1);
        assert_eq!(stdout, "");
        assert_eq!(stderr, expected);
        assert_eq!(fake.0.lock().unwrap().unary_calls, 1, "not sent again");
        server.kill();
    }
}

#[test]
fn show_prints_details_and_the_verdict_matrix() {
    let (_, server) = serve(scripted(S::NoConsensus));
    let (code, stdout, _) = run(&server.url(), &["show", "s1"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        "id        s1\n\
         task      Design a rate limiter\n\
         status    NO_CONSENSUS\n\
         round     1 of 1\n\
         reason    max rounds reached\n\
         created   2026-11-24 05:30:12 UTC\n\
         updated   2026-11-24 05:30:18 UTC\n\
         entries   5\n\
         roles\n\
         \x20 supervisor  supervisor-1\n\
         \x20 backend     backend-1\n\
         open objections\n\
         \x20 backend: no rate limit per tenant\n\
         \x20 backend: no metrics\n\
         \n\
         verdicts\n\
         ROLE        r1\n\
         supervisor  APPROVE\n\
         backend     OBJECT\n\
         \n\
         sign-offs (checked here: chain and signature)\n\
         \x20 #4 r1  supervisor  APPROVE v1  no key  NOT VERIFIED (seq 1 public_key: missing: \
         the entry is not signed by a worker key)\n",
        "a sign-off of this unsigned transcript is never marked verified"
    );

    let (code, stdout, _) = run(&server.url(), &["show", "s1", "--json"]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["session"]["id"], "s1");
    assert_eq!(doc["session"]["status"], "NO_CONSENSUS");
    assert_eq!(doc["signoffs"][0]["seq"], 4);
    assert_eq!(doc["signoffs"][0]["verified"], false);
    assert_eq!(doc["certificate"]["present"], false);
    assert_eq!(doc["session"]["assignments"]["backend"], "backend-1");
    assert_eq!(
        doc["verdicts"],
        serde_json::json!({
            "rounds": [1],
            "rows": [
                {"role": "supervisor", "verdicts": ["APPROVE"]},
                {"role": "backend", "verdicts": ["OBJECT"]},
            ],
        })
    );
    server.kill();
}

#[test]
fn sessions_list_newest_first() {
    let (_, server) = serve(scripted(S::Consensus));
    let (code, stdout, _) = run(&server.url(), &["sessions"]);
    assert_eq!(code, 0);
    let table = lines(&stdout);
    assert_eq!(table.len(), 3);
    assert_eq!(
        table[0],
        "ID  STATUS     ROUND  ROLES  ENTRIES  UPDATED  TASK"
    );
    // The age depends on today's date; everything else is fixed.
    assert!(
        table[1].starts_with("s1  CONSENSUS  1/1    2      5        "),
        "{}",
        table[1]
    );
    assert!(
        table[1].ends_with(" ago   Design a rate limiter"),
        "{}",
        table[1]
    );
    assert!(table[2].starts_with("s0  "), "{}", table[2]);

    let (code, stdout, _) = run(&server.url(), &["sessions", "--json"]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let ids: Vec<&str> = doc
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s1", "s0"]);
    assert_eq!(doc[0]["final_hash"], HASH);
    assert_eq!(doc[0]["entry_count"], 5);
    server.kill();
}

#[test]
fn workers_sort_by_role_then_id() {
    let (_, server) = serve(scripted(S::Consensus));
    let (code, stdout, _) = run(&server.url(), &["workers"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        "WORKER      ROLE      LOAD  TURNS  DRAINING  STATE  ADDRESS        VERSION\n\
         backend-1   backend   1/4   3      no        live   node-backend   0.1.0\n\
         backend-2   backend   1/4   3      yes       live   node-backend   0.1.0\n\
         security-1  security  1/4   3      no        live   node-security  0.1.0\n"
    );
    let (_, stdout, _) = run(&server.url(), &["workers", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        doc[1],
        serde_json::json!({
            "worker_id": "backend-2", "role": "backend", "load": 1, "capacity": 4,
            "turns_completed": 3, "draining": true, "version": "0.1.0", "connected_ms": T0,
            "connected": true, "leased": true, "address": "node-backend",
        })
    );
    server.kill();
}

#[test]
fn cancel_sends_the_reason_and_prints_the_new_status() {
    let (fake, server) = serve(scripted(S::Review));
    let (code, stdout, _) = run(
        &server.url(),
        &["cancel", "s1", "--reason", "changed my mind"],
    );
    assert_eq!(code, 0);
    assert_eq!(stdout, "session s1 CANCELLED\n");
    assert_eq!(
        fake.0.lock().unwrap().cancelled[0].reason,
        "changed my mind"
    );
    server.kill();
}

#[test]
fn export_writes_the_core_formats() {
    let state = scripted(S::Consensus);
    let core_entries: Vec<agentmesh_core::Entry> = state
        .entries
        .iter()
        .map(|e| agentmesh_core::Entry::try_from(e).unwrap())
        .collect();
    let summary = agentmesh_core::SessionSummary::try_from(&state.session).unwrap();
    let (_, server) = serve(state);

    let (code, stdout, _) = run(&server.url(), &["export", "s1", "--format", "md"]);
    assert_eq!(code, 0);
    assert_eq!(stdout, agentmesh_core::export::markdown(&core_entries));
    assert!(stdout.starts_with("### [SUPERVISOR] [2026-11-24 05:30:13] UTC\n"));

    let dir = std::env::temp_dir().join(format!("meshctl-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("s1.json");
    let (code, stdout, _) = run(
        &server.url(),
        &[
            "export",
            "s1",
            "--format",
            "json",
            "--output",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(stdout, "");
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        written,
        format!(
            "{}\n",
            agentmesh_core::export::json(&summary, &core_entries)
        )
    );
    let (summary_back, entries_back) = agentmesh_core::export::from_json(&written).unwrap();
    assert_eq!(summary_back, summary);
    assert_eq!(entries_back, core_entries);
    std::fs::remove_dir_all(&dir).unwrap();
    server.kill();
}
