//! The paired gate's judgement, pure: two builds measured in alternation on one device, judged
//! pair by pair, stopping as soon as the evidence allows a verdict.
//!
//! Why pairs: a run measured today against a baseline measured yesterday (or on another CI
//! machine) carries the machine's drift in full, so the history gate must widen every interval
//! by it and only sees large regressions. Here the baseline A and the candidate B take turns —
//! A B, B A, A B, … — one sample each, so whatever the machine does to one side in a pair it
//! mostly does to the other, and the order alternates so a steady trend cancels over two pairs.
//! The statistic is each pair's log ratio ln(B/A); its mean's t-interval is the interval of
//! the change (tango-bench's idea, for LLM cases).
//!
//! Stopping early, without more false alarms: looks are taken at a fixed schedule of pair
//! counts (`min_pairs`, then ×`growth`, up to `max_pairs`: K looks), each at confidence
//! 1 − α/K. By the union bound the chance that *any* look's interval misses the true change is
//! at most α; a wrong verdict (regression declared when the true change is within the
//! threshold, or a pass when it is past it) needs a missed interval, so each kind of error
//! stays below α however the looks turn out. A metric's verdict is fixed at the first look
//! that gives one:
//! - **regressed**: the whole interval is worse than the threshold;
//! - **pass** (or **improved**): the whole interval is better than the threshold;
//! - **inconclusive**: the budget is spent first (a warning and its own exit code).

use serde::{Deserialize, Serialize};

use melt_bench::probe::noise::Noise;
use melt_bench::stats;

/// Which build a sample is of: A the baseline (`--against REV`), B the working tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    A,
    B,
}

/// The order of the two samples of pair `i`: A B, then B A, and so on (A B B A A B …).
pub fn pair_order(i: usize) -> [Side; 2] {
    if i % 2 == 0 {
        [Side::A, Side::B]
    } else {
        [Side::B, Side::A]
    }
}

/// How many pairs, when to look, and the false-alarm rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Design {
    /// Pairs before the first look (the t-interval of fewer is too wide to decide anything).
    pub min_pairs: usize,
    /// The most pairs per case: past it, undecided metrics are inconclusive.
    pub max_pairs: usize,
    /// Each look comes after this many times the pairs of the one before.
    pub growth: f64,
    /// α: the most a wrong verdict may be likely, over all looks together.
    pub significance_level: f64,
}

impl Default for Design {
    fn default() -> Self {
        Design {
            min_pairs: 6,
            max_pairs: 60,
            growth: 1.4,
            significance_level: 0.05,
        }
    }
}

impl Design {
    /// The pair counts at which the intervals are looked at, ending at `max_pairs`.
    pub fn looks(&self) -> Vec<usize> {
        let (min, max) = (self.min_pairs.max(2), self.max_pairs.max(2));
        let mut looks = Vec::new();
        let mut n = min.min(max) as f64;
        while (n.ceil() as usize) < max {
            let at = n.ceil() as usize;
            if looks.last() != Some(&at) {
                looks.push(at);
            }
            n *= self.growth.max(1.01);
        }
        looks.push(max);
        looks
    }

    /// The confidence of each look's two-sided interval: 1 − α/K.
    pub fn confidence(&self) -> f64 {
        1.0 - self.significance_level / self.looks().len() as f64
    }
}

/// What is gated on one metric of a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub metric: String,
    pub unit: String,
    pub higher_is_better: bool,
    /// The relative change for the worse that counts (0.05 = 5%).
    pub threshold: f64,
}

/// The verdict on one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Improved,
    Regressed,
    /// The budget ran out before the interval cleared the threshold either way.
    Inconclusive,
}

/// The interval of a relative change B/A − 1 (0.05 = B has 5% more of the metric).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub estimate: f64,
    pub lower: f64,
    pub upper: f64,
}

/// The t-interval, at `confidence`, of the mean of `log_ratios`, as a relative change.
pub fn change(log_ratios: &[f64], confidence: f64) -> Change {
    let n = log_ratios.len();
    let mean = stats::mean(log_ratios);
    let half = if n < 2 {
        f64::INFINITY
    } else {
        let sd = stats::std_dev(log_ratios);
        stats::t_quantile(1.0 - (1.0 - confidence) / 2.0, n - 1) * sd / (n as f64).sqrt()
    };
    Change {
        estimate: mean.exp() - 1.0,
        lower: (mean - half).exp() - 1.0,
        upper: (mean + half).exp() - 1.0,
    }
}

/// The verdict an interval allows under `rule`, if any.
pub fn decide(c: &Change, rule: &Rule) -> Option<Verdict> {
    let t = rule.threshold;
    // Worse as a positive number: a drop for throughputs, a rise for times and sizes.
    let (best, worst) = if rule.higher_is_better {
        (-c.upper, -c.lower)
    } else {
        (c.lower, c.upper)
    };
    if best > t {
        Some(Verdict::Regressed)
    } else if worst < -t {
        Some(Verdict::Improved)
    } else if worst < t {
        Some(Verdict::Pass)
    } else {
        None
    }
}

/// One metric's outcome over the pairs measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricOutcome {
    pub rule: Rule,
    pub verdict: Verdict,
    /// The interval at the look that decided (or at the last look).
    pub change: Change,
    /// Pairs the verdict rests on.
    pub pairs: usize,
    /// Means over those pairs, of A and of B.
    pub a: f64,
    pub b: f64,
}

/// Both sides' values of one pair, one per rule (`None` where a sample lacks the metric).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    pub a: Vec<Option<f64>>,
    pub b: Vec<Option<f64>>,
}

/// A case judged in pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseOutcome {
    pub case: String,
    pub metrics: Vec<MetricOutcome>,
    pub pairs: Vec<Pair>,
    /// Why measuring stopped before every metric had a verdict, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

impl CaseOutcome {
    /// The case's worst verdict: regressed, then inconclusive, then pass/improved.
    pub fn verdict(&self) -> Verdict {
        let has = |v| self.metrics.iter().any(|m| m.verdict == v);
        if has(Verdict::Regressed) {
            Verdict::Regressed
        } else if has(Verdict::Inconclusive) {
            Verdict::Inconclusive
        } else if !self.metrics.is_empty()
            && self.metrics.iter().all(|m| m.verdict == Verdict::Improved)
        {
            Verdict::Improved
        } else {
            Verdict::Pass
        }
    }
}

/// Whether to go on measuring after a pair (the caller's budget: device time, a signal).
pub enum Next {
    Continue,
    Stop(String),
}

/// Measures a case in alternating pairs until every rule has a verdict or the budget is spent.
///
/// `measure(side)` takes one sample on that side and returns one value per rule (`None` when
/// the sample has no such metric: that rule is then judged on the pairs that have it).
/// `after(pairs)` is asked after each pair whether to go on.
pub fn measure_case<E>(
    case: &str,
    design: &Design,
    rules: &[Rule],
    mut measure: impl FnMut(Side) -> Result<Vec<Option<f64>>, E>,
    mut after: impl FnMut(usize) -> Next,
) -> Result<CaseOutcome, E> {
    let looks = design.looks();
    let confidence = design.confidence();
    let mut pairs: Vec<Pair> = Vec::new();
    let mut decided: Vec<Option<MetricOutcome>> = vec![None; rules.len()];
    let mut stopped = None;
    let max = *looks.last().expect("looks end at max_pairs");
    while pairs.len() < max {
        let mut pair = Pair {
            a: Vec::new(),
            b: Vec::new(),
        };
        for side in pair_order(pairs.len()) {
            let values = measure(side)?;
            match side {
                Side::A => pair.a = values,
                Side::B => pair.b = values,
            }
        }
        pairs.push(pair);
        let n = pairs.len();
        if looks.contains(&n) {
            for (r, rule) in rules.iter().enumerate() {
                if decided[r].is_some() {
                    continue;
                }
                let o = outcome(rule, r, &pairs, confidence, true);
                if o.verdict != Verdict::Inconclusive {
                    decided[r] = Some(o);
                }
            }
            if decided.iter().all(Option::is_some) {
                break;
            }
        }
        if let Next::Stop(why) = after(n) {
            stopped = Some(why);
            break;
        }
    }
    let metrics = rules
        .iter()
        .enumerate()
        .map(|(r, rule)| {
            decided[r].take().unwrap_or_else(|| {
                // Not a look: its interval is shown, but it may not give a verdict.
                outcome(rule, r, &pairs, confidence, false)
            })
        })
        .collect();
    Ok(CaseOutcome {
        case: case.to_string(),
        metrics,
        pairs,
        stopped,
    })
}

/// Rule `r`'s outcome over `pairs`: at a look (`judge`), the verdict its interval allows;
/// otherwise, or when it allows none, inconclusive.
fn outcome(rule: &Rule, r: usize, pairs: &[Pair], confidence: f64, judge: bool) -> MetricOutcome {
    let both: Vec<(f64, f64)> = pairs
        .iter()
        .filter_map(|p| match (p.a.get(r).copied()?, p.b.get(r).copied()?) {
            (Some(a), Some(b)) if a > 0.0 && b > 0.0 => Some((a, b)),
            _ => None,
        })
        .collect();
    let logs: Vec<f64> = both.iter().map(|(a, b)| (b / a).ln()).collect();
    let c = change(&logs, confidence);
    let verdict = judge
        .then(|| decide(&c, rule))
        .flatten()
        .unwrap_or(Verdict::Inconclusive);
    let mean = |f: fn(&(f64, f64)) -> f64| stats::mean(&both.iter().map(f).collect::<Vec<_>>());
    MetricOutcome {
        rule: rule.clone(),
        verdict,
        change: c,
        pairs: both.len(),
        a: mean(|p| p.0),
        b: mean(|p| p.1),
    }
}

/// A paired comparison, as `summary.json` keeps it and the table shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedSummary {
    /// The baseline and the candidate, as tables name them.
    pub a: String,
    pub b: String,
    /// `gate` judges; `compare` only prints.
    pub judged: bool,
    pub design: Design,
    /// The noise check before measuring, and after.
    pub noise_before: Option<Noise>,
    pub noise_after: Option<Noise>,
    pub cases: Vec<CaseOutcome>,
    /// Cases only one side has (a case added or removed by the change).
    pub only_a: Vec<String>,
    pub only_b: Vec<String>,
    /// Cases that could not be measured, and why.
    pub failed: Vec<(String, String)>,
    /// Wall time spent measuring, seconds.
    pub measuring_s: f64,
    /// Each worker's resident memory after its first case: what holding both models costs.
    pub resident_bytes: Option<(u64, u64)>,
    /// Why no verdict was given at all (a machine too noisy to judge on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl PairedSummary {
    /// 0 pass, 1 regressed, 2 could not compare (refused, or a case failed), 3 inconclusive;
    /// `compare` exits 0 unless it could not compare.
    pub fn exit_code(&self, lenient: bool) -> i32 {
        let failed = self.refused.is_some() || !self.failed.is_empty() || self.cases.is_empty();
        if !self.judged {
            return if failed { 2 } else { 0 };
        }
        match paired_exit_code(&self.cases, lenient) {
            1 => 1,
            _ if failed => 2,
            code => code,
        }
    }
}

/// Exit code of a paired gate: 1 when a case regressed, 3 when none did but some case is
/// inconclusive (0 with `lenient`), else 0.
pub fn paired_exit_code(cases: &[CaseOutcome], lenient: bool) -> i32 {
    let has = |v| cases.iter().any(|c| c.verdict() == v);
    if has(Verdict::Regressed) {
        1
    } else if has(Verdict::Inconclusive) && !lenient {
        INCONCLUSIVE_EXIT
    } else {
        0
    }
}

/// The exit code of a gate whose budget ran out before a verdict.
pub const INCONCLUSIVE_EXIT: i32 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    fn tok_s(threshold: f64) -> Rule {
        Rule {
            metric: "tokens_per_second".into(),
            unit: "tok/s".into(),
            higher_is_better: true,
            threshold,
        }
    }

    #[test]
    fn looks_grow_to_the_budget_and_split_alpha() {
        let d = Design::default();
        let looks = d.looks();
        assert_eq!(looks.first(), Some(&6));
        assert_eq!(looks.last(), Some(&60));
        assert!(looks.windows(2).all(|w| w[0] < w[1]), "{looks:?}");
        let k = looks.len() as f64;
        assert!((d.confidence() - (1.0 - 0.05 / k)).abs() < 1e-12);
        let one = Design {
            min_pairs: 10,
            max_pairs: 10,
            ..d
        };
        assert_eq!(one.looks(), vec![10]);
        assert!((one.confidence() - 0.95).abs() < 1e-12);
    }

    #[test]
    fn order_alternates_abba() {
        let seq: Vec<Side> = (0..3).flat_map(pair_order).collect();
        use Side::*;
        assert_eq!(seq, vec![A, B, B, A, A, B]);
    }

    #[test]
    fn decisions_follow_the_interval() {
        let r = tok_s(0.05);
        let c = |lower, upper| Change {
            estimate: (lower + upper) / 2.0,
            lower,
            upper,
        };
        assert_eq!(decide(&c(-0.09, -0.06), &r), Some(Verdict::Regressed));
        assert_eq!(decide(&c(-0.03, 0.02), &r), Some(Verdict::Pass));
        assert_eq!(decide(&c(0.06, 0.09), &r), Some(Verdict::Improved));
        assert_eq!(decide(&c(-0.07, -0.01), &r), None);
        // Lower is better: a rise past the threshold regresses.
        let ttft = Rule {
            higher_is_better: false,
            ..r
        };
        assert_eq!(decide(&c(0.06, 0.09), &ttft), Some(Verdict::Regressed));
        assert_eq!(decide(&c(-0.09, -0.06), &ttft), Some(Verdict::Improved));
    }

    /// A side that is exactly 10% slower, with a deterministic wobble shared by both sides
    /// of a pair: regressed at the first look; without the slowdown, passed at the first look.
    #[test]
    fn stops_at_the_first_look_that_decides() {
        let run = |slow: f64| {
            let mut k = 0u32;
            measure_case(
                "c",
                &Design::default(),
                &[tok_s(0.05)],
                |side| {
                    k += 1;
                    let machine = 100.0 * (1.0 + 0.03 * (((k - 1) / 2) as f64).sin());
                    let v = match side {
                        Side::A => machine,
                        Side::B => machine * (1.0 - slow) * (1.0 + 0.001 * (k as f64).cos()),
                    };
                    Ok::<_, ()>(vec![Some(v)])
                },
                |_| Next::Continue,
            )
            .unwrap()
        };
        let slow = run(0.10);
        assert_eq!(slow.verdict(), Verdict::Regressed);
        assert_eq!(slow.pairs.len(), 6);
        assert!((slow.metrics[0].change.estimate + 0.10).abs() < 0.01);
        let same = run(0.0);
        assert_eq!(same.verdict(), Verdict::Pass);
        assert_eq!(paired_exit_code(std::slice::from_ref(&same), false), 0);
        assert_eq!(paired_exit_code(&[same, slow], false), 1);
    }

    /// Noise far wider than the threshold: the budget runs out, the case is inconclusive and
    /// the exit code says so; a stop asked for by the caller is recorded.
    #[test]
    fn undecided_is_inconclusive() {
        let mut rng = stats::Rng::new(7);
        let design = Design {
            max_pairs: 12,
            ..Design::default()
        };
        let o = measure_case(
            "c",
            &design,
            &[tok_s(0.01)],
            |_| Ok::<_, ()>(vec![Some(100.0 * (1.0 + 0.3 * rng.normal()).max(0.1))]),
            |_| Next::Continue,
        )
        .unwrap();
        assert_eq!(o.verdict(), Verdict::Inconclusive);
        assert_eq!(o.pairs.len(), 12);
        assert_eq!(
            paired_exit_code(std::slice::from_ref(&o), false),
            INCONCLUSIVE_EXIT
        );
        assert_eq!(paired_exit_code(&[o], true), 0);
        let stopped = measure_case(
            "c",
            &design,
            &[tok_s(0.01)],
            |_| Ok::<_, ()>(vec![Some(100.0 * (1.0 + 0.3 * rng.normal()).max(0.1))]),
            |n| {
                if n == 3 {
                    Next::Stop("time budget spent".into())
                } else {
                    Next::Continue
                }
            },
        )
        .unwrap();
        assert_eq!(stopped.pairs.len(), 3);
        assert_eq!(stopped.stopped.as_deref(), Some("time budget spent"));
        assert_eq!(stopped.verdict(), Verdict::Inconclusive);
    }

    /// A metric a sample lacks (no TTFT in a decode-only case) is judged on the pairs that
    /// have it; with none, it stays inconclusive rather than passing.
    #[test]
    fn missing_values_are_left_out() {
        let rules = [tok_s(0.05), {
            let mut r = tok_s(0.05);
            r.metric = "ttft_ms".into();
            r.higher_is_better = false;
            r
        }];
        let o = measure_case(
            "c",
            &Design {
                max_pairs: 8,
                ..Design::default()
            },
            &rules,
            |_| Ok::<_, ()>(vec![Some(100.0), None]),
            |_| Next::Continue,
        )
        .unwrap();
        assert_eq!(o.metrics[0].verdict, Verdict::Pass);
        assert_eq!(o.metrics[1].verdict, Verdict::Inconclusive);
        assert_eq!(o.metrics[1].pairs, 0);
    }
}
