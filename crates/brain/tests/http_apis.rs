//! The OpenAI-compatible and Anthropic brains against a scripted HTTP server on
//! 127.0.0.1: success, 429 with Retry-After, 5xx, malformed JSON, truncated replies,
//! invalid verdicts, timeouts, connection errors, and API keys that never show.

mod support;

use agentmesh_brain::anthropic::{AnthropicApi, AnthropicConfig};
use agentmesh_brain::http::RetryPolicy;
use agentmesh_brain::openai::{OpenAiApi, OpenAiConfig, ResponseFormat};
use agentmesh_brain::prompt::Budget;
use agentmesh_brain::{ApiKey, Brain, BrainError, ModelBrain, Persona, TurnSettings};
use agentmesh_core::{EntryType, Verdict};
use serde_json::{Value, json};
use std::time::Duration;
use support::{MockServer, Step, contribute, review};
use tokio::time::Instant;

const KEY: &str = "sk-mock-SECRET-7f3a9c0e12";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    OpenAi,
    Anthropic,
}

const BOTH: [Flavor; 2] = [Flavor::OpenAi, Flavor::Anthropic];

fn retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        initial: Duration::from_millis(20),
        max_delay: Duration::from_secs(3),
    }
}

fn settings(timeout: Duration) -> TurnSettings {
    TurnSettings {
        turn_timeout: timeout,
        budget: Budget::tokens(4_000),
    }
}

fn brain(flavor: Flavor, url: &str, timeout: Duration) -> Box<dyn Brain> {
    brain_with(flavor, url, timeout, ResponseFormat::JsonSchema)
}

fn brain_with(
    flavor: Flavor,
    url: &str,
    timeout: Duration,
    format: ResponseFormat,
) -> Box<dyn Brain> {
    let key = Some(ApiKey::new(KEY).unwrap());
    match flavor {
        Flavor::OpenAi => {
            let mut c = OpenAiConfig::new("gpt-test");
            c.base_url = format!("{url}/v1");
            c.api_key = key;
            c.max_tokens = Some(256);
            c.temperature = Some(0.2);
            c.response_format = format;
            c.retry = retry();
            Box::new(ModelBrain::new(
                OpenAiApi::new(c).unwrap(),
                Persona::for_role("security"),
                settings(timeout),
            ))
        }
        Flavor::Anthropic => {
            let mut c = AnthropicConfig::new("claude-test");
            c.base_url = url.to_string();
            c.api_key = key;
            c.max_tokens = Some(256);
            c.retry = retry();
            Box::new(ModelBrain::new(
                AnthropicApi::new(c).unwrap(),
                Persona::for_role("security"),
                settings(timeout),
            ))
        }
    }
}

fn path(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::OpenAi => "/v1/chat/completions",
        Flavor::Anthropic => "/v1/messages",
    }
}

/// A successful text reply.
fn text(flavor: Flavor, text: &str, truncated: bool, tokens: (u64, u64)) -> Step {
    let body = match flavor {
        Flavor::OpenAi => json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": if truncated { "length" } else { "stop" }}],
            "usage": {"prompt_tokens": tokens.0, "completion_tokens": tokens.1}
        }),
        Flavor::Anthropic => json!({
            "type": "message", "role": "assistant",
            "content": [{"type": "text", "text": text}],
            "stop_reason": if truncated { "max_tokens" } else { "end_turn" },
            "usage": {"input_tokens": tokens.0, "output_tokens": tokens.1}
        }),
    };
    Step::json(200, &body)
}

/// A reply carrying `verdict` the way the API hands verdicts back.
fn verdict(flavor: Flavor, verdict: &Value, tokens: (u64, u64)) -> Step {
    match flavor {
        Flavor::OpenAi => text(flavor, &verdict.to_string(), false, tokens),
        Flavor::Anthropic => Step::json(
            200,
            &json!({
                "type": "message", "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "submit_review", "input": verdict}],
                "stop_reason": "tool_use",
                "usage": {"input_tokens": tokens.0, "output_tokens": tokens.1}
            }),
        ),
    }
}

fn failed(result: Result<agentmesh_core::Reply, BrainError>) -> String {
    match result {
        Err(BrainError::Failed(why)) => why,
        other => panic!("expected a failed turn, got {other:?}"),
    }
}

#[tokio::test]
async fn success_text_and_review_turns_record_tokens_and_send_the_key() {
    for flavor in BOTH {
        let server = MockServer::start(vec![
            text(
                flavor,
                "## Analysis\nRate-limit link creation.",
                false,
                (120, 30),
            ),
            verdict(
                flavor,
                &json!({"verdict": "APPROVE", "concerns": [], "summary": "Settles my points."}),
                (200, 12),
            ),
        ])
        .await;
        let brain = brain(flavor, &server.url, Duration::from_secs(10));

        let reply = brain.think(contribute("security")).await.unwrap();
        assert_eq!(reply.entry_type, Some(EntryType::Analysis), "{flavor:?}");
        assert_eq!(reply.content, "## Analysis\nRate-limit link creation.");
        assert_eq!((reply.prompt_tokens, reply.completion_tokens), (120, 30));

        let ctx = review("security");
        let hash = ctx.proposal_hash.clone();
        let reply = brain.think(ctx).await.unwrap();
        assert_eq!(reply.verdict, Some(Verdict::Approve), "{flavor:?}");
        assert_eq!(reply.proposal_hash, hash, "the brain signs the turn's hash");
        assert_eq!(reply.content, "Settles my points.");
        assert_eq!((reply.prompt_tokens, reply.completion_tokens), (200, 12));

        let requests = server.requests();
        assert_eq!(requests.len(), 2);
        for r in &requests {
            assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", path(flavor)));
        }
        let (first, second) = (&requests[0], &requests[1]);
        match flavor {
            Flavor::OpenAi => {
                assert_eq!(
                    first.header("authorization"),
                    Some(format!("Bearer {KEY}").as_str())
                );
                assert_eq!(first.body["model"], "gpt-test");
                assert_eq!(first.body["messages"][0]["role"], "system");
                let system = first.body["messages"][0]["content"].as_str().unwrap();
                assert!(
                    system.contains("security engineer"),
                    "persona is the system prompt"
                );
                let user = first.body["messages"][1]["content"].as_str().unwrap();
                assert!(user.contains("Design a URL shortener."));
                assert!(
                    user.contains("Goal: a URL shortener."),
                    "framework in the prompt"
                );
                assert!(first.body.get("response_format").is_none());
                assert_eq!(second.body["response_format"]["type"], "json_schema");
            }
            Flavor::Anthropic => {
                assert_eq!(first.header("x-api-key"), Some(KEY));
                assert_eq!(first.header("anthropic-version"), Some("2023-06-01"));
                assert!(
                    first.body["system"]
                        .as_str()
                        .unwrap()
                        .contains("security engineer")
                );
                assert_eq!(first.body["max_tokens"], 256);
                assert!(first.body.get("tool_choice").is_none());
                assert_eq!(
                    second.body["tool_choice"],
                    json!({"type": "tool", "name": "submit_review"})
                );
                let user = second.body["messages"][0]["content"].as_str().unwrap();
                assert!(
                    user.contains("# Proposal v1"),
                    "the proposal under review is in the prompt"
                );
            }
        }
    }
}

#[tokio::test]
async fn rate_limited_then_success_honours_retry_after() {
    for flavor in BOTH {
        let server = MockServer::start(vec![
            Step::json(429, &json!({"error": {"message": "slow down"}}))
                .with_header("retry-after", "1"),
            text(flavor, "fine now", false, (5, 2)),
        ])
        .await;
        let brain = brain(flavor, &server.url, Duration::from_secs(10));
        let started = Instant::now();
        let reply = brain.think(contribute("security")).await.unwrap();
        assert_eq!(reply.content, "fine now");
        let requests = server.requests();
        assert_eq!(requests.len(), 2, "{flavor:?}");
        let gap = requests[1].at - requests[0].at;
        assert!(
            gap >= Duration::from_millis(950),
            "{flavor:?}: retried after {gap:?}, not Retry-After"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_then_give_up() {
    for flavor in BOTH {
        let server = MockServer::start(vec![Step::json(
            500,
            &json!({"error": {"message": "overloaded"}}),
        )])
        .await;
        let brain = brain(flavor, &server.url, Duration::from_secs(10));
        let why = failed(brain.think(contribute("security")).await);
        assert!(
            why.contains("HTTP 500") && why.contains("overloaded"),
            "{why}"
        );
        assert!(why.contains("gave up after 4 attempts"), "{why}");
        let requests = server.requests();
        assert_eq!(requests.len(), 4, "1 call + 3 retries");
        // Exponential: 20ms, 40ms, 80ms between attempts.
        let gaps: Vec<Duration> = requests.windows(2).map(|w| w[1].at - w[0].at).collect();
        assert!(gaps[0] >= Duration::from_millis(20), "{gaps:?}");
        assert!(gaps[2] >= Duration::from_millis(80), "{gaps:?}");

        // A 503 then success recovers.
        let server = MockServer::start(vec![
            Step::raw(503, "upstream busy"),
            text(flavor, "recovered", false, (1, 1)),
        ])
        .await;
        let reply = brain_reply(flavor, &server).await;
        assert_eq!(reply.content, "recovered");
    }
}

async fn brain_reply(flavor: Flavor, server: &MockServer) -> agentmesh_core::Reply {
    brain(flavor, &server.url, Duration::from_secs(10))
        .think(contribute("security"))
        .await
        .unwrap()
}

#[tokio::test]
async fn client_errors_fail_at_once() {
    for flavor in BOTH {
        let server = MockServer::start(vec![Step::json(
            404,
            &json!({"error": {"message": "model not found"}}),
        )])
        .await;
        let why = failed(
            brain(flavor, &server.url, Duration::from_secs(10))
                .think(contribute("security"))
                .await,
        );
        assert!(why.contains("HTTP 404: model not found"), "{why}");
        assert_eq!(server.requests().len(), 1, "a 4xx is not retried");
    }
}

#[tokio::test]
async fn malformed_json_fails_the_turn() {
    for flavor in BOTH {
        let server = MockServer::start(vec![Step::raw(200, "{\"choices\": [oops")]).await;
        let why = failed(
            brain(flavor, &server.url, Duration::from_secs(10))
                .think(contribute("security"))
                .await,
        );
        assert!(why.contains("not valid JSON"), "{flavor:?}: {why}");
        // Valid JSON of the wrong shape is refused too.
        let server = MockServer::start(vec![Step::json(200, &json!({"unexpected": true}))]).await;
        let why = failed(
            brain(flavor, &server.url, Duration::from_secs(10))
                .think(contribute("security"))
                .await,
        );
        assert!(why.contains("unexpected response"), "{flavor:?}: {why}");
    }
}

#[tokio::test]
async fn truncated_replies_are_marked_and_truncated_verdicts_are_invalid() {
    for flavor in BOTH {
        // A text turn keeps what arrived, marked as cut.
        let server =
            MockServer::start(vec![text(flavor, "The first half of", true, (50, 256))]).await;
        let reply = brain_reply(flavor, &server).await;
        assert!(reply.content.starts_with("The first half of"));
        assert!(
            reply
                .content
                .ends_with("[reply cut at the max-tokens limit]"),
            "{}",
            reply.content
        );

        // A review cut mid-JSON is asked again, then recorded INVALID: never an approval.
        let cut = match flavor {
            Flavor::OpenAi => text(
                flavor,
                "{\"verdict\": \"APPROVE\", \"concerns\": [",
                true,
                (80, 256),
            ),
            Flavor::Anthropic => text(
                flavor,
                "Let me think about the proposal in detail",
                true,
                (80, 256),
            ),
        };
        let server = MockServer::start(vec![cut]).await;
        let reply = brain(flavor, &server.url, Duration::from_secs(10))
            .think(review("security"))
            .await
            .unwrap();
        assert_eq!(reply.verdict, Some(Verdict::Invalid), "{flavor:?}");
        assert_eq!(reply.concerns.len(), 1);
        assert!(
            reply.concerns[0].contains("cut off at the max-tokens limit"),
            "{:?}",
            reply.concerns
        );
        assert_eq!(
            server.requests().len(),
            2,
            "one retry with the error fed back"
        );
        assert_eq!((reply.prompt_tokens, reply.completion_tokens), (160, 512));
    }
}

#[tokio::test]
async fn an_invalid_verdict_is_retried_once_with_the_error_fed_back() {
    for flavor in BOTH {
        let server = MockServer::start(vec![
            verdict(flavor, &json!({"verdict": "OBJECT", "concerns": [], "summary": "meh"}), (100, 10)),
            verdict(
                flavor,
                &json!({"verdict": "OBJECT", "concerns": ["Hash link tokens at rest."], "summary": "One gap."}),
                (130, 15),
            ),
        ])
        .await;
        let reply = brain(flavor, &server.url, Duration::from_secs(10))
            .think(review("security"))
            .await
            .unwrap();
        assert_eq!(reply.verdict, Some(Verdict::Object));
        assert_eq!(reply.concerns, ["Hash link tokens at rest."]);
        assert_eq!(
            (reply.prompt_tokens, reply.completion_tokens),
            (230, 25),
            "both calls counted"
        );
        let requests = server.requests();
        assert_eq!(requests.len(), 2);
        let messages = requests[1].body["messages"].as_array().unwrap().clone();
        let last = messages.last().unwrap();
        assert_eq!(last["role"], "user");
        let feedback = last["content"].as_str().unwrap();
        assert!(
            feedback.contains("could not be accepted")
                && feedback.contains("at least one concrete concern"),
            "{feedback}"
        );
        let previous = &messages[messages.len() - 2];
        assert_eq!(previous["role"], "assistant");
        assert!(previous["content"].as_str().unwrap().contains("meh"));

        // Invalid twice: INVALID with the reason, whatever the model claimed.
        let server = MockServer::start(vec![verdict(
            flavor,
            &json!({"verdict": "APPROVE", "concerns": ["but fix X"], "summary": "ok"}),
            (1, 1),
        )])
        .await;
        let reply = brain(flavor, &server.url, Duration::from_secs(10))
            .think(review("security"))
            .await
            .unwrap();
        assert_eq!(
            reply.verdict,
            Some(Verdict::Invalid),
            "an ambiguous approval is not an approval"
        );
        assert!(
            reply.concerns[0].contains("empty concerns list"),
            "{:?}",
            reply.concerns
        );
    }
}

#[tokio::test]
async fn openai_json_object_fallback_and_anthropic_text_fallback() {
    let v = json!({"verdict": "APPROVE", "concerns": [], "summary": "ok"});
    let server = MockServer::start(vec![text(
        Flavor::OpenAi,
        &format!("```json\n{v}\n```"),
        false,
        (1, 1),
    )])
    .await;
    let reply = brain_with(
        Flavor::OpenAi,
        &server.url,
        Duration::from_secs(10),
        ResponseFormat::JsonObject,
    )
    .think(review("security"))
    .await
    .unwrap();
    assert_eq!(reply.verdict, Some(Verdict::Approve));
    assert_eq!(
        server.requests()[0].body["response_format"],
        json!({"type": "json_object"})
    );
    // A Messages server that ignores the forced tool but answers with JSON text.
    let server =
        MockServer::start(vec![text(Flavor::Anthropic, &v.to_string(), false, (1, 1))]).await;
    let reply = brain(Flavor::Anthropic, &server.url, Duration::from_secs(10))
        .think(review("security"))
        .await
        .unwrap();
    assert_eq!(reply.verdict, Some(Verdict::Approve));
}

#[tokio::test]
async fn a_call_that_outlives_the_turn_timeout_fails_within_the_bound() {
    for flavor in BOTH {
        let server = MockServer::start(vec![Step::Delay(
            Duration::from_secs(30),
            Box::new(text(flavor, "too late", false, (1, 1))),
        )])
        .await;
        let started = Instant::now();
        let why = failed(
            brain(flavor, &server.url, Duration::from_millis(800))
                .think(contribute("security"))
                .await,
        );
        let took = started.elapsed();
        assert!(why.contains("timed out"), "{flavor:?}: {why}");
        assert!(
            took >= Duration::from_millis(750) && took < Duration::from_secs(3),
            "{took:?}"
        );
        assert_eq!(server.requests().len(), 1, "a timeout is not retried");
    }
}

#[tokio::test]
async fn connection_errors_are_retried_then_fail() {
    for flavor in BOTH {
        // The server closes every connection without answering.
        let server = MockServer::start(vec![Step::Close]).await;
        let why = failed(
            brain(flavor, &server.url, Duration::from_secs(10))
                .think(contribute("security"))
                .await,
        );
        assert!(
            why.contains("gave up after 4 attempts") && why.contains("connection failed"),
            "{why}"
        );
        assert_eq!(server.requests().len(), 4);

        // Nobody listening at all.
        let url = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let why = failed(
            brain(flavor, &url, Duration::from_secs(10))
                .think(contribute("security"))
                .await,
        );
        assert!(why.contains("connection failed"), "{why}");
    }
}

#[tokio::test]
async fn the_api_key_never_shows_in_errors_or_debug_output() {
    for flavor in BOTH {
        // A server that echoes the key back in its error body.
        let server = MockServer::start(vec![Step::json(
            401,
            &json!({"error": {"message": format!("Incorrect API key provided: {KEY}")}}),
        )])
        .await;
        let why = failed(
            brain(flavor, &server.url, Duration::from_secs(10))
                .think(contribute("security"))
                .await,
        );
        assert!(why.contains("HTTP 401"), "{why}");
        assert!(!why.contains(KEY), "key leaked into the error: {why}");
        assert!(why.contains("<redacted>"), "{why}");
        assert!(server.requests().len() == 1);
    }
    let mut c = OpenAiConfig::new("m");
    c.api_key = Some(ApiKey::new(KEY).unwrap());
    let shown = format!(
        "{:?}",
        ModelBrain::new(
            OpenAiApi::new(c).unwrap(),
            Persona::for_role("backend"),
            TurnSettings::default()
        )
    );
    assert!(!shown.contains(KEY), "{shown}");
    let mut c = AnthropicConfig::new("m");
    c.api_key = Some(ApiKey::new(KEY).unwrap());
    let shown = format!("{:?} {:#?}", c, AnthropicApi::new(c.clone()).unwrap());
    assert!(!shown.contains(KEY), "{shown}");
}

#[tokio::test]
async fn turns_the_context_cannot_support_fail_without_a_call() {
    let server = MockServer::start(vec![text(Flavor::OpenAi, "x", false, (1, 1))]).await;
    let brain = brain(Flavor::OpenAi, &server.url, Duration::from_secs(5));
    let mut ctx = review("security");
    ctx.proposal_hash = "0".repeat(64);
    assert!(matches!(
        brain.think(ctx).await,
        Err(BrainError::BadContext(_))
    ));
    let mut ctx = contribute("security");
    ctx.phase = agentmesh_core::Phase::Synthesize;
    assert!(matches!(
        brain.think(ctx).await,
        Err(BrainError::BadContext(_))
    ));
    assert!(server.requests().is_empty());
}
