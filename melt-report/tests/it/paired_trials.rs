//! The paired gate against a known truth, over a hundred seeded trials on a simulated machine
//! that drifts (melt_testkit::drifting): A against A must pass, a 5% slower B must be caught
//! with a 2% threshold, a 1% slower B must pass with a 5% threshold. The same trials through
//! the history gate — a baseline run, time passing, a new run, judged with the drift learned
//! from earlier runs — show what alternation buys. Simulated time: the whole file takes a
//! few seconds, most of them the history gate's bootstrap.

use melt_bench::stats::{self, AnalysisConfig};
use melt_report::gate::paired::{self, Design, Next, Rule, Side, Verdict};
use melt_report::gate::{self, GateConfig, Outcome};
use melt_testkit::drifting::{Drift, DriftingMachine};

const TRIALS: u64 = 100;
/// A decode case's work: tg128 at 80 tok/s.
const TOKENS: f64 = 128.0;
const WORK_S: f64 = 1.6;

fn tok_s(threshold: f64) -> Rule {
    Rule {
        metric: gate::TOKENS_PER_SECOND.into(),
        unit: "tok/s".into(),
        higher_is_better: true,
        threshold,
    }
}

/// B's speed relative to A's (0.95 = 5% fewer tok/s).
struct Scenario {
    b_speed: f64,
    threshold: f64,
}

#[derive(Default, Debug)]
struct Tally {
    regressed: u32,
    passed: u32,
    inconclusive: u32,
    pairs: usize,
    device_s: f64,
}

fn paired_trials(s: &Scenario) -> Tally {
    let mut t = Tally::default();
    for seed in 0..TRIALS {
        let mut m = DriftingMachine::new(1000 + seed, Drift::default());
        let start = m.now_s();
        let o = paired::measure_case(
            "tg128",
            &Design::default(),
            &[tok_s(s.threshold)],
            |side| {
                let work = match side {
                    Side::A => WORK_S,
                    Side::B => WORK_S / s.b_speed,
                };
                Ok::<_, ()>(vec![Some(TOKENS / m.run(work))])
            },
            |_| Next::Continue,
        )
        .unwrap();
        t.device_s += m.now_s() - start;
        t.pairs += o.pairs.len();
        match o.verdict() {
            Verdict::Regressed => t.regressed += 1,
            Verdict::Inconclusive => t.inconclusive += 1,
            Verdict::Pass | Verdict::Improved => t.passed += 1,
        }
    }
    t
}

/// Today's gate: ten earlier runs of A give the drift, then a baseline run of A, a quarter of
/// an hour, and the run of B; ten samples each, as a default criterion-style run takes.
fn history_trials(s: &Scenario) -> Tally {
    let analysis = AnalysisConfig {
        nresamples: 2_000,
        ..AnalysisConfig::default()
    };
    let config = GateConfig {
        threshold: s.threshold,
        ..GateConfig::default()
    };
    let mut t = Tally::default();
    for seed in 0..TRIALS {
        let mut m = DriftingMachine::new(1000 + seed, Drift::default());
        let run = |m: &mut DriftingMachine, speed: f64| -> Vec<f64> {
            m.run(WORK_S / speed); // warm-up
            (0..10).map(|_| m.run(WORK_S / speed) * 1e9).collect()
        };
        let mut earlier = Vec::new();
        for _ in 0..10 {
            let ns = run(&mut m, 1.0);
            earlier.push(("a".to_string(), TOKENS / (stats::mean(&ns) / 1e9)));
            m.idle(900.0);
        }
        let drift = gate::drift_from_replicates(&earlier);
        let start = m.now_s();
        let base = run(&mut m, 1.0);
        m.idle(900.0);
        let new = run(&mut m, s.b_speed);
        t.device_s += m.now_s() - start - 900.0;
        t.pairs += 10;
        let g = gate::judge(
            "tg128",
            &new,
            Some(&base),
            TOKENS as u64,
            drift,
            &config,
            &analysis,
        );
        match g.outcome {
            Outcome::Regressed => t.regressed += 1,
            _ => t.passed += 1,
        }
    }
    t
}

fn show(name: &str, paired: &Tally, history: &Tally) {
    println!(
        "{name}: paired {} regressed / {} passed / {} inconclusive, {:.1} pairs and {:.0} s a verdict; \
         history {} regressed / {} passed, {:.0} s a verdict",
        paired.regressed,
        paired.passed,
        paired.inconclusive,
        paired.pairs as f64 / TRIALS as f64,
        paired.device_s / TRIALS as f64,
        history.regressed,
        history.passed,
        history.device_s / TRIALS as f64,
    );
}

#[test]
fn a_against_a_passes() {
    let s = Scenario {
        b_speed: 1.0,
        threshold: 0.05,
    };
    let (p, h) = (paired_trials(&s), history_trials(&s));
    show("A vs A, 5% threshold", &p, &h);
    assert!(p.passed >= 95, "{p:?}");
    assert!(p.regressed <= 5, "{p:?}");
}

#[test]
fn five_percent_slower_is_caught_at_two_percent() {
    let s = Scenario {
        b_speed: 0.95,
        threshold: 0.02,
    };
    let (p, h) = (paired_trials(&s), history_trials(&s));
    show("B 5% slower, 2% threshold", &p, &h);
    assert!(p.regressed >= 90, "{p:?}");
    // What alternation buys: the history gate, widened by the drift it must allow for,
    // catches far fewer of the same regressions.
    assert!(h.regressed < p.regressed, "{h:?} vs {p:?}");
}

#[test]
fn one_percent_slower_passes_at_five_percent() {
    let s = Scenario {
        b_speed: 0.99,
        threshold: 0.05,
    };
    let (p, h) = (paired_trials(&s), history_trials(&s));
    show("B 1% slower, 5% threshold", &p, &h);
    assert!(p.passed >= 95, "{p:?}");
}
