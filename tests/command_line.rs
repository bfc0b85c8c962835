//! The bench binary's command line end to end on a tiny GGUF: criterion's test mode (what
//! `cargo test --benches` runs), `--noplot`, and `--output-format bencher`.

mod common;

use melt::cli::Args;
use melt::driver::{run_suite, Ran};

use common::*;

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
