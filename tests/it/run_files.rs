//! A run's files end to end: a suite of real llama.cpp runs on a tiny GGUF the test writes,
//! through the same driver a bench binary uses, checking what lands on disk — and that it has
//! exactly the shape real criterion 0.8 writes, so criterion's tools (critcmp) read it; baselines,
//! `--list`, adaptive stopping.

use std::process::Command;

use melt::driver::run_suite;
use melt::store::{read_events, Event, Summary};
use melt_testkit::needs;

use crate::common::*;

#[test]
fn a_run_writes_summary_samples_and_criterion_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = run(&model, dir.path(), &["--sample-size", "4"]);
    assert!(!out.failed(), "{:?}", out.summary.errors);
    let s = &out.summary;
    assert_eq!(s.cases.len(), 2 * 4, "2 thread counts x 4 workloads");

    // summary.json round-trips and carries what the issue asks for.
    let back: Summary = serde_json::from_value(json(&out.run_dir.join("summary.json"))).unwrap();
    assert_eq!(&back, s);
    assert_eq!(s.schema_version, 1);
    let sha = melt::model::sha256_file(&model).unwrap();
    for c in &s.cases {
        assert_eq!(c.samples, 4);
        assert_eq!(c.stop_reason.as_str(), "sample_size");
        assert_eq!(c.model.sha256, sha);
        assert_eq!(c.model_info.quantization, "F32");
        assert!(c.backend_version.contains("ggml"));
        let tps = &c.metrics["tokens_per_second"];
        assert_eq!(tps.n, 4);
        let (lo, hi) = (tps.lower.unwrap(), tps.upper.unwrap());
        assert!(
            lo <= tps.estimate && tps.estimate <= hi && lo > 0.0,
            "{tps:?}"
        );
        assert!(c.metrics["peak_rss_bytes"].estimate > 1e6);
        assert!(c.metrics.contains_key("load_ms"));
        if c.workload.decode > 0 {
            for k in [
                "decode_tokens_per_second",
                "itl_p50_ms",
                "itl_p90_ms",
                "itl_p99_ms",
            ] {
                assert!(c.metrics.contains_key(k), "{} lacks {k}", c.id);
            }
            assert!(c.metrics["itl_p50_ms"].estimate <= c.metrics["itl_p99_ms"].estimate);
        }
        assert_eq!(
            c.metrics.contains_key("ttft_ms"),
            c.workload.prefill > 0 && c.workload.decode > 0
        );
        for f in [
            "benchmark.json",
            "estimates.json",
            "sample.json",
            "tukey.json",
        ] {
            assert!(
                c.criterion_dir.join("new").join(f).is_file(),
                "{}/new/{f}",
                c.id
            );
            assert!(
                c.criterion_dir.join("base").join(f).is_file(),
                "{}/base/{f}",
                c.id
            );
        }
        let sample = json(&c.criterion_dir.join("new/sample.json"));
        assert_eq!(sample["times"].as_array().unwrap().len(), 4);
        assert_eq!(sample["sampling_mode"], "Flat");
    }
    let ids: Vec<&str> = s.cases.iter().map(|c| c.function.as_str()).collect();
    assert_eq!(&ids[..4], &["pp32", "tg16", "pp32+tg8", "tg8 @ d24"]);

    // Every sample was logged as taken: warm-up (one each, warm-up time 0) plus 4.
    let events = read_events(&out.run_dir.join("samples.jsonl")).unwrap();
    assert!(matches!(events[0], Event::RunStart { .. }));
    let count = |f: &dyn Fn(&Event) -> bool| events.iter().filter(|e| f(e)).count();
    assert_eq!(count(&|e| matches!(e, Event::CaseStart { .. })), 8);
    assert_eq!(
        count(&|e| matches!(e, Event::Sample { warmup: false, .. })),
        8 * 4
    );
    assert_eq!(
        count(&|e| matches!(e, Event::Sample { warmup: true, .. })),
        8
    );
    assert_eq!(count(&|e| matches!(e, Event::CaseEnd { .. })), 8);

    // The run is in the history, with its commit (the tests run inside the git checkout)
    // and every case's per-sample times.
    let mut h = melt::history::History::open(&dir.path().join("melt/history.sqlite")).unwrap();
    let runs = h.runs(None, 10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].key.run_id.as_str(), runs[0].key.device.as_str()),
        (s.run_id.as_str(), "host")
    );
    assert_eq!(runs[0].cases, 8);
    assert!(
        runs[0].git_commit.as_deref().is_some_and(|c| c.len() == 40),
        "{:?}",
        runs[0]
    );
    let (tokens, times) = h
        .case_samples(&runs[0].key, &s.cases[1].id)
        .unwrap()
        .unwrap();
    assert_eq!((tokens, times.len()), (16, 4));
    let tps = h
        .metric("tg16/llama.cpp t=1", "tokens_per_second", None, 10)
        .unwrap();
    assert_eq!(
        tps[0].estimate,
        s.cases[1].metrics["tokens_per_second"].estimate
    );

    // The table has one row per case with t/s ± CI (the probes' sections follow it).
    let main_table = out.table.split("\nProbes").next().unwrap();
    assert_eq!(
        main_table
            .lines()
            .filter(|l| l.contains("llama.cpp"))
            .count(),
        8
    );
    assert!(out.table.contains(" ± "));
}

#[test]
fn files_have_exactly_the_shapes_real_criterion_writes() {
    use criterion::{Criterion, SamplingMode, Throughput};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let crit_dir = dir.path().join("criterion-ref");
    // Two runs of a real criterion benchmark, so it writes change/estimates.json as well.
    for round in 0..2u64 {
        let mut c = Criterion::default()
            .output_directory(&crit_dir)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(1))
            .measurement_time(Duration::from_millis(10))
            .nresamples(1000)
            .without_plots();
        let mut g = c.benchmark_group("model");
        g.sampling_mode(SamplingMode::Flat);
        g.throughput(Throughput::Elements(16));
        g.bench_function(criterion::BenchmarkId::new("tg16", "engine t=1"), |b| {
            b.iter_custom(|iters| Duration::from_micros(100 + round) * iters as u32)
        });
        g.finish();
    }
    let reference = crit_dir.join("model/tg16/engine t=1");

    let model = tiny_model(dir.path());
    let target = dir.path().join("melt");
    run(
        &model,
        &target,
        &["--sample-size", "3", "tg16/llama.cpp t=1$"],
    );
    let out = run(
        &model,
        &target,
        &["--sample-size", "3", "tg16/llama.cpp t=1$"],
    );
    assert_eq!(out.summary.cases.len(), 1);
    let ours = &out.summary.cases[0].criterion_dir;
    for f in [
        "new/benchmark.json",
        "new/estimates.json",
        "new/sample.json",
        "new/tukey.json",
        "base/estimates.json",
        "change/estimates.json",
    ] {
        assert_eq!(
            shape(&json(&ours.join(f))),
            shape(&json(&reference.join(f))),
            "{f} differs in shape from criterion's"
        );
    }
    assert_eq!(
        json(&ours.join("new/benchmark.json"))["throughput"],
        json(&reference.join("new/benchmark.json"))["throughput"]
    );
}

#[test]
fn baselines_compare_and_critcmp_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let filter = "pp32/llama.cpp t=2$";
    run(
        &model,
        dir.path(),
        &["--sample-size", "5", "--save-baseline", "before", filter],
    );
    let out = run(
        &model,
        dir.path(),
        &["--sample-size", "5", "--save-baseline", "after", filter],
    );
    // A new baseline name has nothing to compare with yet.
    assert!(out.summary.cases[0].comparison.is_none());
    let out = run(
        &model,
        dir.path(),
        &["--sample-size", "5", "--baseline", "before", filter],
    );
    let cmp = out.summary.cases[0]
        .comparison
        .as_ref()
        .expect("compared with `before`");
    assert_eq!(cmp.baseline, "before");
    assert!(cmp.result.p_value >= 0.0 && cmp.result.p_value <= 1.0);
    assert!(out.table.contains("(p="), "{}", out.table);

    // A missing strict baseline is refused before anything is measured.
    let err = run_suite(
        &suite(),
        &args(&model, dir.path(), &["--baseline", "nope", filter]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("--save-baseline nope"), "{err}");

    // critcmp, criterion's comparison tool, lists and compares the two saved baselines.
    let critcmp = Command::new("critcmp")
        .arg("--target-dir")
        .arg(dir.path())
        .args(["before", "after"])
        .output();
    match critcmp {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success(),
                "critcmp failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(text.contains("tiny-llama/pp32/llama.cpp t=2"), "{text}");
            assert!(text.contains("before") && text.contains("after"), "{text}");
            assert!(text.contains("Elem/sec"), "throughput column: {text}");
        }
        Err(e) => needs::missing(
            &format!("critcmp cannot run ({e})"),
            "`cargo install critcmp --locked --version 0.1.8`",
        ),
    }
}

#[test]
fn a_broken_baseline_is_named_and_costs_no_results() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let filter = "tg16/llama.cpp t=1$";
    let out = run(
        &model,
        dir.path(),
        &["--sample-size", "3", "--save-baseline", "main", filter],
    );
    let sample = out.summary.cases[0].criterion_dir.join("main/sample.json");
    std::fs::write(
        &sample,
        "{\"sampling_mode\": \"Flat\", \"iters\": [1.0, 1.0], \"times\": [1.0,",
    )
    .unwrap();
    let out = run(
        &model,
        dir.path(),
        &["--sample-size", "3", "--baseline", "main", filter],
    );
    assert!(out.failed());
    let msg = &out.summary.errors[0].message;
    assert!(
        msg.contains("baseline `main` is broken") && msg.contains("sample.json"),
        "{msg}"
    );
    // The new measurement is complete anyway.
    assert_eq!(out.summary.cases.len(), 1);
    assert_eq!(out.summary.cases[0].samples, 3);
    assert!(out.summary.cases[0]
        .criterion_dir
        .join("new/estimates.json")
        .is_file());
}

#[test]
fn list_plans_cases_without_measuring() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    assert!(run_suite(&suite(), &args(&model, dir.path(), &["--list"]))
        .unwrap()
        .measured()
        .is_none());
    assert!(
        !dir.path().join("melt").exists(),
        "--list must not create a run"
    );
}

#[test]
fn adaptive_stopping_ends_on_the_ci_target_or_budget() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = run(
        &model,
        dir.path(),
        &[
            "--min-samples",
            "3",
            "--max-samples",
            "40",
            "--target-ci",
            "5",
            "--measurement-time",
            "5",
            "pp32/llama.cpp t=1$",
        ],
    );
    let c = &out.summary.cases[0];
    assert!(
        ["ci_target", "time_budget", "max_samples"].contains(&c.stop_reason.as_str()),
        "{}",
        c.stop_reason
    );
    assert!((3..=40).contains(&c.samples), "{}", c.samples);
    if c.stop_reason.as_str() == "ci_target" {
        let t = &c.metrics["tokens_per_second"];
        let half = (t.upper.unwrap() - t.lower.unwrap()) / 2.0 / t.estimate;
        // The bootstrap CI of the summary and the t-interval of the stopping rule agree roughly.
        assert!(half < 0.08, "{half}");
    }
}
