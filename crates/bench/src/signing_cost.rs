//! `signing`: what signing and verification cost the N=6 broadcast round, in one run
//! (issue 13). Four sessions, alternating: signatures **off** (`mesh-coordinator
//! --signatures off`, bench workers `--unsigned`: no signing, no verification; the chain
//! is still kept) and **on** (the default: every bench worker signs each result with an
//! Ed25519 key of its own, the coordinator verifies each before accepting it and keeps
//! the chain). Each session gets a fresh coordinator and fleet; the rounds are timed
//! where the turns land, as in `broadcast`.
//!
//! Aim: on p50 ≤ 1.10 × off p50.

use crate::mesh::{self, Coordinator};
use crate::report::{ms, on_off_row, on_off_table};
use crate::stats::{Summary, ratio};
use crate::{Bench, Target, broadcast_row};
use anyhow::Context;
use serde::Serialize;

#[derive(Serialize)]
struct Row {
    signatures: &'static str,
    #[serde(flatten)]
    round: crate::LatencyRow,
}

pub async fn run(b: &mut Bench) -> anyhow::Result<()> {
    let rounds = b.rounds((b.plan.rounds)(6));
    let n = 6;
    let mut rows: Vec<Row> = Vec::new();
    for (i, on) in [false, true, false, true].into_iter().enumerate() {
        let what = if on { "on" } else { "off" };
        let mut launch = b.launch.clone();
        if !on {
            launch
                .extra
                .extend(["--signatures".to_string(), "off".to_string()]);
        }
        let name = format!("coordinator-signing-{what}-{i}");
        let coord = Coordinator::start(&b.bins, &b.log_dir, &name, None, &launch).await?;
        let unsigned: &[&str] = if on { &[] } else { &["--unsigned"] };
        let fleet = mesh::setting_fleet(
            &b.bins,
            &b.log_dir,
            &coord,
            n,
            &format!("worker-signing-{i}"),
            unsigned,
            &[],
        )
        .await?;
        let run = b
            .broadcast(&coord, &fleet, rounds, None)
            .await
            .with_context(|| format!("broadcast N=6, signatures {what}"))?;
        mesh::retire_fleet(&coord, fleet, 0).await?;
        coord.stop();
        let mut round = broadcast_row(b, "embedded", &run)?;
        round.raw_p50_us = None;
        rows.push(Row {
            signatures: what,
            round,
        });
    }
    // The two sessions of each setting, pooled by their p50s and p99s (mean of the two).
    let pooled = |what: &str| -> (f64, f64) {
        let of: Vec<&Summary> = rows
            .iter()
            .filter(|r| r.signatures == what)
            .map(|r| &r.round.latency)
            .collect();
        let k = of.len().max(1) as f64;
        (
            of.iter().map(|s| s.p50_us).sum::<f64>() / k,
            of.iter().map(|s| s.p99_us).sum::<f64>() / k,
        )
    };
    let (off_p50, off_p99) = pooled("off");
    let (on_p50, on_p99) = pooled("on");
    for row in &mut rows {
        row.round.ratio_p50 = Some(ratio(row.round.latency.p50_us, off_p50));
        row.round.ratio_p99 = Some(ratio(row.round.latency.p99_us, off_p99));
    }
    let targets = vec![Target::new(
        "signatures on (every result signed and verified) p50 ≤ 1.10 × off p50 at N=6 (ratio)",
        ratio(on_p50, off_p50),
        1.10,
    )];
    let mut t = on_off_table(
        "(i) signing: N=6 broadcast round with result signatures off and on (signed by each worker, verified by the coordinator)",
        "signatures",
        &[],
    );
    for r in &rows {
        t.row(on_off_row(r.signatures, &r.round, Vec::new()));
    }
    t.note(format!(
        "pooled (mean of each setting's two sessions): off p50 {} p99 {} ms; on p50 {} p99 {} ms; \
         on: 6 Ed25519 signatures (one per worker) and 6 verifications (coordinator) per round",
        ms(off_p50),
        ms(off_p99),
        ms(on_p50),
        ms(on_p99)
    ));
    for target in &targets {
        t.note(target.line());
    }
    #[derive(Serialize)]
    struct Body<'a> {
        rows: &'a [Row],
        targets: &'a [Target],
    }
    b.emit(
        &t,
        "signing",
        &Body {
            rows: &rows,
            targets: &targets,
        },
    );
    Ok(())
}
