//! The CI gate: does the current run regress against a baseline, for real?
//!
//! criterion exits 0 after a regression and calls a 1% change significant; on real devices
//! runs drift by several percent, so a gate built on that would cry wolf. melt's rule: a case
//! *regresses* only when the change in tok/s is statistically significant (bootstrapped Welch
//! t-test, p < 0.05, criterion's) **and** its whole confidence interval lies beyond the
//! threshold (default 5% slower). A point estimate past the threshold without that is reported
//! as a warning, not a failure.
//!
//! Input is what the bench run wrote under `target/criterion`: each case's `new/` sample
//! against its baseline directory (a name given to `--save-baseline`, or `base`).
//!
//! Other metrics (time to first token, peak memory, latency percentiles) are gated when
//! `melt.toml` gives them a threshold. Their per-sample values are not kept, only the estimate
//! and its CI (`melt_metrics.json` beside criterion's files, or the history), so the rule is
//! the conservative one: the change from the baseline's CI bound nearest to the new CI's
//! farthest bound — a regression only when even that is past the threshold.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use melt_bench::criterion_format::{
    load_baseline_metrics, load_baseline_times, BenchmarkId, ReportError, SavedSample,
};
use melt_bench::stats::{self, AnalysisConfig};
use melt_bench::store::Metric;

/// The metric every case is gated on.
pub const TOKENS_PER_SECOND: &str = "tokens_per_second";

/// Thresholds: a default relative tok/s drop, thresholds for further metrics, and overrides
/// for cases matching a substring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Fractional tok/s drop that counts (0.05 = 5%).
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Further metrics to gate (`ttft_ms = 0.10`: 10% slower to the first token fails); a
    /// metric not named here is not gated.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// `(substring of the case id, [metric], threshold)`: the last match wins.
    #[serde(default)]
    pub cases: Vec<CaseThreshold>,
    #[serde(default = "default_significance")]
    pub significance_level: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseThreshold {
    pub matching: String,
    /// The metric this threshold is for; tok/s when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    pub threshold: f64,
}

/// Which way a metric gets better, from its name: throughputs up, times and sizes down.
/// `None` for a metric melt cannot judge.
pub fn higher_is_better(metric: &str) -> Option<bool> {
    if metric.ends_with(TOKENS_PER_SECOND) {
        Some(true)
    } else if metric.ends_with("_ms") || metric.ends_with("_bytes") {
        Some(false)
    } else {
        None
    }
}

/// A `[gate]` table that cannot mean anything.
#[derive(Debug, thiserror::Error)]
pub enum GateConfigError {
    #[error("{what}: threshold {threshold} is not a fraction between 0 and 1 (0.05 = 5%)")]
    NotAFraction { what: String, threshold: f64 },
    #[error("{what}: melt does not know which way `{metric}` gets better; gate metrics ending in `tokens_per_second` (higher is better), `_ms` or `_bytes` (lower is better)")]
    UnknownDirection { what: String, metric: String },
}

fn default_threshold() -> f64 {
    0.05
}
fn default_significance() -> f64 {
    0.05
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            threshold: default_threshold(),
            metrics: BTreeMap::new(),
            cases: Vec::new(),
            significance_level: default_significance(),
        }
    }
}

impl GateConfig {
    /// The tok/s threshold of a case.
    pub fn threshold_for(&self, case: &str) -> f64 {
        self.metric_threshold(case, TOKENS_PER_SECOND)
            .unwrap_or(self.threshold)
    }

    /// A metric's threshold for a case, `None` when that metric is not gated for it.
    pub fn metric_threshold(&self, case: &str, metric: &str) -> Option<f64> {
        let default = if metric == TOKENS_PER_SECOND {
            Some(self.threshold)
        } else {
            self.metrics.get(metric).copied()
        };
        self.cases
            .iter()
            .rev()
            .find(|c| {
                case.contains(&c.matching)
                    && c.metric.as_deref().unwrap_or(TOKENS_PER_SECOND) == metric
            })
            .map(|c| c.threshold)
            .or(default)
    }

    /// Metrics besides tok/s that have a threshold somewhere.
    pub fn extra_metrics(&self) -> Vec<String> {
        let mut out: Vec<String> = self.metrics.keys().cloned().collect();
        for c in &self.cases {
            if let Some(m) = &c.metric {
                if m != TOKENS_PER_SECOND && !out.contains(m) {
                    out.push(m.clone());
                }
            }
        }
        out
    }

    /// Rejects thresholds that cannot mean anything: not in (0, 1), or a metric whose
    /// better direction melt does not know.
    pub fn check(&self) -> Result<(), GateConfigError> {
        let range = |what: &str, t: f64| {
            if t > 0.0 && t < 1.0 {
                Ok(())
            } else {
                Err(GateConfigError::NotAFraction {
                    what: what.to_string(),
                    threshold: t,
                })
            }
        };
        range("[gate] threshold", self.threshold)?;
        let metrics = self
            .metrics
            .iter()
            .map(|(m, t)| (m.as_str(), *t, format!("[gate.metrics] {m}")));
        let cases = self.cases.iter().map(|c| {
            let m = c.metric.as_deref().unwrap_or(TOKENS_PER_SECOND);
            (m, c.threshold, format!("[gate] case `{}`", c.matching))
        });
        for (metric, t, what) in metrics.chain(cases) {
            range(&what, t)?;
            if higher_is_better(metric).is_none() {
                return Err(GateConfigError::UnknownDirection {
                    what,
                    metric: metric.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// The gate's word on one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    /// The point estimate is past the threshold, but noise does not allow a verdict.
    Warning,
    Regressed,
    Improved,
    /// No baseline for this case.
    Missing,
}

/// One case's comparison on one metric. Changes are relative (+0.05 = 5% more of the metric);
/// `threshold` is the size of a change for the worse that counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseGate {
    pub case: String,
    pub metric: String,
    pub unit: String,
    pub outcome: Outcome,
    pub threshold: f64,
    pub base: Option<f64>,
    pub new: f64,
    pub change: Option<f64>,
    pub change_lower: Option<f64>,
    pub change_upper: Option<f64>,
    pub p_value: Option<f64>,
    /// Run-to-run spread used to widen the CI (relative standard deviation of run means).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<f64>,
    /// Why the verdict is weaker than the numbers alone suggest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl CaseGate {
    /// A row with only what is known before judging: `Missing` until a baseline is compared.
    fn unjudged(case: &str, metric: &str, unit: &str, threshold: f64, new: f64) -> CaseGate {
        CaseGate {
            case: case.to_string(),
            metric: metric.to_string(),
            unit: unit.to_string(),
            outcome: Outcome::Missing,
            threshold,
            base: None,
            new,
            change: None,
            change_lower: None,
            change_upper: None,
            p_value: None,
            drift: None,
            note: None,
        }
    }
}

/// Fewest degrees of freedom (runs beyond the first of each code version) from which a case's
/// run-to-run drift is estimated: three runs of one commit, or two pairs.
pub const MIN_RUNS_FOR_DRIFT: usize = 2;

/// Run-to-run drift of a case from earlier runs' tok/s, given as `(code, estimate)` where
/// `code` names what ran (a commit). Only runs of the same code are compared with each other,
/// so a real speed change between commits never passes for noise: each run's estimate is taken
/// relative to the mean of its code's runs, scaled by √(n/(n−1)) (a deviation from a mean of n
/// is that much narrower than the spread itself), and the drift is the robust spread (MAD ×
/// 1.4826) of those residuals. `None` with fewer than [`MIN_RUNS_FOR_DRIFT`] degrees of freedom.
pub fn drift_from_replicates(runs: &[(String, f64)]) -> Option<f64> {
    let mut groups: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (code, estimate) in runs {
        groups.entry(code.as_str()).or_default().push(*estimate);
    }
    let (mut residuals, mut dof) = (Vec::new(), 0);
    for xs in groups.values().filter(|xs| xs.len() >= 2) {
        let n = xs.len() as f64;
        let mean = stats::mean(xs);
        let scale = (n / (n - 1.0)).sqrt();
        residuals.extend(xs.iter().map(|x| (x / mean - 1.0) * scale));
        dof += xs.len() - 1;
    }
    if dof < MIN_RUNS_FOR_DRIFT {
        return None;
    }
    Some(stats::median_abs_dev(&residuals, 0.0))
}

/// The fewest samples on each side for a regressed/improved verdict: below it the bootstrapped
/// t-test has too few distinct resamples to be trusted (criterion insists on 10), and a
/// `--quick` run must not fail CI on its own.
pub const MIN_SAMPLES_FOR_VERDICT: usize = 5;

/// Converts a relative change of time per iteration into one of throughput.
fn thrpt(time_change: f64) -> f64 {
    1.0 / (1.0 + time_change) - 1.0
}

/// Judges one case from per-iteration times (ns) and the tokens per iteration.
///
/// `drift` is the case's run-to-run spread ([`drift_from_replicates`]): each run carries its own
/// offset, so the difference of two runs has √2 times that spread, and the CI of the change is
/// widened by ±1.96·√2·drift before it is held against the threshold. Within-run samples cannot
/// see this component; without it two identical runs on a drifting machine can "regress".
pub fn judge(
    case: &str,
    new_ns: &[f64],
    base_ns: Option<&[f64]>,
    tokens: u64,
    drift: Option<f64>,
    config: &GateConfig,
    analysis: &AnalysisConfig,
) -> CaseGate {
    let threshold = config.threshold_for(case);
    let tok_s = |xs: &[f64]| tokens as f64 / (stats::mean(xs) / 1e9);
    let mut g = CaseGate::unjudged(case, TOKENS_PER_SECOND, "tok/s", threshold, tok_s(new_ns));
    let Some(base) = base_ns else {
        return g;
    };
    g.base = Some(tok_s(base));
    if new_ns.len() < 2 || base.len() < 2 {
        // Without variance there is no test; only say whether the point moved a lot.
        let change = g.new / tok_s(base) - 1.0;
        g.change = Some(change);
        g.note = Some("a single sample has no variance: no test".into());
        g.outcome = if change < -threshold {
            Outcome::Warning
        } else {
            Outcome::Pass
        };
        return g;
    }
    let c = stats::compare(new_ns, base, analysis);
    let ci = c.change.mean.confidence_interval;
    // Time going up is throughput going down: the bounds swap.
    let (mut lo, mut hi) = (thrpt(ci.upper_bound), thrpt(ci.lower_bound));
    if let Some(d) = drift {
        let widen = 1.96 * std::f64::consts::SQRT_2 * d;
        lo -= widen;
        hi += widen;
        g.drift = Some(d);
        if widen >= threshold {
            // Say so rather than pass quietly: on this machine the gate is coarser than asked.
            g.note = Some(format!(
                "run-to-run drift widens the CI by ±{:.1}%, beyond the {:.1}% threshold: only a drop past ~{:.0}% can fail here",
                widen * 100.0,
                threshold * 100.0,
                (widen + threshold) * 100.0
            ));
        }
    }
    let change = thrpt(c.change.mean.point_estimate);
    g.change = Some(change);
    g.change_lower = Some(lo);
    g.change_upper = Some(hi);
    g.p_value = Some(c.p_value);
    let enough = new_ns.len().min(base.len()) >= MIN_SAMPLES_FOR_VERDICT;
    if !enough {
        g.note = Some(format!(
            "{} vs {} samples: at least {MIN_SAMPLES_FOR_VERDICT} each are needed for a verdict",
            new_ns.len(),
            base.len()
        ));
    }
    let significant = enough && c.p_value < config.significance_level;
    g.outcome = if significant && hi < -threshold {
        Outcome::Regressed
    } else if significant && lo > threshold {
        Outcome::Improved
    } else if change < -threshold {
        Outcome::Warning
    } else {
        Outcome::Pass
    };
    g
}

/// Judges one non-tok/s metric of a case from estimates and CIs (see the module docs).
/// A metric without a CI on either side (a single observation, like peak memory) is judged on
/// its point change alone: such metrics are deterministic enough that a change past the
/// threshold is real, and the note says so.
pub fn judge_metric(
    case: &str,
    metric: &str,
    new: &Metric,
    base: Option<&Metric>,
    threshold: f64,
) -> CaseGate {
    let up = higher_is_better(metric).unwrap_or(true);
    let mut g = CaseGate::unjudged(case, metric, &new.unit, threshold, new.estimate);
    g.base = base.map(|b| b.estimate);
    let Some(base) = base else {
        return g;
    };
    if base.estimate <= 0.0 {
        g.note = Some("baseline value is zero: no relative change".into());
        return g;
    }
    let change = new.estimate / base.estimate - 1.0;
    g.change = Some(change);
    // Worse = further in the bad direction, as a signed fraction.
    let worse = |c: f64| if up { -c } else { c };
    let bounds = match (new.lower, new.upper, base.lower, base.upper) {
        (Some(nl), Some(nu), Some(bl), Some(bu)) if bl > 0.0 && bu > 0.0 => {
            Some((nl / bu - 1.0, nu / bl - 1.0))
        }
        _ => None,
    };
    g.outcome = match bounds {
        Some((lo, hi)) => {
            g.change_lower = Some(lo);
            g.change_upper = Some(hi);
            // Both ends of the widest interval past the threshold, on the same side.
            let (best, worst) = if up { (hi, lo) } else { (lo, hi) };
            if worse(best) > threshold {
                Outcome::Regressed
            } else if -worse(worst) > threshold {
                Outcome::Improved
            } else if worse(change) > threshold {
                Outcome::Warning
            } else {
                Outcome::Pass
            }
        }
        None => {
            g.note = Some("single value, no CI: judged on the change alone".into());
            if worse(change) > threshold {
                Outcome::Regressed
            } else if -worse(change) > threshold {
                Outcome::Improved
            } else {
                Outcome::Pass
            }
        }
    };
    g
}

/// Every benchmark directory (holding `new/benchmark.json`) under a criterion directory.
pub fn find_benchmarks(criterion_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![criterion_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            if p.join("benchmark.json").is_file() && p.file_name().is_some_and(|n| n == "new") {
                out.push(dir.clone());
            } else {
                stack.push(p);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("no benchmark results under {0}: run the benches first")]
    NoResults(PathBuf),
    #[error("{path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error(transparent)]
    Baseline(#[from] ReportError),
}

/// The criterion directories of the cases of the latest run under `runs_dir` (its
/// `summary.json`), so the gate judges what was just measured and not stale results of cases
/// that run did not include. `None` when there is no run.
pub fn latest_run_cases(
    runs_dir: &Path,
    criterion_dir: &Path,
) -> Result<Option<(String, Vec<PathBuf>)>, GateError> {
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return Ok(None);
    };
    // Run ids start with a UTC timestamp, so the greatest name is the latest run.
    let Some(latest) = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("summary.json").is_file())
        .max()
    else {
        return Ok(None);
    };
    let path = latest.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(|e| GateError::Unreadable {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let summary: melt_bench::store::Summary =
        serde_json::from_str(&text).map_err(|e| GateError::Unreadable {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    let dirs = summary
        .cases
        .iter()
        .map(|c| {
            let id = BenchmarkId::new(&c.group, &c.function, &c.value, c.workload.tokens() as u64);
            melt_bench::criterion_format::case_dir(criterion_dir, &id)
        })
        .collect();
    Ok(Some((summary.run_id, dirs)))
}

/// Judges the benchmarks in `dirs` (criterion case directories; every one under
/// `criterion_dir` when `None`) against `baseline`.
pub fn run(
    criterion_dir: &Path,
    dirs: Option<Vec<PathBuf>>,
    baseline: &str,
    drift: &dyn Fn(&str) -> Option<f64>,
    config: &GateConfig,
    analysis: &AnalysisConfig,
) -> Result<Vec<CaseGate>, GateError> {
    let dirs = dirs.unwrap_or_else(|| find_benchmarks(criterion_dir));
    if dirs.is_empty() {
        return Err(GateError::NoResults(criterion_dir.to_path_buf()));
    }
    let read = |path: PathBuf| -> Result<String, GateError> {
        std::fs::read_to_string(&path).map_err(|e| GateError::Unreadable {
            path: path.clone(),
            reason: e.to_string(),
        })
    };
    let mut out = Vec::new();
    for dir in dirs {
        let id_path = dir.join("new/benchmark.json");
        let id: BenchmarkId =
            serde_json::from_str(&read(id_path.clone())?).map_err(|e| GateError::Unreadable {
                path: id_path,
                reason: e.to_string(),
            })?;
        let sample_path = dir.join("new/sample.json");
        let sample: SavedSample =
            serde_json::from_str(&read(sample_path.clone())?).map_err(|e| {
                GateError::Unreadable {
                    path: sample_path,
                    reason: e.to_string(),
                }
            })?;
        let new_ns: Vec<f64> = sample
            .iters
            .iter()
            .zip(&sample.times)
            .map(|(i, t)| t / i)
            .collect();
        let base = load_baseline_times(criterion_dir, &id, baseline)?;
        let tokens = match id.throughput {
            Some(melt_bench::criterion_format::Throughput::Elements(n)) => n,
            None => 1,
        };
        out.push(judge(
            &id.full_id,
            &new_ns,
            base.as_deref(),
            tokens,
            drift(&id.full_id),
            config,
            analysis,
        ));
        let extra = config.extra_metrics();
        if extra.is_empty() {
            continue;
        }
        let new_metrics = load_baseline_metrics(criterion_dir, &id, "new")?;
        let base_metrics = load_baseline_metrics(criterion_dir, &id, baseline)?;
        out.extend(judge_metrics(
            &id.full_id,
            new_metrics.as_ref(),
            base_metrics.as_ref(),
            config,
        ));
    }
    Ok(out)
}

/// The configured non-tok/s metrics of one case. A metric the new run does not have (a
/// prefill-only case has no inter-token latency) is skipped; one the baseline lacks is
/// `Missing`.
pub fn judge_metrics(
    case: &str,
    new: Option<&BTreeMap<String, Metric>>,
    base: Option<&BTreeMap<String, Metric>>,
    config: &GateConfig,
) -> Vec<CaseGate> {
    let mut out = Vec::new();
    for metric in config.extra_metrics() {
        let (Some(threshold), Some(n)) = (
            config.metric_threshold(case, &metric),
            new.and_then(|m| m.get(&metric)),
        ) else {
            continue;
        };
        let b = base.and_then(|m| m.get(&metric));
        out.push(judge_metric(case, &metric, n, b, threshold));
    }
    out
}

/// Exit code of the gate: 0 pass, 1 a case regressed, 2 nothing could be compared (or a
/// case has no baseline, unless `lenient`).
pub fn exit_code(results: &[CaseGate], lenient: bool) -> i32 {
    if results.iter().any(|r| r.outcome == Outcome::Regressed) {
        1
    } else if results.iter().all(|r| r.outcome == Outcome::Missing)
        || (!lenient && results.iter().any(|r| r.outcome == Outcome::Missing))
    {
        2
    } else {
        0
    }
}

fn pct(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

/// A markdown summary for people and for `$GITHUB_STEP_SUMMARY`.
pub fn markdown(results: &[CaseGate], baseline: &str, lenient: bool) -> String {
    let code = exit_code(results, lenient);
    let count = |o: Outcome| results.iter().filter(|r| r.outcome == o).count();
    let mut s = String::new();
    let head = match code {
        0 => "passed",
        1 => "FAILED: regressed",
        _ => "could not compare",
    };
    let _ = writeln!(s, "### melt gate against `{baseline}`: {head}\n");
    let _ = writeln!(
        s,
        "{} regressed, {} warning, {} improved, {} passed, {} without baseline\n",
        count(Outcome::Regressed),
        count(Outcome::Warning),
        count(Outcome::Improved),
        count(Outcome::Pass),
        count(Outcome::Missing)
    );
    let _ = writeln!(
        s,
        "| case | metric | baseline | new | change (95% CI) | p | threshold | verdict |"
    );
    let _ = writeln!(s, "| --- | --- | ---: | ---: | --- | ---: | ---: | --- |");
    for r in results {
        let value = |v: f64| match r.unit.as_str() {
            "bytes" => format!("{:.1} MiB", v / 1048576.0),
            unit => format!("{v:.2} {unit}"),
        };
        let base = r.base.map_or("-".into(), value);
        let change = match (r.change, r.change_lower, r.change_upper) {
            (Some(c), Some(lo), Some(hi)) => format!("{} ({} … {})", pct(c), pct(lo), pct(hi)),
            (Some(c), _, _) => pct(c),
            _ => "-".into(),
        };
        let p = r.p_value.map_or("-".into(), |p| format!("{p:.3}"));
        let change = match r.drift {
            Some(d) => format!(
                "{change} incl. drift ±{:.1}%",
                1.96 * std::f64::consts::SQRT_2 * d * 100.0
            ),
            None => change,
        };
        let up = higher_is_better(&r.metric).unwrap_or(true);
        let mut verdict = match r.outcome {
            Outcome::Pass => "pass",
            Outcome::Warning if up => "⚠ slower, but within noise",
            Outcome::Warning => "⚠ worse, but within noise",
            Outcome::Regressed => "❌ regressed",
            Outcome::Improved => "improved",
            Outcome::Missing => "no baseline",
        }
        .to_string();
        if let Some(note) = &r.note {
            verdict = format!("{verdict} ({note})");
        }
        let _ = writeln!(
            s,
            "| {} | {} | {base} | {} | {change} | {p} | {}{:.0}% | {verdict} |",
            r.case,
            r.metric,
            value(r.new),
            if up { "-" } else { "+" },
            r.threshold * 100.0
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use melt_bench::stats::Rng;

    fn normal(rng: &mut Rng, n: usize, mu: f64, rel_sigma: f64) -> Vec<f64> {
        (0..n)
            .map(|_| mu * (1.0 + rel_sigma * rng.normal()))
            .collect()
    }

    fn analysis() -> AnalysisConfig {
        AnalysisConfig {
            nresamples: 20_000,
            ..AnalysisConfig::default()
        }
    }

    // Times in ns per 128 tokens at ~75 tok/s.
    const T: f64 = 1.7e9;

    #[test]
    fn ten_percent_drop_with_tight_cis_fails() {
        let mut rng = Rng::new(1);
        let base = normal(&mut rng, 10, T, 0.005);
        // 10% fewer tok/s = time x 1/0.9.
        let new = normal(&mut rng, 10, T / 0.9, 0.005);
        let g = judge(
            "c",
            &new,
            Some(&base),
            128,
            None,
            &GateConfig::default(),
            &analysis(),
        );
        assert_eq!(g.outcome, Outcome::Regressed, "{g:?}");
        assert!((g.change.unwrap() + 0.10).abs() < 0.01, "{g:?}");
        assert_eq!(exit_code(&[g], false), 1);
    }

    #[test]
    fn ten_percent_drop_inside_wide_noise_passes_with_a_warning() {
        let mut rng = Rng::new(2);
        let base = normal(&mut rng, 5, T, 0.15);
        let new: Vec<f64> = base.iter().map(|t| t / 0.9).collect::<Vec<_>>();
        let new: Vec<f64> = new.iter().rev().copied().collect();
        let g = judge(
            "c",
            &new,
            Some(&base),
            128,
            None,
            &GateConfig::default(),
            &analysis(),
        );
        assert_eq!(g.outcome, Outcome::Warning, "{g:?}");
        assert_eq!(exit_code(&[g], false), 0);
    }

    #[test]
    fn three_percent_below_a_five_percent_threshold_passes() {
        let mut rng = Rng::new(3);
        let base = normal(&mut rng, 20, T, 0.003);
        let new = normal(&mut rng, 20, T / 0.97, 0.003);
        let g = judge(
            "c",
            &new,
            Some(&base),
            128,
            None,
            &GateConfig::default(),
            &analysis(),
        );
        assert!(g.p_value.unwrap() < 0.05, "significant, but small: {g:?}");
        assert_eq!(g.outcome, Outcome::Pass, "{g:?}");
        // With a 2% threshold for this case, the same data fails.
        let strict = GateConfig {
            cases: vec![CaseThreshold {
                matching: "tg128".into(),
                metric: None,
                threshold: 0.02,
            }],
            ..GateConfig::default()
        };
        let g = judge(
            "m/tg128/x",
            &new,
            Some(&base),
            128,
            None,
            &strict,
            &analysis(),
        );
        assert_eq!(g.outcome, Outcome::Regressed, "{g:?}");
    }

    #[test]
    fn run_to_run_drift_widens_the_interval() {
        // Two identical setups, runs a minute apart on a drifting machine: 9% apart with
        // tight samples. Earlier runs of the case spread by ~4%.
        let mut rng = Rng::new(6);
        let base = normal(&mut rng, 10, T, 0.004);
        let new = normal(&mut rng, 10, T / 0.91, 0.004);
        // Earlier runs: three of one commit, two of another that really was 20% faster — the
        // commit change must not count as drift.
        let earlier: Vec<(String, f64)> = [
            ("a", 70.0),
            ("a", 73.5),
            ("a", 67.5),
            ("b", 85.0),
            ("b", 88.0),
        ]
        .iter()
        .map(|(c, x)| (c.to_string(), *x))
        .collect();
        let drift = drift_from_replicates(&earlier).unwrap();
        assert!((0.02..0.07).contains(&drift), "{drift}");
        let cfg = GateConfig::default();
        let without = judge("c", &new, Some(&base), 128, None, &cfg, &analysis());
        assert_eq!(
            without.outcome,
            Outcome::Regressed,
            "within-run CIs alone: {without:?}"
        );
        let with = judge("c", &new, Some(&base), 128, Some(drift), &cfg, &analysis());
        assert_eq!(
            with.outcome,
            Outcome::Warning,
            "drift explains it: {with:?}"
        );
        assert!(markdown(&[with], "main", false).contains("incl. drift"));
        // A real slowdown is still caught.
        let slow = normal(&mut rng, 10, T / 0.5, 0.004);
        let g = judge("c", &slow, Some(&base), 128, Some(drift), &cfg, &analysis());
        assert_eq!(g.outcome, Outcome::Regressed, "{g:?}");
        // One degree of freedom is not an estimate; runs of different commits are not replicates.
        assert_eq!(drift_from_replicates(&earlier[..2]), None);
        assert_eq!(drift_from_replicates(&earlier[2..4]), None);
        // A machine far noisier than the threshold says so in the table.
        let noisy = judge("c", &new, Some(&base), 128, Some(0.05), &cfg, &analysis());
        assert!(
            noisy
                .note
                .as_deref()
                .unwrap_or("")
                .contains("beyond the 5.0% threshold"),
            "{noisy:?}"
        );
    }

    #[test]
    fn too_few_samples_never_fail_the_gate() {
        let mut rng = Rng::new(4);
        let base = normal(&mut rng, 3, T, 0.002);
        let new = normal(&mut rng, 3, T / 0.8, 0.002);
        let g = judge(
            "c",
            &new,
            Some(&base),
            128,
            None,
            &GateConfig::default(),
            &analysis(),
        );
        assert_eq!(g.outcome, Outcome::Warning, "{g:?}");
        assert!(g.note.as_deref().unwrap().contains("at least 5"), "{g:?}");
        assert!(markdown(&[g], "main", false).contains("at least 5"));
    }

    fn m(unit: &str, estimate: f64, ci: Option<(f64, f64)>) -> Metric {
        Metric {
            unit: unit.into(),
            estimate,
            lower: ci.map(|c| c.0),
            upper: ci.map(|c| c.1),
            n: if ci.is_some() { 10 } else { 1 },
            note: None,
        }
    }

    #[test]
    fn other_metrics_are_judged_in_their_own_direction() {
        let base = m("ms", 100.0, Some((98.0, 102.0)));
        // 20% slower to the first token, tight CIs: even the nearest bounds differ by 16%.
        let slow = m("ms", 120.0, Some((118.0, 122.0)));
        let g = judge_metric("c", "ttft_ms", &slow, Some(&base), 0.10);
        assert_eq!(g.outcome, Outcome::Regressed, "{g:?}");
        assert!((g.change.unwrap() - 0.2).abs() < 1e-9);
        // The same shift inside wide CIs: only a warning.
        let wide = m("ms", 120.0, Some((90.0, 150.0)));
        let g = judge_metric("c", "ttft_ms", &wide, Some(&base), 0.10);
        assert_eq!(g.outcome, Outcome::Warning, "{g:?}");
        // Faster is an improvement, not a regression.
        let fast = m("ms", 70.0, Some((69.0, 71.0)));
        let g = judge_metric("c", "ttft_ms", &fast, Some(&base), 0.10);
        assert_eq!(g.outcome, Outcome::Improved, "{g:?}");
        // Higher-is-better metrics flip: 20% fewer decode tok/s regresses.
        let tps = m("tok/s", 80.0, Some((79.0, 81.0)));
        let base_tps = m("tok/s", 100.0, Some((99.0, 101.0)));
        let g = judge_metric("c", "decode_tokens_per_second", &tps, Some(&base_tps), 0.10);
        assert_eq!(g.outcome, Outcome::Regressed, "{g:?}");
        // Peak memory has one value: judged on the change, and the note says so.
        let mib = 1048576.0;
        let g = judge_metric(
            "c",
            "peak_rss_bytes",
            &m("bytes", 330.0 * mib, None),
            Some(&m("bytes", 300.0 * mib, None)),
            0.05,
        );
        assert_eq!(g.outcome, Outcome::Regressed, "{g:?}");
        assert!(g.note.as_deref().unwrap().contains("single value"));
        let md = markdown(&[g], "main", false);
        assert!(
            md.contains("peak_rss_bytes") && md.contains("330.0 MiB") && md.contains("+5%"),
            "{md}"
        );
        let g = judge_metric(
            "c",
            "peak_rss_bytes",
            &m("bytes", 303.0 * mib, None),
            Some(&m("bytes", 300.0 * mib, None)),
            0.05,
        );
        assert_eq!(g.outcome, Outcome::Pass, "{g:?}");
        // No baseline value: Missing, like a case without baseline.
        let g = judge_metric("c", "ttft_ms", &slow, None, 0.10);
        assert_eq!(g.outcome, Outcome::Missing);
    }

    #[test]
    fn metric_thresholds_come_from_the_config_per_metric_and_case() {
        let cfg: GateConfig = toml::from_str(
            r#"
            threshold = 0.05
            metrics = { ttft_ms = 0.10, peak_rss_bytes = 0.02 }
            cases = [
                { matching = "tg128", threshold = 0.03 },
                { matching = "pp512", metric = "ttft_ms", threshold = 0.25 },
            ]
            "#,
        )
        .unwrap();
        cfg.check().unwrap();
        assert_eq!(cfg.threshold_for("m/tg128/x"), 0.03);
        assert_eq!(cfg.threshold_for("m/pp512/x"), 0.05);
        assert_eq!(cfg.metric_threshold("m/pp512/x", "ttft_ms"), Some(0.25));
        assert_eq!(cfg.metric_threshold("m/tg128/x", "ttft_ms"), Some(0.10));
        assert_eq!(cfg.metric_threshold("m/tg128/x", "itl_p99_ms"), None);
        assert_eq!(cfg.extra_metrics(), vec!["peak_rss_bytes", "ttft_ms"]);
        // Only configured metrics the new run has are judged.
        let new: BTreeMap<String, Metric> = [
            ("ttft_ms".to_string(), m("ms", 100.0, Some((99.0, 101.0)))),
            ("itl_p99_ms".to_string(), m("ms", 9.0, Some((8.0, 10.0)))),
        ]
        .into_iter()
        .collect();
        let gs = judge_metrics("m/tg128/x", Some(&new), Some(&new), &cfg);
        assert_eq!(gs.len(), 1);
        assert_eq!(
            (gs[0].metric.as_str(), gs[0].outcome),
            ("ttft_ms", Outcome::Pass)
        );
        let gs = judge_metrics("m/tg128/x", Some(&new), None, &cfg);
        assert_eq!(gs[0].outcome, Outcome::Missing);

        let bad = |toml: &str| {
            toml::from_str::<GateConfig>(toml)
                .map_err(|e| e.to_string())
                .and_then(|c| c.check().map(|_| c).map_err(|e| e.to_string()))
                .unwrap_err()
        };
        assert!(bad("metrics = { load_time = 0.1 }").contains("which way `load_time`"));
        assert!(bad("threshold = 5").contains("between 0 and 1"));
        assert!(bad("metrics = { ttft_ms = 0 }").contains("between 0 and 1"));
        assert!(bad("treshold = 0.05").contains("unknown field"));
    }

    #[test]
    fn missing_baselines_are_exit_2_unless_lenient() {
        let g = judge(
            "c",
            &[T, T],
            None,
            128,
            None,
            &GateConfig::default(),
            &analysis(),
        );
        assert_eq!(g.outcome, Outcome::Missing);
        let pass = CaseGate {
            outcome: Outcome::Pass,
            ..g.clone()
        };
        assert_eq!(
            exit_code(std::slice::from_ref(&g), true),
            2,
            "nothing compared at all"
        );
        assert_eq!(exit_code(&[g.clone(), pass.clone()], false), 2);
        assert_eq!(exit_code(&[g, pass], true), 0);
        let md = markdown(&[], "main", false);
        assert!(md.contains("could not compare"), "{md}");
    }
}
