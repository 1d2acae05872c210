//! `mesh-worker`: joins the mesh as one role and answers turns with a brain.

use agentmesh_discovery::{LeaderLookup, WorkerLease, WorkerRecord};
use agentmesh_proto::Backoff;
use agentmesh_worker::WorkerConfig;
use agentmesh_worker::brains::{self, BrainArgs};
use clap::Parser;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "An agentmesh worker: one role, one stream to the coordinator"
)]
struct Args {
    /// The role this worker plays (supervisor, backend, frontend, security, ... or your own).
    /// Optional with --persona: the persona file's `role` (or `name`).
    #[arg(long, env = "MESH_ROLE")]
    role: Option<String>,
    /// The coordinator's gRPC URL.
    #[arg(
        long,
        env = "MESH_COORDINATOR",
        default_value = "http://127.0.0.1:7700"
    )]
    coordinator: String,
    /// A unique worker id (default: ROLE-<random>).
    #[arg(long, env = "MESH_WORKER_ID")]
    id: Option<String>,
    /// Sessions served at once.
    #[arg(long, default_value_t = 4)]
    capacity: u32,
    #[command(flatten)]
    brain: BrainArgs,
    /// Cluster mode: comma-separated etcd endpoints. The worker registers under a lease
    /// and finds the leading coordinator through the election.
    #[arg(long, env = "MESH_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,
    /// TTL of the worker's lease in seconds: a frozen worker is replaced after this long.
    #[arg(long, default_value_t = 5)]
    lease_ttl: u64,
    /// Where this worker runs, as shown by `meshctl workers` (default: the host name).
    #[arg(long, env = "MESH_ADVERTISE")]
    advertise: Option<String>,
    /// On SIGTERM, how long in-flight turns may take before the worker leaves anyway.
    #[arg(long, default_value_t = 30)]
    grace_secs: u64,
    /// The Ed25519 key this worker signs every result with (`mesh-worker keygen --out
    /// FILE` writes one). Without it, the worker signs with an ephemeral key, new at each
    /// start, and says so.
    #[arg(long, env = "MESH_SIGNING_KEY")]
    signing_key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    client: agentmesh_discovery::ClientFlags,
    #[command(flatten)]
    etcd_security: agentmesh_discovery::EtcdFlags,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9090; off by default).
    #[arg(long, env = "MESH_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Record each model call's prompt and reply in its trace span, as bounded events
    /// (never recorded without this flag).
    #[arg(long, env = "MESH_TRACE_CONTENT")]
    trace_content: bool,
    #[command(flatten)]
    telemetry: agentmesh_telemetry::TelemetryArgs,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Writes a new Ed25519 signing key to FILE (mode 0600; never overwrites) and prints
    /// its public key, for `--signing-key` and for pinning.
    Keygen {
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    one_malloc_arena();
    // One thread: a worker spends its turns waiting on its brain (a model's HTTP API, a
    // child process) or on the coordinator, so a second runtime thread buys nothing but
    // memory and cross-thread wake-ups. Measured with `mesh-bench --full --only
    // negotiation` (7 workers, 100 sessions each at once): peak RSS 10.0-10.4 MiB against
    // 10.7 with two threads, 6.2 MiB against 6.5 idle, and 357-393 sessions/s against 349.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve())
}

/// Makes every thread allocate from glibc's one main arena (unless the operator set
/// `MALLOC_ARENA_MAX`, which then wins).
///
/// Why: glibc gives each thread that meets contention an arena of its own, and memory
/// freed into one arena is reused only by allocations served from that arena, so each
/// arena grows to its own peak and the process holds their sum. With the runtime on
/// the main thread the others are tokio's blocking-pool threads (name lookups, file
/// reads, an exec brain's process handling); measured when the runtime still had two
/// worker threads, one arena saved about 1 MiB at 100 concurrent sessions (11.7-12.2
/// against 12.7-13.1 MiB peak RSS) at no cost in sessions/s.
///
/// Called before the runtime exists: a thread is bound to an arena on its first
/// allocation, so the limit must be in place before any other thread starts.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Keygen { out }) = &args.command {
        let key = agentmesh_proto::keys::keygen(out).map_err(anyhow::Error::msg)?;
        println!("wrote {}; public key {}", out.display(), key.public());
        return Ok(());
    }
    let role = brains::resolve_role(args.role.as_deref(), &args.brain)?;
    if let Err(why) = agentmesh_core::session::validate_role(&role) {
        anyhow::bail!("--role: {why}");
    }
    if args.capacity == 0 {
        anyhow::bail!("--capacity must be at least 1");
    }
    let worker_id = args.id.unwrap_or_else(|| {
        format!(
            "{}-{}",
            role,
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        )
    });
    // Logs (RUST_LOG, --log-format) and, with a collector configured, trace export; the
    // guard sends the last spans on the way out.
    let _telemetry = agentmesh_telemetry::init(agentmesh_telemetry::Options {
        service_name: "agentmesh-worker",
        service_version: env!("CARGO_PKG_VERSION"),
        instance_id: worker_id.clone(),
        attributes: vec![(agentmesh_telemetry::genai::MESH_WORKER_ROLE, role.clone())],
        log_format: args.telemetry.log_format,
        default_filter: "info",
        otlp_endpoint: args.telemetry.otlp_endpoint.clone(),
        trace_content: args.trace_content,
    });
    let brain = brains::build(&args.brain, &role)?;
    let (signing_key, ephemeral) =
        agentmesh_proto::keys::load_or_generate(args.signing_key.as_deref())
            .map_err(|e| anyhow::anyhow!("--signing-key: {e}"))?;
    if ephemeral {
        tracing::warn!(public_key = %signing_key.public(), "no --signing-key: signing with an ephemeral key, new at each start (mesh-worker keygen --out FILE makes one to keep and pin)");
    } else {
        tracing::info!(public_key = %signing_key.public(), "signing with the key of --signing-key");
    }
    // Read now, so a missing file stops the worker at start; the token file is read
    // again for every connection (and certificates with it), so a rotated one needs no
    // restart, and SIGHUP (which would otherwise end the process) only says so.
    let credentials = args.client.credentials().map_err(anyhow::Error::msg)?;
    let etcd_security = args.etcd_security.security()?;
    tokio::spawn(async {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!(
                "SIGHUP: the token file and certificates are read again at the next connection"
            );
        }
    });
    agentmesh_worker::metrics::observe_brains();
    if let Some(addr) = args.metrics_listen {
        let listener = agentmesh_worker::metrics::bind(addr).await?;
        tokio::spawn(agentmesh_worker::metrics::serve(listener));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut leader_lookup = None;
    let mut registration = None;
    if !args.etcd.is_empty() {
        let Some(client) = agentmesh_discovery::connect_etcd_with_retry_secured(
            &args.etcd,
            &etcd_security,
            stopped(stop_rx.clone()),
        )
        .await
        else {
            return Ok(());
        };
        let record = WorkerRecord {
            role: role.clone(),
            worker_id: worker_id.clone(),
            capacity: args.capacity,
            version: env!("CARGO_PKG_VERSION").to_string(),
            address: args.advertise.clone().unwrap_or_else(host_name),
            public_key: signing_key.public().to_hex(),
        };
        // The lease is kept alive (and the worker registered again after an etcd outage)
        // in the background until it is revoked on the way out.
        let ttl = Duration::from_secs(args.lease_ttl.max(1));
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        registration = loop {
            let prefix = agentmesh_discovery::DEFAULT_PREFIX;
            let timeout = agentmesh_discovery::OP_TIMEOUT;
            match WorkerLease::register(&client, prefix, &record, ttl, timeout).await {
                Ok(lease) => break Some(lease),
                Err(agentmesh_discovery::DiscoveryError::Invalid(why)) => {
                    anyhow::bail!("cannot register in etcd: {why}")
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::error!(error = %e, ?delay, "cannot register in etcd; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stopped(stop_rx.clone()) => return Ok(()),
                    }
                }
            }
        };
        leader_lookup = Some(LeaderLookup::new(
            client,
            agentmesh_discovery::DEFAULT_ELECTION,
        ));
    }
    let config = WorkerConfig {
        role,
        worker_id,
        leader_lookup,
        coordinator: args.coordinator,
        capacity: args.capacity,
        grace: Duration::from_secs(args.grace_secs),
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_secs(10),
        credentials,
        signing_key: Some(std::sync::Arc::new(signing_key)),
    };
    let result = agentmesh_worker::run(config, brain, stop_rx).await;
    if let Some(registration) = registration {
        registration.revoke().await;
    }
    result
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
