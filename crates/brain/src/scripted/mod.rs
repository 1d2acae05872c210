//! The scripted brain: a deterministic negotiator computed from the transcript.
//!
//! It does not replay canned text. Each turn is derived from the task, the role's
//! [catalogue](crate::catalogue) and what the transcript holds so far:
//!
//! | turn | who | what it computes |
//! | --- | --- | --- |
//! | FRAMING | supervisor | goal, constraints, outline and participants from the task and role list |
//! | CONTRIBUTE 1 | specialist | which of its concerns the task triggers, in prose (no requirement sentences) |
//! | SYNTHESIZE k | supervisor | version k: the outline, the analyses, every requirement ever raised in a review, the contributed implementation detail, and the conflicts it could not resolve |
//! | CONTRIBUTE k>1 | specialist | how to implement each of its open objections, or its position on a conflict |
//! | REVIEW | everybody | specialists check each applicable concern against the exact proposal text; the supervisor checks the outline |
//!
//! Nothing here reads a clock or draws a random number; only [`ScriptedBrain`] sleeps
//! for its configured think time before answering, so demos can be watched.

mod specialist;
mod supervisor;

use crate::{Brain, BrainError, BrainFuture, TurnContext};
use agentmesh_core::{Phase, Reply};
use std::time::Duration;

/// A deterministic brain for tests and the demo. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct ScriptedBrain {
    think: Duration,
}

impl ScriptedBrain {
    /// A scripted brain that waits `think` before each reply.
    pub fn new(think: Duration) -> Self {
        ScriptedBrain { think }
    }

    /// The configured think time.
    pub fn think_time(&self) -> Duration {
        self.think
    }
}

impl Brain for ScriptedBrain {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn think(&self, ctx: TurnContext) -> BrainFuture<'_> {
        let think = self.think;
        Box::pin(async move {
            if !think.is_zero() {
                tokio::time::sleep(think).await;
            }
            reply(&ctx)
        })
    }
}

/// The scripted reply to a turn, computed synchronously. [`ScriptedBrain::think`] is
/// this plus the think delay.
pub fn reply(ctx: &TurnContext) -> Result<Reply, BrainError> {
    let is_supervisor = ctx.role == agentmesh_core::SUPERVISOR;
    match ctx.phase {
        Phase::Framing if is_supervisor => Ok(supervisor::frame(ctx)),
        Phase::Synthesize if is_supervisor => Ok(supervisor::synthesize(ctx)),
        Phase::Framing | Phase::Synthesize => Err(BrainError::BadContext(format!(
            "role {:?} was given a {} turn; only the {} frames and synthesizes",
            ctx.role,
            ctx.phase,
            agentmesh_core::SUPERVISOR
        ))),
        Phase::Contribute => Ok(specialist::contribute(ctx)),
        Phase::Review => {
            let proposal = ctx.proposal_under_review()?;
            if is_supervisor {
                Ok(supervisor::review(ctx, proposal))
            } else {
                Ok(specialist::review(ctx, proposal))
            }
        }
    }
}

/// "error contract" → "Error contract".
fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
