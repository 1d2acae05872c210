//! Following a session live through `WatchSession`, surviving broken streams.
//!
//! Every event carries a per-session `seq`, gapless from 1. The follower remembers the
//! last seq it printed; when the stream breaks (the coordinator restarts, the network
//! drops, the coordinator closes the stream while shutting down) it opens a new
//! connection after a back-off and asks for `from_seq = last seen + 1`. Anything at or
//! below the last seen seq that a coordinator still sends is dropped, so no event is
//! printed twice and none is skipped.
//!
//! The pure bookkeeping lives in [`Tracker`]; [`follow`] adds the network and the clock.

use crate::client::{CliError, Client, Coordinator, error_chain};
use crate::render;
use agentmesh_core::Status;
use agentmesh_proto::v1::{self, session_event::Event};
use agentmesh_proto::{Backoff, status_from_wire};
use std::io::Write;
use std::time::{Duration, Instant};
use tonic::Code;

/// How long to wait before reconnecting, and for how long to keep trying.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Give up once the coordinator has been unreachable this long without a new event.
    pub give_up_after: Duration,
    /// Redraw the progress line in place (a terminal); otherwise print each one.
    pub live_progress: bool,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            give_up_after: Duration::from_secs(60),
            live_progress: false,
        }
    }
}

/// What one event means for the follower.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Already printed before a reconnect: ignore it.
    Duplicate,
    /// Who has answered so far in the current phase: redrawn in place on a terminal.
    Progress(String),
    /// A new event: print this line (`None` for an event kind this build does not know).
    Show(Option<String>),
    /// The terminal status event: print this line, then the outcome of `session` (the
    /// snapshot the event carried, if any).
    Ended {
        line: String,
        session: Option<Box<v1::Session>>,
    },
}

/// The follower's memory: the next seq it expects, across reconnects.
#[derive(Debug)]
pub struct Tracker {
    next_seq: u64,
    /// Redraw progress hints in place (stdout is a terminal).
    pub live_progress: bool,
    /// A progress line is on screen without a newline.
    progress_shown: bool,
}

impl Tracker {
    pub fn new(from_seq: u64) -> Tracker {
        Tracker {
            next_seq: from_seq.max(1),
            live_progress: false,
            progress_shown: false,
        }
    }

    /// The `from_seq` to ask for when (re)opening the watch.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn accept(&mut self, event: v1::SessionEvent) -> Step {
        if event.ephemeral {
            // A hint about the phase in progress; it does not move the resume point.
            return match event.event {
                Some(Event::Progress(progress)) => Step::Progress(render::progress_line(&progress)),
                _ => Step::Show(None),
            };
        }
        if event.seq < self.next_seq {
            return Step::Duplicate;
        }
        if event.seq > self.next_seq {
            // The contract says gapless; show what came rather than stall on it.
            tracing::warn!(
                expected = self.next_seq,
                got = event.seq,
                "events are missing from the watch stream"
            );
        }
        self.next_seq = event.seq + 1;
        match event.event {
            Some(Event::Entry(entry)) => Step::Show(Some(render::entry_line(&entry))),
            Some(Event::Status(change)) => {
                let line = render::status_line(&change);
                if status_from_wire(change.status).is_some_and(|s| s.is_terminal()) {
                    Step::Ended {
                        line,
                        session: event.session.map(Box::new),
                    }
                } else {
                    Step::Show(Some(line))
                }
            }
            Some(Event::Progress(_)) | None => Step::Show(None),
        }
    }
}

/// Codes a broken connection or a restarting coordinator produce. Anything else (the
/// session does not exist, a bad request) will not get better by asking again.
pub fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::ResourceExhausted
    )
}

/// Why one watch attempt stopped.
enum Interrupted {
    /// The session ended; this is its final state.
    Ended(Box<v1::Session>),
    /// The stream broke; worth another try.
    Broken(String),
}

/// Follows session `session_id` from `from_seq`, writing one line per event to `out`
/// and the outcome block at the end. Returns the session's final state.
///
/// `client` (from [`Coordinator::connect_watch`]), if given, serves the first attempt;
/// every other attempt opens a new connection, so a connection wedged by a restarted
/// coordinator is never reused.
pub async fn follow(
    coordinator: &Coordinator,
    mut client: Option<Client>,
    session_id: &str,
    from_seq: u64,
    options: &FollowOptions,
    out: &mut impl Write,
) -> Result<v1::Session, CliError> {
    let mut tracker = Tracker::new(from_seq);
    tracker.live_progress = options.live_progress;
    let mut backoff = Backoff::new(options.first_backoff, options.max_backoff);
    // When the current run of failures began; reset by every event received.
    let mut failing_since: Option<Instant> = None;
    loop {
        let attempt = match client.take() {
            Some(c) => Ok(c),
            None => coordinator.connect_watch().await,
        };
        let outcome = match attempt {
            Ok(mut c) => {
                let seen_before = tracker.next_seq();
                let result = watch_once(&mut c, session_id, &mut tracker, out).await;
                if tracker.next_seq() > seen_before {
                    failing_since = None;
                    backoff.reset();
                }
                match result? {
                    Interrupted::Ended(session) => {
                        out.write_all(render::outcome(&session).as_bytes())?;
                        out.flush()?;
                        return Ok(*session);
                    }
                    Interrupted::Broken(why) => why,
                }
            }
            Err(CliError::Connect { detail, .. }) => detail,
            // Mid-failover: the election names nobody yet.
            Err(CliError::NoLeader(why)) => why,
            Err(other) => return Err(other),
        };
        let since = *failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= options.give_up_after {
            return Err(CliError::Other(format!(
                "lost the watch of session {session_id} at {} for {}s; last error: {outcome}",
                coordinator.address(),
                options.give_up_after.as_secs()
            )));
        }
        let delay = backoff.next_delay();
        tracing::warn!(
            session = session_id,
            from_seq = tracker.next_seq(),
            retry_in_ms = delay.as_millis() as u64,
            "watch interrupted ({outcome}); reconnecting"
        );
        tokio::time::sleep(delay).await;
    }
}

/// One `WatchSession` call, read until the session ends or the stream breaks.
/// Permanent errors (NotFound, OutOfRange, ...) come back as `Err`.
async fn watch_once(
    client: &mut Client,
    session_id: &str,
    tracker: &mut Tracker,
    out: &mut impl Write,
) -> Result<Interrupted, CliError> {
    let request = v1::WatchSessionRequest {
        session_id: session_id.to_string(),
        from_seq: tracker.next_seq(),
        // A person reads this: the coordinator's default batching is fine.
        batch_window_ms: None,
    };
    tracing::debug!(
        session = session_id,
        from_seq = request.from_seq,
        "opening watch"
    );
    let mut stream = match client.watch_session(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return broken_or_fatal(status),
    };
    loop {
        let event = match stream.message().await {
            Ok(Some(event)) => event,
            Ok(None) => {
                return Ok(Interrupted::Broken(
                    "the stream ended before the session did".into(),
                ));
            }
            Err(status) => return broken_or_fatal(status),
        };
        match tracker.accept(event) {
            Step::Duplicate | Step::Show(None) => {}
            Step::Progress(line) => {
                if tracker.live_progress {
                    // Overwrite the previous progress line; the next real line replaces it.
                    write!(out, "\r\x1b[2K{line}")?;
                    tracker.progress_shown = true;
                } else {
                    writeln!(out, "{line}")?;
                }
                out.flush()?;
            }
            Step::Show(Some(line)) => {
                if std::mem::take(&mut tracker.progress_shown) {
                    write!(out, "\r\x1b[2K")?;
                }
                writeln!(out, "{line}")?;
                out.flush()?;
            }
            Step::Ended { line, session } => {
                if std::mem::take(&mut tracker.progress_shown) {
                    write!(out, "\r\x1b[2K")?;
                }
                writeln!(out, "{line}")?;
                out.flush()?;
                let session = match session {
                    Some(session) => *session,
                    // An older coordinator may not attach the snapshot; ask for it.
                    None => client
                        .get_session(v1::GetSessionRequest {
                            session_id: session_id.to_string(),
                        })
                        .await?
                        .into_inner(),
                };
                return Ok(Interrupted::Ended(Box::new(session)));
            }
        }
    }
}

fn broken_or_fatal(status: tonic::Status) -> Result<Interrupted, CliError> {
    if is_transient(status.code()) {
        let mut why = format!("{:?}: {}", status.code(), status.message());
        if let Some(source) = std::error::Error::source(&status) {
            why.push_str(&format!(" ({})", error_chain(source)));
        }
        Ok(Interrupted::Broken(why))
    } else {
        Err(CliError::Rpc(status))
    }
}

/// The process exit code a finished session maps to: 0 on CONSENSUS (or COMPLETED, the
/// end of a broadcast session, which has nothing to agree on), 2 on NO_CONSENSUS, 1 on
/// FAILED, CANCELLED or anything unexpected.
pub fn exit_code(status: i32) -> u8 {
    match status_from_wire(status) {
        Some(Status::Consensus) | Some(Status::Completed) => 0,
        Some(Status::NoConsensus) => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_event(seq: u64, status: v1::SessionStatus, round: u32) -> v1::SessionEvent {
        v1::SessionEvent {
            seq,
            session_id: "s1".into(),
            timestamp_ms: 0,
            event: Some(Event::Status(v1::StatusChange {
                status: status as i32,
                round,
                reason: String::new(),
                awaiting: vec![],
            })),
            session: Some(v1::Session {
                id: "s1".into(),
                status: status as i32,
                round,
                ..Default::default()
            }),
            ephemeral: false,
        }
    }

    fn entry_event(seq: u64) -> v1::SessionEvent {
        v1::SessionEvent {
            seq,
            session_id: "s1".into(),
            timestamp_ms: 0,
            event: Some(Event::Entry(v1::Entry {
                seq: seq * 10,
                round: 1,
                phase: v1::Phase::Framing as i32,
                role: "supervisor".into(),
                entry_type: v1::EntryType::Framework as i32,
                content: "frame".into(),
                ..Default::default()
            })),
            session: None,
            ephemeral: false,
        }
    }

    #[test]
    fn progress_hints_do_not_move_the_resume_point() {
        let mut tracker = Tracker::new(3);
        let hint = v1::SessionEvent {
            seq: 2,
            ephemeral: true,
            event: Some(Event::Progress(v1::Progress {
                status: v1::SessionStatus::Review as i32,
                round: 1,
                answered: vec!["backend".into()],
                awaiting: vec!["security".into()],
            })),
            ..Default::default()
        };
        assert_eq!(
            tracker.accept(hint),
            Step::Progress("  r1 REVIEW [#.] 1/2  answered: backend  awaiting: security".into())
        );
        assert_eq!(tracker.next_seq(), 3);
    }

    #[test]
    fn replayed_events_after_a_resume_are_dropped() {
        let mut tracker = Tracker::new(1);
        assert_eq!(
            tracker.accept(status_event(1, v1::SessionStatus::Pending, 0)),
            Step::Show(Some("[round 0] PENDING".into()))
        );
        assert_eq!(
            tracker.accept(entry_event(2)),
            Step::Show(Some("#20 r1 FRAMING supervisor FRAMEWORK: frame".into()))
        );
        assert_eq!(tracker.next_seq(), 3);
        // A coordinator that replays from an older seq: nothing is shown twice.
        assert_eq!(tracker.accept(entry_event(1)), Step::Duplicate);
        assert_eq!(tracker.accept(entry_event(2)), Step::Duplicate);
        assert_eq!(tracker.next_seq(), 3);
        assert!(matches!(
            tracker.accept(entry_event(3)),
            Step::Show(Some(_))
        ));
        assert_eq!(tracker.next_seq(), 4);
    }

    #[test]
    fn a_terminal_status_ends_the_follow_with_its_snapshot() {
        let mut tracker = Tracker::new(7);
        assert_eq!(tracker.accept(entry_event(6)), Step::Duplicate);
        match tracker.accept(status_event(7, v1::SessionStatus::NoConsensus, 3)) {
            Step::Ended { line, session } => {
                assert_eq!(line, "[round 3] NO_CONSENSUS");
                assert_eq!(session.unwrap().round, 3);
            }
            other => panic!("expected the end, got {other:?}"),
        }
        // Working phases do not end it.
        let mut tracker = Tracker::new(1);
        assert!(matches!(
            tracker.accept(status_event(1, v1::SessionStatus::Review, 2)),
            Step::Show(Some(_))
        ));
    }

    #[test]
    fn unknown_event_kinds_advance_the_cursor_silently() {
        let mut tracker = Tracker::new(0);
        assert_eq!(tracker.next_seq(), 1);
        let mut event = entry_event(1);
        event.event = None;
        assert_eq!(tracker.accept(event), Step::Show(None));
        assert_eq!(tracker.next_seq(), 2);
    }

    #[test]
    fn a_gap_is_shown_and_the_cursor_follows_it() {
        let mut tracker = Tracker::new(1);
        assert!(matches!(
            tracker.accept(entry_event(4)),
            Step::Show(Some(_))
        ));
        assert_eq!(tracker.next_seq(), 5);
    }

    #[test]
    fn exit_codes_follow_the_outcome() {
        assert_eq!(exit_code(v1::SessionStatus::Consensus as i32), 0);
        assert_eq!(exit_code(v1::SessionStatus::NoConsensus as i32), 2);
        assert_eq!(exit_code(v1::SessionStatus::Completed as i32), 0);
        assert_eq!(exit_code(v1::SessionStatus::Failed as i32), 1);
        assert_eq!(exit_code(v1::SessionStatus::Cancelled as i32), 1);
        assert_eq!(exit_code(v1::SessionStatus::Review as i32), 1);
        assert_eq!(exit_code(99), 1);
    }

    #[test]
    fn only_connection_trouble_is_retried() {
        assert!(is_transient(Code::Unavailable));
        assert!(is_transient(Code::Unknown));
        assert!(!is_transient(Code::NotFound));
        assert!(!is_transient(Code::OutOfRange));
        assert!(!is_transient(Code::InvalidArgument));
    }
}
