//! `mesh-chaos`: a bounded chaos soak of agentmesh's cluster mode.
//!
//! Setup: one real etcd, three coordinators (`--etcd`), two workers per built-in role
//! under short leases, and a steady number of sessions in flight. For `--duration` a
//! seeded schedule injects faults at random times: SIGKILL of the leading coordinator
//! (a replacement process starts), SIGKILL of a worker (restarted under the same id),
//! SIGSTOP then SIGCONT of a worker (sometimes for longer than its lease TTL), and an
//! etcd restart on the same data dir. Then injection stops, everything heals, every
//! session is waited for (bounded), and the final state is checked: see `checks`.
//!
//! # Layout
//!
//! - `schedule`: the seeded fault plan (pure).
//! - `procs`: child processes (kill on drop, signals by pid, own process group) and the
//!   binaries' lookup.
//! - `mesh`: etcd, coordinators and workers; leader lookup; the faults' mechanics.
//! - `client`: gRPC calls across coordinators that come and go.
//! - `driver`: keeps sessions in flight and measures their progress.
//! - `acks`: the workers' `result acknowledged` log lines.
//! - `checks`: the invariants over the final state (pure).
//! - `report`: the table and the JSON report.
//! - `main.rs`: flags and the run itself (setup, soak, heal, check).

pub mod acks;
pub mod checks;
pub mod client;
pub mod driver;
pub mod mesh;
pub mod procs;
pub mod report;
pub mod schedule;

use std::sync::OnceLock;
use std::time::Instant;

/// A conflict task's session (see `agentmesh_brain::CONFLICT_TASK`).
pub fn is_conflict_task(task: &str) -> bool {
    task.starts_with(agentmesh_brain::CONFLICT_TASK)
}

pub fn is_terminal_name(status: &str) -> bool {
    matches!(
        status,
        "CONSENSUS" | "NO_CONSENSUS" | "CANCELLED" | "FAILED" | "COMPLETED"
    )
}

static START: OnceLock<Instant> = OnceLock::new();

/// Marks the start of the soak: progress lines count from here.
pub fn mark_start() -> Instant {
    *START.get_or_init(Instant::now)
}

/// One progress line on stdout, stamped with the time since the soak started.
pub fn progress(line: &str) {
    let at = START.get().map_or(0.0, |s| s.elapsed().as_secs_f64());
    println!("[{at:7.1}s] {line}");
}
