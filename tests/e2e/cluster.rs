//! Cluster mode against a real etcd: leader election, standbys that forward clients to
//! the leader (gRPC and HTTP, watches included, across the leader's death) and are ready
//! only while they reach etcd, failover with SIGKILL, worker leases (a frozen worker), an
//! etcd restart, and the embedded mode's `--data-dir` surviving a coordinator restart.

use crate::ALL_ROLES;
use agentmesh_e2e::{
    CoordinatorOpts, Proc, assert_transcript_sound, bin, http_get, is_terminal, start_coordinator,
};
use agentmesh_etcd_testkit::EtcdServer;
use agentmesh_proto::v1::session_service_client::SessionServiceClient;
use agentmesh_proto::v1::{self, SessionStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::time::{Duration, Instant};

struct Coordinator {
    proc: Proc,
    url: String,
    http: String,
}

/// etcd, coordinators and workers, all real processes.
struct EtcdMesh {
    etcd: EtcdServer,
    coordinators: Vec<Coordinator>,
    workers: BTreeMap<String, Proc>,
    rt: tokio::runtime::Runtime,
}

impl EtcdMesh {
    fn start(coordinators: usize) -> EtcdMesh {
        let etcd = EtcdServer::start().expect("start etcd");
        let mut mesh = EtcdMesh {
            etcd,
            coordinators: Vec::new(),
            workers: BTreeMap::new(),
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        };
        for i in 0..coordinators {
            mesh.add_coordinator(&format!("c{i}"));
        }
        mesh
    }

    fn add_coordinator(&mut self, id: &str) {
        let endpoint = self.etcd.endpoint();
        self.add_coordinator_via(id, &endpoint);
    }

    /// A coordinator that reaches etcd at `etcd` (the server itself, or a proxy to it).
    fn add_coordinator_via(&mut self, id: &str, etcd: &str) {
        let opts = CoordinatorOpts {
            extra: vec!["--etcd".into(), etcd.into(), "--id".into(), id.into()],
            ..CoordinatorOpts::default()
        };
        let (proc, addr, http) = start_coordinator("127.0.0.1:0", &opts);
        self.coordinators.push(Coordinator {
            proc,
            url: format!("http://{addr}"),
            http: http.expect("http address"),
        });
    }

    fn add_worker(&mut self, role: &str, id: &str, extra: &[&str]) {
        let mut args: Vec<String> = vec![
            "--role".into(),
            role.into(),
            "--id".into(),
            id.into(),
            "--etcd".into(),
            self.etcd.endpoint(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.workers
            .insert(id.to_string(), Proc::spawn(id, &bin("mesh-worker"), &args));
    }

    /// The index of the coordinator whose /readyz says it leads.
    fn leader(&self, timeout: Duration) -> usize {
        let start = Instant::now();
        loop {
            let leaders: Vec<usize> = self
                .coordinators
                .iter()
                .enumerate()
                .filter(|(_, c)| {
                    matches!(http_get(&c.http, "/readyz"), Some((200, body)) if body == "leader\n")
                })
                .map(|(i, _)| i)
                .collect();
            if leaders.len() == 1 {
                return leaders[0];
            }
            assert!(
                leaders.len() <= 1,
                "two coordinators claim to lead: {leaders:?}"
            );
            assert!(
                start.elapsed() < timeout,
                "no leader after {timeout:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn client(&self, url: &str) -> SessionServiceClient<tonic::transport::Channel> {
        let url = url.to_string();
        self.rt.block_on(async move {
            let channel = tonic::transport::Endpoint::from_shared(url)
                .unwrap()
                .connect()
                .await
                .expect("connect");
            SessionServiceClient::new(channel)
        })
    }

    fn meshctl(&self, args: &[&str]) -> Output {
        std::process::Command::new(bin("meshctl"))
            .arg("--etcd")
            .arg(self.etcd.endpoint())
            .args(args)
            .output()
            .expect("meshctl")
    }

    /// Waits until the leader lists `n` connected, leased workers.
    fn wait_workers(&self, n: usize, timeout: Duration) {
        let start = Instant::now();
        loop {
            let leader = self.leader(timeout);
            let mut client = self.client(&self.coordinators[leader].url);
            let workers = self
                .rt
                .block_on(async move { client.list_workers(v1::ListWorkersRequest {}).await })
                .map(|r| r.into_inner().workers)
                .unwrap_or_default();
            if workers.iter().filter(|w| w.connected && w.leased).count() == n {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "{} of {n} workers ready\n{}",
                workers.len(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A session as the current leader sees it.
    fn session(&self, id: &str) -> Option<v1::Session> {
        let leader = self.leader(Duration::from_secs(30));
        let mut client = self.client(&self.coordinators[leader].url);
        let request = v1::GetSessionRequest {
            session_id: id.to_string(),
        };
        self.rt
            .block_on(async move { client.get_session(request).await })
            .ok()
            .map(|r| r.into_inner())
    }

    fn transcript(&self, id: &str) -> v1::Transcript {
        let leader = self.leader(Duration::from_secs(30));
        let mut client = self.client(&self.coordinators[leader].url);
        let request = v1::GetTranscriptRequest {
            session_id: id.to_string(),
        };
        self.rt
            .block_on(async move { client.get_transcript(request).await })
            .expect("transcript")
            .into_inner()
    }

    fn wait_session(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&v1::Session) -> bool,
    ) -> v1::Session {
        let start = Instant::now();
        loop {
            if let Some(s) = self.session(id)
                && pred(&s)
            {
                return s;
            }
            assert!(
                start.elapsed() < timeout,
                "session {id} not {what} after {timeout:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn create(&self, task: &str) -> String {
        self.run_detached(&["run", task, "--detach"])
    }

    fn create_with_roles(&self, task: &str, roles: &str) -> String {
        self.run_detached(&["run", task, "--roles", roles, "--detach"])
    }

    /// Runs `meshctl run ... --detach` and returns the session id it prints first.
    fn run_detached(&self, args: &[&str]) -> String {
        let out = self.meshctl(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("session "))
            .expect("session id")
            .trim()
            .to_string()
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for (i, c) in self.coordinators.iter().enumerate() {
            out.push_str(&format!(
                "--- coordinator {i} ---\n{}",
                agentmesh_e2e::tail(&c.proc.log_text(), 30)
            ));
        }
        for (id, w) in &self.workers {
            out.push_str(&format!(
                "--- {id} ---\n{}",
                agentmesh_e2e::tail(&w.log_text(), 8)
            ));
        }
        out
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// No two entries answer the same turn: a failover must not duplicate work.
fn assert_no_duplicate_turns(t: &v1::Transcript) {
    let mut seen = BTreeSet::new();
    for e in &t.entries {
        assert!(
            seen.insert((e.round, e.phase, e.role.clone())),
            "turn round {} phase {} role {} answered twice",
            e.round,
            e.phase,
            e.role
        );
    }
}

/// Reads a whole `WatchSession` of an ended session (the stream closes after its end).
fn watch_all(
    rt: &tokio::runtime::Runtime,
    mut client: SessionServiceClient<tonic::transport::Channel>,
    id: &str,
) -> Vec<v1::SessionEvent> {
    let request = v1::WatchSessionRequest {
        session_id: id.to_string(),
        from_seq: 1,
        batch_window_ms: Some(0),
    };
    rt.block_on(async move {
        let mut stream = client
            .watch_session(request)
            .await
            .expect("watch")
            .into_inner();
        let mut events = Vec::new();
        while let Some(event) = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the watch of an ended session ends")
            .expect("watch event")
        {
            events.push(event);
        }
        events
    })
}

#[test]
fn a_standby_is_ready_and_serves_clients_the_leaders_answers() {
    let mut mesh = EtcdMesh::start(2);
    let leader = mesh.leader(Duration::from_secs(20));
    let standby = 1 - leader;
    let (leader_http, standby_http) = (
        mesh.coordinators[leader].http.clone(),
        mesh.coordinators[standby].http.clone(),
    );
    assert_eq!(
        http_get(&standby_http, "/readyz"),
        Some((200, "standby\n".into())),
        "a standby that reaches etcd is ready: rollouts go through"
    );
    assert_eq!(http_get(&standby_http, "/healthz").unwrap().0, 200);

    // A worker pointed at the standby is still told where the leader is.
    let standby_url = mesh.coordinators[standby].url.clone();
    let attach = mesh.rt.block_on(async move {
        use agentmesh_proto::v1::worker_service_client::WorkerServiceClient;
        let mut client = WorkerServiceClient::connect(standby_url).await.unwrap();
        let hello = v1::WorkerMessage {
            msg: Some(v1::worker_message::Msg::Hello(v1::Hello {
                worker_id: "stray-1".into(),
                role: "backend".into(),
                capacity: 1,
                ..Default::default()
            })),
        };
        client
            .attach(tokio_stream::iter([hello]))
            .await
            .map(|_| ())
            .unwrap_err()
    });
    assert_eq!(attach.code(), tonic::Code::Unavailable, "{attach:?}");
    assert_eq!(
        attach
            .metadata()
            .get("x-agentmesh-leader")
            .and_then(|v| v.to_str().ok()),
        Some(mesh.coordinators[leader].url.as_str())
    );

    // Workers find the leader through etcd; a negotiation run through the standby with
    // meshctl follows to the end.
    for role in ["supervisor", "backend"] {
        mesh.add_worker(role, &format!("{role}-1"), &[]);
    }
    mesh.wait_workers(2, Duration::from_secs(30));
    let out = agentmesh_e2e::meshctl(
        &mesh.coordinators[standby].url,
        &["run", "Design a payments ledger", "--roles", "backend"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        mesh.logs()
    );
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("session "))
        .expect("session id")
        .trim()
        .to_string();

    // Every unary call: the same answer from either coordinator.
    let via = |i: usize| mesh.client(&mesh.coordinators[i].url);
    let ask = |mut client: SessionServiceClient<tonic::transport::Channel>| {
        let id = id.clone();
        mesh.rt.block_on(async move {
            let sessions = client
                .list_sessions(v1::ListSessionsRequest {})
                .await
                .unwrap()
                .into_inner();
            let session = client
                .get_session(v1::GetSessionRequest {
                    session_id: id.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            let transcript = client
                .get_transcript(v1::GetTranscriptRequest { session_id: id })
                .await
                .unwrap()
                .into_inner();
            let workers = client
                .list_workers(v1::ListWorkersRequest {})
                .await
                .unwrap()
                .into_inner();
            let missing = client
                .get_session(v1::GetSessionRequest {
                    session_id: "no-such-session".into(),
                })
                .await
                .unwrap_err()
                .code();
            (sessions, session, transcript, workers, missing)
        })
    };
    let from_leader = ask(via(leader));
    let from_standby = ask(via(standby));
    assert_eq!(from_standby, from_leader);
    assert_eq!(from_standby.4, tonic::Code::NotFound);
    assert_eq!(from_standby.1.status, SessionStatus::Consensus as i32);

    // Both watch streams.
    let watched_via_leader = watch_all(&mesh.rt, via(leader), &id);
    let watched_via_standby = watch_all(&mesh.rt, via(standby), &id);
    assert!(watched_via_leader.len() > 5, "{watched_via_leader:?}");
    assert_eq!(watched_via_standby, watched_via_leader);
    let first_mesh_event = |mut client: SessionServiceClient<tonic::transport::Channel>| {
        mesh.rt.block_on(async move {
            let mut stream = client
                .watch_mesh(v1::WatchMeshRequest { from_seq: 0 })
                .await
                .expect("watch mesh")
                .into_inner();
            let mut event = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("a mesh event")
                .expect("mesh stream")
                .expect("not ended");
            // A resync snapshot is stamped when it is taken.
            event.timestamp_ms = 0;
            event
        })
    };
    assert_eq!(
        first_mesh_event(via(standby)),
        first_mesh_event(via(leader))
    );

    // The HTTP side: the JSON API, the exports, SSE (an ended session's stream closes)
    // and the dashboard.
    for path in [
        "/api/sessions".to_string(),
        format!("/api/sessions/{id}"),
        format!("/api/sessions/{id}/transcript"),
        format!("/api/sessions/{id}/export.md"),
        format!("/api/sessions/{id}/events"),
        "/api/workers".to_string(),
        "/api/sessions/no-such-session".to_string(),
    ] {
        let leaders = http_get(&leader_http, &path).expect("leader answers");
        let standbys = http_get(&standby_http, &path).expect("standby answers");
        assert_eq!(standbys, leaders, "GET {path}");
    }
    assert_eq!(
        http_get(&standby_http, "/api/sessions/no-such-session")
            .unwrap()
            .0,
        404
    );
    let (code, page) = http_get(&standby_http, "/").unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("<script"), "the dashboard page: {page}");

    // Only the leader reports per-role series; both say who leads.
    let metrics = |addr: &str| http_get(addr, "/metrics").unwrap().1;
    assert!(metrics(&leader_http).contains("agentmesh_coordinator_leader 1"));
    let standby_metrics = metrics(&standby_http);
    assert!(standby_metrics.contains("agentmesh_coordinator_leader 0"));
    assert!(
        !standby_metrics.contains("agentmesh_role_"),
        "{standby_metrics}"
    );
}

#[test]
fn meshctl_watch_through_a_standby_follows_a_session_across_the_leaders_death() {
    let mut mesh = EtcdMesh::start(3);
    for role in ["supervisor", "backend", "security"] {
        mesh.add_worker(role, &format!("{role}-1"), &["--think-ms", "300"]);
    }
    mesh.wait_workers(3, Duration::from_secs(30));
    let leader = mesh.leader(Duration::from_secs(20));
    let through = (leader + 1) % 3;
    let url = mesh.coordinators[through].url.clone();
    let out = agentmesh_e2e::meshctl(
        &url,
        &[
            "run",
            "Design a payments ledger",
            "--roles",
            "backend,security",
            "--detach",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("session "))
        .expect("session id")
        .trim()
        .to_string();
    let mut watch = Proc::spawn(
        "meshctl-watch",
        &bin("meshctl"),
        &["--coordinator".into(), url, "watch".into(), id.clone()],
    );
    mesh.wait_session(&id, Duration::from_secs(30), "contributing", |s| {
        s.status == SessionStatus::Contribute as i32
    });
    mesh.coordinators[leader].proc.signal("KILL");
    mesh.coordinators[leader]
        .proc
        .wait_exit(Duration::from_secs(5));

    let code = watch.wait_exit(Duration::from_secs(90));
    let mut printed = String::new();
    use std::io::Read;
    watch
        .child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut printed)
        .unwrap();
    assert_eq!(
        code,
        Some(0),
        "meshctl watch exits 0 on CONSENSUS\n{printed}\n{}\n{}",
        watch.log_text(),
        mesh.logs()
    );
    assert!(printed.contains("CONSENSUS"), "{printed}");
    // Every entry printed once, in order: the follower resumed exactly where it was.
    let transcript = mesh.transcript(&id);
    assert_transcript_sound(&transcript);
    assert_no_duplicate_turns(&transcript);
    let printed_entries = printed
        .lines()
        .filter(|l| {
            l.trim_start()
                .strip_prefix('#')
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    assert_eq!(
        printed_entries,
        transcript.entries.len(),
        "one line per entry:\n{printed}"
    );
    let new_leader = mesh.leader(Duration::from_secs(20));
    println!(
        "watched through coordinator {through}; coordinator {new_leader} leads after the kill"
    );
}

#[test]
fn a_standby_cut_off_from_etcd_turns_unready_and_ready_again() {
    let mut mesh = EtcdMesh::start(1);
    mesh.leader(Duration::from_secs(20));
    let etcd_addr: std::net::SocketAddr = mesh
        .etcd
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = agentmesh_e2e::proxy::TcpProxy::start(etcd_addr);
    mesh.add_coordinator_via("c-proxied", &format!("http://{}", proxy.addr()));
    let standby_http = mesh.coordinators[1].http.clone();
    let leader_http = mesh.coordinators[0].http.clone();
    let wait_readyz = |want: u16, timeout: Duration| {
        let start = Instant::now();
        loop {
            let got = http_get(&standby_http, "/readyz");
            if got.as_ref().is_some_and(|(code, _)| *code == want) {
                return got.unwrap().1;
            }
            assert!(
                start.elapsed() < timeout,
                "standby /readyz {got:?}, want {want} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(wait_readyz(200, Duration::from_secs(20)), "standby\n");

    proxy.cut();
    let why = wait_readyz(503, Duration::from_secs(15));
    assert!(why.contains("store"), "the probe says why: {why}");
    assert_eq!(
        http_get(&leader_http, "/readyz"),
        Some((200, "leader\n".into())),
        "the leader still reaches etcd"
    );
    assert_eq!(
        http_get(&standby_http, "/healthz").unwrap().0,
        200,
        "unready, not dead: liveness stays"
    );

    proxy.restore();
    assert_eq!(wait_readyz(200, Duration::from_secs(30)), "standby\n");
}

#[test]
fn a_standby_takes_over_when_the_leader_is_killed_and_every_session_reaches_consensus() {
    let mut mesh = EtcdMesh::start(2);
    for role in ALL_ROLES {
        mesh.add_worker(
            role,
            &format!("{role}-1"),
            &["--think-ms", "300", "--capacity", "8"],
        );
    }
    mesh.wait_workers(ALL_ROLES.len(), Duration::from_secs(30));
    let ids: Vec<String> = (0..3)
        .map(|i| mesh.create(&format!("{} (tenant {i})", agentmesh_brain::DEMO_TASK)))
        .collect();
    for id in &ids {
        mesh.wait_session(id, Duration::from_secs(30), "contributing", |s| {
            s.round >= 1
        });
    }
    let leader = mesh.leader(Duration::from_secs(5));
    let killed_at = now_ms();
    mesh.coordinators[leader].proc.signal("KILL");
    mesh.coordinators[leader]
        .proc
        .wait_exit(Duration::from_secs(5));

    let standby = 1 - leader;
    assert_eq!(mesh.leader(Duration::from_secs(20)), standby);
    let mut first_after_kill = i64::MAX;
    for id in &ids {
        let session = mesh.wait_session(id, Duration::from_secs(90), "ended", |s| {
            is_terminal(s.status)
        });
        assert_eq!(
            session.status,
            SessionStatus::Consensus as i32,
            "{id}: {}",
            session.reason
        );
        let transcript = mesh.transcript(id);
        assert_transcript_sound(&transcript);
        assert_no_duplicate_turns(&transcript);
        if let Some(e) = transcript
            .entries
            .iter()
            .find(|e| e.timestamp_ms > killed_at)
        {
            first_after_kill = first_after_kill.min(e.timestamp_ms);
        }
    }
    assert!(first_after_kill < i64::MAX, "the new leader wrote entries");
    // A figure, not an assertion: printed for the record (`cargo nextest run ... --no-capture`).
    println!(
        "failover: {} ms from SIGKILL of the leader to the first new entry",
        first_after_kill - killed_at
    );
}

#[test]
fn a_frozen_worker_loses_its_lease_and_its_twin_takes_over() {
    let mut mesh = EtcdMesh::start(1);
    for role in ["supervisor", "backend"] {
        mesh.add_worker(
            role,
            &format!("{role}-1"),
            &["--think-ms", "800", "--lease-ttl", "2"],
        );
    }
    mesh.add_worker(
        "backend",
        "backend-2",
        &["--think-ms", "800", "--lease-ttl", "2"],
    );
    mesh.wait_workers(3, Duration::from_secs(30));
    let id = mesh.create_with_roles("Design a payments ledger", "backend");
    let session = mesh.wait_session(&id, Duration::from_secs(30), "contributing", |s| {
        s.status == SessionStatus::Contribute as i32
    });
    let frozen = session
        .assignments
        .iter()
        .find(|a| a.role == "backend")
        .map(|a| a.worker_id.clone())
        .expect("backend assigned");
    mesh.workers[&frozen].signal("STOP");

    let session = mesh.wait_session(&id, Duration::from_secs(60), "ended", |s| {
        is_terminal(s.status)
    });
    mesh.workers[&frozen].signal("CONT");
    assert_eq!(
        session.status,
        SessionStatus::Consensus as i32,
        "{}",
        session.reason
    );
    let transcript = mesh.transcript(&id);
    assert_transcript_sound(&transcript);
    assert!(
        transcript
            .entries
            .iter()
            .filter(|e| e.role == "backend")
            .all(|e| e.worker_id != frozen),
        "the frozen worker's turn went to its twin"
    );
}

#[test]
fn sessions_in_flight_survive_an_etcd_restart() {
    let mut mesh = EtcdMesh::start(1);
    for role in ["supervisor", "backend", "security"] {
        mesh.add_worker(role, &format!("{role}-1"), &["--think-ms", "400"]);
    }
    mesh.wait_workers(3, Duration::from_secs(30));
    let id = mesh.create_with_roles("Design a payments ledger", "backend,security");
    mesh.wait_session(&id, Duration::from_secs(30), "contributing", |s| {
        s.round >= 1
    });

    mesh.etcd.stop().expect("stop etcd");
    // The outage lasts until the leader has found the store gone mid-session.
    mesh.coordinators[0]
        .proc
        .wait_for_log("store unavailable", Duration::from_secs(30));
    mesh.etcd.start_again().expect("restart etcd");

    let session = mesh.wait_session(&id, Duration::from_secs(90), "ended", |s| {
        is_terminal(s.status)
    });
    assert_eq!(
        session.status,
        SessionStatus::Consensus as i32,
        "{}\n{}",
        session.reason,
        mesh.logs()
    );
    let transcript = mesh.transcript(&id);
    assert_transcript_sound(&transcript);
    assert_no_duplicate_turns(&transcript);
    // Nothing restarted: the same processes are still running.
    for (id, w) in mesh.workers.iter_mut() {
        assert_eq!(w.child.try_wait().unwrap(), None, "{id} exited");
    }
    assert_eq!(mesh.coordinators[0].proc.child.try_wait().unwrap(), None);
}

#[test]
fn a_coordinator_waits_for_an_unreachable_etcd_then_leads() {
    let mut mesh = EtcdMesh::start(0);
    mesh.etcd.stop().expect("stop etcd");
    // Start a coordinator against the stopped etcd: it must wait, not die.
    let opts = CoordinatorOpts {
        extra: vec!["--etcd".into(), mesh.etcd.endpoint()],
        ..CoordinatorOpts::default()
    };
    let (proc, addr, http) = start_coordinator("127.0.0.1:0", &opts);
    mesh.coordinators.push(Coordinator {
        proc,
        url: format!("http://{addr}"),
        http: http.unwrap(),
    });
    // A clear error is logged, and the coordinator keeps trying rather than exiting.
    mesh.coordinators[0]
        .proc
        .wait_for_log("unreachable", Duration::from_secs(10));
    assert_eq!(
        mesh.coordinators[0].proc.child.try_wait().unwrap(),
        None,
        "still running"
    );
    mesh.etcd.start_again().expect("start etcd");
    assert_eq!(mesh.leader(Duration::from_secs(30)), 0);
}

#[test]
fn the_embedded_mode_with_a_data_dir_resumes_sessions_after_a_restart() {
    let dir = std::env::temp_dir().join(format!(
        "agentmesh-data-{}-{}",
        std::process::id(),
        now_ms()
    ));
    let opts = CoordinatorOpts {
        extra: vec!["--data-dir".into(), dir.display().to_string()],
        ..CoordinatorOpts::default()
    };
    let mut cluster = agentmesh_e2e::Cluster::start(opts.clone());
    cluster.add_roles(
        &["supervisor", "backend", "security"],
        1,
        &["--think-ms", "300"],
    );
    let id = cluster
        .create("Design a payments ledger", &["backend", "security"], 0)
        .id;
    cluster.wait_session(&id, Duration::from_secs(30), "reviewing", |s| {
        s.status == SessionStatus::Review as i32
    });
    let before = cluster.transcript(&id).entries.len();
    cluster.coordinator.signal("KILL");
    cluster.coordinator.wait_exit(Duration::from_secs(5));

    let addr = cluster.addr.clone();
    let fresh = agentmesh_e2e::Cluster::start_on(&addr, opts);
    let _old = std::mem::replace(&mut cluster.coordinator, fresh.coordinator);
    let session = cluster.wait_end(&id, Duration::from_secs(60));
    assert_eq!(
        session.status,
        SessionStatus::Consensus as i32,
        "{}",
        session.reason
    );
    let transcript = cluster.transcript(&id);
    assert!(transcript.entries.len() > before);
    assert_transcript_sound(&transcript);
    assert_no_duplicate_turns(&transcript);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_etcd_outage_answers_unavailable_never_not_found() {
    let mut mesh = EtcdMesh::start(1);
    for role in ["supervisor", "backend"] {
        mesh.add_worker(role, &format!("{role}-1"), &[]);
    }
    mesh.wait_workers(2, Duration::from_secs(30));
    let id = mesh.create_with_roles("Design a payments ledger", "backend");
    mesh.wait_session(&id, Duration::from_secs(30), "ended", |s| {
        is_terminal(s.status)
    });

    // A frozen etcd: the session still exists, so a client must hear "try again", not
    // "no such session" (on which `meshctl watch` would give up).
    mesh.etcd.pause().expect("pause etcd");
    let mut client = mesh.client(&mesh.coordinators[0].url);
    let request = v1::GetSessionRequest {
        session_id: id.clone(),
    };
    let status = mesh
        .rt
        .block_on(async move { client.get_session(request).await })
        .unwrap_err();
    mesh.etcd.resume().expect("resume etcd");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // Once etcd is back, the same call answers.
    assert!(mesh.session(&id).is_some());
}

/// The number of transcripts a worker says it still holds, from its last "session
/// ended" log line (`None` before its first).
fn held_by(worker: &Proc) -> Option<u64> {
    worker
        .log_text()
        .lines()
        .filter(|l| l.contains("session ended"))
        .filter_map(|l| l.split("held=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .next_back()
}

/// A process's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn after_repeated_failovers_every_worker_lets_go_of_every_transcript() {
    let mut mesh = EtcdMesh::start(2);
    for (role, id) in [
        ("supervisor", "supervisor-1"),
        ("backend", "backend-1"),
        ("backend", "backend-2"),
        ("security", "security-1"),
        ("security", "security-2"),
    ] {
        mesh.add_worker(role, id, &["--think-ms", "250", "--capacity", "8"]);
    }
    mesh.wait_workers(5, Duration::from_secs(30));
    let baseline: BTreeMap<String, u64> = mesh
        .workers
        .iter()
        .map(|(id, w)| (id.clone(), rss_kib(w.child.id())))
        .collect();
    let ids: Vec<String> = (0..4)
        .map(|i| {
            mesh.create_with_roles(
                &format!("Design a payments ledger (tenant {i})"),
                "backend,security",
            )
        })
        .collect();
    // Three failovers while the sessions run: each time the leader dies, a standby takes
    // over, and a new standby joins. Workers move, and some roles move to replicas.
    for round in 0..3 {
        let leader = mesh.leader(Duration::from_secs(30));
        mesh.wait_session(
            &ids[round % ids.len()],
            Duration::from_secs(30),
            "under way",
            |s| s.round >= 1 || is_terminal(s.status),
        );
        mesh.coordinators[leader].proc.signal("KILL");
        mesh.coordinators[leader]
            .proc
            .wait_exit(Duration::from_secs(5));
        mesh.add_coordinator(&format!("c-new-{round}"));
    }
    for id in &ids {
        let session = mesh.wait_session(id, Duration::from_secs(120), "ended", |s| {
            is_terminal(s.status)
        });
        assert_eq!(
            session.status,
            SessionStatus::Consensus as i32,
            "{id}: {}",
            session.reason
        );
    }
    // Every worker is told of every session it held a transcript of, wherever its role
    // went meanwhile: each one's holdings go back to none.
    let start = Instant::now();
    for (id, worker) in &mesh.workers {
        while held_by(worker).is_some_and(|held| held > 0) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{id} still holds {:?} transcripts:\n{}",
                held_by(worker),
                agentmesh_e2e::tail(&worker.log_text(), 20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(held_by(worker).is_some(), "{id} took part in a session");
        let (before, after) = (baseline[id], rss_kib(worker.child.id()));
        // A figure for the record: memory back near where it started.
        println!("{id}: VmRSS {before} KiB before, {after} KiB after");
    }
}
