//! Which brain a worker thinks with, chosen on the command line.
//!
//! `BrainArgs` is flattened into `mesh-worker`'s arguments; [`build`] turns it into the
//! `Brain` the connection loop calls for every turn.

use agentmesh_brain::{Brain, ScriptedBrain};
use clap::{Args, ValueEnum};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BrainKind {
    /// Deterministic negotiation from per-role concern catalogues (tests, demos).
    Scripted,
}

#[derive(Debug, Clone, Args)]
pub struct BrainArgs {
    /// How this worker thinks.
    #[arg(long, value_enum, default_value = "scripted")]
    pub brain: BrainKind,
    /// Delay each scripted turn by this many milliseconds, so a negotiation can be watched.
    #[arg(long, default_value_t = 0)]
    pub think_ms: u64,
}

/// Builds the brain the arguments describe. `role` is the role the worker joins as.
pub fn build(args: &BrainArgs, _role: &str) -> anyhow::Result<Arc<dyn Brain>> {
    Ok(match args.brain {
        BrainKind::Scripted => Arc::new(ScriptedBrain::new(Duration::from_millis(args.think_ms))),
    })
}
