//! Criterion 0.8's on-disk format, written by melt so that criterion's tools (critcmp,
//! cargo-criterion's readers, dashboards) read melt results as their own.
//!
//! # Format
//!
//! `<target>/criterion/<group>/<function>/<value>/` (each part made file-name safe as criterion
//! does) holds one directory per baseline — `new` for the latest run, `base` (the default
//! saved baseline) or a name given with `--save-baseline` — each with:
//! - `benchmark.json`: `{group_id, function_id, value_str, throughput: {"Elements": tokens},
//!   full_id, directory_name, title}`;
//! - `sample.json`: `{sampling_mode: "Flat", iters: [1.0, ...], times: [ns, ...]}` — one
//!   iteration per sample, the time melt measured for it;
//! - `estimates.json`: mean, median, median_abs_dev, std_dev (and `slope: null`), each
//!   `{confidence_interval: {confidence_level, lower_bound, upper_bound}, point_estimate,
//!   standard_error}`, in nanoseconds per iteration;
//! - `tukey.json`: the four Tukey fences.
//!
//! `change/estimates.json` holds the relative change of mean and median against the baseline
//! compared with. Baseline semantics are criterion's: by default results are compared with
//! `base`, then saved as `base`; `--save-baseline NAME` does the same with NAME;
//! `--baseline NAME` compares with NAME (which must exist) and saves nothing but `new`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::stats::{self, AnalysisConfig, Comparison, Estimates};

const MAX_DIRECTORY_NAME_LEN: usize = 64;
const MAX_TITLE_LEN: usize = 100;

/// criterion's `Throughput`; melt uses `Elements(tokens)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Throughput {
    Elements(u64),
}

/// criterion's `BenchmarkId` as serialised in `benchmark.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchmarkId {
    pub group_id: String,
    pub function_id: Option<String>,
    pub value_str: Option<String>,
    pub throughput: Option<Throughput>,
    pub full_id: String,
    pub directory_name: String,
    pub title: String,
}

fn truncate_at_char_boundary(s: &mut String, max: usize) {
    let mut b = max.min(s.len());
    while !s.is_char_boundary(b) {
        b -= 1;
    }
    s.truncate(b);
}

/// criterion's `make_filename_safe` (on Unix).
pub fn make_filename_safe(s: &str) -> String {
    let mut s = s.replace(['?', '"', '/', '\\', '*', '<', '>', ':', '|', '^'], "_");
    truncate_at_char_boundary(&mut s, MAX_DIRECTORY_NAME_LEN);
    s
}

impl BenchmarkId {
    pub fn new(group: &str, function: &str, value: &str, tokens: u64) -> BenchmarkId {
        let full_id = format!("{group}/{function}/{value}");
        let mut title = full_id.clone();
        truncate_at_char_boundary(&mut title, MAX_TITLE_LEN);
        if title != full_id {
            title.push_str("...");
        }
        BenchmarkId {
            group_id: group.to_string(),
            function_id: Some(function.to_string()),
            value_str: Some(value.to_string()),
            throughput: Some(Throughput::Elements(tokens)),
            directory_name: format!(
                "{}/{}/{}",
                make_filename_safe(group),
                make_filename_safe(function),
                make_filename_safe(value)
            ),
            full_id,
            title,
        }
    }
}

/// criterion's `SavedSample` (`sample.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSample {
    pub sampling_mode: SamplingMode,
    pub iters: Vec<f64>,
    pub times: Vec<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SamplingMode {
    Linear,
    Flat,
}

/// What to do with baselines, as criterion's `--save-baseline` / `--baseline` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaselineMode {
    /// Compare with NAME if present, then save this run as NAME (criterion's default: `base`).
    Save(String),
    /// Compare with NAME, which must exist; save only `new`.
    CompareStrict(String),
    /// Compare with NAME if present; save only `new`.
    CompareLenient(String),
    /// Save only `new`, compare with nothing.
    Discard,
}

impl Default for BaselineMode {
    fn default() -> Self {
        BaselineMode::Save("base".into())
    }
}

impl BaselineMode {
    pub fn compare_with(&self) -> Option<&str> {
        match self {
            BaselineMode::Save(n)
            | BaselineMode::CompareStrict(n)
            | BaselineMode::CompareLenient(n) => Some(n),
            BaselineMode::Discard => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("baseline `{baseline}` is broken: {path}: {reason}")]
    BrokenBaseline {
        baseline: String,
        path: PathBuf,
        reason: String,
    },
    #[error("baseline `{baseline}` does not exist for {case} ({path} missing); create it with --save-baseline {baseline}")]
    MissingBaseline {
        baseline: String,
        case: String,
        path: PathBuf,
    },
}

/// The criterion directory of one benchmark.
pub fn case_dir(criterion_dir: &Path, id: &BenchmarkId) -> PathBuf {
    criterion_dir.join(&id.directory_name)
}

fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), ReportError> {
    let werr = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(werr)?;
    }
    // criterion writes compact JSON; so does melt.
    let json = serde_json::to_string(value).map_err(|e| werr(io::Error::other(e)))?;
    fs::write(path, json).map_err(werr)
}

/// melt's own file beside criterion's in `new/` and in saved baselines: every metric of the
/// case (TTFT, latency percentiles, peak memory...) with its CI, so the gate can judge more
/// than time per iteration. criterion and critcmp ignore files they do not know.
pub const METRICS_FILE: &str = "melt_metrics.json";

/// Writes the case's metrics into `new/` and, when saving a baseline, into it too.
pub fn write_metrics(
    criterion_dir: &Path,
    id: &BenchmarkId,
    metrics: &std::collections::BTreeMap<String, crate::metric::Metric>,
    mode: &BaselineMode,
) -> Result<(), ReportError> {
    let dir = case_dir(criterion_dir, id);
    save(&dir.join("new").join(METRICS_FILE), metrics)?;
    if let BaselineMode::Save(name) = mode {
        save(&dir.join(name).join(METRICS_FILE), metrics)?;
    }
    Ok(())
}

/// A baseline's (or `new`'s) metrics; `None` when it has none (saved by an older melt, or
/// never saved).
pub fn load_baseline_metrics(
    criterion_dir: &Path,
    id: &BenchmarkId,
    baseline: &str,
) -> Result<Option<std::collections::BTreeMap<String, crate::metric::Metric>>, ReportError> {
    let path = case_dir(criterion_dir, id)
        .join(baseline)
        .join(METRICS_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ReportError::BrokenBaseline {
                baseline: baseline.to_string(),
                path,
                reason: e.to_string(),
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ReportError::BrokenBaseline {
            baseline: baseline.to_string(),
            path,
            reason: e.to_string(),
        })
}

/// Loads a baseline's per-iteration times, with an error that names the broken file.
pub fn load_baseline_times(
    criterion_dir: &Path,
    id: &BenchmarkId,
    baseline: &str,
) -> Result<Option<Vec<f64>>, ReportError> {
    let dir = case_dir(criterion_dir, id).join(baseline);
    if !dir.exists() {
        return Ok(None);
    }
    let broken = |path: &Path, reason: String| ReportError::BrokenBaseline {
        baseline: baseline.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    let path = dir.join("sample.json");
    let text = fs::read_to_string(&path).map_err(|e| broken(&path, e.to_string()))?;
    let sample: SavedSample =
        serde_json::from_str(&text).map_err(|e| broken(&path, e.to_string()))?;
    if sample.iters.len() != sample.times.len() || sample.times.len() < 2 {
        return Err(broken(
            &path,
            format!(
                "{} iteration counts for {} times; need two or more matching samples",
                sample.iters.len(),
                sample.times.len()
            ),
        ));
    }
    // criterion also reads the baseline's estimates.json; it must parse.
    let est = dir.join("estimates.json");
    let text = fs::read_to_string(&est).map_err(|e| broken(&est, e.to_string()))?;
    serde_json::from_str::<Estimates>(&text).map_err(|e| broken(&est, e.to_string()))?;
    Ok(Some(
        sample
            .iters
            .iter()
            .zip(&sample.times)
            .map(|(i, t)| t / i)
            .collect(),
    ))
}

/// Writes one benchmark's results the way criterion's `analysis::common` does, compares with
/// the baseline the mode names, and saves the baseline. `times_ns` are per-sample times.
/// Files under `new/` are written before the baseline is read, so a broken baseline never
/// costs the new results.
pub fn write_benchmark(
    criterion_dir: &Path,
    id: &BenchmarkId,
    times_ns: &[f64],
    estimates: &Estimates,
    mode: &BaselineMode,
    config: &AnalysisConfig,
) -> Result<Option<Comparison>, ReportError> {
    let dir = case_dir(criterion_dir, id);
    let new = dir.join("new");
    save(&new.join("tukey.json"), &stats::tukey_fences(times_ns))?;
    save(
        &new.join("sample.json"),
        &SavedSample {
            sampling_mode: SamplingMode::Flat,
            iters: vec![1.0; times_ns.len()],
            times: times_ns.to_vec(),
        },
    )?;
    save(&new.join("estimates.json"), estimates)?;
    save(&new.join("benchmark.json"), id)?;

    let mut comparison = None;
    if let Some(baseline) = mode.compare_with() {
        match load_baseline_times(criterion_dir, id, baseline)? {
            // One sample has no variance: Welch's t would be NaN and the p-value meaningless.
            Some(_) if times_ns.len() < 2 => {}
            Some(base_times) => {
                let c = stats::compare(times_ns, &base_times, config);
                save(&dir.join("change").join("estimates.json"), &c.change)?;
                comparison = Some(c);
            }
            None if matches!(mode, BaselineMode::CompareStrict(_)) => {
                return Err(ReportError::MissingBaseline {
                    baseline: baseline.to_string(),
                    case: id.full_id.clone(),
                    path: dir.join(baseline),
                })
            }
            None => {}
        }
    }
    if let BaselineMode::Save(name) = mode {
        let target = dir.join(name);
        for file in [
            "estimates.json",
            "sample.json",
            "tukey.json",
            "benchmark.json",
        ] {
            let to = target.join(file);
            fs::create_dir_all(&target)
                .and_then(|_| fs::copy(new.join(file), &to))
                .map_err(|source| ReportError::Write { path: to, source })?;
        }
    }
    Ok(comparison)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AnalysisConfig {
        AnalysisConfig {
            nresamples: 5_000,
            ..AnalysisConfig::default()
        }
    }

    #[test]
    fn ids_are_made_safe_and_shaped_like_criterion() {
        let id = BenchmarkId::new("gemma/x", "tg128 @ d512", "llama.cpp t=2", 128);
        assert_eq!(id.full_id, "gemma/x/tg128 @ d512/llama.cpp t=2");
        assert_eq!(id.directory_name, "gemma_x/tg128 @ d512/llama.cpp t=2");
        let json = serde_json::to_value(&id).unwrap();
        assert_eq!(json["throughput"], serde_json::json!({"Elements": 128}));
        assert_eq!(make_filename_safe(&"a".repeat(80)).len(), 64);
    }

    #[test]
    fn default_mode_saves_base_and_compares_on_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let id = BenchmarkId::new("m", "pp4", "b t=1", 4);
        let t1 = [100.0, 101.0, 99.0, 100.5, 100.2];
        let e1 = stats::estimates(&t1, &cfg());
        let mode = BaselineMode::default();
        assert!(write_benchmark(dir.path(), &id, &t1, &e1, &mode, &cfg())
            .unwrap()
            .is_none());
        let case = case_dir(dir.path(), &id);
        for f in [
            "estimates.json",
            "sample.json",
            "tukey.json",
            "benchmark.json",
        ] {
            assert!(case.join("new").join(f).is_file(), "new/{f}");
            assert!(case.join("base").join(f).is_file(), "base/{f}");
        }
        let t2: Vec<f64> = t1.iter().map(|t| t * 1.2).collect();
        let e2 = stats::estimates(&t2, &cfg());
        let c = write_benchmark(dir.path(), &id, &t2, &e2, &mode, &cfg())
            .unwrap()
            .unwrap();
        assert_eq!(c.verdict, stats::Verdict::Regressed);
        assert!(case.join("change/estimates.json").is_file());
    }

    #[test]
    fn a_single_sample_is_saved_but_not_compared() {
        let dir = tempfile::tempdir().unwrap();
        let id = BenchmarkId::new("m", "pp4", "b t=1", 4);
        let t = [100.0, 101.0, 99.0];
        let mode = BaselineMode::default();
        write_benchmark(
            dir.path(),
            &id,
            &t,
            &stats::estimates(&t, &cfg()),
            &mode,
            &cfg(),
        )
        .unwrap();
        let one = [150.0];
        let c = write_benchmark(
            dir.path(),
            &id,
            &one,
            &stats::estimates(&one, &cfg()),
            &mode,
            &cfg(),
        );
        assert!(c.unwrap().is_none(), "no verdict from one sample");
    }

    #[test]
    fn strict_baseline_must_exist_and_broken_baseline_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let id = BenchmarkId::new("m", "tg8", "b t=1", 8);
        let t = [10.0, 11.0, 10.5];
        let e = stats::estimates(&t, &cfg());
        let strict = BaselineMode::CompareStrict("main".into());
        let err = write_benchmark(dir.path(), &id, &t, &e, &strict, &cfg()).unwrap_err();
        assert!(err.to_string().contains("--save-baseline main"), "{err}");
        // New results were still written.
        assert!(case_dir(dir.path(), &id).join("new/sample.json").is_file());

        let save = BaselineMode::Save("main".into());
        write_benchmark(dir.path(), &id, &t, &e, &save, &cfg()).unwrap();
        let sample = case_dir(dir.path(), &id).join("main/sample.json");
        fs::write(&sample, "{\"iters\": [1.0], \"times\": ").unwrap();
        let err = write_benchmark(dir.path(), &id, &t, &e, &strict, &cfg()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("baseline `main` is broken") && text.contains("sample.json"),
            "{text}"
        );
    }
}
