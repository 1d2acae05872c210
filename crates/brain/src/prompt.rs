//! Prompt building: what a model is told for one turn, within a budget.
//!
//! A prompt is a system part (the persona body plus the rules of the negotiation) and a
//! user part with these sections, in this order:
//!
//! 1. **Task** and **Session** (participants, round, phase, who you are).
//! 2. **Framework**: the supervisor's FRAMEWORK entry.
//! 3. **Current proposal**: the last version the supervisor synthesized.
//! 4. **Open objections**: the OBJECT/INVALID concerns of the last complete review round.
//! 5. **Recent entries**: the rest of the transcript, newest kept first.
//! 6. **Your turn**: the instruction for this phase ([`Instruction`]).
//!
//! # Budget
//!
//! The budget counts characters of system plus user text ([`Budget`]; the `--prompt-budget`
//! flag gives it in approximate tokens, four characters each). When it is tight, older
//! detail goes first: recent entries are dropped oldest first (the newest one that does
//! not fit whole is cut), then trailing open objections. The persona, the task, the
//! framework, the current proposal and the instruction are never dropped, so a prompt
//! can exceed a budget smaller than they are; [`Prompt::over_budget`] says so.

use crate::context::TurnContext;
use crate::persona::Persona;
use agentmesh_core::{Entry, EntryType, Phase};

/// Approximate characters per token, for turning a token budget into characters.
pub const CHARS_PER_TOKEN: usize = 4;

/// Below this many characters of room, an entry is dropped rather than cut.
const MIN_CUT: usize = 160;

/// A prompt size limit, in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub chars: usize,
}

impl Budget {
    pub fn chars(chars: usize) -> Budget {
        Budget { chars }
    }

    /// `tokens` approximate tokens ([`CHARS_PER_TOKEN`] characters each).
    pub fn tokens(tokens: usize) -> Budget {
        Budget {
            chars: tokens.saturating_mul(CHARS_PER_TOKEN),
        }
    }
}

/// What a turn asks the model to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instruction {
    /// FRAMING: the supervisor writes the framework.
    Frame,
    /// CONTRIBUTE: analysis (round 1) or text that settles open objections.
    Contribute,
    /// CONTRIBUTE when other roles asked questions in the previous round.
    Answer,
    /// SYNTHESIZE: the supervisor writes the next proposal version.
    Synthesize,
    /// REVIEW: a verdict on the version under review.
    Review,
}

impl Instruction {
    /// The instruction a turn gets.
    pub fn for_turn(ctx: &TurnContext) -> Instruction {
        match ctx.phase {
            Phase::Framing => Instruction::Frame,
            Phase::Synthesize => Instruction::Synthesize,
            Phase::Review => Instruction::Review,
            Phase::Contribute if ctx.round > 1 && !questions_for(ctx).is_empty() => {
                Instruction::Answer
            }
            Phase::Contribute => Instruction::Contribute,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Instruction::Frame => "frame",
            Instruction::Contribute => "contribute",
            Instruction::Answer => "answer",
            Instruction::Synthesize => "synthesize",
            Instruction::Review => "review",
        }
    }

    /// The entry type a text reply to this instruction is recorded as.
    pub fn entry_type(self, round: u32) -> EntryType {
        match self {
            Instruction::Frame => EntryType::Framework,
            Instruction::Contribute if round <= 1 => EntryType::Analysis,
            Instruction::Contribute => EntryType::Proposal,
            Instruction::Answer => EntryType::Answer,
            Instruction::Synthesize => EntryType::Proposal,
            Instruction::Review => EntryType::Review,
        }
    }
}

/// How a review verdict is handed back, which the instruction has to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewChannel {
    /// The reply text is the JSON object (OpenAI-compatible `response_format`, exec).
    JsonReply,
    /// The verdict is the input of the `submit_review` tool (Anthropic).
    Tool,
}

/// One turn's prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub system: String,
    pub user: String,
    pub instruction: Instruction,
    /// Transcript entries left out (or cut) for the budget.
    pub dropped_entries: usize,
    /// Open objections left out for the budget.
    pub dropped_objections: usize,
    /// The parts that are never dropped are larger than the budget on their own.
    pub over_budget: bool,
}

impl Prompt {
    /// Characters of system plus user text.
    pub fn chars(&self) -> usize {
        self.system.chars().count() + self.user.chars().count()
    }
}

/// The rules every participant is told, after its persona.
fn protocol_rules(ctx: &TurnContext) -> String {
    format!(
        "## How this negotiation works\n\
         You take part in an agentmesh negotiation as `{role}`. The supervisor frames the \
         task (FRAMING), specialists contribute (CONTRIBUTE), the supervisor writes a \
         complete proposal version (SYNTHESIZE), and every participant reviews it (REVIEW). \
         The session ends in consensus only when every participant approves the same \
         version; otherwise the open objections carry into the next round, at most {max} \
         rounds.\n\
         Write for the other participants: concrete, specific to this task, no greetings, \
         no talk about being an AI.",
        role = ctx.role,
        max = ctx.max_rounds,
    )
}

/// Builds the prompt for one turn. `review` says how a verdict is handed back.
pub fn build(
    persona: &Persona,
    ctx: &TurnContext,
    budget: Budget,
    review: ReviewChannel,
) -> Prompt {
    let instruction = Instruction::for_turn(ctx);
    let system = format!("{}\n\n{}", persona.body.trim(), protocol_rules(ctx));

    // The parts that are never dropped.
    let mut head = String::new();
    head.push_str("# Task\n");
    head.push_str(ctx.task.trim());
    head.push_str("\n\n# Session\n");
    head.push_str(&format!(
        "Participants: {}. Round {} of at most {}. Phase: {}. You are: {}.\n",
        ctx.roles.join(", "),
        ctx.round,
        ctx.max_rounds,
        ctx.phase,
        ctx.role
    ));
    let framework = ctx.framework();
    if let Some(f) = framework {
        head.push_str(&format!("\n# Framework (by {})\n", f.role));
        head.push_str(f.content.trim());
        head.push('\n');
    }
    let proposal = if ctx.phase == Phase::Review && !ctx.proposal_hash.is_empty() {
        ctx.proposal_by_hash(&ctx.proposal_hash)
            .or(ctx.current_proposal())
    } else {
        ctx.current_proposal()
    };
    if let Some(p) = proposal {
        head.push_str(&format!(
            "\n# Current proposal: version {} (sha256 {})\n",
            p.proposal_version,
            short(&p.proposal_hash)
        ));
        head.push_str(p.content.trim());
        head.push('\n');
    }
    let tail = format!(
        "\n# Your turn: {}\n{}\n",
        instruction.as_str().to_uppercase(),
        instruction_text(instruction, ctx, review)
    );

    let fixed = count(&system) + count(&head) + count(&tail);
    let over_budget = fixed > budget.chars;
    let mut room = budget.chars.saturating_sub(fixed);

    // Open objections: current business, kept before older entries.
    let objections = ctx.open_objections();
    let mut objection_text = String::new();
    let mut dropped_objections = 0;
    if !objections.is_empty() {
        let header = "\n# Open objections (from the last review round)\n";
        let mut lines = Vec::new();
        let mut used = count(header);
        for (i, o) in objections.iter().enumerate() {
            let line = format!("- [{}] {}\n", o.role, one_line(&o.concern));
            let n = count(&line);
            if used + n > room {
                dropped_objections = objections.len() - i;
                break;
            }
            used += n;
            lines.push(line);
        }
        if !lines.is_empty() {
            objection_text.push_str(header);
            for line in lines {
                objection_text.push_str(&line);
            }
            if dropped_objections > 0 {
                let note = format!("- ({dropped_objections} more not shown)\n");
                objection_text.push_str(&note);
                used += count(&note);
            }
            room = room.saturating_sub(used);
        } else {
            dropped_objections = objections.len();
        }
    }

    // Recent entries, newest first until the room runs out.
    let shown_elsewhere = |e: &Entry| {
        framework.is_some_and(|f| f.seq == e.seq) || proposal.is_some_and(|p| p.seq == e.seq)
    };
    let candidates: Vec<&Entry> = ctx
        .transcript
        .iter()
        .filter(|e| !shown_elsewhere(e))
        .collect();
    let header_len = count("\n# Recent entries (oldest first; 0000 earlier entries omitted)\n");
    let mut kept: Vec<String> = Vec::new();
    let mut dropped_entries = 0;
    if !candidates.is_empty() {
        let mut left = room.saturating_sub(header_len);
        for (i, e) in candidates.iter().enumerate().rev() {
            let block = render_entry(e);
            let n = count(&block);
            if n <= left {
                left -= n;
                kept.push(block);
                continue;
            }
            // Cut the newest entry that does not fit whole, if there is room worth it.
            if left >= MIN_CUT {
                kept.push(cut_to(&block, left));
                dropped_entries = i + 1; // this one counts as dropped (cut) too
            } else {
                dropped_entries = i + 1;
            }
            break;
        }
        kept.reverse();
    }

    let mut user = head;
    user.push_str(&objection_text);
    if !kept.is_empty() || dropped_entries > 0 {
        if dropped_entries > 0 {
            user.push_str(&format!(
                "\n# Recent entries (oldest first; {dropped_entries} earlier entries omitted)\n"
            ));
        } else {
            user.push_str("\n# Recent entries (oldest first)\n");
        }
        for block in kept {
            user.push_str(&block);
        }
    }
    user.push_str(&tail);
    Prompt {
        system,
        user,
        instruction,
        dropped_entries,
        dropped_objections,
        over_budget,
    }
}

/// Questions other roles asked in the previous round's CONTRIBUTE phase.
pub fn questions_for(ctx: &TurnContext) -> Vec<&Entry> {
    ctx.transcript
        .iter()
        .filter(|e| {
            e.entry_type == EntryType::Question
                && e.role != ctx.role
                && e.round + 1 == ctx.round
                && e.phase == Phase::Contribute
        })
        .collect()
}

fn instruction_text(instruction: Instruction, ctx: &TurnContext, review: ReviewChannel) -> String {
    let mine: Vec<String> = ctx
        .open_objections()
        .into_iter()
        .filter(|o| o.role == ctx.role)
        .map(|o| one_line(&o.concern))
        .collect();
    match instruction {
        Instruction::Frame => {
            "Write the FRAMEWORK for this task: the goal in one sentence, the hard \
             constraints, what is out of scope, a numbered deliverable outline (the sections \
             every proposal must have), and what you need from each specialist. Markdown. \
             Reply with the framework text only."
                .to_string()
        }
        Instruction::Contribute if ctx.round <= 1 => format!(
            "Write your ANALYSIS as {}: the risks and requirements your domain sees in this \
             task, each requirement as one concrete sentence the proposal should contain. \
             Markdown bullet points. Reply with the analysis only.",
            ctx.role
        ),
        Instruction::Contribute => {
            let focus = if mine.is_empty() {
                "None of the open objections is yours: say briefly what the next version must \
                 keep, and help settle the objections that touch your domain."
                    .to_string()
            } else {
                format!(
                    "Your own open objections: {}. Give the exact text that settles each.",
                    mine.join("; ")
                )
            };
            format!(
                "Contribute to round {}: propose concrete text for the next proposal version \
                 that settles the open objections. {focus} Markdown. Reply with your \
                 contribution only.",
                ctx.round
            )
        }
        Instruction::Answer => {
            let asked: Vec<String> = questions_for(ctx)
                .into_iter()
                .map(|q| format!("{} asked: {}", q.role, one_line(&q.content)))
                .collect();
            format!(
                "Answer the questions other participants asked ({}), from your domain, with \
                 concrete text the next proposal version can adopt. Reply with your answers only.",
                asked.join(" | ")
            )
        }
        Instruction::Synthesize => format!(
            "Write proposal version {}: one complete markdown document that follows the \
             framework's outline, merges the contributions, and adopts every open objection \
             (write the sentence each objector asked for into the right section). Name any \
             conflict you could not resolve in a \"Conflicts\" section. It replaces the \
             previous version entirely. Reply with the document only.",
            ctx.round
        ),
        Instruction::Review => {
            let how = match review {
                ReviewChannel::JsonReply => "Reply with only a JSON object, no other text: \
                     {\"verdict\": \"APPROVE\" or \"OBJECT\", \"concerns\": [\"...\"], \
                     \"summary\": \"...\"}."
                    .to_string(),
                ReviewChannel::Tool => format!(
                    "Submit your review by calling the `{}` tool with verdict \"APPROVE\" or \
                     \"OBJECT\", concerns (a list of strings) and a one-paragraph summary.",
                    crate::verdict::REVIEW_TOOL
                ),
            };
            format!(
                "Review proposal version {} as {}. APPROVE only if you would sign this exact \
                 text: it settles every concern of your domain. Otherwise OBJECT and list each \
                 concern as one actionable sentence the next version can adopt. An APPROVE has \
                 an empty concerns list; an OBJECT has at least one concern. {how}",
                ctx.proposal_version, ctx.role
            )
        }
    }
}

/// An entry as the prompt shows it.
fn render_entry(e: &Entry) -> String {
    let mut out = format!(
        "\n## #{} round {} {} {} {}\n",
        e.seq, e.round, e.phase, e.role, e.entry_type
    );
    if let Some(verdict) = e.verdict {
        out.push_str(&format!(
            "Verdict: {verdict} on version {}\n",
            e.proposal_version
        ));
        for c in &e.concerns {
            out.push_str(&format!("- {}\n", one_line(c)));
        }
    }
    let content = e.content.trim();
    if !content.is_empty() {
        out.push_str(content);
        out.push('\n');
    }
    out
}

/// `text` cut to at most `max` characters, marked as cut.
fn cut_to(text: &str, max: usize) -> String {
    const MARK: &str = "\n[... cut for length]\n";
    let keep = max.saturating_sub(count(MARK));
    let mut out: String = text.chars().take(keep).collect();
    out.push_str(MARK);
    out
}

fn count(text: &str) -> usize {
    text.chars().count()
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentmesh_core::Verdict;

    fn entry(
        seq: u64,
        round: u32,
        phase: Phase,
        role: &str,
        ty: EntryType,
        content: &str,
    ) -> Entry {
        Entry {
            seq,
            round,
            phase,
            role: role.into(),
            worker_id: format!("{role}-1"),
            entry_type: ty,
            timestamp_ms: seq as i64,
            content: content.into(),
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

    fn persona() -> Persona {
        Persona::parse(
            "---\nrole: security\ndescription: d\n---\nYou are the security engineer.",
            "t",
        )
        .unwrap()
    }

    /// Round 2 CONTRIBUTE for security, with a framework, proposal v1, a complete round 1
    /// review with objections, and `n` long round 1 analyses.
    fn ctx(n: usize, entry_len: usize) -> TurnContext {
        let mut t = vec![entry(
            1,
            0,
            Phase::Framing,
            "supervisor",
            EntryType::Framework,
            "FRAMEWORK-TEXT goal and outline",
        )];
        for i in 0..n {
            let seq = t.len() as u64 + 1;
            t.push(entry(
                seq,
                1,
                Phase::Contribute,
                "backend",
                EntryType::Analysis,
                &format!("ANALYSIS-{i} {}", "x".repeat(entry_len)),
            ));
        }
        let seq = t.len() as u64 + 1;
        let mut p = entry(
            seq,
            1,
            Phase::Synthesize,
            "supervisor",
            EntryType::Proposal,
            "PROPOSAL-TEXT version one",
        );
        p.proposal_version = 1;
        p.proposal_hash = agentmesh_core::hash::proposal_hash(&p.content);
        t.push(p);
        for (role, verdict, concerns) in [
            ("supervisor", Verdict::Approve, vec![]),
            (
                "backend",
                Verdict::Object,
                vec!["OBJ-BACKEND needs idempotency keys"],
            ),
            (
                "security",
                Verdict::Object,
                vec!["OBJ-SECURITY scope queries by tenant"],
            ),
        ] {
            let seq = t.len() as u64 + 1;
            let mut r = entry(seq, 1, Phase::Review, role, EntryType::Review, "review");
            r.verdict = Some(verdict);
            r.concerns = concerns.into_iter().map(String::from).collect();
            r.proposal_version = 1;
            t.push(r);
        }
        TurnContext {
            session_id: "s".into(),
            task: "TASK-TEXT design a thing".into(),
            roles: vec!["supervisor".into(), "backend".into(), "security".into()],
            max_rounds: 3,
            role: "security".into(),
            round: 2,
            phase: Phase::Contribute,
            attempt: 1,
            transcript: t.into(),
            proposal_version: 0,
            proposal_hash: String::new(),
        }
    }

    #[test]
    fn a_roomy_budget_keeps_everything() {
        let c = ctx(3, 100);
        let p = build(
            &persona(),
            &c,
            Budget::tokens(10_000),
            ReviewChannel::JsonReply,
        );
        assert_eq!(p.instruction, Instruction::Contribute);
        assert!(p.system.starts_with("You are the security engineer."));
        for needle in [
            "TASK-TEXT",
            "FRAMEWORK-TEXT",
            "PROPOSAL-TEXT",
            "OBJ-BACKEND",
            "OBJ-SECURITY",
            "ANALYSIS-0",
            "ANALYSIS-1",
            "ANALYSIS-2",
            "# Your turn: CONTRIBUTE",
            "Your own open objections: OBJ-SECURITY",
        ] {
            assert!(p.user.contains(needle), "missing {needle}:\n{}", p.user);
        }
        // The framework and proposal are not repeated among the recent entries.
        assert_eq!(p.user.matches("FRAMEWORK-TEXT").count(), 1);
        assert_eq!(p.user.matches("PROPOSAL-TEXT").count(), 1);
        assert_eq!((p.dropped_entries, p.dropped_objections), (0, 0));
        assert!(!p.over_budget);
        assert!(p.chars() <= 40_000);
    }

    #[test]
    fn a_tight_budget_drops_the_oldest_entries_first() {
        let c = ctx(6, 400);
        let full = build(
            &persona(),
            &c,
            Budget::chars(1_000_000),
            ReviewChannel::JsonReply,
        );
        // Room for the fixed parts, the objections and about two analyses.
        let budget = full.chars() - 4 * 420;
        let p = build(
            &persona(),
            &c,
            Budget::chars(budget),
            ReviewChannel::JsonReply,
        );
        assert!(p.chars() <= budget, "{} > {budget}", p.chars());
        assert!(p.dropped_entries >= 3, "{}", p.dropped_entries);
        // Newest kept, oldest gone.
        assert!(p.user.contains("ANALYSIS-5"));
        assert!(!p.user.contains("ANALYSIS-0"));
        assert!(!p.user.contains("ANALYSIS-1"));
        assert!(p.user.contains("earlier entries omitted"));
        // Never dropped: framework, proposal, objections (room enough), instruction.
        for needle in [
            "FRAMEWORK-TEXT",
            "PROPOSAL-TEXT",
            "OBJ-BACKEND",
            "OBJ-SECURITY",
            "# Your turn",
        ] {
            assert!(p.user.contains(needle), "missing {needle}");
        }
        // The review round entries are newer than the analyses, so they survive.
        assert!(p.user.contains("Verdict: OBJECT on version 1"));
    }

    #[test]
    fn framework_and_proposal_survive_any_budget() {
        let c = ctx(4, 300);
        let p = build(&persona(), &c, Budget::chars(10), ReviewChannel::JsonReply);
        assert!(p.over_budget);
        for needle in [
            "TASK-TEXT",
            "FRAMEWORK-TEXT",
            "PROPOSAL-TEXT",
            "# Your turn",
        ] {
            assert!(p.user.contains(needle), "missing {needle}");
        }
        assert!(!p.user.contains("ANALYSIS-"));
        assert_eq!(p.dropped_entries, c.transcript.len() - 2);
        assert_eq!(p.dropped_objections, 2);
        assert!(!p.user.contains("OBJ-BACKEND"));
    }

    #[test]
    fn objections_go_after_entries_and_the_newest_entry_is_cut_not_lost() {
        let c = ctx(1, 3_000);
        let full = build(
            &persona(),
            &c,
            Budget::chars(1_000_000),
            ReviewChannel::JsonReply,
        );
        // Only the analysis (3000+ chars) is too long; the newer review entries fit.
        let budget = full.chars() - 1_000;
        let p = build(
            &persona(),
            &c,
            Budget::chars(budget),
            ReviewChannel::JsonReply,
        );
        assert!(p.chars() <= budget, "{} > {budget}", p.chars());
        assert!(p.user.contains("ANALYSIS-0"), "cut, not dropped");
        assert!(p.user.contains("[... cut for length]"));
        assert_eq!(p.dropped_entries, 1);
        assert_eq!(p.dropped_objections, 0);
    }

    #[test]
    fn the_phase_sets_the_instruction() {
        let mut c = ctx(1, 10);
        c.role = "supervisor".into();
        c.phase = Phase::Framing;
        c.round = 0;
        assert_eq!(Instruction::for_turn(&c), Instruction::Frame);
        c.phase = Phase::Synthesize;
        c.round = 2;
        let p = build(
            &persona(),
            &c,
            Budget::tokens(4000),
            ReviewChannel::JsonReply,
        );
        assert_eq!(p.instruction, Instruction::Synthesize);
        assert!(p.user.contains("Write proposal version 2"));
        c.phase = Phase::Contribute;
        c.round = 1;
        c.role = "security".into();
        assert_eq!(Instruction::for_turn(&c), Instruction::Contribute);
        assert_eq!(Instruction::Contribute.entry_type(1), EntryType::Analysis);
        assert_eq!(Instruction::Contribute.entry_type(2), EntryType::Proposal);

        // A question asked of others in round 1 turns round 2's contribution into answers.
        let seq = c.transcript.len() as u64 + 1;
        c.transcript.push(entry(
            seq,
            1,
            Phase::Contribute,
            "backend",
            EntryType::Question,
            "Which token issuer do we trust?",
        ));
        c.round = 2;
        let p = build(
            &persona(),
            &c,
            Budget::tokens(4000),
            ReviewChannel::JsonReply,
        );
        assert_eq!(p.instruction, Instruction::Answer);
        assert!(p.user.contains("backend asked: Which token issuer"));
        assert_eq!(Instruction::Answer.entry_type(2), EntryType::Answer);

        c.phase = Phase::Review;
        let proposal = c.current_proposal().unwrap().clone();
        c.proposal_version = proposal.proposal_version;
        c.proposal_hash = proposal.proposal_hash;
        let json = build(
            &persona(),
            &c,
            Budget::tokens(4000),
            ReviewChannel::JsonReply,
        );
        assert_eq!(json.instruction, Instruction::Review);
        assert!(json.user.contains("Reply with only a JSON object"));
        let tool = build(&persona(), &c, Budget::tokens(4000), ReviewChannel::Tool);
        assert!(tool.user.contains("`submit_review` tool"));
    }
}
