//! The metrics every process serves, as a real Prometheus scrapes them, and the operator
//! material in `deploy/`: after a negotiation with one worker on a model brain (a mock
//! OpenAI endpoint that fails its first call, so a retry happens), the coordinator's and
//! the workers' series are there with the right labels and none labelled by session, and
//! every panel of the Grafana dashboard returns data.

use agentmesh_e2e::mock_model::MockModel;
use agentmesh_e2e::prometheus::{Prometheus, ScrapeJob};
use agentmesh_e2e::{Cluster, CoordinatorOpts, Proc};
use agentmesh_proto::v1::SessionStatus;
use std::io::{BufRead, BufReader};
use std::time::Duration;

/// The `host:port` a worker started with `--metrics-listen 127.0.0.1:0` serves on.
fn metrics_addr(worker: &mut Proc) -> String {
    let stdout = worker.child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read stdout");
    line.strip_prefix("metrics on ")
        .unwrap_or_else(|| panic!("{} printed {line:?}, not its metrics address", worker.name))
        .trim()
        .to_string()
}

/// The value of `query` once it is above zero (Prometheus scrapes every second; a worker
/// counts its last ack as it arrives).
fn positive(prometheus: &Prometheus, query: &str) -> f64 {
    prometheus
        .wait_for(query, Duration::from_secs(15), "above zero", |v| {
            v.is_some_and(|v| v > 0.0)
        })
        .expect("a value")
}

#[test]
fn every_process_is_scraped_and_every_dashboard_panel_has_data() {
    let mock = MockModel::start(1);
    let mut cluster = Cluster::start(CoordinatorOpts::default());
    let listen = ["--metrics-listen", "127.0.0.1:0"];
    cluster.add_worker("supervisor", "supervisor-1", &listen);
    let base_url = mock.base_url.clone();
    cluster.add_worker(
        "backend",
        "backend-1",
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--brain",
            "openai",
            "--model",
            "mock-model",
            "--base-url",
            &base_url,
        ],
    );
    cluster.wait_workers(2, Duration::from_secs(30));
    let worker_targets: Vec<String> = ["supervisor-1", "backend-1"]
        .iter()
        .map(|id| metrics_addr(cluster.workers.get_mut(*id).unwrap()))
        .collect();
    let http = cluster.http.clone().expect("the coordinator serves HTTP");
    let prometheus = Prometheus::start(&[
        ScrapeJob {
            name: "agentmesh-coordinator".into(),
            targets: vec![http],
        },
        ScrapeJob {
            name: "agentmesh-worker".into(),
            targets: worker_targets,
        },
    ]);
    prometheus.wait_for(
        "sum(up)",
        Duration::from_secs(30),
        "every target scraped",
        |v| v == Some(3.0),
    );

    // A negotiation followed with meshctl (a session watcher), to its end.
    let out = cluster.meshctl(&["run", "Design a payments ledger", "--roles", "backend"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("session "))
        .expect("session id")
        .trim()
        .to_string();
    assert_eq!(cluster.session(&id).status, SessionStatus::Consensus as i32);
    assert!(mock.calls() >= 3, "the backend's turns went to the model");

    // Every series the README documents, once Prometheus has scraped past the session.
    prometheus.wait_for(
        r#"sum(agentmesh_sessions_total{outcome="consensus"})"#,
        Duration::from_secs(30),
        "the session counted",
        |v| v == Some(1.0),
    );
    let coordinator = [
        r#"sum(agentmesh_turns_total{role="backend",outcome="accepted"})"#,
        r#"sum(agentmesh_turns_total{role="supervisor",outcome="accepted"})"#,
        r#"sum(agentmesh_round_duration_seconds_count{mode="negotiation"})"#,
        r#"sum(agentmesh_phase_duration_seconds_count{phase="REVIEW"})"#,
        r#"sum(agentmesh_turn_duration_seconds_count{role="backend"})"#,
        r#"sum(agentmesh_store_write_duration_seconds_count{outcome="ok"})"#,
        r#"sum(agentmesh_tokens_total{role="backend",type="input"})"#,
        r#"sum(agentmesh_tokens_total{role="backend",type="output"})"#,
        r#"sum(agentmesh_role_workers{role="backend"})"#,
        r#"sum(agentmesh_role_capacity{role="backend"})"#,
        r#"max(agentmesh_coordinator_leader)"#,
        r#"max(agentmesh_store_reachable)"#,
    ];
    for query in coordinator {
        positive(&prometheus, query);
    }
    let tokens = positive(
        &prometheus,
        r#"sum(agentmesh_tokens_total{role="backend",type="input"})"#,
    );
    let calls = mock.calls() as f64 - 1.0;
    assert_eq!(
        tokens,
        120.0 * calls,
        "120 input tokens per successful call"
    );
    assert!(
        prometheus
            .query(r#"sum(agentmesh_watchers{stream="session"})"#)
            .is_some(),
        "the watcher gauge exists"
    );
    let workers = [
        r#"sum(agentmesh_worker_turns_total{role="backend",outcome="accepted"})"#,
        r#"sum(agentmesh_worker_turns_total{role="supervisor",outcome="accepted"})"#,
        r#"sum(agentmesh_worker_model_call_duration_seconds_count{provider="openai",model="mock-model",outcome="ok"})"#,
        r#"sum(agentmesh_worker_model_retries_total{provider="openai",cause="server_error"})"#,
        r#"sum(agentmesh_worker_tokens_total{type="output"})"#,
        r#"sum(gen_ai_client_token_usage_count{gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="mock-model",gen_ai_token_type="input"})"#,
        r#"sum(gen_ai_client_operation_duration_seconds_count{gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="mock-model"})"#,
    ];
    for query in workers {
        positive(&prometheus, query);
    }
    // The GenAI conventions' bucket boundaries, every one of them.
    for (metric, bounds) in [
        (
            "gen_ai_client_token_usage_bucket",
            &[
                1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
                4194304.0, 16777216.0, 67108864.0,
            ][..],
        ),
        (
            "gen_ai_client_operation_duration_seconds_bucket",
            &[
                0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96,
                81.92,
            ][..],
        ),
    ] {
        let les: std::collections::BTreeSet<String> = prometheus
            .series(metric)
            .iter()
            .filter_map(|labels| labels.get("le").cloned())
            .filter(|le| le != "+Inf")
            .collect();
        let got: Vec<f64> = {
            let mut v: Vec<f64> = les.iter().map(|le| le.parse().unwrap()).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        assert_eq!(got, bounds, "{metric}'s bucket boundaries");
    }
    // Bounded labels: no series carries the session's id.
    let all = prometheus.series(r#"{__name__=~"agentmesh_.+|gen_ai_.+"}"#);
    assert!(all.len() > 20, "{} series", all.len());
    for labels in &all {
        assert!(
            !labels.values().any(|v| v.contains(&id)),
            "a series is labelled by the session: {labels:?}"
        );
    }

    // Every panel of the dashboard, as Grafana would ask it, once Prometheus holds a few
    // samples of every series (a rate needs two within its window).
    prometheus.wait_for(
        r#"min(count_over_time({__name__=~"agentmesh_.+_total|gen_ai_.+_count"}[1m]))"#,
        Duration::from_secs(30),
        "three samples of every counter",
        |v| v.is_some_and(|n| n >= 3.0),
    );
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            agentmesh_e2e::chart::repo_root().join("deploy/grafana/agentmesh-dashboard.json"),
        )
        .expect("the dashboard"),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"]
                .as_str()
                .expect("expr")
                .replace("$__rate_interval", "1m");
            assert!(
                prometheus.query_any(&expr),
                "panel {:?} has no data: {expr}",
                panel["title"]
            );
        }
    }
}
