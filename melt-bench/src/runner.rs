//! Runs a suite: plans the cases, loads each model as rarely as possible, warms up, samples
//! until the confidence interval is tight enough or the budget is spent, and logs every sample
//! as it is taken. Analysis and reports come after, from what this module returns.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::backend::{Backend, LoadedModel, ModelInfo, Session};
use crate::criterion_format::BenchmarkId;
use crate::memory;
use crate::model::{detect_format, Cache, ModelError, ModelFormat, ModelSpec, Registry};
use crate::params::{Params, Point, SessionParams};
use crate::probe;
use crate::sampling::{Sampling, StopReason};
use crate::stats;
use crate::store::{CaseMeta, Event, EventLog};
use crate::workload::{run_once, run_once_marked, Measured, Workload};

pub use crate::suite::Suite;
pub use crate::tasks::run::{plan_tasks, PlannedTask};

/// A model as named by the suite or `--model`, resolved to a file only when it is run.
#[derive(Debug, Clone)]
pub struct ModelRef {
    pub name: String,
    pub format: Option<ModelFormat>,
    source: ModelSource,
}

#[derive(Debug, Clone)]
enum ModelSource {
    Path(PathBuf),
    Registry(Box<crate::model::RegistryEntry>),
    /// Neither a file nor a registry entry: planning goes on, running reports why.
    Unresolved(Unresolved),
}

/// Why a model name names no file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unresolved {
    /// The registry was read and said no (its error, kept as text: registry errors carry
    /// I/O errors, which cannot be cloned into every case that names the model).
    #[error("{0}")]
    Registry(String),
    #[error(
        "unknown model `{0}`: no such file, and no melt.toml registry found (set MELT_CONFIG)"
    )]
    NoRegistry(String),
}

/// Why a case or a task could not be measured. Its text goes into the run's errors.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    ModelFile(#[from] crate::model::ModelFileError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Unresolved(#[from] Unresolved),
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    #[error("workload {workload} needs {needed} context positions but n_ctx is {n_ctx}")]
    ContextTooSmall {
        workload: Workload,
        needed: usize,
        n_ctx: u32,
    },
    #[error(transparent)]
    Task(#[from] crate::tasks::TaskError),
}

impl ModelRef {
    /// A local file (given with `--model`).
    pub fn path(path: PathBuf) -> ModelRef {
        ModelRef {
            name: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string()),
            format: detect_format(&path).ok(),
            source: ModelSource::Path(path),
        }
    }

    /// A registry name, or a path if a file of that name exists.
    pub fn named(name: &str, registry: Option<&Registry>) -> ModelRef {
        let as_path = PathBuf::from(name);
        if as_path.is_file() {
            return ModelRef::path(as_path);
        }
        let source = match registry {
            Some(r) => match r.get(name) {
                Ok(e) => ModelSource::Registry(Box::new(e.clone())),
                Err(e) => ModelSource::Unresolved(Unresolved::Registry(e.to_string())),
            },
            None => ModelSource::Unresolved(Unresolved::NoRegistry(name.to_string())),
        };
        let format = match &source {
            ModelSource::Registry(e) => Some(e.format),
            _ => None,
        };
        ModelRef {
            name: name.to_string(),
            format,
            source,
        }
    }

    /// The verified file: hashed (a local file) or looked up in the cache (a registry model).
    pub fn resolve(&self, cache: &Cache) -> Result<ModelSpec, RunError> {
        Ok(match &self.source {
            ModelSource::Path(p) => ModelSpec::from_path(p)?,
            ModelSource::Registry(entry) => cache.lookup(&self.name, entry)?,
            ModelSource::Unresolved(why) => return Err(why.clone().into()),
        })
    }
}

/// One case of the plan: indices into the suite plus its criterion id.
#[derive(Debug, Clone)]
pub struct PlannedCase {
    pub model: usize,
    pub backend: usize,
    pub point: usize,
    pub workload: Workload,
    pub id: BenchmarkId,
}

impl PlannedCase {
    /// The context the case runs with: its point's, or what its workload needs.
    pub fn n_ctx(&self, points: &[Point]) -> u32 {
        let needed = self.workload.n_ctx_needed() as u32;
        points[self.point].params.session.n_ctx.unwrap_or(needed)
    }
}

/// Every (model, backend, point, workload) whose backend accepts the model's format, in run
/// order: model, backend, model parameters, session parameters, workload.
pub fn plan(
    models: &[ModelRef],
    backends: &[Box<dyn Backend>],
    points: &[Point],
    workloads: &[Workload],
) -> Vec<PlannedCase> {
    let mut cases = Vec::new();
    for (mi, m) in models.iter().enumerate() {
        for (bi, b) in backends.iter().enumerate() {
            // A model whose format is unknown is planned for every backend, so that running
            // it reports why it cannot be used instead of silently skipping it.
            if m.format.is_some_and(|f| !b.accepts(f)) {
                continue;
            }
            for (pi, p) in points.iter().enumerate() {
                for w in workloads {
                    let value = format!("{} {}", b.name(), p.label);
                    let id = BenchmarkId::new(&m.name, &w.name(), &value, w.tokens() as u64);
                    cases.push(PlannedCase {
                        model: mi,
                        backend: bi,
                        point: pi,
                        workload: *w,
                        id,
                    });
                }
            }
        }
    }
    cases
}

/// Everything measured for one case, before analysis.
#[derive(Debug, Clone)]
pub struct CaseRecord {
    pub id: BenchmarkId,
    pub backend: String,
    pub backend_version: String,
    pub model: ModelSpec,
    pub model_info: ModelInfo,
    pub params: Params,
    pub workload: Workload,
    pub load: Duration,
    pub context: Duration,
    pub samples: Vec<Measured>,
    pub peak_rss_bytes: Option<u64>,
    /// Whether the peak is this case's own (VmHWM reset) or the process's.
    pub peak_rss_per_case: bool,
    pub probes: Option<crate::probe::ProbeSummary>,
    pub stop_reason: StopReason,
}

/// Why a case (or a model's cases) could not be measured.
#[derive(Debug, Clone)]
pub struct CaseFailure {
    pub case: Option<String>,
    pub message: String,
}

/// Decides, after each sample, whether a case has enough.
pub fn should_stop(sampling: &Sampling, tok_s: &[f64], elapsed: Duration) -> Option<StopReason> {
    let n = tok_s.len();
    if let Some(d) = sampling.sustained {
        // Sustained mode measures drift, not a mean: it runs for its time, whatever the noise.
        return (elapsed >= d).then_some(StopReason::Sustained);
    }
    if let Some(fixed) = sampling.fixed_samples {
        return (n >= fixed).then_some(StopReason::SampleSize);
    }
    if n >= sampling.max_samples {
        return Some(StopReason::MaxSamples);
    }
    if n < sampling.min_samples {
        return None;
    }
    if stats::relative_ci_half_width(tok_s, 0.95) <= sampling.target_rel_ci {
        return Some(StopReason::CiTarget);
    }
    (elapsed >= sampling.measurement_time).then_some(StopReason::TimeBudget)
}

/// Drives the cases of a plan, streaming events to `log` and progress to stderr.
pub struct Runner<'a> {
    pub models: &'a [ModelRef],
    pub backends: &'a [Box<dyn Backend>],
    pub points: &'a [Point],
    pub sampling: Sampling,
    pub cache: Cache,
    pub log: &'a mut EventLog,
    /// The device's memory bandwidth, measured before the first probed case of the run.
    pub roof: Option<probe::bandwidth::Bandwidth>,
    /// The hottest zone when the run began, and whether a case has run since (`--cooldown`).
    pub start_temp_c: Option<f64>,
    pub cases_run: usize,
    /// Case k of n and the time left, on each case's line.
    pub progress: crate::progress::Progress,
    /// Test mode: consecutive cases of one load that differ at most in their context size run
    /// on one session (sized for the largest), cleared between them. Building an ONNX Runtime
    /// session reads and prepacks the whole model — seconds per case, most of
    /// `cargo test --benches`. A measured case always gets its own session: its creation time
    /// and its memory are part of what the case reports.
    pub share_sessions: bool,
}

/// The session test mode's cases share: made with `n_ctx`, the largest context the cases of
/// one load need, and remade only when other session parameters come.
struct SharedSession<'m> {
    n_ctx: u32,
    /// The parameters it was made with (its context size left out), and the session.
    current: Option<(SessionParams, Box<dyn Session + 'm>)>,
}

pub(crate) const PROMPT_SEED: u64 = 0x5eed;

impl Runner<'_> {
    /// `--cooldown`, before every case but the first: back near the run's start temperature.
    fn cool_down(&self, case: &str) -> Option<probe::thermal::CooledDown> {
        let (cfg, start) = (self.sampling.cooldown?, self.start_temp_c?);
        if self.cases_run == 0 {
            return None;
        }
        let (thermal, _) = probe::thermal::Thermal::detect(&self.sampling.sysroot);
        let target = start + cfg.tolerance_c;
        let c = thermal.cool_down(target, cfg.max_wait, Duration::from_secs(1))?;
        if c.waited_s >= 1.0 || !c.reached {
            eprintln!(
                "melt: {case}: cooled from {:.1} to {:.1} °C in {:.0} s{}",
                c.from_c,
                c.to_c,
                c.waited_s,
                match (&c.unreadable_zone, c.reached) {
                    (Some(z), _) => format!(
                        " — but zone `{z}` stayed unreadable, so how warm is not known; \
                         measuring anyway"
                    ),
                    (None, false) => format!(" — not down to {target:.1} °C; measuring warm"),
                    (None, true) => String::new(),
                }
            );
        }
        Some(c)
    }

    pub(crate) fn emit(&mut self, event: Event) {
        if let Err(e) = self.log.write(&event) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                // --message-format json: whoever read the events is gone (a lost device connection).
                // Measuring on for nobody would only keep the device busy; every sample is
                // in this run's own samples.jsonl, which the line above has just flushed.
                eprintln!(
                    "melt: the event stream's reader went away; stopping (samples kept in {})",
                    self.log.path().display()
                );
                std::process::exit(3);
            }
            eprintln!("melt: cannot append to {}: {e}", self.log.path().display());
        }
    }

    pub(crate) fn fail(
        &mut self,
        failures: &mut Vec<CaseFailure>,
        case: Option<String>,
        message: String,
    ) {
        eprintln!(
            "melt: error{}: {message}",
            case.as_deref()
                .map(|c| format!(" in {c}"))
                .unwrap_or_default()
        );
        self.emit(Event::Error {
            case: case.clone(),
            message: message.clone(),
        });
        failures.push(CaseFailure { case, message });
    }

    /// Runs `cases` (in plan order). A failing model or case is recorded and the rest go on.
    pub fn run(&mut self, cases: &[PlannedCase]) -> (Vec<CaseRecord>, Vec<CaseFailure>) {
        let mut records = Vec::new();
        let mut failures = Vec::new();
        if self.sampling.cooldown.is_some() {
            let (thermal, _) = probe::thermal::Thermal::detect(&self.sampling.sysroot);
            self.start_temp_c = thermal.detected_hottest_c();
            match self.start_temp_c {
                Some(t) => eprintln!("melt: --cooldown: the run starts at {t:.1} °C"),
                None => eprintln!(
                    "melt: --cooldown: unavailable: no thermal zone readable under {}",
                    self.sampling.sysroot.join("sys/class/thermal").display()
                ),
            }
        }
        let mut i = 0;
        while i < cases.len() {
            // Cases sharing a model file.
            let model_idx = cases[i].model;
            let end = cases[i..]
                .iter()
                .position(|c| c.model != model_idx)
                .map_or(cases.len(), |n| i + n);
            let group = &cases[i..end];
            i = end;
            let spec = match self.models[model_idx].resolve(&self.cache) {
                Ok(s) => s,
                Err(e) => {
                    let message = e.to_string();
                    for c in group {
                        self.fail(&mut failures, Some(c.id.full_id.clone()), message.clone());
                    }
                    continue;
                }
            };
            self.run_model(&spec, group, &mut records, &mut failures);
        }
        (records, failures)
    }

    fn run_model(
        &mut self,
        spec: &ModelSpec,
        cases: &[PlannedCase],
        records: &mut Vec<CaseRecord>,
        failures: &mut Vec<CaseFailure>,
    ) {
        let mut i = 0;
        while i < cases.len() {
            // Consecutive cases with the same backend and model parameters share one load.
            let (b, mp) = (
                cases[i].backend,
                self.points[cases[i].point].params.model.clone(),
            );
            let end = cases[i..]
                .iter()
                .position(|c| c.backend != b || self.points[c.point].params.model != mp)
                .map_or(cases.len(), |n| i + n);
            let group = &cases[i..end];
            i = end;
            let backend = &self.backends[b];
            eprintln!(
                "melt: loading {} with {}",
                spec.path.display(),
                backend.name()
            );
            // The load is a phase of its own for the probes: its memory and energy are
            // reported with each case that used it.
            let start = Instant::now();
            let sampler = self.sampling.probe_period.map(|period| {
                let probes = probe::Probes::detect(&self.sampling.sysroot);
                probe::Sampler::start(probes, period, start)
            });
            let loaded = backend.load(spec, &mp);
            let load = start.elapsed();
            let load_probe = sampler.map(|s| {
                let (probes, series, _, _) = s.stop();
                probe::summarize_load(&probes, &series, load.as_secs_f64())
            });
            let loaded = match loaded {
                Ok(l) => l,
                Err(e) => {
                    for c in group {
                        self.fail(failures, Some(c.id.full_id.clone()), e.to_string());
                    }
                    continue;
                }
            };
            let mut shared = SharedSession {
                n_ctx: group.iter().map(|c| self.n_ctx(c)).max().unwrap_or(0),
                current: None,
            };
            for case in group {
                let slot = self.share_sessions.then_some(&mut shared);
                let ran = self.run_case(spec, loaded.as_ref(), (load, &load_probe), case, slot);
                match ran {
                    Ok(r) => records.push(r),
                    Err(e) => self.fail(failures, Some(case.id.full_id.clone()), e.to_string()),
                }
            }
        }
    }

    fn n_ctx(&self, case: &PlannedCase) -> u32 {
        case.n_ctx(self.points)
    }

    /// The shared session when there is one (remade if `params` differ from its own in more
    /// than the context size), or a fresh one in `fresh`.
    fn session_for<'m, 's>(
        loaded: &'m dyn LoadedModel,
        params: &SessionParams,
        shared: Option<&'s mut SharedSession<'m>>,
        fresh: &'s mut Option<Box<dyn Session + 'm>>,
    ) -> Result<&'s mut (dyn Session + 'm), crate::backend::BackendError> {
        let Some(shared) = shared else {
            return Ok(fresh.insert(loaded.session(params)?).as_mut());
        };
        let key = SessionParams {
            n_ctx: None,
            ..params.clone()
        };
        if shared.current.as_ref().is_none_or(|(made, _)| *made != key) {
            // The old session goes first: two copies of a large model may not fit.
            shared.current = None;
            let session = loaded.session(&SessionParams {
                n_ctx: Some(shared.n_ctx.max(params.n_ctx.unwrap_or(0))),
                ..params.clone()
            })?;
            shared.current = Some((key, session));
        }
        Ok(shared.current.as_mut().expect("just made").1.as_mut())
    }

    fn run_case<'m>(
        &mut self,
        spec: &ModelSpec,
        loaded: &'m dyn LoadedModel,
        (load, load_probe): (Duration, &Option<probe::LoadProbe>),
        case: &PlannedCase,
        shared: Option<&mut SharedSession<'m>>,
    ) -> Result<CaseRecord, RunError> {
        let backend = &self.backends[case.backend];
        let mut params = self.points[case.point].params.clone();
        let w = case.workload;
        let (needed, n_ctx) = (w.n_ctx_needed(), self.n_ctx(case));
        if (n_ctx as usize) < needed {
            return Err(RunError::ContextTooSmall {
                workload: w,
                needed,
                n_ctx,
            });
        }
        params.session.n_ctx = Some(n_ctx);
        let info = loaded.info();
        self.emit(Event::CaseStart {
            case: case.id.full_id.clone(),
            backend: backend.name().to_string(),
            model: spec.name.clone(),
            params: params.clone(),
            workload: w,
        });

        if self.sampling.probe_period.is_some() && self.roof.is_none() {
            // Once per device (cached with its description for a week) or per run with
            // --remeasure-bandwidth; before the case's memory peak is reset, so the arrays
            // never count in it.
            let description = probe::bandwidth::device_description(&self.sampling.sysroot);
            let (roof, cached) = probe::bandwidth::cached_or_measure(
                &self.cache.root().join("devices"),
                &description,
                probe::bandwidth::MAX_AGE,
                self.sampling.remeasure_bandwidth,
            );
            eprintln!(
                "melt: memory bandwidth {:.1} GB/s triad, {:.1} GB/s read ({} threads{}; {description})",
                roof.triad_gbs,
                roof.read_gbs,
                roof.threads,
                if cached {
                    "; cached, --remeasure-bandwidth measures again"
                } else {
                    ""
                }
            );
            self.roof = Some(roof);
        }
        let cooled = self.cool_down(&case.id.full_id);
        self.cases_run += 1;
        let per_case = memory::reset_peak();
        let start = Instant::now();
        let mut fresh = None;
        let session = Self::session_for(loaded, &params.session, shared, &mut fresh)?;
        let context = start.elapsed();
        let n_vocab = info.n_vocab;
        let label = &case.id.full_id;

        // Warm-up: at least `min_warm_up_runs` (one unless testing), then until the warm-up
        // time is spent.
        let warm_start = Instant::now();
        let mut index = 0;
        while index < self.sampling.min_warm_up_runs || warm_start.elapsed() < self.sampling.warm_up
        {
            let m = run_once(&w, &mut *session, n_vocab, PROMPT_SEED)?;
            self.emit(Event::Sample {
                case: label.clone(),
                index,
                warmup: true,
                measured: m,
            });
            index += 1;
        }

        let interactive = std::io::stderr().is_terminal();
        let mut samples = Vec::new();
        let mut tok_s = Vec::new();
        let measure_start = Instant::now();
        let measure_start_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // The probes watch the measured runs (and the load, above), not the context or the
        // warm-up.
        let probing = self.sampling.probe_period.map(|period| {
            let log = probe::PhaseLog::new(measure_start);
            let probes = probe::Probes::detect(&self.sampling.sysroot);
            (log, probe::Sampler::start(probes, period, measure_start))
        });
        let stop_reason = loop {
            let phases = probing.as_ref().map(|(log, _)| log);
            let at_ns = measure_start.elapsed().as_nanos() as u64;
            let mut m = run_once_marked(&w, &mut *session, n_vocab, PROMPT_SEED, phases)?;
            m.at_ns = Some(at_ns);
            let run_end = Duration::from_nanos(at_ns + m.ns);
            tok_s.push(w.tokens() as f64 / (m.ns.max(1) as f64 / 1e9));
            self.emit(Event::Sample {
                case: label.clone(),
                index,
                warmup: false,
                measured: m.clone(),
            });
            index += 1;
            samples.push(m);
            // A time budget counts wall time, bookkeeping included; a sustained case runs
            // until its measured runs span the duration — what its `duration_s` reports (on
            // a busy machine the time after the last run made it fall short by a hair).
            let elapsed = match self.sampling.sustained {
                Some(_) => run_end,
                None => measure_start.elapsed(),
            };
            let stop = should_stop(&self.sampling, &tok_s, elapsed);
            // Live progress on a terminal; one line per case in a log.
            if interactive || stop.is_some() {
                let half = stats::relative_ci_half_width(&tok_s, 0.95);
                let half = if half.is_finite() {
                    format!("{:.1}%", half * 100.0)
                } else {
                    "?".into()
                };
                let line = format!(
                    "melt: {} {label}: {} samples, {:.2} tok/s ±{half}",
                    self.progress.label(self.cases_run),
                    tok_s.len(),
                    stats::mean(&tok_s)
                );
                match stop {
                    Some(reason) if interactive => eprintln!("\r\x1b[2K{line} ({reason})"),
                    Some(reason) => eprintln!("{line} ({reason})"),
                    None => eprint!("\r\x1b[2K{line}"),
                }
                let _ = std::io::stderr().flush();
            }
            if let Some(reason) = stop {
                break reason;
            }
        };
        let probes = probing.map(|(log, sampler)| {
            let end = measure_start.elapsed().as_nanos() as u64;
            let (probes, series, cost, period) = sampler.stop();
            let n = samples.len() as u64;
            let tokens = (n * w.prefill as u64, n * w.decode as u64);
            let mut s = probe::summarize(&probes, series, cost, period, &log.marks(), end, tokens);
            s.memory_bandwidth = self.roof;
            s.cooldown = cooled;
            s.epoch_unix_ns = measure_start_unix;
            s.load = load_probe.clone();
            s.memory.load = load_probe.as_ref().and_then(|l| l.memory);
            if let Some((mapped, resident)) = probe::model_mapping(&probes.root, &spec.path) {
                s.model_mapped_bytes = Some(mapped);
                s.model_resident_bytes = Some(resident);
            }
            s
        });
        let peak_rss_bytes = memory::peak_rss_bytes();
        drop(fresh);
        let meta = CaseMeta {
            id: case.id.clone(),
            backend_version: backend.version(),
            model: spec.clone(),
            model_info: info,
            load_ns: load.as_nanos() as u64,
            context_ns: context.as_nanos() as u64,
            peak_rss_bytes,
            peak_rss_per_case: per_case,
            probes,
        };
        self.emit(Event::CaseEnd {
            case: label.clone(),
            samples: samples.len(),
            stop_reason,
            meta: Some(Box::new(meta.clone())),
        });
        Ok(CaseRecord::from_events(
            meta,
            backend.name().to_string(),
            params,
            w,
            samples,
            stop_reason,
        ))
    }
}

impl CaseRecord {
    /// A record from what a case's `case_start` and `case_end` events carry: how the runner
    /// builds its own, and how a host rebuilds a device's from the stream.
    pub fn from_events(
        meta: CaseMeta,
        backend: String,
        params: Params,
        workload: Workload,
        samples: Vec<Measured>,
        stop_reason: StopReason,
    ) -> CaseRecord {
        CaseRecord {
            id: meta.id,
            backend,
            backend_version: meta.backend_version,
            model: meta.model,
            model_info: meta.model_info,
            params,
            workload,
            load: Duration::from_nanos(meta.load_ns),
            context: Duration::from_nanos(meta.context_ns),
            samples,
            peak_rss_bytes: meta.peak_rss_bytes,
            peak_rss_per_case: meta.peak_rss_per_case,
            probes: meta.probes,
            stop_reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopping_rule() {
        let s = Sampling {
            min_samples: 3,
            max_samples: 6,
            target_rel_ci: 0.02,
            ..Sampling::default()
        };
        let zero = Duration::ZERO;
        assert_eq!(
            should_stop(&s, &[100.0, 100.0], zero),
            None,
            "below the minimum"
        );
        assert_eq!(
            should_stop(&s, &[100.0, 100.1, 99.9], zero),
            Some(StopReason::CiTarget)
        );
        let noisy = [100.0, 120.0, 80.0, 110.0];
        assert_eq!(should_stop(&s, &noisy, zero), None);
        assert_eq!(
            should_stop(&s, &noisy, Duration::from_secs(60)),
            Some(StopReason::TimeBudget)
        );
        assert_eq!(
            should_stop(&s, &[100.0, 150.0, 50.0, 120.0, 80.0, 100.0], zero),
            Some(StopReason::MaxSamples)
        );
        let sustained = Sampling {
            sustained: Some(Duration::from_secs(60)),
            ..s.clone()
        };
        assert_eq!(should_stop(&sustained, &noisy, zero), None);
        assert_eq!(should_stop(&sustained, &[1.0; 500], zero), None, "past max");
        assert_eq!(
            should_stop(&sustained, &[1.0], Duration::from_secs(60)),
            Some(StopReason::Sustained)
        );
        let fixed = Sampling {
            fixed_samples: Some(2),
            ..s
        };
        assert_eq!(should_stop(&fixed, &[1.0], Duration::from_secs(99)), None);
        assert_eq!(
            should_stop(&fixed, &[1.0, 1.0], zero),
            Some(StopReason::SampleSize)
        );
    }
}
