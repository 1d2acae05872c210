//! Pure formatting: every line and table meshctl prints is built here from wire values,
//! so the exact layouts are unit-tested without a coordinator.
//!
//! Wire enums are read leniently: a number this build does not know prints as `?`
//! instead of failing, because a newer coordinator must not break an older meshctl's
//! live view.

use agentmesh_core::utc;
use agentmesh_core::{Phase, Verdict};
use agentmesh_proto::v1;
use agentmesh_proto::{entry_type_from_wire, phase_from_wire, status_name, verdict_from_wire};
use serde::Serialize;
use std::collections::BTreeMap;

/// How many characters of an entry's first line or a concern a live line shows.
pub const SUMMARY_CHARS: usize = 100;
/// How many characters of a task the sessions table shows.
pub const TASK_CHARS: usize = 48;
/// How many hex digits of a proposal hash a live line shows.
const SHORT_HASH: usize = 12;
/// The cell a verdict matrix shows where a role gave no verdict in a round.
const NO_VERDICT: &str = "-";

/// `text` cut to at most `max` characters; a cut ends in `...` (counted in `max`).
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max.saturating_sub(3)).collect();
    format!("{}...", kept.trim_end())
}

/// The first line of `text` that has anything on it, trimmed.
pub fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("")
}

fn phase_name(raw: i32) -> &'static str {
    phase_from_wire(raw).map_or("?", Phase::as_str)
}

fn entry_type_name(raw: i32) -> &'static str {
    entry_type_from_wire(raw).map_or("?", |t| t.as_str())
}

fn short_hash(hash: &str) -> &str {
    hash.get(..SHORT_HASH).unwrap_or(hash)
}

/// `label: detail`, without a trailing space when there is no detail.
fn labelled(label: &str, detail: &str) -> String {
    if detail.is_empty() {
        format!("{label}:")
    } else {
        format!("{label}: {detail}")
    }
}

/// One live line per status change:
/// `[round 2] REVIEW  awaiting: backend, security`, and for an ending
/// `[round 3] NO_CONSENSUS  reason: max rounds reached`.
pub fn status_line(change: &v1::StatusChange) -> String {
    let mut line = format!("[round {}] {}", change.round, status_name(change.status));
    if !change.awaiting.is_empty() {
        line.push_str("  awaiting: ");
        line.push_str(&change.awaiting.join(", "));
    }
    if !change.reason.is_empty() {
        line.push_str("  reason: ");
        line.push_str(&truncate(first_line(&change.reason), SUMMARY_CHARS));
    }
    line
}

/// The current phase filling up, e.g.
/// `  r2 REVIEW [####...] 4/7  answered: backend, devops, security, supervisor  awaiting: architect, database, frontend`.
pub fn progress_line(p: &v1::Progress) -> String {
    let total = p.answered.len() + p.awaiting.len();
    let bar: String = (0..total)
        .map(|i| if i < p.answered.len() { '#' } else { '.' })
        .collect();
    let mut line = format!(
        "  r{} {} [{bar}] {}/{total}",
        p.round,
        status_name(p.status),
        p.answered.len()
    );
    if !p.answered.is_empty() {
        line.push_str("  answered: ");
        line.push_str(&p.answered.join(", "));
    }
    if !p.awaiting.is_empty() {
        line.push_str("  awaiting: ");
        line.push_str(&p.awaiting.join(", "));
    }
    line
}

/// One live line per transcript entry.
///
/// - a review: `#12 r2 REVIEW security  OBJECT: <first concern> (+1 more)`,
///   `#13 r2 REVIEW backend  APPROVE: v2 (sha256 9f86d081884c)`,
///   `#14 r2 REVIEW devops  INVALID: <first line of content>`;
/// - a proposal version: `#8 r1 SYNTHESIZE supervisor PROPOSAL v1: <first line>`;
/// - anything else: `#3 r1 CONTRIBUTE backend ANALYSIS: <first line>`.
///
/// Texts are cut to [`SUMMARY_CHARS`].
pub fn entry_line(entry: &v1::Entry) -> String {
    let head = format!(
        "#{} r{} {} {}",
        entry.seq,
        entry.round,
        phase_name(entry.phase),
        entry.role
    );
    let content = truncate(first_line(&entry.content), SUMMARY_CHARS);
    if let Some(verdict) = verdict_from_wire(entry.verdict) {
        let detail = match verdict {
            Verdict::Approve if entry.proposal_version > 0 => format!(
                "v{} (sha256 {})",
                entry.proposal_version,
                short_hash(&entry.proposal_hash)
            ),
            Verdict::Object if !entry.concerns.is_empty() => {
                let first = truncate(first_line(&entry.concerns[0]), SUMMARY_CHARS);
                match entry.concerns.len() - 1 {
                    0 => first,
                    more => format!("{first} (+{more} more)"),
                }
            }
            _ => content,
        };
        return format!("{head}  {}", labelled(verdict.as_str(), &detail));
    }
    let mut label = entry_type_name(entry.entry_type).to_string();
    if phase_from_wire(entry.phase) == Some(Phase::Synthesize) && entry.proposal_version > 0 {
        label.push_str(&format!(" v{}", entry.proposal_version));
    }
    format!("{head} {}", labelled(&label, &content))
}

/// The block printed once a followed session has ended:
///
/// ```text
/// result: CONSENSUS after round 2
/// reason: every participant approved v2
/// final proposal: v2 sha256 <64 hex digits>
/// ```
///
/// or, without consensus, the objections still open:
///
/// ```text
/// result: NO_CONSENSUS after round 3
/// reason: max rounds reached
/// open objections:
///   security: mutual TLS between services
/// ```
pub fn outcome(session: &v1::Session) -> String {
    let mut out = format!(
        "result: {} after round {}\n",
        status_name(session.status),
        session.round
    );
    if !session.reason.is_empty() {
        out.push_str(&format!("reason: {}\n", session.reason.trim()));
    }
    if session.final_version > 0 {
        out.push_str(&format!(
            "final proposal: v{} sha256 {}\n",
            session.final_version, session.final_hash
        ));
    }
    if !session.open_objections.is_empty() {
        out.push_str("open objections:\n");
        out.push_str(&objection_lines(&session.open_objections));
    }
    out
}

/// `  role: concern`, one line per objection.
fn objection_lines(objections: &[v1::Objection]) -> String {
    objections
        .iter()
        .map(|o| format!("  {}: {}\n", o.role, o.concern.trim()))
        .collect()
}

/// A plain-text table: columns two spaces apart, padded to their widest cell, the last
/// column unpadded so no line ends in spaces. Every line ends in a newline.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < widths.len() {
                let pad = widths[i] - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A coarse age: `42s`, `5m`, `3h`, `2d`. A timestamp in the future (clock skew
/// between hosts) shows as `0s` rather than a negative age.
pub fn age(elapsed_ms: i64) -> String {
    let secs = elapsed_ms.max(0) / 1000;
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3_600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    }
}

/// `2/3` (round of max rounds), or just `2` when the max is unknown.
fn round_of(round: u32, max_rounds: u32) -> String {
    if max_rounds == 0 {
        round.to_string()
    } else {
        format!("{round}/{max_rounds}")
    }
}

/// Sessions newest first (by creation time, then id), the order `meshctl sessions`
/// prints in both its table and its JSON.
pub fn sort_sessions(sessions: &mut [v1::Session]) {
    sessions.sort_by(|a, b| {
        b.created_ms
            .cmp(&a.created_ms)
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// The `meshctl sessions` table, rows in the order given:
///
/// ```text
/// ID  STATUS  ROUND  ROLES  ENTRIES  UPDATED  TASK
/// s1  REVIEW  2/3    7      14       5s ago   Design a rate limiter
/// ```
pub fn sessions_table(sessions: &[v1::Session], now_ms: i64) -> String {
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                status_name(s.status).to_string(),
                round_of(s.round, s.max_rounds),
                s.roles.len().to_string(),
                s.entry_count.to_string(),
                format!("{} ago", age(now_ms - s.updated_ms)),
                truncate(first_line(&s.task), TASK_CHARS),
            ]
        })
        .collect();
    table(
        &[
            "ID", "STATUS", "ROUND", "ROLES", "ENTRIES", "UPDATED", "TASK",
        ],
        &rows,
    )
}

/// Workers by role, then worker id: the order of both the workers table and its JSON.
pub fn sort_workers(workers: &mut [v1::WorkerInfo]) {
    workers.sort_by(|a, b| {
        a.role
            .cmp(&b.role)
            .then_with(|| a.worker_id.cmp(&b.worker_id))
    });
}

/// The `meshctl workers` table, rows in the order given:
///
/// ```text
/// WORKER     ROLE     LOAD  TURNS  DRAINING  VERSION
/// backend-1  backend  1/4   12     no        0.1.0
/// ```
pub fn workers_table(workers: &[v1::WorkerInfo]) -> String {
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                w.worker_id.clone(),
                w.role.clone(),
                format!("{}/{}", w.load, w.capacity),
                w.turns_completed.to_string(),
                if w.draining { "yes" } else { "no" }.to_string(),
                // The registry's view: a stream to the coordinator, a live lease in etcd.
                match (w.connected, w.leased) {
                    (true, true) => "live",
                    (true, false) => "no lease",
                    (false, true) => "leased only",
                    (false, false) => "gone",
                }
                .to_string(),
                if w.address.is_empty() {
                    "-".to_string()
                } else {
                    w.address.clone()
                },
                w.version.clone(),
            ]
        })
        .collect();
    table(
        &[
            "WORKER", "ROLE", "LOAD", "TURNS", "DRAINING", "STATE", "ADDRESS", "VERSION",
        ],
        &rows,
    )
}

/// One row of [`VerdictMatrix`]: a role's verdict in each of the matrix's rounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerdictRow {
    pub role: String,
    /// Parallel to [`VerdictMatrix::rounds`]; `null` where the role gave no verdict.
    pub verdicts: Vec<Option<Verdict>>,
}

/// Who said what in each review round, computed from the transcript's REVIEW entries.
///
/// Rows are the session's roles in session order (supervisor first), then any other
/// role that reviewed, alphabetically; columns are the rounds that had a review. A role
/// reviewed twice in one round (a reassigned turn) shows its later verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerdictMatrix {
    pub rounds: Vec<u32>,
    pub rows: Vec<VerdictRow>,
}

impl VerdictMatrix {
    pub fn from_transcript(roles: &[String], entries: &[v1::Entry]) -> VerdictMatrix {
        // (role, round) -> verdict; later entries overwrite earlier ones.
        let mut cells: BTreeMap<(&str, u32), Verdict> = BTreeMap::new();
        for entry in entries {
            if let Some(verdict) = verdict_from_wire(entry.verdict) {
                cells.insert((entry.role.as_str(), entry.round), verdict);
            }
        }
        let mut rounds: Vec<u32> = cells.keys().map(|&(_, round)| round).collect();
        rounds.sort_unstable();
        rounds.dedup();

        let mut row_roles: Vec<&str> = roles.iter().map(String::as_str).collect();
        let mut extra: Vec<&str> = cells
            .keys()
            .map(|&(role, _)| role)
            .filter(|role| !row_roles.contains(role))
            .collect();
        extra.dedup(); // keys are sorted by role, so duplicates are adjacent
        row_roles.extend(extra);

        let rows = row_roles
            .into_iter()
            .map(|role| VerdictRow {
                role: role.to_string(),
                verdicts: rounds
                    .iter()
                    .map(|&round| cells.get(&(role, round)).copied())
                    .collect(),
            })
            .collect();
        VerdictMatrix { rounds, rows }
    }

    pub fn is_empty(&self) -> bool {
        self.rounds.is_empty()
    }
}

/// The verdict matrix as a table, one column per review round:
///
/// ```text
/// ROLE        r1      r2
/// supervisor  APPROVE APPROVE
/// security    OBJECT  -
/// ```
pub fn verdict_table(matrix: &VerdictMatrix) -> String {
    let mut headers = vec!["ROLE".to_string()];
    headers.extend(matrix.rounds.iter().map(|r| format!("r{r}")));
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let rows: Vec<Vec<String>> = matrix
        .rows
        .iter()
        .map(|row| {
            std::iter::once(row.role.clone())
                .chain(
                    row.verdicts
                        .iter()
                        .map(|v| v.map_or(NO_VERDICT, Verdict::as_str).to_string()),
                )
                .collect()
        })
        .collect();
    table(&header_refs, &rows)
}

fn utc_time(ms: i64) -> String {
    format!("{} UTC", utc::format_seconds(ms))
}

/// The `meshctl show` text: the session's fields, its roles with the worker holding
/// each, open objections, then the verdict matrix.
///
/// ```text
/// id        s1
/// task      Design a rate limiter
/// status    NO_CONSENSUS
/// round     3 of 3
/// reason    max rounds reached
/// created   2026-11-24 05:30:12 UTC
/// updated   2026-11-24 05:34:50 UTC
/// entries   27
/// tokens    5120 prompt, 830 completion (only when a brain reported token usage)
/// final     v2 sha256 <hash>            (only when a version was agreed)
/// roles
///   supervisor  supervisor-1
///   security    -                       (no worker holds the role now)
/// open objections
///   security: mutual TLS between services
///
/// verdicts
/// ROLE        r1      r2
/// ...
/// ```
pub fn session_details(session: &v1::Session, matrix: &VerdictMatrix) -> String {
    let mut out = String::new();
    let mut field = |label: &str, value: &str| {
        let mut lines = value.trim_end().lines();
        out.push_str(&format!("{label:<9} {}\n", lines.next().unwrap_or("")));
        // Multi-line values (a long task) keep their lines, aligned under the first.
        for line in lines {
            out.push_str(&format!("{:<9} {line}\n", ""));
        }
    };
    field("id", &session.id);
    field("task", &session.task);
    field("status", status_name(session.status));
    let round = if session.max_rounds == 0 {
        session.round.to_string()
    } else {
        format!("{} of {}", session.round, session.max_rounds)
    };
    field("round", &round);
    if !session.reason.is_empty() {
        field("reason", &session.reason);
    }
    field("created", &utc_time(session.created_ms));
    field("updated", &utc_time(session.updated_ms));
    field("entries", &session.entry_count.to_string());
    if session.prompt_tokens + session.completion_tokens > 0 {
        field(
            "tokens",
            &format!(
                "{} prompt, {} completion",
                session.prompt_tokens, session.completion_tokens
            ),
        );
    }
    if session.final_version > 0 {
        field(
            "final",
            &format!("v{} sha256 {}", session.final_version, session.final_hash),
        );
    }

    out.push_str("roles\n");
    let assigned: BTreeMap<&str, &str> = session
        .assignments
        .iter()
        .map(|a| (a.role.as_str(), a.worker_id.as_str()))
        .collect();
    let role_rows: Vec<Vec<String>> = session
        .roles
        .iter()
        .map(|role| {
            let worker = assigned.get(role.as_str()).copied().unwrap_or(NO_VERDICT);
            vec![format!("  {role}"), worker.to_string()]
        })
        .collect();
    // The table's header row is dropped: the `roles` line above names the block.
    let role_table = table(&["", ""], &role_rows);
    out.push_str(role_table.split_once('\n').map_or("", |(_, rest)| rest));

    if !session.open_objections.is_empty() {
        out.push_str("open objections\n");
        out.push_str(&objection_lines(&session.open_objections));
    }

    out.push('\n');
    if matrix.is_empty() {
        out.push_str("verdicts  none yet\n");
    } else {
        out.push_str("verdicts\n");
        out.push_str(&verdict_table(matrix));
    }
    out
}

/// Model tokens one role's entries cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleTokens {
    pub role: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// The model tokens of a session, summed from its transcript: totals and per role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The session's roles in session order, then any other role that wrote an entry,
    /// alphabetically.
    pub by_role: Vec<RoleTokens>,
}

impl TokenUsage {
    pub fn from_transcript(roles: &[String], entries: &[v1::Entry]) -> TokenUsage {
        let mut sums: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for e in entries {
            let sum = sums.entry(e.role.as_str()).or_default();
            sum.0 += e.prompt_tokens;
            sum.1 += e.completion_tokens;
        }
        let mut order: Vec<&str> = roles.iter().map(String::as_str).collect();
        let extra: Vec<&str> = sums
            .keys()
            .copied()
            .filter(|role| !order.contains(role))
            .collect();
        order.extend(extra);
        let by_role: Vec<RoleTokens> = order
            .into_iter()
            .map(|role| {
                let (prompt, completion) = sums.get(role).copied().unwrap_or_default();
                RoleTokens {
                    role: role.to_string(),
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                }
            })
            .collect();
        TokenUsage {
            prompt_tokens: by_role.iter().map(|r| r.prompt_tokens).sum(),
            completion_tokens: by_role.iter().map(|r| r.completion_tokens).sum(),
            by_role,
        }
    }

    /// True when no entry reported any token (scripted brains).
    pub fn is_empty(&self) -> bool {
        self.prompt_tokens + self.completion_tokens == 0
    }
}

/// The per-role token sums `meshctl show` prints after the verdicts; empty when no
/// brain reported token usage.
///
/// ```text
///
/// tokens
/// ROLE        PROMPT  COMPLETION
/// supervisor  3100    610
/// security    2020    220
/// total       5120    830
/// ```
pub fn token_table(usage: &TokenUsage) -> String {
    if usage.is_empty() {
        return String::new();
    }
    let mut rows: Vec<Vec<String>> = usage
        .by_role
        .iter()
        .map(|r| {
            vec![
                r.role.clone(),
                r.prompt_tokens.to_string(),
                r.completion_tokens.to_string(),
            ]
        })
        .collect();
    rows.push(vec![
        "total".to_string(),
        usage.prompt_tokens.to_string(),
        usage.completion_tokens.to_string(),
    ]);
    format!(
        "\ntokens\n{}",
        table(&["ROLE", "PROMPT", "COMPLETION"], &rows)
    )
}

/// One sign-off (an APPROVE) as `meshctl show` marks it: verified only once this
/// process checked the chain up to it and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignOff {
    pub seq: u64,
    pub round: u32,
    pub role: String,
    pub proposal_version: u32,
    /// Hex of the key it is signed with; empty if none.
    pub public_key: String,
    pub verified: bool,
    /// Why it is not verified: the first broken thing up to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// The unanimity certificate as checked here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateCheck {
    pub present: bool,
    pub verified: bool,
    pub approvals: usize,
    /// Hex of the coordinator's key; empty if none.
    pub coordinator_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// Checks every sign-off of an export, and its certificate.
pub fn check_signoffs(doc: &agentmesh_core::export::ExportDoc) -> (Vec<SignOff>, CertificateCheck) {
    use agentmesh_core::verify;
    let checks = verify::check_entries(&doc.session.id, &doc.session.task, &doc.entries);
    let signoffs = doc
        .entries
        .iter()
        .zip(&checks)
        .filter(|(e, _)| e.verdict == Some(Verdict::Approve))
        .map(|(e, check)| SignOff {
            seq: e.seq,
            round: e.round,
            role: e.role.clone(),
            proposal_version: e.proposal_version,
            public_key: e.public_key.clone(),
            verified: check.is_ok(),
            why: check.as_ref().err().map(ToString::to_string),
        })
        .collect();
    let outcome = verify::verify(doc, None);
    let certificate = match &doc.session.certificate {
        None => CertificateCheck {
            present: false,
            verified: false,
            approvals: 0,
            coordinator_key: String::new(),
            why: outcome.err().map(|b| b.to_string()),
        },
        Some(cert) => CertificateCheck {
            present: true,
            verified: outcome.is_ok(),
            approvals: cert.approvals.len(),
            coordinator_key: cert.coordinator_key.map_or(String::new(), |k| k.to_hex()),
            why: outcome.err().map(|b| b.to_string()),
        },
    };
    (signoffs, certificate)
}

/// The sign-offs block of `meshctl show`: each APPROVE, `verified` or `NOT VERIFIED`
/// with why, then the certificate. Empty when there is no sign-off and no certificate.
pub fn signoff_table(signoffs: &[SignOff], certificate: &CertificateCheck) -> String {
    if signoffs.is_empty() && !certificate.present {
        return String::new();
    }
    let short = |key: &str| key.get(..12).unwrap_or(key).to_string();
    let mut out = String::from("\nsign-offs (checked here: chain and signature)\n");
    let rows: Vec<Vec<String>> = signoffs
        .iter()
        .map(|s| {
            let mark = match &s.why {
                None => "verified".to_string(),
                Some(why) => format!("NOT VERIFIED ({why})"),
            };
            vec![
                format!("  #{} r{}", s.seq, s.round),
                s.role.clone(),
                format!("APPROVE v{}", s.proposal_version),
                if s.public_key.is_empty() {
                    "no key".into()
                } else {
                    format!("key {}", short(&s.public_key))
                },
                mark,
            ]
        })
        .collect();
    let signoff_table = table(&["", "", "", "", ""], &rows);
    out.push_str(signoff_table.split_once('\n').map_or("", |(_, rest)| rest));
    if certificate.present {
        match &certificate.why {
            None => out.push_str(&format!(
                "certificate verified: {} approvals, coordinator key {}\n",
                certificate.approvals,
                short(&certificate.coordinator_key)
            )),
            Some(why) => out.push_str(&format!("certificate NOT VERIFIED ({why})\n")),
        }
    }
    out
}

/// What `meshctl verify` prints for a valid export.
pub fn verified(v: &agentmesh_core::verify::Verified) -> String {
    let mut out = format!(
        "valid: session {} ({}), {} entries, chain head {}\n",
        v.session_id, v.status, v.entries, v.chain_head
    );
    out.push_str("  the hash chain is whole and every entry's signature verifies\n");
    if let Some(key) = v.coordinator_key {
        out.push_str(&format!(
            "  certificate: {} approvals, one per participant, of the final hash at the chain head, signed by coordinator key {key}\n",
            v.approvals
        ));
    }
    for (role, keys) in &v.keys {
        let keys: Vec<String> = keys.iter().map(|k| k.to_hex()).collect();
        out.push_str(&format!("  {role:<12} {}\n", keys.join(", ")));
    }
    out.push_str(if v.trusted {
        "  every key is one the trust file names\n"
    } else {
        "  keys not checked against a trust file (--trust FILE)\n"
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, round: u32, phase: v1::Phase, role: &str, ty: v1::EntryType) -> v1::Entry {
        v1::Entry {
            seq,
            round,
            phase: phase as i32,
            role: role.into(),
            worker_id: format!("{role}-1"),
            entry_type: ty as i32,
            timestamp_ms: 1_795_498_212_345,
            ..Default::default()
        }
    }

    fn review(seq: u64, round: u32, role: &str, verdict: v1::Verdict) -> v1::Entry {
        v1::Entry {
            verdict: verdict as i32,
            proposal_version: round,
            proposal_hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
                .into(),
            ..entry(seq, round, v1::Phase::Review, role, v1::EntryType::Review)
        }
    }

    fn session() -> v1::Session {
        v1::Session {
            id: "s1".into(),
            task: "Design a rate limiter".into(),
            roles: vec!["supervisor".into(), "backend".into(), "security".into()],
            max_rounds: 3,
            status: v1::SessionStatus::Review as i32,
            round: 2,
            created_ms: 1_795_498_212_345,
            updated_ms: 1_795_498_272_345,
            entry_count: 14,
            assignments: vec![
                v1::Assignment {
                    role: "supervisor".into(),
                    worker_id: "supervisor-1".into(),
                },
                v1::Assignment {
                    role: "backend".into(),
                    worker_id: "backend-7".into(),
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn truncate_counts_characters_and_marks_the_cut() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("exactly10!", 10), "exactly10!");
        assert_eq!(truncate("abcdefghijk", 10), "abcdefg...");
        // Multi-byte characters are never split.
        assert_eq!(truncate("ééééééééééé", 5), "éé...");
        assert_eq!(truncate("abc   defghijk", 9), "abc...");
    }

    #[test]
    fn first_line_skips_blank_lines() {
        assert_eq!(first_line("\n\n  ## Plan  \nmore"), "## Plan");
        assert_eq!(first_line("   \n"), "");
        assert_eq!(first_line(""), "");
    }

    #[test]
    fn status_line_lists_awaited_roles_and_reason() {
        let change = v1::StatusChange {
            status: v1::SessionStatus::Review as i32,
            round: 2,
            reason: String::new(),
            awaiting: vec!["backend".into(), "security".into()],
        };
        assert_eq!(
            status_line(&change),
            "[round 2] REVIEW  awaiting: backend, security"
        );
        let ended = v1::StatusChange {
            status: v1::SessionStatus::NoConsensus as i32,
            round: 3,
            reason: "max rounds reached\nwith 1 open objection".into(),
            awaiting: vec![],
        };
        assert_eq!(
            status_line(&ended),
            "[round 3] NO_CONSENSUS  reason: max rounds reached"
        );
        let pending = v1::StatusChange {
            status: v1::SessionStatus::Pending as i32,
            ..Default::default()
        };
        assert_eq!(status_line(&pending), "[round 0] PENDING");
    }

    #[test]
    fn contribution_line_shows_the_first_line_cut_to_100_characters() {
        let mut e = entry(
            3,
            1,
            v1::Phase::Contribute,
            "backend",
            v1::EntryType::Analysis,
        );
        e.content = format!("\n{}\nsecond line", "x".repeat(150));
        let line = entry_line(&e);
        assert_eq!(
            line,
            format!("#3 r1 CONTRIBUTE backend ANALYSIS: {}...", "x".repeat(97))
        );
        e.content = "Use token buckets per tenant.".into();
        assert_eq!(
            entry_line(&e),
            "#3 r1 CONTRIBUTE backend ANALYSIS: Use token buckets per tenant."
        );
        e.content = String::new();
        assert_eq!(entry_line(&e), "#3 r1 CONTRIBUTE backend ANALYSIS:");
    }

    #[test]
    fn proposal_line_names_its_version() {
        let mut e = entry(
            8,
            1,
            v1::Phase::Synthesize,
            "supervisor",
            v1::EntryType::Proposal,
        );
        e.proposal_version = 1;
        e.content = "# Proposal v1\nbody".into();
        assert_eq!(
            entry_line(&e),
            "#8 r1 SYNTHESIZE supervisor PROPOSAL v1: # Proposal v1"
        );
    }

    #[test]
    fn review_lines_show_the_verdict() {
        let mut object = review(12, 2, "security", v1::Verdict::Object);
        object.concerns = vec!["mutual TLS between services".into(), "audit log".into()];
        assert_eq!(
            entry_line(&object),
            "#12 r2 REVIEW security  OBJECT: mutual TLS between services (+1 more)"
        );
        object.concerns.truncate(1);
        assert_eq!(
            entry_line(&object),
            "#12 r2 REVIEW security  OBJECT: mutual TLS between services"
        );

        let approve = review(13, 2, "backend", v1::Verdict::Approve);
        assert_eq!(
            entry_line(&approve),
            "#13 r2 REVIEW backend  APPROVE: v2 (sha256 9f86d081884c)"
        );

        let mut invalid = review(14, 2, "devops", v1::Verdict::Invalid);
        invalid.content = "no verdict found in reply".into();
        assert_eq!(
            entry_line(&invalid),
            "#14 r2 REVIEW devops  INVALID: no verdict found in reply"
        );
    }

    #[test]
    fn unknown_wire_enums_print_as_question_marks() {
        let e = v1::Entry {
            seq: 1,
            round: 1,
            phase: 42,
            entry_type: 0,
            role: "x".into(),
            content: "hi".into(),
            ..Default::default()
        };
        assert_eq!(entry_line(&e), "#1 r1 ? x ?: hi");
    }

    #[test]
    fn outcome_of_consensus_names_the_agreed_version() {
        let s = v1::Session {
            status: v1::SessionStatus::Consensus as i32,
            round: 2,
            reason: "every participant approved v2".into(),
            final_version: 2,
            final_hash: "ab".repeat(32),
            ..session()
        };
        assert_eq!(
            outcome(&s),
            format!(
                "result: CONSENSUS after round 2\n\
                 reason: every participant approved v2\n\
                 final proposal: v2 sha256 {}\n",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn outcome_without_consensus_lists_open_objections() {
        let s = v1::Session {
            status: v1::SessionStatus::NoConsensus as i32,
            round: 3,
            reason: "max rounds reached".into(),
            open_objections: vec![
                v1::Objection {
                    role: "security".into(),
                    concern: "mutual TLS between services".into(),
                },
                v1::Objection {
                    role: "devops".into(),
                    concern: "no rollback plan".into(),
                },
            ],
            ..session()
        };
        assert_eq!(
            outcome(&s),
            "result: NO_CONSENSUS after round 3\n\
             reason: max rounds reached\n\
             open objections:\n\
             \x20 security: mutual TLS between services\n\
             \x20 devops: no rollback plan\n"
        );
        let cancelled = v1::Session {
            status: v1::SessionStatus::Cancelled as i32,
            round: 1,
            ..session()
        };
        assert_eq!(outcome(&cancelled), "result: CANCELLED after round 1\n");
    }

    #[test]
    fn token_usage_sums_per_role_and_shows_only_when_metered() {
        let mut entries = vec![
            entry(
                1,
                0,
                v1::Phase::Framing,
                "supervisor",
                v1::EntryType::Framework,
            ),
            entry(
                2,
                1,
                v1::Phase::Contribute,
                "security",
                v1::EntryType::Analysis,
            ),
            entry(
                3,
                1,
                v1::Phase::Synthesize,
                "supervisor",
                v1::EntryType::Proposal,
            ),
            entry(
                4,
                1,
                v1::Phase::Contribute,
                "guest",
                v1::EntryType::Analysis,
            ),
        ];
        let s = session();
        let usage = TokenUsage::from_transcript(&s.roles, &entries);
        assert!(usage.is_empty());
        assert_eq!(token_table(&usage), "");
        assert!(
            !session_details(&s, &VerdictMatrix::from_transcript(&s.roles, &[])).contains("tokens")
        );

        for (e, (p, c)) in entries
            .iter_mut()
            .zip([(100, 10), (50, 5), (200, 20), (1, 1)])
        {
            e.prompt_tokens = p;
            e.completion_tokens = c;
        }
        let usage = TokenUsage::from_transcript(&s.roles, &entries);
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (351, 36));
        assert_eq!(
            token_table(&usage),
            "\ntokens\n\
             ROLE        PROMPT  COMPLETION\n\
             supervisor  300     30\n\
             backend     0       0\n\
             security    50      5\n\
             guest       1       1\n\
             total       351     36\n"
        );
        let metered = v1::Session {
            prompt_tokens: 351,
            completion_tokens: 36,
            ..session()
        };
        let text = session_details(&metered, &VerdictMatrix::from_transcript(&s.roles, &[]));
        assert!(
            text.contains("\ntokens    351 prompt, 36 completion\n"),
            "{text}"
        );
    }

    #[test]
    fn table_pads_columns_but_not_the_last() {
        let rows = vec![
            vec!["a".to_string(), "longer".to_string(), "x".to_string()],
            vec!["bbbb".to_string(), "c".to_string(), "".to_string()],
        ];
        assert_eq!(
            table(&["H1", "H2", "H3"], &rows),
            "H1    H2      H3\n\
             a     longer  x\n\
             bbbb  c\n"
        );
        assert_eq!(table(&["ONLY"], &[]), "ONLY\n");
    }

    #[test]
    fn ages_are_coarse_and_never_negative() {
        assert_eq!(age(-5_000), "0s");
        assert_eq!(age(59_999), "59s");
        assert_eq!(age(60_000), "1m");
        assert_eq!(age(3_599_000), "59m");
        assert_eq!(age(3_600_000), "1h");
        assert_eq!(age(86_400_000 * 3 + 5), "3d");
    }

    #[test]
    fn sessions_table_layout() {
        let mut older = session();
        older.id = "s0".into();
        older.created_ms -= 1000;
        older.status = v1::SessionStatus::Consensus as i32;
        older.max_rounds = 0;
        older.task = format!("{}\nsecond line", "t".repeat(60));
        let mut sessions = vec![older, session()];
        sort_sessions(&mut sessions);
        let now = 1_795_498_272_345 + 5_000;
        assert_eq!(
            sessions_table(&sessions, now),
            format!(
                "ID  STATUS     ROUND  ROLES  ENTRIES  UPDATED  TASK\n\
                 s1  REVIEW     2/3    3      14       5s ago   Design a rate limiter\n\
                 s0  CONSENSUS  2      3      14       5s ago   {}...\n",
                "t".repeat(45)
            )
        );
    }

    #[test]
    fn workers_sort_by_role_then_id() {
        let worker = |id: &str, role: &str, draining: bool| v1::WorkerInfo {
            worker_id: id.into(),
            role: role.into(),
            capacity: 4,
            load: 1,
            version: "0.1.0".into(),
            connected_ms: 0,
            draining,
            turns_completed: 12,
            connected: true,
            leased: !draining,
            address: if draining {
                String::new()
            } else {
                "node-a".into()
            },
        };
        let mut workers = vec![
            worker("security-1", "security", false),
            worker("backend-2", "backend", true),
            worker("backend-10", "backend", false),
        ];
        sort_workers(&mut workers);
        assert_eq!(
            workers_table(&workers),
            "WORKER      ROLE      LOAD  TURNS  DRAINING  STATE     ADDRESS  VERSION\n\
             backend-10  backend   1/4   12     no        live      node-a   0.1.0\n\
             backend-2   backend   1/4   12     yes       no lease  -        0.1.0\n\
             security-1  security  1/4   12     no        live      node-a   0.1.0\n"
        );
    }

    #[test]
    fn verdict_matrix_is_role_by_round_from_reviews_only() {
        let roles = session().roles;
        let mut framework = entry(
            1,
            1,
            v1::Phase::Framing,
            "supervisor",
            v1::EntryType::Framework,
        );
        framework.content = "frame".into();
        let entries = vec![
            framework,
            review(5, 1, "supervisor", v1::Verdict::Approve),
            review(6, 1, "backend", v1::Verdict::Object),
            review(7, 1, "security", v1::Verdict::Invalid),
            review(10, 2, "backend", v1::Verdict::Object),
            // A reassigned turn: the later verdict of the round counts.
            review(11, 2, "backend", v1::Verdict::Approve),
            review(12, 2, "supervisor", v1::Verdict::Approve),
            // A role the session no longer lists still shows, after the listed ones.
            review(13, 2, "auditor", v1::Verdict::Object),
        ];
        let matrix = VerdictMatrix::from_transcript(&roles, &entries);
        assert_eq!(matrix.rounds, vec![1, 2]);
        use Verdict::*;
        let expect = [
            ("supervisor", vec![Some(Approve), Some(Approve)]),
            ("backend", vec![Some(Object), Some(Approve)]),
            ("security", vec![Some(Invalid), None]),
            ("auditor", vec![None, Some(Object)]),
        ];
        let got: Vec<(&str, Vec<Option<Verdict>>)> = matrix
            .rows
            .iter()
            .map(|r| (r.role.as_str(), r.verdicts.clone()))
            .collect();
        assert_eq!(got, expect.to_vec());
        assert_eq!(
            verdict_table(&matrix),
            "ROLE        r1       r2\n\
             supervisor  APPROVE  APPROVE\n\
             backend     OBJECT   APPROVE\n\
             security    INVALID  -\n\
             auditor     -        OBJECT\n"
        );
        let json = serde_json::to_value(&matrix).unwrap();
        assert_eq!(
            json["rows"][2],
            serde_json::json!({"role": "security", "verdicts": ["INVALID", null]})
        );
    }

    #[test]
    fn verdict_matrix_of_a_transcript_without_reviews_is_empty() {
        let matrix = VerdictMatrix::from_transcript(&session().roles, &[]);
        assert!(matrix.is_empty());
        assert_eq!(matrix.rows.len(), 3);
        assert_eq!(
            verdict_table(&matrix),
            "ROLE\nsupervisor\nbackend\nsecurity\n"
        );
    }

    #[test]
    fn session_details_layout() {
        let mut s = session();
        s.status = v1::SessionStatus::NoConsensus as i32;
        s.round = 2;
        s.reason = "max rounds reached".into();
        s.task = "Design a rate limiter\nfor the public API".into();
        s.open_objections = vec![v1::Objection {
            role: "security".into(),
            concern: "mutual TLS".into(),
        }];
        let entries = vec![
            review(5, 1, "supervisor", v1::Verdict::Approve),
            review(6, 1, "security", v1::Verdict::Object),
        ];
        let matrix = VerdictMatrix::from_transcript(&s.roles, &entries);
        assert_eq!(
            session_details(&s, &matrix),
            "id        s1\n\
             task      Design a rate limiter\n\
             \x20         for the public API\n\
             status    NO_CONSENSUS\n\
             round     2 of 3\n\
             reason    max rounds reached\n\
             created   2026-11-24 05:30:12 UTC\n\
             updated   2026-11-24 05:31:12 UTC\n\
             entries   14\n\
             roles\n\
             \x20 supervisor  supervisor-1\n\
             \x20 backend     backend-7\n\
             \x20 security    -\n\
             open objections\n\
             \x20 security: mutual TLS\n\
             \n\
             verdicts\n\
             ROLE        r1\n\
             supervisor  APPROVE\n\
             backend     -\n\
             security    OBJECT\n"
        );
    }

    #[test]
    fn session_details_show_the_agreed_version_and_no_verdicts_yet() {
        let mut s = session();
        s.status = v1::SessionStatus::Consensus as i32;
        s.final_version = 2;
        s.final_hash = "cd".repeat(32);
        let text = session_details(&s, &VerdictMatrix::from_transcript(&s.roles, &[]));
        assert!(text.contains(&format!("\nfinal     v2 sha256 {}\n", "cd".repeat(32))));
        assert!(text.ends_with("\nverdicts  none yet\n"));
        assert!(!text.contains("reason"));
        assert!(!text.contains("open objections"));
    }
}
