//! Who runs sessions: only the elected leader.
//!
//! A coordinator starts as a standby and campaigns through its [`Election`] (embedded:
//! [`agentmesh_store::SoleLeader`], which grants leadership at once). Each time it wins,
//! a new [`Term`] begins: the term carries the write fence (so a deposed leader's writes
//! are refused by the store) and a cancellation token that ends every session actor of
//! that term. The leader loads every unfinished session from the store and continues it.
//! When leadership is lost it steps down — stops its actors without writing, drops its
//! worker streams so workers find the new leader — and campaigns again.
//!
//! While standing by, every gRPC call is answered UNAVAILABLE with the leader's address in
//! the `x-agentmesh-leader` metadata, and `/readyz` says 503, so a Kubernetes Service
//! routes to the leader only.

use crate::Mesh;
use agentmesh_store::{Election, Fence};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use agentmesh_proto::LEADER_METADATA;

/// One leadership term (or the absence of one).
#[derive(Clone, Debug)]
pub struct Term {
    pub leading: bool,
    pub fence: Fence,
    /// Cancelled when the term ends; session actors of the term stop at once.
    pub token: CancellationToken,
}

impl Term {
    pub fn standby() -> Term {
        let token = CancellationToken::new();
        token.cancel();
        Term {
            leading: false,
            fence: Fence::Unfenced,
            token,
        }
    }
}

/// Campaigns, leads, steps down, campaigns again — until `shutdown` fires.
pub async fn lead(mesh: Arc<Mesh>, election: Arc<dyn Election>, advertise: String) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let leadership = tokio::select! {
            won = election.campaign(&advertise) => won,
            () = mesh.shutdown.cancelled() => return,
        };
        let leadership = match leadership {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, ?backoff, "campaign failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = mesh.shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        let since = std::time::Instant::now();
        tracing::info!(%advertise, fence = ?leadership.fence, "elected leader");
        let term = mesh.begin_term(leadership.fence.clone());
        mesh.resume_unfinished(&term).await;
        let lost = leadership.lost();
        tokio::select! {
            () = lost => {
                tracing::warn!(led_for = ?since.elapsed(), "leadership lost; stepping down");
                mesh.end_term().await;
            }
            () = mesh.doubted() => {
                tracing::warn!(led_for = ?since.elapsed(), "the store refused a write; stepping down");
                mesh.end_term().await;
                leadership.resign().await;
            }
            () = mesh.shutdown.cancelled() => {
                // Shutdown drains the sessions first (see `run`), then hands over.
                mesh.end_term().await;
                leadership.resign().await;
                return;
            }
        }
    }
}
