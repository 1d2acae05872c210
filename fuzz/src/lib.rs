//! The logic of the agentmesh fuzz targets, one module per target; the binaries in
//! `fuzz_targets/` only hand libFuzzer's input to these functions.
//!
//! Every check here is an `assert!`: libFuzzer reports a panic as a crash and keeps the
//! input that caused it. See `fuzz/README.md` for what each target checks.

pub mod fixture;
pub mod persona;
pub mod session;
pub mod verdict;
pub mod wire;
