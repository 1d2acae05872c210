//! The agentmesh worker: one role, one bidirectional stream to the coordinator, turns
//! run through a [`Brain`].
//!
//! # Layout
//!
//! - [`run`]: the connection loop. Connect, say Hello (with the sessions already held, so
//!   only deltas are sent), serve turns, and on any break reconnect with exponential
//!   back-off and full jitter. Ends when `shutdown` fires and in-flight turns are done.
//! - [`Held`]: the transcripts this worker has seen, per session, built from deltas and
//!   shared with the turns that run on them (an `agentmesh_brain::Transcript` each).
//! - [`Backoff`]: the reconnect schedule (`agentmesh_proto::Backoff`, with jitter).
//! - [`brains`]: the `--brain` flags and the brain they build.
//!
//! # Message size
//!
//! The coordinator's Welcome names the largest message it accepts. A result whose encoding
//! is larger would break the stream (and with it every session this worker holds), so it
//! is sent as a TurnFailed naming the sizes instead ([`fit_message_limit`]).
//!
//! # Drain
//!
//! On shutdown the worker tells the coordinator it is draining (no new sessions), lets
//! its in-flight turns finish for up to `grace`, then closes the stream: whatever it still
//! held is reassigned to a replica of its role.

pub mod brains;
pub mod metrics;
mod trace;

use agentmesh_brain::{Brain, Transcript, TurnContext};
use agentmesh_core::Entry;
use agentmesh_proto::v1::worker_service_client::WorkerServiceClient;
use agentmesh_proto::v1::{self, WorkerMessage, coordinator_message, worker_message};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub use agentmesh_proto::LEADER_METADATA;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Clone)]
pub struct WorkerConfig {
    pub role: String,
    pub worker_id: String,
    /// The coordinator to use when no election says otherwise.
    pub coordinator: String,
    /// Cluster mode: where to look up the current leader before each connection.
    pub leader_lookup: Option<agentmesh_discovery::LeaderLookup>,
    /// Sessions served at once.
    pub capacity: u32,
    /// How long shutdown waits for in-flight turns.
    pub grace: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// The Ed25519 key every result is signed with; its public half goes in the Hello.
    /// `None` only for `mesh-bench`'s unsigned runs (a coordinator that requires
    /// signatures refuses such a worker).
    pub signing_key: Option<Arc<agentmesh_core::trust::KeyPair>>,
    /// TLS roots, client certificate and token towards the coordinator.
    pub credentials: agentmesh_discovery::ClientCredentials,
}

/// How much the coordinator may send ahead of what this worker has read, on the one
/// stream (and so the one connection) it has.
///
/// hyper's defaults (2 MiB per stream, 5 MiB per connection) let a burst of turn requests
/// (100 sessions reaching REVIEW at once, each request carrying the new proposal) pile up
/// in this process's HTTP/2 buffers: up to ~0.4 MiB of a worker's 10 MiB budget at 100
/// sessions, against ~0.15 MiB with this window. The rest waits in the coordinator, which
/// sends it as this worker reads; a window update costs one round trip, far less than a
/// turn. Messages larger than the window still arrive, over several window updates.
const RECEIVE_WINDOW_BYTES: u32 = 256 * 1024;

/// The reconnect schedule: exponential growth with jitter (each wait between half and all
/// of the doubling ceiling), so a fleet of workers that lost the same coordinator does
/// not reconnect in lock-step.
pub use agentmesh_proto::Backoff;

/// The share of each reconnect wait that is random.
const RECONNECT_JITTER: f64 = 0.5;

/// One session as this worker knows it.
#[derive(Debug, Clone, Default)]
pub struct HeldSession {
    pub header: v1::SessionHeader,
    /// Shared with the turns running on it: a turn gets a handle, not a copy.
    pub transcript: Transcript,
}

/// The sessions this worker holds transcript for, shared by the turn tasks.
#[derive(Debug, Clone, Default)]
pub struct Held(Arc<Mutex<HashMap<String, HeldSession>>>);

impl Held {
    /// The cursors a Hello reports.
    pub fn cursors(&self) -> Vec<v1::SessionCursor> {
        let held = self.0.lock().expect("held lock");
        held.iter()
            .map(|(id, s)| v1::SessionCursor {
                session_id: id.clone(),
                seq: s.transcript.len() as u64,
            })
            .collect()
    }

    /// Applies a turn request's header and delta; returns the full context for the brain,
    /// or why the delta does not fit what this worker holds. Consumes the request so that
    /// its wire copy of the delta is freed now, not kept beside the held entries for as
    /// long as the brain thinks.
    pub fn absorb(&self, request: v1::TurnRequest, role: &str) -> Result<TurnContext, String> {
        let turn = request.turn.ok_or("turn request without a turn id")?;
        let phase = agentmesh_proto::phase_from_wire(turn.phase)
            .ok_or_else(|| format!("unknown phase {}", turn.phase))?;
        let mut held = self.0.lock().expect("held lock");
        if let Some(header) = request.session {
            held.entry(turn.session_id.clone()).or_default().header = header;
        }
        let session = held
            .get_mut(&turn.session_id)
            .ok_or_else(|| format!("unknown session {}: no header received", turn.session_id))?;
        // Room for exactly what arrives: a held transcript grows a phase at a time and
        // lives as long as its session, so doubling's spare slots (up to half of the
        // entries' ~200 bytes each) would be held by every session for its whole life.
        let have = session.transcript.len() as u64;
        let fresh = request.delta.iter().filter(|e| e.seq > have).count();
        if fresh > 0 {
            session.transcript.entries_mut().reserve_exact(fresh);
        }
        for wire in request.delta {
            let have = session.transcript.len() as u64;
            if wire.seq <= have {
                continue; // already held: the coordinator resent from an older cursor
            }
            if wire.seq != have + 1 {
                return Err(format!(
                    "transcript gap: hold {have} entries, delta continues at {}",
                    wire.seq
                ));
            }
            session.transcript.push(Entry::try_from(wire)?);
        }
        Ok(TurnContext {
            task: session.header.task.clone(),
            roles: session.header.roles.clone(),
            max_rounds: session.header.max_rounds,
            role: role.to_string(),
            round: turn.round,
            phase,
            attempt: turn.attempt,
            transcript: session.transcript.clone(),
            proposal_version: request.proposal_version,
            proposal_hash: request.proposal_hash,
            session_id: turn.session_id,
        })
    }

    pub fn forget(&self, session_id: &str) {
        self.0.lock().expect("held lock").remove(session_id);
    }

    pub fn len(&self) -> usize {
        self.0.lock().expect("held lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counts running turns; shutdown waits for it to reach zero.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

struct TurnGuard(Arc<InFlight>);

impl TurnGuard {
    fn new(in_flight: &Arc<InFlight>) -> Self {
        in_flight.count.fetch_add(1, Ordering::SeqCst);
        metrics::MEASURES.turns_in_flight.inc();
        TurnGuard(in_flight.clone())
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        metrics::MEASURES.turns_in_flight.dec();
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// How often a worker asks again while no coordinator is ready to lead: an election
/// settles within a lease TTL (2 s by default), so a short, steady poll finds the new
/// leader at once, where a growing back-off would leave the role out for many seconds.
const LEADER_POLL: Duration = Duration::from_millis(250);

/// The coordinator to connect to: the elected leader in cluster mode (`None` while none
/// is elected or etcd cannot say), else the flag.
async fn find_coordinator(config: &WorkerConfig) -> Option<String> {
    let Some(election) = &config.leader_lookup else {
        return Some(config.coordinator.clone());
    };
    match election.leader().await {
        Ok(Some(leader)) => Some(leader.grpc),
        Ok(None) => {
            tracing::info!("no coordinator leads yet; waiting for the election");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot look up the leader; asking again");
            None
        }
    }
}

/// Why one connection ended.
enum Ended {
    /// A standby named the leader.
    Redirected(String),
    /// No coordinator is ready to lead yet (an election is settling, or the one named
    /// leader has not taken office): ask again shortly, without backing off.
    NotReady(String),
    /// Shutdown requested and drained: stop for good.
    Drained,
    /// The stream broke or could not be opened: reconnect.
    Broken(String),
}

/// Runs the worker until `shutdown` turns true and its turns are drained.
pub async fn run(
    config: WorkerConfig,
    brain: Arc<dyn Brain>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let held = Held::default();
    let in_flight = Arc::new(InFlight::default());
    let mut backoff =
        Backoff::new(config.backoff_initial, config.backoff_max).with_jitter(RECONNECT_JITTER);
    // A standby's refusal names the leader: try it next, before asking the election.
    let mut redirect: Option<String> = None;
    // The coordinator the last attempt went to: a new one gets a fresh back-off.
    let mut last_target: Option<String> = None;
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let target = match redirect.take() {
            Some(url) => Some(url),
            None => find_coordinator(&config).await,
        };
        let Some(target) = target else {
            tokio::select! {
                () = tokio::time::sleep(LEADER_POLL) => {}
                _ = shutdown.wait_for(|s| *s) => return Ok(()),
            }
            continue;
        };
        if last_target.as_ref() != Some(&target) {
            backoff.reset();
            last_target = Some(target.clone());
        }
        let ended = connect_and_serve(
            &config,
            &target,
            &brain,
            &held,
            &in_flight,
            &mut shutdown,
            &mut backoff,
        )
        .await;
        match ended {
            Ended::Drained => return Ok(()),
            Ended::Redirected(url) => {
                tracing::info!(from = %target, to = %url, "redirected to the leader");
                redirect = Some(url);
            }
            Ended::NotReady(why) => {
                tracing::info!(coordinator = %target, %why, "no leader ready yet; asking again shortly");
                tokio::select! {
                    () = tokio::time::sleep(LEADER_POLL) => {}
                    _ = shutdown.wait_for(|s| *s) => return Ok(()),
                }
            }
            Ended::Broken(why) => {
                let delay = backoff.next_delay();
                tracing::warn!(coordinator = %target, %why, ?delay, "disconnected; reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait_for(|s| *s) => return Ok(()),
                }
            }
        }
    }
}

async fn connect_and_serve(
    config: &WorkerConfig,
    target: &str,
    brain: &Arc<dyn Brain>,
    held: &Held,
    in_flight: &Arc<InFlight>,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> Ended {
    let endpoint = match config.credentials.endpoint(target) {
        Ok(e) => e
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(10))
            .initial_stream_window_size(RECEIVE_WINDOW_BYTES)
            .initial_connection_window_size(RECEIVE_WINDOW_BYTES),
        Err(e) => return Ended::Broken(format!("bad coordinator URL: {e}")),
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => return Ended::Broken(format!("connect: {e}")),
    };
    let mut client = WorkerServiceClient::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    let (out_tx, out_rx) = mpsc::channel::<WorkerMessage>(256);
    let hello = v1::Hello {
        role: config.role.clone(),
        worker_id: config.worker_id.clone(),
        capacity: config.capacity,
        version: env!("CARGO_PKG_VERSION").to_string(),
        cursors: held.cursors(),
        public_key: config
            .signing_key
            .as_ref()
            .map_or(Vec::new(), |k| k.public().0.to_vec()),
    };
    let _ = out_tx
        .send(WorkerMessage {
            msg: Some(worker_message::Msg::Hello(hello)),
        })
        .await;
    // Who we are: the role (the coordinator authorizes it before the stream opens) and
    // the token, read again for every connection so a rotated file takes effect.
    let mut attach = tonic::Request::new(ReceiverStream::new(out_rx));
    match tonic::metadata::MetadataValue::try_from(config.role.as_str()) {
        Ok(role) => {
            attach
                .metadata_mut()
                .insert(agentmesh_discovery::ROLE_METADATA, role);
        }
        Err(_) => return Ended::Broken(format!("role {:?} is not valid metadata", config.role)),
    }
    match config.credentials.authorization() {
        Ok(Some(token)) => {
            attach.metadata_mut().insert("authorization", token);
        }
        Ok(None) => {}
        Err(why) => return Ended::Broken(why),
    }
    let mut inbound = match client.attach(attach).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            let named = status
                .metadata()
                .get(LEADER_METADATA)
                .and_then(|v| v.to_str().ok());
            let why = format!("attach: {:?}: {}", status.code(), status.message());
            return match named {
                Some(leader) if leader != target => Ended::Redirected(leader.to_string()),
                // Named itself (it won, but has not taken office yet), or a standby with
                // no leader to name: the election is settling.
                Some(_) => Ended::NotReady(why),
                None if status.code() == tonic::Code::Unavailable
                    && config.leader_lookup.is_some() =>
                {
                    Ended::NotReady(why)
                }
                None => Ended::Broken(why),
            };
        }
    };

    let mut heartbeat = tokio::time::interval(Duration::from_secs(2));
    let mut draining = false;
    // The largest message the coordinator takes, from its Welcome (0: it did not say).
    let mut max_message_bytes = 0u64;
    loop {
        tokio::select! {
            message = inbound.message() => {
                let message = match message {
                    Ok(Some(m)) => m,
                    Ok(None) => return Ended::Broken("the coordinator closed the stream".into()),
                    Err(status) => return Ended::Broken(format!("{:?}: {}", status.code(), status.message())),
                };
                match message.msg {
                    Some(coordinator_message::Msg::Welcome(welcome)) => {
                        backoff.reset();
                        let every = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(100)));
                        heartbeat = tokio::time::interval(every);
                        max_message_bytes = welcome.max_message_bytes;
                        tracing::info!(coordinator = %welcome.coordinator_id, role = %config.role, id = %config.worker_id, "joined the mesh");
                    }
                    Some(coordinator_message::Msg::Turn(request)) => {
                        if draining {
                            // Leaving soon: the turn is reassigned to a replica once we go.
                            continue;
                        }
                        start_turn(config, brain, held, in_flight, request, max_message_bytes, out_tx.clone());
                    }
                    Some(coordinator_message::Msg::SessionEnd(end)) => {
                        held.forget(&end.session_id);
                        metrics::MEASURES.sessions_held.set(held.len() as i64);
                        // `held`: the transcripts this worker still keeps (tests watch it
                        // return to 0 once every session it took part in has ended).
                        tracing::info!(session = %end.session_id, status = agentmesh_proto::status_name(end.status), held = held.len(), "session ended");
                        if held.is_empty() {
                            return_freed_memory();
                        }
                    }
                    Some(coordinator_message::Msg::Ack(ack)) if ack.code != 0 => {
                        let turn = ack.turn.unwrap_or_default();
                        let code = tonic::Code::from_i32(ack.code);
                        metrics::MEASURES.turn(&config.role, "refused", &format!("{code:?}"));
                        tracing::warn!(session = %turn.session_id, round = turn.round, code = ack.code, message = %ack.message, "result refused");
                    }
                    Some(coordinator_message::Msg::Ack(ack)) => {
                        // One stable line per accepted result (seq 0: a failure report
                        // was taken): `mesh-chaos` checks each against the transcript.
                        let turn = ack.turn.unwrap_or_default();
                        // seq 0: a failure report was taken, counted when it was sent.
                        if ack.seq > 0 {
                            let outcome = if ack.duplicate { "duplicate" } else { "accepted" };
                            metrics::MEASURES.turn(&config.role, outcome, "");
                        }
                        let phase = agentmesh_proto::phase_from_wire(turn.phase).map_or("UNSPECIFIED", |p| p.as_str());
                        tracing::info!(session = %turn.session_id, seq = ack.seq, round = turn.round, phase = %phase, role = %turn.role, attempt = turn.attempt, worker = %config.worker_id, duplicate = ack.duplicate, "result acknowledged");
                    }
                    None => {}
                }
            }
            _ = heartbeat.tick() => {
                let _ = out_tx.send(heartbeat_message()).await;
            }
            _ = shutdown.wait_for(|s| *s), if !draining => {
                draining = true;
                tracing::info!(in_flight = in_flight.count.load(Ordering::SeqCst), grace = ?config.grace, "draining");
                let _ = out_tx.send(WorkerMessage { msg: Some(worker_message::Msg::Draining(v1::Draining {})) }).await;
            }
            () = wait_idle(in_flight, config.grace), if draining => {
                // In-flight turns are done (or the grace period is over). Give their
                // results' acks a moment to arrive, then leave by closing our side.
                tokio::time::sleep(Duration::from_millis(100)).await;
                tracing::info!("drained; leaving the mesh");
                return Ended::Drained;
            }
        }
    }
}

async fn wait_idle(in_flight: &InFlight, grace: Duration) {
    let idle = async {
        loop {
            let notified = in_flight.idle.notified();
            if in_flight.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    };
    let _ = tokio::time::timeout(grace, idle).await;
}

/// Hands the pages of freed heap memory back to the operating system.
///
/// Why: glibc shrinks the heap only from its top, so the pages of transcripts freed below
/// a chunk that is still live stay resident: after a burst of 100 sessions a worker kept
/// its peak footprint with nothing held. Called only when the last held session has
/// ended, so an idle worker shrinks back while a busy one, which would reuse that memory
/// for its next session at once, never pays for the walk over the heap.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn heartbeat_message() -> WorkerMessage {
    WorkerMessage {
        msg: Some(worker_message::Msg::Heartbeat(v1::Heartbeat {})),
    }
}

/// Starts one turn: absorbs its delta now, then thinks and answers in a task of its own.
///
/// Absorbing here, on the connection loop, applies deltas in the order they arrived and
/// frees each request's wire copy of the entries before the next message is read. Left to
/// the turn tasks, a burst of requests (100 sessions reaching REVIEW together, each
/// carrying the new proposal) waited decoded in the task queue beside the held copies.
fn start_turn(
    config: &WorkerConfig,
    brain: &Arc<dyn Brain>,
    held: &Held,
    in_flight: &Arc<InFlight>,
    request: v1::TurnRequest,
    max_message_bytes: u64,
    out: mpsc::Sender<WorkerMessage>,
) {
    let guard = TurnGuard::new(in_flight);
    let turn = request.turn.clone().unwrap_or_default();
    let deadline_ms = request.deadline_ms;
    let span = trace::turn_span(
        &config.role,
        &config.worker_id,
        brain.name(),
        &turn,
        &request.trace_context,
    );
    let absorbed = held.absorb(request, &config.role);
    metrics::MEASURES.sessions_held.set(held.len() as i64);
    let role = config.role.clone();
    let brain = brain.clone();
    let signing_key = config.signing_key.clone();
    let task = async move {
        let _guard = guard;
        let message = match absorbed {
            Err(why) => failed(turn, why),
            Ok(context) => {
                let reviewed = context.proposal_hash.clone();
                let budget =
                    Duration::from_millis(deadline_ms.saturating_sub(now_ms()).max(1_000) as u64);
                match tokio::time::timeout(budget, brain.think(context)).await {
                    Ok(Ok(mut reply)) => {
                        if let Some(key) = &signing_key {
                            sign(key, &turn, &reviewed, &mut reply);
                        }
                        metrics::MEASURES.tokens(reply.prompt_tokens, reply.completion_tokens);
                        WorkerMessage {
                            msg: Some(worker_message::Msg::Result(v1::TurnResult {
                                turn: Some(turn),
                                entry_type: reply
                                    .entry_type
                                    .map_or(0, |t| v1::EntryType::from(t) as i32),
                                content: reply.content,
                                verdict: reply.verdict.map_or(0, |v| v1::Verdict::from(v) as i32),
                                concerns: reply.concerns,
                                proposal_hash: reply.proposal_hash,
                                signature: reply.signature,
                                prompt_tokens: reply.prompt_tokens,
                                completion_tokens: reply.completion_tokens,
                            })),
                        }
                    }
                    Ok(Err(e)) => failed(turn, format!("brain {}: {e}", brain.name())),
                    Err(_) => failed(
                        turn,
                        format!("brain {} exceeded the turn deadline", brain.name()),
                    ),
                }
            }
        };
        let message = fit_message_limit(message, max_message_bytes);
        if matches!(message.msg, Some(worker_message::Msg::Failed(_))) {
            metrics::MEASURES.turn(&role, "failed", "");
        }
        // If the stream broke meanwhile this fails: the coordinator has reassigned the
        // turn under a new attempt, so the result would be stale anyway.
        trace::record_outcome(&tracing::Span::current(), &message);
        let _ = out.send(message).await;
    };
    tokio::spawn(tracing::Instrument::instrument(task, span));
}

/// Signs `reply` to `turn` over the statement its entry will make (`reviewed`: the hash
/// the turn request named for review): the session, the turn's round, phase, role and
/// attempt, and what the reply says — so it cannot be replayed into another session,
/// round or attempt.
pub fn sign(
    key: &agentmesh_core::trust::KeyPair,
    turn: &v1::TurnId,
    reviewed: &str,
    reply: &mut agentmesh_core::Reply,
) {
    // A turn id whose phase does not parse is refused by the coordinator whatever it
    // carries; it is sent unsigned.
    if let Ok((session_id, key_turn)) = agentmesh_proto::turn_from_wire(turn) {
        key.sign_reply(&session_id, &key_turn, reviewed, reply);
    }
}

/// The message to send for a finished turn, given the coordinator's limit (`limit`
/// bytes, 0 for none): `message` itself if its encoding fits, else a TurnFailed naming
/// both sizes. The coordinator cannot decode a larger message and would end the stream,
/// taking every session this worker holds with it; a failed turn costs only this turn
/// (the coordinator retries it or fails the session with this reason).
pub fn fit_message_limit(message: WorkerMessage, limit: u64) -> WorkerMessage {
    use prost::Message;
    let size = message.encoded_len() as u64;
    if limit == 0 || size <= limit {
        return message;
    }
    match message.msg {
        Some(worker_message::Msg::Result(result)) => failed(
            result.turn.unwrap_or_default(),
            format!("reply of {size} bytes exceeds the coordinator's {limit}-byte message limit"),
        ),
        // A failure report is a turn id and a short reason; nothing else is this large.
        msg => WorkerMessage { msg },
    }
}

fn failed(turn: v1::TurnId, reason: String) -> WorkerMessage {
    tracing::warn!(session = %turn.session_id, %reason, "turn failed");
    WorkerMessage {
        msg: Some(worker_message::Msg::Failed(v1::TurnFailed {
            turn: Some(turn),
            reason,
        })),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result_message(content: String) -> WorkerMessage {
        WorkerMessage {
            msg: Some(worker_message::Msg::Result(v1::TurnResult {
                turn: Some(v1::TurnId {
                    session_id: "s1".into(),
                    round: 2,
                    phase: v1::Phase::Contribute as i32,
                    role: "backend".into(),
                    attempt: 1,
                }),
                entry_type: v1::EntryType::Analysis as i32,
                content,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_result_too_large_for_the_coordinator_becomes_a_turn_failure() {
        use prost::Message;
        let fits = result_message("x".repeat(100));
        let size = fits.encoded_len() as u64;
        // Exactly at the limit, and with no limit announced, the result goes as it is.
        assert_eq!(fit_message_limit(fits.clone(), size), fits);
        assert_eq!(fit_message_limit(fits.clone(), 0), fits);

        let huge = result_message("x".repeat(5000));
        let huge_size = huge.encoded_len();
        let sent = fit_message_limit(huge, 1024);
        let Some(worker_message::Msg::Failed(failed)) = sent.msg else {
            panic!("expected a TurnFailed, got {sent:?}");
        };
        assert_eq!(
            failed.reason,
            format!("reply of {huge_size} bytes exceeds the coordinator's 1024-byte message limit")
        );
        let turn = failed.turn.clone().unwrap();
        assert_eq!(
            (turn.session_id.as_str(), turn.round, turn.attempt),
            ("s1", 2, 1)
        );
        assert!(
            (WorkerMessage {
                msg: Some(worker_message::Msg::Failed(failed.clone()))
            })
            .encoded_len()
                <= 1024
        );
    }

    fn wire_entry(seq: u64) -> v1::Entry {
        v1::Entry {
            seq,
            round: 1,
            phase: v1::Phase::Contribute as i32,
            role: "backend".into(),
            entry_type: v1::EntryType::Analysis as i32,
            content: format!("entry {seq}"),
            ..Default::default()
        }
    }

    fn request(delta: Vec<v1::Entry>, header: bool) -> v1::TurnRequest {
        v1::TurnRequest {
            turn: Some(v1::TurnId {
                session_id: "s1".into(),
                round: 1,
                phase: v1::Phase::Contribute as i32,
                role: "backend".into(),
                attempt: 1,
            }),
            session: header.then(|| v1::SessionHeader {
                session_id: "s1".into(),
                task: "build it".into(),
                roles: vec!["supervisor".into(), "backend".into()],
                max_rounds: 3,
            }),
            delta,
            ..Default::default()
        }
    }

    #[test]
    fn deltas_extend_the_held_transcript_and_gaps_are_refused() {
        let held = Held::default();
        assert!(
            held.absorb(request(vec![wire_entry(1)], false), "backend")
                .is_err(),
            "no header yet"
        );
        let ctx = held
            .absorb(request(vec![wire_entry(1), wire_entry(2)], true), "backend")
            .unwrap();
        assert_eq!(ctx.transcript.len(), 2);
        assert_eq!(ctx.task, "build it");
        // A resend from an older cursor overlaps: the overlap is skipped, not duplicated.
        let ctx = held
            .absorb(
                request(vec![wire_entry(2), wire_entry(3)], false),
                "backend",
            )
            .unwrap();
        assert_eq!(
            ctx.transcript.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let gap = held
            .absorb(request(vec![wire_entry(5)], false), "backend")
            .unwrap_err();
        assert!(gap.contains("gap"), "{gap}");
        assert_eq!(held.cursors()[0].seq, 3);
        held.forget("s1");
        assert!(held.is_empty());
    }

    #[test]
    fn held_transcripts_keep_no_spare_capacity() {
        // A held transcript lives as long as its session: room for entries that never
        // come would be held by every session a worker serves.
        let held = Held::default();
        let deltas = [
            (vec![wire_entry(1), wire_entry(2), wire_entry(3)], true),
            // A resend from an older cursor: only entry 4 is new.
            (vec![wire_entry(3), wire_entry(4)], false),
            (vec![wire_entry(5)], false),
            (vec![], false),
        ];
        for (delta, header) in deltas {
            drop(held.absorb(request(delta, header), "backend").unwrap());
            let mut sessions = held.0.lock().unwrap();
            let entries = sessions.get_mut("s1").unwrap().transcript.entries_mut();
            assert_eq!(entries.capacity(), entries.len());
        }
        assert_eq!(held.cursors()[0].seq, 5);
    }

    #[test]
    fn turns_share_the_held_transcript_and_keep_their_snapshot() {
        let held = Held::default();
        let first = held
            .absorb(request(vec![wire_entry(1)], true), "backend")
            .unwrap();
        let second = held
            .absorb(request(vec![wire_entry(2)], false), "backend")
            .unwrap();
        // The first turn's view did not grow under it.
        assert_eq!(first.transcript.len(), 1);
        assert_eq!(second.transcript.len(), 2);
        // A turn with nothing new gets the very entries the held session has: no copy.
        let third = held.absorb(request(vec![], false), "backend").unwrap();
        assert!(std::ptr::eq(
            second.transcript.as_ptr(),
            third.transcript.as_ptr()
        ));
    }
}
