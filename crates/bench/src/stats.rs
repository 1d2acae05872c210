//! Latency statistics: nearest-rank percentiles over microsecond samples, and rates.

use serde::Serialize;
use std::time::Duration;

/// A latency distribution in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Samples slower than twice the median: how often the tail happens, not just how
    /// far it reaches.
    pub over_2x_p50: usize,
}

impl Summary {
    /// The summary of `samples`; `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        let mean = us.iter().sum::<f64>() / us.len() as f64;
        let p50 = percentile(&us, 50.0);
        Some(Summary {
            over_2x_p50: us.iter().filter(|&&u| u > 2.0 * p50).count(),
            count: us.len(),
            min_us: us[0],
            mean_us: mean,
            p50_us: percentile(&us, 50.0),
            p90_us: percentile(&us, 90.0),
            p99_us: percentile(&us, 99.0),
            max_us: us[us.len() - 1],
        })
    }
}

/// The nearest-rank percentile of ascending `sorted`: the smallest sample with at least
/// `p` % of the samples at or below it. `p` in (0, 100]; 0 gives the minimum.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty(), "percentile of no samples");
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Events per second over `elapsed` (0 when no time passed).
pub fn per_second(events: usize, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        events as f64 / secs
    } else {
        0.0
    }
}

/// `a / b`, or 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        let small = [10.0, 20.0, 30.0];
        assert_eq!(percentile(&small, 50.0), 20.0);
        assert_eq!(percentile(&small, 99.0), 30.0);
        assert_eq!(percentile(&small, 34.0), 20.0);
        assert_eq!(percentile(&small, 33.0), 10.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn summaries_sort_their_samples() {
        let samples: Vec<Duration> = [300, 100, 200, 400]
            .into_iter()
            .map(Duration::from_micros)
            .collect();
        let s = Summary::of(&samples).unwrap();
        assert_eq!(s.count, 4);
        assert_eq!(s.min_us, 100.0);
        assert_eq!(s.max_us, 400.0);
        assert_eq!(s.p50_us, 200.0);
        assert_eq!(s.p99_us, 400.0);
        assert!((s.mean_us - 250.0).abs() < 1e-9);
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn rates_and_ratios() {
        assert_eq!(per_second(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(per_second(5, Duration::ZERO), 0.0);
        assert_eq!(ratio(3.0, 2.0), 1.5);
        assert_eq!(ratio(3.0, 0.0), 0.0);
    }
}
