//! The end-to-end harness: starts the real `mesh-coordinator`, `mesh-worker` and
//! `meshctl` binaries as child processes on ephemeral loopback ports, and talks to them
//! over real gRPC.
//!
//! # Layout
//!
//! - [`bin`]: where the workspace's binaries are (built by `make test` before the tests).
//! - [`Proc`]: a child process we started; killed (by its pid) and reaped on drop. Its
//!   stderr goes to a log file that failing tests print.
//! - [`Cluster`]: one coordinator plus workers, with gRPC clients and wait helpers.
//! - [`docker`]: the compose cluster of the container images, and the faults injected
//!   into it (container kill, network cut, etcd members stopped, rolling restart).
//!
//! Every wait is bounded in time; nothing here touches an address other than 127.0.0.1.

pub mod chart;
pub mod docker;
pub mod mock_model;
pub mod otlp;
pub mod pki;
pub mod prometheus;
pub mod proxy;
pub mod webdriver;

use agentmesh_proto::v1::session_service_client::SessionServiceClient;
use agentmesh_proto::v1::{self, SessionStatus};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Path of a workspace binary, next to the test executable's `deps/` directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`; `make test` does it)",
        path.display()
    );
    path
}

/// A directory for this test process's logs.
pub fn log_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agentmesh-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create log dir");
    dir
}

static NEXT_LOG: AtomicU32 = AtomicU32::new(0);

/// A child process this test started. Dropping it kills it (SIGKILL, by pid) and reaps it.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, program: &Path, args: &[String]) -> Proc {
        let n = NEXT_LOG.fetch_add(1, Ordering::SeqCst);
        let log = log_dir().join(format!("{n:03}-{name}.log"));
        let file = std::fs::File::create(&log).expect("create log");
        let child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal to this child (and only this child).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Waits up to `timeout` for the child to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the process's log holds `needle`; panics with the log after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.log_text().contains(needle) {
            assert!(
                start.elapsed() < timeout,
                "{} never logged {needle:?} within {timeout:?}:\n{}",
                self.name,
                tail(&self.log_text(), 30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Options for a coordinator.
#[derive(Clone)]
pub struct CoordinatorOpts {
    pub phase_timeout: &'static str,
    pub pending_timeout: &'static str,
    pub extra: Vec<String>,
}

impl Default for CoordinatorOpts {
    fn default() -> Self {
        CoordinatorOpts {
            phase_timeout: "30s",
            pending_timeout: "30s",
            extra: Vec::new(),
        }
    }
}

/// One coordinator and its workers.
pub struct Cluster {
    pub coordinator: Proc,
    pub addr: String,
    pub url: String,
    /// The coordinator's HTTP address (probes), when it serves one.
    pub http: Option<String>,
    /// Workers by worker id.
    pub workers: BTreeMap<String, Proc>,
    pub rt: tokio::runtime::Runtime,
}

impl Cluster {
    /// Starts a coordinator on an ephemeral loopback port.
    pub fn start(opts: CoordinatorOpts) -> Cluster {
        Self::start_on("127.0.0.1:0", opts)
    }

    pub fn start_on(listen: &str, opts: CoordinatorOpts) -> Cluster {
        let (coordinator, addr, http) = start_coordinator(listen, &opts);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        Cluster {
            url: format!("http://{addr}"),
            http,
            addr,
            coordinator,
            workers: BTreeMap::new(),
            rt,
        }
    }

    /// Starts a worker process with id `id` for `role`.
    pub fn add_worker(&mut self, role: &str, id: &str, extra: &[&str]) {
        let mut args = vec![
            "--role".to_string(),
            role.to_string(),
            "--id".to_string(),
            id.to_string(),
            "--coordinator".to_string(),
            self.url.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn(id, &bin("mesh-worker"), &args);
        self.workers.insert(id.to_string(), proc);
    }

    /// One worker per role (ids `<role>-1`), each with `extra` flags, and waits for them.
    pub fn add_roles(&mut self, roles: &[&str], replicas: usize, extra: &[&str]) {
        for role in roles {
            for i in 1..=replicas {
                self.add_worker(role, &format!("{role}-{i}"), extra);
            }
        }
        let want = self.workers.len();
        self.wait_workers(want, Duration::from_secs(30));
    }

    pub fn client(&self) -> SessionServiceClient<Channel> {
        let url = self.url.clone();
        self.rt.block_on(async move {
            let channel = tonic::transport::Endpoint::from_shared(url)
                .expect("url")
                .connect()
                .await
                .expect("connect to coordinator");
            SessionServiceClient::new(channel)
        })
    }

    pub fn workers_connected(&self) -> Vec<v1::WorkerInfo> {
        let mut client = self.client();
        self.rt.block_on(async move {
            client
                .list_workers(v1::ListWorkersRequest {})
                .await
                .map(|r| r.into_inner().workers)
                .unwrap_or_default()
        })
    }

    /// Waits until exactly `n` workers are connected.
    pub fn wait_workers(&self, n: usize, timeout: Duration) {
        let start = Instant::now();
        loop {
            let have = self.workers_connected().len();
            if have == n {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "{have} of {n} workers connected after {timeout:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn create(&self, task: &str, roles: &[&str], max_rounds: u32) -> v1::Session {
        let mut client = self.client();
        let request = v1::CreateSessionRequest {
            task: task.to_string(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            max_rounds,
            ..Default::default()
        };
        self.rt
            .block_on(async move { client.create_session(request).await })
            .expect("create session")
            .into_inner()
    }

    /// The session as the coordinator sees it. A coordinator that just (re)started may
    /// answer UNAVAILABLE for a moment while it takes the lead: retried for up to 10 s.
    pub fn session(&self, id: &str) -> v1::Session {
        let start = Instant::now();
        loop {
            let mut client = self.client();
            let request = v1::GetSessionRequest {
                session_id: id.to_string(),
            };
            match self
                .rt
                .block_on(async move { client.get_session(request).await })
            {
                Ok(response) => return response.into_inner(),
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && start.elapsed() < Duration::from_secs(10) =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(status) => panic!("get session {id}: {status:?}"),
            }
        }
    }

    pub fn transcript(&self, id: &str) -> v1::Transcript {
        let mut client = self.client();
        let request = v1::GetTranscriptRequest {
            session_id: id.to_string(),
        };
        self.rt
            .block_on(async move { client.get_transcript(request).await })
            .expect("get transcript")
            .into_inner()
    }

    /// Polls until `pred` holds for the session, or panics with the logs after `timeout`.
    pub fn wait_session(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&v1::Session) -> bool,
    ) -> v1::Session {
        let start = Instant::now();
        loop {
            let session = self.session(id);
            if pred(&session) {
                return session;
            }
            assert!(
                start.elapsed() < timeout,
                "session {id} not {what} after {timeout:?}: {} round {} reason {:?}\n{}",
                agentmesh_proto::status_name(session.status),
                session.round,
                session.reason,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the session to reach a terminal status.
    pub fn wait_end(&self, id: &str, timeout: Duration) -> v1::Session {
        self.wait_session(id, timeout, "ended", |s| is_terminal(s.status))
    }

    /// Runs meshctl against this cluster.
    pub fn meshctl(&self, args: &[&str]) -> Output {
        meshctl(&self.url, args)
    }

    /// The tail of every process log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = format!(
            "--- coordinator log ---\n{}",
            tail(&self.coordinator.log_text(), 40)
        );
        for (id, w) in &self.workers {
            out.push_str(&format!("--- {id} log ---\n{}", tail(&w.log_text(), 15)));
        }
        out
    }
}

/// Starts a coordinator process; returns it with its gRPC and HTTP addresses.
pub fn start_coordinator(listen: &str, opts: &CoordinatorOpts) -> (Proc, String, Option<String>) {
    let mut args = vec![
        "--listen".to_string(),
        listen.to_string(),
        "--http".to_string(),
        "127.0.0.1:0".to_string(),
        "--phase-timeout".to_string(),
        opts.phase_timeout.to_string(),
        "--pending-timeout".to_string(),
        opts.pending_timeout.to_string(),
    ];
    args.extend(opts.extra.iter().cloned());
    let mut proc = Proc::spawn("coordinator", &bin("mesh-coordinator"), &args);
    let stdout = proc.child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(("grpc", addr.trim().to_string()));
            }
            if let Some(addr) = line.strip_prefix("http on ") {
                let _ = tx.send(("http", addr.trim().to_string()));
            }
        }
    });
    let mut grpc = None;
    let mut http = None;
    while grpc.is_none() || http.is_none() {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(("grpc", addr)) => grpc = Some(addr),
            Ok((_, addr)) => http = Some(addr),
            Err(_) => panic!("coordinator did not start:\n{}", proc.log_text()),
        }
    }
    (proc, grpc.unwrap(), http)
}

/// A plain HTTP/1.0 GET on loopback: (status code, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((code, body))
}

/// Runs meshctl with `--coordinator url`.
pub fn meshctl(url: &str, args: &[&str]) -> Output {
    Command::new(bin("meshctl"))
        .arg("--coordinator")
        .arg(url)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run meshctl")
}

pub fn is_terminal(status: i32) -> bool {
    matches!(
        SessionStatus::try_from(status),
        Ok(SessionStatus::Consensus
            | SessionStatus::NoConsensus
            | SessionStatus::Cancelled
            | SessionStatus::Failed)
    )
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n") + "\n"
}

/// Checks the transcript invariants every ended session must satisfy: gapless seq from
/// 1, and on CONSENSUS a sign-off by every participant on the final proposal hash.
pub fn assert_transcript_sound(t: &v1::Transcript) {
    let session = t.session.as_ref().expect("session");
    for (i, e) in t.entries.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "seq gap at index {i}");
    }
    if session.status == SessionStatus::Consensus as i32 {
        let last_round: Vec<&v1::Entry> = t
            .entries
            .iter()
            .filter(|e| e.round == session.round && e.phase == v1::Phase::Review as i32)
            .collect();
        for role in &session.roles {
            assert!(
                last_round.iter().any(|e| &e.role == role
                    && e.verdict == v1::Verdict::Approve as i32
                    && e.proposal_hash == session.final_hash),
                "role {role} did not sign {}",
                session.final_hash
            );
        }
        let proposal = t
            .entries
            .iter()
            .rev()
            .find(|e| e.phase == v1::Phase::Synthesize as i32)
            .expect("a proposal");
        assert_eq!(
            agentmesh_core::hash::proposal_hash(&proposal.content),
            session.final_hash,
            "final hash is the SHA-256 of the last proposal"
        );
    }
}
