//! The specialists' turns: analysis, fixes for their own objections, and reviews.

use super::capitalize;
use crate::TurnContext;
use crate::catalogue::{self, Applies, Check};
use crate::objection;
use crate::text::{contains_normalized, count, short_hash};
use agentmesh_core::{EntryType, Reply, Verdict};

/// Marks an implementation line in a contribution; the supervisor copies these.
pub(super) const HOW: &str = "  - How: ";

/// A CONTRIBUTE turn: analysis in round 1, answers to open objections later.
pub(super) fn contribute(ctx: &TurnContext) -> Reply {
    if ctx.round <= 1 {
        analysis(ctx)
    } else {
        answer_objections(ctx)
    }
}

/// Round 1: which of the role's concerns the task triggers, in prose. The requirement
/// sentences are deliberately not written here; they come with the objections.
fn analysis(ctx: &TurnContext) -> Reply {
    let (pushed, deferred) = catalogue::applicable(&ctx.role, &ctx.task);
    let all = catalogue::catalogue(&ctx.role);
    let mut out = format!("## Analysis: {}\n\nTask: {}\n\n", ctx.role, ctx.task);
    if pushed.is_empty() {
        out.push_str(
            "Nothing in my domain is at stake in this task; I will review each version for \
             consistency only.\n",
        );
    } else {
        out.push_str(&format!(
            "From the {} side, {} of the {} I track {} to this task:\n\n",
            ctx.role,
            pushed.len(),
            count(all.len(), "point", "points"),
            if pushed.len() == 1 {
                "applies"
            } else {
                "apply"
            }
        ));
        for (concern, why) in &pushed {
            let why = match why {
                Applies::Always => "applies to every design".to_string(),
                Applies::Mentioned(keyword) => format!("the task mentions \"{keyword}\""),
            };
            out.push_str(&format!(
                "- **{}** (`{}`, {why}): {}\n",
                capitalize(&concern.title),
                concern.id,
                concern.note
            ));
        }
    }
    if !deferred.is_empty() {
        let list: Vec<String> = deferred
            .iter()
            .map(|c| format!("`{}` ({})", c.id, c.title))
            .collect();
        out.push_str(&format!(
            "\nDeferred: {}. Relevant, but not blocking for a first release.\n",
            list.join(", ")
        ));
    }
    let untouched: Vec<String> = all
        .iter()
        .filter(|c| c.applies_to(&ctx.task).is_none())
        .map(|c| format!("`{}`", c.id))
        .collect();
    if !untouched.is_empty() {
        out.push_str(&format!(
            "\nNot triggered by this task: {}.\n",
            untouched.join(", ")
        ));
    }
    if !pushed.is_empty() {
        out.push_str(
            "\nI will object to any version that leaves one of these points undecided, \
             naming the sentence I need the proposal to adopt.\n",
        );
    }
    Reply {
        entry_type: Some(EntryType::Analysis),
        content: out,
        ..Reply::default()
    }
}

/// Rounds k>1: the concrete fix for each of this role's open objections, or a short
/// note that it has none.
fn answer_objections(ctx: &TurnContext) -> Reply {
    let mine: Vec<objection::ParsedConcern> = ctx
        .open_objections()
        .into_iter()
        .filter(|o| o.role == ctx.role)
        .map(|o| objection::parse(&o.concern))
        .collect();
    let reviewed = ctx
        .current_proposal()
        .map(|p| {
            format!(
                "v{} (`{}`)",
                p.proposal_version,
                short_hash(&p.proposal_hash)
            )
        })
        .unwrap_or_else(|| "the last version".to_string());
    if mine.is_empty() {
        let ids: Vec<String> = catalogue::concerns_for(&ctx.role, &ctx.task)
            .into_iter()
            .map(|c| format!("`{}`", c.id))
            .collect();
        let content = format!(
            "## Round {} note: {}\n\nTask: {}\n\nNo open objections from {}: {reviewed} met \
             every point I track ({}). Nothing to add; I will check the next version against \
             the same list.\n",
            ctx.round,
            ctx.role,
            ctx.task,
            ctx.role,
            if ids.is_empty() {
                "none".to_string()
            } else {
                ids.join(", ")
            }
        );
        return Reply {
            entry_type: Some(EntryType::Analysis),
            content,
            ..Reply::default()
        };
    }
    let conflicted = mine.iter().any(|c| c.contradicted_by.is_some());
    let (kind, heading) = if conflicted {
        (EntryType::Proposal, "Proposal")
    } else {
        (EntryType::Implementation, "Implementation")
    };
    let mut out = format!(
        "## {heading}: {}, round {}\n\nTask: {}\n\nAnswers to my {} to {reviewed}:\n\n",
        ctx.role,
        ctx.round,
        ctx.task,
        count(mine.len(), "open objection", "open objections")
    );
    for parsed in &mine {
        let known = parsed
            .id
            .as_deref()
            .and_then(|id| catalogue::find(&ctx.role, id));
        let label = parsed.id.as_deref().unwrap_or("free-form");
        let title = known
            .as_ref()
            .map(|c| capitalize(&c.title))
            .unwrap_or_else(|| "Raised in review".to_string());
        out.push_str(&format!("- **[{label}]** {title}\n"));
        out.push_str(&format!("  - Requirement: {}\n", parsed.requirement));
        if let Some(concern) = &known {
            out.push_str(&format!("{HOW}{}\n", concern.how));
        }
        if let Some(phrase) = &parsed.contradicted_by {
            let source = ctx
                .current_proposal()
                .and_then(|p| decision_saying(&p.content, phrase))
                .map(|label| format!(" in {label}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  - Conflict: the version also says \"{phrase}\"{source}, which rules this \
                 out.\n"
            ));
            let stance = known
                .as_ref()
                .map(|c| c.stance.clone())
                .unwrap_or_else(|| "One of the two statements has to go.".to_string());
            out.push_str(&format!("  - Position: {stance}\n"));
        }
    }
    Reply {
        entry_type: Some(kind),
        content: out,
        ..Reply::default()
    }
}

/// The decision of a proposal that says `phrase`, as "`[id]` (role)" when it can tell.
fn decision_saying(proposal: &str, phrase: &str) -> Option<String> {
    let line = proposal
        .lines()
        .find(|l| l.starts_with("- [") && contains_normalized(l, phrase))?;
    let id = objection::parse(line.trim_start_matches("- ")).id?;
    let owner = line
        .rsplit_once("_(")
        .and_then(|(_, rest)| rest.split_once(','))
        .map(|(role, _)| format!(" ({role})"))
        .unwrap_or_default();
    Some(format!("`[{id}]`{owner}"))
}

/// A specialist's review: every applicable concern checked against the exact text.
pub(super) fn review(ctx: &TurnContext, proposal: &str) -> Reply {
    let concerns = catalogue::concerns_for(&ctx.role, &ctx.task);
    let mut lines = Vec::new();
    let mut unmet = Vec::new();
    for concern in &concerns {
        let check = concern.check(proposal);
        let mark = match &check {
            Check::Met => "- [x]".to_string(),
            Check::Missing => "- [ ]".to_string(),
            Check::Contradicted(_) => "- [!]".to_string(),
        };
        let status = match &check {
            Check::Met => "settled".to_string(),
            Check::Missing => "missing: the requirement sentence is not in this version".into(),
            Check::Contradicted(phrase) => format!("contradicted: the version says \"{phrase}\""),
        };
        lines.push(format!(
            "{mark} `{}` {}: {status}",
            concern.id, concern.title
        ));
        if let Some(text) = concern.objection(&check) {
            unmet.push(text);
        }
    }
    let verdict = if unmet.is_empty() {
        Verdict::Approve
    } else {
        Verdict::Object
    };
    let mut out = format!(
        "## Review of v{} by {}\n\nTask: {}\nHash: `{}` (recomputed from the text)\n\n",
        ctx.proposal_version,
        ctx.role,
        crate::text::title_of(&ctx.task),
        ctx.proposal_hash
    );
    out.push_str(&lines.join("\n"));
    out.push_str("\n\n");
    match verdict {
        Verdict::Approve => out.push_str(&format!(
            "APPROVE: {} settled; I sign this exact version.\n",
            match concerns.len() {
                0 => "nothing of mine is at stake".to_string(),
                1 => "my one point is".to_string(),
                n => format!("all {n} of my points are"),
            }
        )),
        _ => out.push_str(&format!(
            "OBJECT: {} of {} unmet; each concern carries the sentence I need.\n",
            unmet.len(),
            count(concerns.len(), "point", "points")
        )),
    }
    Reply {
        entry_type: Some(EntryType::Review),
        content: out,
        verdict: Some(verdict),
        concerns: unmet,
        proposal_hash: ctx.proposal_hash.clone(),
        signature: Vec::new(),
        ..Reply::default()
    }
}
