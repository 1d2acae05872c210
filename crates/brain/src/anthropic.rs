//! The Anthropic Messages API (`POST {base_url}/v1/messages`), from Anthropic or any
//! server that speaks it (llama.cpp's `llama-server` does).
//!
//! Review turns force the `submit_review` tool (`tool_choice: {"type": "tool", "name":
//! "submit_review"}`) whose input schema is the verdict, so the verdict arrives as the
//! tool call's input. A server that ignores the forced tool and answers in text still has
//! its text checked for a JSON verdict. Token usage is `usage.input_tokens` (plus cache
//! reads and writes) and `usage.output_tokens`; `stop_reason: "max_tokens"` marks a reply
//! cut at the limit.

use crate::BrainError;
use crate::http::{self, Post, RetryPolicy};
use crate::model::{Completion, ModelApi, ModelRequest, Speaker};
use crate::prompt::ReviewChannel;
use crate::secret::ApiKey;
use crate::verdict::{self, REVIEW_TOOL};
use serde_json::{Value, json};
use tokio::time::Instant;

pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The Messages API requires `max_tokens`; this is used when none is configured.
pub const DEFAULT_MAX_TOKENS: u32 = 2048;

/// Settings of an Anthropic Messages endpoint.
#[derive(Debug, Clone)]
pub struct AnthropicConfig {
    /// Without `/v1`, e.g. `https://api.anthropic.com` or `http://127.0.0.1:8080`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<ApiKey>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub retry: RetryPolicy,
}

impl AnthropicConfig {
    pub fn new(model: impl Into<String>) -> Self {
        AnthropicConfig {
            base_url: ANTHROPIC_BASE_URL.to_string(),
            model: model.into(),
            api_key: None,
            temperature: None,
            max_tokens: None,
            retry: RetryPolicy::default(),
        }
    }
}

/// An Anthropic Messages endpoint.
#[derive(Debug)]
pub struct AnthropicApi {
    config: AnthropicConfig,
    client: reqwest::Client,
}

impl AnthropicApi {
    pub fn new(config: AnthropicConfig) -> Result<Self, BrainError> {
        Ok(AnthropicApi {
            config,
            client: http::client()?,
        })
    }

    pub fn config(&self) -> &AnthropicConfig {
        &self.config
    }

    /// The request body for one call.
    pub fn body(&self, request: &ModelRequest) -> Value {
        let messages: Vec<Value> = request
            .messages
            .iter()
            .map(|(speaker, text)| {
                let role = match speaker {
                    Speaker::User => "user",
                    Speaker::Assistant => "assistant",
                };
                json!({"role": role, "content": text})
            })
            .collect();
        let mut body = json!({
            "model": self.config.model,
            "max_tokens": self.config.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            "system": request.system,
            "messages": messages,
        });
        if let Some(t) = self.config.temperature {
            body["temperature"] = json!(t);
        }
        if request.review {
            body["tools"] = json!([{
                "name": REVIEW_TOOL,
                "description": "Submit your review of the proposal version: APPROVE with no \
                                concerns, or OBJECT with at least one concrete concern.",
                "input_schema": verdict::schema(),
            }]);
            body["tool_choice"] = json!({"type": "tool", "name": REVIEW_TOOL});
        }
        body
    }
}

/// Reads a Messages API response.
pub fn parse_response(body: &Value) -> Result<Completion, String> {
    let blocks = body
        .get("content")
        .and_then(Value::as_array)
        .ok_or("the response has no content array")?;
    let mut text = String::new();
    let mut tool_input = None;
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(t) = block.get("text").and_then(Value::as_str) {
                    text.push_str(t);
                }
            }
            Some("tool_use") if block.get("name").and_then(Value::as_str) == Some(REVIEW_TOOL) => {
                tool_input = block.get("input").cloned();
            }
            _ => {}
        }
    }
    let tokens = |name: &str| {
        body.pointer(&format!("/usage/{name}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let stop_reason = body.get("stop_reason").and_then(Value::as_str);
    Ok(Completion {
        text,
        tool_input,
        truncated: stop_reason == Some("max_tokens"),
        response_model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        finish_reasons: stop_reason.map(str::to_string).into_iter().collect(),
        prompt_tokens: tokens("input_tokens")
            + tokens("cache_read_input_tokens")
            + tokens("cache_creation_input_tokens"),
        completion_tokens: tokens("output_tokens"),
    })
}

impl ModelApi for AnthropicApi {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    fn review_channel(&self) -> ReviewChannel {
        ReviewChannel::Tool
    }

    async fn complete(
        &self,
        request: &ModelRequest,
        deadline: Instant,
    ) -> Result<Completion, BrainError> {
        let body = self.body(request);
        let mut headers = vec![("anthropic-version", ANTHROPIC_VERSION.to_string())];
        if let Some(key) = &self.config.api_key {
            headers.push(("x-api-key", key.expose().to_string()));
        }
        let url = format!("{}/v1/messages", self.config.base_url.trim_end_matches('/'));
        Post {
            client: &self.client,
            api: "anthropic",
            url,
            headers,
            body: &body,
            key: self.config.api_key.as_ref(),
            deadline,
            retry: self.config.retry,
        }
        .send_and_parse(parse_response)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::Instruction;

    #[test]
    fn reviews_force_the_review_tool() {
        let api = AnthropicApi::new(AnthropicConfig::new("claude-x")).unwrap();
        let request = ModelRequest {
            system: "sys".into(),
            messages: vec![
                (Speaker::User, "review this".into()),
                (Speaker::Assistant, "{}".into()),
                (Speaker::User, "again".into()),
            ],
            review: true,
            instruction: Instruction::Review,
            turn_env: vec![],
        };
        let body = api.body(&request);
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(body["system"], "sys");
        assert_eq!(body["messages"][1]["role"], "assistant");
        assert_eq!(
            body["tool_choice"],
            json!({"type": "tool", "name": "submit_review"})
        );
        assert_eq!(body["tools"][0]["input_schema"], verdict::schema());
        let text = api.body(&ModelRequest {
            review: false,
            ..request
        });
        assert!(text.get("tools").is_none() && text.get("tool_choice").is_none());
    }

    #[test]
    fn responses_give_tool_input_usage_and_truncation() {
        let c = parse_response(&json!({
            "content": [
                {"type": "text", "text": "Reviewing."},
                {"type": "tool_use", "id": "t1", "name": "submit_review",
                 "input": {"verdict": "APPROVE", "concerns": [], "summary": "ok"}}
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 7}
        }))
        .unwrap();
        assert_eq!(c.text, "Reviewing.");
        assert_eq!(c.tool_input.as_ref().unwrap()["verdict"], "APPROVE");
        assert_eq!((c.prompt_tokens, c.completion_tokens), (15, 7));
        assert!(!c.truncated);
        let cut = parse_response(&json!({
            "content": [{"type": "text", "text": "long"}], "stop_reason": "max_tokens"
        }))
        .unwrap();
        assert!(cut.truncated);
        assert!(parse_response(&json!({"type": "error"})).is_err());
    }
}
