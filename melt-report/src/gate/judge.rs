//! The gate's judgement, pure: a case's samples or metrics against its baseline's, drift-widened,
//! into an outcome; the exit code of a set of outcomes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::*;
use melt_bench::stats::{self, AnalysisConfig};
use melt_bench::store::Metric;

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
pub(super) fn thrpt(time_change: f64) -> f64 {
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
