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
//! - `cluster`: etcd-backed election, standbys that forward clients and are ready while
//!   they reach etcd, failover, worker leases, etcd restart, `--data-dir`.
//! - `autoscaling`: a role's demand through a real Prometheus with the Helm chart's own
//!   KEDA query, from zero replicas and back.
//! - `containers`: the compose cluster of the images (`make images`): a killed leader
//!   container, a worker cut off its network, etcd members stopped, a rolling restart.
//! - `cli_failover`: `meshctl` one-shot commands run the moment the leader is SIGKILLed
//!   wait for the new leader (through etcd and through a standby), and give up after
//!   `--wait` when nobody leads.
//! - `oversize`: a worker whose reply exceeds the coordinator's `--max-message-bytes`
//!   fails that turn (TurnFailed naming the sizes) and keeps its stream and other sessions.

mod autoscaling;
mod bad_input;
mod cli_failover;
mod cluster;
mod containers;
mod dashboard;
mod faults;
mod llm;
mod negotiation;
mod oversize;
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
