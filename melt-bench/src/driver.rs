//! The bench binary's main flow: arguments → plan → run → analysis → reports. `melt_bench!`
//! expands to a `main` that calls [`main`]; tests call [`run_suite`] directly.

use std::path::PathBuf;

use regex::Regex;

use crate::analysis;
use crate::cli::{Args, OutputFormat, HELP};
use crate::criterion_format::{BaselineMode, ReportError};
use crate::host::HostInfo;
use crate::model::{Cache, Registry};
use crate::runner::{plan, ModelRef, PlannedCase, Runner, Suite};
use crate::stats::AnalysisConfig;
use crate::store::{self, CaseError, Event, EventLog, Layout, Summary, SCHEMA_VERSION};

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    pub summary: Summary,
    pub run_dir: PathBuf,
    pub criterion_dir: PathBuf,
    pub table: String,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        !self.summary.errors.is_empty()
    }
}

/// Errors that stop a run before anything is measured.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Cli(#[from] crate::cli::CliError),
    #[error("bad filter `{filter}`: {reason}")]
    Filter { filter: String, reason: String },
    #[error("no case matches the filter `{0}` (see --list)")]
    NothingSelected(String),
    #[error("{0}")]
    Baseline(#[from] ReportError),
    #[error("cannot create the run directory {path}: {reason}")]
    RunDir { path: PathBuf, reason: String },
    #[error("the suite declares no model, backend or workload")]
    EmptySuite,
    #[error("unknown backend `{name}` (this build has: {known})")]
    UnknownBackend { name: String, known: String },
}

fn select(cases: Vec<PlannedCase>, args: &Args) -> Result<Vec<PlannedCase>, DriverError> {
    let Some(filter) = &args.filter else {
        return Ok(cases);
    };
    let matches: Box<dyn Fn(&str) -> bool> = if args.exact {
        let f = filter.clone();
        Box::new(move |id| id == f)
    } else {
        let re = Regex::new(filter).map_err(|e| DriverError::Filter {
            filter: filter.clone(),
            reason: e.to_string(),
        })?;
        Box::new(move |id| re.is_match(id))
    };
    let selected: Vec<_> = cases
        .into_iter()
        .filter(|c| matches(&c.id.full_id))
        .collect();
    if selected.is_empty() {
        return Err(DriverError::NothingSelected(filter.clone()));
    }
    Ok(selected)
}

/// Model references of the suite, or of `--model` when given.
fn model_refs(suite: &Suite, args: &Args) -> Vec<ModelRef> {
    if !args.models.is_empty() {
        return args.models.iter().cloned().map(ModelRef::path).collect();
    }
    let start = suite
        .manifest_dir
        .clone()
        .filter(|d| d.is_dir())
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    let registry = Registry::find(&start).and_then(|p| match Registry::load(&p) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("melt: {e}");
            None
        }
    });
    suite
        .models
        .iter()
        .map(|m| ModelRef::named(m, registry.as_ref()))
        .collect()
}

/// Runs a suite with parsed arguments. `Ok(None)` for `--list` and `--help`.
pub fn run_suite(suite: &Suite, args: &Args) -> Result<Option<Outcome>, DriverError> {
    if args.help {
        print!("{HELP}");
        return Ok(None);
    }
    if suite.models.is_empty() && args.models.is_empty()
        || suite.backends.is_empty()
        || suite.workloads.is_empty()
    {
        return Err(DriverError::EmptySuite);
    }
    let known: Vec<&str> = suite.backends.iter().map(|b| b.name()).collect();
    if let Some(name) = args.backends.iter().find(|n| !known.contains(&n.as_str())) {
        return Err(DriverError::UnknownBackend {
            name: name.clone(),
            known: known.join(", "),
        });
    }
    let models = model_refs(suite, args);
    let points = suite.sweep.points();
    let cases: Vec<PlannedCase> = plan(&models, &suite.backends, &points, &suite.workloads)
        .into_iter()
        .filter(|c| {
            args.backends.is_empty()
                || args
                    .backends
                    .iter()
                    .any(|n| n == suite.backends[c.backend].name())
        })
        .collect();
    let cases = select(cases, args)?;
    if args.list {
        for c in &cases {
            println!("{}: benchmark", c.id.full_id);
        }
        return Ok(None);
    }

    let layout = match &args.target_dir {
        Some(d) => Layout {
            target_dir: d.clone(),
        },
        None => Layout::discover(),
    };
    let criterion_dir = layout.criterion_dir();
    // A strict baseline must exist for every case before time is spent measuring.
    if let BaselineMode::CompareStrict(name) = &args.baseline {
        for c in &cases {
            let dir = crate::criterion_format::case_dir(&criterion_dir, &c.id).join(name);
            if !dir.is_dir() {
                return Err(ReportError::MissingBaseline {
                    baseline: name.clone(),
                    case: c.id.full_id.clone(),
                    path: dir,
                }
                .into());
            }
        }
    }

    let run_id = format!("{}-{}", store::timestamp_id(), std::process::id());
    let run_dir = layout.runs_dir().join(&run_id);
    let mut log =
        EventLog::create(&run_dir.join("samples.jsonl")).map_err(|e| DriverError::RunDir {
            path: run_dir.clone(),
            reason: e.to_string(),
        })?;
    if args.output_format == OutputFormat::JsonStream {
        log.echo_to(Box::new(std::io::stdout()));
    }
    let host = HostInfo::detect();
    let _ = log.write(&Event::RunStart {
        run_id: run_id.clone(),
        schema_version: SCHEMA_VERSION,
        host: host.clone(),
    });

    let mut runner = Runner {
        models: &models,
        backends: &suite.backends,
        points: &points,
        sampling: args.sampling.clone(),
        cache: Cache::new(Cache::default_root()),
        log: &mut log,
    };
    let (records, failures) = runner.run(&cases);

    let mut config = AnalysisConfig::default();
    if let Some(n) = args.nresamples {
        config.nresamples = n;
    }
    if let Some(x) = args.confidence_level {
        config.confidence_level = x;
    }
    if let Some(x) = args.significance_level {
        config.significance_level = x;
    }
    if let Some(x) = args.noise_threshold {
        config.noise_threshold = x;
    }
    let mut errors: Vec<CaseError> = failures
        .into_iter()
        .map(|f| CaseError {
            case: f.case,
            message: f.message,
        })
        .collect();
    let mut summaries = Vec::new();
    for r in &records {
        let (s, problem) = analysis::analyze(r, &config, &criterion_dir, &args.baseline);
        if let Some(p) = problem {
            eprintln!("melt: {p}");
            errors.push(CaseError {
                case: Some(s.id.clone()),
                message: p.to_string(),
            });
        }
        summaries.push(s);
    }
    let mut summary = Summary {
        schema_version: SCHEMA_VERSION,
        run_id,
        host,
        cases: summaries,
        errors,
    };
    // The run's samples by case: the history keeps their times, the HTML report plots them.
    let by_case: std::collections::BTreeMap<String, Vec<crate::workload::Measured>> = records
        .iter()
        .map(|r| (r.id.full_id.clone(), r.samples.clone()))
        .collect();
    // Remember the run. A history that cannot be written is an error of this run, reported
    // beside its results, which are on disk either way.
    if !summary.cases.is_empty() {
        let samples: std::collections::BTreeMap<String, Vec<f64>> = by_case
            .iter()
            .map(|(id, ms)| (id.clone(), ms.iter().map(|m| m.ns as f64).collect()))
            .collect();
        let git_dir = suite
            .manifest_dir
            .clone()
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_default();
        let git = crate::history::GitState::detect(&git_dir);
        let recorded = crate::history::History::open(&layout.history_path())
            .and_then(|mut h| h.record(&summary, &samples, &git, "host"));
        if let Err(e) = recorded {
            eprintln!("melt: {e}");
            summary.errors.push(CaseError {
                case: None,
                message: e.to_string(),
            });
        }
    }
    // The HTML report of this run.
    let report = layout.report_path();
    let page = crate::html::render(std::slice::from_ref(&summary), &by_case);
    if let Err(e) = report
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| std::fs::write(&report, page))
    {
        summary.errors.push(CaseError {
            case: None,
            message: format!("cannot write the HTML report {}: {e}", report.display()),
        });
    }
    let summary_path = run_dir.join("summary.json");
    if let Err(e) = store::write_json(&summary_path, &summary) {
        eprintln!("melt: cannot write {}: {e}", summary_path.display());
    }
    let _ = log.write(&Event::RunEnd {
        run_id: summary.run_id.clone(),
        run_dir: run_dir.clone(),
        criterion_dir: criterion_dir.clone(),
        cases: summary.cases.len(),
        errors: summary.errors.len(),
    });
    let table = analysis::table(&summary.cases);
    Ok(Some(Outcome {
        summary,
        run_dir,
        criterion_dir,
        table,
    }))
}

/// Entry point of a bench binary: parses `std::env::args`, runs, prints, returns the exit code
/// (0 all cases measured, 1 some case failed, 2 nothing could run).
pub fn main(suite: Suite) -> i32 {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("melt: {e}");
            return 2;
        }
    };
    match run_suite(&suite, &args) {
        Ok(None) => 0,
        Ok(Some(out)) => {
            let written = format!(
                "melt: reports written to {} and {}",
                out.criterion_dir.display(),
                out.run_dir.display()
            );
            // In json-stream mode stdout carries only the events.
            if args.output_format == OutputFormat::Table {
                println!("\n{}", out.table);
                println!("{written}");
            } else {
                eprintln!("{written}");
            }
            for e in &out.summary.errors {
                eprintln!(
                    "melt: FAILED {}: {}",
                    e.case.as_deref().unwrap_or("run"),
                    e.message
                );
            }
            i32::from(out.failed())
        }
        Err(e) => {
            eprintln!("melt: {e}");
            2
        }
    }
}
