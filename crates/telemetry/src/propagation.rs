//! W3C trace context across processes: into and out of gRPC metadata (a unary call's
//! headers), and as [`TraceContext`], the opaque value a turn carries from the session
//! actor to the worker (`TurnRequest.trace_context`: a stream's metadata exists once, its
//! turns are many).

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A span's trace context in its W3C form (`traceparent`, and `tracestate` when there is
/// one), shared by every turn of a phase. Empty when tracing is off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext(Option<Arc<[(String, String)]>>);

impl TraceContext {
    /// The context of `span`, or an empty one when tracing is off or `span` is not traced.
    pub fn of(span: &tracing::Span) -> TraceContext {
        if !crate::enabled() {
            return TraceContext::default();
        }
        let cx = span.context();
        if !cx.span().span_context().is_valid() {
            return TraceContext::default();
        }
        let mut fields = Vec::with_capacity(2);
        TraceContextPropagator::new().inject_context(&cx, &mut PairInjector(&mut fields));
        if fields.is_empty() {
            return TraceContext::default();
        }
        TraceContext(Some(fields.into()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The wire form: the W3C headers as a map (`TurnRequest.trace_context`).
    pub fn to_map(&self) -> HashMap<String, String> {
        match &self.0 {
            None => HashMap::new(),
            Some(fields) => fields.iter().cloned().collect(),
        }
    }
}

/// The remote parent a map of W3C headers names (none if it names none).
pub fn extract_map(map: &HashMap<String, String>) -> Context {
    TraceContextPropagator::new().extract(map)
}

/// Makes `span` a child of the remote context in `map`, when tracing is on and the map
/// holds one.
pub fn set_parent_from_map(span: &tracing::Span, map: &HashMap<String, String>) {
    if crate::enabled() && !map.is_empty() {
        let _ = span.set_parent(extract_map(map));
    }
}

/// Writes the current span's context into a request's metadata (`traceparent`).
pub fn inject_metadata(span: &tracing::Span, metadata: &mut MetadataMap) {
    if !crate::enabled() {
        return;
    }
    let cx = span.context();
    TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
}

/// The remote parent a request's metadata names (its headers: gRPC metadata is HTTP/2
/// headers).
pub fn extract_metadata(metadata: &MetadataMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(metadata.as_ref()))
}

/// Makes `span` a child of the context in `metadata`, when tracing is on and there is one.
pub fn set_parent_from_metadata(span: &tracing::Span, metadata: &MetadataMap) {
    set_parent_from_headers(span, metadata.as_ref());
}

/// Makes `span` a child of the context an HTTP request's headers name (`traceparent`),
/// when tracing is on and there is one: the JSON API's, and through
/// [`set_parent_from_metadata`] the gRPC API's.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &tonic::codegen::http::HeaderMap) {
    if !crate::enabled() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The trace and span id of `span` as W3C hex, when it is traced.
pub fn ids_of(span: &tracing::Span) -> Option<(String, String)> {
    if !crate::enabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

struct PairInjector<'a>(&'a mut Vec<(String, String)>);

impl Injector for PairInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a tonic::codegen::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_in_metadata_or_a_map_names_the_remote_parent() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut metadata = MetadataMap::new();
        metadata.insert("traceparent", traceparent.parse().unwrap());
        let cx = extract_metadata(&metadata);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");

        let map = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
        let sc = extract_map(&map).span().span_context().clone();
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(
            !extract_map(&HashMap::new())
                .span()
                .span_context()
                .is_valid()
        );
    }

    #[test]
    fn with_tracing_off_nothing_is_carried() {
        assert!(TraceContext::of(&tracing::Span::current()).is_empty());
        assert!(TraceContext::default().to_map().is_empty());
        let mut metadata = MetadataMap::new();
        inject_metadata(&tracing::Span::current(), &mut metadata);
        assert!(metadata.is_empty());
    }
}
