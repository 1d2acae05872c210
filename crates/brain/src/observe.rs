//! What a process that runs brains learns about their model calls, without the brains
//! knowing how it is recorded: one [`ModelObserver`], set once per process
//! ([`set_observer`]), is told of every model call when it ends and of every retry.
//! `mesh-worker` turns these into its Prometheus metrics; without an observer nothing is
//! recorded and nothing is spent.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// One model call, as it ended.
#[derive(Debug, Clone)]
pub struct ModelCall<'a> {
    /// The API: `openai`, `anthropic`, `exec`.
    pub provider: &'a str,
    /// The model asked for (empty when the API has no such notion, as exec).
    pub model: &'a str,
    pub duration: Duration,
    /// `None` on success; else a short, bounded name of what went wrong.
    pub error: Option<&'static str>,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Why a model call was tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// HTTP 429.
    RateLimited,
    /// HTTP 5xx.
    ServerError,
    /// The connection failed, or the response could not be read.
    Connection,
}

impl RetryCause {
    pub fn as_str(self) -> &'static str {
        match self {
            RetryCause::RateLimited => "rate_limited",
            RetryCause::ServerError => "server_error",
            RetryCause::Connection => "connection",
        }
    }
}

pub trait ModelObserver: Send + Sync + 'static {
    fn model_call(&self, call: &ModelCall<'_>);
    fn retry(&self, provider: &str, cause: RetryCause);
}

static OBSERVER: OnceLock<Arc<dyn ModelObserver>> = OnceLock::new();

/// Sets the process's observer; a second call is ignored (returns false).
pub fn set_observer(observer: Arc<dyn ModelObserver>) -> bool {
    OBSERVER.set(observer).is_ok()
}

pub(crate) fn model_call(call: ModelCall<'_>) {
    if let Some(observer) = OBSERVER.get() {
        observer.model_call(&call);
    }
}

pub(crate) fn retry(provider: &str, cause: RetryCause) {
    if let Some(observer) = OBSERVER.get() {
        observer.retry(provider, cause);
    }
}
