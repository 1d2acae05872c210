//! `mesh-coordinator`: serves the worker stream and the session API on one gRPC port.

use agentmesh_coordinator::{
    Backends, CoordinatorConfig, DEFAULT_MAX_SESSIONS, DEFAULT_MAX_TASK_BYTES,
    DEFAULT_TRUST_DOMAIN, Listeners, Security, SecuritySettings,
};
use agentmesh_proto::parse_duration;
use agentmesh_store::{EtcdElection, EtcdRegistry, EtcdStore, MemoryStore, RedbStore, SoleLeader};
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
    /// The Ed25519 key this coordinator signs unanimity certificates with (`mesh-worker
    /// keygen --out FILE` writes one). Without it, an ephemeral key, new at each start.
    #[arg(long, env = "MESH_SIGNING_KEY", value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// `required`: every result must carry its worker's valid signature (the default).
    /// `off`: results are neither required to be signed nor checked, and no certificate
    /// is made — only to measure what signing costs (mesh-bench).
    #[arg(long, env = "MESH_SIGNATURES", default_value = "required", value_parser = ["required", "off"])]
    signatures: String,
    #[command(flatten)]
    telemetry: agentmesh_telemetry::TelemetryArgs,
    #[command(flatten)]
    security: SecurityArgs,
    #[command(flatten)]
    etcd_security: agentmesh_discovery::EtcdFlags,
}

/// TLS and authentication. Every file is read again on SIGHUP.
#[derive(clap::Args, Debug)]
struct SecurityArgs {
    /// Serve both ports over TLS with this certificate chain (PEM). Also this
    /// coordinator's client certificate when a standby forwards to the leader.
    #[arg(long, env = "MESH_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "MESH_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Verify client certificates against this CA (mTLS): a certificate whose SAN URI is
    /// spiffe://<trust-domain>/agentmesh/worker/<role> may serve that role. Turns
    /// authentication on.
    #[arg(
        long,
        env = "MESH_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_client_ca: Option<PathBuf>,
    /// CAs trusted (besides the system's) for the leader's certificate when this
    /// coordinator, as a standby, forwards to it.
    #[arg(long, env = "MESH_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// The principals (TOML: name, token_sha256 or spiffe_id, permissions). Turns
    /// authentication on.
    #[arg(long, env = "MESH_AUTH_FILE", value_name = "FILE")]
    auth_file: Option<PathBuf>,
    /// The trust domain of client certificates' SPIFFE IDs.
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN, value_name = "NAME")]
    trust_domain: String,
    /// The name the leader's certificate is checked against when this coordinator, as a
    /// standby, forwards to it (instead of the host of its advertised URL, e.g. a pod IP).
    #[arg(long, env = "MESH_TLS_SERVER_NAME", value_name = "NAME")]
    tls_server_name: Option<String>,
    /// This coordinator's own token (of a principal with the `coordinator` permission):
    /// sent when a standby forwards the call of a caller known by its certificate.
    #[arg(long, env = "MESH_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Listen on a non-loopback address without authentication: anyone who can reach
    /// the ports may run sessions and join as any role.
    #[arg(long, env = "MESH_INSECURE")]
    insecure: bool,
}

/// Refuses to listen beyond loopback without authentication unless `--insecure`; says
/// once how callers are let in.
fn check_exposure(security: &Security, insecure: bool, addrs: &[SocketAddr]) -> anyhow::Result<()> {
    let shown = addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(" and ");
    if security.settings().auth_enabled() {
        tracing::info!("security: {} on {shown}", security.describe());
        return Ok(());
    }
    let exposed: Vec<String> = addrs
        .iter()
        .filter(|a| !a.ip().is_loopback())
        .map(SocketAddr::to_string)
        .collect();
    if exposed.is_empty() {
        tracing::warn!(
            "no authentication: this coordinator is open to anyone who can reach {shown} \
             (loopback only; see --auth-file)"
        );
        return Ok(());
    }
    if !insecure {
        anyhow::bail!(
            "refusing to listen on {} without authentication: give --auth-file FILE (and \
             --tls-cert/--tls-key), or --insecure to let in anyone who can reach it",
            exposed.join(" and ")
        );
    }
    tracing::warn!(
        "--insecure: no authentication on {shown}: anyone who can reach it may run sessions \
         and join as any role"
    );
    Ok(())
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
    // Logs (RUST_LOG, --log-format) and, with a collector configured, trace export;
    // the guard sends the last spans when serving ends.
    let _telemetry = agentmesh_telemetry::init(agentmesh_telemetry::Options {
        service_name: "agentmesh-coordinator",
        service_version: env!("CARGO_PKG_VERSION"),
        instance_id: format!("{}-{}", args.id, agentmesh_telemetry::fresh_instance_id()),
        attributes: vec![("agentmesh.coordinator.id", args.id.clone())],
        log_format: args.telemetry.log_format,
        default_filter: "info",
        otlp_endpoint: args.telemetry.otlp_endpoint.clone(),
        trace_content: false,
    });
    let (signing_key, ephemeral) =
        agentmesh_proto::keys::load_or_generate(args.signing_key.as_deref())
            .map_err(|e| anyhow::anyhow!("--signing-key: {e}"))?;
    if ephemeral {
        tracing::warn!(public_key = %signing_key.public(), "no --signing-key: certificates are signed with an ephemeral key, new at each start");
    } else {
        tracing::info!(public_key = %signing_key.public(), "certificates are signed with the key of --signing-key");
    }
    if args.signatures == "off" {
        tracing::warn!(
            "--signatures off: results are not checked and no certificate is made (for measuring only)"
        );
    }
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
        require_signatures: args.signatures == "required",
        signing_key: std::sync::Arc::new(signing_key),
        ..CoordinatorConfig::default()
    };
    let a = &args.security;
    let security = Security::load(SecuritySettings {
        tls_cert: a.tls_cert.clone(),
        tls_key: a.tls_key.clone(),
        tls_client_ca: a.tls_client_ca.clone(),
        auth_file: a.auth_file.clone(),
        trust_domain: Some(a.trust_domain.clone()),
        tls_ca: a.tls_ca.clone(),
        token_file: a.token_file.clone(),
        tls_server_name: a.tls_server_name.clone(),
    })?;
    let scheme = if security.settings().tls_enabled() {
        "https"
    } else {
        "http"
    };
    let etcd_security = args.etcd_security.security()?;
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
    let mut bound = vec![local];
    if let Some(http) = &http {
        bound.push(http.local_addr()?);
    }
    check_exposure(&security, args.security.insecure, &bound)?;
    let advertise = args
        .advertise
        .unwrap_or_else(|| format!("{scheme}://{local}"));
    let advertise_http = match (&http, args.advertise_http) {
        (None, _) => None,
        (Some(_), Some(url)) => Some(url),
        (Some(listener), None) => Some(format!("{scheme}://{}", listener.local_addr()?)),
    };
    // SIGHUP: certificates, the client CA, the auth file and our own token, read again
    // and swapped in whole (or not at all); open streams keep going.
    let reloading = security.clone();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            match reloading.reload() {
                Ok(()) => tracing::info!("SIGHUP: reloaded ({})", reloading.describe()),
                Err(e) => {
                    tracing::error!("SIGHUP: kept the previous certificates and principals: {e:#}")
                }
            }
        }
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let backends = if !args.etcd.is_empty() {
        let Some(client) = agentmesh_discovery::connect_etcd_with_retry_secured(
            &args.etcd,
            &etcd_security,
            stopped(stop_rx.clone()),
        )
        .await
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
    agentmesh_coordinator::run_secured(listeners, config, backends, security, stopped(stop_rx))
        .await
}
