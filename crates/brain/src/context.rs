//! [`TurnContext`]: everything a brain is told about one turn, and the transcript
//! queries every brain needs (the framework, the proposal under discussion, the
//! objections still open). [`Transcript`]: the entries, shared between a worker's held
//! session and the turns it runs rather than copied into each.

use agentmesh_core::{Entry, EntryType, Objection, Phase, Verdict};
use std::ops::Deref;
use std::sync::Arc;

/// A session's transcript as a brain sees it: every entry so far, in seq order.
///
/// The entries sit behind a shared pointer. A worker keeps one `Transcript` per session
/// it holds and gives each turn a clone of it, which costs a reference count, not a
/// copy of every entry (a supervisor holding 100 sessions would otherwise copy each
/// ~30 KiB transcript on every turn). Appending copies the entries only while a turn
/// still holds the previous snapshot, so a running turn never sees entries change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transcript(Arc<Vec<Entry>>);

impl Transcript {
    /// Appends `entry`, copying the entries first if a turn still shares them.
    pub fn push(&mut self, entry: Entry) {
        self.entries_mut().push(entry);
    }

    /// The entries, for editing in place; copies them first if they are shared.
    pub fn entries_mut(&mut self) -> &mut Vec<Entry> {
        Arc::make_mut(&mut self.0)
    }
}

impl Deref for Transcript {
    type Target = [Entry];

    fn deref(&self) -> &[Entry] {
        &self.0
    }
}

impl From<Vec<Entry>> for Transcript {
    fn from(entries: Vec<Entry>) -> Self {
        Transcript(Arc::new(entries))
    }
}

impl FromIterator<Entry> for Transcript {
    fn from_iter<I: IntoIterator<Item = Entry>>(entries: I) -> Self {
        Transcript::from(entries.into_iter().collect::<Vec<_>>())
    }
}

/// One turn, as a brain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnContext {
    pub session_id: String,
    pub task: String,
    /// All participants, supervisor first.
    pub roles: Vec<String>,
    pub max_rounds: u32,
    /// The role this worker plays.
    pub role: String,
    pub round: u32,
    pub phase: Phase,
    pub attempt: u32,
    /// Everything seen so far, in seq order.
    pub transcript: Transcript,
    /// REVIEW turns: the version under review.
    pub proposal_version: u32,
    /// REVIEW turns: the hash to sign.
    pub proposal_hash: String,
}

impl TurnContext {
    /// The supervisor's FRAMEWORK entry (the last one, should there be several).
    pub fn framework(&self) -> Option<&Entry> {
        self.transcript
            .iter()
            .rev()
            .find(|e| e.entry_type == EntryType::Framework)
    }

    /// The last proposal version the supervisor synthesized.
    pub fn current_proposal(&self) -> Option<&Entry> {
        self.transcript
            .iter()
            .rev()
            .find(|e| e.is_proposal_version())
    }

    /// The proposal version named by `hash`, if the transcript holds it.
    pub fn proposal_by_hash(&self, hash: &str) -> Option<&Entry> {
        self.transcript
            .iter()
            .rev()
            .find(|e| e.is_proposal_version() && e.proposal_hash == hash)
    }

    /// The proposal text a REVIEW turn judges, checked against the hash it will sign:
    /// the turn must name a hash, the transcript must hold that version, and its text
    /// must hash to it.
    pub fn proposal_under_review(&self) -> Result<&str, crate::BrainError> {
        use crate::BrainError::BadContext;
        if self.proposal_hash.is_empty() {
            return Err(BadContext(format!(
                "round {} REVIEW turn names no proposal hash",
                self.round
            )));
        }
        let entry = self.proposal_by_hash(&self.proposal_hash).ok_or_else(|| {
            BadContext(format!(
                "proposal v{} ({}) is not in the {} transcript entries this worker has seen",
                self.proposal_version,
                crate::text::short_hash(&self.proposal_hash),
                self.transcript.len()
            ))
        })?;
        let actual = agentmesh_core::hash::proposal_hash(&entry.content);
        if actual != self.proposal_hash {
            return Err(BadContext(format!(
                "proposal v{} hashes to {}, not to the {} under review; refusing to sign",
                entry.proposal_version,
                crate::text::short_hash(&actual),
                crate::text::short_hash(&self.proposal_hash)
            )));
        }
        Ok(&entry.content)
    }

    /// The specialists: every role but the supervisor, in session order.
    pub fn specialists(&self) -> impl Iterator<Item = &str> {
        self.roles
            .iter()
            .map(String::as_str)
            .filter(|r| *r != agentmesh_core::SUPERVISOR)
    }

    /// Where `role` stands in the session's role order; unknown roles sort last.
    pub fn role_rank(&self, role: &str) -> usize {
        self.roles
            .iter()
            .position(|r| r == role)
            .unwrap_or(self.roles.len())
    }

    /// The entries of one round and phase, ordered by role (session order), not by
    /// arrival, so that whatever is derived from them does not depend on timing.
    pub fn entries_of(&self, round: u32, phase: Phase) -> Vec<&Entry> {
        let mut entries: Vec<&Entry> = self
            .transcript
            .iter()
            .filter(|e| e.round == round && e.phase == phase)
            .collect();
        entries.sort_by(|a, b| {
            (self.role_rank(&a.role), &a.role, a.seq).cmp(&(
                self.role_rank(&b.role),
                &b.role,
                b.seq,
            ))
        });
        entries
    }

    /// The most recent review round every participant has completed, if any. With no
    /// role list to check against, a review round counts as complete once the session
    /// has moved past it.
    pub fn last_completed_review_round(&self) -> Option<u32> {
        let mut rounds: Vec<u32> = self
            .transcript
            .iter()
            .filter(|e| e.phase == Phase::Review && e.entry_type == EntryType::Review)
            .map(|e| e.round)
            .collect();
        rounds.sort_unstable();
        rounds.dedup();
        rounds.into_iter().rev().find(|&round| {
            if self.roles.is_empty() {
                round < self.round || self.phase != Phase::Review
            } else {
                self.roles.iter().all(|role| {
                    self.transcript
                        .iter()
                        .any(|e| e.phase == Phase::Review && e.round == round && &e.role == role)
                })
            }
        })
    }

    /// The objections of a review round: each OBJECT or INVALID concern, by role order.
    pub fn objections_of(&self, round: u32) -> Vec<Objection> {
        self.entries_of(round, Phase::Review)
            .into_iter()
            .filter(|e| e.entry_type == EntryType::Review && e.verdict != Some(Verdict::Approve))
            .flat_map(|e| {
                e.concerns.iter().map(|c| Objection {
                    role: e.role.clone(),
                    concern: c.clone(),
                })
            })
            .collect()
    }

    /// The OBJECT/INVALID concerns of the most recent completed review round, ordered by
    /// role (session order): what the current round has to answer.
    pub fn open_objections(&self) -> Vec<Objection> {
        self.last_completed_review_round()
            .map(|round| self.objections_of(round))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, round: u32, phase: Phase, role: &str, ty: EntryType) -> Entry {
        Entry {
            seq,
            round,
            phase,
            role: role.into(),
            worker_id: format!("w-{role}"),
            entry_type: ty,
            timestamp_ms: seq as i64,
            content: format!("entry {seq}"),
            verdict: None,
            concerns: Vec::new(),
            proposal_hash: String::new(),
            proposal_version: 0,
            signature: Vec::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            attempt: 1,
            public_key: None,
            chain_hash: Default::default(),
        }
    }

    fn review(seq: u64, round: u32, role: &str, verdict: Verdict, concerns: &[&str]) -> Entry {
        Entry {
            verdict: Some(verdict),
            concerns: concerns.iter().map(|c| c.to_string()).collect(),
            ..entry(seq, round, Phase::Review, role, EntryType::Review)
        }
    }

    fn ctx(transcript: Vec<Entry>, round: u32, phase: Phase) -> TurnContext {
        TurnContext {
            session_id: "s".into(),
            task: "t".into(),
            roles: vec!["supervisor".into(), "a".into(), "b".into()],
            max_rounds: 3,
            role: "a".into(),
            round,
            phase,
            attempt: 1,
            transcript: transcript.into(),
            proposal_version: 0,
            proposal_hash: String::new(),
        }
    }

    #[test]
    fn clones_share_entries_and_appending_never_changes_a_clone() {
        let mut held = Transcript::from(vec![entry(
            1,
            0,
            Phase::Framing,
            "supervisor",
            EntryType::Framework,
        )]);
        let turn = held.clone();
        assert!(
            std::ptr::eq(held.as_ptr(), turn.as_ptr()),
            "a clone is a handle"
        );
        held.push(entry(2, 1, Phase::Contribute, "a", EntryType::Analysis));
        assert_eq!(turn.iter().map(|e| e.seq).collect::<Vec<_>>(), [1]);
        assert_eq!(held.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        let collected: Transcript = held.iter().cloned().collect();
        assert_eq!(collected, held);
    }

    #[test]
    fn framework_and_proposal_lookups() {
        let mut p1 = entry(3, 1, Phase::Synthesize, "supervisor", EntryType::Proposal);
        p1.proposal_hash = "h1".into();
        let mut p2 = entry(9, 2, Phase::Synthesize, "supervisor", EntryType::Proposal);
        p2.proposal_hash = "h2".into();
        let c = ctx(
            vec![
                entry(1, 0, Phase::Framing, "supervisor", EntryType::Framework),
                entry(2, 1, Phase::Contribute, "a", EntryType::Analysis),
                p1,
                entry(4, 2, Phase::Contribute, "a", EntryType::Proposal),
                p2,
            ],
            2,
            Phase::Review,
        );
        assert_eq!(c.framework().map(|e| e.seq), Some(1));
        assert_eq!(c.current_proposal().map(|e| e.seq), Some(9));
        assert_eq!(c.proposal_by_hash("h1").map(|e| e.seq), Some(3));
        assert_eq!(c.specialists().collect::<Vec<_>>(), ["a", "b"]);
        assert!(c.open_objections().is_empty());
    }

    #[test]
    fn open_objections_come_from_the_last_complete_review_in_role_order() {
        let round1 = vec![
            review(5, 1, "b", Verdict::Object, &["b1", "b2"]),
            review(6, 1, "supervisor", Verdict::Approve, &[]),
            review(7, 1, "a", Verdict::Invalid, &["the review was invalid"]),
        ];
        let mut transcript = round1.clone();
        // A partial round 2 review does not replace round 1's objections.
        transcript.push(review(9, 2, "a", Verdict::Object, &["a-new"]));
        let c = ctx(transcript.clone(), 2, Phase::Review);
        let open = c.open_objections();
        assert_eq!(
            open.iter()
                .map(|o| (o.role.as_str(), o.concern.as_str()))
                .collect::<Vec<_>>(),
            [("a", "the review was invalid"), ("b", "b1"), ("b", "b2")]
        );
        // Once everybody has reviewed round 2, it is the one that counts.
        transcript.push(review(10, 2, "b", Verdict::Approve, &[]));
        transcript.push(review(11, 2, "supervisor", Verdict::Approve, &[]));
        let c = ctx(transcript, 3, Phase::Contribute);
        assert_eq!(c.last_completed_review_round(), Some(2));
        assert_eq!(
            c.open_objections(),
            vec![Objection {
                role: "a".into(),
                concern: "a-new".into()
            }]
        );
    }

    #[test]
    fn without_roles_a_review_completes_when_the_session_moves_on() {
        let mut c = ctx(
            vec![review(5, 1, "b", Verdict::Object, &["b1"])],
            1,
            Phase::Review,
        );
        c.roles.clear();
        assert_eq!(c.last_completed_review_round(), None);
        c.round = 2;
        c.phase = Phase::Contribute;
        assert_eq!(c.open_objections().len(), 1);
    }
}
