//! Brains: what turns one turn's context (role, task, transcript) into a reply.
//!
//! A worker holds one [`Brain`] and calls [`Brain::think`] with a [`TurnContext`] for every
//! turn the coordinator sends it; the returned [`agentmesh_core::Reply`] goes back as the
//! turn's result, and a [`BrainError`] is reported as a failed turn.
//!
//! This crate ships the [`ScriptedBrain`]: deterministic (no randomness, no clock except
//! its optional think delay) and yet a genuine negotiator. Each role has a
//! [catalogue] of concerns with trigger keywords, the exact `requirement`
//! sentence a proposal must contain to settle the concern, and phrases it `forbids`. The
//! supervisor frames the task and writes every proposal version from the transcript;
//! specialists analyse, object with the sentences they need, contribute implementation
//! detail, and approve only when the exact proposal text settles all of their points.
//! [`DEMO_TASK`] reaches consensus in round 2; [`CONFLICT_TASK`] can never reach it.
//!
//! ```
//! use agentmesh_brain::{Brain, DEMO_TASK, ScriptedBrain, Transcript, TurnContext};
//! use agentmesh_core::{EntryType, Phase};
//! use std::time::Duration;
//!
//! let ctx = TurnContext {
//!     session_id: "s-1".into(),
//!     task: DEMO_TASK.into(),
//!     roles: vec!["supervisor".into(), "backend".into(), "security".into()],
//!     max_rounds: 3,
//!     role: "supervisor".into(),
//!     round: 0,
//!     phase: Phase::Framing,
//!     attempt: 1,
//!     transcript: Transcript::default(),
//!     proposal_version: 0,
//!     proposal_hash: String::new(),
//! };
//! let brain = ScriptedBrain::new(Duration::ZERO);
//! let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
//! let reply = rt.block_on(brain.think(ctx)).unwrap();
//! assert_eq!(reply.entry_type, Some(EntryType::Framework));
//! assert!(reply.content.contains("## Deliverable outline"));
//! ```
//!
//! # Layout
//!
//! - [`context`]: [`TurnContext`], the shared [`Transcript`], and the transcript
//!   queries every brain needs —
//!   [`TurnContext::framework`], [`TurnContext::current_proposal`],
//!   [`TurnContext::open_objections`].
//! - [`catalogue`]: the per-role domain concerns (six built-in roles plus a generic
//!   catalogue derived from any other role's name) and how a proposal is checked
//!   against them.
//! - [`objection`]: the written form of a review concern, `[id] <requirement>` with an
//!   optional `— contradicted by: "<phrase>"`, and its parser.
//! - [`scripted`]: the [`ScriptedBrain`] and the per-phase logic of the supervisor and
//!   the specialists.
//! - [`text`]: keyword matching, normalized containment, task titles.
//! - Model-backed brains: [`model`] holds the turn logic they share ([`ModelBrain`] over
//!   a [`model::ModelApi`]); [`openai`] (OpenAI-compatible chat completions),
//!   [`anthropic`] (Messages API) and [`exec`] (any command line) are the APIs;
//!   [`persona`] loads persona files (the system prompt); [`prompt`] builds each turn's
//!   prompt within a budget; [`verdict`] validates structured review verdicts; [`http`]
//!   is the shared POST with timeouts and back-off; [`secret`] keeps API keys out of
//!   logs and errors.
//! - This file: the [`Brain`] trait, [`BrainError`], [`BrainFuture`] and the two demo
//!   tasks.

pub mod anthropic;
pub mod catalogue;
pub mod context;
pub mod exec;
pub mod http;
pub mod model;
pub mod objection;
pub mod observe;
pub mod openai;
pub mod persona;
pub mod prompt;
pub mod scripted;
pub mod secret;
pub mod text;
mod trace;
pub mod verdict;

pub use context::{Transcript, TurnContext};
pub use model::{ModelBrain, TurnSettings};
pub use persona::Persona;
pub use scripted::ScriptedBrain;
pub use secret::ApiKey;

use agentmesh_core::Reply;
use std::future::Future;
use std::pin::Pin;

/// The future a brain returns for one turn.
pub type BrainFuture<'a> = Pin<Box<dyn Future<Output = Result<Reply, BrainError>> + Send + 'a>>;

/// Something that can take turns in a negotiation.
pub trait Brain: Send + Sync + 'static {
    /// A short name for logs and metrics, e.g. `"scripted"`.
    fn name(&self) -> &'static str;

    /// Produces the reply to one turn.
    fn think(&self, ctx: TurnContext) -> BrainFuture<'_>;
}

/// Why a brain could not produce a reply. The worker reports it as a failed turn, and
/// the coordinator retries the turn (up to its attempt limit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrainError {
    /// The brain tried and failed (a model call failed, output was unusable, ...).
    #[error("brain failed: {0}")]
    Failed(String),
    /// The turn cannot be answered from what the brain was given: a role asked to do
    /// another role's turn, or a review of a proposal that is missing or whose text does
    /// not hash to the version under review.
    #[error("cannot take this turn: {0}")]
    BadContext(String),
}

impl BrainError {
    /// A short, bounded name of the failure (metrics labels, `error.type`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            BrainError::Failed(_) => "failed",
            BrainError::BadContext(_) => "bad_context",
        }
    }
}

/// A task the six default specialists settle in exactly two rounds: every specialist
/// objects to version 1 (it carries no requirement sentences yet), and version 2, which
/// adopts all of them, is approved by everyone. No two triggered concerns conflict.
pub const DEMO_TASK: &str = "Design an order-tracking service for a multi-tenant SaaS: \
customers create orders and follow their status live on a web dashboard, staff search the \
order history, and the service runs on Kubernetes with PostgreSQL.";

/// A task with demands that cannot all be met: it triggers security's air-gap concern
/// (no internet egress) and devops' public-image concern (nodes pull from public
/// registries), each of which forbids the other's requirement. Every version from 2 on
/// carries both and trips both, so the session ends NO_CONSENSUS at any `max_rounds`.
pub const CONFLICT_TASK: &str = "Design the container platform for an air-gapped analytics \
cluster at a defence contractor: classified workloads must run fully offline, while the \
operations team wants nodes to track upstream images from Docker Hub so that patches land \
without a manual import step.";
