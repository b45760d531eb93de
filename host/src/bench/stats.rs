//! Statistics for A/B comparisons: paired ratios B/A, their median, and a percentile bootstrap
//! confidence interval of that median. A difference is called only when the interval excludes
//! 1.0, and only with enough pairs for the interval to mean its level: with n pairs the
//! bootstrap interval of a median is about [min, max] of the ratios, which excludes 1.0 by
//! chance with probability 2 / 2^n when nothing differs (a sign test). So n must satisfy
//! 2 / 2^n <= 1 - confidence: 6 pairs for 95%, 8 for 99% ([`min_pairs`]).

use crate::rng::Rng;
use serde::{Deserialize, Serialize};

const RESAMPLES: usize = 10_000;

/// The fewest pairs whose interval can exclude 1.0 at `confidence` (see the module doc).
pub fn min_pairs(confidence: f64) -> usize {
    (1..64)
        .find(|&n| 2.0 / 2f64.powi(n as i32) <= 1.0 - confidence + 1e-12)
        .unwrap_or(64)
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Paired {
    pub a_median: f64,
    pub b_median: f64,
    /// B/A of each trial pair, in trial order.
    pub ratios: Vec<f64>,
    pub ratio_median: f64,
    /// Percentile bootstrap interval of the median ratio (`confidence`, e.g. 0.95).
    pub ci_low: f64,
    pub ci_high: f64,
    pub verdict: Verdict,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    BHigher,
    BLower,
    NoDifferenceDetected,
    TooFewTrials,
}

impl Verdict {
    pub fn describe(self) -> &'static str {
        match self {
            Verdict::BHigher => "B higher",
            Verdict::BLower => "B lower",
            Verdict::NoDifferenceDetected => "no difference detected",
            Verdict::TooFewTrials => "too few trials to call",
        }
    }
}

/// The median (mean of the middle two for an even count); NaN for no samples.
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Compares paired samples (`a[i]` and `b[i]` from trial `i`). Pairs where A is 0 give no ratio
/// (0/0 counts as 1: both sides measured nothing).
pub fn paired(a: &[f64], b: &[f64], confidence: f64, seed: u64) -> Paired {
    let ratios: Vec<f64> = a
        .iter()
        .zip(b)
        .filter_map(|(&x, &y)| match (x == 0.0, y == 0.0) {
            (true, true) => Some(1.0),
            (true, false) => None,
            _ => Some(y / x),
        })
        .collect();
    let ratio_median = median(&ratios);
    let (ci_low, ci_high) = bootstrap_median_ci(&ratios, confidence, seed);
    let verdict = if ratios.len() < min_pairs(confidence) {
        Verdict::TooFewTrials
    } else if ci_low > 1.0 {
        Verdict::BHigher
    } else if ci_high < 1.0 {
        Verdict::BLower
    } else {
        Verdict::NoDifferenceDetected
    };
    Paired {
        a_median: median(a),
        b_median: median(b),
        ratios,
        ratio_median,
        ci_low,
        ci_high,
        verdict,
    }
}

/// Percentile bootstrap of the median: resample with replacement, take the median of each
/// resample, report the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles.
pub fn bootstrap_median_ci(xs: &[f64], confidence: f64, seed: u64) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = Rng::derive(seed, "bootstrap");
    let mut medians: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            let sample: Vec<f64> = (0..xs.len()).map(|_| xs[rng.index(xs.len())]).collect();
            median(&sample)
        })
        .collect();
    medians.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| medians[((q * (RESAMPLES - 1) as f64).round() as usize).min(RESAMPLES - 1)];
    (at((1.0 - confidence) / 2.0), at((1.0 + confidence) / 2.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples with multiplicative noise of about +-3% around `level`.
    fn noisy(level: f64, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = Rng::derive(seed, "noise");
        (0..n)
            .map(|_| level * (1.0 + 0.06 * (rng.next_f64() - 0.5)))
            .collect()
    }

    #[test]
    fn a_known_ratio_lies_inside_the_interval_and_is_called() {
        let a = noisy(100.0, 12, 1);
        let b = noisy(125.0, 12, 2);
        let p = paired(&a, &b, 0.95, 7);
        assert!(
            p.ci_low <= 1.25 && 1.25 <= p.ci_high,
            "1.25 outside [{}, {}]",
            p.ci_low,
            p.ci_high
        );
        assert!(
            (p.ratio_median - 1.25).abs() < 0.05,
            "median ratio {}",
            p.ratio_median
        );
        assert_eq!(p.verdict, Verdict::BHigher);
        let p = paired(&b, &a, 0.95, 7);
        assert_eq!(p.verdict, Verdict::BLower);
        assert!(p.ci_low <= 0.8 && 0.8 <= p.ci_high);
    }

    #[test]
    fn identical_samples_give_no_difference() {
        let a = noisy(50.0, 8, 3);
        let p = paired(&a, &a, 0.95, 7);
        assert_eq!((p.ratio_median, p.ci_low, p.ci_high), (1.0, 1.0, 1.0));
        assert_eq!(p.verdict, Verdict::NoDifferenceDetected);
        // Same distribution, independent noise: the interval straddles 1.
        let p = paired(&noisy(50.0, 9, 4), &noisy(50.0, 9, 5), 0.95, 7);
        assert_eq!(p.verdict, Verdict::NoDifferenceDetected, "{p:?}");
    }

    #[test]
    fn too_few_pairs_are_not_called_and_zeros_are_handled() {
        assert_eq!(
            (min_pairs(0.95), min_pairs(0.99), min_pairs(0.75)),
            (6, 8, 3)
        );
        // Five pairs all on one side is not 95% evidence; six is.
        assert_eq!(
            paired(&[1.0; 5], &[2.0; 5], 0.95, 1).verdict,
            Verdict::TooFewTrials
        );
        assert_eq!(
            paired(&[1.0; 6], &[2.0; 6], 0.95, 1).verdict,
            Verdict::BHigher
        );
        let p = paired(&[0.0; 6], &[0.0; 6], 0.95, 1);
        assert_eq!(
            (p.ratio_median, p.verdict),
            (1.0, Verdict::NoDifferenceDetected)
        );
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    }
}
