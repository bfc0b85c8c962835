//! Tasks end to end: replay, perplexity and multiple choice beside the workloads, bad task files,
//! KL-divergence from a saved reference, and the paper's conversations (shipped) replayed on
//! the tiny model.

use std::path::Path;

use melt::cli::Args;
use melt::driver::run_suite;
use melt::store::{read_events, Event, Summary};
use melt_testkit::TinyLlama;

use crate::common::*;

/// A second tiny model, other weights, for side-by-side comparisons.
fn second_model(dir: &Path) -> std::path::PathBuf {
    let b = dir.join("tiny-llama-b.gguf");
    TinyLlama {
        seed: 7,
        ..TinyLlama::default()
    }
    .write(&b)
    .unwrap();
    b
}

/// A text long enough for a few chunks of 32 tokens.
fn text_file(dir: &Path) -> std::path::PathBuf {
    let text = dir.join("text.txt");
    std::fs::write(
        &text,
        "the hello world and the other world, a lot of words. ".repeat(12),
    )
    .unwrap();
    text
}

#[test]
fn tasks_run_beside_the_workloads_stream_their_turns_and_compare_models_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let a = tiny_model(dir.path());
    let b = second_model(dir.path());
    let conv = dir.path().join("conversations.json");
    std::fs::write(
        &conv,
        r#"[["Hello world", "the other one"], ["what a lot"]]"#,
    )
    .unwrap();
    let text = text_file(dir.path());
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
    assert!(listed.unwrap().measured().is_none());
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
            "only applies with --replay, --perplexity, --kl-divergence or --choices",
        ),
    ] {
        let e = Args::parse(bad.clone()).unwrap_err().to_string();
        assert!(e.contains(says), "{bad:?}: {e}");
    }
}

#[test]
fn kl_divergence_scores_every_model_against_one_saved_reference() {
    let dir = tempfile::tempdir().unwrap();
    let a = tiny_model(dir.path());
    let b = second_model(dir.path());
    let text = text_file(dir.path());
    let reference = dir.path().join("tiny.kld");
    let s = |p: &Path| p.display().to_string();
    let (b_s, text_s, ref_s) = (s(&b), s(&text), s(&reference));
    let save = |filter: Option<&str>| {
        let mut extra = vec![
            "--model",
            b_s.as_str(),
            "--tasks-only",
            "--perplexity",
            text_s.as_str(),
            "--ppl-ctx",
            "32",
            "--kl-divergence-base",
            ref_s.as_str(),
        ];
        extra.extend(filter);
        run_suite(&suite(), &args(&a, dir.path(), &extra))
    };
    // Two models would both write the reference: refused, naming them, before anything runs.
    let e = save(None).unwrap_err().to_string();
    assert!(
        e.contains("2 model × backend × setting runs")
            && e.contains("tiny-llama/perplexity:text.txt@32/llama.cpp t=2"),
        "{e}"
    );
    assert!(!reference.exists());
    let saved = save(Some("^tiny-llama/perplexity"))
        .unwrap()
        .measured()
        .unwrap();
    assert_eq!(saved.summary.tasks.len(), 1);
    assert!(reference.is_file());

    let out = run(
        &a,
        dir.path(),
        &["--model", &b_s, "--tasks-only", "--kl-divergence", &ref_s],
    );
    assert!(out.summary.errors.is_empty(), "{:?}", out.summary.errors);
    let kld = |model: &str| {
        out.summary
            .tasks
            .iter()
            .find_map(|t| match &t.result {
                melt::tasks::TaskResult::KlDivergence(k) if t.model.name == model => {
                    assert_eq!(
                        t.id,
                        format!("{model}/kl-divergence:tiny.kld@32/llama.cpp t=2")
                    );
                    Some(k.clone())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no KL-divergence of {model}"))
    };
    let (same, other) = (kld("tiny-llama"), kld("tiny-llama-b"));
    assert!(same.kld.mean.abs() < 1e-5, "{:?}", same.kld);
    assert_eq!(same.same_top.mean, 1.0);
    assert!(other.kld.mean > 0.01, "{:?}", other.kld);
    assert!(
        out.table.contains("KL-divergence from the reference"),
        "{}",
        out.table
    );
    let rows = melt::tasks::report::quantization_rows(&out.summary);
    assert!(
        rows.iter().all(|r| r.kld.is_some() && r.same_top.is_some()),
        "{rows:?}"
    );
    let page = std::fs::read_to_string(dir.path().join("melt/report/index.html")).unwrap();
    assert!(page.contains("peak memory against KL-divergence"));

    // A sweep of what changes the logits (here the K cache's type) scores each value: a
    // KL-divergence and a row of the quantization table per setting, of one model.
    let out = run(
        &a,
        dir.path(),
        &[
            "--tasks-only",
            "--kl-divergence",
            &ref_s,
            "--cache-type-k",
            "f16,f32",
        ],
    );
    assert!(out.summary.errors.is_empty(), "{:?}", out.summary.errors);
    let by_setting: Vec<(Vec<String>, f64)> = (out.summary.tasks.iter())
        .filter_map(|t| match &t.result {
            melt::tasks::TaskResult::KlDivergence(k) => Some((t.params.numerics(), k.kld.mean)),
            _ => None,
        })
        .collect();
    assert_eq!(by_setting.len(), 2, "{by_setting:?}");
    assert!(by_setting[0].0.is_empty() && by_setting[0].1.abs() < 1e-5);
    assert_eq!(by_setting[1].0, ["type_k=f32"]);
    let rows = melt::tasks::report::quantization_rows(&out.summary);
    let names: Vec<&str> = rows.iter().map(|r| r.model.as_str()).collect();
    assert_eq!(names, ["tiny-llama", "tiny-llama (type_k=f32)"]);

    // A run that would score against the file it rewrites, and a reference that is not one.
    let e = run_suite(
        &suite(),
        &args(
            &a,
            dir.path(),
            &[
                "--tasks-only",
                "--perplexity",
                &text_s,
                "--ppl-ctx",
                "32",
                "--kl-divergence-base",
                &ref_s,
                "--kl-divergence",
                &ref_s,
            ],
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("which it is rewriting"), "{e}");
    let e = Args::parse(["--kl-divergence", text_s.as_str()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--kl-divergence")
            && e.contains("text.txt")
            && e.contains("not a file of log-probabilities"),
        "{e}"
    );
    let e = Args::parse(["--kl-divergence-base", "x.kld"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("only applies with --perplexity"), "{e}");
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
