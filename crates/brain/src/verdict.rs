//! Structured review verdicts: the schema models are held to, and the validation every
//! verdict passes before it becomes a REVIEW entry.
//!
//! A verdict is `{"verdict": "APPROVE" | "OBJECT", "concerns": [string], "summary":
//! string}`. It reaches us as the JSON reply text (OpenAI-compatible `response_format`,
//! exec), or as the input of the forced `submit_review` tool (Anthropic).
//!
//! [`validate`] accepts a verdict only when:
//!
//! - it is a JSON object whose `verdict` is `APPROVE` or `OBJECT` (any letter case),
//! - `concerns` is an array of strings and `summary` is a string,
//! - an `OBJECT` carries at least one non-blank concern, and an `APPROVE` none (an
//!   approval with reservations is ambiguous, so it is refused rather than guessed),
//! - there are at most [`MAX_CONCERNS`] concerns of at most [`MAX_CONCERN_CHARS`] each.
//!
//! The model brain retries once with the error fed back; a second failure is recorded as
//! [`Verdict::Invalid`] with a concern that says why ([`invalid_reply`]), which never
//! counts as an approval. An `APPROVE` reply carries the turn's proposal hash, set here
//! from the context, never taken from the model.

use crate::context::TurnContext;
use agentmesh_core::{EntryType, Reply, Verdict};
use serde_json::{Value, json};

/// The tool an Anthropic reviewer is forced to call.
pub const REVIEW_TOOL: &str = "submit_review";
pub const MAX_CONCERNS: usize = 20;
pub const MAX_CONCERN_CHARS: usize = 2_000;

/// A validated verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewVerdict {
    /// `Approve` or `Object`.
    pub verdict: Verdict,
    pub concerns: Vec<String>,
    pub summary: String,
}

/// The JSON schema of a verdict (strict: every property required, no others).
pub fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "verdict": {"type": "string", "enum": ["APPROVE", "OBJECT"]},
            "concerns": {"type": "array", "items": {"type": "string"}},
            "summary": {"type": "string"}
        },
        "required": ["verdict", "concerns", "summary"],
        "additionalProperties": false
    })
}

/// Validates a verdict value. See the [module docs](self) for the rules.
pub fn validate(value: &Value) -> Result<ReviewVerdict, String> {
    let object = value
        .as_object()
        .ok_or_else(|| format!("the verdict must be a JSON object, got {}", kind(value)))?;
    let verdict = match object.get("verdict") {
        None => return Err("the verdict object has no \"verdict\" field".into()),
        Some(Value::String(s)) => match s.trim().to_ascii_uppercase().as_str() {
            "APPROVE" => Verdict::Approve,
            "OBJECT" => Verdict::Object,
            _ => {
                return Err(format!(
                    "\"verdict\" must be \"APPROVE\" or \"OBJECT\", got {:?}",
                    clip(s, 60)
                ));
            }
        },
        Some(other) => {
            return Err(format!("\"verdict\" must be a string, got {}", kind(other)));
        }
    };
    let concerns = match object.get("concerns") {
        None => return Err("the verdict object has no \"concerns\" array".into()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str()
                    .map(|s| s.trim().to_string())
                    .ok_or_else(|| format!("concerns[{i}] must be a string, got {}", kind(item)))
            })
            .collect::<Result<Vec<String>, String>>()?
            .into_iter()
            .filter(|c| !c.is_empty())
            .collect::<Vec<String>>(),
        Some(other) => {
            return Err(format!(
                "\"concerns\" must be an array of strings, got {}",
                kind(other)
            ));
        }
    };
    let summary = match object.get("summary") {
        None => return Err("the verdict object has no \"summary\" field".into()),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(other) => {
            return Err(format!("\"summary\" must be a string, got {}", kind(other)));
        }
    };
    if concerns.len() > MAX_CONCERNS {
        return Err(format!(
            "{} concerns is more than the {MAX_CONCERNS} allowed",
            concerns.len()
        ));
    }
    if let Some(long) = concerns
        .iter()
        .position(|c| c.chars().count() > MAX_CONCERN_CHARS)
    {
        return Err(format!(
            "concerns[{long}] is longer than {MAX_CONCERN_CHARS} characters"
        ));
    }
    match verdict {
        Verdict::Object if concerns.is_empty() => {
            Err("an OBJECT verdict must list at least one concrete concern".into())
        }
        Verdict::Approve if !concerns.is_empty() => Err(format!(
            "an APPROVE verdict must have an empty concerns list, but it has {}: OBJECT with \
             them, or APPROVE without them",
            concerns.len()
        )),
        _ => Ok(ReviewVerdict {
            verdict,
            concerns,
            summary,
        }),
    }
}

/// Finds and validates the verdict JSON in a reply text: the whole text, a fenced
/// ```json block, or the outermost `{...}` within prose.
pub fn parse_text(text: &str) -> Result<ReviewVerdict, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("the reply is empty; a review must be a JSON verdict".into());
    }
    let mut candidates: Vec<&str> = vec![trimmed];
    if let Some(fenced) = fenced_block(trimmed) {
        candidates.push(fenced);
    }
    if let (Some(start), Some(end)) = (trimmed.find('{'), trimmed.rfind('}'))
        && start < end
    {
        candidates.push(&trimmed[start..=end]);
    }
    let mut first_error = None;
    for candidate in candidates {
        match serde_json::from_str::<Value>(candidate) {
            Ok(value) => return validate(&value),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(format!(
        "the reply is not a JSON verdict ({}): {:?}",
        first_error.map_or_else(|| "no JSON object".to_string(), |e| e.to_string()),
        clip(trimmed, 200)
    ))
}

fn fenced_block(text: &str) -> Option<&str> {
    let start = text.find("```")?;
    let after = &text[start + 3..];
    let body_start = after.find('\n')? + 1;
    let body = &after[body_start..];
    let end = body.find("```")?;
    Some(body[..end].trim())
}

/// The reply for a valid verdict. The proposal hash comes from the turn, not the model.
pub fn reply(verdict: &ReviewVerdict, ctx: &TurnContext) -> Reply {
    let content = if verdict.summary.is_empty() {
        verdict.verdict.as_str().to_string()
    } else {
        verdict.summary.clone()
    };
    Reply {
        entry_type: Some(EntryType::Review),
        content,
        verdict: Some(verdict.verdict),
        concerns: verdict.concerns.clone(),
        proposal_hash: ctx.proposal_hash.clone(),
        ..Reply::default()
    }
}

/// The reply recorded when no valid verdict could be had: INVALID, never an approval,
/// with a concern that says why and the raw output (clipped) in the content.
pub fn invalid_reply(why: &str, raw: &str, ctx: &TurnContext) -> Reply {
    let raw = clip(raw.trim(), 600);
    Reply {
        entry_type: Some(EntryType::Review),
        content: format!(
            "INVALID review of version {}: {why}\n\nRaw reply:\n{}",
            ctx.proposal_version,
            if raw.is_empty() { "(empty)" } else { &raw }
        ),
        verdict: Some(Verdict::Invalid),
        concerns: vec![format!("{} gave no valid review: {why}", ctx.role)],
        proposal_hash: ctx.proposal_hash.clone(),
        ..Reply::default()
    }
}

/// What to tell the model after an invalid verdict.
pub fn feedback(why: &str, tool: bool) -> String {
    let how = if tool {
        format!("Call the `{REVIEW_TOOL}` tool again")
    } else {
        "Reply again with only the JSON object".to_string()
    };
    format!(
        "Your review could not be accepted: {why}. {how}: {{\"verdict\": \"APPROVE\" or \
         \"OBJECT\", \"concerns\": [strings], \"summary\": string}}. APPROVE has an empty \
         concerns list; OBJECT lists at least one concern."
    )
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `text` cut to `max` characters, with `...` when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut out: String = text.chars().take(max).collect();
        out.push_str("...");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: Value) -> ReviewVerdict {
        validate(&v).unwrap_or_else(|e| panic!("{v}: {e}"))
    }

    fn err(v: Value) -> String {
        validate(&v).expect_err(&v.to_string())
    }

    #[test]
    fn valid_verdicts() {
        let a = ok(json!({"verdict": "APPROVE", "concerns": [], "summary": " fine "}));
        assert_eq!(a.verdict, Verdict::Approve);
        assert_eq!(a.summary, "fine");
        let o = ok(
            json!({"verdict": "object", "concerns": ["add mTLS", "  "], "summary": "", "extra": 1}),
        );
        assert_eq!(o.verdict, Verdict::Object);
        assert_eq!(o.concerns, ["add mTLS"], "blank concerns are dropped");
        // An approval whose only concerns are blank is still a clean approval.
        ok(json!({"verdict": "APPROVE", "concerns": [""], "summary": "ok"}));
    }

    #[test]
    fn invalid_verdicts_say_why() {
        let cases = [
            (json!([1]), "must be a JSON object"),
            (json!({"concerns": [], "summary": ""}), "no \"verdict\""),
            (
                json!({"verdict": "LGTM", "concerns": [], "summary": ""}),
                "\"LGTM\"",
            ),
            (
                json!({"verdict": true, "concerns": [], "summary": ""}),
                "must be a string",
            ),
            (
                json!({"verdict": "OBJECT", "summary": ""}),
                "no \"concerns\"",
            ),
            (
                json!({"verdict": "OBJECT", "concerns": "x", "summary": ""}),
                "array of strings",
            ),
            (
                json!({"verdict": "OBJECT", "concerns": [3], "summary": ""}),
                "concerns[0]",
            ),
            (
                json!({"verdict": "OBJECT", "concerns": ["a"]}),
                "no \"summary\"",
            ),
            (
                json!({"verdict": "OBJECT", "concerns": [], "summary": "bad"}),
                "at least one",
            ),
            (
                json!({"verdict": "APPROVE", "concerns": ["but"], "summary": ""}),
                "empty concerns",
            ),
            (
                json!({"verdict": "OBJECT", "concerns": vec!["c"; 21], "summary": ""}),
                "more than the 20",
            ),
            (
                json!({"verdict": "OBJECT", "concerns": ["x".repeat(2001)], "summary": ""}),
                "longer than",
            ),
        ];
        for (value, needle) in cases {
            let e = err(value.clone());
            assert!(e.contains(needle), "{value}: {e}");
        }
    }

    #[test]
    fn text_replies_may_wrap_the_json() {
        let plain = r#"{"verdict":"APPROVE","concerns":[],"summary":"ok"}"#;
        assert_eq!(parse_text(plain).unwrap().verdict, Verdict::Approve);
        let fenced = format!("Here you go:\n```json\n{plain}\n```\n");
        assert_eq!(parse_text(&fenced).unwrap().verdict, Verdict::Approve);
        let prose = format!("My review: {plain} -- thanks");
        assert_eq!(parse_text(&prose).unwrap().summary, "ok");
        let e = parse_text("I approve this design.").unwrap_err();
        assert!(e.contains("not a JSON verdict"), "{e}");
        let e = parse_text(r#"{"verdict": "APPROVE", "concerns": ["#).unwrap_err();
        assert!(e.contains("not a JSON verdict"), "{e}");
        assert!(parse_text("  ").unwrap_err().contains("empty"));
    }

    #[test]
    fn replies_take_the_hash_from_the_turn() {
        let ctx = TurnContext {
            session_id: "s".into(),
            task: "t".into(),
            roles: vec![],
            max_rounds: 1,
            role: "security".into(),
            round: 1,
            phase: agentmesh_core::Phase::Review,
            attempt: 1,
            transcript: Default::default(),
            proposal_version: 1,
            proposal_hash: "abc123".into(),
        };
        let v = ok(json!({"verdict": "APPROVE", "concerns": [], "summary": ""}));
        let r = reply(&v, &ctx);
        assert_eq!(r.proposal_hash, "abc123");
        assert_eq!(r.verdict, Some(Verdict::Approve));
        assert_eq!(r.content, "APPROVE");
        let bad = invalid_reply("no JSON", "blah", &ctx);
        assert_eq!(bad.verdict, Some(Verdict::Invalid));
        assert_eq!(bad.concerns, ["security gave no valid review: no JSON"]);
        assert!(bad.content.contains("blah"));
        assert_ne!(bad.verdict, Some(Verdict::Approve));
    }
}
