//! A real model end to end: llama.cpp's server (through xllamacpp, from the venv that
//! `make llm-setup` makes) serving the 135M SmolLM2 on 127.0.0.1 with one thread; a
//! coordinator; a supervisor and a backend on `--brain openai` (its
//! `/v1/chat/completions`) and a security worker on `--brain anthropic` (its
//! `/v1/messages`) that joins through a persona file, without `--role`. One round.
//!
//! What it checks is plumbing, not wisdom: every entry holds text a model wrote (not the
//! scripted brain's, and with token counts), every review's verdict was parsed (APPROVE or
//! OBJECT) or recorded INVALID with the reason, and the token totals add up in the
//! session, `meshctl show` and the JSON export.

use agentmesh_e2e::{Cluster, CoordinatorOpts, Proc, assert_transcript_sound, bin, tail};
use agentmesh_proto::v1::{self, SessionStatus};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TASK: &str = "Design a URL shortener: an HTTP API that creates short links and \
redirects them, with the links stored in PostgreSQL.";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

/// The venv's python; fails (not skips) when `make llm-setup` has not run.
fn venv_python() -> PathBuf {
    let venv = std::env::var_os("LLM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv-llm"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "the real-model test needs the local model venv at {}: run `make llm-setup` \
         (scripts/llm-setup.sh installs xllamacpp and the 135M SmolLM2 model into it)",
        venv.display()
    );
    python
}

/// The llama.cpp server; killed (by pid) when dropped.
pub(crate) struct LlmServer {
    pub(crate) proc: Proc,
    pub(crate) url: String,
}

pub(crate) fn start_llm_server() -> LlmServer {
    let python = venv_python();
    let script = repo_root().join("scripts/llm_server.py");
    let args: Vec<String> = [
        script.to_str().unwrap(),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--threads",
        "1",
        "--ctx",
        "4096",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut proc = Proc::spawn("llm-server", &python, &args);
    let stdout = proc.child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("listening on ") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| {
            panic!(
                "the llama.cpp server did not start (is the venv complete? `make llm-setup`):\n{}",
                tail(&proc.log_text(), 30)
            )
        });
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    LlmServer { proc, url }
}

/// Flags every model worker shares: small prompts and replies for a 135M model on one
/// CPU thread.
pub(crate) fn model_flags(brain: &str, base_url: &str) -> Vec<String> {
    [
        "--brain",
        brain,
        "--base-url",
        base_url,
        "--model",
        "smollm2-135m",
        "--max-tokens",
        "128",
        "--temperature",
        "0.3",
        "--prompt-budget",
        "600",
        "--turn-timeout",
        "150s",
        "--capacity",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn a_real_model_negotiates_through_the_openai_and_anthropic_apis() {
    let started = Instant::now();
    let server = start_llm_server();
    let mut cluster = Cluster::start(CoordinatorOpts {
        phase_timeout: "240s",
        pending_timeout: "60s",
        extra: Vec::new(),
    });
    let openai = format!("{}/v1", server.url);
    let flags = model_flags("openai", &openai);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    cluster.add_worker("supervisor", "supervisor-llm", &flags);
    cluster.add_worker("backend", "backend-llm", &flags);

    // Security joins through a persona file alone: its role comes from the front matter.
    let dir = agentmesh_e2e::log_dir();
    let persona = dir.join("security-persona.md");
    std::fs::write(
        &persona,
        "---\nname: security\ndescription: Security reviewer for the e2e test.\n\
         allowed-tools: [Read]\n---\n\
         You are the security engineer. Point out authentication, abuse and data \
         exposure risks. Be brief.\n",
    )
    .unwrap();
    let mut args = vec![
        "--persona".to_string(),
        persona.display().to_string(),
        "--id".to_string(),
        "security-llm".to_string(),
        "--coordinator".to_string(),
        cluster.url.clone(),
    ];
    args.extend(model_flags("anthropic", &server.url));
    let security = Proc::spawn("security-llm", &bin("mesh-worker"), &args);
    cluster.workers.insert("security-llm".into(), security);
    cluster.wait_workers(3, Duration::from_secs(30));
    let roles: Vec<(String, String)> = cluster
        .workers_connected()
        .into_iter()
        .map(|w| (w.worker_id, w.role))
        .collect();
    assert!(
        roles.contains(&("security-llm".into(), "security".into())),
        "the persona's role: {roles:?}"
    );

    let session = cluster.create(TASK, &["backend", "security"], 1);
    let ended = cluster.wait_end(&session.id, Duration::from_secs(250));
    let logs = || {
        format!(
            "{}--- llm server ---\n{}",
            cluster.logs(),
            tail(&server.proc.log_text(), 20)
        )
    };
    assert!(
        ended.status == SessionStatus::Consensus as i32
            || ended.status == SessionStatus::NoConsensus as i32,
        "session ended {} ({}), not by the verdicts:\n{}",
        agentmesh_proto::status_name(ended.status),
        ended.reason,
        logs()
    );

    let transcript = cluster.transcript(&session.id);
    assert_transcript_sound(&transcript);
    let entries = &transcript.entries;
    // FRAMING, two contributions, one proposal, three reviews.
    assert_eq!(entries.len(), 7, "{:#?}", entries);
    for e in entries {
        let what = format!("#{} {}", e.seq, e.role);
        assert!(
            e.prompt_tokens > 0 && e.completion_tokens > 0,
            "{what}: no token usage recorded, so no model answered: {e:?}"
        );
        // Token usage above is what tells a model's entry from a scripted one (the
        // scripted brain reports none); the text cannot: a 135M model may well echo the
        // prompt's `Task: …` line, as the scripted brain does.
        if e.phase != v1::Phase::Review as i32 {
            assert!(!e.content.trim().is_empty(), "{what}: empty");
        }
    }
    let proposal = entries
        .iter()
        .find(|e| e.phase == v1::Phase::Synthesize as i32)
        .expect("a proposal");
    let reviews: Vec<&v1::Entry> = entries
        .iter()
        .filter(|e| e.phase == v1::Phase::Review as i32)
        .collect();
    assert_eq!(reviews.len(), 3);
    let mut verdicts = Vec::new();
    for r in &reviews {
        let verdict = agentmesh_proto::verdict_from_wire(r.verdict)
            .unwrap_or_else(|| panic!("review by {} has no verdict: {r:?}", r.role));
        assert_eq!(
            r.proposal_hash, proposal.proposal_hash,
            "{} judged v1",
            r.role
        );
        match verdict {
            agentmesh_core::Verdict::Approve => assert!(r.concerns.is_empty()),
            agentmesh_core::Verdict::Object => assert!(!r.concerns.is_empty()),
            agentmesh_core::Verdict::Invalid => assert!(
                r.concerns
                    .iter()
                    .any(|c| c.contains("gave no valid review")),
                "an INVALID review says why: {r:?}"
            ),
        }
        verdicts.push(format!("{}={}", r.role, verdict));
    }
    // Security thought through the Anthropic endpoint.
    assert!(
        entries
            .iter()
            .any(|e| e.role == "security" && e.worker_id == "security-llm"),
        "{entries:?}"
    );

    // Token totals: the session sums its entries, and meshctl shows them.
    let session = transcript.session.clone().unwrap();
    let prompt: u64 = entries.iter().map(|e| e.prompt_tokens).sum();
    let completion: u64 = entries.iter().map(|e| e.completion_tokens).sum();
    assert_eq!(
        (session.prompt_tokens, session.completion_tokens),
        (prompt, completion)
    );
    let show = cluster.meshctl(&["show", &session.id]);
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.contains(&format!(
            "tokens    {prompt} prompt, {completion} completion"
        )),
        "{show}"
    );
    assert!(show.contains("ROLE        PROMPT  COMPLETION"), "{show}");
    let export = cluster.meshctl(&["export", &session.id, "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&export.stdout).expect("json export");
    assert_eq!(doc["session"]["prompt_tokens"], prompt);
    assert_eq!(
        doc["entries"][0]["completion_tokens"],
        entries[0].completion_tokens
    );

    eprintln!(
        "real-model negotiation: {} in {:?}; verdicts {}; {prompt} prompt + {completion} completion tokens",
        agentmesh_proto::status_name(session.status),
        started.elapsed(),
        verdicts.join(", ")
    );
    drop(cluster);
    drop(server);
}
