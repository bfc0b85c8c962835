//! Sustained mode (MELT's "continuous execution"): a workload repeated back to back for a
//! fixed time, summarized as throughput, power and temperature over that time, and the time
//! until throughput fell by a tenth.
//!
//! The runner only repeats (`--sustained DURATION` replaces the stopping rule); this module
//! reads the samples (each knows when it started) and the probes' series afterwards.

use serde::{Deserialize, Serialize};

use crate::probe::ProbeSummary;
use crate::workload::{Measured, Workload};

/// How many windows the run is cut into for its time series, at most.
pub const MAX_WINDOWS: usize = 40;

/// A fall of throughput past this fraction of its start is what [`Sustained::drop_after_s`]
/// times.
pub const DROP: f64 = 0.10;

/// One window of a sustained run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Start of the window, seconds since measuring began.
    pub t_s: f64,
    /// Tokens over busy time of the runs that started in the window.
    pub tok_s: f64,
    pub runs: usize,
    /// Average power over the window (when an energy source was read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watts: Option<f64>,
    /// The hottest zone's highest reading in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_c: Option<f64>,
}

/// A sustained case over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sustained {
    pub duration_s: f64,
    pub runs: usize,
    /// Median tok/s of the first runs (the first twentieth of them, at least 3).
    pub initial_tok_s: f64,
    /// Median tok/s of as many runs at the end.
    pub final_tok_s: f64,
    /// `final / initial − 1`.
    pub change: f64,
    /// When the rolling median of that many runs first fell [`DROP`] below the start
    /// (seconds since measuring began, at the end of the run that made it fall); `None`:
    /// it never did.
    pub drop_after_s: Option<f64>,
    pub windows: Vec<Window>,
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Summarizes the measured runs of a sustained case. Runs without a start time (recorded
/// before melt kept one) are placed back to back.
pub fn summarize(
    w: &Workload,
    samples: &[Measured],
    probes: Option<&ProbeSummary>,
) -> Option<Sustained> {
    if samples.is_empty() {
        return None;
    }
    let tokens = w.tokens() as f64;
    // (start s, end s, tok/s) of each run.
    let mut runs = Vec::with_capacity(samples.len());
    let mut t = 0.0;
    for m in samples {
        let start = m.at_ns.map_or(t, |a| a as f64 / 1e9);
        let secs = m.ns.max(1) as f64 / 1e9;
        runs.push((start, start + secs, tokens / secs));
        t = start + secs;
    }
    let duration_s = runs.last().map_or(0.0, |r| r.1);
    let k = (runs.len() / 20).max(3).min(runs.len());
    let rates = |rs: &[(f64, f64, f64)]| median(&mut rs.iter().map(|r| r.2).collect::<Vec<_>>());
    let initial = rates(&runs[..k]);
    let final_ = rates(&runs[runs.len() - k..]);
    let drop_after_s = (k..=runs.len())
        .find(|&end| rates(&runs[end - k..end]) < initial * (1.0 - DROP))
        .map(|end| runs[end - 1].1);

    // Windows: equal slices of the run's time, at most one per run.
    let n_windows = runs.len().clamp(1, MAX_WINDOWS);
    let width = duration_s / n_windows as f64;
    let mut windows = Vec::with_capacity(n_windows);
    for i in 0..n_windows {
        let (a, b) = (i as f64 * width, (i + 1) as f64 * width);
        let last = i + 1 == n_windows;
        let inside: Vec<_> = runs
            .iter()
            .filter(|r| r.0 >= a && (r.0 < b || last))
            .collect();
        if inside.is_empty() {
            continue;
        }
        let busy: f64 = inside.iter().map(|r| r.1 - r.0).sum();
        let probe = probes.map(|p| p.window(a, b)).unwrap_or_default();
        windows.push(Window {
            t_s: a,
            tok_s: tokens * inside.len() as f64 / busy,
            runs: inside.len(),
            watts: probe.0,
            temp_c: probe.1,
        });
    }
    Some(Sustained {
        duration_s,
        runs: runs.len(),
        initial_tok_s: initial,
        final_tok_s: final_,
        change: final_ / initial - 1.0,
        drop_after_s,
        windows,
    })
}

impl Sustained {
    /// One line for the terminal.
    pub fn line(&self) -> String {
        let fell = match self.drop_after_s {
            Some(t) => format!("fell {:.0}% below its start after {t:.0} s", DROP * 100.0),
            None => format!("never fell {:.0}% below its start", DROP * 100.0),
        };
        format!(
            "{:.0} s, {} runs: {:.2} → {:.2} tok/s ({:+.1}%); {fell}",
            self.duration_s,
            self.runs,
            self.initial_tok_s,
            self.final_tok_s,
            self.change * 100.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::tg;

    /// Runs of `tokens` tokens at the given rates, back to back with a 10 ms gap.
    fn runs(tokens: usize, rates: &[f64]) -> Vec<Measured> {
        let mut t = 0u64;
        rates
            .iter()
            .map(|r| {
                let ns = (tokens as f64 / r * 1e9) as u64;
                let m = Measured {
                    ns,
                    at_ns: Some(t),
                    ..Measured::default()
                };
                t += ns + 10_000_000;
                m
            })
            .collect()
    }

    #[test]
    fn a_steady_run_never_drops() {
        let rates: Vec<f64> = (0..60).map(|i| 100.0 + (i % 3) as f64).collect();
        let s = summarize(&tg(100), &runs(100, &rates), None).unwrap();
        assert_eq!(s.runs, 60);
        assert_eq!(s.drop_after_s, None);
        assert!((s.initial_tok_s - 101.0).abs() < 1.01, "{s:?}");
        assert!(s.change.abs() < 0.02);
        assert_eq!(s.windows.len(), 40);
        assert!(s.windows.iter().all(|w| (99.0..=103.0).contains(&w.tok_s)));
    }

    #[test]
    fn throttling_is_timed_where_the_rolling_median_falls() {
        // 100 tok/s for 20 runs of 1 s, then 80 tok/s: the rolling median of 3 runs falls
        // below 90 at the second slow run, which ends at 20 × 1.01 + 2 × 1.25 s.
        let mut rates = vec![100.0; 20];
        rates.extend([80.0; 20]);
        let s = summarize(&tg(100), &runs(100, &rates), None).unwrap();
        let t = s.drop_after_s.expect("a 20% fall is found");
        let expected = 20.0 * 1.01 + 1.25 + 0.01 + 1.25;
        assert!((t - expected).abs() < 0.02, "{t} vs {expected}");
        assert!((s.change + 0.2).abs() < 1e-6);
        // One slow run alone does not count as a fall.
        let mut spike = vec![100.0; 40];
        spike[10] = 50.0;
        let s = summarize(&tg(100), &runs(100, &spike), None).unwrap();
        assert_eq!(s.drop_after_s, None);
    }
}
