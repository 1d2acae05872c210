//! `mesh-bench __worker`: K real workers in one process, each its own
//! `agentmesh_worker::run` (own id, own connection, own stream), answering with the bench
//! brain. With `--etcd`, each registers under its own lease, like `mesh-worker --etcd`.
//!
//! # The round instrument
//!
//! The bench brain notes when each turn reaches it, on `CLOCK_MONOTONIC` (one clock for
//! every process of the machine), and on SIGUSR1 writes what it noted to
//! `<arrivals dir>/arrivals-<pid>.txt`. The bench reads these files after a broadcast
//! session: round k lasted from the first arrival of a round-k turn to the first arrival
//! of a round-(k+1) turn, on any worker. A turn of round k+1 is sent only once every
//! result of round k is in, so no delivery delay can make a round look shorter than it
//! was (see `mesh::round_latencies`).

use agentmesh_brain::{Brain, BrainFuture, TurnContext};
use agentmesh_core::{EntryType, Reply};
use agentmesh_store::WorkerRegistry;
use agentmesh_worker::WorkerConfig;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bytes of every bench reply's content.
pub const REPLY_BYTES: usize = 200;

/// Answers at once with exactly [`REPLY_BYTES`] bytes: ANALYSIS in round 1, PROPOSAL
/// later (what a CONTRIBUTE phase accepts).
pub struct BenchBrain {
    content: String,
    arrivals: Arc<Arrivals>,
}

impl Default for BenchBrain {
    fn default() -> Self {
        BenchBrain {
            content: reply_content(),
            arrivals: Arc::default(),
        }
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock `std::time::Instant` reads on Linux, as a
/// number that another process of the same machine can compare.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// When each turn reached this process: (session id, round, `monotonic_ns`).
#[derive(Debug, Default)]
pub struct Arrivals(Mutex<Vec<(String, u32, u64)>>);

impl Arrivals {
    fn note(&self, session_id: String, round: u32) {
        let at = monotonic_ns();
        self.0
            .lock()
            .expect("arrivals lock")
            .push((session_id, round, at));
    }

    /// Writes and forgets what was noted: one `session round ns` line per turn, written
    /// to a temporary name and renamed, so a reader never sees half a file.
    pub fn dump(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let noted = std::mem::take(&mut *self.0.lock().expect("arrivals lock"));
        let mut text = String::with_capacity(noted.len() * 32);
        for (session, round, at) in noted {
            let _ = writeln!(text, "{session} {round} {at}");
        }
        let path = arrivals_path(dir, std::process::id());
        let partial = path.with_extension("partial");
        std::fs::write(&partial, text)?;
        std::fs::rename(&partial, &path)?;
        Ok(path)
    }
}

/// Where worker process `pid` writes its arrivals.
pub fn arrivals_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("arrivals-{pid}.txt"))
}

/// The reply text: printable, exactly [`REPLY_BYTES`] bytes.
pub fn reply_content() -> String {
    let mut text = String::from("mesh-bench reply: ");
    let filler = "abcdefghijklmnopqrstuvwxyz0123456789";
    while text.len() < REPLY_BYTES {
        let take = (REPLY_BYTES - text.len()).min(filler.len());
        text.push_str(&filler[..take]);
    }
    text
}

/// The entry type a bench reply carries in `round`.
pub fn entry_type_for(round: u32) -> EntryType {
    if round <= 1 {
        EntryType::Analysis
    } else {
        EntryType::Proposal
    }
}

impl Brain for BenchBrain {
    fn name(&self) -> &'static str {
        "bench"
    }

    fn think(&self, ctx: TurnContext) -> BrainFuture<'_> {
        self.arrivals.note(ctx.session_id, ctx.round);
        let reply = Reply {
            entry_type: Some(entry_type_for(ctx.round)),
            content: self.content.clone(),
            ..Reply::default()
        };
        Box::pin(std::future::ready(Ok(reply)))
    }
}

/// What `__worker` runs.
#[derive(Debug, Clone)]
pub struct Opts {
    pub coordinator: String,
    /// One worker per role and replica: ids `<prefix><role>-<k>`.
    pub roles: Vec<String>,
    pub per_role: usize,
    pub id_prefix: String,
    pub etcd: Vec<String>,
    pub capacity: u32,
    /// Where SIGUSR1 makes this process write its turns' arrival times.
    pub arrivals_dir: Option<PathBuf>,
    /// Each worker signs its results with a key of its own (as `mesh-worker` does);
    /// false only against a coordinator run with `--signatures off`.
    pub sign: bool,
}

impl Opts {
    /// (role, worker id) of every worker this process runs.
    pub fn workers(&self) -> Vec<(String, String)> {
        self.roles
            .iter()
            .flat_map(|role| {
                (0..self.per_role)
                    .map(move |k| (role.clone(), format!("{}{role}-{k}", self.id_prefix)))
            })
            .collect()
    }
}

/// Runs the workers until SIGTERM or SIGINT, then lets them drain (1 s grace).
pub async fn run(opts: Opts) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = stop_tx.send(true);
    });
    let bench_brain = Arc::new(BenchBrain::default());
    if let Some(dir) = opts.arrivals_dir.clone() {
        let arrivals = bench_brain.arrivals.clone();
        let mut usr1 =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
        tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                if let Err(e) = arrivals.dump(&dir) {
                    tracing::warn!(error = %e, dir = %dir.display(), "cannot write arrivals");
                }
            }
        });
    }
    let brain: Arc<dyn Brain> = bench_brain;
    let mut registrations = Vec::new();
    if !opts.etcd.is_empty() {
        let client = agentmesh_store::connect_etcd(&opts.etcd).await?;
        let registry = agentmesh_store::EtcdRegistry::new(client, agentmesh_store::DEFAULT_PREFIX);
        for (role, worker_id) in opts.workers() {
            let record = agentmesh_store::WorkerRecord {
                role,
                worker_id,
                capacity: opts.capacity,
                version: env!("CARGO_PKG_VERSION").to_string(),
                address: "mesh-bench".to_string(),
                public_key: String::new(),
            };
            registrations.push(registry.register(record, Duration::from_secs(5)).await?);
        }
    }
    // `agentmesh_worker::run` is not `Send`: the workers run as futures of this one task
    // (FuturesOrdered polls only the woken ones); their turns are tasks of their own.
    let mut runs = Vec::new();
    for (role, worker_id) in opts.workers() {
        let config = WorkerConfig {
            role,
            worker_id,
            coordinator: opts.coordinator.clone(),
            leader_lookup: None,
            capacity: opts.capacity,
            grace: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            signing_key: if opts.sign {
                Some(Arc::new(
                    agentmesh_proto::keys::generate().map_err(anyhow::Error::msg)?,
                ))
            } else {
                None
            },
            credentials: Default::default(),
        };
        runs.push(agentmesh_worker::run(
            config,
            brain.clone(),
            stop_rx.clone(),
        ));
    }
    for done in futures::future::join_all(runs).await {
        if let Err(e) = done {
            tracing::warn!(error = %e, "a bench worker stopped with an error");
        }
    }
    for registration in registrations {
        registration.revoke().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentmesh_core::Phase;

    fn ctx(round: u32) -> TurnContext {
        TurnContext {
            session_id: "s".into(),
            task: "broadcast".into(),
            roles: vec!["b0".into()],
            max_rounds: 4,
            role: "b0".into(),
            round,
            phase: Phase::Contribute,
            attempt: 1,
            transcript: Default::default(),
            proposal_version: 0,
            proposal_hash: String::new(),
        }
    }

    #[tokio::test]
    async fn the_bench_brain_answers_200_bytes_of_the_type_the_round_accepts() {
        let brain = BenchBrain::default();
        for round in [1, 2, 7] {
            let reply = brain.think(ctx(round)).await.unwrap();
            assert_eq!(reply.content.len(), REPLY_BYTES);
            let ty = reply.entry_type.unwrap();
            assert_eq!(ty, entry_type_for(round));
            assert!(Phase::Contribute.allows(ty, round), "{ty} in round {round}");
        }
        assert_eq!(entry_type_for(1), EntryType::Analysis);
        assert_eq!(entry_type_for(2), EntryType::Proposal);
    }

    #[tokio::test]
    async fn turn_arrivals_are_noted_in_order_and_written_once() {
        let dir = std::env::temp_dir().join(format!("mesh-bench-arrivals-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let brain = BenchBrain::default();
        for round in 1..=3 {
            brain.think(ctx(round)).await.unwrap();
        }
        let path = brain.arrivals.dump(&dir).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<(&str, u32, u64)> = text
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f[0], f[1].parse().unwrap(), f[2].parse().unwrap())
            })
            .collect();
        assert_eq!(
            lines.iter().map(|l| (l.0, l.1)).collect::<Vec<_>>(),
            [("s", 1), ("s", 2), ("s", 3)]
        );
        assert!(lines.windows(2).all(|w| w[0].2 <= w[1].2), "{text}");
        // What was written is forgotten: the next dump holds only later turns.
        let again = brain.arrivals.dump(&dir).unwrap();
        assert_eq!(std::fs::read_to_string(again).unwrap(), "");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn workers_are_named_per_role_and_replica() {
        let opts = Opts {
            coordinator: String::new(),
            roles: vec!["idle".into(), "b1".into()],
            per_role: 2,
            id_prefix: "p3-".into(),
            etcd: Vec::new(),
            capacity: 4,
            arrivals_dir: None,
            sign: true,
        };
        assert_eq!(
            opts.workers(),
            [
                ("idle".to_string(), "p3-idle-0".to_string()),
                ("idle".to_string(), "p3-idle-1".to_string()),
                ("b1".to_string(), "p3-b1-0".to_string()),
                ("b1".to_string(), "p3-b1-1".to_string()),
            ]
        );
    }
}
