//! The agentmesh coordinator: runs negotiation sessions between worker processes that
//! hold a bidirectional gRPC stream to it.
//!
//! # Layout
//!
//! The layers, outermost first; a module only ever uses the ones below it
//! (`tests/layers.rs` checks the imports):
//!
//! 1. **Edges** ([`edge`]): the gRPC port (worker streams, client API, watch frames),
//!    the HTTP port (probes, `/metrics`, dashboard, JSON API, SSE), and the gate between
//!    them and the service (who answers a call: the leader serves, a standby forwards or
//!    redirects). Wire types are converted here, and errors mapped to statuses.
//! 2. **Service** ([`service`]): the one API every edge calls — create, cancel, read,
//!    watch, results — over the coordinator's shared state, `Mesh`.
//! 3. **Actors and registry**: [`session`] (one actor per session, driving the pure core
//!    `agentmesh_core::Session`), [`registry`] (live workers and the non-blocking links to
//!    them), [`leadership`] (terms and fences), [`watch`] and [`events`] (event logs and
//!    their followers), [`demand`] (what each role is needed for).
//! 4. **Store and core**: `agentmesh_store`, `agentmesh_core`.
//!
//! Beside them: [`config`] (what a coordinator is started with), [`errors`] (every
//! failure as data, with its kind), [`clock`] (time, injected).
//!
//! [`run`] wires them: serve on the listeners until a shutdown future resolves, then drain.

mod clock;
mod config;
mod demand;
mod edge;
mod errors;
mod events;
mod leadership;
mod measure;
mod registry;
mod service;
mod session;
mod state;
#[cfg(test)]
mod timing_tests;
mod watch;

pub use clock::{Clock, SystemClock, TokioClock};
pub use config::{
    Backends, CoordinatorConfig, DEFAULT_MAX_SESSIONS, DEFAULT_MAX_TASK_BYTES, Listeners,
};
pub use edge::auth::DEFAULT_TRUST_DOMAIN;
pub use edge::security::{Security, SecuritySettings};

use agentmesh_proto::LeaderAddress;
use state::Mesh;
use std::future::Future;
use tokio::sync::oneshot;

/// Serves the coordinator until `shutdown` resolves, then drains: with a memory store,
/// running sessions are cancelled (their workers are told); with a durable one they are
/// left for the next leader. Worker and watch streams end, leadership is resigned, and
/// the server stops within `drain_timeout`.
pub async fn run(
    listeners: Listeners,
    config: CoordinatorConfig,
    backends: Backends,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_secured(listeners, config, backends, Security::default(), shutdown).await
}

/// [`run`] with TLS and authentication as `security` says (`Security::reload` swaps
/// certificates and principals while it runs).
pub async fn run_secured(
    listeners: Listeners,
    config: CoordinatorConfig,
    backends: Backends,
    security: Security,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let advertised = LeaderAddress {
        grpc: listeners.advertise.clone(),
        http: listeners.advertise_http.clone(),
        // The election publishes the key certificates are signed with (etcd, in cluster
        // mode), beside `/.well-known/agentmesh-keys`.
        key: Some(config.signing_key.public().to_hex()),
    };
    let mesh = Mesh::new(config, &backends, advertised.clone());
    let gate = edge::gate::Gate::new(mesh.clone(), security.clone())?;
    let addr = listeners.grpc.local_addr()?;

    if let Some(workers) = backends.workers.clone() {
        tokio::spawn(registry::follow_leases(
            mesh.registry.clone(),
            workers,
            mesh.shutdown.clone(),
        ));
    }
    tokio::spawn(leadership::probe_store(mesh.clone()));
    let leader_task = tokio::spawn(leadership::lead(
        mesh.clone(),
        backends.election.clone(),
        advertised.encode(),
    ));
    let http_task = listeners.http.map(|listener| {
        tokio::spawn(edge::http::serve(
            listener,
            security.http_tls(),
            mesh.clone(),
            gate.clone(),
        ))
    });

    let drain_mesh = mesh.clone();
    let (drained_tx, drained_rx) = oneshot::channel::<()>();
    let drain = async move {
        if drain_mesh.durable {
            tracing::info!("shutting down: running sessions stay unfinished for the next leader");
        } else {
            tracing::info!("shutting down: cancelling running sessions");
            drain_mesh.cancel_all("coordinator shutting down").await;
        }
        // Worker and watch streams end when the token fires; the leadership loop ends
        // the term and resigns; then the server drains.
        drain_mesh.shutdown.cancel();
        let _ = leader_task.await;
        let _ = drained_tx.send(());
    };

    tracing::info!(%addr, advertise = %listeners.advertise, "coordinator listening");
    let server = edge::grpc::serve(
        listeners.grpc,
        security.grpc_tls(),
        gate,
        mesh.clone(),
        shutdown,
        drain,
    );
    let drain_timeout = mesh.config.drain_timeout;
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result?,
        () = async {
            let _ = drained_rx.await;
            tokio::time::sleep(drain_timeout).await;
        } => {
            tracing::warn!("connections still open after the drain timeout; stopping anyway");
        }
    }
    if let Some(task) = http_task {
        task.abort();
    }
    tracing::info!("coordinator stopped");
    Ok(())
}
