//! The end of a run: the table on stdout and the JSON report (`--report FILE`).

use crate::checks::Check;
use crate::driver::Stall;
use crate::schedule::FaultKind;
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// One fault of the plan and what became of it.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    pub n: usize,
    pub kind: FaultKind,
    pub planned_at: Duration,
    /// When it was injected (later than planned if it had to wait, e.g. for a leader).
    pub at: Duration,
    pub hold: Duration,
    /// What it hit, e.g. "c1 (pid 4242)" or "backend-2 (pid 4300)".
    pub target: String,
    /// None when injected; otherwise why it was skipped.
    pub skipped: Option<String>,
    /// A pause that outlived the workers' lease TTL.
    pub beyond_lease: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Wall {
    pub setup: Duration,
    pub soak: Duration,
    pub heal: Duration,
    pub check: Duration,
    pub total: Duration,
}

pub struct Report {
    pub seed: u64,
    pub command: String,
    pub config: serde_json::Value,
    /// The kinds of fault the run injects.
    pub kinds: Vec<FaultKind>,
    pub faults: Vec<FaultRecord>,
    /// Final outcome → count, per task kind ("demo", "conflict").
    pub outcomes: BTreeMap<String, BTreeMap<String, usize>>,
    /// FAILED and CANCELLED reasons → count.
    pub reasons: BTreeMap<String, usize>,
    pub created: usize,
    pub adopted: usize,
    pub create_failures: u64,
    pub checks: Vec<Check>,
    pub stall: Stall,
    pub wall: Wall,
    pub log_dir: String,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(Check::passed)
    }

    pub fn outcome_totals(&self) -> BTreeMap<String, usize> {
        let mut totals = BTreeMap::new();
        for by in self.outcomes.values() {
            for (outcome, n) in by {
                *totals.entry(outcome.clone()).or_default() += n;
            }
        }
        totals
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let line = "-".repeat(72);
        let _ = writeln!(out, "{line}");
        let _ = writeln!(out, "mesh-chaos report, seed {}", self.seed);
        let _ = writeln!(out, "{line}");
        let _ = writeln!(out, "{:<46}{:>8}{:>9}", "faults", "injected", "skipped");
        for &kind in &self.kinds {
            let of_kind: Vec<&FaultRecord> =
                self.faults.iter().filter(|f| f.kind == kind).collect();
            let injected = of_kind.iter().filter(|f| f.skipped.is_none()).count();
            let _ = writeln!(
                out,
                "  {:<44}{:>8}{:>9}",
                kind.label(),
                injected,
                of_kind.len() - injected
            );
            let beyond = match kind {
                FaultKind::PauseWorker => "of which longer than the lease TTL",
                FaultKind::PauseLeader => "of which longer than the election TTL",
                _ => continue,
            };
            let long = of_kind
                .iter()
                .filter(|f| f.skipped.is_none() && f.beyond_lease)
                .count();
            let _ = writeln!(out, "    {beyond:<42}{long:>8}");
        }
        let injected = self.faults.iter().filter(|f| f.skipped.is_none()).count();
        let _ = writeln!(out, "  {:<44}{:>8}", "total", injected);
        let _ = writeln!(out);
        let kinds: Vec<&String> = self.outcomes.keys().collect();
        let _ = write!(out, "{:<30}", "sessions by outcome");
        for k in &kinds {
            let _ = write!(out, "{:>10}", k);
        }
        let _ = writeln!(out, "{:>10}", "all");
        let totals = self.outcome_totals();
        for (outcome, total) in &totals {
            let _ = write!(out, "  {outcome:<28}");
            for k in &kinds {
                let n = self.outcomes[*k].get(outcome).copied().unwrap_or(0);
                let _ = write!(out, "{n:>10}");
            }
            let _ = writeln!(out, "{total:>10}");
        }
        let _ = writeln!(
            out,
            "  {:<28}{:>10}",
            "total",
            totals.values().sum::<usize>()
        );
        let _ = writeln!(
            out,
            "  created {} (answered), adopted {} (found without an answer), {} create calls failed",
            self.created, self.adopted, self.create_failures
        );
        for (reason, n) in self.reasons.iter().take(8) {
            let _ = writeln!(out, "  {n:>4} x {}", shorten(reason, 62));
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<50}{:>6}  scope", "checks", "result");
        for c in &self.checks {
            let result = if c.passed() { "pass" } else { "FAIL" };
            let _ = writeln!(out, "  {:<48}{:>6}  {}", c.name, result, c.scope);
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "longest wait without progress: {:.1} s (session {}, {} round {}, at {:.1} s)",
            self.stall.waited.as_secs_f64(),
            if self.stall.session.is_empty() {
                "-"
            } else {
                &self.stall.session
            },
            self.stall.status,
            self.stall.round,
            self.stall.at.as_secs_f64()
        );
        let w = &self.wall;
        let _ = writeln!(
            out,
            "wall time: {:.1} s (setup {:.1}, soak {:.1}, heal {:.1}, checks {:.1})",
            w.total.as_secs_f64(),
            w.setup.as_secs_f64(),
            w.soak.as_secs_f64(),
            w.heal.as_secs_f64(),
            w.check.as_secs_f64()
        );
        let _ = writeln!(out, "seed: {}   reproduce: {}", self.seed, self.command);
        let _ = writeln!(out, "logs: {}", self.log_dir);
        let _ = writeln!(
            out,
            "result: {}",
            if self.passed() { "PASS" } else { "FAIL" }
        );
        let _ = writeln!(out, "{line}");
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let counts: serde_json::Map<String, serde_json::Value> = self
            .kinds
            .iter()
            .map(|k| {
                let n = self
                    .faults
                    .iter()
                    .filter(|f| f.kind == *k && f.skipped.is_none())
                    .count();
                (k.key().to_string(), json!(n))
            })
            .collect();
        json!({
            "seed": self.seed,
            "command": self.command,
            "config": self.config,
            "passed": self.passed(),
            "fault_counts": counts,
            "faults": self.faults.iter().map(|f| json!({
                "n": f.n,
                "kind": f.kind.key(),
                "planned_at_s": f.planned_at.as_secs_f64(),
                "at_s": f.at.as_secs_f64(),
                "hold_s": f.hold.as_secs_f64(),
                "target": f.target,
                "skipped": f.skipped,
                "beyond_lease": f.beyond_lease,
            })).collect::<Vec<_>>(),
            "outcomes": self.outcomes,
            "outcome_totals": self.outcome_totals(),
            "reasons": self.reasons,
            "created": self.created,
            "adopted": self.adopted,
            "create_failures": self.create_failures,
            "checks": self.checks.iter().map(|c| json!({
                "name": c.name,
                "passed": c.passed(),
                "scope": c.scope,
                "failures": c.failures,
            })).collect::<Vec<_>>(),
            "longest_wait_without_progress": {
                "seconds": self.stall.waited.as_secs_f64(),
                "session": self.stall.session,
                "status": self.stall.status,
                "round": self.stall.round,
                "at_s": self.stall.at.as_secs_f64(),
            },
            "wall_s": {
                "setup": self.wall.setup.as_secs_f64(),
                "soak": self.wall.soak.as_secs_f64(),
                "heal": self.wall.heal.as_secs_f64(),
                "checks": self.wall.check.as_secs_f64(),
                "total": self.wall.total.as_secs_f64(),
            },
            "log_dir": self.log_dir,
        })
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}
