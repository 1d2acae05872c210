//! Writes the committed seed corpus of the byte-level targets, and describes what
//! `core_session` inputs do.
//!
//!   seeds write DIR            DIR/{wire_conversions,persona,verdict}/<name>
//!   seeds describe FILE...     each core_session input: steps, outcome, failovers
//!
//! (`core_session` seeds are inputs the fuzzer found, picked by what they reach; see
//! fuzz/README.md.) Built with the targets' instrumentation, so it links libFuzzer for
//! the coverage callbacks; its own `main` runs, not libFuzzer's.

// Wire literals end in `..Default::default()`, so a field added to the contract does not
// break the seeds (clippy calls that a needless update while no field is missing).
#![allow(clippy::needless_update)]

use agentmesh_core::{Entry, SessionSummary, export};
use agentmesh_fuzz::fixture;
use agentmesh_fuzz::wire::Kind;
use agentmesh_proto::v1;
use arbitrary::{Arbitrary, Unstructured};
use prost::Message;
use std::path::{Path, PathBuf};

// The instrumented code calls libFuzzer's coverage callbacks.
use libfuzzer_sys as _;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("write") if args.len() == 2 => write_all(Path::new(&args[1])),
        Some("describe") => {
            for file in &args[1..] {
                describe(Path::new(file));
            }
        }
        _ => {
            eprintln!("usage: seeds write DIR | seeds describe FILE...");
            std::process::exit(2);
        }
    }
}

struct Out {
    dir: PathBuf,
    count: usize,
}

impl Out {
    fn new(root: &Path, target: &str) -> Out {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("create the corpus dir");
        Out { dir, count: 0 }
    }

    fn put(&mut self, name: &str, bytes: &[u8]) {
        std::fs::write(self.dir.join(name), bytes).expect("write a seed");
        self.count += 1;
    }

    fn wire(&mut self, name: &str, kind: Kind, message: &impl Message) {
        let mut bytes = vec![kind.byte()];
        message.encode(&mut bytes).expect("encode");
        self.put(name, &bytes);
    }

    fn text(&mut self, name: &str, kind: Kind, text: &str) {
        let mut bytes = vec![kind.byte()];
        bytes.extend_from_slice(text.as_bytes());
        self.put(name, &bytes);
    }
}

fn write_all(root: &Path) {
    let mut w = Out::new(root, "wire_conversions");
    wire_seeds(&mut w);
    let mut p = Out::new(root, "persona");
    persona_seeds(&mut p);
    let mut v = Out::new(root, "verdict");
    verdict_seeds(&mut v);
    println!(
        "wrote {} wire_conversions, {} persona and {} verdict seeds under {}",
        w.count,
        p.count,
        v.count,
        root.display()
    );
}

fn turn_id(s: &agentmesh_core::Session, role: &str) -> v1::TurnId {
    let turn = s.awaited_turn(role).expect("awaited");
    let mut id = v1::TurnId::from(&turn);
    id.session_id = s.id().to_string();
    id
}

fn wire_seeds(w: &mut Out) {
    use v1::{coordinator_message, mesh_event, session_event, worker_message};
    let review = fixture::in_review();
    let (version, hash) = review.current_proposal().expect("under review");
    let done = fixture::to_consensus();
    let summary: SessionSummary = done.summary();
    let entries: &[Entry] = done.transcript();
    let worker = |msg| v1::WorkerMessage { msg: Some(msg) };

    w.wire(
        "worker-hello",
        Kind::WorkerMessage,
        &worker(worker_message::Msg::Hello(v1::Hello {
            role: "security".into(),
            worker_id: "security-w1".into(),
            capacity: 4,
            version: "0.1.0".into(),
            cursors: vec![v1::SessionCursor {
                session_id: review.id().into(),
                seq: 3,
            }],
            ..Default::default()
        })),
    );
    let result = |turn: v1::TurnId, verdict: v1::Verdict, hash: &str, concerns: Vec<String>| {
        worker(worker_message::Msg::Result(v1::TurnResult {
            turn: Some(turn),
            entry_type: v1::EntryType::Review as i32,
            content: "the limits are per tenant now".into(),
            verdict: verdict as i32,
            concerns,
            proposal_hash: hash.into(),
            signature: vec![],
            prompt_tokens: 812,
            completion_tokens: 64,
            ..Default::default()
        }))
    };
    w.wire(
        "worker-result-approve",
        Kind::WorkerMessage,
        &result(
            turn_id(review, "security"),
            v1::Verdict::Approve,
            hash,
            vec![],
        ),
    );
    w.wire(
        "worker-result-object",
        Kind::WorkerMessage,
        &result(
            turn_id(review, "backend"),
            v1::Verdict::Object,
            "",
            vec!["[rate-limit] Limits are enforced per tenant.".into()],
        ),
    );
    w.wire(
        "worker-result-wrong-hash",
        Kind::WorkerMessage,
        &result(
            turn_id(review, "supervisor"),
            v1::Verdict::Approve,
            &"0".repeat(64),
            vec![],
        ),
    );
    let mut stale = turn_id(review, "security");
    stale.attempt += 1;
    w.wire(
        "worker-result-stale-attempt",
        Kind::WorkerMessage,
        &result(stale, v1::Verdict::Approve, hash, vec![]),
    );
    w.wire(
        "worker-failed",
        Kind::WorkerMessage,
        &worker(worker_message::Msg::Failed(v1::TurnFailed {
            turn: Some(turn_id(review, "backend")),
            reason: "transcript gap: hold 2 entries, delta continues at 4".into(),
            ..Default::default()
        })),
    );
    w.wire(
        "worker-heartbeat",
        Kind::WorkerMessage,
        &worker(worker_message::Msg::Heartbeat(v1::Heartbeat::default())),
    );
    w.wire(
        "coordinator-turn",
        Kind::CoordinatorMessage,
        &v1::CoordinatorMessage {
            msg: Some(coordinator_message::Msg::Turn(v1::TurnRequest {
                turn: Some(turn_id(review, "security")),
                session: Some(v1::SessionHeader {
                    session_id: review.id().into(),
                    task: review.spec().task.clone(),
                    roles: review.participants().to_vec(),
                    max_rounds: review.spec().max_rounds,
                }),
                delta: review.transcript().iter().map(v1::Entry::from).collect(),
                proposal_version: version,
                proposal_hash: hash.into(),
                deadline_ms: fixture::START_MS + 60_000,
                ..Default::default()
            })),
            ..Default::default()
        },
    );
    let create = |roles: &[&str], max_rounds, broadcast_rounds| v1::CreateSessionRequest {
        task: "Design a multi-tenant rate limiter".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        max_rounds,
        broadcast_rounds,
        ..Default::default()
    };
    w.wire(
        "create-defaults",
        Kind::CreateSessionRequest,
        &create(&[], 0, 0),
    );
    w.wire(
        "create-roles",
        Kind::CreateSessionRequest,
        &create(&["backend", "security"], 3, 0),
    );
    w.wire(
        "create-broadcast",
        Kind::CreateSessionRequest,
        &create(&["backend", "frontend"], 0, 5),
    );
    w.wire(
        "create-invalid-role",
        Kind::CreateSessionRequest,
        &create(&["Backend Team"], 101, 0),
    );
    w.wire(
        "session-consensus",
        Kind::Session,
        &v1::Session::from(&summary),
    );
    w.wire(
        "session-review",
        Kind::Session,
        &v1::Session::from(&review.summary()),
    );
    let transcript = |entries: &[Entry]| v1::Transcript {
        session: Some(v1::Session::from(&summary)),
        entries: entries.iter().map(v1::Entry::from).collect(),
        ..Default::default()
    };
    w.wire(
        "transcript-consensus",
        Kind::Transcript,
        &transcript(entries),
    );
    w.wire(
        "transcript-prefix",
        Kind::Transcript,
        &transcript(&entries[..5]),
    );
    let mut swapped = entries[..4].to_vec();
    swapped.swap(1, 2);
    w.wire(
        "transcript-swapped",
        Kind::Transcript,
        &transcript(&swapped),
    );
    w.wire(
        "event-entry",
        Kind::SessionEvent,
        &v1::SessionEvent {
            seq: 7,
            session_id: summary.id.clone(),
            timestamp_ms: fixture::START_MS,
            event: Some(session_event::Event::Entry(v1::Entry::from(&entries[3]))),
            session: None,
            ephemeral: false,
            ..Default::default()
        },
    );
    w.wire(
        "event-status",
        Kind::SessionEvent,
        &v1::SessionEvent {
            seq: 30,
            session_id: summary.id.clone(),
            timestamp_ms: fixture::START_MS,
            event: Some(session_event::Event::Status(v1::StatusChange {
                status: v1::SessionStatus::Consensus as i32,
                round: 2,
                reason: summary.reason.clone(),
                awaiting: vec![],
            })),
            session: Some(v1::Session::from(&summary)),
            ephemeral: false,
            ..Default::default()
        },
    );
    w.wire(
        "mesh-resync",
        Kind::MeshEvent,
        &v1::MeshEvent {
            seq: 1_700_000_000_000_000,
            timestamp_ms: fixture::START_MS,
            event: Some(mesh_event::Event::Resync(v1::MeshResync {
                sessions: vec![
                    v1::Session::from(&summary),
                    v1::Session::from(&review.summary()),
                ],
                workers: vec![],
            })),
            ..Default::default()
        },
    );
    let last_review = entries.last().expect("entries");
    w.wire("entry-review", Kind::Entry, &v1::Entry::from(last_review));
    w.text("duration-ms", Kind::Duration, "250ms");
    w.text("duration-fraction", Kind::Duration, "1.5m");
    w.text(
        "leader-both",
        Kind::LeaderAddress,
        "http://10.0.0.5:7700 http=http://10.0.0.5:7780",
    );
    w.text("leader-bare", Kind::LeaderAddress, "http://c1:7700");
    w.text(
        "export-consensus",
        Kind::ExportJson,
        &export::json(&summary, &entries[..6]),
    );
}

fn persona_seeds(p: &mut Out) {
    let personas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../personas");
    let mut files: Vec<_> = std::fs::read_dir(&personas)
        .expect("personas/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        p.put(
            &format!("built-in-{name}"),
            &std::fs::read(&file).expect("read"),
        );
    }
    let crafted: [(&str, &str); 10] = [
        (
            "claude-agent",
            "---\nname: payments\ndescription: \"Owns money movement: ledgers, idempotency.\"\n\
             tools: Read, Grep, Bash\nmodel: sonnet   # kept as metadata\ncolor: green\n---\n\n\
             You are the payments engineer.\nCheck every ledger write.\n",
        ),
        (
            "block-scalars",
            "---\nrole: security\ndescription: >\n  folded\n  text\nnotes: |\n  line one\n  \
             line two\nallowed-tools:\n  - Read\n  - 'Web Fetch'\n  -\n---\nbody\n",
        ),
        (
            "flow-list-quotes",
            "---\ndescription: 'it''s quoted # not a comment'\nallowed_tools: [Read, \"Grep, fast\", \
             'Bash']\n---\nbody # with a hash\n",
        ),
        (
            "crlf-bom",
            "\u{feff}---\r\nname: ops\r\ndescription: d\r\n---\r\nYou run things.\r\n",
        ),
        (
            "escapes",
            "---\ndescription: \"a \\\"quoted\\\" word\\nand a second line\"\n---\nbody\n",
        ),
        ("no-body", "---\ndescription: d\n---\n\n  \n"),
        ("unclosed", "---\ndescription: d\nbody\n"),
        (
            "bad-role",
            "---\ndescription: d\nrole: Not A Role\n---\nbody",
        ),
        ("indented", "---\ndescription: d\n  indented: x\n---\nbody"),
        (
            "twice",
            "---\ntools: [a]\nallowed-tools: [b]\ndescription: d\n---\nbody",
        ),
    ];
    for (name, text) in crafted {
        p.put(name, text.as_bytes());
    }
}

fn verdict_seeds(v: &mut Out) {
    let seeds: [(&str, &str); 12] = [
        (
            "approve",
            r#"{"verdict":"APPROVE","concerns":[],"summary":"ok"}"#,
        ),
        (
            "object",
            r#"{"verdict": "OBJECT", "concerns": ["[rate-limit] Limits are enforced per tenant."], "summary": "needs tenancy"}"#,
        ),
        (
            "fenced",
            "Here you go:\n```json\n{\"verdict\": \"approve\", \"concerns\": [\"  \"], \"summary\": \"\"}\n```\n",
        ),
        (
            "prose",
            r#"My review: {"verdict":"OBJECT","concerns":["a","b"],"summary":"x"} -- thanks"#,
        ),
        (
            "approve-with-concern",
            r#"{"verdict":"APPROVE","concerns":["but"],"summary":""}"#,
        ),
        (
            "object-no-concern",
            r#"{"verdict":"OBJECT","concerns":[],"summary":"bad"}"#,
        ),
        ("lgtm", r#"{"verdict":"LGTM","concerns":[],"summary":""}"#),
        (
            "wrong-types",
            r#"{"verdict":true,"concerns":"x","summary":3}"#,
        ),
        (
            "extra-hash",
            r#"{"verdict":"APPROVE","concerns":[],"summary":"","proposal_hash":"00"}"#,
        ),
        ("not-json", "I approve this design."),
        ("truncated", r#"{"verdict": "APPROVE", "concerns": ["#),
        (
            "array",
            r#"[{"verdict":"APPROVE","concerns":[],"summary":""}]"#,
        ),
    ];
    for (name, text) in seeds {
        v.put(name, text.as_bytes());
    }
}

/// What one core_session input does: its steps and where the session ends.
fn describe(file: &Path) {
    let data = std::fs::read(file).expect("read");
    match agentmesh_fuzz::session::Plan::arbitrary_take_rest(Unstructured::new(&data)) {
        Err(e) => println!("{}: does not decode ({e})", file.display()),
        Ok(plan) => {
            let outcome = agentmesh_fuzz::session::run(&plan);
            println!("{}: {} steps; {outcome}", file.display(), plan.steps.len());
        }
    }
}
