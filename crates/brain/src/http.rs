//! The HTTP layer the model APIs share: one JSON POST with a deadline, and bounded
//! exponential back-off on the failures worth retrying.
//!
//! - Every call gets the time left until the turn's deadline as its timeout.
//! - 429, 5xx and connection errors are retried, at most [`RetryPolicy::max_retries`]
//!   times, waiting `initial * 2^n` capped at `max_delay`, or what the server's
//!   `Retry-After` asks (seconds or an HTTP date), capped the same way. A wait that would
//!   pass the deadline is not started: the call fails at once, saying so.
//! - Other 4xx (bad request, bad key, unknown model) fail at once: retrying cannot help.
//! - A timeout is not retried: the turn's time is spent.
//!
//! Errors carry the status and the server's message, with the API key scrubbed out.
//! TLS is rustls with the `ring` provider, installed once by [`client`].

use crate::BrainError;
use crate::observe::RetryCause;
use crate::secret::{ApiKey, scrub};
use serde_json::Value;
use std::sync::Once;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// How often and how patiently a failed call is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub initial: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            initial: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The back-off before retry number `retry` (0-based), without a `Retry-After`.
    pub fn backoff(&self, retry: u32) -> Duration {
        self.initial
            .saturating_mul(2u32.saturating_pow(retry.min(16)))
            .min(self.max_delay)
    }
}

/// The shared HTTP client. Installs rustls' `ring` provider the first time.
pub fn client() -> Result<reqwest::Client, BrainError> {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Another part of the process may have installed one already; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .user_agent(concat!("agentmesh/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| BrainError::Failed(format!("cannot build the HTTP client: {e}")))
}

/// One JSON POST to a model API.
pub struct Post<'a> {
    pub client: &'a reqwest::Client,
    /// For messages: `openai`, `anthropic`.
    pub api: &'a str,
    pub url: String,
    /// Headers besides `content-type`; values that hold the key are built by the caller
    /// from [`ApiKey::expose`] and never logged.
    pub headers: Vec<(&'static str, String)>,
    pub body: &'a Value,
    pub key: Option<&'a ApiKey>,
    pub deadline: Instant,
    pub retry: RetryPolicy,
}

impl Post<'_> {
    /// [`Post::send`], then reads the reply with `parse`; a reply `parse` refuses is a
    /// failure naming the API, the URL, why, and the start of the reply.
    pub async fn send_and_parse<T>(
        &self,
        parse: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Result<T, BrainError> {
        let response = self.send().await?;
        parse(&response).map_err(|why| {
            BrainError::Failed(format!(
                "{} call to {}: unexpected response ({why}): {}",
                self.api,
                self.url,
                crate::verdict::clip(&response.to_string(), 200)
            ))
        })
    }

    /// Sends the request, retrying as the module docs say; returns the parsed JSON body
    /// of the first 2xx response.
    pub async fn send(&self) -> Result<Value, BrainError> {
        let mut retry = 0u32;
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.fail("the turn timeout passed before the call could be made"));
            }
            let mut request = self
                .client
                .post(&self.url)
                .timeout(left)
                .header("content-type", "application/json")
                .json(self.body);
            for (name, value) in &self.headers {
                request = request.header(*name, value);
            }
            let outcome = request.send().await;
            let (why, retry_after, cause) = match outcome {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers());
                    let text = match response.text().await {
                        Ok(text) => text,
                        Err(e) if e.is_timeout() => {
                            return Err(self.fail(&format!(
                                "timed out reading the response after the turn timeout ({})",
                                scrub(self.key, &e.to_string())
                            )));
                        }
                        Err(e) => {
                            let why = format!("reading the response failed: {}", self.clean(&e));
                            self.wait_or_fail(retry, None, &why, RetryCause::Connection)
                                .await?;
                            retry += 1;
                            continue;
                        }
                    };
                    if status.is_success() {
                        return serde_json::from_str(&text).map_err(|e| {
                            self.fail(&format!(
                                "the response is not valid JSON ({e}): {:?}",
                                crate::verdict::clip(&scrub(self.key, &text), 200)
                            ))
                        });
                    }
                    let why = format!(
                        "HTTP {}: {}",
                        status.as_u16(),
                        crate::verdict::clip(&error_message(&scrub(self.key, &text)), 300)
                    );
                    if status.as_u16() == 429 {
                        (why, retry_after, RetryCause::RateLimited)
                    } else if status.is_server_error() {
                        (why, retry_after, RetryCause::ServerError)
                    } else {
                        return Err(self.fail(&why));
                    }
                }
                Err(e) if e.is_timeout() => {
                    return Err(self.fail("timed out: no response within the turn timeout"));
                }
                Err(e) => (
                    format!("connection failed: {}", self.clean(&e)),
                    None,
                    RetryCause::Connection,
                ),
            };
            self.wait_or_fail(retry, retry_after, &why, cause).await?;
            retry += 1;
        }
    }

    /// Waits before retry number `retry`, or fails when retries are used up or the wait
    /// would pass the deadline.
    async fn wait_or_fail(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        why: &str,
        cause: RetryCause,
    ) -> Result<(), BrainError> {
        if retry >= self.retry.max_retries {
            return Err(self.fail(&format!(
                "gave up after {} attempts; last: {why}",
                retry + 1
            )));
        }
        let delay = retry_after
            .unwrap_or_else(|| self.retry.backoff(retry))
            .min(self.retry.max_delay);
        if Instant::now() + delay >= self.deadline {
            return Err(self.fail(&format!(
                "{why}; a retry in {delay:?} would pass the turn timeout"
            )));
        }
        tracing::warn!(api = self.api, url = %self.url, %why, ?delay, retry = retry + 1, cause = cause.as_str(), "model call failed; retrying");
        crate::observe::retry(self.api, cause);
        tokio::time::sleep(delay).await;
        Ok(())
    }

    fn clean(&self, e: &reqwest::Error) -> String {
        // reqwest's Display omits the source chain; include it (connection refused, ...).
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        scrub(self.key, &text)
    }

    fn fail(&self, why: &str) -> BrainError {
        BrainError::Failed(format!(
            "{} call to {}: {}",
            self.api,
            self.url,
            scrub(self.key, why)
        ))
    }
}

/// A `Retry-After` header: delta seconds or an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(Duration::from_secs_f64(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The human part of an API error body: `error.message` (OpenAI, Anthropic), or the
/// body itself.
fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_else(|| body.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            max_retries: 9,
            initial: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        let delays: Vec<u128> = (0..6).map(|r| p.backoff(r).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("0.5"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(500)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(10));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(8) && d <= Duration::from_secs(10),
            "{d:?}"
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn error_messages_are_extracted() {
        assert_eq!(
            error_message(r#"{"error": {"message": "rate limited", "type": "x"}}"#),
            "rate limited"
        );
        assert_eq!(error_message(" plain text "), "plain text");
    }
}
