//! [`ModelBrain`]: the turn logic every model-backed brain shares, over a [`ModelApi`]
//! (OpenAI-compatible, Anthropic Messages, or a command through exec).
//!
//! One turn:
//!
//! 1. Check the context: only the supervisor frames and synthesizes; a review needs the
//!    proposal whose hash it will sign, and that text must hash to it.
//! 2. Build the prompt ([`crate::prompt`]) from the persona and the transcript, within
//!    the budget.
//! 3. Call the model once, under the turn timeout (`--turn-timeout`, shared by every call
//!    and retry of the turn).
//! 4. A text turn needs non-empty text; a review needs a valid verdict
//!    ([`crate::verdict`]). If the output is unusable, call once more with the problem fed
//!    back. A review still invalid after that is recorded as INVALID; an empty text turn
//!    fails.
//! 5. The reply records the prompt and completion tokens of every call of the turn.
//!
//! A call that fails for good (timeout, retries exhausted, a 4xx) fails the turn with a
//! [`BrainError`] saying why; the worker reports it and the coordinator may reassign it.

use crate::persona::Persona;
use crate::prompt::{self, Budget, Instruction, ReviewChannel};
use crate::verdict::{self, ReviewVerdict};
use crate::{Brain, BrainError, BrainFuture, TurnContext};
use agentmesh_core::{Phase, Reply, SUPERVISOR};
use serde_json::Value;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// How long after the turn deadline the outer timeout drops a call that did not stop.
const OUTER_GRACE: Duration = Duration::from_millis(500);

/// Who said a message of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    User,
    Assistant,
}

/// One model call.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRequest {
    pub system: String,
    /// Alternating, starting and ending with the user.
    pub messages: Vec<(Speaker, String)>,
    /// A review turn: ask for a structured verdict.
    pub review: bool,
    /// What the turn is (`frame`, `contribute`, `answer`, `synthesize`, `review`).
    pub instruction: Instruction,
    /// Facts about the turn for APIs that can use them (exec passes them as `MESH_*`
    /// environment variables).
    pub turn_env: Vec<(&'static str, String)>,
}

/// What one model call returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    /// The text of the reply (all text blocks).
    pub text: String,
    /// A structured verdict handed back as tool input (Anthropic's `submit_review`).
    pub tool_input: Option<Value>,
    /// The model stopped at the max-tokens limit.
    pub truncated: bool,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The model that answered, as the response names it (empty when it does not).
    pub response_model: String,
    /// Why the model stopped, as the API says it (`stop`, `length`, `end_turn`, ...).
    pub finish_reasons: Vec<String>,
}

impl Completion {
    /// The verdict this completion carries, validated.
    pub fn verdict(&self) -> Result<ReviewVerdict, String> {
        let parsed = match &self.tool_input {
            Some(input) => verdict::validate(input),
            None => verdict::parse_text(&self.text),
        };
        parsed.map_err(|why| {
            if self.truncated {
                format!("the reply was cut off at the max-tokens limit ({why})")
            } else {
                why
            }
        })
    }

    /// What the model said, as text for a follow-up message or a log.
    pub fn as_text(&self) -> String {
        match &self.tool_input {
            Some(input) => input.to_string(),
            None => self.text.clone(),
        }
    }
}

/// A model endpoint a [`ModelBrain`] can call.
pub trait ModelApi: Send + Sync + 'static {
    /// The brain's name: `openai`, `anthropic`, `exec`.
    fn name(&self) -> &'static str;
    /// The model it asks for (empty when the API has no such notion).
    fn model(&self) -> &str {
        ""
    }
    /// How a review verdict comes back from this API.
    fn review_channel(&self) -> ReviewChannel;
    /// Makes one call; must give up by `deadline`.
    fn complete(
        &self,
        request: &ModelRequest,
        deadline: Instant,
    ) -> impl Future<Output = Result<Completion, BrainError>> + Send;
}

/// Turn settings shared by the model brains.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    /// Bounds the whole turn: every call and retry.
    pub turn_timeout: Duration,
    pub budget: Budget,
}

impl Default for TurnSettings {
    fn default() -> Self {
        TurnSettings {
            turn_timeout: Duration::from_secs(120),
            budget: Budget::tokens(6_000),
        }
    }
}

/// A brain that thinks through a model API. See the [module docs](self).
pub struct ModelBrain<A> {
    api: A,
    persona: Persona,
    settings: TurnSettings,
}

impl<A: ModelApi> ModelBrain<A> {
    pub fn new(api: A, persona: Persona, settings: TurnSettings) -> Self {
        ModelBrain {
            api,
            persona,
            settings,
        }
    }

    pub fn persona(&self) -> &Persona {
        &self.persona
    }

    pub fn api(&self) -> &A {
        &self.api
    }

    /// One turn, as the module docs describe.
    pub async fn turn(&self, ctx: TurnContext) -> Result<Reply, BrainError> {
        check_context(&ctx)?;
        let deadline = Instant::now() + self.settings.turn_timeout;
        let channel = self.api.review_channel();
        let prompt = prompt::build(&self.persona, &ctx, self.settings.budget, channel);
        if prompt.dropped_entries > 0 || prompt.dropped_objections > 0 || prompt.over_budget {
            tracing::debug!(
                session = %ctx.session_id,
                dropped_entries = prompt.dropped_entries,
                dropped_objections = prompt.dropped_objections,
                over_budget = prompt.over_budget,
                "prompt trimmed to the budget"
            );
        }
        let review = ctx.phase == Phase::Review;
        let mut request = ModelRequest {
            system: prompt.system,
            messages: vec![(Speaker::User, prompt.user)],
            review,
            instruction: prompt.instruction,
            turn_env: turn_env(&ctx, prompt.instruction),
        };
        let mut usage = (0u64, 0u64);
        let first = self.call(&request, deadline, &mut usage).await?;

        let outcome = if review {
            match first.verdict() {
                Ok(v) => Ok(verdict::reply(&v, &ctx)),
                Err(why) => {
                    tracing::warn!(session = %ctx.session_id, role = %ctx.role, %why, "invalid verdict; asking again");
                    request
                        .messages
                        .push((Speaker::Assistant, non_empty(first.as_text())));
                    request.messages.push((
                        Speaker::User,
                        verdict::feedback(&why, channel == ReviewChannel::Tool),
                    ));
                    let second = self.call(&request, deadline, &mut usage).await?;
                    match second.verdict() {
                        Ok(v) => Ok(verdict::reply(&v, &ctx)),
                        Err(why) => {
                            tracing::warn!(session = %ctx.session_id, role = %ctx.role, %why, "invalid verdict twice; recording INVALID");
                            Ok(verdict::invalid_reply(&why, &second.as_text(), &ctx))
                        }
                    }
                }
            }
        } else {
            let entry_type = prompt.instruction.entry_type(ctx.round);
            let mut completion = first;
            if completion.text.trim().is_empty() {
                tracing::warn!(session = %ctx.session_id, role = %ctx.role, "empty reply; asking again");
                request
                    .messages
                    .push((Speaker::Assistant, "(empty reply)".to_string()));
                request.messages.push((
                    Speaker::User,
                    "Your reply was empty. Write the requested text now.".to_string(),
                ));
                completion = self.call(&request, deadline, &mut usage).await?;
            }
            let text = completion.text.trim();
            if text.is_empty() {
                Err(BrainError::Failed(format!(
                    "{} returned no text for the {} turn, twice",
                    self.api.name(),
                    prompt.instruction.as_str()
                )))
            } else {
                let mut content = text.to_string();
                if completion.truncated {
                    content.push_str("\n\n[reply cut at the max-tokens limit]");
                }
                Ok(Reply {
                    entry_type: Some(entry_type),
                    content,
                    ..Reply::default()
                })
            }
        };
        outcome.map(|mut reply| {
            reply.prompt_tokens = usage.0;
            reply.completion_tokens = usage.1;
            reply
        })
    }

    async fn call(
        &self,
        request: &ModelRequest,
        deadline: Instant,
        usage: &mut (u64, u64),
    ) -> Result<Completion, BrainError> {
        // The API gives up by `deadline` itself (and says how); this outer bound, a moment
        // later, is the safety net for an API that does not.
        let started = std::time::Instant::now();
        let span = crate::trace::chat_span(self.api.name(), self.api.model());
        let outcome = tracing::Instrument::instrument(
            tokio::time::timeout_at(deadline + OUTER_GRACE, self.api.complete(request, deadline)),
            span.clone(),
        )
        .await;
        crate::trace::chat_outcome(&span, request, outcome.as_ref().ok());
        let observed = |error: Option<&'static str>, tokens: (u64, u64)| {
            crate::observe::model_call(crate::observe::ModelCall {
                provider: self.api.name(),
                model: self.api.model(),
                duration: started.elapsed(),
                error,
                input_tokens: tokens.0,
                output_tokens: tokens.1,
            })
        };
        let completion = match outcome {
            Ok(Ok(completion)) => {
                observed(
                    None,
                    (completion.prompt_tokens, completion.completion_tokens),
                );
                completion
            }
            Ok(Err(e)) => {
                observed(Some(e.kind_name()), (0, 0));
                return Err(e);
            }
            Err(_) => {
                observed(Some("timeout"), (0, 0));
                return Err(BrainError::Failed(format!(
                    "{} call timed out: the turn timeout of {:?} passed",
                    self.api.name(),
                    self.settings.turn_timeout
                )));
            }
        };
        usage.0 += completion.prompt_tokens;
        usage.1 += completion.completion_tokens;
        Ok(completion)
    }
}

impl<A: ModelApi> Brain for ModelBrain<A> {
    fn name(&self) -> &'static str {
        self.api.name()
    }

    fn think(&self, ctx: TurnContext) -> BrainFuture<'_> {
        Box::pin(self.turn(ctx))
    }
}

impl<A: ModelApi + std::fmt::Debug> std::fmt::Debug for ModelBrain<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelBrain")
            .field("api", &self.api)
            .field("persona", &self.persona.source)
            .field("settings", &self.settings)
            .finish()
    }
}

fn non_empty(text: String) -> String {
    if text.trim().is_empty() {
        "(empty reply)".to_string()
    } else {
        text
    }
}

/// Refuses turns that cannot be answered from the context.
pub fn check_context(ctx: &TurnContext) -> Result<(), BrainError> {
    if matches!(ctx.phase, Phase::Framing | Phase::Synthesize) && ctx.role != SUPERVISOR {
        return Err(BrainError::BadContext(format!(
            "role {:?} was given a {} turn; only the {SUPERVISOR} frames and synthesizes",
            ctx.role, ctx.phase
        )));
    }
    if ctx.phase == Phase::Review {
        ctx.proposal_under_review()?;
    }
    Ok(())
}

/// The `MESH_*` facts about a turn.
fn turn_env(ctx: &TurnContext, instruction: Instruction) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("MESH_SESSION_ID", ctx.session_id.clone()),
        ("MESH_ROLE", ctx.role.clone()),
        ("MESH_ROUND", ctx.round.to_string()),
        ("MESH_MAX_ROUNDS", ctx.max_rounds.to_string()),
        ("MESH_PHASE", ctx.phase.as_str().to_string()),
        ("MESH_TURN", instruction.as_str().to_string()),
        ("MESH_ATTEMPT", ctx.attempt.to_string()),
    ];
    if ctx.phase == Phase::Review {
        env.push(("MESH_PROPOSAL_VERSION", ctx.proposal_version.to_string()));
        env.push(("MESH_PROPOSAL_HASH", ctx.proposal_hash.clone()));
        env.push(("MESH_REVIEW_SCHEMA", verdict::schema().to_string()));
    }
    env
}
