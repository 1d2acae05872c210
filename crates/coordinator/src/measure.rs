//! What the coordinator measures as it works: durations and counts, in `prometheus-client`
//! families that `edge::http::metrics` renders at `/metrics`.
//!
//! Every label is bounded: roles are the sessions' participants (a result naming any
//! other role is counted as `other`), outcomes and codes are fixed sets, and nothing is
//! labelled by session or worker id.

use agentmesh_core::Status;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Seconds, from 1 ms to about 9 minutes: a broadcast round takes a fraction of a
/// millisecond, a model's phase minutes.
fn duration_buckets() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0, 120.0, 300.0, 600.0,
    ])
}

/// Seconds, from 100 µs to 10 s: an fsync on etcd takes milliseconds, an outage seconds.
fn store_buckets() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ])
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ModeLabels {
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RoleLabels {
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum TurnOutcome {
    /// A result was accepted into the transcript.
    accepted,
    /// A result was refused (its `code` says why).
    rejected,
    /// The worker reported it could not do the turn, and the core took the report.
    failed,
    /// The turn's worker was lost; the turn goes to a replica under a new attempt.
    reassigned,
    /// The phase ran out of time with the turn still open.
    timed_out,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TurnLabels {
    pub role: String,
    pub outcome: TurnOutcome,
    /// The kind of a refusal (`ErrorKind::name`: one per gRPC code); empty otherwise.
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TokenLabels {
    pub role: String,
    /// `input` (prompt) or `output` (completion), as the GenAI conventions name them.
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct WatchLabels {
    /// `session` or `mesh`.
    pub stream: &'static str,
}

/// Every family the coordinator keeps. Clones share the same values.
#[derive(Clone)]
pub(crate) struct Measures {
    pub round_duration: Family<ModeLabels, Histogram, fn() -> Histogram>,
    pub phase_duration: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    pub turn_duration: Family<RoleLabels, Histogram, fn() -> Histogram>,
    pub store_write_duration: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    pub sessions: Family<OutcomeLabels, Counter>,
    pub turns: Family<TurnLabels, Counter>,
    pub tokens: Family<TokenLabels, Counter>,
    pub watchers: Family<WatchLabels, Gauge>,
    /// 1 while this coordinator's last probe of the store was answered.
    pub store_reachable: Gauge,
}

impl Default for Measures {
    fn default() -> Self {
        Measures {
            round_duration: Family::new_with_constructor(duration_buckets),
            phase_duration: Family::new_with_constructor(duration_buckets),
            turn_duration: Family::new_with_constructor(duration_buckets),
            store_write_duration: Family::new_with_constructor(store_buckets),
            sessions: Family::default(),
            turns: Family::default(),
            tokens: Family::default(),
            watchers: Family::default(),
            store_reachable: Gauge::default(),
        }
    }
}

impl Measures {
    /// Registers every family (names without the `_total`/unit suffixes prometheus-client
    /// adds itself) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "agentmesh_round_duration_seconds",
            "Time from a round's first turn to its end (the next round's, or the session's)",
            self.round_duration.clone(),
        );
        registry.register(
            "agentmesh_phase_duration_seconds",
            "Time a session spent in each working phase",
            self.phase_duration.clone(),
        );
        registry.register(
            "agentmesh_turn_duration_seconds",
            "Time from a turn's dispatch to its accepted result, by role",
            self.turn_duration.clone(),
        );
        registry.register(
            "agentmesh_store_write_duration_seconds",
            "Time of each store write (a phase's entries and header), by outcome",
            self.store_write_duration.clone(),
        );
        registry.register(
            "agentmesh_sessions",
            "Sessions that ended, by outcome",
            self.sessions.clone(),
        );
        registry.register(
            "agentmesh_turns",
            "Turns by role and outcome (accepted, rejected with its code, failed, reassigned, timed_out)",
            self.turns.clone(),
        );
        registry.register(
            "agentmesh_tokens",
            "Model tokens of accepted entries, by role and type (input, output)",
            self.tokens.clone(),
        );
        registry.register(
            "agentmesh_watchers",
            "Connected watchers, by stream (session, mesh)",
            self.watchers.clone(),
        );
        registry.register(
            "agentmesh_store_reachable",
            "1 while the store answered this coordinator's last probe, 0 otherwise",
            self.store_reachable.clone(),
        );
    }

    pub fn session_ended(&self, status: Status) {
        self.sessions
            .get_or_create(&OutcomeLabels {
                outcome: status_label(status),
            })
            .inc();
    }

    pub fn turn(&self, role: &str, outcome: TurnOutcome, code: &'static str) {
        self.turns
            .get_or_create(&TurnLabels {
                role: role.to_string(),
                outcome,
                code,
            })
            .inc();
    }

    pub fn tokens(&self, role: &str, input: u64, output: u64) {
        for (kind, n) in [("input", input), ("output", output)] {
            if n > 0 {
                self.tokens
                    .get_or_create(&TokenLabels {
                        role: role.to_string(),
                        r#type: kind,
                    })
                    .inc_by(n);
            }
        }
    }

    pub fn store_write(&self, outcome: &'static str, took: Duration) {
        self.store_write_duration
            .get_or_create(&OutcomeLabels { outcome })
            .observe(took.as_secs_f64());
    }

    /// Counts a watcher for as long as the returned guard lives.
    pub fn watching(&self, stream: &'static str) -> Watching {
        let gauge = self.watchers.get_or_create(&WatchLabels { stream }).clone();
        gauge.inc();
        Watching(gauge)
    }
}

/// One connected watcher; dropping it uncounts it.
pub(crate) struct Watching(Gauge);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn status_label(status: Status) -> &'static str {
    match status {
        Status::Consensus => "consensus",
        Status::NoConsensus => "no_consensus",
        Status::Completed => "completed",
        Status::Failed => "failed",
        Status::Cancelled => "cancelled",
        _ => "unfinished",
    }
}
