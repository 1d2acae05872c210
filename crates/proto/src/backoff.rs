//! The one back-off schedule of every retry loop in agentmesh.
//!
//! ```
//! use agentmesh_proto::Backoff;
//! use std::time::Duration;
//!
//! let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
//! assert_eq!(backoff.next_delay(), Duration::from_millis(100));
//! assert_eq!(backoff.next_delay(), Duration::from_millis(200));
//! backoff.reset(); // after a success
//! assert_eq!(backoff.next_delay(), Duration::from_millis(100));
//!
//! // A fleet that lost the same peer should not come back in lock-step:
//! let mut jittered =
//!     Backoff::new(Duration::from_millis(100), Duration::from_secs(2)).with_jitter(0.5);
//! let d = jittered.next_delay();
//! assert!(d > Duration::from_millis(50) && d <= Duration::from_millis(100));
//! ```

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Exponential back-off: `first`, then twice as long after each failure, never more than
/// `cap`; with [`Backoff::with_jitter`], each wait is drawn at random from the top part of
/// that. [`Backoff::reset`] starts over (call it after a success).
///
/// It only computes delays; the caller sleeps (`tokio::time::sleep(b.next_delay())`), so
/// it works with any clock, paused tokio time included, and needs no runtime.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    /// The fraction of each delay that is random, in [0, 1].
    jitter: f64,
    /// Delays handed out since the last reset.
    attempt: u32,
    /// xorshift64* state; never 0.
    rng: u64,
}

impl Backoff {
    /// Doubling from `first` to `cap`, without jitter. A `cap` below `first` caps `first`.
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff {
            first: first.min(cap),
            cap,
            jitter: 0.0,
            attempt: 0,
            rng: seed(),
        }
    }

    /// Draws each delay uniformly from `(ceiling * (1 - fraction), ceiling]`, where the
    /// ceiling is the un-jittered delay ([`Backoff::ceiling`]): 0.5 waits between half and
    /// all of it, 1.0 anywhere up to it ("full jitter"). `fraction` is clamped to [0, 1].
    pub fn with_jitter(mut self, fraction: f64) -> Backoff {
        self.jitter = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self
    }

    /// The next delay before jitter: `first * 2^attempts`, capped.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        self.first.saturating_mul(factor).min(self.cap)
    }

    /// The delay to wait now; the next one is twice as long (before jitter), up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        if self.jitter == 0.0 {
            return ceiling;
        }
        // A uniform draw in [0, 1) from the top 53 bits.
        let r = (self.next_random() >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.saturating_sub(ceiling.mul_f64(self.jitter * r))
    }

    /// Starts over at `first`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A different seed for every schedule, without an RNG crate: std's `RandomState` is keyed
/// randomly per process, and the counter makes every schedule in it differ.
fn seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish() | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let got: Vec<u128> = (0..6).map(|_| ms(b.next_delay())).collect();
        assert_eq!(got, [100, 200, 400, 700, 700, 700]);
        assert_eq!(b.attempts(), 6);
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert_eq!(ms(b.ceiling()), 100);
        assert_eq!(ms(b.next_delay()), 100);
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::MAX);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(1 << 31));
        let mut huge = Backoff::new(Duration::MAX, Duration::MAX).with_jitter(1.0);
        assert!(huge.next_delay() <= Duration::MAX);
    }

    #[test]
    fn a_cap_below_first_caps_first() {
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_its_fraction_of_the_ceiling() {
        let mut b =
            Backoff::new(Duration::from_millis(100), Duration::from_secs(2)).with_jitter(0.5);
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(
                d > ceiling / 2 && d <= ceiling,
                "{d:?} outside ({:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceilings.push(ms(ceiling));
        }
        // Jitter does not change the schedule underneath.
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
    }

    #[test]
    fn jitter_spreads_delays_and_schedules_differ() {
        let draws = |b: &mut Backoff| -> Vec<Duration> {
            (0..32)
                .map(|_| {
                    b.reset();
                    b.next_delay()
                })
                .collect()
        };
        let mut a = Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).with_jitter(1.0);
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).with_jitter(1.0);
        let (da, db) = (draws(&mut a), draws(&mut b));
        assert!(da.iter().all(|d| *d <= Duration::from_secs(1)));
        let distinct: std::collections::BTreeSet<_> = da.iter().collect();
        assert!(distinct.len() > 16, "{da:?}");
        assert_ne!(da, db, "two schedules drew the same delays");
    }

    #[test]
    fn out_of_range_jitter_is_clamped() {
        let mut none =
            Backoff::new(Duration::from_millis(10), Duration::from_secs(1)).with_jitter(-3.0);
        assert_eq!(ms(none.next_delay()), 10);
        let mut nan =
            Backoff::new(Duration::from_millis(10), Duration::from_secs(1)).with_jitter(f64::NAN);
        assert_eq!(ms(nan.next_delay()), 10);
        let mut full =
            Backoff::new(Duration::from_millis(10), Duration::from_secs(1)).with_jitter(7.0);
        assert!(full.next_delay() <= Duration::from_millis(10));
    }
}
