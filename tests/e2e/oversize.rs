//! A reply too large for the coordinator: a real `mesh-worker` (an exec brain that writes
//! 200 kB for one session) against a real coordinator started with
//! `--max-message-bytes 65536`. The worker answers that turn with TurnFailed naming both
//! sizes instead of sending a message the coordinator cannot decode, so its stream, and
//! the other session it holds meanwhile, survive.

use agentmesh_e2e::{Cluster, CoordinatorOpts};
use agentmesh_proto::v1::{self, SessionStatus};
use std::time::Duration;

const LIMIT: usize = 64 * 1024;

#[test]
fn a_reply_over_the_message_limit_fails_its_turn_not_the_stream() {
    let dir = tempfile_dir();
    let go = dir.join("go");
    let mut cluster = Cluster::start(CoordinatorOpts {
        extra: vec!["--max-message-bytes".into(), LIMIT.to_string()],
        ..CoordinatorOpts::default()
    });
    // The prompt on stdin holds the task. The huge session's turns answer at once with
    // 200,000 bytes; the small session's turn waits (still in flight on the same stream)
    // until the test has seen the huge one fail, then answers a line.
    let script = format!(
        "sh -c 'input=$(cat); case \"$input\" in *HUGE-REPLY*) head -c 200000 /dev/zero | tr \"\\000\" x ;; \
         *) while [ ! -e {go} ]; do sleep 0.05; done; echo a small contribution ;; esac'",
        go = go.display()
    );
    cluster.add_worker(
        "backend",
        "backend-1",
        &["--brain", "exec", "--exec", &script, "--capacity", "4"],
    );
    cluster.wait_workers(1, Duration::from_secs(30));
    let joined = cluster.workers_connected()[0].connected_ms;

    let small = create_broadcast(&cluster, "small: answer in one line", 2);
    let huge = create_broadcast(&cluster, "HUGE-REPLY please", 1);

    let failed = cluster.wait_end(&huge.id, Duration::from_secs(60));
    assert_eq!(failed.status, SessionStatus::Failed as i32, "{failed:?}");
    let reason_tail = format!("exceeds the coordinator's {LIMIT}-byte message limit");
    assert!(
        failed.reason.contains("; last: reply of ") && failed.reason.ends_with(&reason_tail),
        "{}",
        failed.reason
    );
    // The size named is the whole encoded message's, above the limit (the content, the
    // turn id, and the result's 64-byte signature).
    let bytes: usize = failed
        .reason
        .split("reply of ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a byte count");
    assert!(bytes > 200_000 && bytes < 200_200, "{bytes}");

    // The small session was held, its turn running, all along; it finishes on the same
    // stream once released.
    assert!(
        !agentmesh_e2e::is_terminal(cluster.session(&small.id).status),
        "the small session must still be running here"
    );
    std::fs::write(&go, b"").unwrap();
    // (`wait_end` knows the negotiation's ends; a broadcast session ends COMPLETED.)
    let done = cluster.wait_session(&small.id, Duration::from_secs(60), "COMPLETED", |s| {
        agentmesh_e2e::is_terminal(s.status) || s.status == SessionStatus::Completed as i32
    });
    assert_eq!(done.status, SessionStatus::Completed as i32, "{done:?}");
    let entries = cluster.transcript(&small.id).entries;
    assert_eq!(entries.len(), 2);
    assert!(
        entries
            .iter()
            .all(|e| e.content.trim() == "a small contribution")
    );

    let workers = cluster.workers_connected();
    assert_eq!(workers.len(), 1);
    assert_eq!(
        workers[0].connected_ms, joined,
        "the worker's stream was never replaced"
    );
    let worker_log = cluster.workers["backend-1"].log_text();
    assert!(!worker_log.contains("disconnected"), "{worker_log}");
    assert!(
        worker_log.contains("turn failed") && worker_log.contains(&reason_tail),
        "{worker_log}"
    );
    let coordinator_log = cluster.coordinator.log_text();
    assert!(
        coordinator_log.contains("worker reports a failed turn")
            && coordinator_log.contains(&reason_tail),
        "{}",
        cluster.logs()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn create_broadcast(cluster: &Cluster, task: &str, rounds: u32) -> v1::Session {
    let mut client = cluster.client();
    let request = v1::CreateSessionRequest {
        task: task.to_string(),
        roles: vec!["backend".into()],
        broadcast_rounds: rounds,
        ..Default::default()
    };
    cluster
        .rt
        .block_on(async move { client.create_session(request).await })
        .expect("create a broadcast session")
        .into_inner()
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = agentmesh_e2e::log_dir().join(format!("oversize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
