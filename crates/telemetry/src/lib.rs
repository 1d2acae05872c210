//! How every agentmesh binary logs and traces: one [`init`] call in each `main.rs`.
//!
//! - **Logs** go to stderr through `tracing`, filtered by `RUST_LOG`, as text (the
//!   default; coloured on a terminal) or JSON lines ([`LogFormat::Json`], see [`json`]),
//!   chosen by `--log-format` or `MESH_LOG_FORMAT`.
//! - **Traces** are exported over OTLP/gRPC (on the tree's one tonic) when a collector is
//!   configured: `--otlp-endpoint` or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` /
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_TRACES_SAMPLER` (+ `_ARG`), `OTEL_EXPORTER_OTLP_TIMEOUT` and `OTEL_BSP_*` are
//!   read as the specification says; `OTEL_SDK_DISABLED=true` or
//!   `OTEL_TRACES_EXPORTER=none` turn it off. Unconfigured, no OpenTelemetry layer is
//!   installed at all and [`enabled`] is false, so the code that builds spans only for
//!   the trace (round and phase spans, a turn's trace context) does nothing.
//! - [`propagation`]: W3C trace context in gRPC metadata and in a turn request.
//! - [`genai`]: every attribute name, exactly as the conventions spell it.

pub mod genai;
pub mod json;
pub mod propagation;

pub use propagation::TraceContext;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::resource::{EnvResourceDetector, TelemetryResourceDetector};
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, FilterExt, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use tracing_opentelemetry::OpenTelemetrySpanExt;

static ENABLED: AtomicBool = AtomicBool::new(false);
static CONTENT: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (a collector is configured). Cheap: one relaxed load.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether prompts and replies go into the trace (`--trace-content`, and tracing on).
pub fn trace_content() -> bool {
    enabled() && CONTENT.load(Ordering::Relaxed)
}

/// How log lines look on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, message, fields, span,
    /// trace_id, span_id.
    Json,
}

/// The logging and tracing flags every binary shares (flatten into its arguments).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TelemetryArgs {
    /// Log lines on stderr as `text` or `json` (one object per line, with the trace and
    /// span id of the line's span when tracing is on).
    #[arg(
        long,
        value_enum,
        env = "MESH_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// Export traces to this OTLP/gRPC collector, e.g. http://127.0.0.1:4317 (default:
    /// OTEL_EXPORTER_OTLP_ENDPOINT; tracing is off when neither is set).
    #[arg(long, value_name = "URL", global = true)]
    pub otlp_endpoint: Option<String>,
}

/// What [`init`] sets up.
#[derive(Debug, Clone)]
pub struct Options {
    /// `service.name` unless `OTEL_SERVICE_NAME` says otherwise: `agentmesh-coordinator`,
    /// `agentmesh-worker`, `meshctl`.
    pub service_name: &'static str,
    /// `service.version`.
    pub service_version: &'static str,
    /// `service.instance.id` (a worker's id; a fresh id elsewhere).
    pub instance_id: String,
    /// More resource attributes (a worker's role).
    pub attributes: Vec<(&'static str, String)>,
    pub log_format: LogFormat,
    /// The `RUST_LOG` default when it is unset (`info`, or `warn` for meshctl).
    pub default_filter: &'static str,
    /// The collector, when given on the command line.
    pub otlp_endpoint: Option<String>,
    /// Model calls record their prompt and reply as bounded span events
    /// ([`trace_content`]); a worker's `--trace-content`.
    pub trace_content: bool,
}

/// Keeps the exporter alive; [`Guard::shutdown`] (or dropping it) sends what is left.
#[must_use = "dropping the guard shuts the exporter down"]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Guard {
    /// Whether spans are exported.
    pub fn tracing(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports every span that has ended and stops the exporter, waiting at most 5 s (a
    /// collector that went away must not hold a CLI's exit).
    pub fn shutdown(&mut self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Some(provider) = self.provider.take() {
            let (done_tx, done) = std::sync::mpsc::channel();
            // Blocking, and possibly called on a runtime thread: on a thread of its own.
            std::thread::spawn(move || {
                let _ = done_tx.send(provider.shutdown());
            });
            match done.recv_timeout(Duration::from_secs(5)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("trace export: {e}"),
                Err(_) => eprintln!("trace export: the collector did not answer within 5s"),
            }
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The collector configured by the flag or the standard environment, unless the
/// environment turns the SDK or the trace exporter off.
fn configured_endpoint(flag: Option<&str>) -> Option<String> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return None;
    }
    flag.map(str::to_string)
        .filter(|v| !v.trim().is_empty())
        .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// Installs the process's subscriber: the log layer (filtered by `RUST_LOG`), and when a
/// collector is configured the OpenTelemetry layer exporting agentmesh's own spans.
/// Call it inside the tokio runtime. An exporter that cannot be built is reported on
/// stderr and tracing stays off: logs never depend on the collector.
pub fn init(options: Options) -> Guard {
    let mut guard = Guard {
        provider: None,
        runtime: None,
    };
    let mut export_error = None;
    if let Some(endpoint) = configured_endpoint(options.otlp_endpoint.as_deref()) {
        match exporter(&options, endpoint) {
            Ok((provider, runtime)) => {
                guard.provider = Some(provider);
                guard.runtime = Some(runtime);
            }
            Err(e) => export_error = Some(e),
        }
    }
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(options.default_filter));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match options.log_format {
        // Colour codes only help a person at a terminal; they garble captured logs.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => logs.event_format(json::JsonLines).boxed(),
    };
    let traces = guard.provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("agentmesh"))
            .with_location(false)
            .with_threads(false)
            .with_level(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            // Parents come from the tracing context; entering a span (every poll of an
            // instrumented future) then costs nothing extra.
            .with_context_activation(false)
            // Spans only: log events stay in the logs (which carry the trace and span
            // id), so a warning that quotes a model's reply never lands in a trace.
            .with_filter(own_targets().and(filter_fn(|meta| meta.is_span())))
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .init();
    ENABLED.store(guard.provider.is_some(), Ordering::Relaxed);
    CONTENT.store(options.trace_content, Ordering::Relaxed);
    if let Some(e) = export_error {
        tracing::error!(error = %e, "cannot set up trace export; tracing is off");
    }
    guard
}

/// The spans and events that go into traces: agentmesh's own, not its libraries'
/// (tonic, h2, hyper: a gRPC exporter tracing its own calls would feed itself).
fn own_targets() -> Targets {
    Targets::new().with_targets([
        ("agentmesh_coordinator", Level::INFO),
        ("agentmesh_worker", Level::INFO),
        ("agentmesh_brain", Level::INFO),
        ("agentmesh_telemetry", Level::INFO),
        ("mesh_coordinator", Level::INFO),
        ("mesh_worker", Level::INFO),
        ("meshctl", Level::INFO),
        ("mesh_bench", Level::INFO),
    ])
}

type ExportError = Box<dyn std::error::Error + Send + Sync>;

/// The tracer provider: the SDK's batch processor (its own thread; an ended span is
/// queued without waking anything until a batch is full or the delay passes) and the
/// OTLP/gRPC exporter, whose calls run on a one-thread runtime of their own
/// ([`OnRuntime`]): tonic needs a tokio reactor, and the application's runtime may be a
/// current thread blocked in shutdown.
fn exporter(
    options: &Options,
    endpoint: String,
) -> Result<(SdkTracerProvider, tokio::runtime::Runtime), ExportError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()?;
    let exporter = {
        let _entered = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()?
    };
    let exporter = OnRuntime {
        inner: std::sync::Arc::new(exporter),
        runtime: runtime.handle().clone(),
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(options))
        .build();
    Ok((provider, runtime))
}

/// An exporter whose exports run as tasks on `runtime`, awaited from the batch
/// processor's thread.
#[derive(Debug)]
struct OnRuntime {
    inner: std::sync::Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
}

impl opentelemetry_sdk::trace::SpanExporter for OnRuntime {
    fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> impl std::future::Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send {
        let inner = self.inner.clone();
        let task = self.runtime.spawn(async move { inner.export(batch).await });
        async move {
            task.await.unwrap_or_else(|e| {
                Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    e.to_string(),
                ))
            })
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called once, while the provider is built: no export holds a clone yet.
        if let Some(inner) = std::sync::Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// The process's resource: ours first, then `OTEL_RESOURCE_ATTRIBUTES`, then
/// `OTEL_SERVICE_NAME` (the environment wins, as the specification says).
fn resource(options: &Options) -> Resource {
    let mut ours = vec![
        KeyValue::new("service.name", options.service_name),
        KeyValue::new("service.version", options.service_version),
        KeyValue::new("service.instance.id", options.instance_id.clone()),
    ];
    ours.extend(
        options
            .attributes
            .iter()
            .map(|(k, v)| KeyValue::new(*k, v.clone())),
    );
    let mut builder = Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes(ours)
        .with_detector(Box::new(EnvResourceDetector::new()));
    if let Ok(name) = std::env::var("OTEL_SERVICE_NAME")
        && !name.trim().is_empty()
    {
        builder = builder.with_service_name(name);
    }
    builder.build()
}

/// A fresh `service.instance.id` for a process that has no id of its own.
pub fn fresh_instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", hasher.finish())
}

/// Marks `span` failed: `error.type` and the span's ERROR status with `message`.
pub fn record_error(span: &tracing::Span, error_type: &str, message: &str) {
    if !enabled() {
        return;
    }
    span.set_attribute(genai::ERROR_TYPE, error_type.to_string());
    span.set_status(opentelemetry::trace::Status::error(message.to_string()));
}

/// Sets a string-array attribute (e.g. `gen_ai.response.finish_reasons`).
pub fn set_strings(span: &tracing::Span, key: &'static str, values: &[String]) {
    if !enabled() || values.is_empty() {
        return;
    }
    let values = values
        .iter()
        .map(|v| opentelemetry::StringValue::from(v.clone()))
        .collect();
    span.set_attribute(
        key,
        opentelemetry::Value::Array(opentelemetry::Array::String(values)),
    );
}

/// Adds a span event with string attributes (opt-in content: `--trace-content`).
pub fn add_event(
    span: &tracing::Span,
    name: &'static str,
    attributes: Vec<(&'static str, String)>,
) {
    if !enabled() {
        return;
    }
    span.add_event(
        name,
        attributes
            .into_iter()
            .map(|(k, v)| KeyValue::new(k, v))
            .collect(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_endpoint_or_a_disabled_sdk_means_no_export() {
        // The flag alone (the environment of this test process sets none of these).
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            && std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
            && std::env::var_os("OTEL_SDK_DISABLED").is_none()
            && std::env::var_os("OTEL_TRACES_EXPORTER").is_none()
        {
            assert_eq!(configured_endpoint(None), None);
            assert_eq!(configured_endpoint(Some(" ")), None);
            assert_eq!(
                configured_endpoint(Some("http://127.0.0.1:4317")).as_deref(),
                Some("http://127.0.0.1:4317")
            );
        }
    }

    #[test]
    fn the_resource_names_the_service_and_the_instance() {
        let options = Options {
            service_name: "agentmesh-worker",
            service_version: "1.2.3",
            instance_id: "backend-1".into(),
            attributes: vec![(genai::MESH_WORKER_ROLE, "backend".into())],
            log_format: LogFormat::Text,
            default_filter: "info",
            otlp_endpoint: None,
            trace_content: false,
        };
        let resource = resource(&options);
        let get = |k: &'static str| resource.get(&opentelemetry::Key::from_static_str(k));
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            assert_eq!(get("service.name").unwrap().as_str(), "agentmesh-worker");
        }
        assert_eq!(get("service.version").unwrap().as_str(), "1.2.3");
        assert_eq!(get("service.instance.id").unwrap().as_str(), "backend-1");
        assert_eq!(get("agentmesh.worker.role").unwrap().as_str(), "backend");
        assert_ne!(fresh_instance_id(), fresh_instance_id());
    }
}
