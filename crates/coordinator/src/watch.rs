//! The watch streams, shared by gRPC (`WatchSession`, `WatchMesh`) and the HTTP
//! Server-Sent Events endpoints: each watcher is a task reading a log from its own
//! cursor into a bounded channel, so a slow watcher only ever waits on itself.
//!
//! # Batching
//!
//! A session watcher that has just sent what it read waits one *batch window* before
//! reading again, so while events arrive faster than the window it sends them in one
//! write per window instead of one per phase. The first event after a quiet spell goes
//! out at once (the wait only follows a send), so a negotiation whose turns take
//! seconds is watched with no delay at all. Why: on the coordinator a watcher's cost is
//! almost all in its socket writes and wake-ups (a profile with 50 watchers of a
//! 1,600-rounds/s session spent 39 % of the coordinator's CPU in `writev`), not in the
//! events, and those writes compete with the sessions for the same cores.

use crate::errors::MeshError;
use crate::events::{EventLog, SharedEvent, wire_worker};
use crate::state::Mesh;
use agentmesh_proto::v1::{self, MeshEvent, mesh_event};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Events a watcher may have in flight before its task waits for the client.
pub(crate) const WATCH_BUFFER: usize = 64;

/// Follows one session from `from_seq` (1 = from the start): history, then live, until
/// the session ends. Progress hints are interleaved while the watcher is caught up.
///
/// `batch_window`: how long to hold events back after a send (zero: never).
pub(crate) async fn session_events(
    mesh: &Arc<Mesh>,
    session_id: &str,
    from_seq: u64,
    batch_window: Duration,
) -> Result<mpsc::Receiver<SharedEvent>, MeshError> {
    let log = mesh.session_log(session_id).await?;
    let from_seq = from_seq.max(1);
    let last = log.last_seq();
    if from_seq > last + 1 {
        return Err(MeshError::FromTheFuture { from_seq, last });
    }
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    let shutdown = mesh.shutdown.clone();
    let term = mesh.term().token;
    let watching = mesh.measures.watching("session");
    tokio::spawn(async move {
        follow_session(log, from_seq, tx, batch_window, shutdown, term).await;
        drop(watching);
    });
    Ok(rx)
}

async fn follow_session(
    log: Arc<EventLog>,
    from_seq: u64,
    tx: mpsc::Sender<SharedEvent>,
    batch_window: Duration,
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
        let caught_up = batch.len() < WATCH_BUFFER;
        for event in batch {
            next = event.seq + 1;
            if tx.send(event).await.is_err() {
                return; // the watcher went away
            }
        }
        // Still behind (a full read): go on at once. Caught up: let the next events
        // gather for one window, so they leave in one write (see the module docs).
        if caught_up && !batch_window.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(batch_window) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// Follows the mesh from `from_seq` (0 = now, starting with a resync snapshot).
pub(crate) async fn mesh_events(
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
    let watching = mesh.measures.watching("mesh");
    tokio::spawn(async move {
        let _watching = watching;
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
    let sessions = mesh.list_sessions().await?;
    Ok(MeshEvent {
        seq,
        timestamp_ms: mesh.now_ms(),
        event: Some(mesh_event::Event::Resync(v1::MeshResync {
            sessions: sessions.iter().map(v1::Session::from).collect(),
            workers: mesh.workers().iter().map(wire_worker).collect(),
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;

    fn entry() -> v1::session_event::Event {
        v1::session_event::Event::Entry(v1::Entry::default())
    }

    /// Follows `log` from seq 1 with `window`; returns the watcher's channel.
    fn follow(log: &Arc<EventLog>, window: Duration) -> mpsc::Receiver<SharedEvent> {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let never = CancellationToken::new();
        tokio::spawn(follow_session(
            log.clone(),
            1,
            tx,
            window,
            never.clone(),
            never,
        ));
        rx
    }

    // Paused time: the runtime jumps the clock only when every task waits, so the
    // elapsed times below are exactly the delays the follower chose.
    #[tokio::test(start_paused = true)]
    async fn the_first_event_goes_at_once_and_a_burst_waits_for_one_window() {
        let window = Duration::from_millis(50);
        let log = Arc::new(EventLog::default());
        let mut watcher = follow(&log, window);

        let start = Instant::now();
        log.push("s", 1, entry(), None);
        assert_eq!(watcher.recv().await.unwrap().seq, 1);
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a quiet session's event is not held"
        );

        // A burst right behind it leaves together, one window after the first send.
        log.push_all("s", 2, [entry(), entry()]);
        log.push("s", 3, entry(), None);
        let seqs = [
            watcher.recv().await.unwrap().seq,
            watcher.recv().await.unwrap().seq,
            watcher.recv().await.unwrap().seq,
        ];
        assert_eq!(seqs, [2, 3, 4], "in order, none lost");
        assert_eq!(start.elapsed(), window);

        // After a quiet spell, at once again.
        tokio::time::sleep(window * 4).await;
        let quiet = Instant::now();
        log.push("s", 4, entry(), None);
        assert_eq!(watcher.recv().await.unwrap().seq, 5);
        assert_eq!(quiet.elapsed(), Duration::ZERO);

        log.close();
        assert!(
            watcher.recv().await.is_none(),
            "the watch ends with the log"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_window_sends_every_event_at_once() {
        let log = Arc::new(EventLog::default());
        let mut watcher = follow(&log, Duration::ZERO);
        let start = Instant::now();
        for seq in 1..=3 {
            log.push("s", 1, entry(), None);
            assert_eq!(watcher.recv().await.unwrap().seq, seq);
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
