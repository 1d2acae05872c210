//! The ordered event log of one session, which `WatchSession` streams serve.
//!
//! Every entry and every status change becomes a [`SessionEvent`] with a per-session
//! seq, gapless from 1. The log is append-only and each watcher reads it at its own
//! pace from its own cursor, so:
//! - a watcher that resumes with `from_seq` sees every later event exactly once;
//! - history and live events come from the same log, so there is no gap between them;
//! - a slow watcher never slows the session: the session only appends and bumps a
//!   `watch` counter, which never blocks.

use agentmesh_proto::v1::{self, SessionEvent};
use std::sync::Mutex;
use tokio::sync::watch;

pub struct EventLog {
    events: Mutex<Vec<SessionEvent>>,
    /// (number of events, closed) — watchers wait on changes of this.
    len: watch::Sender<(u64, bool)>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            events: Mutex::new(Vec::new()),
            len: watch::channel((0, false)).0,
        }
    }
}

impl EventLog {
    /// Appends an event, stamping its seq.
    pub fn push(
        &self,
        session_id: &str,
        timestamp_ms: i64,
        event: v1::session_event::Event,
        session: Option<v1::Session>,
    ) {
        let mut events = self.events.lock().expect("event log lock");
        let seq = events.len() as u64 + 1;
        events.push(SessionEvent {
            seq,
            session_id: session_id.to_string(),
            timestamp_ms,
            event: Some(event),
            session,
        });
        let closed = self.len.borrow().1;
        self.len.send_replace((seq, closed));
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
    pub fn read(&self, from_seq: u64, limit: usize) -> (Vec<SessionEvent>, bool) {
        let events = self.events.lock().expect("event log lock");
        let skip = from_seq.saturating_sub(1) as usize;
        let batch: Vec<SessionEvent> = events.iter().skip(skip).take(limit).cloned().collect();
        (batch, self.len.borrow().1)
    }

    pub fn subscribe(&self) -> watch::Receiver<(u64, bool)> {
        self.len.subscribe()
    }
}
