//! `mesh-worker`: joins the mesh as one role and answers turns with a brain.

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
    #[arg(long, env = "MESH_ROLE")]
    role: String,
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
    /// On SIGTERM, how long in-flight turns may take before the worker leaves anyway.
    #[arg(long, default_value_t = 30)]
    grace_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if let Err(why) = agentmesh_core::session::validate_role(&args.role) {
        anyhow::bail!("--role: {why}");
    }
    if args.capacity == 0 {
        anyhow::bail!("--capacity must be at least 1");
    }
    let worker_id = args.id.unwrap_or_else(|| {
        format!(
            "{}-{}",
            args.role,
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        )
    });
    let brain = brains::build(&args.brain, &args.role)?;
    let config = WorkerConfig {
        role: args.role,
        worker_id,
        coordinator: args.coordinator,
        capacity: args.capacity,
        grace: Duration::from_secs(args.grace_secs),
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_secs(10),
    };
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
    agentmesh_worker::run(config, brain, stop_rx).await
}
