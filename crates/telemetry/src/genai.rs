//! The attribute, span and event names agentmesh records, in one place, exactly as the
//! OpenTelemetry semantic conventions spell them (GenAI conventions, semconv 1.4x, whose
//! `gen_ai.provider.name` replaced `gen_ai.system`). Tracing macros take them as
//! `{ GEN_AI_AGENT_NAME } = value`; the e2e tests check the exported names against the
//! same list.

/// What the span does: [`OP_INVOKE_AGENT`] or [`OP_CHAT`].
pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
/// Who serves the model: `openai`, `anthropic`, or the brain's own name (`scripted`, `exec`).
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
/// A string array: why the model stopped, one reason per choice.
pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
/// The role the worker plays.
pub const GEN_AI_AGENT_NAME: &str = "gen_ai.agent.name";
/// The worker's id.
pub const GEN_AI_AGENT_ID: &str = "gen_ai.agent.id";
/// The session id: every turn of a negotiation is one conversation.
pub const GEN_AI_CONVERSATION_ID: &str = "gen_ai.conversation.id";
/// A low-cardinality name of what failed (see each span's list).
pub const ERROR_TYPE: &str = "error.type";

/// Opt-in content (`--trace-content`): the event a model call's prompt and reply go in,
/// and its attributes (JSON, each cut to [`CONTENT_LIMIT`] bytes).
pub const EVENT_INFERENCE_DETAILS: &str = "gen_ai.client.inference.operation.details";
pub const GEN_AI_SYSTEM_INSTRUCTIONS: &str = "gen_ai.system_instructions";
pub const GEN_AI_INPUT_MESSAGES: &str = "gen_ai.input.messages";
pub const GEN_AI_OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
/// The most bytes of one content attribute; longer text is cut at a character boundary
/// and ends with `…[cut]`.
pub const CONTENT_LIMIT: usize = 8 * 1024;

/// `gen_ai.operation.name` of a worker's turn (span `invoke_agent {role}`, INTERNAL).
pub const OP_INVOKE_AGENT: &str = "invoke_agent";
/// `gen_ai.operation.name` of one model call (span `chat {model}`, CLIENT).
pub const OP_CHAT: &str = "chat";

/// agentmesh's own attributes (not GenAI conventions).
pub const MESH_SESSION_ID: &str = "agentmesh.session.id";
pub const MESH_ROUND: &str = "agentmesh.round";
pub const MESH_PHASE: &str = "agentmesh.phase";
pub const MESH_ATTEMPT: &str = "agentmesh.turn.attempt";
pub const MESH_STATUS: &str = "agentmesh.session.status";
/// Resource attribute of a worker: its role.
pub const MESH_WORKER_ROLE: &str = "agentmesh.worker.role";

/// Every GenAI attribute name above (and `error.type`).
pub const GEN_AI_ATTRIBUTES: [&str; 14] = [
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_RESPONSE_FINISH_REASONS,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    GEN_AI_AGENT_NAME,
    GEN_AI_AGENT_ID,
    GEN_AI_CONVERSATION_ID,
    GEN_AI_SYSTEM_INSTRUCTIONS,
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OUTPUT_MESSAGES,
    ERROR_TYPE,
];

/// `text` cut to at most [`CONTENT_LIMIT`] bytes at a character boundary.
pub fn bounded(text: &str) -> String {
    if text.len() <= CONTENT_LIMIT {
        return text.to_string();
    }
    let marker = "…[cut]";
    let mut end = CONTENT_LIMIT - marker.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_cut_at_the_limit_on_a_character_boundary() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(CONTENT_LIMIT);
        let cut = bounded(&long);
        assert!(cut.len() <= CONTENT_LIMIT, "{}", cut.len());
        assert!(cut.ends_with("…[cut]"));
    }
}
