//! `gate --against REV` and `compare REV [REV2]`: two builds of one bench, measured in
//! alternation on this machine and judged pair by pair (melt_report::gate::paired).
//!
//! The pipeline: pick the bench target, build both sides (build.rs), fetch the models they
//! list, start a worker for each (worker.rs), check that the machine is quiet enough, then for
//! every case both sides have: one unmeasured turn each (the load and warm-up), and pairs —
//! A B, B A, … — until each gated metric has a verdict or the case's budget is spent. The
//! table goes to stdout (and `$GITHUB_STEP_SUMMARY`), everything to
//! `target/melt/gate/<time>/summary.json`.

mod build;
pub(crate) use build::{commit_of, git};
mod worker;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use melt_bench::probe::noise::{self, Noise};
use melt_bench::worker::Sample;
use melt_report::gate::paired::{self, Design, Next, PairedSummary, Rule, Side};
use melt_report::gate::{self, GateConfig};

use crate::workspace::Workspace;
use worker::Worker;

pub struct Options {
    /// The baseline revision.
    pub a: String,
    /// The candidate revision; `None` is the working tree.
    pub b: Option<String>,
    /// `gate` (verdicts and their exit codes) or `compare` (the changes only).
    pub judge: bool,
    pub lenient: bool,
    pub paired: crate::cli::Paired,
    /// Where `melt/gate/` goes [default: the workspace's target directory].
    pub target_dir: Option<PathBuf>,
}

/// The window of each noise check, seconds.
const NOISE_WINDOW_S: f64 = 1.5;

/// Runs the comparison; returns the exit code.
pub fn run(opts: &Options, config: &GateConfig) -> Result<i32> {
    let p = &opts.paired;
    let ws = Workspace::discover()?;
    let target = &ws.select_one(&p.packages, &p.benches, "--against")?;
    crate::prereq::ensure()?;
    let mut workers = if p.target == "host" {
        host_workers(opts, &ws, target)?
    } else {
        device_workers(opts, &ws, target)?
    };
    run_workers(opts, config, &ws, &mut workers)
}

/// Both sides built for this machine, their models fetched, their workers started.
fn host_workers(
    opts: &Options,
    ws: &Workspace,
    target: &crate::workspace::BenchTarget,
) -> Result<[Worker; 2]> {
    let p = &opts.paired;
    let env = crate::bench::host_env(ws, &p.features)?;
    // Every build from the working tree's package directory, so the same cargo configuration
    // applies to both sides (from inside the worktree, which sits in the repository, a
    // config of the repository would be read twice and its rustflags doubled).
    let build = |t: &crate::workspace::BenchTarget, dir: Option<&std::path::Path>| {
        let mut env = env.clone();
        if let Some(dir) = dir {
            env.push(("CARGO_TARGET_DIR".into(), dir.into()));
        }
        crate::bench::build_bench(&target.package_dir, t, &env, &p.features)
            .map(|e| (e, Vec::new()))
    };
    // This machine's own target directory holds the cache, so its triple goes without saying
    // (and host_env has run rustc for it already).
    let setting = format!("host {:?} {env:?}", p.features);
    let (a, b) = sides(opts, ws, target, &setting, &build)?;
    for side in [&a, &b] {
        crate::bench::ready_models(&side.exe, &side.target, &p.args)
            .with_context(|| format!("the models of {}", side.label))?;
    }
    // Both from the working tree's package directory: the same environment for both sides
    // (a revision's binary finds its melt.toml from the worktree it was built in).
    let start = |side: &build::Side| {
        let mut cmd = std::process::Command::new(&side.exe);
        cmd.current_dir(&target.package_dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(["--bench", "--worker"])
            .args(&p.args);
        Worker::start(&side.label, cmd, p.max_time)
    };
    Ok([start(&a)?, start(&b)?])
}

/// Both sides built for the device `--target` names, pushed there with their models, their
/// workers started there over its transport.
fn device_workers(
    opts: &Options,
    ws: &Workspace,
    target: &crate::workspace::BenchTarget,
) -> Result<[Worker; 2]> {
    use crate::devices::{self, build::Toolchain, run::workers};
    let p = &opts.paired;
    if p.features.iter().any(|f| f == "libtorch") {
        bail!(
            "--against on a device builds without libtorch for now; leave --features libtorch out"
        );
    }
    let (config, all) = crate::inventory()?;
    let [d] = devices::select(&all, &p.target)?[..] else {
        bail!(
            "--against measures on one device; `{}` names several",
            p.target
        );
    };
    let tc = match &d.rustc {
        Some(rustc) => Toolchain::detect_with(Some(rustc))
            .with_context(|| format!("device `{}`: its `rustc`", d.name))?,
        None => Toolchain::detect()?,
    };
    let build = |t: &crate::workspace::BenchTarget, dir: Option<&std::path::Path>| {
        let mut plan = devices::build::plan(&tc, &d.triple, t, d.api_level, false)?;
        plan.args
            .extend(devices::run::device_features(t, &p.features));
        if let Some(dir) = dir {
            plan.env
                .insert("CARGO_TARGET_DIR".into(), dir.display().to_string());
        }
        let (exe, mut libs) = devices::build::run(&plan, &t.name)?;
        if let Some(lib) = crate::runtimes::cached_onnxruntime(&d.triple, &tc.host_triple) {
            libs.push(lib);
        }
        Ok((exe, libs))
    };
    let setting = format!("{} api{} {:?}", d.triple, d.api_level, p.features);
    let (a, b) = sides(opts, ws, target, &setting, &build)?;
    let args = devices::run::DeviceArgs::parse(&p.args)?;
    let registry = crate::models::registry()?;
    let resolve = crate::bench::registry_model_files(&registry);
    let mut libs = b.libs.clone();
    libs.extend(a.libs.iter().filter(|l| !b.libs.contains(l)).cloned());
    let deployed = workers::deploy_sides(d, &[&a.exe, &b.exe], &libs, &config, &args, &resolve)?;
    let start = |side: &build::Side, bin: &str| {
        let cmd = workers::worker_command(&deployed.device, bin, &args);
        Worker::start(&format!("{} on {}", side.label, d.name), cmd, p.max_time)
    };
    Ok([
        start(&a, &deployed.binaries[0])?,
        start(&b, &deployed.binaries[1])?,
    ])
}

/// The baseline's build and the candidate's.
fn sides(
    opts: &Options,
    ws: &Workspace,
    target: &crate::workspace::BenchTarget,
    setting: &str,
    build: &build::Builder,
) -> Result<(build::Side, build::Side)> {
    let a = build::at_rev(ws, target, &opts.a, setting, build)?;
    let b = match &opts.b {
        Some(rev) => build::at_rev(ws, target, rev, setting, build)?,
        None => build::working_tree(ws, target, setting, build)?,
    };
    Ok((a, b))
}

/// Measures every case both workers have, and reports.
fn run_workers(
    opts: &Options,
    config: &GateConfig,
    ws: &Workspace,
    workers: &mut [Worker; 2],
) -> Result<i32> {
    let p = &opts.paired;
    let design = Design {
        min_pairs: p.min_pairs.min(p.max_pairs),
        max_pairs: p.max_pairs,
        significance_level: config.significance_level,
        ..Design::default()
    };
    let mut summary = PairedSummary {
        a: workers[0].label.clone(),
        b: workers[1].label.clone(),
        judged: opts.judge,
        design,
        noise_before: None,
        noise_after: None,
        cases: Vec::new(),
        only_a: missing_from(&workers[0].cases, &workers[1].cases),
        only_b: missing_from(&workers[1].cases, &workers[0].cases),
        failed: Vec::new(),
        measuring_s: 0.0,
        resident_bytes: None,
        refused: None,
    };
    let cases: Vec<String> = workers[1]
        .cases
        .iter()
        .filter(|c| workers[0].cases.contains(c))
        .cloned()
        .collect();
    let noise = quiet_enough(&mut workers[0], p.wait_quiet)?;
    // Only a verdict is refused on a noisy machine: `compare` judges nothing, so it measures
    // and prints its numbers with the noise beside them.
    if opts.judge && noise.score > p.noise_limit {
        summary.refused = Some(format!(
            "the machine is too noisy for a verdict on a few percent: {} (limit {:.2}, \
             --noise-limit; --wait-quiet waits for it to calm down)",
            noise.line(),
            p.noise_limit
        ));
    }
    summary.noise_before = Some(noise);
    if summary.refused.is_none() {
        let start = Instant::now();
        for (k, case) in cases.iter().enumerate() {
            eprintln!("melt: gate: [{}/{}] {case}", k + 1, cases.len());
            match measure_case(workers, case, &summary.design, config, p) {
                Ok((outcome, resident)) => {
                    eprintln!("melt: gate: {}", one_line(&outcome));
                    summary.cases.push(outcome);
                    if summary.resident_bytes.is_none() && !p.reload_each_turn {
                        summary.resident_bytes = resident;
                    }
                }
                Err(e) => {
                    eprintln!("melt: gate: {case}: {e:#}");
                    summary.failed.push((case.clone(), format!("{e:#}")));
                }
            }
        }
        summary.measuring_s = start.elapsed().as_secs_f64();
        summary.noise_after = workers[0].noise(NOISE_WINDOW_S).ok();
    }
    let table = gate::paired_markdown(&summary, opts.lenient);
    print!("{}", melt_bench::markdown::aligned(&table));
    crate::gate::append_step_summary(&table)?;
    let dir = opts
        .target_dir
        .clone()
        .unwrap_or_else(|| ws.target_dir.clone())
        .join("melt/gate")
        .join(melt_bench::timestamp::timestamp_id());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let page = dir.join("index.html");
    std::fs::write(
        &page,
        melt_report::html::paired_page(&summary, opts.lenient),
    )
    .with_context(|| format!("writing {}", page.display()))?;
    eprintln!(
        "melt: gate: every pair is in {}, plotted in {}",
        path.display(),
        page.display()
    );
    Ok(summary.exit_code(opts.lenient))
}

fn missing_from(these: &[String], other: &[String]) -> Vec<String> {
    these
        .iter()
        .filter(|c| !other.contains(c))
        .cloned()
        .collect()
}

/// The noise check, repeated until the machine is quiet when `wait` allows.
fn quiet_enough(w: &mut Worker, wait: Option<Duration>) -> Result<Noise> {
    let start = Instant::now();
    loop {
        let n = w.noise(NOISE_WINDOW_S)?;
        eprintln!("melt: gate: {}", n.line());
        let Some(wait) = wait else { return Ok(n) };
        if n.score <= noise::QUIET {
            return Ok(n);
        }
        if start.elapsed() >= wait {
            eprintln!(
                "melt: gate: still not quiet after {:.0} s (quiet is {:.2} or less)",
                start.elapsed().as_secs_f64(),
                noise::QUIET
            );
            return Ok(n);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The metrics a sample gives, in rule order.
fn values(rules: &[Rule], s: &Sample) -> Vec<Option<f64>> {
    rules
        .iter()
        .map(|r| match r.metric.as_str() {
            gate::TOKENS_PER_SECOND => Some(s.tokens_per_second()),
            "ttft_ms" => s.ttft_ns.map(|ns| ns as f64 / 1e6),
            "peak_rss_bytes" => s.peak_rss_bytes.map(|b| b as f64),
            _ => None,
        })
        .collect()
}

/// What is gated for `case`: tok/s, and TTFT and peak memory where melt.toml gives them a
/// threshold and the case's samples have them (`first` is a sample of the case).
fn rules_for(case: &str, config: &GateConfig, first: &Sample) -> Vec<Rule> {
    let mut rules = vec![Rule {
        metric: gate::TOKENS_PER_SECOND.into(),
        unit: "tok/s".into(),
        higher_is_better: true,
        threshold: config.threshold_for(case),
    }];
    for (metric, unit, has) in [
        ("ttft_ms", "ms", first.ttft_ns.is_some()),
        ("peak_rss_bytes", "bytes", first.peak_rss_bytes.is_some()),
    ] {
        if let (true, Some(threshold)) = (has, config.metric_threshold(case, metric)) {
            rules.push(Rule {
                metric: metric.into(),
                unit: unit.into(),
                higher_is_better: false,
                threshold,
            });
        }
    }
    rules
}

/// One case in pairs; with each side's peak resident memory in its first turn (the model
/// loaded), where the worker can tell.
fn measure_case(
    workers: &mut [Worker; 2],
    case: &str,
    design: &Design,
    config: &GateConfig,
    p: &crate::cli::Paired,
) -> Result<(paired::CaseOutcome, Option<(u64, u64)>)> {
    // One turn each, not kept: the load, the warm-up, and what the samples carry.
    let first = workers[0].measure(case)?;
    let first_b = workers[1].measure(case)?;
    let resident = first.peak_rss_bytes.zip(first_b.peak_rss_bytes);
    if p.reload_each_turn {
        workers[0].release()?;
        workers[1].release()?;
    }
    let rules = rules_for(case, config, &first);
    let start = Instant::now();
    let outcome = paired::measure_case(
        case,
        design,
        &rules,
        |side| {
            let w = &mut workers[match side {
                Side::A => 0,
                Side::B => 1,
            }];
            let s = w.measure(case)?;
            if p.reload_each_turn {
                w.release()?;
            }
            Ok::<_, anyhow::Error>(values(&rules, &s))
        },
        |_| {
            if start.elapsed() >= p.max_time {
                Next::Stop(format!("--max-time {} s spent", p.max_time.as_secs()))
            } else {
                Next::Continue
            }
        },
    )?;
    Ok((outcome, resident))
}

/// A case's result on one line, for the progress log.
fn one_line(o: &paired::CaseOutcome) -> String {
    let m = &o.metrics[0];
    format!(
        "{}: {:+.1}% ({:+.1}% … {:+.1}%) tok/s after {} pairs: {:?}",
        o.case,
        m.change.estimate * 100.0,
        m.change.lower * 100.0,
        m.change.upper * 100.0,
        o.pairs.len(),
        o.verdict()
    )
}
