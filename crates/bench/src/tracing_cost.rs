//! `tracing`: what tracing costs the N=6 broadcast round, in one run. Six sessions,
//! alternating: tracing **off** (no collector configured, so no OpenTelemetry layer is
//! installed: the default) and **on** (every process exporting over OTLP/gRPC to a local
//! collector, sampling 100 %: every session's root is sampled and the workers follow it). Each session gets a fresh
//! coordinator and fleet; the rounds are timed where the turns land, as in `broadcast`.
//!
//! The collector is this process: the official OTLP `TraceService` (opentelemetry-proto)
//! on loopback, counting spans. An on-round exports 8 spans at N=6 (the round, its
//! CONTRIBUTE phase, six `invoke_agent` turns).
//!
//! Aims: on p50 ≤ 1.15 × off p50; off p50 ≤ 1.02 × the `broadcast` workload's N=6 p50
//! when that ran in the same run (with tracing off both run the same code path, so this
//! bounds what the off path adds: a relaxed atomic load per span site, an empty
//! `trace_context` that encodes to nothing).

use crate::mesh::{self, Coordinator};
use crate::report::{ms, num, on_off_row, on_off_table};
use crate::stats::{Summary, ratio};
use crate::{Bench, Target, broadcast_row};
use anyhow::Context;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counts the spans it is sent.
#[derive(Default, Clone)]
struct Sink(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts the collector on a loopback port; returns its URL and its count.
async fn collector() -> anyhow::Result<(String, Sink)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let sink = Sink::default();
    let service = TraceServiceServer::new(sink.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Ok((url, sink))
}

/// Sessions of each setting, alternating off and on (the machine's speed drifts).
const SESSIONS_PER_SETTING: usize = 3;

#[derive(Serialize)]
struct Row {
    tracing: &'static str,
    #[serde(flatten)]
    round: crate::LatencyRow,
    spans_exported: u64,
}

pub async fn run(b: &mut Bench) -> anyhow::Result<()> {
    let (url, sink) = collector().await?;
    let rounds = b.rounds((b.plan.rounds)(6));
    let n = 6;
    let mut rows: Vec<Row> = Vec::new();
    // Every round's latency of each setting, pooled over its sessions.
    let mut pooled: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut cpu = [Duration::ZERO; 2];
    let settings = [false, true].repeat(SESSIONS_PER_SETTING);
    for (i, on) in settings.into_iter().enumerate() {
        let what = if on { "on" } else { "off" };
        let env: Vec<(&str, &str)> = if on {
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
                // The coordinator samples every session; workers follow its decision.
                ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
            ]
        } else {
            Vec::new()
        };
        let mut launch = b.launch.clone();
        if on {
            launch
                .extra
                .extend(["--otlp-endpoint".to_string(), url.clone()]);
        }
        let before = sink.0.load(Ordering::Relaxed);
        let name = format!("coordinator-tracing-{what}-{i}");
        let coord = Coordinator::start(&b.bins, &b.log_dir, &name, None, &launch).await?;
        let fleet = mesh::setting_fleet(
            &b.bins,
            &b.log_dir,
            &coord,
            n,
            &format!("worker-tracing-{i}"),
            &[],
            &env,
        )
        .await?;
        let run = b
            .broadcast(&coord, &fleet, rounds, None)
            .await
            .with_context(|| format!("broadcast N=6, tracing {what}"))?;
        // SIGTERM: workers and coordinator send their last spans before they exit.
        mesh::retire_fleet(&coord, fleet, 0).await?;
        coord.stop();
        pooled[usize::from(on)].extend(&run.latencies);
        cpu[usize::from(on)] += run.cpu.coordinator + run.cpu.workers;
        let mut round = broadcast_row(b, "embedded", &run)?;
        round.raw_p50_us = None;
        rows.push(Row {
            tracing: what,
            round,
            spans_exported: sink.0.load(Ordering::Relaxed) - before,
        });
    }
    let off = Summary::of(&pooled[0]).context("no rounds measured with tracing off")?;
    let on = Summary::of(&pooled[1]).context("no rounds measured with tracing on")?;
    let (off_p50, off_p99) = (off.p50_us, off.p99_us);
    let (on_p50, on_p99) = (on.p50_us, on.p99_us);
    // CPU per round of the coordinator and the workers together.
    let cpu_ratio = ratio(cpu[1].as_secs_f64(), cpu[0].as_secs_f64());
    for row in &mut rows {
        row.round.ratio_p50 = Some(ratio(row.round.latency.p50_us, off_p50));
        row.round.ratio_p99 = Some(ratio(row.round.latency.p99_us, off_p99));
    }
    let mut targets = vec![Target::new(
        "tracing on (100 % sampled, exported) p50 ≤ 1.15 × off p50 at N=6 (ratio)",
        ratio(on_p50, off_p50),
        1.15,
    )];
    match b.embedded.get(&6) {
        Some(plain) => targets.push(Target::new(
            "tracing off p50 ≤ 1.02 × the broadcast workload's N=6 p50 (ratio)",
            ratio(off_p50, plain.p50_us),
            1.02,
        )),
        None => println!(
            "tracing: the off target compares with the broadcast workload's N=6 round: \
             run `--only broadcast,tracing --ns 6` for it"
        ),
    }
    let mut t = on_off_table(
        "(h) tracing: N=6 broadcast round with tracing off and on (100 % sampled, exported)",
        "tracing",
        &["spans exported"],
    );
    for r in &rows {
        t.row(on_off_row(
            r.tracing,
            &r.round,
            vec![r.spans_exported.to_string()],
        ));
    }
    t.note(format!(
        "every round of each setting's {SESSIONS_PER_SETTING} sessions pooled: off p50 {} p99 {} \
         ms; on p50 {} p99 {} ms (p50 / off {}, p99 / off {}); CPU of the coordinator and \
         workers per round, on / off: {}; an on-round exports 8 spans (round, phase, 6 turns) \
         to the collector in this process",
        ms(off_p50),
        ms(off_p99),
        ms(on_p50),
        ms(on_p99),
        num(ratio(on_p50, off_p50), 3),
        num(ratio(on_p99, off_p99), 3),
        num(cpu_ratio, 3),
    ));
    for target in &targets {
        t.note(target.line());
    }
    #[derive(Serialize)]
    struct Body<'a> {
        rows: &'a [Row],
        off: Summary,
        on: Summary,
        cpu_on_over_off: f64,
        targets: &'a [Target],
    }
    b.emit(
        &t,
        "tracing",
        &Body {
            rows: &rows,
            off,
            on,
            cpu_on_over_off: cpu_ratio,
            targets: &targets,
        },
    );
    Ok(())
}
