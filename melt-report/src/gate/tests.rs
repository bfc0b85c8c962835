use std::collections::BTreeMap;

use melt_bench::stats::AnalysisConfig;
use melt_bench::store::Metric;

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
