//! `mesh-chaos`: a bounded chaos soak of agentmesh's cluster mode (see the library docs).
//!
//! Exit codes: 0 every check passed; 1 a check failed (each failure names the session,
//! the seq and what is wrong); 2 the run itself could not be carried out (no etcd, a
//! binary missing, the mesh never became ready); 130 interrupted.

use agentmesh_chaos::checks::{self, Check, SessionRecord};
use agentmesh_chaos::client::Clients;
use agentmesh_chaos::driver::{Driver, Mode};
use agentmesh_chaos::mesh::{Mesh, MeshOpts};
use agentmesh_chaos::report::{FaultRecord, Report, Wall};
use agentmesh_chaos::schedule::{self, FaultKind, Planned, Shape};
use agentmesh_chaos::{acks, is_conflict_task, mark_start, procs, progress};
use agentmesh_proto::parse_duration;
use agentmesh_proto::v1;
use agentmesh_store::SessionStore;
use clap::Parser;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser, Debug, Clone)]
#[command(
    version,
    about = "A chaos soak of agentmesh's cluster mode: 3 coordinators on a real etcd, workers \
             under leases, sessions in flight, seeded random faults; then the transcript invariants"
)]
struct Args {
    /// How long faults are injected (then everything heals and the run is checked).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// The fault schedule's seed (default: random; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Sessions kept in flight during the soak.
    #[arg(long, default_value_t = 20)]
    sessions: usize,
    /// Workers per role (the seven built-in roles).
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// The scripted brain's think time per turn, in ms.
    #[arg(long, default_value_t = 200)]
    think_ms: u64,
    /// Write the report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Coordinators (a killed leader is replaced, so there are this many again).
    #[arg(long, default_value_t = 3)]
    coordinators: usize,
    /// Mean time between two faults.
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    fault_every: Duration,
    /// The workers' `--lease-ttl` in seconds.
    #[arg(long, default_value_t = 2)]
    lease_ttl: u64,
    /// The coordinators' `--election-ttl` in seconds.
    #[arg(long, default_value_t = 2)]
    election_ttl: u64,
    /// The coordinators' `--phase-timeout`.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    phase_timeout: Duration,
    /// The coordinators' `--pending-timeout`.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pending_timeout: Duration,
    /// After the soak, how long every session may take to end.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    heal_timeout: Duration,
    /// The run fails unless at least this many sessions end in CONSENSUS.
    #[arg(long, default_value_t = 10)]
    min_consensus: usize,
    /// The share of sessions given the conflict task (they end NO_CONSENSUS).
    #[arg(long, default_value_t = 0.1)]
    conflict_ratio: f64,
    /// Each worker's `--capacity` (default: --sessions, so one replica can carry a role).
    #[arg(long)]
    capacity: Option<u32>,
    /// Where mesh-coordinator and mesh-worker are (default: beside this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where the processes' logs go (default: target/chaos/seed-<seed> beside the binaries).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Keep the logs after a run that passed (a failed run always keeps them).
    #[arg(long)]
    keep_logs: bool,
    /// The kinds of fault to inject, comma-separated: kill-leader, kill-worker,
    /// pause-worker, restart-etcd (the default four), and pause-leader (SIGSTOP+SIGCONT
    /// of the leading coordinator, not in the default set).
    #[arg(long, value_delimiter = ',', value_parser = FaultKind::parse)]
    faults: Vec<FaultKind>,
    /// Also print a line when a fault is healed.
    #[arg(long, short)]
    verbose: bool,
}

static ABORT: AtomicBool = AtomicBool::new(false);

fn aborted() -> bool {
    ABORT.load(Ordering::SeqCst)
}

/// How long a planned fault may wait for its precondition (a leader, an eligible
/// worker, etcd up) before it is skipped.
const MAX_DEFER: Duration = Duration::from_secs(15);
/// How long the mesh may take to become ready at the start, and after healing.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const HEALED_TIMEOUT: Duration = Duration::from_secs(20);
/// How long reading the final state may take, from etcd and from the API each.
const READ_BUDGET: Duration = Duration::from_secs(60);

fn main() {
    let args = Args::parse();
    let code = match run(args) {
        Ok(report) if report.passed() => 0,
        Ok(_) => 1,
        Err(e) if aborted() => {
            eprintln!("mesh-chaos: interrupted: {e:#}");
            130
        }
        Err(e) => {
            eprintln!("mesh-chaos: the run could not be carried out: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

/// A fault's undoing, due at a time.
#[derive(Debug)]
enum Heal {
    StartWorker(usize),
    ResumeWorker(usize),
    StartCoordinator,
    ResumeCoordinator(String),
    StartEtcd,
}

fn reproduce(args: &Args, seed: u64) -> String {
    let mut cmd = format!(
        "mesh-chaos --seed {seed} --duration {}s --sessions {} --replicas {} --think-ms {}",
        args.duration.as_secs_f64(),
        args.sessions,
        args.replicas,
        args.think_ms
    );
    if args.fault_every != Duration::from_secs(4) {
        cmd.push_str(&format!(
            " --fault-every {}ms",
            args.fault_every.as_millis()
        ));
    }
    if !args.faults.is_empty() {
        let names: Vec<String> = args
            .faults
            .iter()
            .map(|k| k.key().replace('_', "-"))
            .collect();
        cmd.push_str(&format!(" --faults {}", names.join(",")));
    }
    cmd
}

fn run(args: Args) -> anyhow::Result<Report> {
    let total_start = Instant::now();
    let seed = args.seed.unwrap_or_else(rand::random);
    println!(
        "mesh-chaos: seed {seed}, soak {:.0} s, {} sessions in flight, {} coordinators, {} workers per role, think {} ms",
        args.duration.as_secs_f64(),
        args.sessions,
        args.coordinators,
        args.replicas,
        args.think_ms
    );
    anyhow::ensure!(args.replicas >= 1, "--replicas must be at least 1");
    anyhow::ensure!(args.coordinators >= 1, "--coordinators must be at least 1");
    let (coordinator_bin, worker_bin) = procs::find_binaries(args.bin_dir.as_deref())?;
    let log_dir = match &args.log_dir {
        Some(dir) => dir.clone(),
        None => coordinator_bin
            .parent()
            .and_then(|d| d.parent())
            .map_or_else(std::env::temp_dir, PathBuf::from)
            .join("chaos")
            .join(format!("seed-{seed}")),
    };
    if log_dir.exists() {
        std::fs::remove_dir_all(&log_dir)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.spawn(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
        eprintln!("mesh-chaos: signal received; stopping and cleaning up");
        ABORT.store(true, Ordering::SeqCst);
    });

    // Setup.
    let opts = MeshOpts {
        coordinator_bin,
        worker_bin,
        log_dir: log_dir.clone(),
        coordinators: args.coordinators,
        replicas: args.replicas,
        think_ms: args.think_ms,
        capacity: args.capacity.unwrap_or(args.sessions.max(1) as u32),
        lease_ttl: args.lease_ttl,
        election_ttl: args.election_ttl,
        phase_timeout: args.phase_timeout,
        pending_timeout: args.pending_timeout,
    };
    let mut mesh = Mesh::start(opts)?;
    let mut clients = Clients::new(mesh.urls.clone());
    if let Err(why) = wait_ready(&rt, &mut mesh, &mut clients, READY_TIMEOUT) {
        anyhow::bail!("the mesh did not become ready: {why}");
    }
    let setup = total_start.elapsed();
    println!(
        "mesh ready in {:.1} s: etcd {}, coordinators {}, {} workers; logs in {}",
        setup.as_secs_f64(),
        mesh.etcd_endpoint(),
        mesh.coordinators
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>()
            .join(","),
        mesh.workers.len(),
        log_dir.display()
    );

    // Soak.
    let shape = Shape {
        duration: args.duration,
        mean_gap: args.fault_every,
        workers: mesh.workers.len(),
        lease_ttl: Duration::from_secs(args.lease_ttl),
        election_ttl: Duration::from_secs(args.election_ttl),
        kinds: args.faults.clone(),
    };
    let kinds: Vec<FaultKind> = if args.faults.is_empty() {
        FaultKind::DEFAULT.to_vec()
    } else {
        FaultKind::ALL
            .into_iter()
            .filter(|k| args.faults.contains(k))
            .collect()
    };
    let plan = schedule::plan(seed, &shape);
    println!("{} faults planned", plan.len());
    let soak_start = mark_start();
    let (driver, driver_task) = Driver::spawn(
        rt.handle(),
        mesh.urls.clone(),
        args.sessions,
        seed,
        args.conflict_ratio,
        soak_start,
    );
    let mut faults: Vec<FaultRecord> = Vec::new();
    let mut heals: Vec<(Instant, Heal)> = Vec::new();
    let mut next = 0;
    let mut deferred: Option<(Instant, String)> = None;
    while soak_start.elapsed() < args.duration && !aborted() {
        for crash in mesh.reap_crashes() {
            progress(&format!("CRASH: {}", crash.lines().next().unwrap_or("")));
        }
        apply_heals(&mut mesh, &mut heals, Some(Instant::now()), args.verbose)?;
        if let Some(planned) = plan.get(next)
            && soak_start.elapsed() >= planned.at
        {
            match inject(&mut mesh, planned, next + 1, plan.len(), soak_start, &args) {
                Ok((record, heal)) => {
                    heals.push((Instant::now() + planned.hold, heal));
                    faults.push(record);
                    next += 1;
                    deferred = None;
                }
                Err(why) => {
                    let since = deferred
                        .get_or_insert_with(|| (Instant::now(), why.clone()))
                        .0;
                    if since.elapsed() > MAX_DEFER {
                        progress(&format!(
                            "fault {}/{}: {} skipped: {why}",
                            next + 1,
                            plan.len(),
                            planned.kind.label()
                        ));
                        faults.push(skipped(planned, next + 1, soak_start, why));
                        next += 1;
                        deferred = None;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    for (i, planned) in plan.iter().enumerate().skip(next) {
        let why = match &deferred {
            Some((_, why)) if i == next => format!("the soak ended while it waited: {why}"),
            _ => "the soak ended first".to_string(),
        };
        faults.push(skipped(planned, i + 1, soak_start, why));
    }
    anyhow::ensure!(!aborted(), "during the soak");
    let soak = soak_start.elapsed();

    // Heal: undo every fault now, start nothing new, wait for every session to end.
    let heal_start = Instant::now();
    driver.set_mode(Mode::Drain);
    apply_heals(&mut mesh, &mut heals, None, args.verbose)?;
    progress("soak over: faults healed, no new sessions; waiting for every session to end");
    let heal_deadline = heal_start + args.heal_timeout;
    loop {
        for crash in mesh.reap_crashes() {
            progress(&format!("CRASH: {}", crash.lines().next().unwrap_or("")));
        }
        let (in_flight, fresh) = {
            let t = driver.tracker.lock().expect("tracker");
            (t.in_flight(), t.listings_since_mode)
        };
        if in_flight == 0 && fresh >= 2 {
            break;
        }
        if Instant::now() >= heal_deadline || aborted() {
            progress(&format!(
                "{in_flight} sessions still in flight after {:.0} s of healing",
                args.heal_timeout.as_secs_f64()
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::ensure!(!aborted(), "while healing");
    driver.set_mode(Mode::Stop);
    let _ = rt.block_on(driver_task);
    let healed = match wait_ready(&rt, &mut mesh, &mut clients, HEALED_TIMEOUT) {
        Ok(()) => Vec::new(),
        Err(why) => vec![format!("after healing: {why}")],
    };
    let heal = heal_start.elapsed();
    progress(&format!(
        "healed in {:.1} s; reading the final state",
        heal.as_secs_f64()
    ));

    // Check.
    let check_start = Instant::now();
    let records = read_final(&rt, &mesh, &mut clients)?;
    let _ = std::fs::copy(mesh.etcd.log_path(), log_dir.join("etcd.log"));
    // The workers must be gone before their logs are read: every line is then complete.
    mesh.stop_processes();
    let mut all_acks = Vec::new();
    let mut malformed = Vec::new();
    for log in mesh.worker_logs() {
        let (found, bad) = acks::read_file(&log)?;
        all_acks.extend(found);
        malformed.extend(bad);
    }
    let tracker = driver.tracker.lock().expect("tracker");
    let waited = format!("{:.0} s", args.heal_timeout.as_secs_f64());
    let mut checks_done = vec![
        checks::all_terminal(&records, &waited),
        checks::gapless(&records),
        checks::consensus_sound(&records),
        checks::no_turn_twice(&records),
        checks::acks_durable(&all_acks, &malformed, &records),
        checks::created_are_durable(&tracker.created, &records),
        checks::approvals_sign_their_proposal(&records),
        checks::api_agrees(&records),
        checks::conflicts_never_agree(&records),
        Check {
            name: "no process crashed",
            scope: format!(
                "{} coordinator and {} worker processes",
                mesh.coordinators_started(),
                mesh.workers.iter().map(|w| w.starts).sum::<u32>()
            ),
            failures: mesh.crashes.clone(),
        },
        Check {
            name: "the mesh heals",
            scope: format!(
                "a leader, {} coordinators, {} workers connected and leased",
                args.coordinators,
                mesh.workers.len()
            ),
            failures: healed,
        },
    ];
    let consensus = records
        .iter()
        .filter(|r| r.session.status == v1::SessionStatus::Consensus as i32)
        .count();
    checks_done.push(Check {
        name: "enough sessions reach CONSENSUS",
        scope: format!("{consensus} of at least {}", args.min_consensus),
        failures: if consensus >= args.min_consensus {
            Vec::new()
        } else {
            vec![format!(
                "only {consensus} sessions reached CONSENSUS (at least {} needed): the soak exercised too little to count; see the FAILED reasons",
                args.min_consensus
            )]
        },
    });
    let kinds_missing: Vec<String> = kinds
        .iter()
        .filter(|k| !faults.iter().any(|f| f.kind == **k && f.skipped.is_none()))
        .map(|k| {
            let why: Vec<String> = faults
                .iter()
                .filter(|f| f.kind == *k)
                .filter_map(|f| f.skipped.clone())
                .collect();
            format!(
                "no {} was injected (skipped: {})",
                k.label(),
                why.join("; ")
            )
        })
        .collect();
    checks_done.push(Check {
        name: "every kind of fault injected",
        scope: format!(
            "{} of {} planned faults",
            faults.iter().filter(|f| f.skipped.is_none()).count(),
            faults.len()
        ),
        failures: kinds_missing,
    });

    let mut outcomes: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        let kind = if is_conflict_task(&r.session.task) {
            "conflict"
        } else {
            "demo"
        };
        let status = agentmesh_proto::status_name(r.session.status).to_string();
        *outcomes
            .entry(kind.into())
            .or_default()
            .entry(status.clone())
            .or_default() += 1;
        if matches!(status.as_str(), "FAILED" | "CANCELLED") {
            *reasons
                .entry(format!("{status}: {}", r.session.reason))
                .or_default() += 1;
        }
    }
    let passed = checks_done.iter().all(Check::passed);
    let keep = !passed || args.keep_logs;
    let report = Report {
        seed,
        command: reproduce(&args, seed),
        config: serde_json::json!({
            "duration_s": args.duration.as_secs_f64(),
            "sessions": args.sessions,
            "replicas": args.replicas,
            "coordinators": args.coordinators,
            "think_ms": args.think_ms,
            "fault_every_s": args.fault_every.as_secs_f64(),
            "lease_ttl_s": args.lease_ttl,
            "election_ttl_s": args.election_ttl,
            "phase_timeout_s": args.phase_timeout.as_secs_f64(),
            "pending_timeout_s": args.pending_timeout.as_secs_f64(),
            "heal_timeout_s": args.heal_timeout.as_secs_f64(),
            "min_consensus": args.min_consensus,
            "conflict_ratio": args.conflict_ratio,
        }),
        kinds,
        faults,
        outcomes,
        reasons,
        created: tracker.created.len(),
        adopted: tracker.adopted.len(),
        create_failures: tracker.create_failures,
        checks: checks_done,
        stall: tracker.stall.clone(),
        wall: Wall {
            setup,
            soak,
            heal,
            check: check_start.elapsed(),
            total: total_start.elapsed(),
        },
        log_dir: if keep {
            log_dir.display().to_string()
        } else {
            format!(
                "{} (removed: the run passed; --keep-logs keeps them)",
                log_dir.display()
            )
        },
    };
    drop(tracker);
    for c in report.checks.iter().filter(|c| !c.passed()) {
        println!("FAILED: {} ({} failures)", c.name, c.failures.len());
        for f in c.failures.iter().take(20) {
            println!("  {f}");
        }
        if c.failures.len() > 20 {
            println!(
                "  ... and {} more (see the JSON report)",
                c.failures.len() - 20
            );
        }
    }
    print!("{}", report.table());
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())?)?;
        println!("report written to {}", path.display());
    }
    drop(mesh);
    if !keep {
        let _ = std::fs::remove_dir_all(&log_dir);
    }
    Ok(report)
}

/// Waits (bounded) until one coordinator leads, all of them run, and it lists every
/// worker connected and leased.
fn wait_ready(
    rt: &tokio::runtime::Runtime,
    mesh: &mut Mesh,
    clients: &mut Clients,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        mesh.reap_crashes();
        let why = if mesh.coordinators.len() < mesh.opts.coordinators {
            format!(
                "{} of {} coordinators run",
                mesh.coordinators.len(),
                mesh.opts.coordinators
            )
        } else if mesh.leader().is_none() {
            "no single coordinator says it leads (/readyz)".into()
        } else {
            match rt.block_on(clients.list_workers()) {
                Ok(workers) => {
                    let ready: BTreeSet<&str> = workers
                        .iter()
                        .filter(|w| w.connected && w.leased)
                        .map(|w| w.worker_id.as_str())
                        .collect();
                    let missing: Vec<&str> = mesh
                        .workers
                        .iter()
                        .map(|w| w.id.as_str())
                        .filter(|id| !ready.contains(id))
                        .collect();
                    if missing.is_empty() {
                        return Ok(());
                    }
                    format!("workers not connected and leased: {}", missing.join(", "))
                }
                Err(e) => format!("ListWorkers: {e}"),
            }
        };
        if Instant::now() >= deadline || aborted() {
            return Err(format!("after {timeout:?}: {why}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn skipped(planned: &Planned, n: usize, start: Instant, why: String) -> FaultRecord {
    FaultRecord {
        n,
        kind: planned.kind,
        planned_at: planned.at,
        at: start.elapsed(),
        hold: planned.hold,
        target: String::new(),
        skipped: Some(why),
        beyond_lease: false,
    }
}

/// Injects one planned fault, or says why it cannot be injected right now.
fn inject(
    mesh: &mut Mesh,
    planned: &Planned,
    n: usize,
    of: usize,
    start: Instant,
    args: &Args,
) -> Result<(FaultRecord, Heal), String> {
    let hold = planned.hold.as_secs_f64();
    let lease = Duration::from_secs(args.lease_ttl);
    let (target, heal, then) = match planned.kind {
        FaultKind::KillLeader => {
            if !mesh.etcd_up {
                return Err("etcd is down, so nobody leads".into());
            }
            let leader = mesh.leader().ok_or("no single coordinator leads")?;
            let (id, pid) = mesh.kill_coordinator(leader).map_err(|e| e.to_string())?;
            (
                format!("{id} (pid {pid})"),
                Heal::StartCoordinator,
                format!("a replacement starts in {hold:.1} s"),
            )
        }
        FaultKind::KillWorker | FaultKind::PauseWorker => {
            let i = mesh
                .eligible_worker(planned.worker)
                .ok_or("no worker is up whose role keeps a replica up")?;
            let id = mesh.workers[i].id.clone();
            let planned_id = &mesh.workers[planned.worker].id;
            let instead = if i == planned.worker {
                String::new()
            } else {
                format!(", instead of {planned_id}")
            };
            if planned.kind == FaultKind::KillWorker {
                let pid = mesh.kill_worker(i).map_err(|e| e.to_string())?;
                (
                    format!("{id} (pid {pid}{instead})"),
                    Heal::StartWorker(i),
                    format!("restarts in {hold:.1} s"),
                )
            } else {
                let pid = mesh.pause_worker(i).map_err(|e| e.to_string())?;
                let beyond = if planned.hold > lease {
                    ", longer than its lease"
                } else {
                    ""
                };
                (
                    format!("{id} (pid {pid}{instead})"),
                    Heal::ResumeWorker(i),
                    format!("SIGCONT in {hold:.1} s{beyond}"),
                )
            }
        }
        FaultKind::PauseLeader => {
            if !mesh.etcd_up {
                return Err("etcd is down, so nobody leads".into());
            }
            let leader = mesh.leader().ok_or("no single coordinator leads")?;
            let (id, pid) = mesh.pause_coordinator(leader).map_err(|e| e.to_string())?;
            let beyond = if planned.hold > Duration::from_secs(args.election_ttl) {
                ", longer than its election lease"
            } else {
                ""
            };
            (
                format!("{id} (pid {pid})"),
                Heal::ResumeCoordinator(id),
                format!("SIGCONT in {hold:.1} s{beyond}"),
            )
        }
        FaultKind::RestartEtcd => {
            if !mesh.etcd_up {
                return Err("etcd is already down".into());
            }
            let pid = mesh.etcd.pid().unwrap_or(0);
            mesh.stop_etcd().map_err(|e| e.to_string())?;
            (
                format!("etcd (pid {pid})"),
                Heal::StartEtcd,
                format!("starts again in {hold:.1} s"),
            )
        }
    };
    let at = start.elapsed();
    let late = at.saturating_sub(planned.at);
    let late = if late > Duration::from_millis(500) {
        format!(" ({:.1} s late)", late.as_secs_f64())
    } else {
        String::new()
    };
    progress(&format!(
        "fault {n}/{of}: {} {target}; {then}{late}",
        planned.kind.label()
    ));
    Ok((
        FaultRecord {
            n,
            kind: planned.kind,
            planned_at: planned.at,
            at,
            hold: planned.hold,
            target,
            skipped: None,
            beyond_lease: match planned.kind {
                FaultKind::PauseWorker => planned.hold > lease,
                FaultKind::PauseLeader => planned.hold > Duration::from_secs(args.election_ttl),
                _ => false,
            },
        },
        heal,
    ))
}

/// Applies the heals due by `now` (every one when `now` is None), in time order.
fn apply_heals(
    mesh: &mut Mesh,
    heals: &mut Vec<(Instant, Heal)>,
    now: Option<Instant>,
    verbose: bool,
) -> anyhow::Result<()> {
    heals.sort_by_key(|(at, _)| *at);
    while let Some((at, _)) = heals.first() {
        if now.is_some_and(|now| *at > now) {
            break;
        }
        let (_, heal) = heals.remove(0);
        let done = match heal {
            Heal::StartWorker(i) => {
                mesh.start_worker(i)?;
                format!("worker {} started again", mesh.workers[i].id)
            }
            Heal::ResumeWorker(i) => {
                mesh.resume_worker(i)?;
                format!("worker {} continued", mesh.workers[i].id)
            }
            Heal::StartCoordinator => {
                let id = mesh.add_coordinator()?;
                format!("replacement coordinator {id} started")
            }
            Heal::ResumeCoordinator(id) => {
                mesh.resume_coordinator(&id)?;
                format!("coordinator {id} continued")
            }
            Heal::StartEtcd => {
                mesh.start_etcd()?;
                "etcd started again".to_string()
            }
        };
        if verbose {
            progress(&format!("  healed: {done}"));
        }
    }
    Ok(())
}

/// Every session as etcd holds it (header and transcript), with the API's answer.
fn read_final(
    rt: &tokio::runtime::Runtime,
    mesh: &Mesh,
    clients: &mut Clients,
) -> anyhow::Result<Vec<SessionRecord>> {
    let endpoint = mesh.etcd_endpoint();
    let stored = rt.block_on(async move {
        let read = async {
            let client = agentmesh_store::connect_etcd(&[endpoint]).await?;
            let store = agentmesh_store::EtcdStore::new(client, agentmesh_store::DEFAULT_PREFIX);
            let mut out = Vec::new();
            for summary in store.list().await? {
                let entries = store.entries(&summary.id, 1).await?;
                out.push((summary, entries));
            }
            Ok::<_, agentmesh_store::StoreError>(out)
        };
        match tokio::time::timeout(READ_BUDGET, read).await {
            Ok(read) => read.map_err(anyhow::Error::from),
            Err(_) => Err(anyhow::anyhow!(
                "reading every session from etcd took longer than {READ_BUDGET:?}"
            )),
        }
    })?;
    let api_deadline = Instant::now() + READ_BUDGET;
    let mut records = Vec::with_capacity(stored.len());
    for (summary, entries) in stored {
        let session = v1::Session::from(&summary);
        let api = if Instant::now() < api_deadline {
            rt.block_on(clients.transcript(&session.id))
        } else {
            Err(format!(
                "not asked: the API's transcripts took longer than {READ_BUDGET:?} in all"
            ))
        };
        records.push(SessionRecord {
            entries: entries.iter().map(v1::Entry::from).collect(),
            session,
            api,
        });
    }
    records.sort_by_key(|r| r.session.created_ms);
    Ok(records)
}
