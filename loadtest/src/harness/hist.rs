//! Latency histograms (HdrHistogram, microseconds, 3 significant digits) and the
//! numbers reports take from them.
//!
//! Worker processes ship histograms to the coordinator as [`HistData`]: the non-empty
//! buckets as `(value, count)` pairs, which rebuild the same histogram exactly (up to
//! the bucket resolution every value already had). Values above [`MAX_US`] are
//! recorded as `MAX_US` and counted in `clamped`, never dropped.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency a histogram tells apart: 10 minutes, beyond any bounded run.
pub const MAX_US: u64 = 600_000_000;
/// Significant decimal digits kept (0.1 % relative precision).
const SIGFIG: u8 = 3;

/// A histogram that cannot be built from its parts.
#[derive(Debug, thiserror::Error)]
#[error("invalid histogram data: {0}")]
pub struct HistError(String);

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    h: Histogram<u64>,
    clamped: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        // 1..=MAX_US with 3 digits is a fixed, valid configuration.
        let h = Histogram::new_with_bounds(1, MAX_US, SIGFIG).unwrap_or_else(|_| unreachable!("valid bounds"));
        Latency { h, clamped: 0 }
    }

    /// Records one latency; 0 counts as 1 µs, values past [`MAX_US`] as `MAX_US`.
    pub fn record(&mut self, us: u64) {
        if us > MAX_US {
            self.clamped += 1;
        }
        let v = us.clamp(1, MAX_US);
        // In range by the clamp above, so recording cannot fail.
        let _ = self.h.record(v);
    }

    pub fn add(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.h.add(&other.h);
        self.clamped += other.clamped;
    }

    pub fn count(&self) -> u64 {
        self.h.len()
    }

    pub fn is_empty(&self) -> bool {
        self.h.is_empty()
    }

    /// The value at quantile `q` (0..=1); 0 for an empty histogram.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.h.is_empty() {
            return 0;
        }
        self.h.value_at_quantile(q)
    }

    pub fn max(&self) -> u64 {
        self.h.max()
    }

    pub fn summary(&self) -> Percentiles {
        Percentiles {
            count: self.count(),
            mean_us: if self.is_empty() { 0.0 } else { self.h.mean() },
            p50_us: self.quantile(0.50),
            p90_us: self.quantile(0.90),
            p99_us: self.quantile(0.99),
            p999_us: self.quantile(0.999),
            max_us: if self.is_empty() { 0 } else { self.max() },
        }
    }

    /// The percentile spectrum for distribution plots: `(quantile, value)` at
    /// quantiles 0, 0.5, 0.75, 0.875, ... up to the maximum.
    pub fn spectrum(&self) -> Vec<(f64, u64)> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut missing = 1.0f64;
        // Beyond 1/count the quantiles are all the maximum; stop there.
        let floor = (1.0 / self.count() as f64).max(1e-7);
        while missing > floor {
            let q = 1.0 - missing;
            out.push((q, self.quantile(q)));
            missing /= 2f64.sqrt();
        }
        out.push((1.0, self.max()));
        out
    }

    pub fn to_data(&self) -> HistData {
        HistData {
            buckets: self.h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect(),
            clamped: self.clamped,
        }
    }

    pub fn from_data(d: &HistData) -> Result<Self, HistError> {
        let mut l = Latency::new();
        for &(value, count) in &d.buckets {
            if value > MAX_US * 2 {
                return Err(HistError(format!("value {value} beyond {MAX_US}")));
            }
            l.h.record_n(value.clamp(1, MAX_US), count).map_err(|e| HistError(format!("{e:?}")))?;
        }
        l.clamped = d.clamped;
        Ok(l)
    }
}

/// A histogram in transit between processes (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistData {
    pub buckets: Vec<(u64, u64)>,
    #[serde(default)]
    pub clamped: u64,
}

/// What reports show of a histogram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// `n` events over `secs` seconds as a rate (0 for an empty interval).
pub fn per_second(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniform(lo: u64, hi: u64) -> Latency {
        let mut l = Latency::new();
        for v in lo..=hi {
            l.record(v);
        }
        l
    }

    /// Relative error of HdrHistogram at 3 digits is below 0.1 %.
    #[track_caller]
    fn close(got: u64, want: u64) {
        let tol = (want / 500).max(1);
        assert!(got.abs_diff(want) <= tol, "got {got}, want {want}±{tol}");
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let p = uniform(1, 10_000).summary();
        assert_eq!(p.count, 10_000);
        close(p.p50_us, 5_000);
        close(p.p90_us, 9_000);
        close(p.p99_us, 9_900);
        close(p.p999_us, 9_990);
        close(p.max_us, 10_000);
        assert!((p.mean_us - 5_000.5).abs() < 10.0);
    }

    #[test]
    fn one_slow_outlier_shows_in_max_and_p999_only() {
        let mut l = uniform(100, 1_099);
        l.record(2_000_000);
        let p = l.summary();
        close(p.p99_us, 1_089);
        close(p.max_us, 2_000_000);
        assert!(p.p999_us < 2_000, "{p:?}");
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let (mut a, b) = (uniform(1, 500), uniform(501, 2_000));
        a.add(&b);
        assert_eq!(a.summary(), uniform(1, 2_000).summary());
    }

    #[test]
    fn data_round_trip_is_exact() {
        let mut l = uniform(1, 3_000);
        l.record(MAX_US * 3);
        let back = Latency::from_data(&l.to_data()).unwrap();
        assert_eq!(back.summary(), l.summary());
        assert_eq!(back.to_data(), l.to_data());
        assert_eq!(back.to_data().clamped, 1);
        let json = serde_json::to_string(&l.to_data()).unwrap();
        let again: HistData = serde_json::from_str(&json).unwrap();
        assert_eq!(Latency::from_data(&again).unwrap().summary(), l.summary());
    }

    #[test]
    fn empty_and_out_of_range() {
        let e = Latency::new();
        assert_eq!(e.summary(), Percentiles::default());
        assert!(e.spectrum().is_empty());
        let mut z = Latency::new();
        z.record(0);
        assert_eq!(z.summary().max_us, 1);
        assert!(Latency::from_data(&HistData { buckets: vec![(u64::MAX, 1)], clamped: 0 }).is_err());
    }

    #[test]
    fn spectrum_is_monotonic_and_ends_at_max() {
        let s = uniform(1, 100_000).spectrum();
        assert!(s.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(s.last().map(|p| p.1), Some(uniform(1, 100_000).max()));
        assert_eq!(s.first().map(|p| p.0), Some(0.0));
    }

    #[test]
    fn rates() {
        assert_eq!(per_second(300, 2.0), 150.0);
        assert_eq!(per_second(5, 0.0), 0.0);
    }
}
