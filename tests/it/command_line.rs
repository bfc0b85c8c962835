//! The bench binary's command line end to end on a tiny GGUF: criterion's test mode (what
//! `cargo test --benches` runs), `--noplot`, and `--output-format bencher`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use melt::backend::{Backend, BackendError, LoadedModel, ModelInfo, Session};
use melt::cli::Args;
use melt::driver::{run_suite, Ran};
use melt::model::{ModelFormat, ModelSpec};
use melt::params::{ModelParams, SessionParams};

use crate::common::*;

#[test]
fn without_bench_every_case_runs_once_and_nothing_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let target = dir.path().join("target");
    let args = Args::parse([
        "--model",
        model.to_str().unwrap(),
        "--target-dir",
        target.to_str().unwrap(),
    ])
    .unwrap();
    let Ran::Tested(t) = run_suite(&suite(), &args).unwrap() else {
        panic!("no --bench: test mode");
    };
    assert!(t.failed.is_empty(), "{:?}", t.failed);
    assert_eq!(t.passed.len(), 2 * 4, "2 thread counts x 4 workloads");
    assert!(
        !target.exists(),
        "test mode wrote {:?}",
        std::fs::read_dir(&target).map(|d| d.count())
    );

    // A case that cannot run fails the test run, by name.
    let missing = dir.path().join("no-such.gguf");
    let args = Args::parse(["--model", missing.to_str().unwrap(), "tg16"]).unwrap();
    let Ran::Tested(t) = run_suite(&suite(), &args).unwrap() else {
        panic!("test mode");
    };
    assert!(t.passed.is_empty());
    assert!(
        t.failed
            .iter()
            .all(|e| e.message.contains("no-such.gguf") && e.case.is_some()),
        "{:?}",
        t.failed
    );
}

#[test]
fn a_host_filter_selects_the_same_cases_on_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let m = model.to_str().unwrap();
    let args = Args::parse(["--model", m, "--device", "board", "tg16/llama.cpp t=1$"]).unwrap();
    let Ran::Tested(t) = run_suite(&suite(), &args).unwrap() else {
        panic!("test mode");
    };
    assert!(t.failed.is_empty(), "{:?}", t.failed);
    assert_eq!(t.passed, ["tiny-llama/tg16/llama.cpp t=1 @board"]);
    // The tagged id still matches, and a filter that matches neither is an error.
    let args = Args::parse(["--model", m, "--device", "board", "t=2 @board$"]).unwrap();
    let Ran::Tested(t) = run_suite(&suite(), &args).unwrap() else {
        panic!("test mode");
    };
    assert_eq!(t.passed.len(), 4, "{:?}", t.passed);
    let args = Args::parse(["--model", m, "--device", "board", "t=3$"]).unwrap();
    let e = run_suite(&suite(), &args).unwrap_err().to_string();
    assert!(e.contains("no case matches the filter `t=3$`"), "{e}");
}

/// The real engine, counting the sessions it is asked to open.
struct CountingSessions {
    engine: Box<dyn Backend>,
    opened: Arc<AtomicUsize>,
}

struct CountingModel {
    model: Box<dyn LoadedModel>,
    opened: Arc<AtomicUsize>,
}

impl Backend for CountingSessions {
    fn name(&self) -> &str {
        self.engine.name()
    }
    fn version(&self) -> String {
        self.engine.version()
    }
    fn accepts(&self, format: ModelFormat) -> bool {
        self.engine.accepts(format)
    }
    fn load(
        &self,
        model: &ModelSpec,
        params: &ModelParams,
    ) -> Result<Box<dyn LoadedModel>, BackendError> {
        Ok(Box::new(CountingModel {
            model: self.engine.load(model, params)?,
            opened: self.opened.clone(),
        }))
    }
}

impl LoadedModel for CountingModel {
    fn info(&self) -> ModelInfo {
        self.model.info()
    }
    fn session<'m>(
        &'m self,
        params: &SessionParams,
    ) -> Result<Box<dyn Session + 'm>, BackendError> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        self.model.session(params)
    }
}

#[test]
fn test_mode_shares_a_session_per_thread_count_and_a_measured_case_gets_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let opened = Arc::new(AtomicUsize::new(0));
    let mut counted = suite();
    counted.backends = melt::backends::enabled()
        .into_iter()
        .filter(|b| b.accepts(ModelFormat::Gguf))
        .map(|engine| {
            Box::new(CountingSessions {
                engine,
                opened: opened.clone(),
            }) as Box<dyn Backend>
        })
        .collect();
    assert_eq!(counted.backends.len(), 1, "llama.cpp alone reads GGUF");

    let args = Args::parse(["--model", model.to_str().unwrap()]).unwrap();
    let Ran::Tested(t) = run_suite(&counted, &args).unwrap() else {
        panic!("test mode");
    };
    assert!(t.failed.is_empty(), "{:?}", t.failed);
    assert_eq!(t.passed.len(), 8);
    // The four workloads need contexts of 32, 16, 40 and 32 tokens: one session per thread
    // count, sized for the largest, serves them all.
    assert_eq!(
        opened.swap(0, Ordering::SeqCst),
        2,
        "one session per thread count"
    );

    let target = dir.path().join("target");
    let args = crate::common::args(&model, &target, &["--sample-size", "2", "--noplot"]);
    let out = run_suite(&counted, &args).unwrap().measured().unwrap();
    assert!(!out.failed(), "{:?}", out.summary.errors);
    assert_eq!(out.summary.cases.len(), 8);
    assert_eq!(
        opened.load(Ordering::SeqCst),
        8,
        "a measured case opens its own"
    );
}

#[test]
fn noplot_writes_no_html_and_bencher_lines_name_every_case() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = run(
        &model,
        dir.path(),
        &["--sample-size", "3", "--noplot", "tg16"],
    );
    assert!(!out.failed(), "{:?}", out.summary.errors);
    assert!(out.run_dir.join("summary.json").is_file());
    assert!(!dir.path().join("melt/report/index.html").exists());
    // github-action-benchmark's `cargo` extractor reads every case back.
    let re = regex_lite(&out.bencher);
    assert_eq!(re.len(), out.summary.cases.len(), "{}", out.bencher);
    for c in &out.summary.cases {
        assert!(re.iter().any(|(id, ns)| id == &c.id && *ns > 0), "{}", c.id);
    }

    let with_html = run(&model, dir.path(), &["--sample-size", "3", "tg16"]);
    assert!(!with_html.failed(), "{:?}", with_html.summary.errors);
    assert!(dir.path().join("melt/report/index.html").is_file());
}

/// `test ID ... bench: N ns/iter (+/- D)` lines as (id, N).
fn regex_lite(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("test ")?;
            let (id, rest) = rest.split_once(" ... bench:")?;
            let (n, rest) = rest.trim_start().split_once(" ns/iter (+/- ")?;
            rest.strip_suffix(')')?
                .replace(',', "")
                .parse::<u64>()
                .ok()?;
            Some((id.to_string(), n.replace(',', "").parse().ok()?))
        })
        .collect()
}
