//! `meshctl` across a failover, with real processes: one-shot commands run the moment
//! the leader is SIGKILLed (its election key still names it for up to the 2 s TTL) wait
//! for the new leader and succeed, through etcd (`--etcd`) and through a standby
//! (`--coordinator`); against an election nobody leads they give up after `--wait`.
//!
//! Every step waits for an event (a process exit, a command's output, `/readyz`), never a
//! fixed sleep.

use agentmesh_e2e::{CoordinatorOpts, Proc, bin, http_get, start_coordinator, tail};
use agentmesh_etcd_testkit::EtcdServer;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The line meshctl prints once when it starts waiting.
const WAITING: &str = "waiting for a leader (";

struct Coordinator {
    proc: Proc,
    url: String,
    http: String,
}

/// etcd and coordinators; no workers (sessions stay PENDING, which is all these need).
struct Cluster {
    etcd: EtcdServer,
    coordinators: Vec<Coordinator>,
    next_id: usize,
}

impl Cluster {
    fn start(coordinators: usize) -> Cluster {
        let mut cluster = Cluster {
            etcd: EtcdServer::start().expect("start etcd"),
            coordinators: Vec::new(),
            next_id: 0,
        };
        for _ in 0..coordinators {
            cluster.add_coordinator();
        }
        cluster
    }

    fn add_coordinator(&mut self) {
        let id = format!("c{}", self.next_id);
        self.next_id += 1;
        let opts = CoordinatorOpts {
            // Long enough that no session fails for want of workers during a test.
            pending_timeout: "300s",
            extra: vec!["--etcd".into(), self.etcd.endpoint(), "--id".into(), id],
            ..CoordinatorOpts::default()
        };
        let (proc, addr, http) = start_coordinator("127.0.0.1:0", &opts);
        self.coordinators.push(Coordinator {
            proc,
            url: format!("http://{addr}"),
            http: http.expect("http address"),
        });
    }

    /// The index of the one coordinator whose /readyz says it leads.
    fn leader(&self) -> usize {
        let start = Instant::now();
        loop {
            let leaders: Vec<usize> = (0..self.coordinators.len())
                .filter(|&i| {
                    matches!(http_get(&self.coordinators[i].http, "/readyz"),
                        Some((200, body)) if body == "leader\n")
                })
                .collect();
            if leaders.len() == 1 {
                return leaders[0];
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no single leader after 30s ({leaders:?})\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs coordinator `i` and returns once the process is gone.
    fn kill(&mut self, i: usize) {
        let mut dead = self.coordinators.remove(i);
        dead.proc.signal("KILL");
        assert!(
            dead.proc.wait_exit(Duration::from_secs(10)).is_some(),
            "the leader did not die"
        );
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for c in &self.coordinators {
            out.push_str(&format!(
                "--- {} ({}) ---\n{}",
                c.proc.name,
                c.url,
                tail(&c.proc.log_text(), 30)
            ));
        }
        out
    }
}

/// Runs meshctl with `target` (`--etcd E` or `--coordinator URL`) and `args`; returns
/// its output and how long it took.
fn meshctl(target: &[&str], args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let output = Command::new(bin("meshctl"))
        .args(target)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("MESH_WAIT")
        .stdin(Stdio::null())
        .output()
        .expect("run meshctl");
    (output, started.elapsed())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts meshctl succeeded after waiting: exit 0, and stderr holds the one waiting line.
fn assert_waited_and_succeeded(what: &str, output: &Output, took: Duration, cluster: &Cluster) {
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{what} failed after {took:?}: {stderr}\n{}",
        cluster.logs()
    );
    let waiting: Vec<&str> = stderr.lines().filter(|l| l.starts_with(WAITING)).collect();
    assert_eq!(
        waiting.len(),
        1,
        "{what}: one waiting line expected: {stderr}"
    );
    assert!(
        waiting[0].ends_with("): retrying for up to 15s"),
        "{what}: {}",
        waiting[0]
    );
    eprintln!("{what}: waited and succeeded in {took:?} ({})", waiting[0]);
}

#[test]
fn one_shot_commands_through_etcd_wait_out_a_sigkilled_leader() {
    let mut cluster = Cluster::start(2);
    let etcd = cluster.etcd.endpoint();
    let target = ["--etcd", etcd.as_str()];
    cluster.leader();
    let (created, _) = meshctl(
        &target,
        &["run", "a task to inspect", "--roles", "backend", "--detach"],
    );
    assert_eq!(created.status.code(), Some(0), "{}", text(&created.stderr));
    let id = text(&created.stdout)
        .trim()
        .strip_prefix("session ")
        .expect("session <id>")
        .to_string();

    // Each command right after a SIGKILL of the leader; a fresh standby is started after
    // every failover, so there is always one to take over next.
    let show = ["show", id.as_str()];
    let cancel = ["cancel", id.as_str(), "--reason", "done looking"];
    let commands: [(&str, &[&str]); 3] = [
        ("sessions", &["sessions"]),
        ("show", &show),
        ("cancel", &cancel),
    ];
    for (what, args) in commands {
        let leader = cluster.leader();
        cluster.kill(leader);
        let (output, took) = meshctl(&target, args);
        assert_waited_and_succeeded(what, &output, took, &cluster);
        let stdout = text(&output.stdout);
        match what {
            "sessions" => assert!(stdout.contains(&id), "{stdout}"),
            "show" => assert!(stdout.starts_with(&format!("id        {id}\n")), "{stdout}"),
            _ => assert_eq!(stdout, format!("session {id} CANCELLED\n")),
        }
        cluster.add_coordinator();
    }
}

#[test]
fn one_shot_commands_through_a_standby_wait_out_the_election() {
    let mut cluster = Cluster::start(2);
    let leader = cluster.leader();
    let standby = cluster.coordinators[1 - leader].url.clone();
    let target = ["--coordinator", standby.as_str()];
    cluster.kill(leader);

    // The standby forwards to the dead leader (refused), then holds an election, then
    // takes office: none of that reached a leader, so even CreateSession is re-sent, and
    // exactly one session comes out of it.
    let (output, took) = meshctl(
        &target,
        &[
            "run",
            "after the failover",
            "--roles",
            "backend",
            "--detach",
        ],
    );
    assert_waited_and_succeeded("run --detach", &output, took, &cluster);
    let id = text(&output.stdout)
        .trim()
        .strip_prefix("session ")
        .expect("session <id>")
        .to_string();
    let (output, _) = meshctl(&target, &["sessions", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let sessions: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let ids: Vec<&str> = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()], "one CreateSession, one session");

    // Once more with the new leader gone and a standby that started after it.
    cluster.add_coordinator();
    let leader = cluster.leader();
    let standby = cluster.coordinators[1 - leader].url.clone();
    cluster.kill(leader);
    let (output, took) = meshctl(&["--coordinator", standby.as_str()], &["show", id.as_str()]);
    assert_waited_and_succeeded("show", &output, took, &cluster);
}

#[test]
fn with_nobody_leading_meshctl_gives_up_after_the_bound() {
    let etcd = EtcdServer::start().expect("start etcd");
    let endpoint = etcd.endpoint();
    let (output, took) = meshctl(
        &["--etcd", endpoint.as_str(), "--wait", "1500ms"],
        &["sessions"],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let no_leader = format!("no coordinator leads /agentmesh/v1/leader in etcd at {endpoint}");
    assert_eq!(
        stderr,
        format!(
            "waiting for a leader ({no_leader}): retrying for up to 1.5s\n\
             error: {no_leader} (no leader answered within 1.5s)\n"
        )
    );
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "gave up after {took:?}"
    );
    eprintln!("nobody leading: gave up after {took:?}");
}
