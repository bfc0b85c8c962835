//! `cargo melt bench --target DEVICE`: push the bench binary, its libraries and its models
//! to each device, run it headless with `--bench --message-format json`, and turn the stream
//! into results on the host — criterion files, history, summary, HTML — with the device's
//! name in every case id.
//!
//! The stream *is* the pull: each event is appended to the host's
//! `target/melt/runs/<id>/samples.jsonl` the moment it arrives, so a device lost mid-run
//! keeps every sample it sent, and `--resume` runs only the cases that did not finish.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::MultiProgress;
use melt_bench::criterion_format::make_filename_safe;
use melt_bench::driver::{analysis_config, replay, Finish, Outcome, Results};
use melt_bench::store::{read_events, CaseError, Event, EventLog, Layout, RunDir};

use super::shell::quote;
use super::Device;

mod args;
mod deploy;
mod launch;
mod progress;
mod script;
mod state;
pub mod workers;

pub use args::*;
pub use deploy::*;
use launch::*;
use progress::*;
pub use script::*;
use state::*;

/// What `bench --target` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: String,
    /// Continue the device's latest unfinished run.
    pub resume: bool,
    /// A case that sends nothing for this long is killed.
    pub case_timeout: Duration,
    pub cross: bool,
    /// A bench binary built already (skips the build; its triple must be the devices').
    pub bench_bin: Option<PathBuf>,
    /// The bench target built for the devices (`None` with `bench_bin`).
    pub bench: Option<crate::workspace::BenchTarget>,
    /// Arguments for the bench binary.
    pub args: Vec<String>,
    /// Back-to-back runs of the suite, each recorded on its own (the history then has the
    /// run-to-run spread the gate widens its intervals by).
    pub rounds: usize,
    /// Cargo features of the bench build (`libtorch`: built against, and shipped with, the
    /// libtorch `setup libtorch` made for the device's triple).
    pub features: Vec<String>,
}

/// What one device's run came to.
pub struct DeviceRun {
    pub device: String,
    pub run_dir: Option<PathBuf>,
    pub outcome: Option<Outcome>,
    /// 0 every case measured, 1 some case failed, 2 the run could not complete.
    pub code: i32,
    pub message: Option<String>,
}

/// Everything one device needs; run on its own thread.
pub struct DeviceJob<'a> {
    pub device: &'a Device,
    pub payload: Payload<'a>,
    pub args: &'a DeviceArgs,
    pub options: &'a Options,
    pub layout: Layout,
    pub git_dir: PathBuf,
    pub resolve: &'a Resolve<'a>,
}

/// A registry model's file on the host, fetched if need be, for a model name the device's
/// bench lists (`None`: not a registry model — a `--model` file, pushed with the payload).
pub type Resolve<'a> = dyn Fn(&str) -> Result<Option<ModelFile>> + Sync + 'a;

impl DeviceJob<'_> {
    pub fn run(&self, mp: &MultiProgress) -> DeviceRun {
        let mut run_dir = None;
        match self.try_run(mp, &mut run_dir) {
            Ok(outcome) => {
                let code = i32::from(outcome.failed());
                DeviceRun {
                    device: self.device.name.clone(),
                    run_dir,
                    outcome: Some(outcome),
                    code,
                    message: None,
                }
            }
            Err(e) => DeviceRun {
                device: self.device.name.clone(),
                run_dir,
                outcome: None,
                code: 2,
                message: Some(format!("{e:#}")),
            },
        }
    }

    fn try_run(&self, mp: &MultiProgress, run_dir_out: &mut Option<PathBuf>) -> Result<Outcome> {
        self.device.transport.connect()?;
        let mut props = super::probe(self.device)?;
        // The run script changes into the work directory: every path in it is absolute, as
        // the device resolved a relative workdir (ssh's default `melt`, in $HOME).
        let resolved = super::Device {
            workdir: props
                .remove("workdir")
                .filter(|w| w.starts_with('/'))
                .unwrap_or_else(|| self.device.workdir.clone()),
            ..self.device.clone()
        };
        let d = &resolved;
        let t = &d.transport;
        let remote_bin = deploy(d, &self.payload, mp)?;

        // The host's record of this run: a new one, or the one being resumed.
        let (run_dir, resumed) = if self.options.resume {
            let dir = unfinished_run(&self.layout, &d.name).with_context(|| {
                format!(
                    "nothing to resume for device `{}`: no unfinished run of it under {}",
                    d.name,
                    self.layout.runs_dir().display()
                )
            })?;
            (dir, true)
        } else {
            let tag = make_filename_safe(&d.name).replace(' ', "_");
            let dir = self.layout.create_run_dir(&tag).with_context(|| {
                format!("a run directory under {}", self.layout.runs_dir().display())
            })?;
            (dir.path().to_path_buf(), false)
        };
        *run_dir_out = Some(run_dir.clone());
        std::fs::create_dir_all(&run_dir).with_context(|| format!("{}", run_dir.display()))?;
        let run = RunDir::at(run_dir.clone());
        let run_id = run.id();
        let samples = run.samples_path();
        let mut state = DeviceRunState {
            device: d.name.clone(),
            state: RunState::Running,
            props: props.clone(),
            bench_args: self.args.given.clone(),
        };
        write_state(&run_dir, &state)?;
        let mut skip: BTreeSet<String> = if resumed {
            let events = read_events(&samples)?;
            replay(&events).completed()
        } else {
            BTreeSet::new()
        };
        let mut log =
            EventLog::create(&samples).with_context(|| format!("{}", samples.display()))?;

        // The planned cases, for the progress bar and to know when nothing is left.
        let list_args = self.args.for_device(d, LIST_MODE, &BTreeSet::new());
        let Listed {
            ids: planned,
            models,
        } = list_on_device(d, &remote_bin, &list_args, &run_id)?;
        if planned.is_empty() {
            bail!("the bench binary on `{}` lists no case", d.name);
        }
        // The registry models that the selected cases use, fetched on the host now, and no
        // other (a llama.cpp-only run does not push a 1 GB ONNX export).
        let used = models
            .iter()
            .filter_map(|m| (self.resolve)(m).transpose())
            .collect::<Result<Vec<ModelFile>>>()?;
        push_models(d, &used.iter().collect::<Vec<_>>(), mp)?;
        let mut progress = Progress::new(mp, &d.name, planned.len());
        progress.cases_done = planned.intersection(&skip).count();
        progress.bar.set_position(progress.cases_done as u64);
        if resumed {
            progress.say(&format!(
                "melt: [{}] resuming {}: {} of {} cases done",
                d.name,
                run_dir.display(),
                progress.cases_done,
                planned.len()
            ));
        }

        let pid_file = format!("{}/run/{run_id}.pid", d.workdir);
        let stderr_log = run_dir.join("device-stderr.log");
        let mut device_code = 0;
        let mut stream_problems = Vec::new();
        while planned.iter().any(|c| !skip.contains(c)) {
            let script = run_script(
                d,
                &remote_bin,
                &self.args.for_device(d, RUN_MODE, &skip),
                &pid_file,
            );
            let launched = launch(
                d,
                &script,
                &mut log,
                &stderr_log,
                self.options.case_timeout,
                &mut progress,
            )?;
            let tail = launched.tail.clone();
            match launched.ended {
                Ended::Exited(code) => {
                    device_code = code;
                    match pull_and_check(d, &launched, &run_dir) {
                        Ok(None) => {}
                        Ok(Some(problem)) => stream_problems.push(problem),
                        Err(e) => {
                            stream_problems.push(format!("cannot pull the device's log: {e:#}"))
                        }
                    }
                    if code == 2 {
                        bail!(
                            "the bench binary on `{}` could not run (exit 2):\n  {}",
                            d.name,
                            tail.join("\n  ")
                        );
                    }
                    break;
                }
                Ended::TimedOut { case } => {
                    // Stop the hung process on the device, record why, go on without it.
                    let _ = t.output(&format!(
                        "p=$(cat {f} 2>/dev/null) && kill \"$p\" 2>/dev/null; sleep 1; kill -9 \"$p\" 2>/dev/null; rm -f {f}; true",
                        f = quote(&pid_file)
                    ));
                    let message = format!(
                        "no event for {} s: killed on the device (--case-timeout)",
                        self.options.case_timeout.as_secs_f64()
                    );
                    log.write(&Event::Error {
                        case: case.clone(),
                        message: message.clone(),
                    })?;
                    progress.say(&format!(
                        "melt: [{}] {} {message}",
                        d.name,
                        case.as_deref().unwrap_or("run")
                    ));
                    match case {
                        Some(c) => {
                            skip.insert(c);
                        }
                        None => bail!(
                            "`{}` sent nothing for {} s",
                            d.name,
                            self.options.case_timeout.as_secs()
                        ),
                    }
                    skip.extend(replay(&read_events(&samples)?).completed());
                }
                Ended::Lost { why } => {
                    state.state = RunState::Interrupted;
                    write_state(&run_dir, &state)?;
                    progress.bar.abandon_with_message("connection lost");
                    let done = replay(&read_events(&samples)?).completed().len();
                    bail!(
                        "lost `{}` mid-run: {why}\n  {}\n  {done} finished case(s) and every sample streamed so far are kept in {}; \
                         `cargo melt bench --target {} --resume` runs the rest",
                        d.name,
                        tail.join("\n  "),
                        samples.display(),
                        d.name
                    );
                }
            }
        }
        progress.bar.finish_and_clear();

        let events = read_events(&samples)?;
        let replayed = replay(&events);
        let finish = Finish {
            layout: self.layout.clone(),
            config: analysis_config(&self.args.parsed),
            baseline: self.args.parsed.baseline.clone(),
            git_dir: self.git_dir.clone(),
            device: Some(d.name.clone()),
            device_props: props,
            // The host reports once, from the stream: history and page here, not on the device.
            reports: if self.args.parsed.noplot {
                melt_report::host_reports().without_plots()
            } else {
                melt_report::host_reports()
            },
        };
        let mut errors: Vec<CaseError> = replayed.errors;
        errors.extend(stream_problems.into_iter().map(|message| CaseError {
            case: None,
            message,
        }));
        if device_code != 0 && errors.is_empty() {
            errors.push(CaseError {
                case: None,
                message: format!("the bench binary on `{}` exited with {device_code}", d.name),
            });
        }
        let host = replayed.host.unwrap_or_default();
        if let Some(why) = &host.emulated {
            progress.say(&format!("melt: [{}] emulated: {why}", d.name));
        }
        let outcome = finish.run(
            &run,
            host,
            Results {
                records: replayed.records,
                tasks: replayed.tasks,
                errors,
            },
            &mut log,
        );
        state.state = RunState::Complete;
        write_state(&run_dir, &state)?;
        Ok(outcome)
    }
}

/// The bench arguments of `--resume`: those the unfinished runs of `devices` were started
/// with (see `state::resumed_args`), before any model is fetched for them.
pub fn resumed_args(
    devices: &[&Device],
    given: &[String],
    target_dir: &Path,
) -> Result<Vec<String>> {
    // Only `--target-dir` is needed here: the bench binary's own parser, without hashing
    // the `--model` files (bench_devices does that once, for the arguments resumed).
    let parsed = melt_bench::cli::Args::parse(given.iter().cloned()).context("bench arguments")?;
    let layout = Layout {
        target_dir: parsed
            .target_dir
            .unwrap_or_else(|| target_dir.to_path_buf()),
    };
    let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
    state::resumed_args(&layout, &names, given)
}

/// What the bench binary at `remote_bin` on `d` lists for `list_args` (which carry
/// [`LIST_MODE`]): its cases and the models they use.
pub(crate) fn list_on_device(
    d: &Device,
    remote_bin: &str,
    list_args: &[String],
    tag: &str,
) -> Result<Listed> {
    let t = &d.transport;
    let list_script = run_script(
        d,
        remote_bin,
        list_args,
        &format!("{}/run/{tag}.list.pid", d.workdir),
    );
    let list_out = t
        .shell(&list_script)
        .stdin(Stdio::null())
        .output()
        .context("listing the cases on the device")?;
    let listing = String::from_utf8_lossy(&list_out.stdout);
    let code = listing
        .lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix(EXIT_MARK))
        .and_then(|c| c.trim().parse::<i32>().ok());
    if code != Some(0) {
        bail!(
            "the bench binary on `{}` could not list its cases ({}):\n  {}",
            d.name,
            code.map_or_else(
                || format!("{} failed", t.describe()),
                |c| format!("exit {c}")
            ),
            String::from_utf8_lossy(&list_out.stderr)
                .trim()
                .replace('\n', "\n  ")
        );
    }
    listed(&listing).with_context(|| format!("the case list from the bench binary on `{}`", d.name))
}

/// Runs the suite on every device of `devices` at once, one thread (and one device-side
/// process) per device, each independent of the others. Returns the exit code: 0 all
/// measured, 1 some case failed, 2 some device could not run or was lost.
pub fn bench_devices(
    opts: &Options,
    devices: &[&Device],
    config: &Path,
    resolve: &Resolve<'_>,
    target_dir: &Path,
) -> Result<i32> {
    let args = DeviceArgs::parse(&opts.args)?;
    let layout = Layout {
        target_dir: args
            .parsed
            .target_dir
            .clone()
            .unwrap_or_else(|| target_dir.to_path_buf()),
    };
    let models = args.models.clone();
    let data: Vec<ModelFile> = args.data.iter().map(|(_, f)| f.clone()).collect();
    let libtorch = |triple: &str| -> Result<Option<PathBuf>> {
        if !opts.features.iter().any(|f| f == "libtorch") {
            return Ok(None);
        }
        let host = super::build::Toolchain::detect()?.host_triple;
        crate::runtimes::setup_libtorch(triple, &host).map(Some)
    };
    // One build per triple, before any device is touched.
    let mut builds: BTreeMap<String, (PathBuf, Vec<PathBuf>)> = BTreeMap::new();
    for d in devices {
        if builds.contains_key(&d.triple) {
            continue;
        }
        let tc = match &d.rustc {
            Some(rustc) => super::build::Toolchain::detect_with(Some(rustc))
                .with_context(|| format!("device `{}`: its `rustc`", d.name))?,
            None => super::build::Toolchain::detect()?,
        };
        let linked_libtorch = libtorch(&d.triple)?;
        let built = match &opts.bench_bin {
            Some(bin) => {
                if !bin.is_file() {
                    bail!("--bench-bin {}: no such file", bin.display());
                }
                // Built elsewhere for this triple: it needs what a build here would ship.
                (
                    bin.clone(),
                    super::build::gnu_runtime(&d.triple, &tc.host_triple)?,
                )
            }
            None => {
                let bench = opts.bench.as_ref().context("no bench target to build")?;
                let mut plan = super::build::plan(&tc, &d.triple, bench, d.api_level, opts.cross)?;
                plan.args.extend(device_features(bench, &opts.features));
                if let Some(dir) = &linked_libtorch {
                    plan.env.extend(
                        crate::runtimes::libtorch_env(dir)
                            .map(|(k, v)| (k.to_string(), v.display().to_string())),
                    );
                }
                super::build::run(&plan, &bench.name)?
            }
        };
        let mut built = built;
        // libtorch is linked: its libraries go beside the binary (LD_LIBRARY_PATH there).
        if let Some(dir) = &linked_libtorch {
            built
                .1
                .extend(crate::runtimes::libtorch_runtime_libs(dir, &d.triple));
        }
        // The ONNX Runtime backend opens its library at run time: ship it when it was fetched
        // for this triple (`cargo melt setup onnxruntime --triple T`).
        if let Some(lib) = crate::runtimes::cached_onnxruntime(&d.triple, &tc.host_triple) {
            built.1.push(lib);
        }
        builds.insert(d.triple.clone(), built);
    }
    let git_dir = std::env::current_dir().unwrap_or_default();
    let mp = MultiProgress::new();
    let jobs: Vec<DeviceJob> = devices
        .iter()
        .map(|d| {
            let (binary, libs) = &builds[&d.triple];
            DeviceJob {
                device: d,
                payload: Payload {
                    binary,
                    libs,
                    config,
                    models: &models,
                    data: &data,
                },
                args: &args,
                options: opts,
                layout: layout.clone(),
                git_dir: git_dir.clone(),
                resolve,
            }
        })
        .collect();
    let runs: Vec<DeviceRun> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs.iter().map(|j| s.spawn(|| j.run(&mp))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a device thread panicked"))
            .collect()
    });
    let mut code = 0;
    for r in &runs {
        code = code.max(r.code);
        match (&r.outcome, &r.message) {
            (Some(out), _) => {
                println!(
                    "\n## {}\n\n{}",
                    r.device,
                    melt_bench::markdown::aligned(&out.table)
                );
                for e in &out.summary.errors {
                    eprintln!(
                        "melt: [{}] FAILED {}: {}",
                        r.device,
                        e.case.as_deref().unwrap_or("run"),
                        e.message
                    );
                }
                eprintln!("melt: [{}] results in {}", r.device, out.run_dir.display());
            }
            (None, Some(m)) => match &r.run_dir {
                Some(dir) => eprintln!(
                    "melt: [{}] error: {m}\n  (run directory: {})",
                    r.device,
                    dir.display()
                ),
                None => eprintln!("melt: [{}] error: {m}", r.device),
            },
            (None, None) => {}
        }
    }
    // The latest run of every device (the host's too) side by side, printed when there is
    // another device's to show; the page always.
    if runs.iter().any(|r| r.outcome.is_some()) {
        let merged = crate::runs::report(
            &crate::cli::Report {
                runs: Vec::new(),
                html: true,
                open: false,
                history: None,
                device: None,
                case: None,
                since: None,
            },
            &layout.target_dir,
        );
        let devices = crate::runs::latest_per_device(&layout.target_dir).map_or(0, |r| r.len());
        match merged {
            Ok(table) if devices > runs.len() => {
                println!(
                    "\n## Beside the latest run of every other device\n\n{}",
                    melt_bench::markdown::aligned(&table)
                )
            }
            Ok(_) => {}
            Err(e) => eprintln!("melt: cannot write the merged report: {e:#}"),
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests;
