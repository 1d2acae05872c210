//! `--log-format json`: one JSON object per line on stderr,
//!
//! ```json
//! {"timestamp":"2026-05-01T10:00:00.123456Z","level":"INFO","target":"agentmesh_coordinator::session",
//!  "message":"status","fields":{"status":"REVIEW","round":2},"span":"phase",
//!  "trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7"}
//! ```
//!
//! `span` is the innermost span the line was logged in; `trace_id` and `span_id` are
//! those of the innermost span that is traced (present only when tracing is on and the
//! line was logged inside a traced span), so a line can be looked up in the trace.

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON line format (see the module docs).
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::with_capacity(32);
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let meta = event.metadata();
        let mut fields = FieldMap::default();
        event.record(&mut fields);
        // Written key by key, in this order (a JSON map would sort them).
        let mut line: Vec<(&str, Value)> = vec![
            ("timestamp", Value::String(timestamp)),
            ("level", Value::String(meta.level().to_string())),
            ("target", Value::String(meta.target().to_string())),
            ("message", Value::String(fields.message.unwrap_or_default())),
            ("fields", Value::Object(fields.fields)),
        ];
        if let Some(span) = ctx.lookup_current() {
            line.push(("span", Value::String(span.name().to_string())));
            if crate::enabled()
                && let Some((trace_id, span_id)) = traced_ids(span.scope().map(|s| s.id()))
            {
                line.push(("trace_id", Value::String(trace_id)));
                line.push(("span_id", Value::String(span_id)));
            }
        }
        let mut text = String::with_capacity(256);
        text.push('{');
        for (i, (key, value)) in line.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push('"');
            text.push_str(key);
            text.push_str("\":");
            text.push_str(&serde_json::to_string(value).map_err(|_| fmt::Error)?);
        }
        text.push('}');
        writeln!(writer, "{text}")
    }
}

/// The trace and span id of the first span in `scope` (innermost first) that is traced.
fn traced_ids(scope: impl Iterator<Item = tracing::span::Id>) -> Option<(String, String)> {
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    for id in scope {
        if let Some(cx) = tracing_opentelemetry::get_otel_context(&id, &dispatch) {
            let sc = cx.span().span_context().clone();
            if sc.is_valid() {
                return Some((sc.trace_id().to_string(), sc.span_id().to_string()));
            }
        }
    }
    None
}

#[derive(Default)]
struct FieldMap {
    message: Option<String>,
    fields: Map<String, Value>,
}

impl FieldMap {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.fields.insert(field.name().to_string(), value);
        }
    }
}

impl Visit for FieldMap {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_an_object_with_the_fields_apart() {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("session", id = "s1");
            let _entered = span.enter();
            tracing::info!(round = 2u32, status = %"REVIEW", ok = true, "status \"quoted\"");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "status \"quoted\"");
        assert_eq!(line["fields"]["round"], 2);
        assert_eq!(line["fields"]["status"], "REVIEW");
        assert_eq!(line["fields"]["ok"], true);
        assert_eq!(line["span"], "session");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(line.get("trace_id").is_none(), "tracing is off");
        assert!(text.starts_with("{\"timestamp\":"), "{text}");
    }
}
