//! Sessions the targets start from, and the observable state a rejection must not change.

use agentmesh_core::trust::testing::signed;
use agentmesh_core::{
    Entry, EntryType, Input, Phase, Reply, Session, SessionConfig, SessionSpec, SessionSummary,
    TurnKey, Verdict,
};
use std::sync::OnceLock;

/// An arbitrary, realistic epoch: nothing may depend on time starting at zero.
pub const START_MS: i64 = 1_700_000_000_000;

/// The specialists of the fixed sessions.
pub const SPECIALISTS: [&str; 2] = ["backend", "security"];

pub fn spec(specialists: &[&str], max_rounds: u32) -> SessionSpec {
    SessionSpec {
        id: "s-fuzz".into(),
        task: "design a rate limiter".into(),
        specialists: specialists.iter().map(|s| s.to_string()).collect(),
        max_rounds,
    }
}

/// The worker the fixtures assign to `role`.
pub fn worker_of(role: &str) -> String {
    format!("{role}-w1")
}

/// Everything a client or the driver can observe of a session. A rejected input must
/// leave all of it unchanged, and a terminal session must never change it again.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub summary: SessionSummary,
    pub transcript: Vec<Entry>,
    /// The awaited turn of every participant that has one, in participant order.
    pub awaited: Vec<TurnKey>,
    pub proposal: Option<(u32, String)>,
    pub next_deadline: Option<i64>,
}

pub fn snapshot(s: &Session) -> Snapshot {
    Snapshot {
        summary: s.summary(),
        transcript: s.transcript().to_vec(),
        awaited: s
            .participants()
            .iter()
            .filter_map(|r| s.awaited_turn(r))
            .collect(),
        proposal: s.current_proposal().map(|(v, h)| (v, h.to_string())),
        next_deadline: s.next_deadline(),
    }
}

/// A reply that is correct for `turn` in `session` (for a review: `verdict`, naming the
/// current proposal when it approves). `tag` makes the content unique.
pub fn good_reply(session: &Session, turn: &TurnKey, verdict: Verdict, tag: u64) -> Reply {
    let entry_type = match turn.phase {
        Phase::Framing => EntryType::Framework,
        Phase::Contribute if turn.round <= 1 => EntryType::Analysis,
        Phase::Contribute => EntryType::Proposal,
        Phase::Synthesize => EntryType::Proposal,
        Phase::Review => EntryType::Review,
    };
    let mut reply = Reply {
        entry_type: Some(entry_type),
        content: format!(
            "{} r{} {} a{} #{tag}",
            turn.role, turn.round, turn.phase, turn.attempt
        ),
        ..Reply::default()
    };
    if turn.phase == Phase::Review {
        reply.verdict = Some(verdict);
        match verdict {
            Verdict::Approve => {
                reply.proposal_hash = session
                    .current_proposal()
                    .map(|(_, h)| h.to_string())
                    .unwrap_or_default();
            }
            Verdict::Object => reply.concerns = vec![format!("{} wants more #{tag}", turn.role)],
            Verdict::Invalid => {}
        }
    }
    reply
}

/// Answers every awaited turn correctly until the session stops in `until`'s phase or
/// ends; `verdict` picks each review's verdict from its turn.
fn run_until(
    session: &mut Session,
    now: &mut i64,
    until: Option<Phase>,
    verdict: impl Fn(&TurnKey) -> Verdict,
) {
    let mut tag = 0;
    while session.status().phase().is_some_and(|p| Some(p) != until) {
        let role = session
            .awaiting()
            .next()
            .expect("a working phase awaits someone")
            .to_string();
        let turn = session.awaited_turn(&role).expect("awaited");
        let reply = good_reply(session, &turn, verdict(&turn), tag);
        tag += 1;
        *now += 1;
        let input = signed(
            session,
            Input::Result {
                worker_id: worker_of(&role),
                turn,
                reply,
            },
        );
        session
            .apply(*now, input)
            .expect("a correct reply is accepted");
    }
}

/// A negotiation (supervisor, backend, security; 2 rounds) with every role held by
/// [`worker_of`] it, and the time of its last input.
fn started() -> (Session, i64) {
    // Unsigned: the wire and verdict targets check conversions and verdicts, and Ed25519
    // under coverage instrumentation would cost each input milliseconds (core_session
    // fuzzes the signed path).
    let config = SessionConfig {
        require_signatures: false,
        ..SessionConfig::default()
    };
    let (mut s, _) = Session::new(spec(&SPECIALISTS, 2), config, START_MS);
    let mut now = START_MS;
    for role in s.participants().to_vec() {
        now += 1;
        let input = signed(
            &s,
            Input::Assign {
                worker_id: worker_of(&role),
                role,
                key: None,
            },
        );
        s.apply(now, input).expect("assign");
    }
    (s, now)
}

/// [`started`], then run to round 1 REVIEW of proposal v1, no review given yet.
pub fn in_review() -> &'static Session {
    static SESSION: OnceLock<Session> = OnceLock::new();
    SESSION.get_or_init(|| {
        let (mut s, mut now) = started();
        run_until(&mut s, &mut now, Some(Phase::Review), |_| Verdict::Approve);
        assert_eq!(s.status(), agentmesh_core::Status::Review);
        s
    })
}

/// [`started`], then run to the end: security objects to v1, everybody approves v2.
pub fn to_consensus() -> Session {
    let (mut s, mut now) = started();
    run_until(&mut s, &mut now, None, |t| {
        if t.round == 1 && t.role == "security" {
            Verdict::Object
        } else {
            Verdict::Approve
        }
    });
    assert_eq!(s.status(), agentmesh_core::Status::Consensus);
    s
}
