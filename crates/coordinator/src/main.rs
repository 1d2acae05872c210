//! `mesh-coordinator`: serves the worker stream and the session API on one gRPC port.

use agentmesh_coordinator::{
    Backends, CoordinatorConfig, DEFAULT_MAX_SESSIONS, DEFAULT_MAX_TASK_BYTES, Listeners,
};
use agentmesh_proto::parse_duration;
use agentmesh_store::{
    EtcdElection, EtcdRegistry, EtcdStore, MemoryStore, RedbStore, SoleLeader,
    connect_etcd_with_retry,
};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "The agentmesh coordinator: runs negotiation sessions between worker processes"
)]
struct Args {
    /// gRPC address to listen on (worker streams, session API, health, reflection).
    #[arg(long, default_value = "127.0.0.1:7700", env = "MESH_LISTEN")]
    listen: SocketAddr,
    /// How long a phase waits for its turns, including for a replacement worker (e.g. 60s, 500ms).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    phase_timeout: Duration,
    /// How long a new session waits for a live worker of every role before it fails.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pending_timeout: Duration,
    /// The largest gRPC message accepted; larger ones get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_message_bytes: usize,
    /// The largest entry content a worker may submit; larger ones get RESOURCE_EXHAUSTED.
    /// (Every field of an entry, as stored, must also fit the store's limit of 1 MiB.)
    #[arg(long, default_value_t = 512 * 1024)]
    max_entry_bytes: usize,
    /// Live sessions (pending and running) admitted at once; more get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = DEFAULT_MAX_SESSIONS, env = "MESH_MAX_SESSIONS")]
    max_sessions: usize,
    /// The largest task a client may submit; larger ones get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = DEFAULT_MAX_TASK_BYTES, env = "MESH_MAX_TASK_BYTES")]
    max_task_bytes: usize,
    /// Rounds a session gets when the client does not say.
    #[arg(long, default_value_t = 4)]
    default_max_rounds: u32,
    /// How often workers must show signs of life (three missed intervals drop a worker).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// How long a session watcher (gRPC or SSE) may hold events back to send them
    /// together while they arrive faster than this; a watcher may ask for another window.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    watch_batch: Duration,
    /// This coordinator's name in logs and Welcome messages.
    #[arg(long, default_value = "coordinator")]
    id: String,
    /// HTTP address for /healthz and /readyz ("off" to disable).
    #[arg(long, default_value = "127.0.0.1:7780", env = "MESH_HTTP")]
    http: String,
    /// Cluster mode: comma-separated etcd endpoints. Sessions, worker leases and the
    /// leader election live in etcd; several coordinators may run, one leads.
    #[arg(long, env = "MESH_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,
    /// The gRPC URL others use to reach this coordinator when it leads (default:
    /// http://<listen address>).
    #[arg(long, env = "MESH_ADVERTISE")]
    advertise: Option<String>,
    /// The HTTP URL standbys forward dashboard and API calls to when this coordinator
    /// leads (default: http://<--http address>).
    #[arg(long, env = "MESH_ADVERTISE_HTTP")]
    advertise_http: Option<String>,
    /// The leader's lease TTL in seconds: a dead leader is replaced within about this long.
    #[arg(long, default_value_t = 2)]
    election_ttl: u64,
    /// Embedded mode: persist sessions in this directory and resume unfinished ones after
    /// a restart.
    #[arg(long, conflicts_with = "etcd")]
    data_dir: Option<PathBuf>,
    /// Threads of the async runtime (default: the CPUs this process may use). On a host
    /// the coordinator shares with its workers, fewer threads spend less CPU waking each
    /// other: see docs/performance.md.
    #[arg(long, env = "MESH_RUNTIME_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    runtime_threads: Option<u16>,
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.runtime_threads {
        runtime.worker_threads(usize::from(threads));
    }
    runtime.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = CoordinatorConfig {
        coordinator_id: args.id,
        phase_timeout: args.phase_timeout,
        pending_timeout: args.pending_timeout,
        max_message_bytes: args.max_message_bytes,
        max_entry_bytes: args.max_entry_bytes,
        max_sessions: args.max_sessions,
        max_task_bytes: args.max_task_bytes,
        default_max_rounds: args.default_max_rounds,
        heartbeat_interval: args.heartbeat_interval,
        watch_batch_window: args.watch_batch,
        ..CoordinatorConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let local = listener.local_addr()?;
    // Tests and scripts bind port 0 and read the real address from this line.
    println!("listening on {local}");
    let http = if args.http == "off" {
        None
    } else {
        let http = tokio::net::TcpListener::bind(&args.http).await?;
        println!("http on {}", http.local_addr()?);
        Some(http)
    };
    let advertise = args.advertise.unwrap_or_else(|| format!("http://{local}"));
    let advertise_http = match (&http, args.advertise_http) {
        (None, _) => None,
        (Some(_), Some(url)) => Some(url),
        (Some(listener), None) => Some(format!("http://{}", listener.local_addr()?)),
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let backends = if !args.etcd.is_empty() {
        let Some(client) = connect_etcd_with_retry(&args.etcd, stopped(stop_rx.clone())).await
        else {
            tracing::info!("stopped before etcd was reachable");
            return Ok(());
        };
        Backends::new(
            Arc::new(EtcdStore::new(
                client.clone(),
                agentmesh_store::DEFAULT_PREFIX,
            )),
            Arc::new(EtcdElection::new(
                client.clone(),
                agentmesh_store::DEFAULT_ELECTION,
                Duration::from_secs(args.election_ttl.max(1)),
            )),
            Some(Arc::new(EtcdRegistry::new(
                client,
                agentmesh_store::DEFAULT_PREFIX,
            ))),
            true,
        )
    } else if let Some(dir) = &args.data_dir {
        std::fs::create_dir_all(dir)?;
        Backends::new(
            Arc::new(RedbStore::open(dir)?),
            Arc::new(SoleLeader::new()),
            None,
            true,
        )
    } else {
        Backends::new(
            Arc::new(MemoryStore::new()),
            Arc::new(SoleLeader::new()),
            None,
            false,
        )
    };
    let listeners = Listeners {
        grpc: listener,
        http,
        advertise,
        advertise_http,
    };
    agentmesh_coordinator::run(listeners, config, backends, stopped(stop_rx)).await
}
