//! What the device tests share: reading a run back, and a failed command's whole story.

use std::path::{Path, PathBuf};
use std::process::Output;

use melt_bench::store::Summary;

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
