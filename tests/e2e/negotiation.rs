use crate::ALL_ROLES;
use agentmesh_e2e::{Cluster, CoordinatorOpts, assert_transcript_sound};
use agentmesh_proto::v1::{self, SessionStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[test]
fn meshctl_run_reaches_consensus_and_exports_match_the_communication_file() {
    let mut cluster = Cluster::start(CoordinatorOpts::default());
    cluster.add_roles(&ALL_ROLES, 1, &[]);

    let out = cluster.meshctl(&["run", agentmesh_brain::DEMO_TASK]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "meshctl run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = stdout.lines().next().expect("output");
    let id = first
        .strip_prefix("session ")
        .expect("first line names the session")
        .trim();
    assert!(stdout.contains("CONSENSUS"), "{stdout}");

    let transcript = cluster.transcript(id);
    let session = transcript.session.clone().unwrap();
    assert_eq!(session.status, SessionStatus::Consensus as i32);
    assert!(
        session.round >= 2,
        "the demo task needs at least two rounds"
    );
    assert_transcript_sound(&transcript);
    // Every participant wrote something: the supervisor frames and synthesizes, the
    // specialists contribute, everyone reviews.
    let authors: BTreeSet<&str> = transcript.entries.iter().map(|e| e.role.as_str()).collect();
    assert_eq!(authors, ALL_ROLES.iter().copied().collect());
    // The live follow printed a line per entry.
    for e in &transcript.entries {
        assert!(
            stdout.contains(&format!("#{} ", e.seq)),
            "no line for entry {} in:\n{stdout}",
            e.seq
        );
    }

    let md = cluster.meshctl(&["export", id, "--format", "md"]);
    assert_eq!(md.status.code(), Some(0));
    let md = String::from_utf8(md.stdout).unwrap();
    let headers: Vec<&str> = md.lines().filter(|l| l.starts_with("### [")).collect();
    assert_eq!(
        headers.len(),
        transcript.entries.len(),
        "one block per entry"
    );
    let lines: Vec<&str> = md.lines().collect();
    for (i, line) in lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("### ["))
    {
        // ### [ROLE] [YYYY-MM-DD HH:MM:SS] UTC
        let rest = line.strip_prefix("### [").unwrap();
        let (role, rest) = rest.split_once("] [").expect("role then timestamp");
        assert!(ALL_ROLES.contains(&role.to_lowercase().as_str()), "{line}");
        assert_eq!(role, role.to_uppercase());
        let (stamp, tail) = rest.split_once(']').unwrap();
        assert_eq!(tail, " UTC", "{line}");
        assert_eq!(stamp.len(), 19, "{line}");
        assert_eq!(&stamp[4..5], "-");
        assert_eq!(&stamp[10..11], " ");
        assert!(lines[i + 1].starts_with("**Type**: "), "{}", lines[i + 1]);
        assert!(
            lines[i + 2].starts_with("**Content**: "),
            "{}",
            lines[i + 2]
        );
    }
    let roles_in_order: Vec<String> = headers
        .iter()
        .map(|h| h[5..].split(']').next().unwrap().to_lowercase())
        .collect();
    let expected: Vec<String> = transcript.entries.iter().map(|e| e.role.clone()).collect();
    assert_eq!(roles_in_order, expected, "blocks in transcript order");

    let json = cluster.meshctl(&["export", id, "--format", "json"]);
    assert_eq!(json.status.code(), Some(0));
    let (summary, entries) =
        agentmesh_core::export::from_json(&String::from_utf8(json.stdout).unwrap())
            .expect("the JSON export parses back");
    assert_eq!(summary.id, id);
    assert_eq!(summary.final_hash, session.final_hash);
    let wire: Vec<v1::Entry> = entries.iter().map(v1::Entry::from).collect();
    assert_eq!(wire, transcript.entries, "the JSON export is lossless");
}

#[test]
fn conflicting_concerns_end_without_consensus_listing_open_objections() {
    let mut cluster = Cluster::start(CoordinatorOpts::default());
    cluster.add_roles(&ALL_ROLES, 1, &[]);
    let out = cluster.meshctl(&["run", agentmesh_brain::CONFLICT_TASK, "--max-rounds", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit 2 on NO_CONSENSUS:\n{stdout}"
    );
    let id = stdout
        .lines()
        .next()
        .unwrap()
        .strip_prefix("session ")
        .unwrap()
        .trim();
    let session = cluster.session(id);
    assert_eq!(session.status, SessionStatus::NoConsensus as i32);
    assert_eq!(session.round, 2);
    assert!(!session.open_objections.is_empty());
    for objection in &session.open_objections {
        assert!(
            stdout.contains(&objection.concern),
            "objection {objection:?} not printed:\n{stdout}"
        );
    }
    assert_transcript_sound(&cluster.transcript(id));
}

#[test]
fn ten_concurrent_sessions_spread_over_two_replicas_per_role() {
    let mut cluster = Cluster::start(CoordinatorOpts::default());
    cluster.add_roles(&ALL_ROLES, 2, &["--capacity", "10"]);
    let ids: Vec<String> = (0..10)
        .map(|i| {
            cluster
                .create(
                    &format!("{} (tenant {i})", agentmesh_brain::DEMO_TASK),
                    &[],
                    0,
                )
                .id
        })
        .collect();
    let mut sessions_per_worker: BTreeMap<String, usize> = BTreeMap::new();
    for id in &ids {
        let session = cluster.wait_end(id, Duration::from_secs(90));
        assert_eq!(
            session.status,
            SessionStatus::Consensus as i32,
            "{id}: {}",
            session.reason
        );
        let transcript = cluster.transcript(id);
        assert_transcript_sound(&transcript);
        let workers: BTreeSet<&str> = transcript
            .entries
            .iter()
            .map(|e| e.worker_id.as_str())
            .collect();
        assert_eq!(
            workers.len(),
            ALL_ROLES.len(),
            "one worker per role per session"
        );
        for w in workers {
            *sessions_per_worker.entry(w.to_string()).or_default() += 1;
        }
    }
    // Least-loaded assignment: with ten sessions created at once, each replica of each
    // role serves a fair share, not all ten.
    for role in ALL_ROLES {
        let a = sessions_per_worker
            .get(&format!("{role}-1"))
            .copied()
            .unwrap_or(0);
        let b = sessions_per_worker
            .get(&format!("{role}-2"))
            .copied()
            .unwrap_or(0);
        assert_eq!(a + b, 10, "{role}");
        assert!(a >= 3 && b >= 3, "{role}: load not spread ({a} / {b})");
    }
}

#[test]
fn a_coordinator_on_one_runtime_thread_runs_concurrent_sessions_to_consensus() {
    let mut cluster = Cluster::start(CoordinatorOpts {
        extra: vec!["--runtime-threads".into(), "1".into()],
        ..CoordinatorOpts::default()
    });
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", cluster.coordinator.pid())).unwrap();
    let threads: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads line");
    assert_eq!(threads, 2, "the main thread and one runtime thread");
    cluster.add_roles(&ALL_ROLES, 1, &["--capacity", "3"]);
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let task = format!("{} (tenant {i})", agentmesh_brain::DEMO_TASK);
            cluster.create(&task, &[], 0).id
        })
        .collect();
    for id in &ids {
        let session = cluster.wait_end(id, Duration::from_secs(60));
        assert_eq!(
            session.status,
            SessionStatus::Consensus as i32,
            "{id}: {}",
            session.reason
        );
        assert_transcript_sound(&cluster.transcript(id));
    }
}
