//! The agentmesh protocol core: every rule of a negotiation, and nothing else.
//!
//! This crate does no I/O, reads no clock and draws no random numbers. Time and ids
//! come in as inputs, decisions go out as effects. The coordinator feeds it events
//! (a worker was assigned, a result arrived, a worker vanished, time passed) and
//! carries out the effects it returns (dispatch a turn, find a worker, persist an
//! entry). Because it is deterministic, its invariants are checked by property tests
//! over arbitrary interleavings of replies, duplicates, stale and foreign results,
//! disconnects and deadline expiries (`tests/invariants.rs`).
//!
//! # Layout
//!
//! - [`entry`]: the transcript vocabulary — [`Entry`], [`EntryType`], [`Phase`], [`Verdict`].
//! - [`session`]: the session state machine — [`Session`], its [`Input`]s, [`Effect`]s and
//!   [`Rejection`]s. One transition function, [`Session::apply`].
//! - [`export`]: the markdown "communication file" and the lossless JSON export.
//! - [`utc`]: UTC calendar formatting of epoch milliseconds, without a clock.
//! - [`hash`]: the SHA-256 that names a proposal version.
//! - [`trust`]: the canonical encodings, worker signatures, the transcript's hash chain,
//!   the unanimity certificate and the offline verifier (`docs/verification.md`).

pub mod entry;
pub mod export;
pub mod hash;
pub mod session;
pub mod trust;
pub mod utc;
pub mod verify;

pub use entry::{Entry, EntryType, Phase, Verdict};
pub use session::{
    Applied, Effect, Input, Objection, RejectKind, Rejection, Reply, Session, SessionConfig,
    SessionMode, SessionSpec, SessionSummary, Status, TurnKey,
};

/// The role that frames, synthesizes and leads every session.
pub const SUPERVISOR: &str = "supervisor";

/// The specialists a session gets when the client names none.
pub const DEFAULT_SPECIALISTS: [&str; 6] = [
    "backend",
    "frontend",
    "security",
    "architect",
    "devops",
    "database",
];
