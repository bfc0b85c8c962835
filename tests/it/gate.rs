//! The CI gate end to end: the latest run judged against a saved baseline.

use melt_testkit::TinyLlama;

use crate::common::*;

#[test]
fn the_gate_judges_the_latest_run_against_a_saved_baseline() {
    use melt::gate::{self, GateConfig, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let crit = dir.path().join("criterion");
    let layout = melt::store::Layout::at(dir.path());
    let cfg = melt::stats::AnalysisConfig {
        nresamples: 5_000,
        ..Default::default()
    };
    // Baseline of two cases; then a run of only one of them, with the same model.
    run(
        &model,
        dir.path(),
        &[
            "--sample-size",
            "10",
            "--save-baseline",
            "main",
            "/(pp32|tg16)/llama.cpp t=1$",
        ],
    );
    // Run ids have one-second resolution; make the next run's id sort later.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    run(
        &model,
        dir.path(),
        &[
            "--sample-size",
            "10",
            "--discard-baseline",
            "tg16/llama.cpp t=1$",
        ],
    );
    let (_, dirs) = gate::latest_run_cases(&layout).unwrap().unwrap();
    assert_eq!(dirs.len(), 1, "only the latest run's case: {dirs:?}");
    assert!(
        dirs[0].ends_with("tiny-llama/tg16/llama.cpp t=1"),
        "{dirs:?}"
    );
    let results = gate::run(
        &crit,
        Some(dirs),
        "main",
        &|_| None,
        &GateConfig::default(),
        &cfg,
    )
    .unwrap();
    assert_eq!(results.len(), 1);
    assert_ne!(results[0].outcome, Outcome::Missing);
    assert!(results[0].base.unwrap() > 0.0 && results[0].change.is_some());

    // A model 16x bigger in every matrix is a real regression for the same case id.
    let big = dir.path().join("big").join("tiny-llama.gguf");
    std::fs::create_dir_all(big.parent().unwrap()).unwrap();
    TinyLlama {
        n_embd: 256,
        n_ff: 1024,
        ..TinyLlama::default()
    }
    .write(&big)
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    run(
        &big,
        dir.path(),
        &[
            "--sample-size",
            "10",
            "--discard-baseline",
            "tg16/llama.cpp t=1$",
        ],
    );
    let (_, dirs) = gate::latest_run_cases(&layout).unwrap().unwrap();
    // Decode latency gated too, from the metrics melt saved beside criterion's files.
    let with_latency = GateConfig {
        metrics: [("itl_p50_ms".to_string(), 0.10)].into_iter().collect(),
        ..GateConfig::default()
    };
    let results = gate::run(&crit, Some(dirs), "main", &|_| None, &with_latency, &cfg).unwrap();
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0].outcome, Outcome::Regressed, "{:?}", results[0]);
    assert_eq!(
        (results[1].metric.as_str(), results[1].outcome),
        ("itl_p50_ms", Outcome::Regressed),
        "{:?}",
        results[1]
    );
    assert!(results[1].new > results[1].base.unwrap());
    assert_eq!(gate::exit_code(&results, false), 1);
}
