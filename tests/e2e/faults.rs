use crate::ALL_ROLES;
use agentmesh_e2e::{Cluster, CoordinatorOpts, assert_transcript_sound};
use agentmesh_proto::v1::{self, SessionStatus};
use std::time::Duration;

/// The worker that holds `role` in the session right now.
fn holder(session: &v1::Session, role: &str) -> Option<String> {
    session
        .assignments
        .iter()
        .find(|a| a.role == role)
        .map(|a| a.worker_id.clone())
}

fn in_contribute(s: &v1::Session) -> bool {
    s.status == SessionStatus::Contribute as i32
}

#[test]
fn a_worker_killed_mid_turn_is_replaced_by_its_twin() {
    let mut cluster = Cluster::start(CoordinatorOpts::default());
    // Slow turns, so the kill lands while the backend's round-1 turn is in flight.
    cluster.add_roles(&ALL_ROLES, 1, &["--think-ms", "800"]);
    cluster.add_worker("backend", "backend-2", &["--think-ms", "800"]);
    cluster.wait_workers(ALL_ROLES.len() + 1, Duration::from_secs(20));

    let id = cluster.create(agentmesh_brain::DEMO_TASK, &[], 0).id;
    let session = cluster.wait_session(&id, Duration::from_secs(30), "contributing", in_contribute);
    let victim = holder(&session, "backend").expect("backend assigned");
    let twin = if victim == "backend-1" {
        "backend-2"
    } else {
        "backend-1"
    };
    cluster.workers[&victim].signal("KILL");

    let session = cluster.wait_end(&id, Duration::from_secs(60));
    assert_eq!(
        session.status,
        SessionStatus::Consensus as i32,
        "{}",
        session.reason
    );
    let transcript = cluster.transcript(&id);
    assert_transcript_sound(&transcript);
    let backend_entries: Vec<&v1::Entry> = transcript
        .entries
        .iter()
        .filter(|e| e.role == "backend")
        .collect();
    assert!(!backend_entries.is_empty());
    assert!(
        backend_entries.iter().all(|e| e.worker_id == twin),
        "after the kill every backend entry comes from the twin {twin}: {:?}",
        backend_entries
            .iter()
            .map(|e| &e.worker_id)
            .collect::<Vec<_>>()
    );
    // The twin answered round 1 with the transcript as context: its round-1 analysis exists.
    assert!(
        backend_entries
            .iter()
            .any(|e| e.round == 1 && e.phase == v1::Phase::Contribute as i32)
    );
}

#[test]
fn a_role_without_workers_fails_at_the_pending_deadline_naming_the_role() {
    let mut cluster = Cluster::start(CoordinatorOpts {
        pending_timeout: "2s",
        ..CoordinatorOpts::default()
    });
    cluster.add_roles(&["supervisor", "backend"], 1, &[]);
    let id = cluster
        .create("Design a payments ledger", &["backend", "qa"], 0)
        .id;
    let waiting = cluster.session(&id);
    assert_eq!(
        waiting.status,
        SessionStatus::Pending as i32,
        "waits for the qa role"
    );
    let session = cluster.wait_end(&id, Duration::from_secs(15));
    assert_eq!(session.status, SessionStatus::Failed as i32);
    assert!(
        session.reason.contains("qa"),
        "reason names the role: {}",
        session.reason
    );
    assert!(
        !session.reason.contains("backend"),
        "backend had a worker: {}",
        session.reason
    );
    // The reserved workers were released.
    for w in cluster.workers_connected() {
        assert_eq!(w.load, 0, "{} still loaded", w.worker_id);
    }
}

#[test]
fn a_pending_session_starts_when_the_missing_worker_arrives() {
    let mut cluster = Cluster::start(CoordinatorOpts::default());
    cluster.add_roles(&["supervisor"], 1, &[]);
    let id = cluster
        .create("Design a payments ledger", &["backend"], 0)
        .id;
    // It holds its supervisor and waits for the role nobody serves yet, as the
    // coordinator's demand metrics say.
    let http = cluster.http.clone().expect("the coordinator serves HTTP");
    let start = std::time::Instant::now();
    let wanted = [
        "agentmesh_role_sessions{role=\"backend\",state=\"waiting\"} 1",
        "agentmesh_role_sessions{role=\"supervisor\",state=\"assigned\"} 1",
    ];
    loop {
        let metrics = agentmesh_e2e::http_get(&http, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        if wanted
            .iter()
            .all(|line| metrics.lines().any(|l| l == *line))
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(cluster.session(&id).status, SessionStatus::Pending as i32);
    cluster.add_roles(&["backend"], 1, &[]);
    let session = cluster.wait_end(&id, Duration::from_secs(30));
    assert_eq!(
        session.status,
        SessionStatus::Consensus as i32,
        "{}",
        session.reason
    );
}

#[test]
fn a_lost_worker_without_replacement_fails_the_session_at_the_phase_deadline() {
    let mut cluster = Cluster::start(CoordinatorOpts {
        phase_timeout: "3s",
        ..CoordinatorOpts::default()
    });
    cluster.add_roles(&["supervisor", "backend"], 1, &["--think-ms", "800"]);
    let id = cluster
        .create("Design a payments ledger", &["backend"], 0)
        .id;
    cluster.wait_session(&id, Duration::from_secs(20), "contributing", in_contribute);
    cluster.workers["backend-1"].signal("KILL");
    let session = cluster.wait_end(&id, Duration::from_secs(20));
    assert_eq!(session.status, SessionStatus::Failed as i32);
    assert!(session.reason.contains("backend"), "{}", session.reason);
    assert!(
        session.reason.contains("no live worker"),
        "{}",
        session.reason
    );
}

#[test]
fn cancellation_ends_the_session_and_frees_its_workers() {
    let mut cluster = Cluster::start(CoordinatorOpts::default());
    cluster.add_roles(&ALL_ROLES, 1, &["--think-ms", "500"]);
    let out = cluster.meshctl(&["run", agentmesh_brain::DEMO_TASK, "--detach"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout
        .lines()
        .next()
        .unwrap()
        .strip_prefix("session ")
        .unwrap()
        .trim()
        .to_string();
    cluster.wait_session(&id, Duration::from_secs(20), "contributing", in_contribute);

    let out = cluster.meshctl(&["cancel", &id, "--reason", "requirements changed"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let session = cluster.session(&id);
    assert_eq!(session.status, SessionStatus::Cancelled as i32);
    assert!(session.reason.contains("requirements changed"));
    let entries = cluster.transcript(&id).entries.len();

    // Cancelling twice is refused precisely, and changes nothing.
    let again = cluster.meshctl(&["cancel", &id]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("FailedPrecondition"));
    // Every worker has been told the session ended; whatever it still sends is refused.
    for worker in cluster.workers.values() {
        worker.wait_for_log("session ended", Duration::from_secs(10));
    }
    assert_eq!(
        cluster.transcript(&id).entries.len(),
        entries,
        "no entry after cancellation"
    );
    for w in cluster.workers_connected() {
        assert_eq!(
            w.load, 0,
            "{} still holds the cancelled session",
            w.worker_id
        );
    }
}

#[test]
fn sigterm_lets_a_worker_finish_its_turn_then_its_twin_takes_over() {
    let mut cluster = Cluster::start(CoordinatorOpts::default());
    cluster.add_roles(&ALL_ROLES, 1, &["--think-ms", "1500"]);
    cluster.add_worker("backend", "backend-2", &["--think-ms", "1500"]);
    cluster.wait_workers(ALL_ROLES.len() + 1, Duration::from_secs(20));
    let id = cluster.create(agentmesh_brain::DEMO_TASK, &[], 0).id;
    let session = cluster.wait_session(&id, Duration::from_secs(30), "contributing", in_contribute);
    let leaving = holder(&session, "backend").expect("backend assigned");
    let stayer = if leaving == "backend-1" {
        "backend-2"
    } else {
        "backend-1"
    };

    cluster.workers[&leaving].signal("TERM");
    let code = cluster
        .workers
        .get_mut(&leaving)
        .unwrap()
        .wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "the draining worker exits cleanly");

    let session = cluster.wait_end(&id, Duration::from_secs(60));
    assert_eq!(
        session.status,
        SessionStatus::Consensus as i32,
        "{}",
        session.reason
    );
    let transcript = cluster.transcript(&id);
    assert_transcript_sound(&transcript);
    let by = |worker: &str| {
        transcript
            .entries
            .iter()
            .filter(|e| e.worker_id == worker)
            .count()
    };
    assert_eq!(
        by(&leaving),
        1,
        "the in-flight turn was finished and accepted"
    );
    assert!(by(stayer) >= 2, "the twin took over the later turns");
}

#[test]
fn workers_reconnect_to_a_restarted_coordinator() {
    let mut cluster = Cluster::start(CoordinatorOpts::default());
    cluster.add_roles(&["supervisor", "backend"], 1, &[]);
    let addr = cluster.addr.clone();
    cluster.coordinator.signal("KILL");
    cluster.coordinator.wait_exit(Duration::from_secs(5));

    // A new coordinator on the same address: the workers find it by themselves.
    let fresh = Cluster::start_on(&addr, CoordinatorOpts::default());
    let old = std::mem::replace(&mut cluster.coordinator, fresh.coordinator);
    drop(old);
    cluster.wait_workers(2, Duration::from_secs(30));
    let id = cluster
        .create("Design a payments ledger", &["backend"], 0)
        .id;
    let session = cluster.wait_end(&id, Duration::from_secs(30));
    assert_eq!(
        session.status,
        SessionStatus::Consensus as i32,
        "{}",
        session.reason
    );
}
