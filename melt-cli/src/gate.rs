//! `cargo melt gate --baseline NAME`: fail CI on a real tok/s regression.
//!
//! Compares every case's latest results (`target/criterion/**/new`) with the named baseline
//! using melt_report::gate's rule, prints a markdown summary (and appends it to
//! `$GITHUB_STEP_SUMMARY` when set), and exits 0 (pass), 1 (regressed) or 2 (could not
//! compare). Thresholds come from `[gate]` in melt.toml, `--threshold` overrides the default.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use melt_bench::stats::AnalysisConfig;
use melt_report::gate::{self, GateConfig};
use melt_report::history::{History, RunKey};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq)]
pub enum Baseline {
    Named(String),
    GitRef(String),
}

#[derive(Deserialize, Default)]
struct MeltToml {
    #[serde(default)]
    gate: GateConfig,
}

pub struct Options {
    /// A criterion baseline name (`--baseline`), or a git ref looked up in the history
    /// (`--baseline-ref`).
    pub baseline: Baseline,
    pub threshold: Option<f64>,
    pub lenient: bool,
    /// Do not widen CIs by the run-to-run drift estimated from the history.
    pub ignore_drift: bool,
    /// Where the ref's run and the drift are looked up (a file or a `postgres://` URL)
    /// [default: this machine's history].
    pub history: Option<String>,
    pub target_dir: PathBuf,
}

impl Options {
    /// The gate's options from its command line (clap has checked them).
    pub fn from_cli(g: crate::cli::Gate) -> Options {
        let baseline = match (g.baseline, g.baseline_ref) {
            (Some(name), _) => Baseline::Named(name),
            (None, Some(r)) => Baseline::GitRef(r),
            (None, None) => {
                unreachable!("clap requires --baseline or --baseline-ref without --against")
            }
        };
        Options {
            baseline,
            threshold: g.threshold,
            lenient: g.lenient,
            ignore_drift: g.ignore_drift,
            history: g.history,
            target_dir: g.target_dir.unwrap_or_else(crate::target_dir),
        }
    }
}

pub fn config() -> Result<GateConfig> {
    let cwd = std::env::current_dir()?;
    let Some(path) = melt_bench::model::Registry::find(&cwd) else {
        return Ok(GateConfig::default());
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let file: MeltToml =
        toml::from_str(&text).with_context(|| format!("{}: [gate]", path.display()))?;
    file.gate
        .check()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(file.gate)
}

/// How many earlier runs of a case the drift estimate looks at.
const DRIFT_RUNS: usize = 20;

/// The case's run-to-run drift on the judged run's device, from the history (earlier runs
/// than `judged`), if there is a history, a judged run, enough runs, and the user did not
/// switch it off.
fn drift_of(history: Option<History>, judged: Option<RunKey>) -> impl Fn(&str) -> Option<f64> {
    let history = std::cell::RefCell::new(history);
    move |case: &str| {
        let judged = judged.as_ref()?;
        let mut h = history.borrow_mut();
        let runs = h
            .as_mut()?
            .recent_estimates(
                case,
                "tokens_per_second",
                &judged.device,
                &[judged.run_id.as_str()],
                DRIFT_RUNS,
            )
            .ok()?;
        gate::drift_from_replicates(&runs)
    }
}

/// The history the drift is learned from: `--history`'s, or this machine's.
fn drift_history(opts: &Options) -> Option<History> {
    if opts.ignore_drift {
        return None;
    }
    crate::history::open_at(opts.history.as_deref(), &opts.target_dir).ok()
}

/// Cases of the latest run (criterion `new/`) against a named criterion baseline.
fn judge_named(opts: &Options, name: &str, config: &GateConfig) -> Result<Vec<gate::CaseGate>> {
    let layout = melt_bench::store::Layout::at(&opts.target_dir);
    let (criterion_dir, runs_dir) = (layout.criterion_dir(), layout.runs_dir());
    let (judged, dirs) = match gate::latest_run_cases(&layout)? {
        Some((run, dirs)) => {
            eprintln!("melt: gate: judging the {} cases of run {run}", dirs.len());
            (Some(run), Some(dirs))
        }
        None => {
            eprintln!(
                "melt: gate: no run summary under {}; judging every case in {}",
                runs_dir.display(),
                criterion_dir.display()
            );
            (None, None)
        }
    };
    let drift = drift_of(drift_history(opts), judged);
    Ok(gate::run(
        &criterion_dir,
        dirs,
        name,
        &drift,
        config,
        &AnalysisConfig::default(),
    )?)
}

/// The latest run recorded here against the latest other run of `git_ref`'s commit on the
/// same device, from the history `--history` names (a shared one need not have the judged
/// run, and this machine's need not have the ref's).
fn judge_ref(
    opts: &Options,
    git_ref: &str,
    config: &GateConfig,
) -> Result<(String, Vec<gate::CaseGate>)> {
    let commit = crate::paired::commit_of(&std::env::current_dir()?, git_ref)?;
    let short: String = commit.chars().take(10).collect();
    let mut here = crate::history::open(&opts.target_dir)?;
    let mut there = crate::history::open_at(opts.history.as_deref(), &opts.target_dir)?;
    // The run made here last: the newest in the history may be one pulled from elsewhere.
    let layout = melt_bench::store::Layout::at(&opts.target_dir);
    let made_here = gate::latest_run_cases(&layout)?.map(|(key, _)| key);
    let latest = match made_here {
        Some(key) => key,
        None => {
            here.runs(None, 1)?
                .into_iter()
                .next()
                .context("the history has no runs")?
                .key
        }
    };
    let base_run = there
        .latest_run_of_commit(&commit, &latest.device, Some(&latest))?
        .with_context(|| {
            format!(
                "no run of {git_ref} ({short}) on {} in {} besides the run being judged: run \
                 the suite on that commit first, or name a shared history (--history URL)",
                latest.device,
                there.location()
            )
        })?;
    eprintln!("melt: gate: judging run {latest} against run {base_run} of {git_ref}");
    let mut results = Vec::new();
    let mut cases = Vec::new();
    for case in here.cases_of_run(&latest)? {
        let Some((tokens, new)) = here.case_samples(&latest, &case)? else {
            continue;
        };
        let base = there.case_samples(&base_run, &case)?.map(|(_, t)| t);
        let metrics = if config.extra_metrics().is_empty() {
            None
        } else {
            Some((
                here.case_metrics(&latest, &case)?,
                there.case_metrics(&base_run, &case)?,
            ))
        };
        cases.push((case, tokens, new, base, metrics));
    }
    let drift = drift_of((!opts.ignore_drift).then_some(there), Some(latest));
    for (case, tokens, new, base, metrics) in cases {
        results.push(gate::judge(
            &case,
            &new,
            base.as_deref(),
            tokens,
            drift(&case),
            config,
            &AnalysisConfig::default(),
        ));
        if let Some((new, base)) = metrics {
            let base = (!base.is_empty()).then_some(&base);
            results.extend(gate::judge_metrics(&case, Some(&new), base, config));
        }
    }
    Ok((
        format!("{git_ref} ({short}, run {})", base_run.run_id),
        results,
    ))
}

/// Runs the gate; returns the process exit code.
pub fn run(opts: &Options, mut config: GateConfig) -> Result<i32> {
    if let Some(t) = opts.threshold {
        config.threshold = t;
    }
    let judged = match &opts.baseline {
        Baseline::Named(name) => judge_named(opts, name, &config).map(|r| (name.clone(), r)),
        Baseline::GitRef(git_ref) => judge_ref(opts, git_ref, &config),
    };
    let (label, results) = match judged {
        Ok(j) => j,
        Err(e) => {
            eprintln!("melt: gate: could not compare: {e:#}");
            return Ok(2);
        }
    };
    let summary = gate::markdown(&results, &label, opts.lenient);
    print!("{}", melt_bench::markdown::aligned(&summary));
    append_step_summary(&summary)?;
    Ok(gate::exit_code(&results, opts.lenient))
}

/// Appends `summary` to `$GITHUB_STEP_SUMMARY` when it is set (a GitHub Actions job's page).
pub(crate) fn append_step_summary(summary: &str) -> Result<()> {
    if let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| {
                format!(
                    "opening $GITHUB_STEP_SUMMARY ({})",
                    PathBuf::from(&path).display()
                )
            })?;
        writeln!(f, "{summary}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use melt_bench::criterion_format::{write_benchmark, BaselineMode, BenchmarkId};
    use melt_bench::stats;

    /// Real files, as a bench run writes them, with known truth: one case 12% slower with
    /// tight samples, one unchanged. The gate fails, names the case, and writes the summary
    /// to $GITHUB_STEP_SUMMARY-style file; without the slow case it passes.
    #[test]
    fn gate_over_written_results() {
        let dir = tempfile::tempdir().unwrap();
        let crit = dir.path().join("criterion");
        let cfg = stats::AnalysisConfig {
            nresamples: 5_000,
            ..Default::default()
        };
        let base_times: Vec<f64> = (0..8).map(|i| 1.0e9 + (i as f64) * 2.0e6).collect();
        let slow: Vec<f64> = base_times.iter().map(|t| t * 1.12).collect();
        let same: Vec<f64> = base_times.iter().rev().copied().collect();
        let save = BaselineMode::Save("main".into());
        let discard = BaselineMode::Discard;
        let write = |id: &BenchmarkId, t: &[f64], m: &BaselineMode| {
            write_benchmark(&crit, id, t, &stats::estimates(t, &cfg), m, &cfg).unwrap();
        };
        let a = BenchmarkId::new("m", "tg128", "llama.cpp t=2", 128);
        let b = BenchmarkId::new("m", "pp512", "llama.cpp t=2", 512);
        write(&a, &base_times, &save);
        write(&b, &base_times, &save);
        write(&a, &slow, &discard);
        write(&b, &same, &discard);
        let opts = Options {
            baseline: Baseline::Named("main".into()),
            threshold: None,
            lenient: false,
            ignore_drift: false,
            history: None,
            target_dir: dir.path().to_path_buf(),
        };
        assert_eq!(run(&opts, GateConfig::default()).unwrap(), 1);
        let results =
            gate::run(&crit, None, "main", &|_| None, &GateConfig::default(), &cfg).unwrap();
        let md = gate::markdown(&results, "main", false);
        assert!(
            md.contains("FAILED")
                && md.contains("m/tg128/llama.cpp t=2")
                && md.contains("regressed"),
            "{md}"
        );
        // Raising the threshold for tg above the drop makes it pass.
        let lax = GateConfig {
            cases: vec![gate::CaseThreshold {
                matching: "tg128".into(),
                metric: None,
                threshold: 0.2,
            }],
            ..GateConfig::default()
        };
        assert_eq!(run(&opts, lax).unwrap(), 0);
        // A baseline nobody saved: exit 2.
        let other = Options {
            baseline: Baseline::Named("nope".into()),
            ..opts
        };
        assert_eq!(run(&other, GateConfig::default()).unwrap(), 2);
        // No results at all: exit 2.
        let empty = Options {
            target_dir: dir.path().join("void"),
            ..other
        };
        assert_eq!(run(&empty, GateConfig::default()).unwrap(), 2);
    }
}
