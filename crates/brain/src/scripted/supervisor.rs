//! The supervisor's turns: the framework, every proposal version, and its structural
//! review.

use super::capitalize;
use super::specialist::HOW;
use crate::TurnContext;
use crate::catalogue;
use crate::objection;
use crate::text::{contains_normalized, count, normalize, short_hash, technologies, title_of};
use agentmesh_core::{Entry, EntryType, Phase, Reply, Verdict};

/// The deliverable outline every framework asks for: (title, what goes in it).
const OUTLINE: [(&str, &str); 6] = [
    (
        "Context and goals",
        "the problem, the users, what success means",
    ),
    ("Architecture", "components, their owners and how they talk"),
    (
        "Interfaces and data",
        "APIs, UI flows, schemas and the data lifecycle",
    ),
    (
        "Security and compliance",
        "access control, isolation, secrets, data protection",
    ),
    (
        "Operations and rollout",
        "delivery, observability, recovery",
    ),
    (
        "Risks and open questions",
        "conflicts, deferred points, anything left undecided",
    ),
];

/// Separates an outline title from its description in the framework.
const OUTLINE_SEP: &str = " — ";
const OUTLINE_HEADING: &str = "## Deliverable outline";
const GOAL_HEADING: &str = "## Goal";
/// The concern id the supervisor uses for a missing outline section.
const OUTLINE_CONCERN: &str = "outline";

/// FRAMING: goal, constraints, deliverable outline and participants.
pub(super) fn frame(ctx: &TurnContext) -> Reply {
    let title = title_of(&ctx.task);
    let specialists: Vec<&str> = ctx.specialists().collect();
    let mut out = format!("# Framework: {title}\n\nTask: {}\n\n", ctx.task);
    out.push_str(&format!(
        "{GOAL_HEADING}\n\nOne design for the task above that all {} participants sign: {} \
         ({}) and the supervisor, within at most {}.\n\n",
        ctx.roles.len().max(specialists.len() + 1),
        count(specialists.len(), "specialist", "specialists"),
        specialists.join(", "),
        count(ctx.max_rounds as usize, "round", "rounds")
    ));
    out.push_str("## Constraints\n\n");
    let tech = technologies(&ctx.task);
    if tech.is_empty() {
        out.push_str("- The task names no technology; the stack is open to proposal.\n");
    } else {
        out.push_str(&format!(
            "- Build on what the task names: {}. Replacing any of it needs a stated reason.\n",
            tech.join(", ")
        ));
    }
    out.push_str(
        "- Scope is the task as written; anything beyond it goes to the last section as an \
         open question.\n\
         - Round 1 is analysis only. Every proposal version is written by the supervisor \
         from the transcript.\n\
         - A review approves one exact version by its SHA-256, or objects with one concern \
         per unmet point, written `[concern-id] <sentence the next version must contain>`.\n\
         - A version is final only when every participant has approved it.\n\n",
    );
    out.push_str(&format!("{OUTLINE_HEADING}\n\n"));
    for (i, (section, what)) in OUTLINE.iter().enumerate() {
        out.push_str(&format!("{}. {section}{OUTLINE_SEP}{what}\n", i + 1));
    }
    out.push_str("\n## Participants\n\n");
    for role in &ctx.roles {
        out.push_str(&format!("- {role}: {}\n", catalogue::focus(role)));
    }
    Reply {
        entry_type: Some(EntryType::Framework),
        content: out,
        ..Reply::default()
    }
}

/// The outline of a framework, as (title, description). Falls back to the default
/// outline when the framework is missing or has none.
fn outline_of(framework: Option<&Entry>) -> Vec<(String, String)> {
    let parsed: Vec<(String, String)> = framework
        .map(|f| {
            f.content
                .lines()
                .skip_while(|l| l.trim() != OUTLINE_HEADING)
                .skip(1)
                .take_while(|l| !l.starts_with("## "))
                .filter_map(|l| {
                    let (number, rest) = l.trim().split_once(". ")?;
                    number.parse::<u32>().ok()?;
                    let (title, what) = rest.split_once(OUTLINE_SEP).unwrap_or((rest, ""));
                    Some((title.trim().to_string(), what.trim().to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    if parsed.is_empty() {
        OUTLINE
            .iter()
            .map(|(t, w)| (t.to_string(), w.to_string()))
            .collect()
    } else {
        parsed
    }
}

fn section_heading(index: usize, title: &str) -> String {
    format!("## {}. {title}", index + 1)
}

/// The outline section a role's decisions belong in.
fn home_section(role: &str, outline: &[(String, String)]) -> usize {
    let preferred = match role {
        "architect" => "Architecture",
        "backend" | "frontend" | "database" => "Interfaces and data",
        "security" => "Security and compliance",
        "devops" => "Operations and rollout",
        agentmesh_core::SUPERVISOR => "Risks and open questions",
        _ => "Architecture",
    };
    outline
        .iter()
        .position(|(title, _)| title == preferred)
        .unwrap_or(outline.len().saturating_sub(1))
}

/// A requirement raised in some review, adopted into every later version.
struct Decision {
    /// The concern id, or the normalized text of a free-form concern.
    key: String,
    id: Option<String>,
    role: String,
    requirement: String,
    first_round: u32,
}

/// Two adopted requirements that rule each other out.
struct Conflict {
    objector: (String, String),
    other: (String, String),
    round: u32,
}

/// What the supervisor reads out of the transcript before writing version `ctx.round`.
struct Digest {
    decisions: Vec<Decision>,
    conflicts: Vec<Conflict>,
    /// Phrases some objection says contradict it, but no adopted decision carries.
    unplaced: Vec<(String, String)>,
    invalid_reviews: Vec<String>,
    /// concern id -> (how, role, round), the latest contribution wins.
    how: Vec<(String, String, String, u32)>,
}

fn digest(ctx: &TurnContext) -> Digest {
    let mut decisions: Vec<Decision> = Vec::new();
    let last_review = ctx.round.saturating_sub(1);
    let mut invalid_reviews = Vec::new();
    for round in 1..ctx.round {
        for entry in ctx.entries_of(round, Phase::Review) {
            match entry.verdict {
                Some(Verdict::Approve) => continue,
                Some(Verdict::Invalid) | None => {
                    if round == last_review {
                        invalid_reviews.push(entry.role.clone());
                    }
                    continue;
                }
                Some(Verdict::Object) => {}
            }
            for concern in &entry.concerns {
                let parsed = objection::parse(concern);
                let structural = entry.role == agentmesh_core::SUPERVISOR
                    && parsed.id.as_deref() == Some(OUTLINE_CONCERN);
                if structural || parsed.requirement.is_empty() {
                    continue;
                }
                let key = parsed
                    .id
                    .clone()
                    .unwrap_or_else(|| normalize(&parsed.requirement));
                match decisions.iter_mut().find(|d| d.key == key) {
                    Some(existing) => existing.requirement = parsed.requirement,
                    None => decisions.push(Decision {
                        key,
                        id: parsed.id,
                        role: entry.role.clone(),
                        requirement: parsed.requirement,
                        first_round: round,
                    }),
                }
            }
        }
    }

    // Objections of the last review that say an adopted sentence contradicts them.
    let mut conflicts: Vec<Conflict> = Vec::new();
    let mut unplaced = Vec::new();
    if last_review >= 1 {
        for objection in ctx.objections_of(last_review) {
            let parsed = objection::parse(&objection.concern);
            let Some(phrase) = parsed.contradicted_by else {
                continue;
            };
            let own_key = parsed
                .id
                .clone()
                .unwrap_or_else(|| normalize(&parsed.requirement));
            let own_id = parsed.id.clone().unwrap_or_else(|| "free-form".into());
            let culprits: Vec<&Decision> = decisions
                .iter()
                .filter(|d| d.key != own_key && contains_normalized(&d.requirement, &phrase))
                .collect();
            if culprits.is_empty() {
                unplaced.push((objection.role.clone(), own_id.clone()));
            }
            for culprit in culprits {
                let other_id = culprit.id.clone().unwrap_or_else(|| "free-form".into());
                let seen = conflicts.iter().any(|c| {
                    (c.objector.1 == own_id && c.other.1 == other_id)
                        || (c.objector.1 == other_id && c.other.1 == own_id)
                });
                if !seen {
                    conflicts.push(Conflict {
                        objector: (objection.role.clone(), own_id.clone()),
                        other: (culprit.role.clone(), other_id),
                        round: last_review,
                    });
                }
            }
        }
    }

    // Implementation detail the specialists contributed in rounds 2..=k.
    let mut how: Vec<(String, String, String, u32)> = Vec::new();
    for round in 2..=ctx.round {
        for entry in ctx.entries_of(round, Phase::Contribute) {
            let mut current: Option<String> = None;
            for line in entry.content.lines() {
                if let Some(rest) = line.strip_prefix("- **[") {
                    current = rest.split_once(']').map(|(id, _)| id.to_string());
                } else if let (Some(text), Some(id)) = (line.strip_prefix(HOW), &current) {
                    how.retain(|(k, ..)| k != id);
                    how.push((
                        id.clone(),
                        text.trim().to_string(),
                        entry.role.clone(),
                        round,
                    ));
                }
            }
        }
    }

    Digest {
        decisions,
        conflicts,
        unplaced,
        invalid_reviews,
        how,
    }
}

/// Round 1 analyses, per role: the concern titles named and the ids deferred.
fn analyses(ctx: &TurnContext) -> Vec<(String, Vec<String>, Vec<String>)> {
    ctx.entries_of(1, Phase::Contribute)
        .into_iter()
        .filter(|e| e.entry_type == EntryType::Analysis)
        .map(|e| {
            let mut titles = Vec::new();
            let mut deferred = Vec::new();
            for line in e.content.lines() {
                if let Some(rest) = line.strip_prefix("- **") {
                    if let Some((title, _)) = rest.split_once("**") {
                        titles.push(title.to_lowercase());
                    }
                } else if let Some(rest) = line.strip_prefix("Deferred: ") {
                    deferred.extend(
                        rest.split('`')
                            .skip(1)
                            .step_by(2)
                            .map(|id| format!("`{id}`")),
                    );
                }
            }
            (e.role.clone(), titles, deferred)
        })
        .collect()
}

/// SYNTHESIZE: proposal version `ctx.round`, computed from the framework and the
/// transcript. Version 1 states direction from the analyses; version k>1 adopts the
/// requirement of every objection raised so far, with the contributed detail.
pub(super) fn synthesize(ctx: &TurnContext) -> Reply {
    let version = ctx.round;
    let previous = version.saturating_sub(1);
    let framework = ctx.framework();
    let outline = outline_of(framework);
    let digest = digest(ctx);
    let analyses = analyses(ctx);
    let title = title_of(&ctx.task);

    let mut sections: Vec<Vec<String>> = vec![Vec::new(); outline.len()];
    let last = outline.len() - 1;

    // 1. Context: goal, participants, what changed.
    let goal = framework
        .and_then(|f| {
            f.content
                .lines()
                .skip_while(|l| l.trim() != GOAL_HEADING)
                .skip(1)
                .find(|l| !l.trim().is_empty())
        })
        .map(str::to_string)
        .unwrap_or_else(|| format!("One design for \"{title}\" that every participant signs."));
    sections[0].push(format!("Goal: {goal}"));
    if version <= 1 {
        sections[0].push(
            "This first version sets direction from the round 1 analyses. It adopts no \
             binding requirements yet: review 1 is where each specialist states the exact \
             sentences it needs."
                .to_string(),
        );
    } else {
        let adopted: Vec<String> = digest
            .decisions
            .iter()
            .filter(|d| d.first_round == previous)
            .map(|d| format!("`{}`", d.id.as_deref().unwrap_or("free-form")))
            .collect();
        sections[0].push(format!(
            "Changes since v{}: adopted {} from review {}{}{}.",
            previous,
            count(adopted.len(), "requirement", "requirements"),
            previous,
            if adopted.is_empty() { "" } else { ": " },
            adopted.join(", ")
        ));
        let contributions: Vec<String> = ctx
            .entries_of(version, Phase::Contribute)
            .into_iter()
            .map(|e| {
                let fixes = e.content.lines().filter(|l| l.starts_with("- **[")).count();
                if fixes == 0 {
                    format!("{} (nothing open)", e.role)
                } else {
                    format!(
                        "{} ({}, {})",
                        e.role,
                        e.entry_type,
                        count(fixes, "answer", "answers")
                    )
                }
            })
            .collect();
        if !contributions.is_empty() {
            sections[0].push(format!(
                "Round {version} contributions: {}.",
                contributions.join("; ")
            ));
        }
    }

    // Version 1: the analyses, summarized in the section each role's decisions will
    // live in. Later versions carry the decisions instead.
    for (role, titles, _) in &analyses {
        if version <= 1 && !titles.is_empty() {
            sections[home_section(role, &outline)]
                .push(format!("- {role} analysis: {}.", titles.join(", ")));
        }
    }

    // Decisions: every requirement any review raised, in the order first raised.
    let mut decided = vec![0usize; outline.len()];
    for decision in &digest.decisions {
        let section = home_section(&decision.role, &outline);
        decided[section] += 1;
        let label = decision.id.as_deref().unwrap_or("free-form");
        let mut text = format!(
            "- [{label}] {} _({}, review {})_",
            decision.requirement, decision.role, decision.first_round
        );
        let detail = decision
            .id
            .as_ref()
            .and_then(|id| digest.how.iter().find(|(k, ..)| k == id));
        if let Some((_, how, ..)) = detail {
            text.push_str(&format!("\n  - How: {how}"));
        }
        sections[section].push(text);
    }
    for (i, n) in decided.iter().enumerate() {
        let has_analysis = analyses
            .iter()
            .any(|(role, titles, _)| !titles.is_empty() && home_section(role, &outline) == i);
        if *n == 0 && has_analysis && i != 0 && i != last {
            sections[i].push(if version <= 1 {
                "Decisions: none yet; the points above become binding once reviewers state them."
                    .to_string()
            } else {
                "Decisions: none requested by the reviews.".to_string()
            });
        }
    }

    // Last section: what could not be settled.
    for conflict in &digest.conflicts {
        sections[last].push(format!(
            "- Unresolved conflict (review {}): {} `{}` and {} `{}` rule each other out. \
             Both stay as stated because neither owner withdrew; the task owner has to \
             relax one of them before both can sign.",
            conflict.round,
            conflict.objector.0,
            conflict.objector.1,
            conflict.other.0,
            conflict.other.1
        ));
    }
    for (role, id) in &digest.unplaced {
        sections[last].push(format!(
            "- {role} `{id}` reports a contradicting statement that no adopted decision \
             carries; needs clarification."
        ));
    }
    for role in &digest.invalid_reviews {
        sections[last].push(format!(
            "- The review of {role} in round {} was invalid; it raised nothing to address.",
            previous
        ));
    }
    let deferred: Vec<String> = analyses.iter().flat_map(|(_, _, d)| d.clone()).collect();
    if !deferred.is_empty() {
        sections[last].push(format!(
            "- Deferred by the specialists, not blocking: {}.",
            deferred.join(", ")
        ));
    }
    if digest.conflicts.is_empty() && digest.unplaced.is_empty() {
        sections[last].push("- No known conflicts between adopted requirements.".to_string());
    }

    let mut out = format!("# Proposal v{version}: {title}\n\nTask: {}\n\n", ctx.task);
    out.push_str(&format!(
        "Written by the supervisor from the framework{} and {}; {} adopted.\n",
        framework
            .map(|f| format!(" (entry #{})", f.seq))
            .unwrap_or_default(),
        count(
            ctx.transcript.len(),
            "transcript entry",
            "transcript entries"
        ),
        count(digest.decisions.len(), "requirement", "requirements")
    ));
    for (i, (section, what)) in outline.iter().enumerate() {
        out.push_str(&format!("\n{}\n\n", section_heading(i, section)));
        if !what.is_empty() {
            out.push_str(&format!("_{}._\n\n", capitalize(what)));
        }
        if sections[i].is_empty() {
            out.push_str("Nothing raised for this section.\n");
        } else {
            out.push_str(&sections[i].join("\n"));
            out.push('\n');
        }
    }
    Reply {
        entry_type: Some(EntryType::Proposal),
        content: out,
        ..Reply::default()
    }
}

/// The supervisor's review: is every outline section of its framework present?
pub(super) fn review(ctx: &TurnContext, proposal: &str) -> Reply {
    let outline = outline_of(ctx.framework());
    let lines: Vec<&str> = proposal.lines().map(str::trim).collect();
    let missing: Vec<String> = outline
        .iter()
        .enumerate()
        .map(|(i, (title, _))| section_heading(i, title))
        .filter(|heading| !lines.contains(&heading.as_str()))
        .collect();
    let conflicts = proposal
        .lines()
        .filter(|l| l.starts_with("- Unresolved conflict"))
        .count();
    let mut out = format!(
        "## Review of v{} by {}\n\nTask: {}\nHash: `{}` (recomputed from the text)\n\n",
        ctx.proposal_version,
        ctx.role,
        title_of(&ctx.task),
        short_hash(&ctx.proposal_hash)
    );
    let concerns: Vec<String> = missing
        .iter()
        .map(|heading| {
            objection::format(
                OUTLINE_CONCERN,
                &format!("The proposal has the framework section \"{heading}\"."),
                None,
            )
        })
        .collect();
    let verdict = if missing.is_empty() {
        out.push_str(&format!(
            "All {} outline sections of the framework are present. {}\n\nAPPROVE: the \
             structure is complete; domain points are for the specialists to judge.\n",
            outline.len(),
            match conflicts {
                0 => "No unresolved conflicts are recorded.".to_string(),
                1 => "1 unresolved conflict is recorded in the last section.".to_string(),
                n => format!("{n} unresolved conflicts are recorded in the last section."),
            }
        ));
        Verdict::Approve
    } else {
        out.push_str(&format!(
            "Missing outline sections: {}.\n\nOBJECT: the next version must have every \
             section of the framework.\n",
            missing.join(", ")
        ));
        Verdict::Object
    };
    Reply {
        entry_type: Some(EntryType::Review),
        content: out,
        verdict: Some(verdict),
        concerns,
        proposal_hash: ctx.proposal_hash.clone(),
        signature: Vec::new(),
        ..Reply::default()
    }
}
