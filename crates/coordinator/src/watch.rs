//! The watch streams, shared by gRPC (`WatchSession`, `WatchMesh`) and the HTTP
//! Server-Sent Events endpoints: each watcher is a task reading a log from its own
//! cursor into a bounded channel, so a slow watcher only ever waits on itself.

use crate::Mesh;
use crate::errors::MeshError;
use crate::events::EventLog;
use agentmesh_proto::v1::{self, MeshEvent, SessionEvent, mesh_event};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Events a watcher may have in flight before its task waits for the client.
pub const WATCH_BUFFER: usize = 64;

/// Follows one session from `from_seq` (1 = from the start): history, then live, until
/// the session ends. Progress hints are interleaved while the watcher is caught up.
pub async fn session_events(
    mesh: &Arc<Mesh>,
    session_id: &str,
    from_seq: u64,
) -> Result<mpsc::Receiver<SessionEvent>, MeshError> {
    let log = mesh.session_log(session_id).await?;
    let from_seq = from_seq.max(1);
    let last = log.last_seq();
    if from_seq > last + 1 {
        return Err(MeshError::FromTheFuture { from_seq, last });
    }
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    let shutdown = mesh.shutdown.clone();
    let term = mesh.term().token;
    tokio::spawn(follow_session(log, from_seq, tx, shutdown, term));
    Ok(rx)
}

async fn follow_session(
    log: Arc<EventLog>,
    from_seq: u64,
    tx: mpsc::Sender<SessionEvent>,
    shutdown: tokio_util::sync::CancellationToken,
    term: tokio_util::sync::CancellationToken,
) {
    let mut changes = log.subscribe();
    let mut hints = log.subscribe_progress();
    let mut next = from_seq;
    loop {
        // Mark the current version seen *before* reading, so an event appended after
        // the read wakes us: no event is ever missed between the two.
        changes.borrow_and_update();
        let (batch, closed) = log.read(next, WATCH_BUFFER);
        if batch.is_empty() {
            if closed {
                return;
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                hint = hints.recv() => {
                    // Hints queued behind this one are newer: only the newest matters.
                    let mut hint = hint;
                    while let Ok(newer) = hints.try_recv() {
                        hint = Ok(newer);
                    }
                    // Only a hint about the state this watcher has reached is useful.
                    if let Ok(hint) = hint
                        && hint.seq + 1 == next
                        && tx.send(hint).await.is_err()
                    {
                        return;
                    }
                }
                () = shutdown.cancelled() => return,
                // A log of a session this coordinator led ends with its term; the
                // client reconnects (to the new leader) from its last seq.
                () = term.cancelled(), if !closed && !term.is_cancelled() => return,
            }
            continue;
        }
        for event in batch {
            next = event.seq + 1;
            if tx.send(event).await.is_err() {
                return; // the watcher went away
            }
        }
    }
}

/// Follows the mesh from `from_seq` (0 = now, starting with a resync snapshot).
pub async fn mesh_events(
    mesh: &Arc<Mesh>,
    from_seq: u64,
) -> Result<mpsc::Receiver<MeshEvent>, MeshError> {
    let log = mesh.mesh_log();
    let last = log.last_seq();
    if from_seq > last + 1 {
        return Err(MeshError::FromTheFuture { from_seq, last });
    }
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    let mesh = mesh.clone();
    tokio::spawn(async move {
        let mut changes = log.subscribe();
        let term = mesh.term().token;
        let mut next = from_seq;
        loop {
            changes.borrow_and_update();
            let batch = if next == 0 {
                None
            } else {
                log.read(next, WATCH_BUFFER)
            };
            let Some(batch) = batch else {
                // Too far behind (or starting fresh): the whole current state instead.
                let at = log.last_seq();
                let Ok(resync) = resync(&mesh, at).await else {
                    return;
                };
                if tx.send(resync).await.is_err() {
                    return;
                }
                next = at + 1;
                continue;
            };
            if batch.is_empty() {
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    () = mesh.shutdown.cancelled() => return,
                    () = term.cancelled() => return,
                }
                continue;
            }
            for event in batch {
                next = event.seq + 1;
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// A snapshot event standing for everything up to `seq`.
async fn resync(mesh: &Mesh, seq: u64) -> Result<MeshEvent, MeshError> {
    let sessions = mesh
        .store
        .list()
        .await
        .map_err(|e| MeshError::Store(e.to_string()))?;
    Ok(MeshEvent {
        seq,
        timestamp_ms: crate::now_ms(),
        event: Some(mesh_event::Event::Resync(v1::MeshResync {
            sessions: sessions.iter().map(v1::Session::from).collect(),
            workers: mesh.registry.list(),
        })),
    })
}
