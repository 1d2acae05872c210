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
//! - `observability`: every process scraped by a real Prometheus after a negotiation
//!   (one worker on a mock model that fails once), bounded labels, every panel of the
//!   Grafana dashboard with data.
//! - `autoscaling`: a role's demand through a real Prometheus with the Helm chart's own
//!   KEDA query, from zero replicas and back.
//! - `containers`: the compose cluster of the images (`make images`): a killed leader
//!   container, a worker cut off its network, etcd members stopped, a rolling restart.
//! - `cli_failover`: `meshctl` one-shot commands run the moment the leader is SIGKILLed
//!   wait for the new leader (through etcd and through a standby), and give up after
//!   `--wait` when nobody leads.
//! - `tracing`: one trace per session across meshctl, the coordinator and every worker,
//!   checked against a real OTLP receiver (scripted and model brains), JSON log lines
//!   with the exported trace and span ids, nothing exported while tracing is off.
//! - `auth`: TLS on both ports, tokens and client certificates (SPIFFE IDs), the
//!   permission table on gRPC, the API, SSE and the dashboard's login, a standby that
//!   authenticates before forwarding, etcd over TLS with a user, SIGHUP reloads.
//! - `oversize`: a worker whose reply exceeds the coordinator's `--max-message-bytes`
//!   fails that turn (TurnFailed naming the sizes) and keeps its stream and other sessions.
//! - `verification`: a negotiation with pinned keys, its export checked by `meshctl
//!   verify` and by the Python verifier written from docs/verification.md, and six
//!   tamperings that both refuse at the same seq and field.

mod auth;
mod autoscaling;
mod bad_input;
mod cli_failover;
mod cluster;
mod containers;
mod dashboard;
mod faults;
mod llm;
mod negotiation;
mod observability;
mod oversize;
mod service;
mod tracing;
mod verification;

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
