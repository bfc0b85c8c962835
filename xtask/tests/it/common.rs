//! What the device tests share: reading a run back, waiting for a device run's first case,
//! and a failed command's whole story.

use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use melt_bench::store::{read_events, Event, Summary};

/// The finished runs under `target`, oldest first.
pub fn summaries(target: &Path) -> Vec<Summary> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(target.join("melt/runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("summary.json").is_file())
        .collect();
    dirs.sort();
    dirs.iter()
        .map(|d| serde_json::from_slice(&std::fs::read(d.join("summary.json")).unwrap()).unwrap())
        .collect()
}

/// Exit status, stdout and stderr, for an assertion's message.
pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The samples of the device run in flight, once its first case has ended.
pub fn first_case_finished(runs: &Path, run: &mut Child) -> PathBuf {
    let start = Instant::now();
    loop {
        if let Some(status) = run.try_wait().unwrap() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut err);
            panic!("the run ended ({status}) before a case finished: {err}");
        }
        let live = std::fs::read_dir(runs)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join("device.json").is_file() && !p.join("summary.json").is_file());
        if let Some(dir) = live {
            let log = dir.join("samples.jsonl");
            let ended = read_events(&log).map_or(0, |ev| {
                ev.iter()
                    .filter(|e| matches!(e, Event::CaseEnd { .. }))
                    .count()
            });
            if ended >= 1 {
                return log;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no case finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
