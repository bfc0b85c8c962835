//! Statistics with criterion 0.8's semantics, so that melt's numbers mean what criterion's mean.
//!
//! - Point estimates: mean, unbiased standard deviation, median (linear interpolation between
//!   order statistics), median absolute deviation scaled by 1.4826.
//! - Confidence intervals: percentile bootstrap (default 100 000 resamples, 95%), standard
//!   error = standard deviation of the bootstrap distribution.
//! - Outliers: Tukey fences at 1.5 (mild) and 3 (severe) interquartile ranges.
//! - Change detection: Welch's t statistic, its null distribution bootstrapped from the pooled
//!   samples, two-tailed p-value; relative change of mean and median bootstrapped from
//!   independent resamples; significant when p < 0.05, and a real change only when the whole
//!   CI of the mean's relative change lies beyond the noise threshold (default 1%).
//!
//! melt computes these itself (rather than through criterion's pipeline) because criterion
//! decides the sample count up front and needs at least 10 samples, while melt stops
//! adaptively and, on a phone with a 7B model, may take five. The resampling generator is
//! seeded, so a result is reproducible from its samples.

use serde::{Deserialize, Serialize};

/// Settings of the analysis; defaults are criterion's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AnalysisConfig {
    pub confidence_level: f64,
    pub nresamples: usize,
    pub significance_level: f64,
    pub noise_threshold: f64,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            confidence_level: 0.95,
            nresamples: 100_000,
            significance_level: 0.05,
            noise_threshold: 0.01,
        }
    }
}

/// criterion's `ConfidenceInterval` (same field names on disk).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConfidenceInterval {
    pub confidence_level: f64,
    pub lower_bound: f64,
    pub upper_bound: f64,
}

/// criterion's `Estimate`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub confidence_interval: ConfidenceInterval,
    pub point_estimate: f64,
    pub standard_error: f64,
}

/// criterion's `Estimates` (`estimates.json`). `slope` is `null` for flat sampling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimates {
    pub mean: Estimate,
    pub median: Estimate,
    pub median_abs_dev: Estimate,
    pub slope: Option<Estimate>,
    pub std_dev: Estimate,
}

/// criterion's `ChangeEstimates` (`change/estimates.json`): relative changes, 0.05 = +5%.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEstimates {
    pub mean: Estimate,
    pub median: Estimate,
}

/// Small, fast, seedable generator (SplitMix64) for resampling.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (Lemire's multiply-shift; bias below 2^-32 for small n).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 32).wrapping_mul(n as u64) >> 32) as usize
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller), for simulations with a known truth.
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit().max(1e-300), self.unit());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

const SEED: u64 = 0x6d65_6c74; // "melt"

pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Unbiased variance (n - 1), as criterion.
pub fn variance(xs: &[f64], mean: f64) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (xs.len() - 1) as f64
}

pub fn std_dev(xs: &[f64]) -> f64 {
    variance(xs, mean(xs)).sqrt()
}

fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut v = xs.to_vec();
    v.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v
}

/// Percentile `p` in [0, 100] of an already sorted slice, criterion's interpolation.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    let len = sorted.len() - 1;
    if p >= 100.0 {
        return sorted[len];
    }
    let rank = (p / 100.0) * len as f64;
    let integer = rank.floor();
    let fraction = rank - integer;
    let n = integer as usize;
    let floor = sorted[n];
    let ceiling = sorted[(n + 1).min(len)];
    floor + (ceiling - floor) * fraction
}

pub fn percentile(xs: &[f64], p: f64) -> f64 {
    percentile_sorted(&sorted(xs), p)
}

pub fn median(xs: &[f64]) -> f64 {
    percentile(xs, 50.0)
}

/// Median absolute deviation, scaled by 1.4826 to estimate the standard deviation of a normal.
pub fn median_abs_dev(xs: &[f64], median: f64) -> f64 {
    let devs: Vec<f64> = xs.iter().map(|x| (x - median).abs()).collect();
    percentile(&devs, 50.0) * 1.4826
}

/// (mean, std_dev, median, mad) of one sample.
fn point_stats(xs: &[f64]) -> [f64; 4] {
    let m = mean(xs);
    let sd = variance(xs, m).sqrt();
    let med = median(xs);
    let mad = median_abs_dev(xs, med);
    [m, sd, med, mad]
}

fn estimate_from(point: f64, mut distribution: Vec<f64>, cl: f64) -> Estimate {
    distribution.retain(|x| x.is_finite());
    let se = std_dev(&distribution);
    let d = sorted(&distribution);
    let (lower_bound, upper_bound) = if d.is_empty() {
        (point, point)
    } else {
        (
            percentile_sorted(&d, 50.0 * (1.0 - cl)),
            percentile_sorted(&d, 50.0 * (1.0 + cl)),
        )
    };
    Estimate {
        confidence_interval: ConfidenceInterval {
            confidence_level: cl,
            lower_bound,
            upper_bound,
        },
        point_estimate: point,
        standard_error: se,
    }
}

fn resample_into(rng: &mut Rng, from: &[f64], into: &mut [f64]) {
    for slot in into.iter_mut() {
        *slot = from[rng.below(from.len())];
    }
}

/// Bootstrap estimates of mean, median, std-dev and MAD (criterion's `estimates.json`).
pub fn estimates(xs: &[f64], config: &AnalysisConfig) -> Estimates {
    let points = point_stats(xs);
    let mut dists: [Vec<f64>; 4] = Default::default();
    for d in dists.iter_mut() {
        d.reserve(config.nresamples);
    }
    let mut rng = Rng::new(SEED);
    let mut buf = vec![0.0; xs.len()];
    for _ in 0..config.nresamples {
        resample_into(&mut rng, xs, &mut buf);
        let s = point_stats(&buf);
        for (d, v) in dists.iter_mut().zip(s) {
            d.push(v);
        }
    }
    let [dm, dsd, dmed, dmad] = dists;
    let cl = config.confidence_level;
    Estimates {
        mean: estimate_from(points[0], dm, cl),
        median: estimate_from(points[2], dmed, cl),
        median_abs_dev: estimate_from(points[3], dmad, cl),
        slope: None,
        std_dev: estimate_from(points[1], dsd, cl),
    }
}

/// Percentile-bootstrap CI of the mean alone (`(lower, upper)`), for the many secondary
/// metrics where the four-statistic [`estimates`] would be wasted work.
pub fn mean_confidence_interval(
    xs: &[f64],
    nresamples: usize,
    confidence_level: f64,
) -> (f64, f64) {
    let mut rng = Rng::new(SEED ^ 0x6369);
    let mut buf = vec![0.0; xs.len()];
    let means = (0..nresamples)
        .map(|_| {
            resample_into(&mut rng, xs, &mut buf);
            mean(&buf)
        })
        .collect();
    let ci = estimate_from(mean(xs), means, confidence_level).confidence_interval;
    (ci.lower_bound, ci.upper_bound)
}

/// Tukey fences `[low severe, low mild, high mild, high severe]` (criterion's `tukey.json`).
pub fn tukey_fences(xs: &[f64]) -> [f64; 4] {
    let s = sorted(xs);
    let q1 = percentile_sorted(&s, 25.0);
    let q3 = percentile_sorted(&s, 75.0);
    let iqr = q3 - q1;
    [
        q1 - 3.0 * iqr,
        q1 - 1.5 * iqr,
        q3 + 1.5 * iqr,
        q3 + 3.0 * iqr,
    ]
}

/// How many samples fall in each Tukey class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutlierCounts {
    pub low_severe: usize,
    pub low_mild: usize,
    pub high_mild: usize,
    pub high_severe: usize,
}

pub fn classify_outliers(xs: &[f64]) -> OutlierCounts {
    let [ls, lm, hm, hs] = tukey_fences(xs);
    let mut c = OutlierCounts::default();
    for &x in xs {
        if x < ls {
            c.low_severe += 1;
        } else if x > hs {
            c.high_severe += 1;
        } else if x < lm {
            c.low_mild += 1;
        } else if x > hm {
            c.high_mild += 1;
        }
    }
    c
}

/// Welch's t statistic of `a` against `b`.
pub fn welch_t(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    let (va, vb) = (variance(a, ma), variance(b, mb));
    (ma - mb) / (va / a.len() as f64 + vb / b.len() as f64).sqrt()
}

/// What a comparison concluded, in criterion's words (for times: up is a regression).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Improved,
    Regressed,
    /// Significant, but the CI of the change reaches inside the noise threshold.
    WithinNoise,
    /// Not statistically significant.
    NoChange,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Improved => "Performance has improved.",
            Verdict::Regressed => "Performance has regressed.",
            Verdict::WithinNoise => "Change within noise threshold.",
            Verdict::NoChange => "No change in performance detected.",
        })
    }
}

/// Result of comparing a new sample of per-iteration times with a baseline's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub t_value: f64,
    pub p_value: f64,
    pub change: ChangeEstimates,
    pub verdict: Verdict,
}

/// criterion's change detection of `new` against `base` (both per-iteration times).
pub fn compare(new: &[f64], base: &[f64], config: &AnalysisConfig) -> Comparison {
    let t_value = welch_t(new, base);
    let mut rng = Rng::new(SEED ^ 0x7465_7374);

    // Null distribution of t: resample both groups from the pooled data.
    let pooled: Vec<f64> = new.iter().chain(base).copied().collect();
    let (mut ra, mut rb) = (vec![0.0; new.len()], vec![0.0; base.len()]);
    let mut t_dist = Vec::with_capacity(config.nresamples);
    for _ in 0..config.nresamples {
        resample_into(&mut rng, &pooled, &mut ra);
        resample_into(&mut rng, &pooled, &mut rb);
        let t = welch_t(&ra, &rb);
        if t.is_finite() {
            t_dist.push(t);
        }
    }
    let hits = t_dist.iter().filter(|&&x| x < t_value).count();
    let p_value = if t_dist.is_empty() {
        1.0
    } else {
        hits.min(t_dist.len() - hits) as f64 / t_dist.len() as f64 * 2.0
    };

    // Relative change: criterion resamples `new` sqrt(n) times and pairs each with a block of
    // independent resamples of `base`.
    let outer = (config.nresamples as f64).sqrt().ceil() as usize;
    let per_chunk = config.nresamples.div_ceil(outer);
    let (mut d_mean, mut d_median) = (Vec::new(), Vec::new());
    for i in 0..outer {
        let start = i * per_chunk;
        let end = ((i + 1) * per_chunk).min(config.nresamples);
        if start >= end {
            break;
        }
        resample_into(&mut rng, new, &mut ra);
        let (ma, meda) = (mean(&ra), median(&ra));
        for _ in start..end {
            resample_into(&mut rng, base, &mut rb);
            d_mean.push(ma / mean(&rb) - 1.0);
            d_median.push(meda / median(&rb) - 1.0);
        }
    }
    let cl = config.confidence_level;
    let change = ChangeEstimates {
        mean: estimate_from(mean(new) / mean(base) - 1.0, d_mean, cl),
        median: estimate_from(median(new) / median(base) - 1.0, d_median, cl),
    };
    let verdict = if p_value < config.significance_level {
        let ci = change.mean.confidence_interval;
        let noise = config.noise_threshold;
        if ci.lower_bound < -noise && ci.upper_bound < -noise {
            Verdict::Improved
        } else if ci.lower_bound > noise && ci.upper_bound > noise {
            Verdict::Regressed
        } else {
            Verdict::WithinNoise
        }
    } else {
        Verdict::NoChange
    };
    Comparison {
        t_value,
        p_value,
        change,
        verdict,
    }
}

/// Standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Student's t quantile: exact for 1 and 2 degrees of freedom, Cornish-Fisher expansion
/// (error below 0.2% from 3 on) otherwise. Used for the adaptive stopping rule, which must be
/// cheap enough to evaluate after every sample.
pub fn t_quantile(p: f64, df: usize) -> f64 {
    let v = df as f64;
    match df {
        0 => f64::INFINITY,
        1 => (std::f64::consts::PI * (p - 0.5)).tan(),
        2 => (2.0 * p - 1.0) / (2.0 * p * (1.0 - p)).sqrt(),
        _ => {
            let z = normal_quantile(p);
            let (z3, z5, z7, z9) = (z.powi(3), z.powi(5), z.powi(7), z.powi(9));
            let g1 = (z3 + z) / 4.0;
            let g2 = (5.0 * z5 + 16.0 * z3 + 3.0 * z) / 96.0;
            let g3 = (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / 384.0;
            let g4 = (79.0 * z9 + 776.0 * z7 + 1482.0 * z5 - 1920.0 * z3 - 945.0 * z) / 92160.0;
            z + g1 / v + g2 / v.powi(2) + g3 / v.powi(3) + g4 / v.powi(4)
        }
    }
}

/// Half-width of the t-based confidence interval of the mean, relative to the mean.
pub fn relative_ci_half_width(xs: &[f64], confidence_level: f64) -> f64 {
    if xs.len() < 2 {
        return f64::INFINITY;
    }
    let m = mean(xs);
    let se = (variance(xs, m) / xs.len() as f64).sqrt();
    t_quantile(0.5 + confidence_level / 2.0, xs.len() - 1) * se / m.abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal_sample(rng: &mut Rng, n: usize, mu: f64, sigma: f64) -> Vec<f64> {
        (0..n).map(|_| mu + sigma * rng.normal()).collect()
    }

    fn quick() -> AnalysisConfig {
        AnalysisConfig {
            nresamples: 20_000,
            ..AnalysisConfig::default()
        }
    }

    #[test]
    fn point_statistics_match_hand_computed_values() {
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(mean(&xs), 5.0);
        assert!((std_dev(&xs) - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(median(&xs), 4.5);
        // |x - 4.5| = 2.5 .5 .5 .5 .5 .5 2.5 4.5 -> median .5, times 1.4826
        assert!((median_abs_dev(&xs, 4.5) - 0.7413).abs() < 1e-12);
        // criterion's interpolation: rank = p/100 * (n-1)
        assert!((percentile(&[1.0, 2.0, 3.0, 4.0], 25.0) - 1.75).abs() < 1e-12);
    }

    #[test]
    fn tukey_counts_of_a_hand_built_sample() {
        // 14 values: q1 = 10.25 (rank 3.25), q3 = 12.75 (rank 9.75), iqr 2.5:
        // mild fences 6.5 / 16.5, severe 2.75 / 20.25.
        let xs = [
            10.0, 10.0, 11.0, 11.0, 11.0, 12.0, 12.0, 12.0, 13.0, 13.0, 15.0, 1.0, 5.0, 18.0,
        ];
        let fences = tukey_fences(&xs);
        let c = classify_outliers(&xs);
        assert_eq!(fences, [2.75, 6.5, 16.5, 20.25], "{fences:?}");
        assert_eq!(
            c,
            OutlierCounts {
                low_severe: 1,
                low_mild: 1,
                high_mild: 1,
                high_severe: 0
            }
        );
    }

    #[test]
    fn t_quantiles_match_tables() {
        for (df, want) in [
            (1, 12.706),
            (2, 4.303),
            (3, 3.182),
            (4, 2.776),
            (9, 2.262),
            (29, 2.045),
        ] {
            let got = t_quantile(0.975, df);
            assert!((got - want).abs() / want < 2e-3, "df={df}: {got} vs {want}");
        }
        assert!((normal_quantile(0.975) - 1.959964).abs() < 1e-5);
    }

    #[test]
    fn bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time() {
        let mut rng = Rng::new(42);
        let config = AnalysisConfig {
            nresamples: 2_000,
            ..AnalysisConfig::default()
        };
        let trials = 200;
        let mut covered = 0;
        for _ in 0..trials {
            let xs = normal_sample(&mut rng, 30, 100.0, 5.0);
            let ci = estimates(&xs, &config).mean.confidence_interval;
            if ci.lower_bound <= 100.0 && 100.0 <= ci.upper_bound {
                covered += 1;
            }
        }
        // Percentile bootstrap slightly under-covers at n = 30; 95% nominal.
        assert!((176..=198).contains(&covered), "covered {covered}/{trials}");
    }

    #[test]
    fn ten_percent_slowdown_is_a_regression() {
        let mut rng = Rng::new(7);
        let base = normal_sample(&mut rng, 20, 100.0, 1.0);
        let new = normal_sample(&mut rng, 20, 110.0, 1.0);
        let c = compare(&new, &base, &quick());
        assert!(c.p_value < 0.05, "{c:?}");
        assert_eq!(c.verdict, Verdict::Regressed);
        let ci = c.change.mean.confidence_interval;
        assert!(ci.lower_bound > 0.08 && ci.upper_bound < 0.12, "{ci:?}");
        // And the same data the other way round is an improvement.
        assert_eq!(compare(&base, &new, &quick()).verdict, Verdict::Improved);
    }

    #[test]
    fn small_shift_is_within_noise_and_no_shift_is_no_change() {
        let mut rng = Rng::new(11);
        let base = normal_sample(&mut rng, 40, 100.0, 0.2);
        let new = normal_sample(&mut rng, 40, 100.3, 0.2);
        let c = compare(&new, &base, &quick());
        assert!(
            c.p_value < 0.05,
            "a 0.3% shift with 0.2% noise is significant: {c:?}"
        );
        assert_eq!(c.verdict, Verdict::WithinNoise);
        let same = normal_sample(&mut rng, 40, 100.0, 0.2);
        let c = compare(&same, &base, &quick());
        assert!(
            matches!(c.verdict, Verdict::NoChange | Verdict::WithinNoise),
            "{c:?}"
        );
        assert!(c.change.mean.point_estimate.abs() < 0.01);
    }

    #[test]
    fn relative_half_width_shrinks_with_n() {
        let mut rng = Rng::new(3);
        let xs = normal_sample(&mut rng, 100, 50.0, 1.0);
        let h5 = relative_ci_half_width(&xs[..5], 0.95);
        let h100 = relative_ci_half_width(&xs, 0.95);
        assert!(h100 < h5);
        // 1.98 * 1/sqrt(100) / 50 ~ 0.004
        assert!((h100 - 0.004).abs() < 0.001, "{h100}");
        assert!(relative_ci_half_width(&xs[..1], 0.95).is_infinite());
    }
}
