//! Two suites at once in one process, as a library author's own `cargo test` of the
//! conformance kit or any program embedding melt runs them: every engine's process-wide state
//! must take it. (llama.cpp's `llama_print_system_info` rewrote one static buffer per call, and
//! two runs asking for the engine's version at once corrupted the heap.)

use crate::common::*;

/// Rounds of two concurrent runs: the heap corruption showed in about one run of eight of the
/// tasks binary, so a few dozen rounds of the two-at-once case bring any such race out.
const ROUNDS: usize = 24;

#[test]
fn two_suites_run_at_once_in_one_process_many_times() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    for round in 0..ROUNDS {
        let runs: Vec<_> = (0..2)
            .map(|side| {
                let (model, target) = (model.clone(), dir.path().join(format!("{round}-{side}")));
                std::thread::spawn(move || {
                    run(
                        &model,
                        &target,
                        &[
                            "--sample-size",
                            "2",
                            "--noplot",
                            "(pp32|tg8)/llama.cpp t=1$",
                        ],
                    )
                })
            })
            .collect();
        for r in runs {
            let out = r.join().expect("a run panicked");
            assert_eq!(
                out.summary.cases.len(),
                2,
                "round {round}: {:?}",
                out.summary
            );
            assert!(out.summary.errors.is_empty(), "{:?}", out.summary.errors);
            let versions: std::collections::BTreeSet<&str> = out
                .summary
                .cases
                .iter()
                .map(|c| c.backend_version.as_str())
                .collect();
            assert_eq!(versions.len(), 1, "{versions:?}");
            assert!(versions.iter().all(|v| v.contains("ggml")), "{versions:?}");
        }
    }
}
