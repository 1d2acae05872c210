//! Ordered event logs: one per session (behind `WatchSession` and the session SSE
//! stream) and one for the whole mesh (behind `WatchMesh` and the mesh SSE stream).
//!
//! A session's log holds its durable events — entries and status changes — with a
//! per-session seq, gapless from 1. The log is append-only and each watcher reads it at
//! its own pace from its own cursor, so:
//! - a watcher that resumes with `from_seq` sees every later event exactly once;
//! - history and live events come from the same log, so there is no gap between them;
//! - a slow watcher never slows the session: the session only appends and bumps a
//!   `watch` counter, which never blocks.
//!
//! Progress hints (who has answered so far in a phase) are ephemeral: they go out on a
//! broadcast channel that drops hints for a watcher that lags, and are never replayed.
//!
//! The mesh log is a bounded ring: a watcher that asks for events it no longer holds
//! is sent a `resync` snapshot instead — told, never silently skipped.
//!
//! Session events are kept as [`SharedEvent`]s: the seq and the event as a gRPC message
//! on the wire, made once when the event is logged. Fifty gRPC watchers of a session
//! then share those bytes instead of making fifty copies and fifty encodings, and the log
//! holds each event in its compact wire form (the few SSE watchers decode it).
//!
//! # The one exception to "wire types stay at the edge"
//!
//! Everywhere else, wire types are made and read only by the edges (`edge::grpc`,
//! `edge::http`). The event logs hold wire bytes on purpose (above), so this module is
//! where session and mesh events become wire messages: its callers hand it domain values
//! (entries, statuses, summaries, workers) and never build a wire type themselves.

use crate::registry::WorkerInfo;
use agentmesh_core::{Effect, Entry, SessionSummary, Status};
use agentmesh_proto::v1::{self, MeshEvent, SessionEvent};
use bytes::Bytes;
use prost::Message;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

/// A session event as every watcher receives it. Cloning shares the bytes.
#[derive(Debug, Clone)]
pub(crate) struct SharedEvent {
    pub seq: u64,
    /// The `SessionEvent` as one gRPC message on the wire: the 5-byte length prefix
    /// (uncompressed), then the protobuf. A gRPC watcher is sent these bytes as they are.
    pub grpc_frame: Bytes,
}

/// The gRPC length prefix: a compression flag byte and a big-endian u32 length.
pub(crate) const GRPC_PREFIX_LEN: usize = 5;

impl SharedEvent {
    pub fn new(event: SessionEvent) -> SharedEvent {
        let len = event.encoded_len();
        let mut frame = Vec::with_capacity(GRPC_PREFIX_LEN + len);
        frame.push(0); // not compressed
        frame.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        event
            .encode(&mut frame)
            .expect("the frame has room for the event");
        SharedEvent {
            seq: event.seq,
            grpc_frame: Bytes::from(frame),
        }
    }

    /// The event itself (for watchers that render it, such as SSE).
    pub fn decode(&self) -> SessionEvent {
        SessionEvent::decode(self.grpc_frame.slice(GRPC_PREFIX_LEN..))
            .expect("the log encoded this event itself")
    }
}

/// Hints a lagging watcher may find queued before it skips to the newest.
const PROGRESS_SLOTS: usize = 4;

pub(crate) struct EventLog {
    events: Mutex<Vec<SharedEvent>>,
    /// (number of events, closed) — watchers wait on changes of this.
    len: watch::Sender<(u64, bool)>,
    progress: broadcast::Sender<SharedEvent>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            events: Mutex::new(Vec::new()),
            len: watch::channel((0, false)).0,
            // Only the newest hint matters (a watcher skips the older ones it finds), and
            // every session has one of these: a few slots, not dozens.
            progress: broadcast::channel(PROGRESS_SLOTS).0,
        }
    }
}

impl EventLog {
    /// Appends a durable event, stamping its seq.
    pub fn push(
        &self,
        session_id: &str,
        timestamp_ms: i64,
        event: v1::session_event::Event,
        session: Option<v1::Session>,
    ) {
        self.append(session_id, timestamp_ms, [(event, session)]);
    }

    /// Appends durable events in order (seqs stamped as by [`EventLog::push`]) and wakes
    /// the watchers once for all of them, so a phase's entries go out as one batch.
    pub fn push_all(
        &self,
        session_id: &str,
        timestamp_ms: i64,
        events: impl IntoIterator<Item = v1::session_event::Event>,
    ) {
        self.append(
            session_id,
            timestamp_ms,
            events.into_iter().map(|event| (event, None)),
        );
    }

    /// Stamps and appends events (each with its session snapshot, if any), then wakes
    /// the watchers once, if anything was appended.
    fn append(
        &self,
        session_id: &str,
        timestamp_ms: i64,
        events: impl IntoIterator<Item = (v1::session_event::Event, Option<v1::Session>)>,
    ) {
        let mut log = self.events.lock().expect("event log lock");
        let before = log.len();
        for (event, session) in events {
            let seq = log.len() as u64 + 1;
            log.push(SharedEvent::new(SessionEvent {
                seq,
                session_id: session_id.to_string(),
                timestamp_ms,
                event: Some(event),
                session,
                ephemeral: false,
            }));
        }
        if log.len() > before {
            let closed = self.len.borrow().1;
            self.len.send_replace((log.len() as u64, closed));
        }
    }

    /// Appends transcript entries, as one batch.
    pub fn push_entries<'a>(
        &self,
        session_id: &str,
        timestamp_ms: i64,
        entries: impl IntoIterator<Item = &'a Entry>,
    ) {
        self.push_all(
            session_id,
            timestamp_ms,
            entries
                .into_iter()
                .map(|entry| v1::session_event::Event::Entry(v1::Entry::from(entry))),
        );
    }

    /// Appends a status change, with the session as it is now.
    pub fn push_status(&self, summary: &SessionSummary, timestamp_ms: i64, awaiting: Vec<String>) {
        self.push(
            &summary.id,
            timestamp_ms,
            status_event(summary.status, summary.round, &summary.reason, awaiting),
            Some(v1::Session::from(summary)),
        );
    }

    /// Publishes a progress hint: who has answered so far in the current phase.
    pub fn hint_progress(
        &self,
        session_id: &str,
        timestamp_ms: i64,
        status: Status,
        round: u32,
        answered: Vec<String>,
        awaiting: Vec<String>,
    ) {
        self.hint(
            session_id,
            timestamp_ms,
            v1::Progress {
                status: v1::SessionStatus::from(status) as i32,
                round,
                answered,
                awaiting,
            },
        );
    }

    /// Publishes a progress hint to whoever is watching now.
    pub fn hint(&self, session_id: &str, timestamp_ms: i64, progress: v1::Progress) {
        let _ = self.progress.send(SharedEvent::new(SessionEvent {
            seq: self.last_seq(),
            session_id: session_id.to_string(),
            timestamp_ms,
            event: Some(v1::session_event::Event::Progress(progress)),
            session: None,
            ephemeral: true,
        }));
    }

    /// Whether anyone would receive a progress hint now.
    pub fn has_hint_listeners(&self) -> bool {
        self.progress.receiver_count() > 0
    }

    /// Marks the log complete: watchers end once they have read everything.
    pub fn close(&self) {
        let events = self.events.lock().expect("event log lock");
        self.len.send_replace((events.len() as u64, true));
    }

    pub fn last_seq(&self) -> u64 {
        self.len.borrow().0
    }

    /// Events with `seq >= from_seq` (at most `limit`), and whether the log is closed.
    pub fn read(&self, from_seq: u64, limit: usize) -> (Vec<SharedEvent>, bool) {
        let events = self.events.lock().expect("event log lock");
        let skip = from_seq.saturating_sub(1) as usize;
        let batch: Vec<_> = events.iter().skip(skip).take(limit).cloned().collect();
        (batch, self.len.borrow().1)
    }

    pub fn subscribe(&self) -> watch::Receiver<(u64, bool)> {
        self.len.subscribe()
    }

    pub fn subscribe_progress(&self) -> broadcast::Receiver<SharedEvent> {
        self.progress.subscribe()
    }
}

fn status_event(
    status: Status,
    round: u32,
    reason: &str,
    awaiting: Vec<String>,
) -> v1::session_event::Event {
    v1::session_event::Event::Status(v1::StatusChange {
        status: v1::SessionStatus::from(status) as i32,
        round,
        reason: if status.is_terminal() {
            reason.to_string()
        } else {
            String::new()
        },
        awaiting,
    })
}

/// A session event log holding `history` (entries and status changes, in order): what a
/// new leader, or a watcher of a session no longer held in memory, rebuilds from the
/// transcript. When the stored `header` says more than the transcript does (a cancelled
/// or failed session), the log ends with that status.
pub(crate) fn event_log_of(
    replayed: &SessionSummary,
    history: &[Effect],
    header: &SessionSummary,
) -> EventLog {
    let log = EventLog::default();
    for effect in history {
        match effect {
            Effect::Appended(entry) => log.push_entries(&replayed.id, entry.timestamp_ms, [entry]),
            Effect::StatusChanged { status, round } => log.push(
                &replayed.id,
                replayed.updated_ms,
                status_event(*status, *round, &replayed.reason, Vec::new()),
                None,
            ),
            _ => {}
        }
    }
    if replayed.status != header.status {
        log.push_status(header, header.updated_ms, Vec::new());
    }
    log
}

/// A worker as the wire shows it (mesh events, resync snapshots, the gRPC edge).
pub(crate) fn wire_worker(w: &WorkerInfo) -> v1::WorkerInfo {
    v1::WorkerInfo {
        worker_id: w.worker_id.clone(),
        role: w.role.clone(),
        capacity: w.capacity,
        load: w.load,
        version: w.version.clone(),
        connected_ms: w.connected_ms,
        draining: w.draining,
        turns_completed: w.turns_completed,
        connected: w.connected,
        leased: w.leased,
        address: w.address.clone(),
    }
}

/// The session event logs a coordinator holds in memory: every running session's, and
/// the most recently ended ones'. An older ended session's log is dropped; a watcher that
/// asks for it gets one rebuilt from the store (`Mesh::session_log`), with the same seqs,
/// because a session's durable events are a function of its transcript. So memory stays
/// bounded however long the coordinator runs, and nothing is lost.
pub(crate) struct SessionLogs {
    by_id: HashMap<String, Arc<EventLog>>,
    /// Ended sessions whose logs are kept, oldest first.
    ended: VecDeque<String>,
    ended_kept: usize,
}

impl SessionLogs {
    pub fn new(ended_kept: usize) -> SessionLogs {
        SessionLogs {
            by_id: HashMap::new(),
            ended: VecDeque::new(),
            ended_kept,
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<EventLog>> {
        self.by_id.get(id).cloned()
    }

    /// Holds the log of a running session.
    pub fn insert_running(&mut self, id: &str, log: Arc<EventLog>) {
        self.by_id.insert(id.to_string(), log);
    }

    /// Holds the log of an ended session (just ended, or rebuilt from the store), dropping
    /// the oldest ended ones beyond the limit.
    pub fn insert_ended(&mut self, id: &str, log: Arc<EventLog>) {
        self.by_id.insert(id.to_string(), log);
        if !self.ended.iter().any(|ended| ended == id) {
            self.ended.push_back(id.to_string());
        }
        while self.ended.len() > self.ended_kept {
            if let Some(oldest) = self.ended.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
    }

    /// Marks a running session's log as ended (see [`SessionLogs::insert_ended`]).
    pub fn ended(&mut self, id: &str) {
        if let Some(log) = self.by_id.get(id).cloned() {
            self.insert_ended(id, log);
        }
    }

    /// Empties the map, handing back every log (the term ended).
    pub fn drain(&mut self) -> impl Iterator<Item = Arc<EventLog>> + '_ {
        self.ended.clear();
        self.by_id.drain().map(|(_, log)| log)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// How many mesh events are kept for watchers that resume.
const MESH_LOG_CAPACITY: usize = 4096;

/// The mesh-wide event log of one leadership term.
pub(crate) struct MeshLog {
    inner: Mutex<MeshInner>,
    last: watch::Sender<u64>,
}

struct MeshInner {
    /// The seq of `events[0]`.
    first_seq: u64,
    events: VecDeque<MeshEvent>,
}

impl MeshLog {
    /// A log whose first event gets `first_seq`.
    pub fn new(first_seq: u64) -> MeshLog {
        MeshLog {
            inner: Mutex::new(MeshInner {
                first_seq,
                events: VecDeque::new(),
            }),
            last: watch::channel(first_seq - 1).0,
        }
    }

    /// A session was created.
    pub fn session_created(&self, timestamp_ms: i64, summary: &SessionSummary) {
        self.push(
            timestamp_ms,
            v1::mesh_event::Event::SessionCreated(v1::Session::from(summary)),
        );
    }

    /// A session moved to another phase, or ended.
    pub fn session_changed(&self, timestamp_ms: i64, summary: &SessionSummary) {
        let snapshot = v1::Session::from(summary);
        self.push(
            timestamp_ms,
            if summary.status.is_terminal() {
                v1::mesh_event::Event::SessionEnded(snapshot)
            } else {
                v1::mesh_event::Event::PhaseChanged(snapshot)
            },
        );
    }

    pub fn worker_joined(&self, timestamp_ms: i64, worker: &WorkerInfo) {
        self.push(
            timestamp_ms,
            v1::mesh_event::Event::WorkerJoined(wire_worker(worker)),
        );
    }

    pub fn worker_left(&self, timestamp_ms: i64, worker_id: &str, role: &str) {
        self.push(
            timestamp_ms,
            v1::mesh_event::Event::WorkerLeft(v1::WorkerLeft {
                worker_id: worker_id.to_string(),
                role: role.to_string(),
            }),
        );
    }

    pub fn push(&self, timestamp_ms: i64, event: v1::mesh_event::Event) {
        let mut inner = self.inner.lock().expect("mesh log lock");
        let seq = inner.first_seq + inner.events.len() as u64;
        inner.events.push_back(MeshEvent {
            seq,
            timestamp_ms,
            event: Some(event),
        });
        if inner.events.len() > MESH_LOG_CAPACITY {
            inner.events.pop_front();
            inner.first_seq += 1;
        }
        self.last.send_replace(seq);
    }

    pub fn last_seq(&self) -> u64 {
        *self.last.borrow()
    }

    /// Events from `from_seq` (at most `limit`), or `None` if `from_seq` is older than
    /// the oldest event kept (the watcher must resync).
    pub fn read(&self, from_seq: u64, limit: usize) -> Option<Vec<MeshEvent>> {
        let inner = self.inner.lock().expect("mesh log lock");
        if from_seq < inner.first_seq {
            return None;
        }
        let skip = (from_seq - inner.first_seq) as usize;
        Some(
            inner
                .events
                .iter()
                .skip(skip)
                .take(limit)
                .cloned()
                .collect(),
        )
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.last.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn left(id: &str) -> v1::mesh_event::Event {
        v1::mesh_event::Event::WorkerLeft(v1::WorkerLeft {
            worker_id: id.into(),
            role: "backend".into(),
        })
    }

    #[test]
    fn only_the_newest_ended_logs_are_kept_and_running_ones_always_are() {
        let mut logs = SessionLogs::new(2);
        logs.insert_running("live", Arc::new(EventLog::default()));
        for id in ["a", "b", "c"] {
            logs.insert_running(id, Arc::new(EventLog::default()));
            logs.ended(id);
        }
        assert!(logs.get("a").is_none(), "the oldest ended log is dropped");
        assert!(logs.get("b").is_some() && logs.get("c").is_some());
        assert!(
            logs.get("live").is_some(),
            "a running session's log is never dropped"
        );
        // A rebuilt log of an ended session counts as ended, once.
        logs.insert_ended("a", Arc::new(EventLog::default()));
        logs.insert_ended("a", Arc::new(EventLog::default()));
        assert!(logs.get("b").is_none());
        assert_eq!(logs.len(), 3);
        assert_eq!(logs.drain().count(), 3);
        assert!(logs.is_empty());
    }

    #[test]
    fn the_mesh_log_is_bounded_and_says_when_a_watcher_must_resync() {
        let log = MeshLog::new(1000);
        assert_eq!(log.last_seq(), 999);
        assert_eq!(log.read(1000, 10).unwrap().len(), 0);
        for i in 0..MESH_LOG_CAPACITY + 10 {
            log.push(0, left(&format!("w{i}")));
        }
        assert_eq!(log.last_seq(), 1000 + MESH_LOG_CAPACITY as u64 + 9);
        assert!(
            log.read(1000, 10).is_none(),
            "the oldest events are gone: resync"
        );
        let tail = log.read(log.last_seq() - 1, 10).unwrap();
        assert_eq!(
            tail.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [log.last_seq() - 1, log.last_seq()]
        );
    }

    #[test]
    fn session_logs_are_gapless_and_hints_carry_the_last_durable_seq() {
        let log = EventLog::default();
        let mut hints = log.subscribe_progress();
        log.push(
            "s",
            1,
            v1::session_event::Event::Entry(v1::Entry::default()),
            None,
        );
        log.hint("s", 2, v1::Progress::default());
        log.push(
            "s",
            3,
            v1::session_event::Event::Entry(v1::Entry::default()),
            None,
        );
        let (events, closed) = log.read(1, 10);
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        assert!(!closed);
        let hint = hints.try_recv().unwrap();
        assert!(hint.decode().ephemeral);
        assert_eq!(hint.seq, 1);
        log.close();
        assert!(log.read(3, 10).1);
    }

    #[test]
    fn a_batch_continues_the_seqs_and_wakes_watchers_once() {
        let log = EventLog::default();
        let entry = || v1::session_event::Event::Entry(v1::Entry::default());
        log.push("s", 1, entry(), None);
        let mut changes = log.subscribe();
        changes.borrow_and_update();
        log.push_all("s", 2, [entry(), entry(), entry()]);
        assert!(changes.has_changed().unwrap());
        assert_eq!(changes.borrow_and_update().0, 4);
        let (events, _) = log.read(1, 10);
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        for shared in &events {
            let frame = &shared.grpc_frame;
            let len = u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize;
            assert_eq!((frame[0], len), (0, frame.len() - GRPC_PREFIX_LEN));
            let event = shared.decode();
            assert_eq!(event.seq, shared.seq, "the seq is the encoded event's");
            assert_eq!(event.session_id, "s");
            assert!(!event.ephemeral);
        }
        log.push_all("s", 3, []);
        assert!(
            !changes.has_changed().unwrap(),
            "an empty batch wakes no one"
        );
    }
}
