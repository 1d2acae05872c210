//! The exec brain with real child processes: success (text and JSON verdicts), the
//! environment and stdin it passes, a non-zero exit, and a timeout that kills the child.

mod support;

use agentmesh_brain::exec::ExecApi;
use agentmesh_brain::prompt::Budget;
use agentmesh_brain::{Brain, BrainError, ModelBrain, Persona, TurnSettings};
use agentmesh_core::{EntryType, Verdict};
use std::path::PathBuf;
use std::time::Duration;
use support::{contribute, review};
use tokio::time::Instant;

fn brain(command: &str, timeout: Duration) -> ModelBrain<ExecApi> {
    ModelBrain::new(
        ExecApi::parse(command).unwrap(),
        Persona::for_role("backend"),
        TurnSettings {
            turn_timeout: timeout,
            budget: Budget::tokens(4_000),
        },
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agentmesh-exec-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// True while `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        // pid (comm) STATE ...: the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start())
            .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X')),
    }
}

fn pid_in(why: &str) -> u32 {
    let start = why.find("(pid ").expect("the error names the pid") + 5;
    why[start..]
        .split(')')
        .next()
        .unwrap()
        .parse()
        .expect("a pid")
}

#[tokio::test]
async fn text_turns_get_the_prompt_on_stdin_and_the_turn_in_the_environment() {
    let dir = scratch("text");
    let seen = dir.join("stdin.txt");
    let env = dir.join("env.txt");
    let command = format!(
        "sh -c 'cat > {}; env | grep ^MESH_ | sort > {}; echo \"## Analysis from a script\"'",
        seen.display(),
        env.display()
    );
    let reply = brain(&command, Duration::from_secs(10))
        .think(contribute("backend"))
        .await
        .unwrap();
    assert_eq!(reply.entry_type, Some(EntryType::Analysis));
    assert_eq!(reply.content, "## Analysis from a script");
    assert_eq!((reply.prompt_tokens, reply.completion_tokens), (0, 0));
    let stdin = std::fs::read_to_string(&seen).unwrap();
    assert!(stdin.starts_with("You are the backend engineer"), "{stdin}");
    assert!(stdin.contains("Design a URL shortener."));
    assert!(stdin.contains("# Your turn: CONTRIBUTE"));
    let env = std::fs::read_to_string(&env).unwrap();
    for line in [
        "MESH_ROLE=backend",
        "MESH_PHASE=CONTRIBUTE",
        "MESH_ROUND=1",
        "MESH_TURN=contribute",
        "MESH_SESSION_ID=s-1",
    ] {
        assert!(env.lines().any(|l| l == line), "missing {line} in\n{env}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn review_turns_read_a_json_verdict_from_stdout() {
    let ctx = review("backend");
    let hash = ctx.proposal_hash.clone();
    // The script checks it was told the hash it reviews, then objects.
    let command = format!(
        "sh -c 'cat >/dev/null; test \"$MESH_PROPOSAL_HASH\" = {hash} && test -n \"$MESH_REVIEW_SCHEMA\" && \
         echo \"{{\\\"verdict\\\": \\\"OBJECT\\\", \\\"concerns\\\": [\\\"Use 429 for quota.\\\"], \\\"summary\\\": \\\"one gap\\\"}}\"'"
    );
    let reply = brain(&command, Duration::from_secs(10))
        .think(ctx)
        .await
        .unwrap();
    assert_eq!(reply.verdict, Some(Verdict::Object));
    assert_eq!(reply.concerns, ["Use 429 for quota."]);
    assert_eq!(reply.proposal_hash, hash);

    // Prose instead of JSON, twice: INVALID, with the reason.
    let reply = brain("sh -c 'cat >/dev/null; echo LGTM'", Duration::from_secs(10))
        .think(review("backend"))
        .await
        .unwrap();
    assert_eq!(reply.verdict, Some(Verdict::Invalid));
    assert!(
        reply.concerns[0].contains("not a JSON verdict"),
        "{:?}",
        reply.concerns
    );

    // Prose first, then JSON once told what was wrong (the feedback arrives on stdin).
    let command = "sh -c 'if grep -q \"could not be accepted\"; then echo \"{\\\"verdict\\\":\\\"APPROVE\\\",\\\"concerns\\\":[],\\\"summary\\\":\\\"ok\\\"}\"; else echo LGTM; fi'";
    let reply = brain(command, Duration::from_secs(10))
        .think(review("backend"))
        .await
        .unwrap();
    assert_eq!(reply.verdict, Some(Verdict::Approve));
}

#[tokio::test]
async fn a_non_zero_exit_fails_the_turn_with_stderr() {
    let result = brain(
        "sh -c 'cat >/dev/null; echo partial; echo \"model quota exceeded\" >&2; exit 3'",
        Duration::from_secs(10),
    )
    .think(contribute("backend"))
    .await;
    match result {
        Err(BrainError::Failed(why)) => {
            assert!(why.contains("exited with status 3"), "{why}");
            assert!(why.contains("model quota exceeded"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    let result = brain("/nonexistent/agent --flag", Duration::from_secs(10))
        .think(contribute("backend"))
        .await;
    assert!(
        matches!(&result, Err(BrainError::Failed(why)) if why.contains("cannot start")),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_timeout_kills_the_child() {
    let started = Instant::now();
    let result = brain("sleep 30", Duration::from_millis(700))
        .think(contribute("backend"))
        .await;
    let took = started.elapsed();
    let why = match result {
        Err(BrainError::Failed(why)) => why,
        other => panic!("{other:?}"),
    };
    assert!(
        why.contains("did not finish within the turn timeout"),
        "{why}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    let pid = pid_in(&why);
    assert!(
        !alive(pid),
        "sleep (pid {pid}) still runs after the timeout"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} was killed but not reaped"
    );
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    // A shell that starts a grandchild and waits: both must die.
    let dir = scratch("group");
    let pidfile = dir.join("grandchild.pid");
    let command = format!("sh -c 'sleep 30 & echo $! > {}; wait'", pidfile.display());
    let result = brain(&command, Duration::from_millis(700))
        .think(contribute("backend"))
        .await;
    assert!(matches!(result, Err(BrainError::Failed(_))), "{result:?}");
    let grandchild: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The grandchild is not ours to reap; it is killed, then reaped by init.
    let deadline = Instant::now() + Duration::from_secs(3);
    while alive(grandchild) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(grandchild), "grandchild {grandchild} survived");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_abandoned_turn_kills_its_child() {
    // The worker drops a turn's future when the coordinator's deadline passes first.
    let dir = scratch("drop");
    let pidfile = dir.join("pid");
    let command = format!("sh -c 'echo $$ > {}; exec sleep 30'", pidfile.display());
    let b = brain(&command, Duration::from_secs(60));
    let outcome =
        tokio::time::timeout(Duration::from_millis(700), b.think(contribute("backend"))).await;
    assert!(outcome.is_err(), "the outer timeout fired first");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(pid), "child {pid} survived its dropped turn");
    let _ = std::fs::remove_dir_all(&dir);
}
