//! The cluster in containers (`deploy/compose/`, images from `make images`): 3 etcd
//! members, 3 coordinators and 8 workers, each test on a compose project, network and
//! ephemeral loopback ports of its own (`agentmesh_e2e::docker`). The faults are the
//! ones a container platform deals out: a container killed, a container cut off its
//! network, etcd members stopped (one, then two: quorum lost), and a rolling restart of
//! the coordinators.
//!
//! The cluster runs as `make cluster-up` starts it: tokens, TLS on both coordinator
//! ports, etcd over TLS with client certificates, every worker signing with its role's
//! key. The first test also checks that each of those holds: without the CA, over
//! plaintext, without etcd's client certificate, nothing gets through; a decision made
//! in the cluster verifies against the trust file of its keys.
//!
//! Without a Docker engine every test prints why and returns; with one but without the
//! images it fails, naming `make images`. They run one at a time (the `containers`
//! test group in `.config/nextest.toml`).

use crate::ALL_ROLES;
use agentmesh_brain::DEMO_TASK;
use agentmesh_e2e::docker::{
    COORDINATORS, ETCD_MEMBERS, Mesh, Options, WORKERS, assert_no_duplicate_turns,
    assert_watched_entries_kept, run,
};
use agentmesh_e2e::pki::{Ca, https_request};
use agentmesh_e2e::{assert_transcript_sound, is_terminal};
use agentmesh_proto::v1::{self, Phase, SessionStatus};
use std::process::Command;
use std::time::{Duration, Instant};

const SPECIALISTS: [&str; 6] = [
    "backend",
    "frontend",
    "security",
    "architect",
    "devops",
    "database",
];

/// Ends in CONSENSUS with a sound transcript in which no turn counts twice; returns it.
fn assert_consensus(mesh: &Mesh, id: &str, timeout: Duration) -> v1::Transcript {
    let session = mesh.wait_end(id, timeout);
    assert_eq!(
        session.status,
        SessionStatus::Consensus as i32,
        "{id} ended {}: {}",
        agentmesh_proto::status_name(session.status),
        session.reason
    );
    let transcript = mesh.transcript(id);
    assert_transcript_sound(&transcript);
    assert_no_duplicate_turns(&transcript);
    transcript
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Under way: an entry is durable and the session has not ended.
fn under_way(s: &v1::Session) -> bool {
    s.entry_count >= 1 && !is_terminal(s.status)
}

/// The session went on after `at_ms` (the entries are stamped by the coordinators).
fn assert_written_after(t: &v1::Transcript, at_ms: i64, what: &str) {
    let after = t.entries.iter().filter(|e| e.timestamp_ms > at_ms).count();
    assert!(
        after > 0,
        "no entry was written after {what}: the fault did not hit the session mid-way"
    );
}

fn assigned(session: &v1::Session, role: &str) -> String {
    session
        .assignments
        .iter()
        .find(|a| a.role == role)
        .map(|a| a.worker_id.clone())
        .unwrap_or_else(|| panic!("no worker holds {role}: {:?}", session.assignments))
}

#[test]
fn a_negotiation_reaches_consensus_through_the_containers() {
    let Some(mesh) = Mesh::up(
        "containers::a_negotiation_reaches_consensus_through_the_containers",
        Options {
            think_ms: 100,
            ..Options::default()
        },
    ) else {
        return;
    };
    let leader = mesh.leader(Duration::from_secs(10));
    let url = mesh.at.grpc_url(leader).expect("leader's gRPC port");

    // The host's meshctl, through the leader's published port, to CONSENSUS.
    mesh.progress(&format!("meshctl --coordinator {url} run <demo task>"));
    let out = mesh.at.meshctl(&url, &["run", DEMO_TASK]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "meshctl run: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("CONSENSUS"), "{stdout}");
    let id = stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("session "))
        .expect("session id first")
        .trim()
        .to_string();
    let transcript = assert_consensus(&mesh, &id, Duration::from_secs(10));
    let session = transcript.session.as_ref().unwrap();
    assert_eq!(session.roles.len(), ALL_ROLES.len());
    mesh.progress(&format!(
        "CONSENSUS on version {} with {} entries",
        session.final_version,
        transcript.entries.len()
    ));

    // The export in the communication-file format, and the worker list with each
    // worker's container host name as its address.
    let md = mesh.at.meshctl(&url, &["export", &id, "--format", "md"]);
    assert_eq!(md.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&md.stdout).contains("**Type**: REVIEW"));
    let workers = mesh.at.meshctl(&url, &["workers", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&workers.stdout).expect("json");
    let mut addresses: Vec<String> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|w| w["address"].as_str().unwrap_or_default().to_string())
        .collect();
    addresses.sort();
    let mut want: Vec<String> = WORKERS.iter().map(|w| w.to_string()).collect();
    want.sort();
    assert_eq!(addresses, want, "{listed}");

    // meshctl inside the coordinator image, on the coordinator's own loopback port.
    let inside = run(
        Command::new("docker").args(["exec", &mesh.at.container(leader), "meshctl", "sessions"]),
        Duration::from_secs(30),
    )
    .expect("docker exec");
    assert!(
        inside.status.success() && String::from_utf8_lossy(&inside.stdout).contains(&id),
        "docker exec {leader} meshctl sessions: {}{}",
        String::from_utf8_lossy(&inside.stdout),
        String::from_utf8_lossy(&inside.stderr)
    );
    mesh.progress("docker exec meshctl in the coordinator image lists the session");

    // Any coordinator serves clients: a standby forwards to the leader.
    let standby = COORDINATORS.into_iter().find(|c| *c != leader).unwrap();
    let standby_url = mesh.at.grpc_url(standby).unwrap();
    let shown = mesh.at.meshctl(&standby_url, &["show", &id]);
    assert_eq!(
        shown.status.code(),
        Some(0),
        "meshctl show through the standby {standby}: {}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(String::from_utf8_lossy(&shown.stdout).contains("CONSENSUS"));
    mesh.progress(&format!(
        "meshctl through the standby {standby} shows the session"
    ));

    // The dashboard, on the leader's and on a standby's published HTTP port.
    for coordinator in [leader, standby] {
        let http = mesh.at.http(coordinator).unwrap();
        let (code, page) = mesh.at.http_get(&http, "/").expect("dashboard");
        assert_eq!(code, 200, "dashboard of {coordinator}: {page}");
        let (code, api) = mesh
            .at
            .http_get(&http, &format!("/api/sessions/{id}"))
            .expect("API");
        assert_eq!(code, 200, "/api/sessions/{id} on {coordinator}: {api}");
        assert!(api.contains("CONSENSUS"), "{api}");
    }
    // Authentication is on: without the operators' token the API and meshctl are refused.
    let http = mesh.at.http(leader).unwrap();
    let refused = https_request(
        &http,
        Some(&mesh.at.ca),
        None,
        "GET /api/sessions HTTP/1.0\r\n\r\n",
    );
    assert_eq!(refused.as_ref().map(|r| r.0), Ok(401), "{refused:?}");
    let anonymous = mesh
        .at
        .meshctl_with(&url, &["--wait", "0", "sessions"], false, true);
    assert!(
        String::from_utf8_lossy(&anonymous.stderr).contains("Unauthenticated"),
        "{anonymous:?}"
    );
    mesh.progress("without the token, the API answers 401 and meshctl UNAUTHENTICATED");

    assert_the_decision_verifies_against_the_trust_file(&mesh, &url, &id);
    assert_tls_is_required(&mesh, &url, &http);
    assert_etcd_requires_its_client_certificate(&mesh);
}

/// `meshctl verify --trust` of the session's JSON export: valid against the cluster's
/// trust file (`secrets/trust.json`: the keys compose-secrets.sh drew), invalid against
/// one that swaps two roles' keys.
fn assert_the_decision_verifies_against_the_trust_file(mesh: &Mesh, url: &str, id: &str) {
    let export = mesh.at.secrets.join(format!("{id}.json"));
    let export_arg = export.to_string_lossy().to_string();
    let out = mesh
        .at
        .meshctl(url, &["export", id, "--format", "json", "-o", &export_arg]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "meshctl export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trust = mesh.at.secrets.join("trust.json");
    let verify = |trust: &std::path::Path| {
        Command::new(agentmesh_e2e::bin("meshctl"))
            .args(["verify", &export_arg, "--trust"])
            .arg(trust)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run meshctl verify")
    };
    let valid = verify(&trust);
    let stdout = String::from_utf8_lossy(&valid.stdout);
    assert_eq!(
        valid.status.code(),
        Some(0),
        "meshctl verify --trust trust.json: {stdout}{}",
        String::from_utf8_lossy(&valid.stderr)
    );
    assert!(
        stdout.contains("every key is one the trust file names"),
        "{stdout}"
    );
    // The same export against a trust file whose backend and security keys are swapped.
    let mut swapped: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trust).expect("trust.json"))
            .expect("trust.json is JSON");
    let roles = swapped["roles"].as_object_mut().expect("roles");
    let backend = roles["backend"].clone();
    roles.insert("backend".into(), roles["security"].clone());
    roles.insert("security".into(), backend);
    let wrong = mesh.at.secrets.join("trust-swapped.json");
    std::fs::write(&wrong, swapped.to_string()).expect("write trust file");
    let invalid = verify(&wrong);
    assert_eq!(
        invalid.status.code(),
        Some(1),
        "a trust file naming other keys is refused: {}",
        String::from_utf8_lossy(&invalid.stdout)
    );
    mesh.progress(&format!(
        "meshctl verify --trust trust.json: valid ({}); with two roles' keys swapped: INVALID",
        stdout.lines().next().unwrap_or_default()
    ));
}

/// Both coordinator ports serve TLS only: a client that does not trust the cluster's CA
/// fails the handshake (gRPC and HTTPS), and plaintext gets no answer.
fn assert_tls_is_required(mesh: &Mesh, url: &str, http: &str) {
    let untrusting = mesh
        .at
        .meshctl_with(url, &["--wait", "0", "sessions"], true, false);
    let stderr = String::from_utf8_lossy(&untrusting.stderr);
    assert!(
        !untrusting.status.success() && stderr.contains("UnknownIssuer"),
        "meshctl without the CA: {stderr}"
    );
    let stranger = Ca::new(&mesh.at.secrets.join("stranger"), "stranger");
    let https = https_request(
        http,
        Some(&stranger.pem_path),
        None,
        "GET /readyz HTTP/1.0\r\n\r\n",
    );
    assert!(
        https.as_ref().is_err_and(|e| e.contains("UnknownIssuer")),
        "HTTPS trusting another CA: {https:?}"
    );
    let plaintext = agentmesh_e2e::http_get(http, "/readyz");
    assert!(
        plaintext.as_ref().is_none_or(|(code, _)| *code != 200),
        "plain HTTP is not served: {plaintext:?}"
    );
    let h2c = url.replacen("https://", "http://", 1);
    let plain_grpc = mesh
        .at
        .meshctl_with(&h2c, &["--wait", "0", "sessions"], true, true);
    assert!(
        !plain_grpc.status.success(),
        "plaintext gRPC is not served: {}",
        String::from_utf8_lossy(&plain_grpc.stdout)
    );
    mesh.progress(&format!(
        "without the CA: meshctl and HTTPS fail the handshake (UnknownIssuer); plaintext: HTTP {plaintext:?}, gRPC: {}",
        String::from_utf8_lossy(&plain_grpc.stderr).trim()
    ));
}

/// etcd serves TLS only and refuses a client without a certificate of its CA, over
/// HTTPS and through the etcd client the binaries use; with the certificate it answers.
fn assert_etcd_requires_its_client_certificate(mesh: &Mesh) {
    let member = ETCD_MEMBERS[0];
    let (code, health) = mesh
        .at
        .etcd_get(member, "/health", true)
        .unwrap_or_else(|e| panic!("{member} with its client certificate: {e}"));
    assert_eq!(code, 200, "{member} /health: {health}");
    let refused = mesh.at.etcd_get(member, "/health", false);
    // TLS 1.2 (etcd 3.4's highest): the server's alert ends the handshake itself.
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("Certificate")),
        "{member} without a client certificate: {refused:?}"
    );
    let addr = mesh.at.published(member, 2379).expect("etcd port");
    let plaintext = agentmesh_e2e::http_get(&addr, "/health");
    assert!(
        plaintext.as_ref().is_none_or(|(code, _)| *code != 200),
        "{member} over plain HTTP: {plaintext:?}"
    );
    let status = |with_cert: bool| {
        let mut tls = etcd_client::TlsOptions::new().ca_certificate(
            etcd_client::Certificate::from_pem(std::fs::read(&mesh.at.etcd_ca).expect("etcd CA")),
        );
        if with_cert {
            tls = tls.identity(etcd_client::Identity::from_pem(
                std::fs::read(&mesh.at.etcd_client.cert).expect("etcd client cert"),
                std::fs::read(&mesh.at.etcd_client.key).expect("etcd client key"),
            ));
        }
        let options = etcd_client::ConnectOptions::new()
            .with_tls(tls)
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(3));
        let endpoint = format!("https://{addr}");
        mesh.rt.block_on(async move {
            let mut client = etcd_client::Client::connect([endpoint], Some(options))
                .await
                .map_err(|e| e.to_string())?;
            client.status().await.map(|_| ()).map_err(|e| e.to_string())
        })
    };
    status(true).unwrap_or_else(|e| panic!("etcd client with the certificate: {e}"));
    let anonymous = status(false);
    // The same endpoint answered with the certificate, so a handshake failure here is the
    // refusal. How it surfaces depends on timing: the server's alert ("Certificate
    // required"), or, when the client has already sent its request, the connection
    // closing under it.
    assert!(
        anonymous.as_ref().is_err_and(|e| e.contains("Certificate")
            || e.contains("connection closed")
            || e.contains("canceled")),
        "etcd client without a certificate: {anonymous:?}"
    );
    mesh.progress(&format!(
        "etcd: /health and Status with its client certificate; without it: HTTPS {}, etcd client {}",
        refused.unwrap_err(),
        anonymous.unwrap_err()
    ));
}

#[test]
fn killing_the_leaders_container_mid_session_ends_in_consensus() {
    let Some(mesh) = Mesh::up(
        "containers::killing_the_leaders_container_mid_session_ends_in_consensus",
        Options::default(),
    ) else {
        return;
    };
    let ids: Vec<String> = (0..2)
        .map(|i| mesh.create(&format!("{DEMO_TASK} (tenant {i})"), &SPECIALISTS))
        .collect();
    let watches: Vec<_> = ids.iter().map(|id| mesh.watch(id)).collect();
    for id in &ids {
        mesh.wait_session(id, Duration::from_secs(30), "under way", under_way);
    }
    let leader = mesh.leader(Duration::from_secs(5));
    let killed = Instant::now();
    let killed_ms = now_ms();
    mesh.kill(leader);
    let next = mesh.leader(Duration::from_secs(30));
    assert_ne!(next, leader, "a standby took over");
    mesh.progress(&format!(
        "{next} leads {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    ));
    for (id, watch) in ids.iter().zip(&watches) {
        let transcript = assert_consensus(&mesh, id, Duration::from_secs(90));
        assert_watched_entries_kept(&watch.entries(), &transcript);
        assert_written_after(&transcript, killed_ms, "the kill");
    }
}

#[test]
fn a_worker_cut_off_mid_turn_is_replaced_and_its_return_does_no_harm() {
    let Some(mesh) = Mesh::up(
        "containers::a_worker_cut_off_mid_turn_is_replaced_and_its_return_does_no_harm",
        Options {
            think_ms: 1000,
            lease_ttl: 2,
            ..Options::default()
        },
    ) else {
        return;
    };
    let id = mesh.create(DEMO_TASK, &["backend", "security"]);
    // Every specialist is thinking its CONTRIBUTE turn for 1 s: cut the backend off now.
    let session = mesh.wait_session(&id, Duration::from_secs(30), "contributing", |s| {
        s.status == SessionStatus::Contribute as i32
    });
    let cut = assigned(&session, "backend");
    let twin = if cut == "backend1" {
        "backend2"
    } else {
        "backend1"
    };
    let round = session.round;
    mesh.disconnect(&cut);
    let cut_at = Instant::now();

    // Its lease expires; the twin gets the turn.
    let start = Instant::now();
    while mesh.ready_workers().contains(&cut) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{cut} still leased 20 s after it was cut off"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    mesh.progress(&format!(
        "{cut} evicted {:.1} s after the cut",
        cut_at.elapsed().as_secs_f64()
    ));
    let first = assert_consensus(&mesh, &id, Duration::from_secs(60));
    let contribution = first
        .entries
        .iter()
        .find(|e| e.role == "backend" && e.round == round && e.phase == Phase::Contribute as i32)
        .expect("backend contributed");
    assert_eq!(
        contribution.worker_id, twin,
        "the twin answered the turn {cut} held when it was cut off"
    );
    assert!(
        first
            .entries
            .iter()
            .filter(|e| e.role == "backend")
            .all(|e| e.worker_id == twin),
        "every backend entry is the twin's"
    );

    // Back on the network: it registers again and nothing it still held gets in.
    mesh.connect(&cut);
    let start = Instant::now();
    while !mesh.ready_workers().contains(&cut) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{cut} did not come back within 30 s of reconnecting"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    mesh.progress(&format!("{cut} connected and leased again"));
    let second_id = mesh.create(DEMO_TASK, &["backend", "security"]);
    assert_consensus(&mesh, &second_id, Duration::from_secs(60));
    let again = mesh.transcript(&id);
    assert_eq!(
        again.entries, first.entries,
        "the first session's transcript is unchanged"
    );
}

#[test]
fn stopping_one_etcd_member_mid_session_interrupts_nothing() {
    let Some(mesh) = Mesh::up(
        "containers::stopping_one_etcd_member_mid_session_interrupts_nothing",
        Options::default(),
    ) else {
        return;
    };
    let leader = mesh.leader(Duration::from_secs(5));
    let id = mesh.create(DEMO_TASK, &SPECIALISTS);
    let watch = mesh.watch(&id);
    mesh.wait_session(&id, Duration::from_secs(30), "under way", under_way);
    // The raft leader is the member whose loss costs the most: an election.
    let member = mesh.at.etcd_leader().expect("an etcd member leads raft");
    let stopped_ms = now_ms();
    mesh.stop(member, Duration::from_secs(5));
    let start = Instant::now();
    let next = loop {
        if let Some(m) = mesh.at.etcd_leader() {
            break m;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no etcd member leads raft 20 s after {member} stopped"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(next, member);
    mesh.progress(&format!(
        "{member} (the raft leader) stopped; {next} leads raft"
    ));
    let transcript = assert_consensus(&mesh, &id, Duration::from_secs(60));
    assert_watched_entries_kept(&watch.entries(), &transcript);
    assert_written_after(&transcript, stopped_ms, "the stop");
    assert_eq!(
        mesh.at.leaders(),
        vec![leader],
        "the same coordinator leads throughout"
    );
    assert_eq!(
        watch.streams(),
        1,
        "one watch stream followed the session from start to end"
    );
    mesh.start(member);
    mesh.progress(&format!("{member} started again"));
}

#[test]
fn losing_etcd_quorum_stalls_writes_and_sessions_finish_when_a_member_returns() {
    let Some(mesh) = Mesh::up(
        "containers::losing_etcd_quorum_stalls_writes_and_sessions_finish_when_a_member_returns",
        Options::default(),
    ) else {
        return;
    };
    let id = mesh.create(DEMO_TASK, &SPECIALISTS);
    let watch = mesh.watch(&id);
    mesh.wait_session(&id, Duration::from_secs(30), "under way", under_way);
    let start = Instant::now();
    while watch.entries().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the watcher saw no entry within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = mesh.at.etcd_leader().unwrap_or(ETCD_MEMBERS[0]);
    let second = ETCD_MEMBERS.into_iter().find(|m| *m != first).unwrap();
    mesh.stop(first, Duration::from_secs(5));
    mesh.stop(second, Duration::from_secs(5));
    let lost = Instant::now();

    // Quorum is gone. What was written before stays streamed; nothing new is durable.
    // A write the cluster committed just before the second member went may still be
    // streaming in for a moment (settle), after that the watcher must see nothing.
    let settle = Duration::from_secs(1);
    let window = Duration::from_secs(6);
    let before = watch.seen().len();
    while lost.elapsed() < settle + window {
        let late: Vec<_> = watch
            .seen()
            .into_iter()
            .filter(|s| s.at > lost + settle)
            .map(|s| s.event.seq)
            .collect();
        assert!(
            late.is_empty(),
            "events {late:?} became durable without an etcd quorum"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let stalled = watch.entries().len();
    mesh.progress(&format!(
        "no progress for {:.1} s without quorum ({before} durable events when the second member went, {stalled} entries streamed)",
        window.as_secs_f64()
    ));

    mesh.start(second);
    let restored = Instant::now();
    let leader = mesh.leader(Duration::from_secs(60));
    mesh.progress(&format!(
        "{leader} leads {:.1} s after quorum came back",
        restored.elapsed().as_secs_f64()
    ));
    mesh.wait_workers(WORKERS.len(), Duration::from_secs(60));
    mesh.progress(&format!(
        "every worker leased again {:.1} s after quorum came back",
        restored.elapsed().as_secs_f64()
    ));
    let transcript = assert_consensus(&mesh, &id, Duration::from_secs(90));
    mesh.progress(&format!(
        "CONSENSUS {:.1} s after quorum came back",
        restored.elapsed().as_secs_f64()
    ));
    assert!(
        transcript.entries.len() > stalled,
        "the session went on once quorum was back"
    );
    assert_watched_entries_kept(&watch.entries(), &transcript);
    mesh.start(first);
}

#[test]
fn a_rolling_restart_of_the_coordinators_keeps_every_session_running() {
    let Some(mesh) = Mesh::up(
        "containers::a_rolling_restart_of_the_coordinators_keeps_every_session_running",
        Options {
            think_ms: 500,
            capacity: 8,
            ..Options::default()
        },
    ) else {
        return;
    };
    let mut ids = vec![mesh.create(&format!("{DEMO_TASK} (tenant 0)"), &SPECIALISTS)];
    for (n, coordinator) in COORDINATORS.iter().enumerate() {
        // A session is always in flight when a coordinator goes.
        let id = mesh.create(&format!("{DEMO_TASK} (tenant {})", n + 1), &SPECIALISTS);
        mesh.wait_session(&id, Duration::from_secs(30), "under way", under_way);
        ids.push(id);
        mesh.recreate(coordinator, Duration::from_secs(10));
        let ready = mesh.wait_ready(coordinator, Duration::from_secs(60));
        let leader = mesh.leader(Duration::from_secs(30));
        mesh.progress(&format!(
            "{coordinator} replaced and ready ({ready}); {leader} leads"
        ));
    }
    for id in &ids {
        assert_consensus(&mesh, id, Duration::from_secs(120));
    }
    mesh.progress(&format!("all {} sessions reached CONSENSUS", ids.len()));
}
