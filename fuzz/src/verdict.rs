//! `verdict`: arbitrary text as a model's review reply. The verdict parser never
//! panics; what it accepts obeys its rules; the reply the brain builds from it is an
//! APPROVE only for a valid APPROVE verdict and then names exactly the hash of the turn,
//! an invalid text becomes an INVALID review (never an approval); and the core accepts
//! every such reply as the review it is.

use crate::fixture;
use agentmesh_brain::model::Completion;
use agentmesh_brain::verdict::{self, MAX_CONCERN_CHARS, MAX_CONCERNS};
use agentmesh_brain::{Transcript, TurnContext};
use agentmesh_core::{EntryType, Input, Phase, Verdict};
use serde_json::Value;
use std::sync::OnceLock;

/// The reviewer whose turn the text answers.
const ROLE: &str = "security";

fn context() -> &'static TurnContext {
    static CTX: OnceLock<TurnContext> = OnceLock::new();
    CTX.get_or_init(|| {
        let s = fixture::in_review();
        let (version, hash) = s.current_proposal().expect("under review");
        TurnContext {
            session_id: s.id().to_string(),
            task: s.spec().task.clone(),
            roles: s.participants().to_vec(),
            max_rounds: s.spec().max_rounds,
            role: ROLE.to_string(),
            round: s.round(),
            phase: Phase::Review,
            attempt: 1,
            transcript: Transcript::from(s.transcript().to_vec()),
            proposal_version: version,
            proposal_hash: hash.to_string(),
        }
    })
}

pub fn run(data: &[u8]) {
    // Model replies reach the parser as `String`s: UTF-8 only.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ctx = context();
    let parsed = verdict::parse_text(text);
    // The brain's entry point gives the same answer.
    let completion = Completion {
        text: text.to_string(),
        ..Completion::default()
    };
    assert_eq!(completion.verdict(), parsed);
    // A text that is one JSON value is judged as that value (as a tool input would be).
    if let Ok(value) = serde_json::from_str::<Value>(text.trim()) {
        assert_eq!(verdict::validate(&value), parsed);
    }
    let reply = match &parsed {
        Ok(v) => {
            assert!(
                matches!(v.verdict, Verdict::Approve | Verdict::Object),
                "{v:?}"
            );
            assert!(v.concerns.len() <= MAX_CONCERNS);
            for c in &v.concerns {
                assert!(!c.is_empty() && c.trim() == c && c.chars().count() <= MAX_CONCERN_CHARS);
            }
            assert_eq!(
                v.verdict == Verdict::Object,
                !v.concerns.is_empty(),
                "{v:?}"
            );
            assert_eq!(v.summary.trim(), v.summary);
            verdict::reply(v, ctx)
        }
        Err(why) => {
            assert!(!why.is_empty());
            verdict::invalid_reply(why, text, ctx)
        }
    };
    assert_eq!(reply.entry_type, Some(EntryType::Review));
    assert_eq!(
        reply.proposal_hash, ctx.proposal_hash,
        "a review names the turn's hash"
    );
    let approved = matches!(&parsed, Ok(v) if v.verdict == Verdict::Approve);
    assert_eq!(
        reply.verdict == Some(Verdict::Approve),
        approved,
        "{reply:?}"
    );
    if parsed.is_err() {
        assert_eq!(reply.verdict, Some(Verdict::Invalid), "never an approval");
        assert!(!reply.concerns.is_empty());
    }

    // The core takes the reply as exactly that review.
    let mut session = fixture::in_review().clone();
    let turn = session
        .awaited_turn(ROLE)
        .expect("the reviewer's turn is open");
    let input = Input::Result {
        worker_id: fixture::worker_of(ROLE),
        turn,
        reply: reply.clone(),
    };
    let applied = session
        .apply(fixture::START_MS + 1_000, input)
        .unwrap_or_else(|r| panic!("the core refused the brain's review {reply:?}: {r}"));
    assert!(!applied.duplicate);
    let entry = session.transcript().last().expect("appended");
    assert_eq!(entry.verdict, reply.verdict);
    assert_eq!(entry.proposal_hash, ctx.proposal_hash);
    crate::session::invariants(&session, agentmesh_core::SessionMode::Negotiation);
}
