//! The coordinator's HTTP side: probes now, the dashboard later.
//!
//! - `GET /healthz`: 200 while the process serves (liveness).
//! - `GET /readyz`: 200 only on the leader, 503 on a standby (readiness), so a Kubernetes
//!   Service sends clients to the leader.

use crate::Mesh;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::Arc;
use tokio::net::TcpListener;

pub fn router(mesh: Arc<Mesh>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(mesh)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(mesh): State<Arc<Mesh>>) -> (StatusCode, &'static str) {
    if mesh.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if mesh.is_leader() {
        (StatusCode::OK, "leader\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "standby\n")
    }
}

/// Serves until the coordinator shuts down.
pub async fn serve(listener: TcpListener, mesh: Arc<Mesh>) {
    let shutdown = mesh.shutdown.clone();
    let app = router(mesh);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "HTTP server failed");
    }
}
