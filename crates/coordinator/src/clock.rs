//! The coordinator's sense of time, injected.
//!
//! The core takes the time as an input (milliseconds since the epoch); session actors
//! read it from a [`Clock`] and sleep until the core's next deadline on tokio's timer.
//! In production that is the system clock. Tests use [`TokioClock`], which reads the
//! time off tokio's timer: under paused time (`#[tokio::test(start_paused = true)]`) a
//! 60-second phase timeout then passes in no real time, and exactly when it should.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// The tokio instant at which this clock will read `deadline_ms`.
    fn instant_of(&self, deadline_ms: i64) -> tokio::time::Instant {
        let wait = deadline_ms.saturating_sub(self.now_ms()).max(0) as u64;
        tokio::time::Instant::now() + Duration::from_millis(wait)
    }
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// A clock that moves with tokio's timer: the wall time when it was made, plus the time
/// tokio says has passed since. Pausing tokio's time pauses it.
pub struct TokioClock {
    start_ms: i64,
    start: tokio::time::Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock {
            start_ms: SystemClock.now_ms(),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        self.start_ms + self.start.elapsed().as_millis() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_with_paused_time_only() {
        let clock = TokioClock::default();
        let t0 = clock.now_ms();
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert_eq!(clock.now_ms() - t0, 90_000);
        let at = clock.instant_of(clock.now_ms() + 1_500);
        assert_eq!(
            at - tokio::time::Instant::now(),
            Duration::from_millis(1_500)
        );
    }
}
