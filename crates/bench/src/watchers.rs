//! `mesh-bench __watchers`: K `WatchSession` watchers in one process, each on its own
//! connection, standing in for K dashboards or `meshctl watch` terminals.
//!
//! They live in their own process so that their CPU can be told apart from the
//! coordinator's, and so the bench can run them at the idle CPU priority (`--idle`): on a
//! two-core machine the watchers' own decoding competes with the coordinator for the
//! same cores, which a watcher on another machine would not.
//!
//! Protocol with the bench, on stdout:
//! - `ready` once every connection is up and a `WatchMesh` stream is live;
//! - the next session created in the mesh is the one watched (found via `WatchMesh`);
//! - `watching <session id>` once every watcher has received an event;
//! - `events <total> <fewest> <most>` when every watch has ended with the session (the
//!   total, and the fewest and most durable events one watcher received; progress hints
//!   are not counted), then it exits 0.

use crate::mesh::connect;
use agentmesh_proto::v1::{self, mesh_event};
use anyhow::{Context, bail};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long any one step may take before the process gives up (it never hangs a bench).
const STEP_LIMIT: Duration = Duration::from_secs(120);

/// Puts this thread in the `SCHED_IDLE` class: it runs only when a CPU has nothing else
/// to run, so it takes no CPU time the coordinator or the workers want. Threads started
/// afterwards (the runtime's) inherit the class.
pub fn run_when_idle() -> anyhow::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler(2) on the calling thread (pid 0) with a valid param.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        bail!("SCHED_IDLE: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub async fn run(coordinator: String, count: usize) -> anyhow::Result<()> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(connect(&coordinator).await?);
    }
    let mut mesh = connect(&coordinator)
        .await?
        .watch_mesh(v1::WatchMeshRequest { from_seq: 0 })
        .await?
        .into_inner();
    // The first mesh event is the resync snapshot: the stream is live from here on.
    tokio::time::timeout(STEP_LIMIT, mesh.message())
        .await
        .context("no mesh snapshot")??
        .context("the mesh watch ended")?;
    say("ready");
    let session_id = loop {
        let event = tokio::time::timeout(STEP_LIMIT, mesh.message())
            .await
            .context("no session was created")??
            .context("the mesh watch ended")?;
        if let Some(mesh_event::Event::SessionCreated(created)) = event.event {
            break created.id;
        }
    };
    drop(mesh);

    let seen_one = Arc::new(AtomicUsize::new(0));
    let (all_watching_tx, all_watching) = tokio::sync::oneshot::channel::<()>();
    let all_watching_tx = Arc::new(std::sync::Mutex::new(Some(all_watching_tx)));
    let mut watches = tokio::task::JoinSet::new();
    for mut client in clients {
        let (id, seen_one, all_watching_tx) = (
            session_id.clone(),
            seen_one.clone(),
            all_watching_tx.clone(),
        );
        watches.spawn(async move {
            let mut stream = client
                .watch_session(v1::WatchSessionRequest {
                    session_id: id,
                    from_seq: 1,
                    // As a dashboard or meshctl would: the coordinator's default window.
                    batch_window_ms: None,
                })
                .await?
                .into_inner();
            let mut events = 0u64;
            while let Some(event) = tokio::time::timeout(STEP_LIMIT, stream.message())
                .await
                .context("a watch went silent")??
            {
                if event.ephemeral {
                    continue; // a progress hint: dropped for a busy watcher by design
                }
                if events == 0
                    && seen_one.fetch_add(1, Ordering::SeqCst) + 1 == count
                    && let Some(tx) = all_watching_tx.lock().expect("lock").take()
                {
                    let _ = tx.send(());
                }
                events += 1;
            }
            anyhow::Ok(events)
        });
    }
    if count > 0 {
        tokio::time::timeout(STEP_LIMIT, all_watching)
            .await
            .context("not every watcher saw an event")??;
    }
    say(&format!("watching {session_id}"));
    let (mut total, mut fewest, mut most) = (0, u64::MAX, 0);
    while let Some(done) = watches.join_next().await {
        let events = done??;
        total += events;
        fewest = fewest.min(events);
        most = most.max(events);
    }
    say(&format!("events {total} {fewest} {most}"));
    Ok(())
}
