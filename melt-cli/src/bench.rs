//! `bench`: the workspace's `melt_bench!` targets, run here or on devices.
//!
//! Here: build each target (`cargo bench --no-run`), ask the binary which cases it would run
//! and which models they use (`--list --format json`), fetch those that are registry models
//! (hash-verified; the ONNX Runtime library too when a model is ONNX), then `cargo bench`.
//! On devices: one build per triple, and each device's listing decides which models are
//! fetched and pushed (see `devices::run`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use melt_bench::model::{ModelFormat, Registry};

use crate::devices::run::{ModelFile, Options};
use crate::workspace::{BenchTarget, Workspace};
use crate::{cli, devices, inventory, models, prereq, runtimes};

/// Whether the bench arguments only ask the binary something (nothing is measured, so no
/// model is fetched).
fn only_asks(args: &[String]) -> bool {
    args.iter()
        .any(|a| a == "--help" || a == "-h" || a == "--list")
}

pub fn bench(b: cli::Bench) -> Result<ExitCode> {
    if b.target != "host" && b.target.split(',').any(|t| t.trim() == "host") {
        bail!("--target host runs here, in-process; name it alone (or add a `local` [[device]])");
    }
    if b.target == "host" && (b.resume || b.cross || b.bench_bin.is_some()) {
        bail!("--resume, --cross and --bench-bin are for device runs (--target DEVICE)");
    }
    if let Some(url) = &b.history {
        // The history sink reads it: in the bench binaries this starts, and here, where
        // device runs are merged.
        std::env::set_var(melt_report::sinks::SHARED_HISTORY_ENV, url);
    }
    if b.bench_bin.is_some() {
        // Built already: no workspace needed.
        return bench_on_devices(&b, None, &crate::target_dir());
    }
    let ws = Workspace::discover()?;
    if b.target == "host" {
        let targets = ws.select(&b.packages, &b.benches)?;
        return bench_here(&b, &ws, &targets);
    }
    let bench = ws.select_one(&b.packages, &b.benches, "a device run")?;
    bench_on_devices(&b, Some(bench), &ws.target_dir)
}

/// Runs `bench` (or `--bench-bin`) on the selected devices; their results go to `target_dir`.
pub(crate) fn bench_on_devices(
    b: &cli::Bench,
    bench: Option<BenchTarget>,
    target_dir: &Path,
) -> Result<ExitCode> {
    let mut opts = Options {
        target: b.target.clone(),
        resume: b.resume,
        case_timeout: b.case_timeout,
        cross: b.cross,
        bench_bin: b.bench_bin.clone(),
        bench,
        args: b.args.clone(),
        rounds: b.rounds,
        features: b.features.clone(),
    };
    let (config, all) = inventory()?;
    let selected = devices::select(&all, &opts.target)?;
    if opts.resume {
        // The run being resumed decides the cases and models.
        opts.args = devices::run::resumed_args(&selected, &opts.args, target_dir)?;
    }
    if !opts.resume && opts.bench_bin.is_none() {
        prereq::ensure()?;
    }
    let registry = models::registry()?;
    let resolve = registry_model_files(&registry);
    for round in 1..=opts.rounds {
        if opts.rounds > 1 {
            eprintln!("melt: bench: round {round} of {}", opts.rounds);
        }
        let code = devices::run::bench_devices(&opts, &selected, &config, &resolve, target_dir)?;
        if code != 0 || round == opts.rounds {
            return Ok(ExitCode::from(code as u8));
        }
    }
    unreachable!("rounds ≥ 1");
}

/// For device runs: a registry model's files on the host, fetched once (devices ask from
/// their own threads; a model is fetched by one of them while the others wait).
pub(crate) fn registry_model_files(
    registry: &Registry,
) -> impl Fn(&str) -> Result<Option<ModelFile>> + Sync + '_ {
    let lock = Mutex::new(());
    move |name: &str| {
        let Ok(entry) = registry.get(name) else {
            return Ok(None);
        };
        let _one_at_a_time = lock.lock().unwrap_or_else(|e| e.into_inner());
        let cache = models::cache();
        let path = models::fetch(registry, &cache, name)?;
        let spec = cache.lookup(name, entry)?;
        // The device's own cache finds it where the host's does, with what goes beside.
        let beside = [
            "tokenizer.json",
            "config.json",
            &format!("{}.sha256", entry.file),
        ]
        .iter()
        .map(|f| path.with_file_name(f))
        .filter(|p| p.is_file())
        .collect();
        Ok(Some(ModelFile {
            local: path,
            sha256: spec.sha256,
            file: entry.file.clone(),
            dir: entry.cache_key(),
            beside,
        }))
    }
}

/// The environment of every build and run of a workspace's benches here: this CPU's flags
/// unless the project sets its own, the workspace's target directory for the results, and
/// the libtorch `setup libtorch` made when a feature asks for it.
pub(crate) fn host_env(ws: &Workspace, features: &[String]) -> Result<Vec<(String, OsString)>> {
    let host = devices::build::Toolchain::detect()?.host_triple;
    let mut env: Vec<(String, OsString)> = devices::build::native_rustflags(&ws.root, &host)
        .map(|(k, v)| (k, v.into()))
        .into_iter()
        .collect();
    // A bench binary finds the target directory above its own path, but with cargo's
    // `build.build-dir` the binary lives in the build directory: the results would land there.
    if std::env::var_os("MELT_TARGET_DIR").is_none() {
        env.push(("MELT_TARGET_DIR".into(), ws.target_dir.clone().into()));
    }
    if features
        .iter()
        .any(|f| f == "libtorch" || f.ends_with("/libtorch"))
    {
        let dir = runtimes::setup_libtorch(&host, &host)?;
        env.extend(runtimes::libtorch_env(&dir).map(|(k, v)| (k.to_string(), v.into())));
    }
    Ok(env)
}

/// `cargo bench` for `target`, in `env`, with `features`.
pub(crate) fn cargo_bench(
    target: &BenchTarget,
    env: &[(String, OsString)],
    features: &[String],
) -> Command {
    cargo_bench_from(&target.package_dir, target, env, features)
}

/// `cargo bench` for `target` run from `cwd`, whose cargo configuration files apply.
fn cargo_bench_from(
    cwd: &Path,
    target: &BenchTarget,
    env: &[(String, OsString)],
    features: &[String],
) -> Command {
    let mut cmd = crate::cargo();
    cmd.current_dir(cwd)
        .arg("bench")
        .args(target.cargo_args())
        .envs(env.iter().map(|(k, v)| (k, v)));
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    cmd
}

/// Builds `target`'s bench binary (`cargo bench --no-run`) from `cwd` and returns its path.
pub(crate) fn build_bench(
    cwd: &Path,
    target: &BenchTarget,
    env: &[(String, OsString)],
    features: &[String],
) -> Result<PathBuf> {
    let mut build = cargo_bench_from(cwd, target, env, features);
    build.args(["--no-run", "--message-format", "json-render-diagnostics"]);
    let out = build
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("building the bench target `{}`", target.name))?;
    if !out.status.success() {
        bail!("building the bench target `{}` failed", target.name);
    }
    devices::build::executable_from_messages(&String::from_utf8_lossy(&out.stdout), &target.name)
        .with_context(|| format!("cargo built no executable for `{}`", target.name))
}

/// Builds `targets` for this machine, fetches the models they list, and runs them.
pub(crate) fn bench_here(
    b: &cli::Bench,
    ws: &Workspace,
    targets: &[BenchTarget],
) -> Result<ExitCode> {
    prereq::ensure()?;
    let env = host_env(ws, &b.features)?;
    if !only_asks(&b.args) {
        for target in targets {
            let exe = build_bench(&target.package_dir, target, &env, &b.features)?;
            ready_models(&exe, target, &b.args)?;
        }
    }
    for round in 1..=b.rounds {
        for target in targets {
            if b.rounds > 1 {
                eprintln!("melt: bench {}: round {round} of {}", target.name, b.rounds);
            }
            let mut cmd = cargo_bench(target, &env, &b.features);
            cmd.arg("--").args(&b.args);
            let code = crate::run(cmd)?;
            if code != ExitCode::SUCCESS {
                return Ok(code);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Fetches the registry models the bench binary `exe` lists for `args` (and this host's ONNX
/// Runtime library when one of them is ONNX): each a no-op once done.
pub(crate) fn ready_models(exe: &Path, target: &BenchTarget, args: &[String]) -> Result<()> {
    let out = Command::new(exe)
        .current_dir(&target.package_dir)
        .args(args)
        .args(devices::run::LIST_MODE)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    if !out.status.success() {
        bail!(
            "the bench target `{}` could not list its cases",
            target.name
        );
    }
    let names = devices::run::listed(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("the case list of the bench target `{}`", target.name))?
        .models;
    let registry = Registry::discover(&target.package_dir)?;
    let mut onnx = false;
    for name in &names {
        let format = match registry.get(name) {
            Ok(entry) if !Path::new(name).is_file() => {
                models::fetch(&registry, &models::cache(), name)?;
                entry.format
            }
            _ => melt_bench::model::detect_format(Path::new(name)).unwrap_or(ModelFormat::Gguf),
        };
        onnx |= format == ModelFormat::Onnx;
    }
    if onnx {
        let tc = devices::build::Toolchain::detect()?;
        runtimes::setup_onnxruntime(&tc.host_triple, &tc.host_triple)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn bench_args(args: &[&str]) -> cli::Bench {
        match cli::Cli::<cli::Command>::try_parse_from(["cargo-melt", "bench"].iter().chain(args))
            .unwrap()
            .command
        {
            cli::Command::Bench(b) => b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bench_names_what_it_cannot_do() {
        let err = bench(bench_args(&["--target", "pixel9"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown device `pixel9`"), "{err}");
        let err = bench(bench_args(&["--resume"])).unwrap_err().to_string();
        assert!(err.contains("for device runs"), "{err}");
        let err = bench(bench_args(&["--bench", "nope"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`nope`") && err.contains("suite in melt"),
            "{err}"
        );
    }
}
