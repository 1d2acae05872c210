//! A model call's span: `chat {model}` (CLIENT), under the worker's `invoke_agent` span,
//! with the GenAI request and response attributes. With `--trace-content` it also holds
//! one `gen_ai.client.inference.operation.details` event with the system instructions,
//! the input messages and the output, each cut to `genai::CONTENT_LIMIT` bytes; without
//! it, no text of the prompt or the reply is recorded. Built only while tracing is on.
//!
//! `error.type` on a failed call: `timeout`, `connection`, the HTTP status code (`429`,
//! `500`, ...), `invalid_response`, or the brain error's kind (`failed`).

use crate::BrainError;
use crate::model::{Completion, ModelRequest, Speaker};
use agentmesh_telemetry::genai::{
    self, EVENT_INFERENCE_DETAILS, GEN_AI_INPUT_MESSAGES, GEN_AI_OPERATION_NAME,
    GEN_AI_OUTPUT_MESSAGES, GEN_AI_PROVIDER_NAME, GEN_AI_REQUEST_MODEL, GEN_AI_RESPONSE_MODEL,
    GEN_AI_SYSTEM_INSTRUCTIONS, GEN_AI_USAGE_INPUT_TOKENS, GEN_AI_USAGE_OUTPUT_TOKENS, OP_CHAT,
};
use serde_json::json;
use tracing::field::Empty;

/// The span of one model call (`Span::none()` while tracing is off).
pub(crate) fn chat_span(provider: &'static str, model: &str) -> tracing::Span {
    if !agentmesh_telemetry::enabled() {
        return tracing::Span::none();
    }
    let name = if model.is_empty() {
        OP_CHAT.to_string()
    } else {
        format!("{OP_CHAT} {model}")
    };
    let span = tracing::info_span!(
        "chat",
        otel.name = name,
        otel.kind = "client",
        { GEN_AI_OPERATION_NAME } = OP_CHAT,
        { GEN_AI_PROVIDER_NAME } = provider,
        { GEN_AI_REQUEST_MODEL } = Empty,
        { GEN_AI_RESPONSE_MODEL } = Empty,
        { GEN_AI_USAGE_INPUT_TOKENS } = Empty,
        { GEN_AI_USAGE_OUTPUT_TOKENS } = Empty,
    );
    if !model.is_empty() {
        span.record(GEN_AI_REQUEST_MODEL, model);
    }
    span
}

/// Records how the call ended: on success the response model, finish reasons and
/// token usage; on failure `error.type` and the ERROR status. `None` is a call the
/// outer bound timed out.
pub(crate) fn chat_outcome(
    span: &tracing::Span,
    request: &ModelRequest,
    outcome: Option<&Result<Completion, BrainError>>,
) {
    if span.is_none() {
        return;
    }
    match outcome {
        Some(Ok(completion)) => {
            if !completion.response_model.is_empty() {
                span.record(GEN_AI_RESPONSE_MODEL, completion.response_model.as_str());
            }
            // As i64: tracing-opentelemetry exports other integer types as text.
            span.record(GEN_AI_USAGE_INPUT_TOKENS, completion.prompt_tokens as i64);
            span.record(
                GEN_AI_USAGE_OUTPUT_TOKENS,
                completion.completion_tokens as i64,
            );
            agentmesh_telemetry::set_strings(
                span,
                genai::GEN_AI_RESPONSE_FINISH_REASONS,
                &completion.finish_reasons,
            );
        }
        Some(Err(e)) => {
            let message = e.to_string();
            agentmesh_telemetry::record_error(span, error_type(e, &message), &message);
        }
        None => agentmesh_telemetry::record_error(span, "timeout", "the turn timeout passed"),
    }
    if agentmesh_telemetry::trace_content() {
        content_event(span, request, outcome.and_then(|o| o.as_ref().ok()));
    }
}

/// A bounded, low-cardinality name of a failed call.
fn error_type(e: &BrainError, message: &str) -> &'static str {
    const STATUSES: [&str; 10] = [
        "400", "401", "403", "404", "408", "409", "413", "422", "429", "500",
    ];
    if message.contains("timed out") {
        return "timeout";
    }
    if message.contains("connection failed") || message.contains("reading the response failed") {
        return "connection";
    }
    if let Some(at) = message.find("HTTP ") {
        let code = message[at + 5..].get(..3).unwrap_or("");
        if let Some(known) = STATUSES.iter().find(|s| **s == code) {
            return known;
        }
        if code.starts_with('5') {
            return "5xx";
        }
        if code.starts_with('4') {
            return "4xx";
        }
    }
    if message.contains("not valid JSON") {
        return "invalid_response";
    }
    e.kind_name()
}

/// The opt-in event with the call's text (semconv message shapes, as JSON strings).
fn content_event(span: &tracing::Span, request: &ModelRequest, reply: Option<&Completion>) {
    let text_part = |text: &str| json!([{"type": "text", "content": genai::bounded(text)}]);
    let input: Vec<_> = request
        .messages
        .iter()
        .map(|(speaker, text)| {
            let role = match speaker {
                Speaker::User => "user",
                Speaker::Assistant => "assistant",
            };
            json!({"role": role, "parts": text_part(text)})
        })
        .collect();
    let mut attributes = vec![
        (
            GEN_AI_SYSTEM_INSTRUCTIONS,
            genai::bounded(&text_part(&request.system).to_string()),
        ),
        (
            GEN_AI_INPUT_MESSAGES,
            genai::bounded(&serde_json::Value::Array(input).to_string()),
        ),
    ];
    if let Some(reply) = reply {
        let output = json!([{
            "role": "assistant",
            "parts": text_part(&reply.as_text()),
            "finish_reason": reply.finish_reasons.first().map(String::as_str).unwrap_or(""),
        }]);
        attributes.push((GEN_AI_OUTPUT_MESSAGES, genai::bounded(&output.to_string())));
    }
    agentmesh_telemetry::add_event(span, EVENT_INFERENCE_DETAILS, attributes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_get_a_bounded_error_type() {
        let failed = |m: &str| BrainError::Failed(m.to_string());
        let cases = [
            ("openai call to u: HTTP 429: slow down", "429"),
            ("openai call to u: HTTP 503: down", "5xx"),
            ("openai call to u: HTTP 418: teapot", "4xx"),
            ("openai call to u: timed out: no response", "timeout"),
            ("openai call to u: connection failed: refused", "connection"),
            ("the response is not valid JSON (x)", "invalid_response"),
            ("returned no text", "failed"),
        ];
        for (message, want) in cases {
            let e = failed(message);
            assert_eq!(error_type(&e, &e.to_string()), want, "{message}");
        }
    }
}
