//! Who runs sessions: only the elected leader.
//!
//! A coordinator starts as a standby and campaigns through its [`Election`] (embedded:
//! [`agentmesh_store::SoleLeader`], which grants leadership at once). Each time it wins,
//! a new [`Term`] begins: the term carries the write fence (so a deposed leader's writes
//! are refused by the store) and a cancellation token that ends every session actor of
//! that term. The leader loads every unfinished session from the store and continues it.
//! When leadership is lost it steps down — stops its actors without writing, cuts its
//! worker streams so workers find the new leader — and campaigns again.
//!
//! While standing by it serves clients by forwarding to the leader and tells workers
//! where the leader is (`edge::gate`).

use crate::events::MeshLog;
use crate::registry::Cut;
use crate::state::{Mesh, Term};
use agentmesh_core::Entry;
use agentmesh_proto::Backoff;
use agentmesh_store::{Election, Fence, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Campaigns, leads, steps down, campaigns again — until `shutdown` fires. `value` is
/// what the election publishes: this coordinator's [`agentmesh_proto::LeaderAddress`].
pub(crate) async fn lead(mesh: Arc<Mesh>, election: Arc<dyn Election>, value: String) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let leadership = tokio::select! {
            won = election.campaign(&value) => won,
            () = mesh.shutdown.cancelled() => return,
        };
        let leadership = match leadership {
            Ok(l) => l,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::error!(error = %e, ?delay, "campaign failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = mesh.shutdown.cancelled() => return,
                }
                continue;
            }
        };
        backoff.reset();
        let since = std::time::Instant::now();
        tracing::info!(%value, fence = ?leadership.fence, "elected leader");
        let term = mesh.begin_term(leadership.fence.clone());
        mesh.resume_unfinished(&term).await;
        let lost = leadership.lost();
        tokio::select! {
            () = lost => {
                tracing::warn!(led_for = ?since.elapsed(), "leadership lost; stepping down");
                mesh.end_term();
            }
            () = mesh.doubt.notified() => {
                tracing::warn!(led_for = ?since.elapsed(), "the store refused a write; stepping down");
                mesh.end_term();
                leadership.resign().await;
            }
            () = mesh.shutdown.cancelled() => {
                // Shutdown drains the sessions first (see `run`), then hands over.
                mesh.end_term();
                leadership.resign().await;
                return;
            }
        }
    }
}

/// How often the store's reachability is probed for `/metrics`.
const STORE_PROBE_EVERY: Duration = Duration::from_secs(5);

/// Keeps `agentmesh_store_reachable` current: every few seconds, one bounded read of the
/// election (what `/readyz` reads too), until shutdown.
pub(crate) async fn probe_store(mesh: Arc<Mesh>) {
    loop {
        let answered = matches!(
            tokio::time::timeout(Duration::from_secs(2), mesh.election.leader()).await,
            Ok(Ok(_))
        );
        mesh.measures.store_reachable.set(i64::from(answered));
        tokio::select! {
            () = tokio::time::sleep(STORE_PROBE_EVERY) => {}
            () = mesh.shutdown.cancelled() => return,
        }
    }
}

impl Mesh {
    /// Starts a leadership term with `fence` guarding every write.
    pub(crate) fn begin_term(&self, fence: Fence) -> Term {
        *self.mesh_log.lock().expect("mesh log lock") =
            Arc::new(MeshLog::new(self.now_ms().max(1) as u64 * 1000));
        let term = Term {
            leading: true,
            fence,
            token: CancellationToken::new(),
        };
        self.term.send_replace(term.clone());
        term
    }

    /// Ends the term: session actors stop without writing, workers are cut off so they
    /// look for the new leader, and in-memory session state is dropped. Waits for no one.
    pub(crate) fn end_term(&self) {
        let old = self.term.send_replace(Term::standby());
        old.token.cancel();
        self.forget_all_sessions();
        self.registry.cut_all(Cut::SteppedDown);
    }

    /// Loads every unfinished session from the store and continues it (new leader, or a
    /// restart on durable data). Retries while the store is unreachable.
    pub(crate) async fn resume_unfinished(self: &Arc<Self>, term: &Term) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let unfinished = loop {
            match self.store.unfinished().await {
                Ok(list) => break list,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::error!(error = %e, ?delay, "cannot list unfinished sessions; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = term.token.cancelled() => return,
                    }
                }
            }
        };
        for header in unfinished {
            let entries = match self.load_transcript(&header.id, term).await {
                Some(Ok(entries)) => entries,
                Some(Err(e)) => {
                    tracing::error!(session = %header.id, error = %e, "cannot load transcript; the session stays unfinished until a later term can read it");
                    continue;
                }
                None => return,
            };
            match self.replay(&header, &entries) {
                Ok((session, effects, history)) => {
                    tracing::info!(session = %header.id, entries = entries.len(), status = %session.status(), round = session.round(), "resumed");
                    self.spawn_session(session, effects, term.clone(), &history);
                }
                Err(e) => {
                    tracing::error!(session = %header.id, error = %e, "cannot resume session")
                }
            }
        }
    }

    /// A session's transcript for resuming it. Retries while the store is unreachable:
    /// right after etcd regains its quorum, reads fail for a moment ("leader changed"),
    /// and a session skipped then would stay unfinished with nobody driving it. `None`
    /// when the term ends first; a refusal that retrying cannot cure is returned.
    async fn load_transcript(
        &self,
        id: &str,
        term: &Term,
    ) -> Option<Result<Vec<Entry>, StoreError>> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match self.store.entries(id, 1).await {
                Err(e) if e.is_retryable() => {
                    let delay = backoff.next_delay();
                    tracing::warn!(session = %id, error = %e, ?delay, "cannot load transcript; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = term.token.cancelled() => return None,
                    }
                }
                loaded => return Some(loaded),
            }
        }
    }
}
