//! A real OTLP/gRPC trace receiver for the tests: the `TraceService` of the official
//! `opentelemetry-proto` crate's generated code (feature `gen-tonic`), served by tonic
//! on a loopback port. It keeps every span it is sent, flattened into [`Span`], and
//! wakes the tests waiting for spans ([`Collector::wait_for`]) on each export.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One received span, with its resource.
#[derive(Debug, Clone)]
pub struct Span {
    /// The resource's `service.name`.
    pub service: String,
    pub resource: BTreeMap<String, Value>,
    /// Hex, as in W3C trace context.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP's `SpanKind`: 1 internal, 2 server, 3 client.
    pub kind: i32,
    pub attributes: BTreeMap<String, Value>,
    /// OTLP's `StatusCode`: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub status_message: String,
    pub events: Vec<(String, BTreeMap<String, Value>)>,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }

    /// A string attribute, or "" when absent.
    pub fn str(&self, key: &str) -> &str {
        self.attr(key).and_then(Value::as_str).unwrap_or("")
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        self.attr(key).and_then(Value::as_i64)
    }
}

pub const KIND_INTERNAL: i32 = 1;
pub const KIND_SERVER: i32 = 2;
pub const KIND_CLIENT: i32 = 3;
pub const STATUS_ERROR: i32 = 2;

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    requests: usize,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Received>,
    changed: Condvar,
}

struct Receiver(Arc<Shared>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = resource
                .get("service.name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Span {
                        service: service.clone(),
                        resource: resource.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name,
                        kind: span.kind,
                        attributes: attributes(&span.attributes),
                        status_code: span.status.as_ref().map_or(0, |s| s.code),
                        status_message: span.status.map(|s| s.message).unwrap_or_default(),
                        events: span
                            .events
                            .iter()
                            .map(|e| (e.name.clone(), attributes(&e.attributes)))
                            .collect(),
                    });
                }
            }
        }
        let mut received = self.0.received.lock().expect("received lock");
        received.requests += 1;
        received.spans.extend(spans);
        self.0.changed.notify_all();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, json)))
        .collect()
}

fn json(value: &AnyValue) -> Value {
    match &value.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => Value::from(*d),
        Some(any_value::Value::ArrayValue(a)) => Value::Array(a.values.iter().map(json).collect()),
        Some(any_value::Value::KvlistValue(kvs)) => Value::Object(
            attributes(&kvs.values)
                .into_iter()
                .collect::<serde_json::Map<_, _>>(),
        ),
        Some(any_value::Value::BytesValue(b)) => Value::String(hex(b)),
        Some(other) => Value::String(format!("{other:?}")),
    }
}

/// The receiver; stopped when dropped.
pub struct Collector {
    /// `http://127.0.0.1:<port>`: what `--otlp-endpoint` takes.
    pub url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Runs the server; dropped (stopping it) with the collector.
    _rt: tokio::runtime::Runtime,
}

impl Collector {
    /// A receiver on an ephemeral loopback port.
    pub fn start() -> Collector {
        Collector::start_on("127.0.0.1:0").expect("bind a loopback port")
    }

    /// A receiver on `addr` (e.g. the OTLP default, 127.0.0.1:4317), if it can be bound.
    pub fn start_on(addr: &str) -> Option<Collector> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr.to_string()))
            .ok()?;
        let url = format!("http://{}", listener.local_addr().ok()?);
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = TraceServiceServer::new(Receiver(shared.clone()));
        rt.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
        });
        Some(Collector {
            url,
            shared,
            stop: Some(stop),
            _rt: rt,
        })
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.shared
            .received
            .lock()
            .expect("received lock")
            .spans
            .clone()
    }

    /// How many export requests arrived (with or without spans).
    pub fn requests(&self) -> usize {
        self.shared.received.lock().expect("received lock").requests
    }

    /// Waits, woken by each export, until `done` holds for the spans received; panics
    /// saying `what` (and what did arrive) after `timeout`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Span]) -> bool,
    ) -> Vec<Span> {
        let deadline = Instant::now() + timeout;
        let mut received = self.shared.received.lock().expect("received lock");
        loop {
            if done(&received.spans) {
                return received.spans.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "no {what} within {timeout:?}; received {} spans: {:?}",
                received.spans.len(),
                received
                    .spans
                    .iter()
                    .map(|s| format!("{}:{}", s.service, s.name))
                    .collect::<Vec<_>>()
            );
            received = self
                .shared
                .changed
                .wait_timeout(received, deadline - now)
                .expect("received lock")
                .0;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
