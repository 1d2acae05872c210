//! End-to-end tests: real `mesh-coordinator`, `mesh-worker` and `meshctl` processes on
//! ephemeral loopback ports, real gRPC between them.
//!
//! # Layout
//!
//! - `negotiation`: sessions to consensus and to no consensus through `meshctl run`,
//!   exports, and ten concurrent sessions spread over two replicas per role.
//! - `faults`: a worker killed mid-turn and replaced by its twin, a missing role,
//!   cancellation, worker drain on SIGTERM, coordinator restart and worker reconnect.
//! - `bad_input`: every refusal has its precise gRPC status and changes nothing.
//! - `service`: gRPC health and reflection, graceful coordinator shutdown.
//! - `cluster`: etcd-backed election, failover, worker leases, etcd restart, `--data-dir`.

mod bad_input;
mod cluster;
mod dashboard;
mod faults;
mod llm;
mod negotiation;
mod service;

/// The supervisor plus the six default specialists.
pub const ALL_ROLES: [&str; 7] = [
    "supervisor",
    "backend",
    "frontend",
    "security",
    "architect",
    "devops",
    "database",
];
