//! The OpenAI-compatible chat completions API: OpenAI itself, and every server that
//! speaks it (llama.cpp's `llama-server`, Ollama, vLLM, LM Studio, ...).
//!
//! `POST {base_url}/chat/completions` with the system prompt and the conversation.
//! Review turns ask for a structured verdict through `response_format`: a strict
//! `json_schema` by default, or `json_object` ([`ResponseFormat::JsonObject`]) for
//! servers without schema support, where the prompt spells the shape out. Token usage is
//! read from `usage.prompt_tokens` / `usage.completion_tokens`; `finish_reason: "length"`
//! marks a reply cut at the max-tokens limit.

use crate::BrainError;
use crate::http::{self, Post, RetryPolicy};
use crate::model::{Completion, ModelApi, ModelRequest, Speaker};
use crate::prompt::ReviewChannel;
use crate::secret::ApiKey;
use crate::verdict;
use serde_json::{Value, json};
use tokio::time::Instant;

/// The default base URL.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// How a review asks for JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseFormat {
    /// `{"type": "json_schema", "json_schema": {"name": "review", "strict": true, ...}}`.
    #[default]
    JsonSchema,
    /// `{"type": "json_object"}`: any JSON object; the prompt gives the shape.
    JsonObject,
}

/// Settings of an OpenAI-compatible endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Up to and including `/v1`, e.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<ApiKey>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub response_format: ResponseFormat,
    pub retry: RetryPolicy,
}

impl OpenAiConfig {
    pub fn new(model: impl Into<String>) -> Self {
        OpenAiConfig {
            base_url: OPENAI_BASE_URL.to_string(),
            model: model.into(),
            api_key: None,
            temperature: None,
            max_tokens: None,
            response_format: ResponseFormat::default(),
            retry: RetryPolicy::default(),
        }
    }
}

/// An OpenAI-compatible endpoint.
#[derive(Debug)]
pub struct OpenAiApi {
    config: OpenAiConfig,
    client: reqwest::Client,
}

impl OpenAiApi {
    pub fn new(config: OpenAiConfig) -> Result<Self, BrainError> {
        Ok(OpenAiApi {
            config,
            client: http::client()?,
        })
    }

    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// The request body for one call.
    pub fn body(&self, request: &ModelRequest) -> Value {
        let mut messages = vec![json!({"role": "system", "content": request.system})];
        for (speaker, text) in &request.messages {
            let role = match speaker {
                Speaker::User => "user",
                Speaker::Assistant => "assistant",
            };
            messages.push(json!({"role": role, "content": text}));
        }
        let mut body = json!({"model": self.config.model, "messages": messages});
        if let Some(t) = self.config.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(n) = self.config.max_tokens {
            body["max_tokens"] = json!(n);
        }
        if request.review {
            body["response_format"] = match self.config.response_format {
                ResponseFormat::JsonSchema => json!({
                    "type": "json_schema",
                    "json_schema": {"name": "review", "strict": true, "schema": verdict::schema()}
                }),
                ResponseFormat::JsonObject => json!({"type": "json_object"}),
            };
        }
        body
    }
}

/// Reads a chat completion response.
pub fn parse_response(body: &Value) -> Result<Completion, String> {
    let choice = body
        .pointer("/choices/0")
        .ok_or("the response has no choices[0]")?;
    let message = choice.get("message").ok_or("choices[0] has no message")?;
    let mut text = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        // Some servers return content parts.
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        Some(other) => return Err(format!("choices[0].message.content is {other}")),
    };
    if text.is_empty()
        && let Some(refusal) = message.get("refusal").and_then(Value::as_str)
    {
        text = format!("(refused) {refusal}");
    }
    let finish = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .unwrap_or("");
    let tokens = |name: &str| {
        body.pointer(&format!("/usage/{name}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Ok(Completion {
        text,
        tool_input: None,
        truncated: finish == "length",
        prompt_tokens: tokens("prompt_tokens"),
        completion_tokens: tokens("completion_tokens"),
        response_model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        finish_reasons: if finish.is_empty() {
            Vec::new()
        } else {
            vec![finish.to_string()]
        },
    })
}

impl ModelApi for OpenAiApi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    fn review_channel(&self) -> ReviewChannel {
        ReviewChannel::JsonReply
    }

    async fn complete(
        &self,
        request: &ModelRequest,
        deadline: Instant,
    ) -> Result<Completion, BrainError> {
        let body = self.body(request);
        let mut headers = Vec::new();
        if let Some(key) = &self.config.api_key {
            headers.push(("authorization", format!("Bearer {}", key.expose())));
        }
        let url = format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        );
        Post {
            client: &self.client,
            api: "openai",
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

    fn request(review: bool) -> ModelRequest {
        ModelRequest {
            system: "sys".into(),
            messages: vec![(Speaker::User, "hi".into())],
            review,
            instruction: if review {
                Instruction::Review
            } else {
                Instruction::Contribute
            },
            turn_env: vec![],
        }
    }

    #[test]
    fn bodies_carry_the_schema_only_for_reviews() {
        let mut config = OpenAiConfig::new("m");
        config.temperature = Some(0.5);
        config.max_tokens = Some(64);
        let api = OpenAiApi::new(config.clone()).unwrap();
        let text = api.body(&request(false));
        assert_eq!(
            text["messages"][0],
            json!({"role": "system", "content": "sys"})
        );
        assert_eq!(
            text["messages"][1],
            json!({"role": "user", "content": "hi"})
        );
        assert_eq!(text["max_tokens"], 64);
        assert_eq!(text["temperature"], 0.5);
        assert!(text.get("response_format").is_none());
        let review = api.body(&request(true));
        assert_eq!(review["response_format"]["type"], "json_schema");
        assert_eq!(
            review["response_format"]["json_schema"]["schema"],
            verdict::schema()
        );
        config.response_format = ResponseFormat::JsonObject;
        let api = OpenAiApi::new(config).unwrap();
        assert_eq!(
            api.body(&request(true))["response_format"],
            json!({"type": "json_object"})
        );
    }

    #[test]
    fn responses_give_text_usage_and_truncation() {
        let c = parse_response(&json!({
            "choices": [{"message": {"role": "assistant", "content": "hello"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3}
        }))
        .unwrap();
        assert_eq!(c.text, "hello");
        assert!(c.truncated);
        assert_eq!((c.prompt_tokens, c.completion_tokens), (12, 3));
        let refused = parse_response(&json!({
            "choices": [{"message": {"content": null, "refusal": "no"}, "finish_reason": "stop"}]
        }))
        .unwrap();
        assert_eq!(refused.text, "(refused) no");
        assert!(parse_response(&json!({"choices": []})).is_err());
    }
}
