//! A turn's span: `invoke_agent {role}` (INTERNAL), the child of the coordinator's phase
//! span named in the request's `trace_context`, with the GenAI agent attributes. The
//! brain's model calls (`chat {model}`) nest under it. Built only while tracing is on.

use agentmesh_proto::v1::{self, WorkerMessage, worker_message};
use agentmesh_telemetry::genai::{
    GEN_AI_AGENT_ID, GEN_AI_AGENT_NAME, GEN_AI_CONVERSATION_ID, GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME, GEN_AI_USAGE_INPUT_TOKENS, GEN_AI_USAGE_OUTPUT_TOKENS, MESH_ATTEMPT,
    MESH_PHASE, MESH_ROUND, OP_INVOKE_AGENT,
};
use std::collections::HashMap;
use tracing::field::Empty;

/// The span of one turn (`Span::none()` while tracing is off).
pub(crate) fn turn_span(
    role: &str,
    worker_id: &str,
    provider: &'static str,
    turn: &v1::TurnId,
    trace_context: &HashMap<String, String>,
) -> tracing::Span {
    if !agentmesh_telemetry::enabled() {
        return tracing::Span::none();
    }
    let phase = agentmesh_proto::phase_from_wire(turn.phase).map_or("UNSPECIFIED", |p| p.as_str());
    let span = tracing::info_span!(
        parent: None,
        "invoke_agent",
        otel.name = format!("{OP_INVOKE_AGENT} {role}"),
        otel.kind = "internal",
        { GEN_AI_OPERATION_NAME } = OP_INVOKE_AGENT,
        { GEN_AI_PROVIDER_NAME } = provider,
        { GEN_AI_AGENT_NAME } = role,
        { GEN_AI_AGENT_ID } = worker_id,
        { GEN_AI_CONVERSATION_ID } = %turn.session_id,
        // Integers as i64: tracing-opentelemetry exports other integer types as text.
        { MESH_ROUND } = i64::from(turn.round),
        { MESH_PHASE } = phase,
        { MESH_ATTEMPT } = i64::from(turn.attempt),
        { GEN_AI_USAGE_INPUT_TOKENS } = Empty,
        { GEN_AI_USAGE_OUTPUT_TOKENS } = Empty,
    );
    agentmesh_telemetry::propagation::set_parent_from_map(&span, trace_context);
    span
}

/// Records how the turn ended on its span: the tokens of a result (when metered), or
/// `error.type` and the ERROR status of a failure report.
pub(crate) fn record_outcome(span: &tracing::Span, message: &WorkerMessage) {
    if span.is_none() {
        return;
    }
    match &message.msg {
        Some(worker_message::Msg::Result(result))
            if result.prompt_tokens > 0 || result.completion_tokens > 0 =>
        {
            span.record(GEN_AI_USAGE_INPUT_TOKENS, result.prompt_tokens as i64);
            span.record(GEN_AI_USAGE_OUTPUT_TOKENS, result.completion_tokens as i64);
        }
        Some(worker_message::Msg::Failed(failed)) => {
            let kind = if failed.reason.contains("exceeded the turn deadline") {
                "timeout"
            } else if failed.reason.contains("message limit") {
                "too_large"
            } else {
                "turn_failed"
            };
            agentmesh_telemetry::record_error(span, kind, &failed.reason);
        }
        _ => {}
    }
}
