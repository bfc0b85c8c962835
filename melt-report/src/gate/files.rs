//! What the gate reads: the benchmarks under `target/criterion`, the latest run's cases, and the
//! baseline each is judged against.

use std::path::{Path, PathBuf};

use super::config::*;
use super::judge::*;
use crate::history::{RunKey, HOST_DEVICE};
use melt_bench::criterion_format::{
    load_baseline_metrics, load_baseline_times, BenchmarkId, ReportError, SavedSample,
};
use melt_bench::stats::AnalysisConfig;
use melt_bench::store::Layout;

/// Every benchmark directory (holding `new/benchmark.json`) under a criterion directory.
pub fn find_benchmarks(criterion_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![criterion_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            if p.join("benchmark.json").is_file() && p.file_name().is_some_and(|n| n == "new") {
                out.push(dir.clone());
            } else {
                stack.push(p);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("no benchmark results under {0}: run the benches first")]
    NoResults(PathBuf),
    #[error("{path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error(transparent)]
    Baseline(#[from] ReportError),
    #[error(transparent)]
    Run(#[from] melt_bench::store::StoreError),
}

/// The criterion directories of the cases of the latest finished run, so the gate judges
/// what was just measured and not stale results of cases that run did not include. `None`
/// when there is no run.
pub fn latest_run_cases(layout: &Layout) -> Result<Option<(RunKey, Vec<PathBuf>)>, GateError> {
    let Some(latest) = layout.latest_finished_run() else {
        return Ok(None);
    };
    let summary = latest.load_summary()?;
    let criterion_dir = layout.criterion_dir();
    let dirs = summary
        .cases
        .iter()
        .map(|c| {
            let id = BenchmarkId::new(&c.group, &c.function, &c.value, c.workload.tokens() as u64);
            melt_bench::criterion_format::case_dir(&criterion_dir, &id)
        })
        .collect();
    let key = RunKey {
        device: summary.device.unwrap_or_else(|| HOST_DEVICE.to_string()),
        run_id: summary.run_id,
    };
    Ok(Some((key, dirs)))
}

/// Judges the benchmarks in `dirs` (criterion case directories; every one under
/// `criterion_dir` when `None`) against `baseline`.
pub fn run(
    criterion_dir: &Path,
    dirs: Option<Vec<PathBuf>>,
    baseline: &str,
    drift: &dyn Fn(&str) -> Option<f64>,
    config: &GateConfig,
    analysis: &AnalysisConfig,
) -> Result<Vec<CaseGate>, GateError> {
    let dirs = dirs.unwrap_or_else(|| find_benchmarks(criterion_dir));
    if dirs.is_empty() {
        return Err(GateError::NoResults(criterion_dir.to_path_buf()));
    }
    let read = |path: PathBuf| -> Result<String, GateError> {
        std::fs::read_to_string(&path).map_err(|e| GateError::Unreadable {
            path: path.clone(),
            reason: e.to_string(),
        })
    };
    let mut out = Vec::new();
    for dir in dirs {
        let id_path = dir.join("new/benchmark.json");
        let id: BenchmarkId =
            serde_json::from_str(&read(id_path.clone())?).map_err(|e| GateError::Unreadable {
                path: id_path,
                reason: e.to_string(),
            })?;
        let sample_path = dir.join("new/sample.json");
        let sample: SavedSample =
            serde_json::from_str(&read(sample_path.clone())?).map_err(|e| {
                GateError::Unreadable {
                    path: sample_path,
                    reason: e.to_string(),
                }
            })?;
        let new_ns: Vec<f64> = sample
            .iters
            .iter()
            .zip(&sample.times)
            .map(|(i, t)| t / i)
            .collect();
        let base = load_baseline_times(criterion_dir, &id, baseline)?;
        let tokens = match id.throughput {
            Some(melt_bench::criterion_format::Throughput::Elements(n)) => n,
            None => 1,
        };
        out.push(judge(
            &id.full_id,
            &new_ns,
            base.as_deref(),
            tokens,
            drift(&id.full_id),
            config,
            analysis,
        ));
        let extra = config.extra_metrics();
        if extra.is_empty() {
            continue;
        }
        let new_metrics = load_baseline_metrics(criterion_dir, &id, "new")?;
        let base_metrics = load_baseline_metrics(criterion_dir, &id, baseline)?;
        out.extend(judge_metrics(
            &id.full_id,
            new_metrics.as_ref(),
            base_metrics.as_ref(),
            config,
        ));
    }
    Ok(out)
}
