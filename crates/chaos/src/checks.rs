//! The checks a soak ends with: pure functions of the final state (every session's header
//! and transcript as etcd holds them, the coordinator API's answers, the workers'
//! acknowledgements), each returning every failure it found with the session and seq.

use crate::acks::Ack;
use agentmesh_proto::v1::{self, Phase, SessionStatus, Verdict};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One session at the end of the run.
#[derive(Clone, Debug)]
pub struct SessionRecord {
    /// The header as etcd holds it.
    pub session: v1::Session,
    /// The transcript as etcd holds it, in seq order.
    pub entries: Vec<v1::Entry>,
    /// What the coordinator API's `GetTranscript` answered (through any coordinator).
    pub api: Result<v1::Transcript, String>,
}

/// A check's verdict: passed when `failures` is empty.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: &'static str,
    /// What was checked, e.g. "612 sessions".
    pub scope: String,
    pub failures: Vec<String>,
}

impl Check {
    fn new(name: &'static str, scope: String, failures: Vec<String>) -> Check {
        Check {
            name,
            scope,
            failures,
        }
    }

    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

pub fn is_terminal(status: i32) -> bool {
    matches!(
        SessionStatus::try_from(status),
        Ok(SessionStatus::Consensus
            | SessionStatus::NoConsensus
            | SessionStatus::Cancelled
            | SessionStatus::Failed
            | SessionStatus::Completed)
    )
}

fn status(raw: i32) -> &'static str {
    agentmesh_proto::status_name(raw)
}

fn phase(raw: i32) -> &'static str {
    agentmesh_proto::phase_from_wire(raw).map_or("UNSPECIFIED", |p| p.as_str())
}

fn verdict(raw: i32) -> &'static str {
    match Verdict::try_from(raw) {
        Ok(Verdict::Approve) => "APPROVE",
        Ok(Verdict::Object) => "OBJECT",
        Ok(Verdict::Invalid) => "INVALID",
        _ => "UNSPECIFIED",
    }
}

fn turn(e: &v1::Entry) -> String {
    format!("round {} {} role {}", e.round, phase(e.phase), e.role)
}

/// Every session the coordinator confirmed creating is in etcd (a CreateSession is
/// answered only after its header is written).
pub fn created_are_durable(created: &BTreeSet<String>, records: &[SessionRecord]) -> Check {
    let known: BTreeSet<&str> = records.iter().map(|r| r.session.id.as_str()).collect();
    let failures = created
        .iter()
        .filter(|id| !known.contains(id.as_str()))
        .map(|id| {
            format!("session {id}: CreateSession answered with it, but etcd has no such session")
        })
        .collect();
    Check::new(
        "every created session is durable",
        format!("{} confirmed creates", created.len()),
        failures,
    )
}

/// Every session ended.
pub fn all_terminal(records: &[SessionRecord], waited: &str) -> Check {
    let failures = records
        .iter()
        .filter(|r| !is_terminal(r.session.status))
        .map(|r| {
            format!(
                "session {}: still {} round {} with {} entries after {waited} of healing (assigned: {})",
                r.session.id,
                status(r.session.status),
                r.session.round,
                r.entries.len(),
                r.session
                    .assignments
                    .iter()
                    .map(|a| format!("{}={}", a.role, a.worker_id))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .collect();
    Check::new(
        "every session terminal",
        format!("{} sessions", records.len()),
        failures,
    )
}

/// Transcripts are gapless from seq 1, agree with their header's entry count, and every
/// author is a participant.
pub fn gapless(records: &[SessionRecord]) -> Check {
    let mut failures = Vec::new();
    let mut entries = 0;
    for r in records {
        let id = &r.session.id;
        entries += r.entries.len();
        for (i, e) in r.entries.iter().enumerate() {
            let want = i as u64 + 1;
            if e.seq != want {
                failures.push(format!(
                    "session {id} seq {}: found where seq {want} belongs ({} status {}): the transcript has a gap or is out of order",
                    e.seq,
                    turn(e),
                    status(r.session.status)
                ));
                break;
            }
            if !r.session.roles.contains(&e.role) {
                failures.push(format!(
                    "session {id} seq {}: written by role {} which is not a participant ({:?})",
                    e.seq, e.role, r.session.roles
                ));
            }
        }
        if r.session.entry_count != r.entries.len() as u64 {
            failures.push(format!(
                "session {id}: header says {} entries, etcd holds {}",
                r.session.entry_count,
                r.entries.len()
            ));
        }
    }
    Check::new(
        "transcripts gapless from seq 1",
        format!("{} sessions, {entries} entries", records.len()),
        failures,
    )
}

/// No two entries answer the same turn (round, phase, role).
pub fn no_turn_twice(records: &[SessionRecord]) -> Check {
    let mut failures = Vec::new();
    for r in records {
        let mut seen: HashMap<(u32, i32, &str), u64> = HashMap::new();
        for e in &r.entries {
            if let Some(first) = seen.insert((e.round, e.phase, e.role.as_str()), e.seq) {
                failures.push(format!(
                    "session {} seq {}: {} answered twice (first at seq {first}, by worker {}; again by worker {})",
                    r.session.id,
                    e.seq,
                    turn(e),
                    r.entries
                        .iter()
                        .find(|x| x.seq == first)
                        .map_or("?", |x| x.worker_id.as_str()),
                    e.worker_id
                ));
            }
        }
    }
    Check::new(
        "no turn answered twice",
        format!("{} sessions", records.len()),
        failures,
    )
}

/// Every CONSENSUS names one approved hash: the SHA-256 of the final round's proposal,
/// which every participant's final-round REVIEW approves.
pub fn consensus_sound(records: &[SessionRecord]) -> Check {
    let mut failures = Vec::new();
    let mut checked = 0;
    for r in records {
        let s = &r.session;
        if s.status != SessionStatus::Consensus as i32 {
            continue;
        }
        checked += 1;
        let id = &s.id;
        if s.final_hash.is_empty() {
            failures.push(format!("session {id}: CONSENSUS without a final hash"));
            continue;
        }
        let Some(proposal) = r
            .entries
            .iter()
            .rev()
            .find(|e| e.phase == Phase::Synthesize as i32)
        else {
            failures.push(format!("session {id}: CONSENSUS without any proposal"));
            continue;
        };
        let computed = agentmesh_core::hash::proposal_hash(&proposal.content);
        if computed != s.final_hash {
            failures.push(format!(
                "session {id} seq {}: the last proposal hashes to {computed}, but the session's final hash is {}",
                proposal.seq, s.final_hash
            ));
        }
        if proposal.round != s.round {
            failures.push(format!(
                "session {id} seq {}: the last proposal is from round {}, the session ended in round {}",
                proposal.seq, proposal.round, s.round
            ));
        }
        if s.final_version != 0 && proposal.proposal_version != s.final_version {
            failures.push(format!(
                "session {id} seq {}: the last proposal is version {}, the session names version {}",
                proposal.seq, proposal.proposal_version, s.final_version
            ));
        }
        let reviews: Vec<&v1::Entry> = r
            .entries
            .iter()
            .filter(|e| e.round == s.round && e.phase == Phase::Review as i32)
            .collect();
        for role in &s.roles {
            match reviews.iter().find(|e| &e.role == role) {
                None => failures.push(format!(
                    "session {id}: role {role} has no REVIEW in the final round {}",
                    s.round
                )),
                Some(e) if e.verdict != Verdict::Approve as i32 => failures.push(format!(
                    "session {id} seq {}: role {role}'s final REVIEW is {}, yet the session is CONSENSUS",
                    e.seq,
                    verdict(e.verdict)
                )),
                Some(e) if e.proposal_hash != s.final_hash => failures.push(format!(
                    "session {id} seq {}: role {role} approved {}, not the final hash {}",
                    e.seq, e.proposal_hash, s.final_hash
                )),
                Some(_) => {}
            }
        }
    }
    Check::new(
        "CONSENSUS: one approved hash",
        format!("{checked} CONSENSUS sessions"),
        failures,
    )
}

/// In every session, a proposal's hash is the SHA-256 of its content, and every APPROVE
/// names its own round's proposal.
pub fn approvals_sign_their_proposal(records: &[SessionRecord]) -> Check {
    let mut failures = Vec::new();
    let mut approvals = 0;
    for r in records {
        let id = &r.session.id;
        let mut proposals: BTreeMap<u32, String> = BTreeMap::new();
        for e in &r.entries {
            if e.phase == Phase::Synthesize as i32 {
                let computed = agentmesh_core::hash::proposal_hash(&e.content);
                if !e.proposal_hash.is_empty() && e.proposal_hash != computed {
                    failures.push(format!(
                        "session {id} seq {}: proposal names hash {} but its content hashes to {computed}",
                        e.seq, e.proposal_hash
                    ));
                }
                proposals.insert(e.round, computed);
            }
        }
        for e in &r.entries {
            if e.phase != Phase::Review as i32 || e.verdict != Verdict::Approve as i32 {
                continue;
            }
            approvals += 1;
            match proposals.get(&e.round) {
                Some(hash) if *hash == e.proposal_hash => {}
                Some(hash) => failures.push(format!(
                    "session {id} seq {}: {} approves {}, but round {}'s proposal is {hash}",
                    e.seq,
                    turn(e),
                    e.proposal_hash,
                    e.round
                )),
                None => failures.push(format!(
                    "session {id} seq {}: {} approves {} in a round without a proposal",
                    e.seq,
                    turn(e),
                    e.proposal_hash
                )),
            }
        }
    }
    Check::new(
        "every APPROVE signs its round's proposal",
        format!("{approvals} approvals"),
        failures,
    )
}

/// Every result a worker saw acknowledged is in the final transcript: the entry at the
/// acknowledged seq answers the same turn and was written for that worker. An empty set
/// of acknowledgements fails: the check would be vacuous (a worker built without the log
/// line, or a changed log format).
pub fn acks_durable(acks: &[Ack], malformed: &[String], records: &[SessionRecord]) -> Check {
    let by_id: HashMap<&str, &SessionRecord> =
        records.iter().map(|r| (r.session.id.as_str(), r)).collect();
    let mut failures: Vec<String> = malformed
        .iter()
        .map(|line| format!("unparsable acknowledgement line {line}"))
        .collect();
    let results: Vec<&Ack> = acks.iter().filter(|a| a.seq > 0).collect();
    if results.is_empty() {
        failures.push(
            "no worker log holds a `result acknowledged` line: is mesh-worker built from this tree (cargo build --workspace --bins)?"
                .into(),
        );
    }
    for a in &results {
        let Some(r) = by_id.get(a.session.as_str()) else {
            failures.push(format!(
                "session {} seq {}: worker {} saw round {} {} role {} acknowledged ({}), but etcd has no such session",
                a.session, a.seq, a.worker, a.round, a.phase, a.role, a.source
            ));
            continue;
        };
        let Some(e) = r.entries.get(a.seq as usize - 1).filter(|e| e.seq == a.seq) else {
            failures.push(format!(
                "session {} seq {}: worker {} saw round {} {} role {} acknowledged ({}), but the transcript ends at seq {}",
                a.session,
                a.seq,
                a.worker,
                a.round,
                a.phase,
                a.role,
                a.source,
                r.entries.len()
            ));
            continue;
        };
        let same = e.round == a.round
            && phase(e.phase) == a.phase
            && e.role == a.role
            && e.worker_id == a.worker;
        if !same {
            failures.push(format!(
                "session {} seq {}: worker {} saw round {} {} role {} acknowledged ({}), but the transcript holds {} by worker {} there",
                a.session,
                a.seq,
                a.worker,
                a.round,
                a.phase,
                a.role,
                a.source,
                turn(e),
                e.worker_id
            ));
        }
    }
    let failure_reports = acks.len() - results.len();
    Check::new(
        "every acknowledged result is in the transcript",
        format!(
            "{} acknowledged results ({} duplicates), {failure_reports} failure reports",
            results.len(),
            results.iter().filter(|a| a.duplicate).count()
        ),
        failures,
    )
}

/// The coordinator API answers what etcd holds: same status, final hash and entries.
pub fn api_agrees(records: &[SessionRecord]) -> Check {
    let mut failures = Vec::new();
    for r in records {
        let id = &r.session.id;
        let t = match &r.api {
            Ok(t) => t,
            Err(why) => {
                failures.push(format!("session {id}: GetTranscript failed: {why}"));
                continue;
            }
        };
        let api = t.session.clone().unwrap_or_default();
        if api.status != r.session.status || api.final_hash != r.session.final_hash {
            failures.push(format!(
                "session {id}: the API says {} {:?}, etcd says {} {:?}",
                status(api.status),
                api.final_hash,
                status(r.session.status),
                r.session.final_hash
            ));
        }
        if t.entries != r.entries {
            let at = t
                .entries
                .iter()
                .zip(&r.entries)
                .position(|(a, b)| a != b)
                .unwrap_or(t.entries.len().min(r.entries.len()));
            failures.push(format!(
                "session {id} seq {}: the API's transcript ({} entries) differs from etcd's ({} entries) from here on",
                at + 1,
                t.entries.len(),
                r.entries.len()
            ));
        }
    }
    Check::new(
        "the API answers what etcd holds",
        format!("{} transcripts", records.len()),
        failures,
    )
}

/// The scripted brain never approves a conflict task's demands together (see
/// `agentmesh_brain::CONFLICT_TASK`): such a session ending in CONSENSUS means approvals
/// were counted that the reviewers never gave.
pub fn conflicts_never_agree(records: &[SessionRecord]) -> Check {
    let conflicts: Vec<&SessionRecord> = records
        .iter()
        .filter(|r| crate::is_conflict_task(&r.session.task))
        .collect();
    let failures = conflicts
        .iter()
        .filter(|r| r.session.status == SessionStatus::Consensus as i32)
        .map(|r| {
            format!(
                "session {}: a conflict task ended in CONSENSUS on {}",
                r.session.id, r.session.final_hash
            )
        })
        .collect();
    Check::new(
        "conflict tasks never reach CONSENSUS",
        format!("{} conflict sessions", conflicts.len()),
        failures,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, round: u32, phase: Phase, role: &str) -> v1::Entry {
        v1::Entry {
            seq,
            round,
            phase: phase as i32,
            role: role.into(),
            worker_id: format!("{role}-1"),
            content: format!("entry {seq}"),
            ..Default::default()
        }
    }

    /// A sound CONSENSUS: framing, one round with one specialist.
    fn consensus() -> SessionRecord {
        let proposal = "the proposal";
        let hash = agentmesh_core::hash::proposal_hash(proposal);
        let mut entries = vec![
            entry(1, 0, Phase::Framing, "supervisor"),
            entry(2, 1, Phase::Contribute, "backend"),
            entry(3, 1, Phase::Synthesize, "supervisor"),
            entry(4, 1, Phase::Review, "supervisor"),
            entry(5, 1, Phase::Review, "backend"),
        ];
        entries[2].content = proposal.into();
        entries[2].proposal_hash = hash.clone();
        entries[2].proposal_version = 1;
        for e in &mut entries[3..] {
            e.verdict = Verdict::Approve as i32;
            e.proposal_hash = hash.clone();
        }
        let session = v1::Session {
            id: "s1".into(),
            task: "Design a ledger".into(),
            roles: vec!["supervisor".into(), "backend".into()],
            status: SessionStatus::Consensus as i32,
            round: 1,
            final_version: 1,
            final_hash: hash,
            entry_count: 5,
            ..Default::default()
        };
        SessionRecord {
            api: Ok(v1::Transcript {
                session: Some(session.clone()),
                entries: entries.clone(),
            }),
            session,
            entries,
        }
    }

    fn ack(seq: u64, round: u32, phase: &str, role: &str) -> Ack {
        Ack {
            source: "w.log:1".into(),
            session: "s1".into(),
            seq,
            round,
            phase: phase.into(),
            role: role.into(),
            attempt: 1,
            worker: format!("{role}-1"),
            duplicate: false,
        }
    }

    fn all(records: &[SessionRecord], acks: &[Ack]) -> Vec<Check> {
        vec![
            all_terminal(records, "1s"),
            gapless(records),
            no_turn_twice(records),
            consensus_sound(records),
            approvals_sign_their_proposal(records),
            acks_durable(acks, &[], records),
            api_agrees(records),
            conflicts_never_agree(records),
        ]
    }

    #[test]
    fn a_sound_session_passes_everything() {
        let records = [consensus()];
        let acks = [
            ack(2, 1, "CONTRIBUTE", "backend"),
            ack(0, 1, "REVIEW", "backend"),
        ];
        for check in all(&records, &acks) {
            assert!(check.passed(), "{}: {:?}", check.name, check.failures);
        }
        let created = BTreeSet::from(["s1".to_string()]);
        assert!(created_are_durable(&created, &records).passed());
        let created = BTreeSet::from(["s1".to_string(), "s2".to_string()]);
        let lost = created_are_durable(&created, &records);
        assert_eq!(lost.failures.len(), 1);
        assert!(lost.failures[0].contains("session s2"));
    }

    /// Each kind of damage fails exactly the check that should catch it, naming the
    /// session and the seq.
    #[test]
    fn each_fault_fails_its_check_with_the_session_and_seq() {
        let fails = |records: &[SessionRecord], acks: &[Ack]| -> Vec<(&'static str, String)> {
            all(records, acks)
                .into_iter()
                .flat_map(|c| c.failures.into_iter().map(move |f| (c.name, f)))
                .collect()
        };
        let acks = [ack(2, 1, "CONTRIBUTE", "backend")];

        let mut gap = consensus();
        gap.entries.remove(1);
        gap.api = Ok(v1::Transcript {
            session: Some(gap.session.clone()),
            entries: gap.entries.clone(),
        });
        let found = fails(&[gap], &[]);
        assert!(
            found
                .iter()
                .any(|(n, f)| *n == "transcripts gapless from seq 1"
                    && f.contains("session s1 seq 3: found where seq 2 belongs")),
            "{found:?}"
        );

        let mut twice = consensus();
        twice.entries[4].role = "supervisor".into();
        let found = fails(&[twice], &[]);
        assert!(
            found.iter().any(|(n, f)| *n == "no turn answered twice"
                && f.contains("session s1 seq 5: round 1 REVIEW role supervisor answered twice")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|(n, f)| *n == "CONSENSUS: one approved hash"
                    && f.contains("role backend has no REVIEW"))
        );

        let mut objected = consensus();
        objected.entries[4].verdict = Verdict::Object as i32;
        let found = fails(&[objected], &[]);
        assert!(
            found
                .iter()
                .any(|(n, f)| *n == "CONSENSUS: one approved hash"
                    && f.contains("seq 5: role backend's final REVIEW is OBJECT"))
        );

        let mut other_hash = consensus();
        other_hash.entries[3].proposal_hash = "00".into();
        let found = fails(&[other_hash], &[]);
        assert!(
            found
                .iter()
                .any(|(n, f)| *n == "CONSENSUS: one approved hash"
                    && f.contains("seq 4: role supervisor approved 00"))
        );
        assert!(
            found
                .iter()
                .any(|(n, f)| *n == "every APPROVE signs its round's proposal"
                    && f.contains("seq 4"))
        );

        let mut wrong_final = consensus();
        wrong_final.session.final_hash = "ff".into();
        let found = fails(&[wrong_final], &[]);
        assert!(
            found
                .iter()
                .any(|(n, f)| *n == "CONSENSUS: one approved hash"
                    && f.contains("seq 3: the last proposal hashes to"))
        );

        let lost = [ack(6, 1, "REVIEW", "backend")];
        let found = fails(&[consensus()], &lost);
        assert!(found.iter().any(
            |(n, f)| *n == "every acknowledged result is in the transcript"
                && f.contains("session s1 seq 6: worker backend-1")
                && f.contains("ends at seq 5")
        ));
        let mut elsewhere = ack(3, 1, "CONTRIBUTE", "backend");
        elsewhere.worker = "backend-2".into();
        let found = fails(&[consensus()], &[elsewhere]);
        assert!(
            found
                .iter()
                .any(|(_, f)| f.contains("session s1 seq 3: worker backend-2")
                    && f.contains(
                        "holds round 1 SYNTHESIZE role supervisor by worker supervisor-1"
                    ))
        );
        let found = fails(&[consensus()], &[ack(0, 1, "REVIEW", "backend")]);
        assert!(
            found.iter().any(|(_, f)| f.contains("no worker log holds")),
            "no acks at all is a failure, not a pass"
        );

        let mut stuck = consensus();
        stuck.session.status = SessionStatus::Review as i32;
        stuck.api = Ok(v1::Transcript {
            session: Some(stuck.session.clone()),
            entries: stuck.entries.clone(),
        });
        let found = fails(&[stuck], &acks);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].1.contains("session s1: still REVIEW round 1"));

        let mut api = consensus();
        if let Ok(t) = &mut api.api {
            t.entries[2].content = "something else".into();
        }
        let found = fails(&[api], &acks);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0]
                .1
                .contains("session s1 seq 3: the API's transcript")
        );

        let mut conflict = consensus();
        conflict.session.task = format!("{} (chaos 1)", agentmesh_brain::CONFLICT_TASK);
        conflict.api = Ok(v1::Transcript {
            session: Some(conflict.session.clone()),
            entries: conflict.entries.clone(),
        });
        let found = fails(&[conflict], &acks);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "conflict tasks never reach CONSENSUS");
    }
}
