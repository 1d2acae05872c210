//! The worker's Prometheus metrics, served at `GET /metrics` on `--metrics-listen ADDR`.
//!
//! | series | meaning |
//! | --- | --- |
//! | `agentmesh_worker_turns_total{role, outcome, code}` | turns by outcome: `accepted`, `duplicate`, `refused` (with the code's name), `failed` (reported as not done) |
//! | `agentmesh_worker_model_call_duration_seconds{provider, model, outcome}` | each model call, `outcome` `ok` or the error's name |
//! | `agentmesh_worker_model_retries_total{provider, cause}` | model calls tried again: `rate_limited`, `server_error`, `connection` |
//! | `agentmesh_worker_tokens_total{type}` | tokens of the turns this worker answered: `input`, `output` |
//! | `gen_ai_client_token_usage{gen_ai_operation_name, gen_ai_provider_name, gen_ai_request_model, gen_ai_token_type}` | the GenAI conventions' token histogram, their bucket boundaries |
//! | `gen_ai_client_operation_duration_seconds{gen_ai_operation_name, gen_ai_provider_name, gen_ai_request_model, error_type}` | the GenAI conventions' call duration histogram, their bucket boundaries |
//! | `agentmesh_worker_sessions_held` | sessions whose transcript this worker keeps |
//! | `agentmesh_worker_turns_in_flight` | turns its brain is working on |
//!
//! Labels are bounded: a worker has one role, its brain one provider and model.

use agentmesh_brain::observe::{ModelCall, ModelObserver, RetryCause};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

/// `gen_ai.client.token.usage` bucket boundaries, as the GenAI semantic conventions give them.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// `gen_ai.client.operation.duration` bucket boundaries (seconds), as the conventions give them.
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

fn token_histogram() -> Histogram {
    Histogram::new(TOKEN_BUCKETS)
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TurnLabels {
    role: String,
    outcome: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    provider: String,
    model: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    provider: String,
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GenAiTokenLabels {
    gen_ai_operation_name: &'static str,
    gen_ai_provider_name: String,
    gen_ai_request_model: String,
    gen_ai_token_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GenAiCallLabels {
    gen_ai_operation_name: &'static str,
    gen_ai_provider_name: String,
    gen_ai_request_model: String,
    /// Empty on success, as the conventions leave `error.type` unset then.
    error_type: &'static str,
}

/// Every family a worker keeps. One per process ([`MEASURES`]).
pub struct WorkerMeasures {
    turns: Family<TurnLabels, Counter>,
    model_calls: Family<CallLabels, Histogram, fn() -> Histogram>,
    retries: Family<RetryLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    gen_ai_tokens: Family<GenAiTokenLabels, Histogram, fn() -> Histogram>,
    gen_ai_duration: Family<GenAiCallLabels, Histogram, fn() -> Histogram>,
    pub sessions_held: Gauge,
    pub turns_in_flight: Gauge,
}

/// The process's measures.
pub static MEASURES: LazyLock<WorkerMeasures> = LazyLock::new(|| WorkerMeasures {
    turns: Family::default(),
    model_calls: Family::new_with_constructor(duration_histogram),
    retries: Family::default(),
    tokens: Family::default(),
    gen_ai_tokens: Family::new_with_constructor(token_histogram),
    gen_ai_duration: Family::new_with_constructor(duration_histogram),
    sessions_held: Gauge::default(),
    turns_in_flight: Gauge::default(),
});

impl WorkerMeasures {
    /// A turn's outcome: `accepted`, `duplicate`, `refused` (with `code`), `failed`.
    pub fn turn(&self, role: &str, outcome: &'static str, code: &str) {
        self.turns
            .get_or_create(&TurnLabels {
                role: role.to_string(),
                outcome,
                code: code.to_string(),
            })
            .inc();
    }

    pub fn tokens(&self, input: u64, output: u64) {
        for (kind, n) in [("input", input), ("output", output)] {
            if n > 0 {
                self.tokens
                    .get_or_create(&TokenLabels { r#type: kind })
                    .inc_by(n);
            }
        }
    }

    fn registry(&self) -> Registry {
        let mut registry = Registry::default();
        registry.register(
            "agentmesh_worker_turns",
            "Turns by outcome (accepted, duplicate, refused with its code, failed)",
            self.turns.clone(),
        );
        registry.register(
            "agentmesh_worker_model_call_duration_seconds",
            "Model calls by provider, model and outcome",
            self.model_calls.clone(),
        );
        registry.register(
            "agentmesh_worker_model_retries",
            "Model calls tried again, by provider and cause",
            self.retries.clone(),
        );
        registry.register(
            "agentmesh_worker_tokens",
            "Tokens of the turns this worker answered, by type (input, output)",
            self.tokens.clone(),
        );
        registry.register(
            "gen_ai_client_token_usage",
            "Number of input and output tokens used (GenAI semantic conventions)",
            self.gen_ai_tokens.clone(),
        );
        registry.register(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration (GenAI semantic conventions)",
            self.gen_ai_duration.clone(),
        );
        registry.register(
            "agentmesh_worker_sessions_held",
            "Sessions whose transcript this worker keeps",
            self.sessions_held.clone(),
        );
        registry.register(
            "agentmesh_worker_turns_in_flight",
            "Turns the brain is working on now",
            self.turns_in_flight.clone(),
        );
        registry
    }

    /// Every series, as Prometheus text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry())
            .expect("writing to a String cannot fail");
        text
    }
}

/// The brains' model calls, recorded into [`MEASURES`].
struct Observer;

impl ModelObserver for Observer {
    fn model_call(&self, call: &ModelCall<'_>) {
        let m = &*MEASURES;
        m.model_calls
            .get_or_create(&CallLabels {
                provider: call.provider.to_string(),
                model: call.model.to_string(),
                outcome: call.error.unwrap_or("ok"),
            })
            .observe(call.duration.as_secs_f64());
        m.gen_ai_duration
            .get_or_create(&GenAiCallLabels {
                gen_ai_operation_name: "chat",
                gen_ai_provider_name: call.provider.to_string(),
                gen_ai_request_model: call.model.to_string(),
                error_type: call.error.unwrap_or(""),
            })
            .observe(call.duration.as_secs_f64());
        if call.error.is_none() {
            for (kind, n) in [("input", call.input_tokens), ("output", call.output_tokens)] {
                m.gen_ai_tokens
                    .get_or_create(&GenAiTokenLabels {
                        gen_ai_operation_name: "chat",
                        gen_ai_provider_name: call.provider.to_string(),
                        gen_ai_request_model: call.model.to_string(),
                        gen_ai_token_type: kind,
                    })
                    .observe(n as f64);
            }
        }
    }

    fn retry(&self, provider: &str, cause: RetryCause) {
        MEASURES
            .retries
            .get_or_create(&RetryLabels {
                provider: provider.to_string(),
                cause: cause.as_str(),
            })
            .inc();
    }
}

/// Records the brains' model calls from now on.
pub fn observe_brains() {
    agentmesh_brain::observe::set_observer(Arc::new(Observer));
}

/// Serves `GET /metrics` (and `GET /healthz`) on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                |request: hyper::Request<hyper::body::Incoming>| async move {
                    let (status, content_type, body) = match request.uri().path() {
                        "/metrics" => (
                            200,
                            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                            MEASURES.render(),
                        ),
                        "/healthz" => (200, "text/plain", "ok\n".to_string()),
                        _ => (404, "text/plain", "not found: try /metrics\n".to_string()),
                    };
                    hyper::Response::builder()
                        .status(status)
                        .header("content-type", content_type)
                        .body(Full::new(Bytes::from(body)))
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds `addr` for [`serve`]; says where.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    // Tests and scripts bind port 0 and read the real address from this line.
    println!("metrics on {}", listener.local_addr()?);
    Ok(listener)
}
