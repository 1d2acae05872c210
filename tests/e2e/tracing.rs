//! Traces, checked against a real OTLP/gRPC receiver (`harness/otlp.rs`, the official
//! `opentelemetry-proto` TraceService): a negotiation is one trace that covers `meshctl`,
//! the coordinator and every worker, with the right parent links and the GenAI attribute
//! names spelled exactly; the model brains' calls nest under their turns; JSON log lines
//! name spans that were exported; and with tracing off nothing is sent at all.
//!
//! The processes send what is left when they exit (meshctl when its command ends, the
//! coordinator and workers on SIGTERM), so the tests wait for those exits and then for
//! the spans, never for a fixed time.

use crate::llm::{model_flags, start_llm_server};
use agentmesh_e2e::otlp::{Collector, KIND_CLIENT, KIND_INTERNAL, KIND_SERVER, Span};
use agentmesh_e2e::{Cluster, CoordinatorOpts, bin, tail};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const TASK: &str = "Design an order-tracking service with an HTTP API, PostgreSQL storage and \
per-tenant authentication.";

/// Every `gen_ai.*` name agentmesh may record, as the OpenTelemetry GenAI conventions
/// spell them (semconv 1.4x). Any other `gen_ai.` name in a trace is a typo.
const GEN_AI_NAMES: [&str; 13] = [
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.response.finish_reasons",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.agent.name",
    "gen_ai.agent.id",
    "gen_ai.conversation.id",
    "gen_ai.system_instructions",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
];

/// `meshctl` with the cluster's coordinator, `args`, and `env`.
fn meshctl(cluster: &Cluster, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(bin("meshctl"))
        .arg("--coordinator")
        .arg(&cluster.url)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run meshctl")
}

/// The id `meshctl run` printed first.
fn session_id(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("session "))
        .unwrap_or_else(|| {
            panic!(
                "meshctl run printed no session id: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .trim()
        .to_string()
}

/// SIGTERM to every worker, then the coordinator; each exits after sending its last spans.
fn stop_all(cluster: &mut Cluster) {
    for (id, worker) in cluster.workers.iter_mut() {
        worker.signal("TERM");
        assert!(
            worker.wait_exit(Duration::from_secs(30)).is_some(),
            "{id} did not exit on SIGTERM:\n{}",
            tail(&worker.log_text(), 20)
        );
    }
    cluster.coordinator.signal("TERM");
    assert!(
        cluster
            .coordinator
            .wait_exit(Duration::from_secs(30))
            .is_some(),
        "the coordinator did not exit on SIGTERM:\n{}",
        tail(&cluster.coordinator.log_text(), 20)
    );
}

fn by_id(spans: &[Span]) -> BTreeMap<&str, &Span> {
    spans.iter().map(|s| (s.span_id.as_str(), s)).collect()
}

fn parent<'a>(index: &BTreeMap<&str, &'a Span>, span: &Span) -> &'a Span {
    index
        .get(span.parent_span_id.as_str())
        .copied()
        .unwrap_or_else(|| {
            panic!(
                "the parent {:?} of {}:{} was not exported",
                span.parent_span_id, span.service, span.name
            )
        })
}

fn one<'a>(spans: &'a [Span], service: &str, name: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect();
    assert_eq!(found.len(), 1, "one {service}:{name}: {found:#?}");
    found[0]
}

/// The spans as an indented tree (`service: name [kind]`), for the test's output.
fn render_tree(spans: &[Span]) -> String {
    fn walk(spans: &[Span], parent: &str, depth: usize, out: &mut String) {
        for span in spans.iter().filter(|s| s.parent_span_id == parent) {
            let kind = match span.kind {
                KIND_SERVER => "SERVER",
                KIND_CLIENT => "CLIENT",
                _ => "INTERNAL",
            };
            out.push_str(&format!(
                "{}{}: {} [{kind}]\n",
                "  ".repeat(depth),
                span.service,
                span.name
            ));
            walk(spans, &span.span_id, depth + 1, out);
        }
    }
    let mut out = String::new();
    walk(spans, "", 0, &mut out);
    out
}

/// Every `gen_ai.` name in the spans (attributes and event attributes) is in the list.
fn assert_gen_ai_names_exact(spans: &[Span]) {
    let allowed: BTreeSet<&str> = GEN_AI_NAMES.into_iter().collect();
    for span in spans {
        let keys = span
            .attributes
            .keys()
            .chain(span.events.iter().flat_map(|(_, attrs)| attrs.keys()));
        for key in keys {
            if key.starts_with("gen_ai") || key.starts_with("genai") {
                assert!(
                    allowed.contains(key.as_str()),
                    "{}:{} records {key:?}, not a GenAI convention name",
                    span.service,
                    span.name
                );
            }
        }
    }
}

/// The chain from meshctl's root span to the session span, checked; returns the
/// session span.
fn assert_session_under_meshctl<'a>(spans: &'a [Span], session_id: &str) -> &'a Span {
    let index = by_id(spans);
    let root = one(spans, "meshctl", "meshctl run");
    assert!(root.parent_span_id.is_empty(), "meshctl's span is the root");
    let rpc = "agentmesh.v1.SessionService/CreateSession";
    let client = one(spans, "meshctl", rpc);
    assert_eq!(client.kind, KIND_CLIENT);
    assert_eq!(parent(&index, client).span_id, root.span_id);
    let server = one(spans, "agentmesh-coordinator", rpc);
    assert_eq!(server.kind, KIND_SERVER);
    assert_eq!(parent(&index, server).span_id, client.span_id);
    let session = one(spans, "agentmesh-coordinator", "session");
    assert_eq!(parent(&index, session).span_id, server.span_id);
    assert_eq!(session.str("gen_ai.conversation.id"), session_id);
    assert_eq!(session.str("agentmesh.session.id"), session_id);
    session
}

/// A coordinator and one worker per role, every process exporting to `collector` and
/// started with `flags` besides.
fn traced_cluster(collector: &Collector, flags: &[&str], roles: &[&str]) -> Cluster {
    let mut traced = vec!["--otlp-endpoint", collector.url.as_str()];
    traced.extend_from_slice(flags);
    let mut cluster = Cluster::start(CoordinatorOpts {
        extra: traced.iter().map(|s| s.to_string()).collect(),
        ..CoordinatorOpts::default()
    });
    cluster.add_roles(roles, 1, &traced);
    cluster
}

#[test]
fn a_scripted_negotiation_is_one_trace_across_meshctl_the_coordinator_and_every_worker() {
    let collector = Collector::start();
    let roles = ["supervisor", "backend", "security"];
    let mut cluster = traced_cluster(&collector, &["--log-format", "json"], &roles);

    let out = meshctl(
        &cluster,
        &[
            "--otlp-endpoint",
            &collector.url,
            "run",
            TASK,
            "--roles",
            "backend,security",
            "--max-rounds",
            "4",
        ],
        &[],
    );
    let id = session_id(&out);
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "meshctl run: {:?}\n{}",
        out.status,
        cluster.logs()
    );
    // meshctl sent its spans before it exited.
    collector.wait_for("meshctl's root span", Duration::from_secs(10), |spans| {
        spans.iter().any(|s| s.name == "meshctl run")
    });
    let transcript = cluster.transcript(&id);
    let entries = transcript.entries.clone();
    stop_all(&mut cluster);
    let spans = collector.wait_for(
        "a span per turn and the session's",
        Duration::from_secs(30),
        |spans| {
            spans
                .iter()
                .filter(|s| s.name.starts_with("invoke_agent"))
                .count()
                >= entries.len()
                && spans.iter().any(|s| s.name == "session")
        },
    );

    // One trace, every process in it.
    let traces: BTreeSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(traces.len(), 1, "one trace id: {traces:?}");
    let instances: BTreeSet<(String, String)> = spans
        .iter()
        .map(|s| {
            let instance = s.resource["service.instance.id"].as_str().unwrap_or("");
            (s.service.clone(), instance.to_string())
        })
        .collect();
    let services: BTreeSet<&str> = instances.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        services,
        BTreeSet::from(["meshctl", "agentmesh-coordinator", "agentmesh-worker"])
    );
    for role in roles {
        let worker_id = format!("{role}-1");
        assert!(
            instances.contains(&("agentmesh-worker".to_string(), worker_id.clone())),
            "{worker_id} exported its spans: {instances:?}"
        );
    }
    for span in &spans {
        assert!(span.resource["service.version"].is_string(), "{span:?}");
    }

    // meshctl → CreateSession (client, server) → session → rounds → phases → turns.
    let index = by_id(&spans);
    let session = assert_session_under_meshctl(&spans, &id);
    let status = agentmesh_proto::status_name(transcript.session.as_ref().unwrap().status);
    assert_eq!(session.str("agentmesh.session.status"), status);
    let rounds: Vec<&Span> = spans.iter().filter(|s| s.name == "round").collect();
    assert!(!rounds.is_empty());
    for round in &rounds {
        assert_eq!(parent(&index, round).span_id, session.span_id);
    }
    let phases: Vec<&Span> = spans
        .iter()
        .filter(|s| s.service == "agentmesh-coordinator" && s.attr("agentmesh.phase").is_some())
        .collect();
    for phase in &phases {
        assert_eq!(phase.name, phase.str("agentmesh.phase"));
        let up = parent(&index, phase);
        if phase.name == "FRAMING" {
            assert_eq!(
                up.span_id, session.span_id,
                "FRAMING sits under the session"
            );
        } else {
            assert_eq!(up.name, "round", "{} sits under its round", phase.name);
            assert_eq!(up.int("agentmesh.round"), phase.int("agentmesh.round"));
        }
    }
    // Each phase's worth of turns: one `invoke_agent {role}` per transcript entry, under
    // the phase it answered, with the GenAI agent attributes.
    let turns: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("invoke_agent"))
        .collect();
    assert_eq!(turns.len(), entries.len(), "one turn span per entry");
    for entry in &entries {
        let phase = agentmesh_proto::phase_from_wire(entry.phase)
            .unwrap()
            .as_str();
        let turn = turns
            .iter()
            .find(|t| {
                t.str("gen_ai.agent.name") == entry.role
                    && t.int("agentmesh.round") == Some(entry.round as i64)
                    && t.str("agentmesh.phase") == phase
            })
            .unwrap_or_else(|| {
                panic!(
                    "no turn span for entry #{} {} r{} {phase}; turns: {:#?}",
                    entry.seq,
                    entry.role,
                    entry.round,
                    turns.iter().map(|t| &t.attributes).collect::<Vec<_>>()
                )
            });
        assert_eq!(turn.name, format!("invoke_agent {}", entry.role));
        assert_eq!(turn.kind, KIND_INTERNAL);
        assert_eq!(turn.service, "agentmesh-worker");
        assert_eq!(turn.str("gen_ai.operation.name"), "invoke_agent");
        assert_eq!(turn.str("gen_ai.provider.name"), "scripted");
        assert_eq!(turn.str("gen_ai.agent.id"), entry.worker_id);
        assert_eq!(
            turn.resource["service.instance.id"],
            entry.worker_id.as_str()
        );
        assert_eq!(turn.resource["agentmesh.worker.role"], entry.role.as_str());
        assert_eq!(turn.str("gen_ai.conversation.id"), id);
        let up = parent(&index, turn);
        assert_eq!(up.service, "agentmesh-coordinator");
        assert_eq!(up.name, phase, "{} answered in {phase}", turn.name);
        assert_eq!(up.int("agentmesh.round"), Some(entry.round as i64));
    }
    assert_gen_ai_names_exact(&spans);
    eprintln!("{}", render_tree(&spans));

    // JSON logs: every line an object; those logged in a traced span name that span.
    let exported: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut traced_lines = 0;
    let logs = [cluster.coordinator.log_text()]
        .into_iter()
        .chain(cluster.workers.values().map(|w| w.log_text()));
    for text in logs {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let line: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            for key in ["timestamp", "level", "target", "message", "fields"] {
                assert!(line.get(key).is_some(), "{key} missing: {line}");
            }
            if let Some(trace_id) = line.get("trace_id") {
                traced_lines += 1;
                assert_eq!(trace_id.as_str(), traces.first().copied(), "{line}");
                let span_id = line["span_id"].as_str().unwrap_or("");
                assert!(exported.contains(span_id), "{line} names an exported span");
            }
        }
    }
    assert!(
        traced_lines > 0,
        "the session's log lines carry its trace id"
    );
}

#[test]
fn a_model_negotiation_traces_each_model_call_under_its_turn() {
    let collector = Collector::start();
    let server = start_llm_server();
    let traced = ["--otlp-endpoint", collector.url.as_str()];
    let mut cluster = Cluster::start(CoordinatorOpts {
        phase_timeout: "240s",
        pending_timeout: "60s",
        extra: traced.iter().map(|s| s.to_string()).collect(),
    });
    // The supervisor thinks through the OpenAI API, the backend through Anthropic's and
    // records its prompts and replies (--trace-content); the supervisor records none.
    // Shorter replies than llm.rs's (the trace is the point here, not the text): 48
    // tokens still hold a verdict's JSON.
    let flags = |brain: &str, url: &str| {
        let mut flags = model_flags(brain, url);
        let at = flags.iter().position(|f| f == "--max-tokens").unwrap() + 1;
        flags[at] = "48".into();
        flags.extend(traced.iter().map(|s| s.to_string()));
        flags
    };
    let supervisor = flags("openai", &format!("{}/v1", server.url));
    let mut backend = flags("anthropic", &server.url);
    backend.push("--trace-content".into());
    cluster.add_worker(
        "supervisor",
        "supervisor-llm",
        &supervisor.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    cluster.add_worker(
        "backend",
        "backend-llm",
        &backend.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    cluster.wait_workers(2, Duration::from_secs(30));

    let out = meshctl(
        &cluster,
        &[
            "--otlp-endpoint",
            &collector.url,
            "run",
            TASK,
            "--roles",
            "backend",
            "--max-rounds",
            "1",
        ],
        &[],
    );
    let id = session_id(&out);
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "meshctl run: {:?}\n{}--- llm server ---\n{}",
        out.status,
        cluster.logs(),
        tail(&server.proc.log_text(), 20)
    );
    let entries = cluster.transcript(&id).entries;
    stop_all(&mut cluster);
    let spans = collector.wait_for("a turn span per entry", Duration::from_secs(30), |spans| {
        spans
            .iter()
            .filter(|s| s.name.starts_with("invoke_agent"))
            .count()
            >= entries.len()
            && spans.iter().any(|s| s.name == "session")
    });
    let traces: BTreeSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(traces.len(), 1, "one trace id: {traces:?}");
    assert_session_under_meshctl(&spans, &id);
    let index = by_id(&spans);

    let chats: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("chat"))
        .collect();
    assert!(
        chats.len() >= entries.len(),
        "a model call per turn at least: {} calls, {} entries",
        chats.len(),
        entries.len()
    );
    let mut usage_per_turn: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for chat in &chats {
        let turn = parent(&index, chat);
        assert!(turn.name.starts_with("invoke_agent"), "chat under its turn");
        let provider = if turn.str("gen_ai.agent.name") == "supervisor" {
            "openai"
        } else {
            "anthropic"
        };
        assert_eq!(chat.name, "chat smollm2-135m");
        assert_eq!(chat.kind, KIND_CLIENT);
        assert_eq!(chat.str("gen_ai.operation.name"), "chat");
        assert_eq!(chat.str("gen_ai.provider.name"), provider);
        assert_eq!(turn.str("gen_ai.provider.name"), provider);
        assert_eq!(chat.str("gen_ai.request.model"), "smollm2-135m");
        assert!(!chat.str("gen_ai.response.model").is_empty(), "{chat:?}");
        let reasons = chat.attr("gen_ai.response.finish_reasons");
        assert!(
            reasons
                .and_then(Value::as_array)
                .is_some_and(|r| !r.is_empty()),
            "finish reasons: {chat:?}"
        );
        let input = chat.int("gen_ai.usage.input_tokens").unwrap_or(0);
        let output = chat.int("gen_ai.usage.output_tokens").unwrap_or(0);
        assert!(input > 0 && output > 0, "token usage: {chat:?}");
        let sum = usage_per_turn.entry(turn.span_id.as_str()).or_default();
        sum.0 += input;
        sum.1 += output;

        // Content only where --trace-content was given, and bounded.
        let details: Vec<&BTreeMap<String, Value>> = chat
            .events
            .iter()
            .filter(|(name, _)| name == "gen_ai.client.inference.operation.details")
            .map(|(_, attrs)| attrs)
            .collect();
        if provider == "anthropic" {
            assert_eq!(details.len(), 1, "{chat:?}");
            for key in [
                "gen_ai.system_instructions",
                "gen_ai.input.messages",
                "gen_ai.output.messages",
            ] {
                let text = details[0][key].as_str().unwrap_or("");
                assert!(!text.is_empty() && text.len() <= 8 * 1024, "{key}: {text}");
            }
            // The prompts fit the limit here (--prompt-budget 600), so nothing was cut.
            let input: Value =
                serde_json::from_str(details[0]["gen_ai.input.messages"].as_str().unwrap())
                    .expect("the input messages as JSON");
            assert_eq!(input[0]["role"], "user", "{input}");
        } else {
            assert!(details.is_empty(), "no content without --trace-content");
        }
    }
    // A turn's usage is the sum of its calls', as the transcript records it.
    for entry in &entries {
        let phase = agentmesh_proto::phase_from_wire(entry.phase)
            .unwrap()
            .as_str();
        let turn = spans
            .iter()
            .find(|t| {
                t.name.starts_with("invoke_agent")
                    && t.str("gen_ai.agent.name") == entry.role
                    && t.str("agentmesh.phase") == phase
            })
            .unwrap_or_else(|| panic!("no turn span for {entry:?}"));
        assert_eq!(
            (
                turn.int("gen_ai.usage.input_tokens"),
                turn.int("gen_ai.usage.output_tokens")
            ),
            (
                Some(entry.prompt_tokens as i64),
                Some(entry.completion_tokens as i64)
            ),
            "{turn:?}"
        );
        let (input, output) = usage_per_turn[turn.span_id.as_str()];
        assert_eq!(
            (input as u64, output as u64),
            (entry.prompt_tokens, entry.completion_tokens)
        );
    }
    // Without --trace-content nothing of the task (which every prompt holds) is recorded.
    let needle = "order-tracking";
    for span in spans
        .iter()
        .filter(|s| s.resource.get("service.instance.id") != Some(&Value::from("backend-llm")))
    {
        let text = format!("{:?} {:?}", span.attributes, span.events);
        assert!(
            !text.contains(needle),
            "{}:{} holds prompt text",
            span.service,
            span.name
        );
    }
    assert_gen_ai_names_exact(&spans);
    eprintln!("{}", render_tree(&spans));
    drop(server);
}

#[test]
fn with_tracing_off_nothing_is_exported() {
    // Listening where an exporter would send by default (the OTLP/gRPC port), when free.
    let default_port = Collector::start_on("127.0.0.1:4317");
    let on_default = default_port.is_some();
    let collector = default_port.unwrap_or_else(Collector::start);
    let mut cluster = Cluster::start(CoordinatorOpts::default());
    cluster.add_roles(&["supervisor", "backend"], 1, &[]);
    let out = meshctl(
        &cluster,
        &["run", TASK, "--roles", "backend", "--max-rounds", "2"],
        &[],
    );
    session_id(&out);
    // The standard environment can name a collector and still turn the SDK off.
    for off in [
        ("OTEL_SDK_DISABLED", "true"),
        ("OTEL_TRACES_EXPORTER", "none"),
    ] {
        let out = meshctl(
            &cluster,
            &["sessions"],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()), off],
        );
        assert!(out.status.success(), "{out:?}");
    }
    stop_all(&mut cluster);
    assert_eq!(
        collector.requests(),
        0,
        "nothing was exported (receiver on the default port: {on_default})"
    );

    // The control: the same environment without the switch exports.
    let out = meshctl(
        &cluster,
        &["--wait", "0", "sessions"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str())],
    );
    assert!(!out.status.success(), "the coordinator is stopped: {out:?}");
    let spans = collector.wait_for("meshctl's span", Duration::from_secs(10), |spans| {
        spans.iter().any(|s| s.name == "meshctl sessions")
    });
    let span = spans.iter().find(|s| s.name == "meshctl sessions").unwrap();
    assert_eq!(
        span.status_code,
        agentmesh_e2e::otlp::STATUS_ERROR,
        "{span:?}"
    );
    assert_eq!(span.int("process.exit.code"), Some(1), "{span:?}");
}

/// A session created over the JSON API joins the caller's trace: `POST /api/sessions`
/// with a W3C `traceparent` opens a SERVER span that is the caller's child, and the
/// session's span (and every worker's turn below it) is in that trace.
#[test]
fn a_session_created_over_http_joins_the_callers_trace() {
    const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER_SPAN: &str = "00f067aa0ba902b7";
    let collector = Collector::start();
    let mut cluster = traced_cluster(&collector, &[], &["supervisor", "backend"]);
    cluster.wait_workers(2, Duration::from_secs(10));
    let http = cluster.http.clone().expect("the coordinator serves HTTP");
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let created = agentmesh_e2e::webdriver::http(
        "POST",
        &format!("http://{http}/api/sessions"),
        &[("traceparent", &traceparent)],
        Some(&serde_json::json!({ "task": TASK, "roles": ["backend"], "max_rounds": 2 })),
    )
    .expect("POST /api/sessions");
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().expect("id").to_string();
    cluster.wait_end(&id, Duration::from_secs(30));
    stop_all(&mut cluster);

    let spans = collector.wait_for(
        "the HTTP span, the session's and its turns'",
        Duration::from_secs(30),
        |spans| {
            spans.iter().any(|s| s.name == "session")
                && spans.iter().any(|s| s.name.starts_with("invoke_agent"))
        },
    );
    let index = by_id(&spans);
    let server = one(&spans, "agentmesh-coordinator", "POST /api/sessions");
    assert_eq!(server.kind, KIND_SERVER);
    assert_eq!(server.trace_id, CALLER_TRACE, "the caller's trace");
    assert_eq!(
        server.parent_span_id, CALLER_SPAN,
        "the caller's span is the parent"
    );
    let session = one(&spans, "agentmesh-coordinator", "session");
    assert_eq!(parent(&index, session).span_id, server.span_id);
    assert_eq!(
        session.attributes["gen_ai.conversation.id"],
        Value::from(id)
    );
    let traces: BTreeSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(
        traces,
        BTreeSet::from([CALLER_TRACE]),
        "every span in the caller's trace"
    );
    assert!(
        spans
            .iter()
            .any(|s| s.service == "agentmesh-worker" && s.name.starts_with("invoke_agent")),
        "the workers' turns are in it:\n{}",
        render_tree(&spans)
    );
}
