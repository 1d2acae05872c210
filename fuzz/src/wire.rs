//! `wire_conversions`: arbitrary bytes decoded with prost as each message a peer sends,
//! then converted to core types the way the coordinator, the worker and meshctl do.
//! Nothing may panic; a conversion that succeeds round-trips (core -> wire -> core is
//! lossless, and wire -> core -> wire loses only what the code says it drops); a
//! converted result or failure applied to a running session keeps the core's rules.
//!
//! The first byte picks the message ([`Kind`]); the rest is its encoding (or, for the
//! text kinds, its UTF-8).

use crate::fixture;
use agentmesh_core::{self as core, Input, Session, SessionConfig, SessionMode, SessionSpec};
use agentmesh_proto::v1::{self, coordinator_message, mesh_event, session_event, worker_message};
use agentmesh_proto::{
    LeaderAddress, entry_type_from_wire, parse_duration, phase_from_wire, reply_from_wire,
    status_from_wire, status_name, turn_from_wire, verdict_from_wire,
};
use prost::Message;
use std::collections::BTreeMap;

/// What the bytes after the first one are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// worker -> coordinator (WorkerService.Attach)
    WorkerMessage,
    /// coordinator -> worker: turn requests carry transcript deltas
    CoordinatorMessage,
    /// client -> coordinator
    CreateSessionRequest,
    /// coordinator -> client (meshctl)
    Session,
    Transcript,
    SessionEvent,
    MeshEvent,
    Entry,
    /// A duration flag (`parse_duration`), as text.
    Duration,
    /// A JSON export (`export::from_json`), as text.
    ExportJson,
    /// The leader's address as the election holds it (`LeaderAddress::parse`), as text.
    LeaderAddress,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::WorkerMessage,
        Kind::CoordinatorMessage,
        Kind::CreateSessionRequest,
        Kind::Session,
        Kind::Transcript,
        Kind::SessionEvent,
        Kind::MeshEvent,
        Kind::Entry,
        Kind::Duration,
        Kind::ExportJson,
        Kind::LeaderAddress,
    ];

    pub fn byte(self) -> u8 {
        Kind::ALL.iter().position(|k| *k == self).unwrap() as u8
    }
}

pub fn run(data: &[u8]) {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    match Kind::ALL[usize::from(first) % Kind::ALL.len()] {
        Kind::WorkerMessage => {
            if let Ok(m) = v1::WorkerMessage::decode(body) {
                worker_message(m);
            }
        }
        Kind::CoordinatorMessage => {
            if let Ok(m) = v1::CoordinatorMessage::decode(body) {
                coordinator_message(m);
            }
        }
        Kind::CreateSessionRequest => {
            if let Ok(m) = v1::CreateSessionRequest::decode(body) {
                create_session(m);
            }
        }
        Kind::Session => {
            if let Ok(m) = v1::Session::decode(body) {
                session(&m);
            }
        }
        Kind::Transcript => {
            if let Ok(m) = v1::Transcript::decode(body) {
                transcript(m);
            }
        }
        Kind::SessionEvent => {
            if let Ok(m) = v1::SessionEvent::decode(body) {
                session_event(m);
            }
        }
        Kind::MeshEvent => {
            if let Ok(m) = v1::MeshEvent::decode(body) {
                mesh_event(m);
            }
        }
        Kind::Entry => {
            if let Ok(m) = v1::Entry::decode(body) {
                let _ = entry(m);
            }
        }
        Kind::Duration => {
            if let Ok(text) = std::str::from_utf8(body) {
                duration(text);
            }
        }
        Kind::ExportJson => {
            if let Ok(text) = std::str::from_utf8(body) {
                export_json(text);
            }
        }
        Kind::LeaderAddress => {
            if let Ok(text) = std::str::from_utf8(body) {
                leader_address(text);
            }
        }
    }
}

fn enums(raw: i32) {
    // Zero and unknown numbers never convert to a value.
    if !(1..=10).contains(&raw) {
        assert!(status_from_wire(raw).is_none());
        assert_eq!(status_name(raw), "UNSPECIFIED");
    }
    for (known, max) in [
        (phase_from_wire(raw).is_some(), 4),
        (entry_type_from_wire(raw).is_some(), 9),
        (verdict_from_wire(raw).is_some(), 3),
        (status_from_wire(raw).is_some(), 10),
    ] {
        assert_eq!(known, (1..=max).contains(&raw), "enum number {raw}");
    }
}

/// A wire entry as the worker takes it (by value) and as the coordinator's HTTP API does
/// (by reference): the same result, and a lossless round trip.
fn entry(wire: v1::Entry) -> Option<core::Entry> {
    enums(wire.phase);
    enums(wire.entry_type);
    enums(wire.verdict);
    let by_ref = core::Entry::try_from(&wire);
    let by_value = core::Entry::try_from(wire.clone());
    assert_eq!(by_ref, by_value);
    let known =
        phase_from_wire(wire.phase).is_some() && entry_type_from_wire(wire.entry_type).is_some();
    assert_eq!(by_ref.is_ok(), known, "{by_ref:?}");
    match by_ref {
        Err(why) => {
            assert!(!why.is_empty());
            None
        }
        Ok(e) => {
            let back = v1::Entry::from(&e);
            assert_eq!(
                core::Entry::try_from(&back).as_ref(),
                Ok(&e),
                "core -> wire -> core"
            );
            // wire -> core -> wire drops only a verdict number it does not know (read as
            // no verdict, never as a default one).
            let mut expected = wire;
            if verdict_from_wire(expected.verdict).is_none() {
                expected.verdict = 0;
            }
            assert_eq!(back, expected, "wire -> core -> wire");
            Some(e)
        }
    }
}

/// A session header as meshctl takes it.
fn session(wire: &v1::Session) -> Option<core::SessionSummary> {
    enums(wire.status);
    let converted = core::SessionSummary::try_from(wire);
    assert_eq!(converted.is_ok(), status_from_wire(wire.status).is_some());
    let summary = converted.ok()?;
    let back = v1::Session::from(&summary);
    assert_eq!(core::SessionSummary::try_from(&back).as_ref(), Ok(&summary));
    // wire -> core -> wire keeps everything but the order and repeats of assignments:
    // they become a map, the last one given for a role winning.
    let mut expected = wire.clone();
    let map: BTreeMap<&String, &String> = wire
        .assignments
        .iter()
        .map(|a| (&a.role, &a.worker_id))
        .collect();
    expected.assignments = map
        .into_iter()
        .map(|(role, worker_id)| v1::Assignment {
            role: role.clone(),
            worker_id: worker_id.clone(),
        })
        .collect();
    assert_eq!(back, expected);
    // What a coordinator rebuilds from a header.
    let spec = summary.spec();
    let mode = summary.mode();
    assert_eq!(mode.broadcast_rounds(), summary.broadcast_rounds);
    assert!(spec.specialists.len() <= summary.roles.len());
    Some(summary)
}

fn turn_id(t: &v1::TurnId) -> Option<(String, core::TurnKey)> {
    enums(t.phase);
    match turn_from_wire(t) {
        Err(why) => {
            assert!(phase_from_wire(t.phase).is_none() && !why.is_empty());
            None
        }
        Ok((session_id, turn)) => {
            assert_eq!(session_id, t.session_id);
            assert_eq!(
                (turn.round, Some(turn.phase), &turn.role, turn.attempt),
                (t.round, phase_from_wire(t.phase), &t.role, t.attempt)
            );
            let mut back = v1::TurnId::from(&turn);
            back.session_id = session_id.clone();
            assert_eq!(&back, t);
            Some((session_id, turn))
        }
    }
}

/// One input to a running session (round 1 REVIEW): a rejection changes nothing, an
/// accepted result is what was sent.
fn apply_to_review(input: Input) {
    let mut session = fixture::in_review().clone();
    let before = fixture::snapshot(&session);
    let proposal = session.current_proposal().map(|(_, h)| h.to_string());
    match session.apply(fixture::START_MS + 1_000, input.clone()) {
        Err(r) => {
            assert_eq!(
                before,
                fixture::snapshot(&session),
                "{input:?} rejected ({r}) changed the session"
            );
            assert!(!r.message.is_empty());
        }
        Ok(applied) => {
            crate::session::invariants(&session, SessionMode::Negotiation);
            if let (Input::Result { reply, .. }, Some(entry)) =
                (&input, session.transcript().get(before.transcript.len()))
            {
                assert!(!applied.duplicate);
                assert_eq!(entry.content, reply.content);
                if entry.verdict == Some(core::Verdict::Approve) {
                    assert_eq!(Some(&entry.proposal_hash), proposal.as_ref());
                    assert_eq!(reply.proposal_hash, entry.proposal_hash);
                }
            }
        }
    }
}

fn worker_message(m: v1::WorkerMessage) {
    match m.msg {
        Some(worker_message::Msg::Hello(hello)) => {
            // What the coordinator's `admit` checks.
            let _ = core::session::validate_role(&hello.role);
            for cursor in &hello.cursors {
                let _ = cursor.seq.saturating_add(1);
            }
        }
        Some(worker_message::Msg::Result(result)) => {
            let Some((_, turn)) = turn_id(&result.turn.clone().unwrap_or_default()) else {
                return;
            };
            let reply = reply_from_wire(&result);
            enums(result.entry_type);
            enums(result.verdict);
            assert_eq!(reply.entry_type, entry_type_from_wire(result.entry_type));
            assert_eq!(reply.verdict, verdict_from_wire(result.verdict));
            assert_eq!(
                (
                    &reply.content,
                    &reply.concerns,
                    &reply.proposal_hash,
                    &reply.signature
                ),
                (
                    &result.content,
                    &result.concerns,
                    &result.proposal_hash,
                    &result.signature
                )
            );
            assert_eq!(
                (reply.prompt_tokens, reply.completion_tokens),
                (result.prompt_tokens, result.completion_tokens)
            );
            // Sent by the role's holder, so that well-formed results are accepted.
            let worker_id = fixture::worker_of(&turn.role);
            apply_to_review(Input::Result {
                worker_id,
                turn,
                reply,
            });
        }
        Some(worker_message::Msg::Failed(failed)) => {
            if let Some((_, turn)) = turn_id(&failed.turn.clone().unwrap_or_default()) {
                apply_to_review(Input::TurnFailed {
                    worker_id: fixture::worker_of(&turn.role),
                    turn,
                    reason: failed.reason,
                });
            }
        }
        // Heartbeat, Draining: nothing converts to core types.
        _ => {}
    }
}

/// A turn request as the worker takes it: the turn id, then the delta entries.
fn coordinator_message(m: v1::CoordinatorMessage) {
    // (Welcome, SessionEnd, ResultAck: nothing converts to core types.)
    if let Some(coordinator_message::Msg::Turn(request)) = m.msg {
        if let Some(t) = &request.turn {
            let _ = turn_id(t);
        }
        for wire in request.delta {
            let _ = entry(wire);
        }
    }
}

/// CreateSession as the coordinator handles it: defaults, validation, a new session.
fn create_session(r: v1::CreateSessionRequest) {
    let specialists = if r.roles.is_empty() {
        core::DEFAULT_SPECIALISTS
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        r.roles
    };
    let spec = SessionSpec {
        id: "s-wire".into(),
        task: r.task,
        specialists,
        max_rounds: if r.max_rounds == 0 { 4 } else { r.max_rounds },
    };
    let mode = SessionMode::from_broadcast_rounds(r.broadcast_rounds);
    if spec.validate().is_err() || mode.validate().is_err() {
        return;
    }
    let (session, effects) = Session::new_in(
        mode,
        spec.clone(),
        SessionConfig::default(),
        fixture::START_MS,
    );
    assert_eq!(effects.len(), session.participants().len());
    crate::session::invariants(&session, mode);
    let summary = session.summary();
    assert_eq!(summary.spec(), spec);
    assert_eq!(summary.mode(), mode);
    let back = core::SessionSummary::try_from(&v1::Session::from(&summary));
    assert_eq!(back, Ok(summary));
}

/// A transcript as meshctl shows or exports it, and as a coordinator would restore it:
/// a transcript the rules could not have produced is refused, never a panic.
fn transcript(t: v1::Transcript) {
    let summary = t.session.as_ref().and_then(session);
    let entries: Vec<core::Entry> = t.entries.into_iter().filter_map(entry).collect();
    let _ = core::export::markdown(&entries);
    let Some(summary) = summary else {
        return;
    };
    export_round_trip(&summary, &entries);
    let (spec, mode) = (summary.spec(), summary.mode());
    if spec.validate().is_err() || mode.validate().is_err() {
        return;
    }
    if let Ok((restored, _, history)) = Session::restore_in(
        mode,
        spec,
        SessionConfig::default(),
        summary.created_ms,
        &entries,
        fixture::START_MS,
    ) {
        assert_eq!(restored.transcript(), &entries[..]);
        crate::session::invariants(&restored, mode);
        let appended: Vec<&core::Entry> = history
            .iter()
            .filter_map(|e| match e {
                core::Effect::Appended(entry) => Some(entry),
                _ => None,
            })
            .collect();
        assert_eq!(appended, entries.iter().collect::<Vec<_>>());
    }
}

fn session_event(e: v1::SessionEvent) {
    if let Some(s) = &e.session {
        let _ = session(s);
    }
    match e.event {
        Some(session_event::Event::Entry(wire)) => {
            let _ = entry(wire);
        }
        Some(session_event::Event::Status(change)) => {
            enums(change.status);
            let _ = status_name(change.status);
        }
        Some(session_event::Event::Progress(p)) => enums(p.status),
        _ => {}
    }
}

fn mesh_event(e: v1::MeshEvent) {
    match e.event {
        Some(
            mesh_event::Event::SessionCreated(s)
            | mesh_event::Event::SessionEnded(s)
            | mesh_event::Event::PhaseChanged(s),
        ) => {
            let _ = session(&s);
        }
        Some(mesh_event::Event::Resync(r)) => {
            for s in &r.sessions {
                let _ = session(s);
            }
        }
        // WorkerJoined, WorkerLeft: nothing converts to core types.
        _ => {}
    }
}

fn duration(text: &str) {
    if let Ok(d) = parse_duration(text) {
        // Only digits, one unit, and a finite value got here.
        assert!(d.as_secs_f64().is_finite());
    }
}

fn export_round_trip(summary: &core::SessionSummary, entries: &[core::Entry]) {
    let text = core::export::json(summary, entries);
    let (s, e) = core::export::from_json(&text).expect("an export reads back");
    assert_eq!(&s, summary);
    assert_eq!(e, entries);
}

/// A JSON export read back, then exported again: the same values.
fn export_json(text: &str) {
    if let Ok((summary, entries)) = core::export::from_json(text) {
        export_round_trip(&summary, &entries);
        let _ = core::export::markdown(&entries);
    }
}

/// An election value: what parses is written back the same way.
fn leader_address(text: &str) {
    match LeaderAddress::parse(text) {
        None => assert!(text.split_whitespace().next().is_none()),
        Some(a) => {
            assert!(!a.grpc.is_empty() && !a.grpc.contains(char::is_whitespace));
            assert_eq!(LeaderAddress::parse(&a.encode()), Some(a));
        }
    }
}
