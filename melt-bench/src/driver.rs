//! The bench binary's main flow: arguments → plan → run → analysis → reports. `melt_bench!`
//! expands to a `main` that calls [`main`]; tests call [`run_suite`] directly.

use std::collections::BTreeMap;
use std::path::PathBuf;

use regex::Regex;

use crate::analysis;
use crate::cli::{Args, ListFormat, Mode, OutputFormat};
use crate::criterion_format::{BaselineMode, BenchmarkId, ReportError, Throughput};
use crate::host::HostInfo;
use crate::model::{Cache, Registry};
use crate::report::{Reports, RunReport};
use crate::runner::{
    plan, plan_tasks, CaseRecord, ModelRef, PlannedCase, PlannedTask, Runner, Suite,
};
use crate::sampling::Sampling;
use crate::stats::AnalysisConfig;
use crate::store::{CaseError, Event, EventLog, Layout, RunDir, Summary, SCHEMA_VERSION};
use crate::tasks::TaskRecord;
use crate::workload::{Measured, Workload};

// Where they were before the stream got its own module (xtask and tests use these paths).
pub use crate::events::{replay, Replayed};

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    pub summary: Summary,
    pub run_dir: PathBuf,
    pub criterion_dir: PathBuf,
    pub table: String,
    /// The same cases as `--output-format bencher` prints them.
    pub bencher: String,
}

/// What [`run_suite`] did.
#[derive(Debug)]
pub enum Ran {
    /// `--help` or `--list`: printed, nothing run.
    Printed,
    /// Test mode: every case once, nothing kept.
    Tested(Tested),
    /// A measured run, analysed and reported.
    Measured(Box<Outcome>),
    /// `--worker`: requests served until the input ended; the exit code.
    Served(i32),
}

impl Ran {
    /// The measured run, if this was one.
    pub fn measured(self) -> Option<Outcome> {
        match self {
            Ran::Measured(o) => Some(*o),
            _ => None,
        }
    }
}

/// What test mode found: the cases and tasks that ran once, and those that failed.
#[derive(Debug, Default)]
pub struct Tested {
    pub passed: Vec<String>,
    pub failed: Vec<CaseError>,
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
    #[error("--kl-divergence-base saves one reference, but {0}")]
    KlReference(String),
}

/// The filter as a predicate over case and task ids (everything passes without one).
type IdFilter = Box<dyn Fn(&str) -> bool>;

fn matcher(args: &Args) -> Result<IdFilter, DriverError> {
    let Some(filter) = &args.filter else {
        return Ok(Box::new(|_| true));
    };
    if args.exact {
        let f = filter.clone();
        return Ok(Box::new(move |id| id == f));
    }
    let re = Regex::new(filter).map_err(|e| DriverError::Filter {
        filter: filter.clone(),
        reason: e.to_string(),
    })?;
    Ok(Box::new(move |id| re.is_match(id)))
}

/// A reference file is written by one model × backend, and not read in the run that writes it.
fn check_kl_reference(tasks: &[PlannedTask]) -> Result<(), DriverError> {
    use crate::tasks::Task;
    let saving: Vec<(&str, &std::path::Path)> = tasks
        .iter()
        .filter_map(|t| match &t.task {
            Task::Perplexity(p) => Some((t.id.as_str(), p.save_log_probs.as_deref()?)),
            _ => None,
        })
        .collect();
    if saving.len() > 1 {
        let ids: Vec<&str> = saving.iter().map(|(id, _)| *id).collect();
        return Err(DriverError::KlReference(format!(
            "{} model × backend × setting runs would write it ({}); pick one with a filter \
             such as `'MODEL/perplexity.*/BACKEND'` or --backend",
            ids.len(),
            ids.join(", ")
        )));
    }
    if let Some((_, path)) = saving.first() {
        let reads = tasks
            .iter()
            .any(|t| matches!(&t.task, Task::KlDivergence(k) if k.base == *path));
        if reads {
            return Err(DriverError::KlReference(format!(
                "this run would also score against {}, which it is rewriting; score in a \
                 second run",
                path.display()
            )));
        }
    }
    Ok(())
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
    let registry = match Registry::discover(&start) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("melt: {e}");
            None
        }
    };
    suite
        .models
        .iter()
        .map(|m| ModelRef::named(m, registry.as_ref()))
        .collect()
}

/// Runs a suite with parsed arguments.
pub fn run_suite(suite: &Suite, args: &Args) -> Result<Ran, DriverError> {
    if args.help {
        print!("{}", crate::cli::help());
        return Ok(Ran::Printed);
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
    // llama-bench's flags on the command line replace what the bench declared.
    let points = args.sweep.sweep(&suite.sweep).points();
    let backend_chosen = |b: usize| {
        args.backends.is_empty() || args.backends.iter().any(|n| n == suite.backends[b].name())
    };
    let workloads: Vec<Workload> = if args.tasks_only {
        Vec::new()
    } else {
        args.sweep.workloads(&suite.workloads)
    };
    let cases: Vec<PlannedCase> = plan(&models, &suite.backends, &points, &workloads)
        .into_iter()
        .filter(|c| backend_chosen(c.backend))
        .collect();
    let matches = matcher(args)?;
    // A filter written on the host (`'tg128/llama.cpp t=1$'`) selects the same cases on a
    // device, whose ids gain ` @device`: the id matches with or without its tag.
    let cases: Vec<PlannedCase> = tag_device(cases, args.device.as_deref())
        .into_iter()
        .filter(|(untagged, c)| matches(untagged) || matches(&c.id.full_id))
        .map(|(_, c)| c)
        .collect();
    let mut tasks: Vec<PlannedTask> = plan_tasks(
        &models,
        &suite.backends,
        &points,
        &args.tasks,
        args.device.as_deref(),
    )
    .into_iter()
    .filter(|t| backend_chosen(t.backend))
    .collect();
    tasks.retain(|t| matches(&t.id));
    if cases.is_empty() && tasks.is_empty() {
        return Err(DriverError::NothingSelected(
            args.filter.clone().unwrap_or_default(),
        ));
    }
    let cases: Vec<PlannedCase> = cases
        .into_iter()
        .filter(|c| !args.skip.contains(&c.id.full_id))
        .collect();
    tasks.retain(|t| !args.skip.contains(&t.id));
    if cases.is_empty() && tasks.is_empty() {
        return Err(DriverError::NothingSelected(
            "every selected case is in --skip".into(),
        ));
    }
    check_kl_reference(&tasks)?;
    if let Mode::List(format) = args.mode {
        print!("{}", listing(&cases, &tasks, &models, format));
        return Ok(Ran::Printed);
    }
    if args.mode == Mode::Worker {
        let plan = crate::worker::Plan {
            models: &models,
            backends: &suite.backends,
            points: &points,
            cases: &cases,
            sampling: &args.sampling,
            cache: Cache::new(Cache::default_root()),
        };
        let code = crate::worker::serve(&plan, std::io::stdin().lock(), std::io::stdout());
        return Ok(Ran::Served(code));
    }
    if args.mode == Mode::Test {
        return Ok(Ran::Tested(test_once(
            suite, args, &models, &points, &cases, &tasks,
        )));
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

    let run_dir_error = |e: std::io::Error| DriverError::RunDir {
        path: layout.runs_dir(),
        reason: e.to_string(),
    };
    let run_dir = layout
        .create_run_dir(&std::process::id().to_string())
        .map_err(run_dir_error)?;
    let run_id = run_dir.id();
    let mut log = EventLog::create(&run_dir.samples_path()).map_err(run_dir_error)?;
    if args.events_on_stdout() {
        log.echo_to(Box::new(std::io::stdout()));
    }
    let host = HostInfo::detect();
    let _ = log.write(&Event::RunStart {
        run_id: run_id.clone(),
        schema_version: SCHEMA_VERSION,
        host: host.clone(),
    });

    suite.reports.run_start(&run_id, &host);
    let mut runner = Runner {
        roof: None,
        start_temp_c: None,
        cases_run: 0,
        progress: crate::progress::Progress::new(cases.len()),
        share_sessions: false,
        models: &models,
        backends: &suite.backends,
        points: &points,
        sampling: args.sampling.clone(),
        cache: Cache::new(Cache::default_root()),
        log: &mut log,
    };
    let (records, mut failures) = runner.run(&cases);
    let (task_records, task_failures) = runner.run_tasks(&tasks);
    failures.extend(task_failures);
    for r in &records {
        suite.reports.case_measured(r);
    }
    for t in &task_records {
        suite.reports.task_result(t);
    }
    let failures = failures
        .into_iter()
        .map(|f| CaseError {
            case: f.case,
            message: f.message,
        })
        .collect();
    // The commit a run is recorded against: the bench's package's, unless whoever started
    // the binary says where the code being measured lives (`cargo melt run` runs a generic
    // bench from the melt cache on behalf of the current directory's project).
    let git_dir = std::env::var_os("MELT_GIT_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| suite.manifest_dir.clone())
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    let finish = Finish {
        layout,
        config: analysis_config(args),
        baseline: args.baseline.clone(),
        git_dir,
        device: args.device.clone(),
        device_props: Default::default(),
        reports: if args.noplot {
            suite.reports.without_plots()
        } else {
            suite.reports.clone()
        },
    };
    Ok(Ran::Measured(Box::new(finish.run(
        &run_dir,
        host,
        Results {
            records,
            tasks: task_records,
            errors: failures,
        },
        &mut log,
    ))))
}

/// `--list`: criterion's `ID: benchmark` lines, or JSON for tools.
/// `--list`: criterion's lines, or JSON with each case's kind and model (the registry name or
/// the file's stem, as in its id), from which a host pushes a device only the models it uses.
fn listing(
    cases: &[PlannedCase],
    tasks: &[PlannedTask],
    models: &[ModelRef],
    format: ListFormat,
) -> String {
    let ids = cases
        .iter()
        .map(|c| (c.id.full_id.as_str(), "case", c.model))
        .chain(tasks.iter().map(|t| (t.id.as_str(), "task", t.model)));
    match format {
        ListFormat::Pretty | ListFormat::Terse => {
            ids.map(|(id, _, _)| format!("{id}: benchmark\n")).collect()
        }
        ListFormat::Json => {
            let list: Vec<serde_json::Value> = ids
                .map(|(id, kind, m)| {
                    serde_json::json!({ "id": id, "kind": kind, "model": models[m].name })
                })
                .collect();
            format!("{}\n", serde_json::Value::Array(list))
        }
    }
}

/// Test mode, as criterion's: each case runs once — one sample, no warm-up, no probes, its
/// decode cut to a few tokens ([`Workload::for_test`]) — to show that it works; nothing is
/// analysed, compared or written.
fn test_once(
    suite: &Suite,
    args: &Args,
    models: &[ModelRef],
    points: &[crate::params::Point],
    cases: &[PlannedCase],
    tasks: &[PlannedTask],
) -> Tested {
    let mut log = EventLog::discard();
    let mut runner = Runner {
        roof: None,
        start_temp_c: None,
        cases_run: 0,
        progress: crate::progress::Progress::new(cases.len()),
        share_sessions: true,
        models,
        backends: &suite.backends,
        points,
        sampling: Sampling {
            warm_up: std::time::Duration::ZERO,
            min_warm_up_runs: 0,
            fixed_samples: Some(1),
            min_samples: 1,
            max_samples: 1,
            probe_period: None,
            sustained: None,
            cooldown: None,
            ..args.sampling.clone()
        },
        cache: Cache::new(Cache::default_root()),
        log: &mut log,
    };
    let cases: Vec<PlannedCase> = cases
        .iter()
        .cloned()
        .map(|mut c| {
            c.workload = c.workload.for_test();
            c
        })
        .collect();
    let (records, mut failed) = runner.run(&cases);
    let (task_records, task_failures) = runner.run_tasks(tasks);
    failed.extend(task_failures);
    Tested {
        passed: records
            .iter()
            .map(|r| r.id.full_id.clone())
            .chain(task_records.iter().map(|t| t.id.clone()))
            .collect(),
        failed: failed
            .into_iter()
            .map(|f| CaseError {
                case: f.case,
                message: f.message,
            })
            .collect(),
    }
}

/// The analysis settings the arguments ask for.
pub fn analysis_config(args: &Args) -> AnalysisConfig {
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
    config
}

/// Appends ` @DEVICE` to every case's value, so the same case on two devices has two ids
/// (and two criterion directories) that sort side by side.
fn tag_device(cases: Vec<PlannedCase>, device: Option<&str>) -> Vec<(String, PlannedCase)> {
    cases
        .into_iter()
        .map(|mut c| {
            let untagged = c.id.full_id.clone();
            if let Some(device) = device {
                c.id = device_id(&c.id, device);
            }
            (untagged, c)
        })
        .collect()
}

/// The id of case `id` when run on `device`.
pub fn device_id(id: &BenchmarkId, device: &str) -> BenchmarkId {
    let tokens = match id.throughput {
        Some(Throughput::Elements(n)) => n,
        None => 0,
    };
    BenchmarkId::new(
        &id.group_id,
        id.function_id.as_deref().unwrap_or_default(),
        &format!("{} @{device}", id.value_str.as_deref().unwrap_or_default()),
        tokens,
    )
}

/// What a run measured, and what failed, before analysis.
#[derive(Debug, Default)]
pub struct Results {
    pub records: Vec<CaseRecord>,
    pub tasks: Vec<TaskRecord>,
    pub errors: Vec<CaseError>,
}

/// What comes after measuring, shared by a local run and by a host merging a device's
/// event stream: analysis, criterion files, history, HTML report, `summary.json`, `run_end`.
pub struct Finish {
    pub layout: Layout,
    pub config: AnalysisConfig,
    pub baseline: BaselineMode,
    /// Where the git commit recorded in the history is read.
    pub git_dir: PathBuf,
    pub device: Option<String>,
    pub device_props: BTreeMap<String, String>,
    /// The sinks beyond the run store's files (history, HTML).
    pub reports: Reports,
}

impl Finish {
    pub fn run(
        &self,
        run: &RunDir,
        host: HostInfo,
        results: Results,
        log: &mut EventLog,
    ) -> Outcome {
        let (run_id, run_dir) = (run.id(), run.path().to_path_buf());
        let Results {
            records,
            tasks,
            mut errors,
        } = results;
        let layout = &self.layout;
        let criterion_dir = layout.criterion_dir();
        let mut summaries = Vec::new();
        for r in &records {
            let (s, problem) = analysis::analyze(r, &self.config, &criterion_dir, &self.baseline);
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
            device: self.device.clone(),
            device_props: self.device_props.clone(),
            cases: summaries,
            errors,
            probes: crate::store::ProbesOverview::of(
                records.iter().filter_map(|r| r.probes.as_ref()),
            ),
            tasks,
        };
        // The run's samples by case: the history keeps their times, the HTML report plots them.
        let by_case: BTreeMap<String, Vec<Measured>> = records
            .iter()
            .map(|r| (r.id.full_id.clone(), r.samples.clone()))
            .collect();
        let probes: BTreeMap<String, crate::probe::ProbeSummary> = records
            .iter()
            .filter_map(|r| Some((r.id.full_id.clone(), r.probes.clone()?)))
            .collect();
        // A sink that fails (a history that cannot be written, a page that cannot be saved)
        // is an error of this run, reported beside its results, which are on disk either way.
        let failed = self.reports.run_end(&RunReport {
            layout,
            summary: &summary,
            samples: &by_case,
            probes: &probes,
            git_dir: &self.git_dir,
        });
        for message in failed {
            eprintln!("melt: {message}");
            summary.errors.push(CaseError {
                case: None,
                message,
            });
        }
        if let Err(e) = run.save_summary(&summary) {
            eprintln!("melt: cannot write the summary: {e}");
        }
        let _ = log.write(&Event::RunEnd {
            run_id: summary.run_id.clone(),
            run_dir: run_dir.clone(),
            criterion_dir: criterion_dir.clone(),
            cases: summary.cases.len(),
            errors: summary.errors.len(),
        });
        // A tasks-only run has no case table.
        let mut table = if summary.cases.is_empty() {
            String::new()
        } else {
            analysis::table(&summary.cases)
        };
        table.push_str(&analysis::probes_section(&summary));
        table.push_str(&analysis::sustained_section(&summary.cases));
        table.push_str(&crate::tasks::report::section(&summary));
        let times: Vec<(&str, Vec<f64>)> = records
            .iter()
            .map(|r| {
                let ns = r.samples.iter().map(|m| m.ns as f64).collect();
                (r.id.full_id.as_str(), ns)
            })
            .collect();
        let bencher =
            crate::bencher_format::lines(times.iter().map(|(id, ns)| (*id, ns.as_slice())));
        Outcome {
            summary,
            run_dir,
            criterion_dir,
            table,
            bencher,
        }
    }
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
        Ok(Ran::Printed) => 0,
        Ok(Ran::Served(code)) => code,
        Ok(Ran::Tested(t)) => {
            for id in &t.passed {
                println!("Testing {id}\nSuccess");
            }
            for e in &t.failed {
                eprintln!(
                    "melt: FAILED {}: {}",
                    e.case.as_deref().unwrap_or("run"),
                    e.message
                );
            }
            i32::from(!t.failed.is_empty())
        }
        Ok(Ran::Measured(out)) => {
            print_outcome(&args, &out);
            i32::from(out.failed())
        }
        Err(e) => {
            eprintln!("melt: {e}");
            2
        }
    }
}

/// stdout: the event stream alone (`--message-format json`, already printed), bencher lines,
/// or the tables; where the reports went, and what failed, on stderr.
fn print_outcome(args: &Args, out: &Outcome) {
    let written = format!(
        "melt: reports written to {} and {}",
        out.criterion_dir.display(),
        out.run_dir.display()
    );
    if args.events_on_stdout() || args.quiet || args.output_format == OutputFormat::Bencher {
        eprintln!("{written}");
    }
    if !args.events_on_stdout() {
        match args.output_format {
            OutputFormat::Bencher => print!("{}", out.bencher),
            OutputFormat::Criterion if args.quiet => {
                println!(
                    "{}",
                    crate::markdown::aligned(&analysis::table(&out.summary.cases))
                )
            }
            OutputFormat::Criterion => {
                println!("\n{}", crate::markdown::aligned(&out.table));
                println!("{written}");
            }
        }
    }
    for e in &out.summary.errors {
        eprintln!(
            "melt: FAILED {}: {}",
            e.case.as_deref().unwrap_or("run"),
            e.message
        );
    }
}
