//! A role scales on its own demand, from zero and back: the coordinator's `/metrics`
//! scraped by a real Prometheus, the exact query the Helm chart renders into the role's
//! KEDA ScaledObject evaluated through Prometheus's HTTP API, and KEDA's replica
//! arithmetic (`ceil(value / threshold)`) applied to what it returns.

use agentmesh_e2e::chart;
use agentmesh_e2e::prometheus::{Prometheus, ScrapeJob};
use agentmesh_e2e::{Cluster, CoordinatorOpts, assert_transcript_sound, http_get};
use agentmesh_proto::v1::SessionStatus;
use std::time::{Duration, Instant};

/// The job name `ci/keda-values.yaml` selects its coordinators by.
const JOB: &str = "agentmesh-coordinator";

/// Polls the coordinator's own `/metrics` until it holds `line`.
fn wait_metric_line(http: &str, line: &str, timeout: Duration) {
    let start = Instant::now();
    loop {
        let text = http_get(http, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "/metrics has no line {line:?} after {timeout:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_role_with_no_worker_scales_from_zero_and_back_on_the_charts_query() {
    let trigger = chart::keda_trigger(&chart::render("keda-values.yaml"), "backend");
    println!(
        "the chart's query for backend: {} (threshold {})",
        trigger.query, trigger.threshold
    );
    assert_eq!(
        trigger.min_replicas, 0,
        "ci/keda-values.yaml allows scale to zero"
    );
    let capacity = trigger.threshold as u32;

    let mut cluster = Cluster::start(CoordinatorOpts {
        // A session waits for a worker that has to be started first.
        pending_timeout: "120s",
        ..CoordinatorOpts::default()
    });
    let http = cluster.http.clone().expect("the coordinator serves HTTP");
    let prometheus = Prometheus::start(&[ScrapeJob {
        name: JOB.into(),
        targets: vec![http.clone()],
    }]);
    prometheus.wait_for(
        &format!("up{{job=\"{JOB}\"}}"),
        Duration::from_secs(30),
        "scraped",
        |v| v == Some(1.0),
    );
    let demand = |p: &Prometheus| {
        p.query(&trigger.query)
            .expect("the query always has a value")
    };
    assert_eq!(demand(&prometheus), 0.0, "nothing needs a backend yet");
    assert_eq!(trigger.desired_replicas(0.0), 0);

    // A supervisor, but no backend worker at all: the role is scaled to zero.
    cluster.add_roles(&["supervisor"], 1, &["--capacity", "8"]);
    let ids: Vec<String> = (0..3)
        .map(|i| {
            cluster
                .create(
                    &format!("Design a payments ledger (tenant {i})"),
                    &["backend"],
                    0,
                )
                .id
        })
        .collect();
    wait_metric_line(
        &http,
        "agentmesh_role_sessions{role=\"backend\",state=\"waiting\"} 3",
        Duration::from_secs(10),
    );
    let waiting = prometheus.wait_for(
        &trigger.query,
        Duration::from_secs(30),
        "3 sessions waiting",
        |v| v == Some(3.0),
    );
    let wanted = trigger.desired_replicas(waiting.unwrap());
    assert_eq!(wanted, 3u32.div_ceil(capacity), "ceil(3 / {capacity})");
    for id in &ids {
        assert_eq!(
            cluster.session(id).status,
            SessionStatus::Pending as i32,
            "{id} waits in PENDING for a backend"
        );
    }

    // KEDA starts that many replicas; the sessions go on as soon as they register.
    for i in 1..=wanted {
        cluster.add_worker(
            "backend",
            &format!("backend-{i}"),
            &["--capacity", &capacity.to_string(), "--think-ms", "1500"],
        );
    }
    prometheus.wait_for(
        &format!(
            "sum(agentmesh_role_sessions{{job=\"{JOB}\",role=\"backend\",state=\"assigned\"}})"
        ),
        Duration::from_secs(30),
        "3 sessions holding a backend",
        |v| v == Some(3.0),
    );
    let holding = demand(&prometheus);
    assert_eq!(holding, 3.0, "holding sessions are demand too");
    assert_eq!(
        trigger.desired_replicas(holding),
        wanted,
        "the replicas stay while used"
    );
    assert_eq!(
        prometheus.query(&format!(
            "sum(agentmesh_role_capacity{{job=\"{JOB}\",role=\"backend\"}})"
        )),
        Some(f64::from(wanted * capacity))
    );

    for id in &ids {
        let session = cluster.wait_end(id, Duration::from_secs(90));
        assert_eq!(
            session.status,
            SessionStatus::Consensus as i32,
            "{}",
            session.reason
        );
        assert_transcript_sound(&cluster.transcript(id));
    }
    let after = prometheus.wait_for(
        &trigger.query,
        Duration::from_secs(30),
        "0 after the sessions ended",
        |v| v == Some(0.0),
    );
    assert_eq!(trigger.desired_replicas(after.unwrap()), 0, "back to zero");
}
