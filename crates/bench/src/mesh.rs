//! The mesh side of the bench: a real `mesh-coordinator` process, worker processes
//! (`mesh-bench __worker` with the bench brain, or `mesh-worker --brain scripted`), and
//! the measurements taken over the client API.
//!
//! # How a broadcast round is measured
//!
//! Where the raw limit's server times a round from its first send to its last reply, the
//! mesh's round is timed where its turns land: every bench worker notes when each turn
//! reaches it, on `CLOCK_MONOTONIC` (see `worker`), and round k lasts from the first
//! arrival of a round-k turn to the first arrival of a round-(k+1) turn, on any worker.
//! That span holds everything the mesh does for a round — dispatch, the workers'
//! replies, collecting them, the store write, the next dispatch — and nothing else: a
//! round-(k+1) turn is sent only after every result of round k is in, so no delay on the
//! way out can make a round look shorter than it was, and none on the way back to an
//! observer can make it look longer. R rounds give R − 1 spans.
//!
//! The bench also follows the session with `WatchSession`, as a dashboard would (with
//! the coordinator's default batch window), to see it end and to check that every
//! round's status was published. It is not the instrument: an observer's receive times
//! carry the watch stream's delivery jitter (an event delivered late together with the
//! next one shows as one long "round" followed by one of a few microseconds), and a
//! watcher asking for every event at once (`batch_window_ms: 0`) costs the two cores
//! ~0.1 ms of CPU per round, which the raw limit does not pay. Wall time (first
//! CONTRIBUTE to COMPLETED received, divided by R; within one batch window) and the
//! coordinator's own event timestamps (millisecond resolution) cross-check the mean.
//! The first rounds (warm-up, and any round before every extra watcher has received its
//! first event) are left out of the distribution but not out of the wall time.

use crate::procs::{Mem, Proc, stop_all};
use agentmesh_proto::v1::{
    self, SessionStatus, session_event::Event, session_service_client::SessionServiceClient,
};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// The binaries a run uses.
#[derive(Debug, Clone)]
pub struct Bins {
    pub coordinator: PathBuf,
    pub worker: PathBuf,
    pub bench: PathBuf,
}

/// How the bench starts every coordinator.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// A command the coordinator runs under (a profiler), split on spaces.
    pub wrap: Vec<String>,
    /// `mesh-coordinator --runtime-threads`, when set.
    pub runtime_threads: Option<u16>,
    /// More flags for the coordinator (a workload's own settings).
    pub extra: Vec<String>,
}

/// The task every negotiation gets (the demo's).
pub const NEGOTIATION_TASK: &str = "Design an order-tracking service for a multi-tenant SaaS: \
customers create orders and follow their status live on a web dashboard, staff search the \
order history, and the service runs on Kubernetes with PostgreSQL.";

/// Specialist roles of a broadcast over `n` workers: `b0 .. b<n-1>`.
pub fn bench_roles(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("b{i}")).collect()
}

/// Rounds left out at the start of a broadcast session's distribution.
pub fn warmup_rounds(rounds: u32) -> usize {
    (rounds / 10).clamp(1, 100) as usize
}

/// A client-API connection (TCP_NODELAY, 64 MiB messages) on its own channel.
pub async fn connect(url: &str) -> anyhow::Result<SessionServiceClient<Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connect to {url}"))?;
    Ok(SessionServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

/// A running `mesh-coordinator`.
pub struct Coordinator {
    proc: Proc,
    pub url: String,
    client: SessionServiceClient<Channel>,
}

impl Coordinator {
    /// Starts one on an ephemeral loopback port (HTTP off), embedded or on `etcd`, and
    /// waits until it leads. `wrap` runs it under another program (e.g. valgrind).
    pub async fn start(
        bins: &Bins,
        log_dir: &Path,
        name: &str,
        etcd: Option<&str>,
        launch: &Launch,
    ) -> anyhow::Result<Coordinator> {
        let mut args: Vec<String> = ["--listen", "127.0.0.1:0", "--http", "off", "--id", name]
            .map(String::from)
            .to_vec();
        if let Some(endpoint) = etcd {
            args.extend(["--etcd".to_string(), endpoint.to_string()]);
        }
        if let Some(threads) = launch.runtime_threads {
            args.extend(["--runtime-threads".to_string(), threads.to_string()]);
        }
        args.extend(launch.extra.iter().cloned());
        let (program, args) = match launch.wrap.split_first() {
            None => (bins.coordinator.clone(), args),
            Some((first, rest)) => {
                let mut all = rest.to_vec();
                all.push(bins.coordinator.display().to_string());
                all.extend(args);
                (PathBuf::from(first), all)
            }
        };
        let mut proc = Proc::spawn(name, &program, &args, log_dir, &[], true)?;
        let addr = tokio::task::block_in_place(|| {
            proc.wait_line("listening on ", Duration::from_secs(60))
        })?;
        println!("{name}: pid {} on {addr}", proc.pid());
        let url = format!("http://{addr}");
        let mut client = connect(&url).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match client.list_workers(v1::ListWorkersRequest {}).await {
                Ok(_) => break,
                Err(status) if Instant::now() < deadline => {
                    tracing::debug!(?status, "coordinator not leading yet");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => bail!("{name} does not lead after 30s: {status}"),
            }
        }
        Ok(Coordinator { proc, url, client })
    }

    pub fn client(&self) -> SessionServiceClient<Channel> {
        self.client.clone()
    }

    pub fn mem(&self) -> Option<Mem> {
        self.proc.mem()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Workers that hold a stream (and, on etcd, a lease).
    pub async fn assignable_workers(&self) -> anyhow::Result<usize> {
        let list = self
            .client()
            .list_workers(v1::ListWorkersRequest {})
            .await?
            .into_inner();
        Ok(list
            .workers
            .iter()
            .filter(|w| w.connected && w.leased && !w.draining)
            .count())
    }

    /// Waits until at least `n` workers are assignable.
    pub async fn wait_workers(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let have = self.assignable_workers().await?;
            if have >= n {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("only {have} of {n} workers joined within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until at most `n` workers are connected (the previous fleet has left).
    pub async fn wait_workers_gone(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let have = self.assignable_workers().await?;
            if have <= n {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{have} workers still connected after {timeout:?} (want {n})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM and a bounded wait (it cancels or hands over its sessions first).
    pub fn stop(mut self) {
        tokio::task::block_in_place(|| self.proc.stop(Duration::from_secs(20)));
    }
}

/// Starts one `mesh-bench __worker` process running one worker per role and replica.
#[allow(clippy::too_many_arguments)]
pub fn spawn_bench_worker(
    bins: &Bins,
    log_dir: &Path,
    name: &str,
    url: &str,
    etcd: Option<&str>,
    roles: &[String],
    per_role: usize,
    id_prefix: &str,
) -> anyhow::Result<Proc> {
    let args = bench_worker_args(log_dir, url, etcd, roles, per_role, id_prefix);
    Proc::spawn(name, &bins.bench, &args, log_dir, &[], false)
}

/// The arguments of a `mesh-bench __worker` process.
fn bench_worker_args(
    log_dir: &Path,
    url: &str,
    etcd: Option<&str>,
    roles: &[String],
    per_role: usize,
    id_prefix: &str,
) -> Vec<String> {
    let mut args = vec![
        "__worker".to_string(),
        "--coordinator".to_string(),
        url.to_string(),
        "--roles".to_string(),
        roles.join(","),
        "--per-role".to_string(),
        per_role.to_string(),
        "--id-prefix".to_string(),
        id_prefix.to_string(),
    ];
    if let Some(endpoint) = etcd {
        args.extend(["--etcd".to_string(), endpoint.to_string()]);
    }
    args.extend(["--arrivals-dir".to_string(), log_dir.display().to_string()]);
    args
}

/// A broadcast fleet for one setting of an on/off comparison (`signing`, `tracing`):
/// `n` bench worker processes, one per role, each with `extra` arguments and `env`,
/// named `<name>-<role>`; waits until the coordinator has all `n`.
pub async fn setting_fleet(
    bins: &Bins,
    log_dir: &Path,
    coord: &Coordinator,
    n: usize,
    name: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<Vec<Proc>> {
    let mut procs = Vec::with_capacity(n);
    for role in bench_roles(n) {
        let mut args = bench_worker_args(
            log_dir,
            &coord.url,
            None,
            std::slice::from_ref(&role),
            1,
            "",
        );
        args.extend(extra.iter().map(|a| a.to_string()));
        procs.push(Proc::spawn(
            &format!("{name}-{role}"),
            &bins.bench,
            &args,
            log_dir,
            env,
            false,
        )?);
    }
    coord.wait_workers(n, Duration::from_secs(60)).await?;
    Ok(procs)
}

/// Starts a `mesh-bench __watchers` process of `count` watchers (at the idle CPU priority
/// when `idle`) and waits until it is ready to follow the next session created.
pub async fn spawn_watchers(
    bins: &Bins,
    log_dir: &Path,
    coord: &Coordinator,
    count: usize,
    idle: bool,
) -> anyhow::Result<Proc> {
    let mut args = vec![
        "__watchers".to_string(),
        "--coordinator".to_string(),
        coord.url.clone(),
        "--count".to_string(),
        count.to_string(),
    ];
    if idle {
        args.push("--idle".to_string());
    }
    let name = format!("watchers-{count}{}", if idle { "-idle" } else { "" });
    let mut proc = Proc::spawn(&name, &bins.bench, &args, log_dir, &[], true)?;
    tokio::task::spawn_blocking(move || {
        proc.wait_line("ready", Duration::from_secs(60))?;
        anyhow::Ok(proc)
    })
    .await?
}

/// Starts `n` bench worker processes, one per role `b0 .. b<n-1>`, and waits for them.
pub async fn broadcast_fleet(
    bins: &Bins,
    log_dir: &Path,
    coord: &Coordinator,
    etcd: Option<&str>,
    n: usize,
    already: usize,
) -> anyhow::Result<Vec<Proc>> {
    let mut procs = Vec::with_capacity(n);
    for role in bench_roles(n) {
        procs.push(spawn_bench_worker(
            bins,
            log_dir,
            &format!("worker-{role}"),
            &coord.url,
            etcd,
            std::slice::from_ref(&role),
            1,
            "",
        )?);
    }
    coord
        .wait_workers(already + n, Duration::from_secs(60))
        .await?;
    Ok(procs)
}

/// Stops a fleet and waits until the coordinator has seen it go.
pub async fn retire_fleet(
    coord: &Coordinator,
    mut procs: Vec<Proc>,
    remaining: usize,
) -> anyhow::Result<()> {
    tokio::task::block_in_place(|| stop_all(&mut procs, Duration::from_secs(5)));
    coord
        .wait_workers_gone(remaining, Duration::from_secs(30))
        .await
}

/// One measured broadcast session.
#[derive(Debug, Clone)]
pub struct BroadcastRun {
    pub n: usize,
    pub rounds: u32,
    /// Round latencies after warm-up, in round order, from the workers' turn arrivals.
    pub latencies: Vec<Duration>,
    /// First CONTRIBUTE to COMPLETED (client receive times), all rounds.
    pub wall: Duration,
    /// The same span from the coordinator's event timestamps (ms resolution).
    pub server_span_ms: i64,
    /// Events the extra watchers received, in total.
    pub watcher_events: u64,
    /// CPU time used during the session (/proc/<pid>/stat, 10 ms ticks).
    pub cpu: CpuUse,
}

/// CPU time of the processes of a run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CpuUse {
    pub coordinator: Duration,
    /// This process: its own watch of the session.
    pub bench: Duration,
    /// The worker processes of the run.
    pub workers: Duration,
    /// The `__watchers` process, if any.
    pub watchers: Duration,
}

fn cpu_now(coordinator: u32, workers: &[u32], watchers: Option<u32>) -> CpuUse {
    use crate::procs::cpu_time;
    CpuUse {
        coordinator: cpu_time(coordinator).unwrap_or_default(),
        bench: cpu_time(std::process::id()).unwrap_or_default(),
        workers: workers.iter().filter_map(|p| cpu_time(*p)).sum(),
        watchers: watchers.and_then(cpu_time).unwrap_or_default(),
    }
}

impl CpuUse {
    fn since(self, before: CpuUse) -> CpuUse {
        CpuUse {
            coordinator: self.coordinator.saturating_sub(before.coordinator),
            bench: self.bench.saturating_sub(before.bench),
            workers: self.workers.saturating_sub(before.workers),
            watchers: self.watchers.saturating_sub(before.watchers),
        }
    }
}

/// Creates a broadcast session of `rounds` rounds over the roles of `fleet` (from
/// [`broadcast_fleet`]: roles `b0 .. b<n-1>`, one process each, writing their turn
/// arrivals to `arrivals_dir`) and measures it. `watchers`: a `mesh-bench __watchers`
/// process that has said `ready`; it watches this session beside the bench's own watch
/// (see [`crate::watchers`]).
pub async fn broadcast(
    coord: &Coordinator,
    fleet: &[Proc],
    rounds: u32,
    watchers: Option<Proc>,
    time_limit: Duration,
    arrivals_dir: &Path,
) -> anyhow::Result<BroadcastRun> {
    let n = fleet.len();
    let worker_pids: &[u32] = &fleet.iter().map(Proc::pid).collect::<Vec<_>>();
    let mut client = coord.client();
    let watchers_pid = watchers.as_ref().map(Proc::pid);
    let cpu_before = cpu_now(coord.pid(), worker_pids, watchers_pid);
    let session = client
        .create_session(v1::CreateSessionRequest {
            task: "mesh-bench broadcast round".into(),
            roles: bench_roles(n),
            max_rounds: 0,
            broadcast_rounds: rounds,
        })
        .await?
        .into_inner();
    let id = session.id;

    // The watcher process's lines are read on a blocking thread: when every watcher has
    // seen an event (rounds before that are left out), and its total at the end.
    let watching = watchers.map(|mut proc| {
        let id = id.clone();
        tokio::task::spawn_blocking(move || {
            let watched = proc.wait_line("watching ", time_limit)?;
            let all_watching = crate::worker::monotonic_ns();
            if watched != id {
                bail!("the watchers followed session {watched}, not {id}");
            }
            let counts: Vec<u64> = proc
                .wait_line("events ", time_limit + Duration::from_secs(60))?
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .context("the watchers' event counts")?;
            proc.reap(Instant::now() + Duration::from_secs(10));
            let [total, fewest, most] = counts[..] else {
                bail!("the watchers printed {counts:?}, not a total, fewest and most");
            };
            anyhow::Ok((all_watching, total, fewest, most))
        })
    });

    let mut stream = client
        .watch_session(v1::WatchSessionRequest {
            session_id: id.clone(),
            from_seq: 1,
            // The coordinator's default window, as a dashboard watches: this watch only
            // sees the session through, the workers' arrivals time it.
            batch_window_ms: None,
        })
        .await?
        .into_inner();
    let deadline = Instant::now() + time_limit;
    // (round, received, coordinator timestamp) of every CONTRIBUTE event.
    let mut starts: Vec<(u32, Instant, i64)> = Vec::with_capacity(rounds as usize);
    // Durable events (entries and status changes; progress hints are ephemeral).
    let mut events_seen = 0u64;
    let end = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = match tokio::time::timeout(left, stream.message()).await {
            Ok(event) => event?,
            Err(_) => bail!(
                "broadcast N={n} did not end within {time_limit:?} ({} rounds started)",
                starts.len()
            ),
        };
        let Some(event) = event else {
            bail!("the watch of session {id} ended before the session did");
        };
        if !event.ephemeral {
            events_seen += 1;
        }
        if let Some(Event::Status(change)) = event.event {
            let at = Instant::now();
            match SessionStatus::try_from(change.status) {
                Ok(SessionStatus::Contribute) => {
                    starts.push((change.round, at, event.timestamp_ms))
                }
                Ok(SessionStatus::Pending) => {}
                Ok(status) => break (status, change.reason, at, event.timestamp_ms),
                Err(_) => bail!("unknown status {}", change.status),
            }
        }
    };
    let (status, reason, end_at, end_ms) = end;
    let cpu = cpu_now(coord.pid(), worker_pids, watchers_pid).since(cpu_before);
    if status != SessionStatus::Completed {
        bail!(
            "broadcast session {id} ended {} ({reason})",
            status.as_str_name()
        );
    }
    if starts.len() != rounds as usize
        || starts.iter().enumerate().any(|(i, s)| s.0 != i as u32 + 1)
    {
        bail!(
            "broadcast session {id}: saw {} CONTRIBUTE events for {rounds} rounds",
            starts.len()
        );
    }
    let (all_watching, watcher_events) = match watching {
        Some(task) => {
            let (at, total, fewest, most) = task.await??;
            // Every watcher must have received exactly what the bench's own watch did.
            if fewest != events_seen || most != events_seen {
                bail!(
                    "watchers received {fewest}..{most} events each; the session had {events_seen}"
                );
            }
            (Some(at), total)
        }
        None => (None, 0),
    };

    let warmup = warmup_rounds(rounds);
    let arrivals = collect_arrivals(arrivals_dir, fleet, &id, time_limit).await?;
    let latencies = round_latencies(&arrivals, rounds, n)?
        .into_iter()
        .filter(|span| span.round as usize > warmup)
        .filter(|span| all_watching.is_none_or(|w| span.start_ns >= w))
        .map(|span| span.latency)
        .collect();
    Ok(BroadcastRun {
        n,
        rounds,
        latencies,
        wall: end_at.saturating_duration_since(starts[0].1),
        server_span_ms: end_ms - starts[0].2,
        watcher_events,
        cpu,
    })
}

/// One round as the workers saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundSpan {
    pub round: u32,
    /// `CLOCK_MONOTONIC` ns of the round's first turn arrival.
    pub start_ns: u64,
    pub latency: Duration,
}

/// Rounds from turn arrivals `(round, monotonic ns)` gathered from all `n` workers of a
/// broadcast: round k spans from the first arrival of a round-k turn to the first of a
/// round-(k+1) turn, so `rounds` rounds give `rounds - 1` spans. Every round must have
/// reached every worker (a turn resent after a failure arrives twice; the first counts).
pub fn round_latencies(
    arrivals: &[(u32, u64)],
    rounds: u32,
    n: usize,
) -> anyhow::Result<Vec<RoundSpan>> {
    let mut first = vec![u64::MAX; rounds as usize + 1];
    let mut count = vec![0usize; rounds as usize + 1];
    for &(round, at) in arrivals {
        let Some(slot) = first.get_mut(round as usize).filter(|_| round >= 1) else {
            bail!("a turn of round {round} arrived in a session of {rounds} rounds");
        };
        *slot = (*slot).min(at);
        count[round as usize] += 1;
    }
    if let Some(k) = (1..=rounds as usize).find(|&k| count[k] < n) {
        bail!(
            "round {k} reached {} of {n} workers (arrivals lost?)",
            count[k]
        );
    }
    (1..rounds as usize)
        .map(|k| {
            let (start, next) = (first[k], first[k + 1]);
            if next < start {
                bail!("round {} began before round {k}", k + 1);
            }
            Ok(RoundSpan {
                round: k as u32,
                start_ns: start,
                latency: Duration::from_nanos(next - start),
            })
        })
        .collect()
}

/// Asks every worker process of `fleet` for its turn arrivals (all at once, then reads
/// each answer) and returns those of `session_id`: `(round, monotonic ns)`.
async fn collect_arrivals(
    dir: &Path,
    fleet: &[Proc],
    session_id: &str,
    time_limit: Duration,
) -> anyhow::Result<Vec<(u32, u64)>> {
    for proc in fleet {
        let _ = std::fs::remove_file(crate::worker::arrivals_path(dir, proc.pid()));
        proc.send(libc::SIGUSR1)
            .with_context(|| format!("cannot signal worker process {}", proc.pid()))?;
    }
    let deadline = Instant::now() + time_limit.min(Duration::from_secs(10));
    let mut arrivals = Vec::new();
    for proc in fleet {
        let (pid, path) = (proc.pid(), crate::worker::arrivals_path(dir, proc.pid()));
        let text = loop {
            match std::fs::read_to_string(&path) {
                Ok(text) => break text,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err(e) => bail!(
                    "no arrivals from worker process {pid} ({}): {e}",
                    path.display()
                ),
            }
        };
        for line in text.lines() {
            let mut fields = line.split(' ');
            let (Some(session), Some(round), Some(at)) =
                (fields.next(), fields.next(), fields.next())
            else {
                bail!("{}: malformed line {line:?}", path.display());
            };
            if session == session_id {
                arrivals.push((round.parse()?, at.parse()?));
            }
        }
    }
    Ok(arrivals)
}

/// Full negotiations: `concurrency` sessions in flight (closed loop) until `total` ended.
#[derive(Debug, Clone)]
pub struct NegotiationRun {
    /// Create-call start to terminal status received, per session.
    pub durations: Vec<Duration>,
    pub wall: Duration,
    /// Sessions per final status.
    pub outcomes: BTreeMap<String, usize>,
    pub entries: u64,
}

pub async fn negotiations(
    coord: &Coordinator,
    concurrency: usize,
    total: usize,
    time_limit: Duration,
) -> anyhow::Result<NegotiationRun> {
    let left = Arc::new(AtomicUsize::new(total));
    let started = Instant::now();
    let deadline = started + time_limit;
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(total) {
        let (mut client, left) = (coord.client(), left.clone());
        loops.spawn(async move {
            let mut done = Vec::new();
            while left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                let t0 = Instant::now();
                let session = client
                    .create_session(v1::CreateSessionRequest {
                        task: NEGOTIATION_TASK.into(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                let mut stream = client
                    .watch_session(v1::WatchSessionRequest {
                        session_id: session.id.clone(),
                        from_seq: 1,
                        // The instrument: it must see the terminal status when it happens.
                        batch_window_ms: Some(0),
                    })
                    .await?
                    .into_inner();
                let mut outcome = None;
                let mut entries = 0u64;
                while outcome.is_none() {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let Ok(event) = tokio::time::timeout(left, stream.message()).await else {
                        bail!("session {} did not end in time", session.id);
                    };
                    let Some(event) = event? else {
                        bail!("the watch of session {} ended early", session.id);
                    };
                    match event.event {
                        Some(Event::Entry(_)) => entries += 1,
                        Some(Event::Status(change)) => {
                            let status = SessionStatus::try_from(change.status)
                                .unwrap_or(SessionStatus::Unspecified);
                            if matches!(
                                status,
                                SessionStatus::Consensus
                                    | SessionStatus::NoConsensus
                                    | SessionStatus::Cancelled
                                    | SessionStatus::Failed
                                    | SessionStatus::Completed
                            ) {
                                outcome = Some(status);
                            }
                        }
                        _ => {}
                    }
                }
                let status = outcome.expect("loop ends with an outcome");
                done.push((t0.elapsed(), status.as_str_name().to_string(), entries));
            }
            anyhow::Ok(done)
        });
    }
    let mut durations = Vec::with_capacity(total);
    let mut outcomes = BTreeMap::new();
    let mut entries = 0;
    while let Some(done) = loops.join_next().await {
        for (d, status, e) in done?? {
            durations.push(d);
            let short = status.trim_start_matches("SESSION_STATUS_").to_string();
            *outcomes.entry(short).or_insert(0) += 1;
            entries += e;
        }
    }
    Ok(NegotiationRun {
        durations,
        wall: started.elapsed(),
        outcomes,
        entries,
    })
}

/// Starts the seven `mesh-worker --brain scripted` processes of a negotiation.
pub async fn negotiation_fleet(
    bins: &Bins,
    log_dir: &Path,
    coord: &Coordinator,
    capacity: usize,
) -> anyhow::Result<Vec<Proc>> {
    let mut roles = vec![agentmesh_core::SUPERVISOR.to_string()];
    roles.extend(agentmesh_core::DEFAULT_SPECIALISTS.map(String::from));
    let mut procs = Vec::new();
    for role in &roles {
        let args = [
            "--coordinator",
            &coord.url,
            "--role",
            role,
            "--id",
            &format!("{role}-1"),
            "--brain",
            "scripted",
            "--capacity",
            &capacity.to_string(),
        ]
        .map(String::from)
        .to_vec();
        procs.push(Proc::spawn(
            &format!("mesh-worker-{role}"),
            &bins.worker,
            &args,
            log_dir,
            &[],
            false,
        )?);
    }
    coord
        .wait_workers(roles.len(), Duration::from_secs(60))
        .await?;
    Ok(procs)
}

/// The latency of the write one etcd-backed round makes — one transaction holding the
/// session header and `n` 200-byte entries — measured directly with the coordinator's
/// `EtcdStore`, `rounds` times, under a prefix of its own.
pub async fn etcd_write_latency(
    endpoint: &str,
    n: usize,
    rounds: u32,
) -> anyhow::Result<Vec<Duration>> {
    use agentmesh_core::{Entry, Phase, Session, SessionConfig, SessionMode, SessionSpec};
    use agentmesh_store::{EtcdStore, Fence, SessionStore};
    let client = agentmesh_store::connect_etcd(&[endpoint.to_string()]).await?;
    let store = EtcdStore::new(client, "/mesh-bench-probe");
    let spec = SessionSpec {
        id: format!("probe{n}"),
        task: "mesh-bench etcd write probe".into(),
        specialists: bench_roles(n),
        max_rounds: 4,
    };
    let mode = SessionMode::Broadcast { rounds };
    let (session, _) = Session::new_in(mode, spec, SessionConfig::default(), 0);
    let mut header = session.summary();
    for (role, worker) in bench_roles(n).iter().zip(bench_roles(n)) {
        header
            .assignments
            .insert(role.clone(), format!("{worker}-0"));
    }
    let content = crate::worker::reply_content();
    let mut latencies = Vec::with_capacity(rounds as usize);
    for round in 1..=rounds {
        let entries: Vec<Entry> = bench_roles(n)
            .into_iter()
            .enumerate()
            .map(|(i, role)| Entry {
                seq: u64::from(round - 1) * n as u64 + i as u64 + 1,
                round,
                phase: Phase::Contribute,
                worker_id: format!("{role}-0"),
                role,
                entry_type: crate::worker::entry_type_for(round),
                timestamp_ms: 1,
                content: content.clone(),
                verdict: None,
                concerns: Vec::new(),
                proposal_hash: String::new(),
                proposal_version: 0,
                signature: Vec::new(),
                prompt_tokens: 0,
                completion_tokens: 0,
                attempt: 1,
                public_key: None,
                chain_hash: Default::default(),
            })
            .collect();
        header.round = round;
        header.entry_count = u64::from(round) * n as u64;
        let t0 = Instant::now();
        tokio::time::timeout(
            Duration::from_secs(10),
            store.write(&Fence::Unfenced, &header, &entries),
        )
        .await
        .context("an etcd write took over 10s")??;
        latencies.push(t0.elapsed());
    }
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_round_spans_first_arrival_to_first_arrival_of_the_next() {
        // Two workers, three rounds: worker 1 is always 0.2 ms behind worker 0.
        let arrivals = [
            (1, 10 * MS),
            (1, 10 * MS + MS / 5),
            (2, 11 * MS),
            (2, 11 * MS + MS / 5),
            (3, 13 * MS),
            (3, 13 * MS + MS / 5),
        ];
        let spans = round_latencies(&arrivals, 3, 2).unwrap();
        assert_eq!(
            spans,
            [
                RoundSpan {
                    round: 1,
                    start_ns: 10 * MS,
                    latency: Duration::from_millis(1)
                },
                RoundSpan {
                    round: 2,
                    start_ns: 11 * MS,
                    latency: Duration::from_millis(2)
                },
            ]
        );
    }

    #[test]
    fn a_resent_turn_counts_once_by_its_first_arrival() {
        let arrivals = [(1, 5 * MS), (2, 9 * MS), (1, 7 * MS), (2, 6 * MS)];
        let spans = round_latencies(&arrivals, 2, 1).unwrap();
        assert_eq!(spans[0].latency, Duration::from_millis(1));
    }

    #[test]
    fn lost_or_foreign_arrivals_are_refused() {
        // Round 2 reached one of two workers.
        let short = [(1, MS), (1, MS), (2, 2 * MS)];
        let err = round_latencies(&short, 2, 2).unwrap_err().to_string();
        assert!(err.contains("round 2 reached 1 of 2"), "{err}");
        // A round the session does not have.
        for round in [0, 3] {
            let err = round_latencies(&[(1, MS), (2, 2 * MS), (round, 3 * MS)], 2, 1)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("round {round} arrived")), "{err}");
        }
        // Time running backwards between rounds: not a measurement.
        let err = round_latencies(&[(1, 5 * MS), (2, 4 * MS)], 2, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("round 2 began before round 1"), "{err}");
    }
}
