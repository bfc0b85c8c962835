//! End to end: a suite of real llama.cpp runs on a tiny GGUF the test writes, through the same
//! driver a bench binary uses, checking what lands on disk — and that it has exactly the shape
//! real criterion 0.8 writes, so criterion's tools (critcmp) read it.

use std::path::{Path, PathBuf};
use std::process::Command;

use melt::cli::Args;
use melt::driver::{run_suite, DriverError, Outcome};
use melt::store::{read_events, Event, Summary};
use melt::testkit::{needs, TinyLlama};
use melt::{pp, pp_tg, tg, Suite, Sweep};
use serde_json::Value;

fn tiny_model(dir: &Path) -> PathBuf {
    let path = dir.join("tiny-llama.gguf");
    TinyLlama::default().write(&path).unwrap();
    path
}

fn suite() -> Suite {
    Suite {
        models: vec!["unused: --model replaces it".into()],
        backends: melt::backends::enabled(),
        sweep: Sweep {
            threads: vec![1, 2],
            ..Sweep::default()
        },
        workloads: vec![pp(32), tg(16), pp_tg(32, 8), tg(8).at_depth(24)],
        manifest_dir: None,
    }
}

fn args(model: &Path, target: &Path, extra: &[&str]) -> Args {
    let mut v: Vec<String> = vec![
        "--bench".into(),
        "--model".into(),
        model.display().to_string(),
        "--target-dir".into(),
        target.display().to_string(),
        "--warm-up-time".into(),
        "0".into(),
        "--nresamples".into(),
        "2000".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    Args::parse(v).unwrap()
}

fn run(model: &Path, target: &Path, extra: &[&str]) -> Outcome {
    run_suite(&suite(), &args(model, target, extra))
        .unwrap()
        .unwrap()
}

/// The "shape" of a JSON value: object keys and value kinds, recursively.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::Number(_) => Value::String("number".into()),
        Value::String(_) => Value::String("string".into()),
        Value::Bool(_) => Value::String("bool".into()),
        Value::Null => Value::Null,
    }
}

/// The backends a run's cases ran on, sorted, each once.
fn backends_of(out: &Outcome) -> Vec<&str> {
    let set: std::collections::BTreeSet<&str> = out
        .summary
        .cases
        .iter()
        .map(|c| c.backend.as_str())
        .collect();
    set.into_iter().collect()
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

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
        assert_eq!(c.stop_reason, "sample_size");
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
    let h = melt::history::History::open(&dir.path().join("melt/history.sqlite")).unwrap();
    let runs = h.runs(10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].run_id.as_str(), runs[0].cases),
        (s.run_id.as_str(), 8)
    );
    assert!(
        runs[0].git_commit.as_deref().is_some_and(|c| c.len() == 40),
        "{:?}",
        runs[0]
    );
    let (tokens, times) = h.case_samples(&s.run_id, &s.cases[1].id).unwrap().unwrap();
    assert_eq!((tokens, times.len()), (16, 4));
    let tps = h
        .metric("tg16/llama.cpp t=1", "tokens_per_second", 10)
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
fn bad_models_and_names_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());

    // A text file named .gguf: every case fails with the file named, nothing panics.
    let fake = dir.path().join("fake.gguf");
    std::fs::write(&fake, "not a model").unwrap();
    let out = run(&fake, dir.path(), &["--sample-size", "3"]);
    assert!(out.failed() && out.summary.cases.is_empty());
    assert!(
        out.summary
            .errors
            .iter()
            .all(|e| e.message.contains("fake.gguf")),
        "{:?}",
        out.summary.errors
    );

    // A missing file.
    let out = run(
        &dir.path().join("absent.gguf"),
        dir.path(),
        &["--sample-size", "3"],
    );
    assert!(
        out.summary.errors[0]
            .message
            .contains("absent.gguf does not exist"),
        "{:?}",
        out.summary.errors
    );

    // A truncated GGUF.
    let bytes = std::fs::read(&model).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = run(&cut, dir.path(), &["--sample-size", "3"]);
    assert!(
        out.summary.errors[0].message.contains("cut.gguf"),
        "{:?}",
        out.summary.errors
    );

    // An unknown backend.
    let err = run_suite(
        &suite(),
        &args(&model, dir.path(), &["--backend", "tensorrt"]),
    )
    .unwrap_err();
    assert!(matches!(err, DriverError::UnknownBackend { .. }));
    assert!(
        err.to_string().contains("tensorrt") && err.to_string().contains("llama.cpp"),
        "{err}"
    );

    // An unknown registry model: the case fails naming it and the registry's models.
    let toml = dir.path().join("melt.toml");
    std::fs::write(&toml, "[models.known]\nfile = \"k.gguf\"\nformat = \"gguf\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nsource = { path = \"/k.gguf\" }\n").unwrap();
    let named = Suite {
        models: vec!["gemma-99b".into()],
        manifest_dir: Some(dir.path().to_path_buf()),
        ..suite()
    };
    let mut a = args(&model, dir.path(), &["--sample-size", "3"]);
    a.models.clear();
    let out = run_suite(&named, &a).unwrap().unwrap();
    let msg = &out.summary.errors[0].message;
    assert!(
        msg.contains("unknown model `gemma-99b`") && msg.contains("known"),
        "{msg}"
    );

    // A registry model not yet fetched says how to fetch it.
    let cached = Suite {
        models: vec!["known".into()],
        ..named
    };
    std::env::set_var("MELT_CACHE_DIR", dir.path().join("empty-cache"));
    let out = run_suite(&cached, &a).unwrap().unwrap();
    std::env::remove_var("MELT_CACHE_DIR");
    let msg = &out.summary.errors[0].message;
    assert!(msg.contains("cargo xtask models fetch known"), "{msg}");

    // A filter that matches nothing, and a bad regex.
    let err = run_suite(&suite(), &args(&model, dir.path(), &["pp9999"])).unwrap_err();
    assert!(err.to_string().contains("no case matches"), "{err}");
    let err = run_suite(&suite(), &args(&model, dir.path(), &["pp(("])).unwrap_err();
    assert!(err.to_string().contains("bad filter"), "{err}");
}

#[test]
fn list_plans_cases_without_measuring() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    assert!(run_suite(&suite(), &args(&model, dir.path(), &["--list"]))
        .unwrap()
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
    if c.stop_reason == "ci_target" {
        let t = &c.metrics["tokens_per_second"];
        let half = (t.upper.unwrap() - t.lower.unwrap()) / 2.0 / t.estimate;
        // The bootstrap CI of the summary and the t-interval of the stopping rule agree roughly.
        assert!(half < 0.08, "{half}");
    }
}

#[test]
fn the_gate_judges_the_latest_run_against_a_saved_baseline() {
    use melt::gate::{self, GateConfig, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let crit = dir.path().join("criterion");
    let runs = dir.path().join("melt/runs");
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
    let (_, dirs) = gate::latest_run_cases(&runs, &crit).unwrap().unwrap();
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
    let (_, dirs) = gate::latest_run_cases(&runs, &crit).unwrap().unwrap();
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

#[test]
fn the_html_report_opens_in_chromium_with_every_plot_and_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = run(&model, dir.path(), &["--sample-size", "3"]);
    let page = dir.path().join("melt/report/index.html");
    assert!(page.is_file());
    let profile = tempfile::tempdir().unwrap();
    // The flags the workplace's own probe uses: no network, no first-run work.
    let dom = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .output();
    let dom = match dom {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => panic!("chromium failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            needs::missing(
                &format!("chromium cannot run ({e})"),
                "`apt-get install chromium`",
            );
            return;
        }
    };
    // One comparison chart, a violin per case, a latency plot per decode case (3 of 4
    // workloads, at 2 thread counts), and the probes' plots — memory for every case on Linux,
    // power and temperature where this machine has sensors: all decoded by the browser.
    let images = std::fs::read_to_string(&page)
        .unwrap()
        .matches("<img ")
        .count();
    assert!(images >= 15 + out.summary.cases.len(), "{images} images");
    assert!(
        dom.contains(&format!("data-images=\"{images}\"")),
        "{}",
        &dom[..dom.len().min(400)]
    );
    assert!(dom.contains("data-broken-images=\"0\""));
    for c in &out.summary.cases {
        let tps = format!("{:.2}", c.metrics["tokens_per_second"].estimate);
        assert!(dom.contains(&tps), "{} shows {tps}", c.id);
    }
}

/// The ONNX Runtime backend beside llama.cpp in one run: each model goes to the backend that
/// accepts its format, and the report has both (issue 6's "Done when", on generated models).
#[test]
fn onnx_and_gguf_models_run_side_by_side_in_one_report() {
    use melt::testkit::onnx::TinyOnnxLm;
    let dir = tempfile::tempdir().unwrap();
    let gguf = tiny_model(dir.path());
    let onnx = TinyOnnxLm::default()
        .write(&dir.path().join("tiny-onnx"))
        .unwrap();
    let onnx_arg = onnx.display().to_string();
    let out = run(
        &gguf,
        dir.path(),
        &["--model", &onnx_arg, "--sample-size", "3", "t=2$"],
    );
    assert!(!out.failed(), "{:?}", out.summary.errors);
    assert_eq!(backends_of(&out), ["llama.cpp", "onnxruntime"]);
    assert_eq!(out.summary.cases.len(), 2 * 4, "{}", out.table);
    for c in &out.summary.cases {
        let expected = if c.backend == "onnxruntime" {
            "tiny-onnx"
        } else {
            "tiny-llama"
        };
        assert!(
            c.id.starts_with(expected) || c.model.path.to_string_lossy().contains(expected),
            "{}",
            c.id
        );
        assert!(c.metrics["tokens_per_second"].estimate > 0.0, "{}", c.id);
    }
    assert!(
        out.table.contains("onnxruntime") && out.table.contains("llama.cpp"),
        "{}",
        out.table
    );
    println!("{}", out.table);
}

/// With the `libtorch` feature, a traced TorchScript model runs beside the GGUF and the ONNX
/// model in the same report (issue 7's "Done when", on generated models).
#[cfg(feature = "libtorch")]
#[test]
fn torchscript_runs_beside_gguf_and_onnx_in_one_report() {
    use melt::testkit::onnx::TinyOnnxLm;
    let dir = tempfile::tempdir().unwrap();
    let gguf = tiny_model(dir.path());
    let ts = melt::backends::gguf_to_torchscript::export(&gguf, &dir.path().join("tiny-ts"))
        .unwrap()
        .model;
    let onnx = TinyOnnxLm::default()
        .write(&dir.path().join("tiny-onnx"))
        .unwrap();
    let (ts_arg, onnx_arg) = (ts.display().to_string(), onnx.display().to_string());
    let out = run(
        &gguf,
        dir.path(),
        &[
            "--model",
            &onnx_arg,
            "--model",
            &ts_arg,
            "--sample-size",
            "3",
            "t=2$",
        ],
    );
    assert!(!out.failed(), "{:?}", out.summary.errors);
    assert_eq!(backends_of(&out), ["libtorch", "llama.cpp", "onnxruntime"]);
    assert_eq!(out.summary.cases.len(), 3 * 4, "{}", out.table);
    for c in out.summary.cases.iter().filter(|c| c.backend == "libtorch") {
        assert!(c.model_info.description.contains("torchscript"), "{}", c.id);
        assert!(c.metrics["tokens_per_second"].estimate > 0.0, "{}", c.id);
        assert!(c.metrics.contains_key("decode_kv_bytes_per_token") || c.workload.decode == 0);
    }
}

/// Seconds of decode per decoded token over a case's measured samples, from its events.
fn decode_seconds_per_token(events: &[Event], case: &str) -> f64 {
    let (mut ns, mut n) = (0u64, 0usize);
    for e in events {
        if let Event::Sample {
            case: c,
            warmup: false,
            measured,
            ..
        } = e
        {
            if c == case {
                ns += measured.decode_ns;
                n += measured.token_ns.len();
            }
        }
    }
    ns as f64 / 1e9 / n as f64
}

/// A fixture tree under `dir/sysroot`: a 5 W hwmon meter and a `soc` zone at `temp` m°C; the
/// writer it returns adds more files.
fn meter_and_zone(dir: &Path, temp: &str) -> (PathBuf, impl Fn(&str, &str)) {
    let root = dir.join("sysroot");
    let at = root.clone();
    let put = move |rel: &str, v: &str| {
        let p = at.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{v}\n")).unwrap();
    };
    put("sys/class/hwmon/hwmon0/name", "meter");
    put("sys/class/hwmon/hwmon0/power1_input", "5000000");
    put("sys/class/thermal/thermal_zone0/type", "soc");
    put("sys/class/thermal/thermal_zone0/temp", temp);
    (root, put)
}

#[test]
fn probes_attribute_power_to_prefill_and_decode_and_flag_throttling() {
    // A fixture sysfs: a 5 W hwmon power meter, a zone already past its passive trip point.
    let dir = tempfile::tempdir().unwrap();
    let (root, put) = meter_and_zone(dir.path(), "91000");
    put("sys/class/thermal/thermal_zone0/trip_point_0_temp", "90000");
    put(
        "sys/class/thermal/thermal_zone0/trip_point_0_type",
        "passive",
    );
    let model = tiny_model(dir.path());
    let root_arg = root.display().to_string();
    let out = run(
        &model,
        dir.path(),
        &[
            "--sysroot",
            &root_arg,
            "--probe-period",
            "1",
            "--sample-size",
            "3",
            "t=2$",
        ],
    );
    assert!(!out.failed(), "{:?}", out.summary.errors);
    assert!(out.table.contains("J/token pp / tg"), "{}", out.table);
    for c in &out.summary.cases {
        let m = |k: &str| c.metrics.get(k).map(|m| m.estimate);
        if c.workload.prefill > 0 {
            let w = m("prefill_power_w").unwrap_or_else(|| panic!("{} lacks prefill power", c.id));
            assert!((w - 5.0).abs() < 1e-6, "{}: {w} W", c.id);
        }
        if c.workload.decode > 0 {
            assert!((m("decode_power_w").unwrap() - 5.0).abs() < 1e-6);
            // 5 W over the decode windows, per token: 5 × decode seconds / decode tokens.
            let per_token = decode_seconds_per_token(
                &read_events(&out.run_dir.join("samples.jsonl")).unwrap(),
                &c.id,
            );
            let expect = 5.0 * per_token;
            let got = m("decode_j_per_token").unwrap();
            assert!(
                (got / expect - 1.0).abs() < 0.05,
                "{}: {got} vs {expect}",
                c.id
            );
        }
        assert_eq!(m("temp_max_c"), Some(91.0));
        let note = c.metrics["throttled"].note.clone().unwrap_or_default();
        assert!(note.contains("soc reached 91.0 °C"), "{note}");
    }
    // --probe-period 0 turns them off; nonsense is refused by name.
    let out = run(
        &model,
        dir.path(),
        &["--probe-period", "0", "--sample-size", "2", "pp32.*t=2$"],
    );
    assert!(!out.summary.cases[0].metrics.contains_key("prefill_power_w"));
    let err = Args::parse(["--probe-period", "soon"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--probe-period"), "{err}");
    let err = Args::parse(["--sysroot", "/no/such/dir"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("/no/such/dir"), "{err}");
}

#[test]
fn sustained_mode_gives_a_time_series_with_memory_by_phase_and_cooldown() {
    // A fixture sysfs: a 5 W meter, a zone at 50 °C (so the cooldown has nothing to wait for).
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = meter_and_zone(dir.path(), "50000");
    // This process's own memory, under the fixture root.
    std::os::unix::fs::symlink("/proc", root.join("proc")).unwrap();
    let model = tiny_model(dir.path());
    let root_arg = root.display().to_string();
    let out = run(
        &model,
        dir.path(),
        &[
            "--sysroot",
            &root_arg,
            "--probe-period",
            "5",
            "--sustained",
            "1.5s",
            "--cooldown",
            "^[^/]+/(tg16|pp32)/.*t=1$",
        ],
    );
    assert!(!out.failed(), "{:?}", out.summary.errors);
    assert_eq!(out.summary.cases.len(), 2);
    for c in &out.summary.cases {
        assert_eq!(c.stop_reason, "sustained");
        let s = c
            .sustained
            .as_ref()
            .expect("a sustained case has its series");
        // The runs span the duration (to the nanosecond, then added up in f64).
        assert!(s.duration_s >= 1.5 - 1e-9 && s.duration_s < 3.0, "{s:?}");
        assert_eq!(s.runs, c.samples);
        assert!(s.windows.len() >= 2 && s.windows.len() <= melt::sustained::MAX_WINDOWS);
        for w in &s.windows {
            assert!((w.watts.unwrap() - 5.0).abs() < 1e-6, "{w:?}");
            assert_eq!(w.temp_c, Some(50.0));
        }
        // Memory by phase: the load, and the phase this workload has.
        let m = |k: &str| c.metrics.get(k).map(|m| m.estimate);
        assert!(m("load_rss_peak_bytes").unwrap() > 1e6, "{}", c.id);
        let phase = if c.workload.prefill > 0 {
            "prefill"
        } else {
            "decode"
        };
        assert!(m(&format!("{phase}_rss_peak_bytes")).unwrap() > 1e6);
        let load_w = m("load_energy_j").unwrap() / (m("load_ms").unwrap() / 1e3);
        assert!((load_w - 5.0).abs() < 1e-6, "{load_w} W while loading");
    }
    // The first case runs as it finds the device; the second waited (not at all: 50 °C
    // is the run's start) and says so.
    let waits: Vec<Option<f64>> = out
        .summary
        .cases
        .iter()
        .map(|c| c.metrics.get("cooldown_wait_s").map(|m| m.estimate))
        .collect();
    assert_eq!(waits[0], None);
    assert!(waits[1].unwrap() < 0.5, "{waits:?}");
    for want in [
        "Probes (sampled every 5 ms)",
        "- energy: hwmon:meter:power1",
        "- unavailable: RAPL",
        "Memory by phase",
        "Sustained tg16",
        "| t (s) | tok/s | W | °C |",
    ] {
        assert!(out.table.contains(want), "{want} missing:\n{}", out.table);
    }
    // summary.json carries the series; samples.jsonl the start time of every run.
    let v = json(&out.run_dir.join("summary.json"));
    assert!(
        v["cases"][0]["sustained"]["windows"][0]["tok_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(v["probes"]["unavailable"].as_array().unwrap().len() >= 2);
}

#[test]
fn an_external_meters_csv_is_aligned_with_the_run_by_wall_clock() {
    use melt::probe::meter;
    use std::time::{SystemTime, UNIX_EPOCH};
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let unix = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let before = unix();
    // Sustained, so that the meter's power over time is checked too.
    let out = run(&model, dir.path(), &["--sustained", "0.6", "t=2$"]);
    let after = unix();
    assert!(!out.failed(), "{:?}", out.summary.errors);
    // A USB meter's log: 4 W every 20 ms, from a second before the run to a second after.
    let mut csv = String::from("timestamp,power_w\n");
    let mut t = before - 1.0;
    while t < after + 1.0 {
        csv.push_str(&format!("{t:.3},4.0\n"));
        t += 0.02;
    }
    let path = dir.path().join("usb-meter.csv");
    std::fs::write(&path, csv).unwrap();
    let events = read_events(&out.run_dir.join("samples.jsonl")).unwrap();
    let probes = melt::export::probes_by_case(&events);
    let series = meter::read_csv(&path, meter::Alignment::default()).unwrap();
    let mut summary = out.summary.clone();
    let (covered, skipped) = meter::import(&mut summary, &probes, &series);
    assert_eq!(
        (covered, skipped.len()),
        (summary.cases.len(), 0),
        "{skipped:?}"
    );
    for c in &summary.cases {
        let m = |k: &str| c.metrics.get(k).map(|m| m.estimate);
        if c.workload.decode > 0 {
            assert!(
                (m("decode_power_w").unwrap() - 4.0).abs() < 1e-6,
                "{}",
                c.id
            );
            // 4 W over the decode windows, per token, against the samples' own decode time.
            let per_token = decode_seconds_per_token(&events, &c.id);
            let expect = 4.0 * per_token;
            let got = m("decode_j_per_token").unwrap();
            assert!(
                (got / expect - 1.0).abs() < 0.05,
                "{}: {got} vs {expect}",
                c.id
            );
            let note = c.metrics["decode_j_per_token"].note.clone().unwrap();
            assert!(note.contains("meter:usb-meter.csv"), "{note}");
        }
        if c.workload.prefill > 0 {
            assert!(
                (m("prefill_power_w").unwrap() - 4.0).abs() < 1e-6,
                "{}",
                c.id
            );
        }
        let windows = &c.sustained.as_ref().unwrap().windows;
        assert!(windows
            .iter()
            .all(|w| (w.watts.unwrap() - 4.0).abs() < 1e-6));
    }
    assert!(summary
        .probes
        .unwrap()
        .energy_sources
        .contains(&"meter:usb-meter.csv".to_string()));
    // The same file read with its clock an hour off covers nothing, and says which case.
    let off = meter::Alignment {
        offset_s: 3600.0,
        ..meter::Alignment::default()
    };
    let mut untouched = out.summary.clone();
    let (covered, skipped) = meter::import(
        &mut untouched,
        &probes,
        &meter::read_csv(&path, off).unwrap(),
    );
    assert_eq!(covered, 0);
    assert_eq!(
        untouched, out.summary,
        "nothing changes when nothing is covered"
    );
    let e = skipped[0].to_string();
    assert!(
        e.contains(&out.summary.cases[0].id) && e.contains("--meter-offset"),
        "{e}"
    );
}

/// The memory probe against `/usr/bin/time -v` for the same run: the suite binary that
/// `cargo xtask test` builds, one case of the real model (so the process's peak is the case's;
/// on the tiny model the report's own bookkeeping would outweigh it).
#[test]
fn peak_memory_agrees_with_usr_bin_time() {
    let Some(bin) = needs::suite_bin() else {
        return;
    };
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(model) = melt::testkit::cached_model(here, "gemma-3-270m-q4_k_m").map(|m| m.path)
    else {
        return;
    };
    if !Path::new("/usr/bin/time").is_file() {
        return needs::missing("GNU time (/usr/bin/time)", "`apt-get install time`");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(&bin)
        .arg("--model")
        .arg(&model)
        .args(["--sample-size", "3", "--discard-baseline", "--target-dir"])
        .arg(dir.path())
        .arg("pp512/llama.cpp t=1$")
        .output()
        .expect("/usr/bin/time (Debian package `time`)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kib: f64 = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .unwrap_or_else(|| panic!("no max RSS in:\n{stderr}"))
        .parse()
        .unwrap();
    let run = std::fs::read_dir(dir.path().join("melt/runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let s: Summary = serde_json::from_value(json(&run.join("summary.json"))).unwrap();
    let peak = s.cases[0].metrics["peak_rss_bytes"].estimate / 1024.0;
    assert!(
        (peak / kib - 1.0).abs() < 0.05,
        "melt {peak} KiB vs /usr/bin/time {kib} KiB"
    );
    // The sampled peaks cannot exceed the kernel's high-water mark.
    let pss = s.cases[0].metrics["pss_peak_bytes"].estimate / 1024.0;
    assert!(
        pss > 0.0 && pss <= peak * 1.01,
        "PSS {pss} KiB, peak {peak} KiB"
    );
}

#[test]
fn tasks_run_beside_the_workloads_stream_their_turns_and_compare_models_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let a = tiny_model(dir.path());
    let b = dir.path().join("tiny-llama-b.gguf");
    TinyLlama {
        seed: 7,
        ..TinyLlama::default()
    }
    .write(&b)
    .unwrap();
    let conv = dir.path().join("conversations.json");
    std::fs::write(
        &conv,
        r#"[["Hello world", "the other one"], ["what a lot"]]"#,
    )
    .unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(
        &text,
        "the hello world and the other world, a lot of words. ".repeat(12),
    )
    .unwrap();
    let questions = dir.path().join("questions.jsonl");
    std::fs::write(
        &questions,
        r#"{"id": "1", "question": {"stem": "Hello", "choices": [{"text": "world", "label": "A"}, {"text": "the", "label": "B"}]}, "answerKey": "A"}
{"id": "2", "question": {"stem": "What", "choices": [{"text": "a", "label": "A"}, {"text": "lot", "label": "B"}]}, "answerKey": "B"}"#,
    )
    .unwrap();
    let s = |p: &Path| p.display().to_string();
    let (conv_s, text_s, q_s, b_s) = (s(&conv), s(&text), s(&questions), s(&b));
    let extra = [
        "--model",
        b_s.as_str(),
        "--sample-size",
        "3",
        "--replay",
        conv_s.as_str(),
        "--think-time",
        "0",
        "--conversation-gap",
        "0",
        "--fixed-output",
        "3",
        "--replay-ctx",
        "256",
        "--perplexity",
        text_s.as_str(),
        "--ppl-ctx",
        "32",
        "--choices",
        q_s.as_str(),
        "(pp32|tg16)/llama.cpp t=2$|:",
    ];
    let out = run(&a, dir.path(), &extra);
    assert!(out.summary.errors.is_empty(), "{:?}", out.summary.errors);
    // Two models × (pp32, tg16) at two threads, and three tasks each at the last point.
    assert_eq!(out.summary.cases.len(), 4);
    assert_eq!(out.summary.tasks.len(), 6);
    let ids: Vec<&str> = out.summary.tasks.iter().map(|t| t.id.as_str()).collect();
    assert!(
        ids.contains(&"tiny-llama/replay:conversations.json/llama.cpp t=2"),
        "{ids:?}"
    );
    assert!(
        ids.contains(&"tiny-llama-b/perplexity:text.txt@32/llama.cpp t=2"),
        "{ids:?}"
    );
    assert!(
        ids.contains(&"tiny-llama/choice:questions.jsonl/llama.cpp t=2"),
        "{ids:?}"
    );
    // Replay turns were streamed as they were measured, then each task's record.
    let events = read_events(&out.run_dir.join("samples.jsonl")).unwrap();
    let turns = events
        .iter()
        .filter(|e| matches!(e, Event::TaskTurn { .. }))
        .count();
    let ends = events
        .iter()
        .filter(|e| matches!(e, Event::TaskEnd { .. }))
        .count();
    assert_eq!((turns, ends), (2 * 3, 6));
    // summary.json keeps them; stdout reports them, and the two models side by side.
    let summary: Summary = serde_json::from_value(json(&out.run_dir.join("summary.json"))).unwrap();
    assert_eq!(summary.tasks, out.summary.tasks);
    for section in [
        "Replay ",
        "template: built-in chatml (the model has no chat template; architecture `llama`)",
        "Perplexity (llama-perplexity's method",
        "Multiple choice (log-likelihood",
        "What does quantization cost?",
    ] {
        assert!(
            out.table.contains(section),
            "{section} missing:\n{}",
            out.table
        );
    }
    let rows = melt::tasks::report::quantization_rows(&out.summary);
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert!(
            r.tg_tok_s.is_some() && r.pp_tok_s.is_some() && r.ppl.is_some(),
            "{r:?}"
        );
        assert_eq!(r.acc.keys().collect::<Vec<_>>(), ["arc"]);
        assert!(r.peak_rss_bytes.is_some());
    }
    // The HTML report has them too: each replay's turns over time, and accuracy against
    // memory for the two models.
    let page = std::fs::read_to_string(dir.path().join("melt/report/index.html")).unwrap();
    for alt in [
        "time to first token per turn of tiny-llama/replay:conversations.json",
        "What does quantization cost?",
        "arc accuracy against peak memory",
    ] {
        assert!(page.contains(alt), "{alt} missing from the HTML report");
    }
    // --list names the tasks too; --tasks-only runs no workload.
    let listed = run_suite(
        &suite(),
        &args(&a, dir.path(), &["--list", "--perplexity", &text_s]),
    );
    assert!(listed.unwrap().is_none());
    let only = run(
        &a,
        dir.path(),
        &["--tasks-only", "--perplexity", &text_s, "--ppl-ctx", "32"],
    );
    assert_eq!((only.summary.cases.len(), only.summary.tasks.len()), (0, 1));
    assert!(!only.table.contains("| model | size |"), "{}", only.table);
}

#[test]
fn a_bad_task_file_is_named_and_costs_no_other_result() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "[[\"Hello\"], [").unwrap();
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, "[[\"Hello\"], []]").unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(&text, "the hello world and the other world. ".repeat(12)).unwrap();
    let (b, e, t) = (
        broken.display().to_string(),
        empty.display().to_string(),
        text.display().to_string(),
    );
    let out = run(
        &model,
        dir.path(),
        &[
            "--tasks-only",
            "--replay",
            &b,
            "--replay",
            &e,
            "--think-time",
            "0",
            "--perplexity",
            &t,
            "--ppl-ctx",
            "32",
        ],
    );
    // Both replays fail by name; the perplexity in between is measured and kept.
    assert_eq!(out.summary.tasks.len(), 1, "{:?}", out.summary.errors);
    let errors: Vec<String> = out
        .summary
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.case.clone().unwrap_or_default(), e.message))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("replay:broken.json") && errors[0].contains("not JSON"),
        "{errors:?}"
    );
    assert!(errors[1].contains("conversation 1 is empty"), "{errors:?}");
    assert!(out.failed());
    // A task option without its task, and a bad value, are refused before anything runs.
    for (bad, says) in [
        (
            vec!["--think-time", "0"],
            "`--think-time` only applies with --replay NAME|FILE",
        ),
        (
            vec!["--limit", "5"],
            "`--limit` only applies with --choices NAME|FILE",
        ),
        (
            vec!["--ppl-ctx", "0", "--perplexity", "x"],
            "positive whole number",
        ),
        (
            vec!["--tasks-only"],
            "only applies with --replay, --perplexity or --choices",
        ),
    ] {
        let e = Args::parse(bad.clone()).unwrap_err().to_string();
        assert!(e.contains(says), "{bad:?}: {e}");
    }
}

#[test]
fn the_papers_conversations_replay_on_the_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    // By the shipped set's name: no path, the binary carries it.
    let out = run(
        &model,
        dir.path(),
        &[
            "--tasks-only",
            "--replay",
            "conversations",
            "--conversations",
            "3",
            "--think-time",
            "0",
            "--conversation-gap",
            "0",
            "--max-output",
            "16",
            "--replay-ctx",
            "1024",
        ],
    );
    assert!(out.summary.errors.is_empty(), "{:?}", out.summary.errors);
    let melt::tasks::TaskResult::Replay(r) = &out.summary.tasks[0].result else {
        panic!("not a replay")
    };
    assert!(
        out.summary.tasks[0]
            .id
            .contains("replay:conversations.json"),
        "the same id as the file by path: {}",
        out.summary.tasks[0].id
    );
    assert_eq!(r.file, "melt:conversations");
    let shipped = melt::datasets::Shipped::Conversations.into();
    let expected: usize = melt::datasets::read_conversations(&shipped).unwrap()[..3]
        .iter()
        .map(Vec::len)
        .sum();
    assert_eq!(r.turns.len(), expected);
    assert_eq!(r.conversations.len(), 3);
    assert!(r
        .turns
        .iter()
        .all(|t| t.output_tokens <= 16 && t.ttft_ns > 0));
}
