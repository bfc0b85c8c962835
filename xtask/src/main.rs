//! `cargo xtask`: melt's developer commands.
//!
//! - `setup`: install llama.cpp's build prerequisites if missing, fetch the suite's models.
//! - `models list` / `models fetch [NAME...]`: the `melt.toml` registry and the model cache;
//!   `models quantize NAME|PATH --to TYPES`: the same GGUF at other quantizations.
//! - `bench [--target T] [-- BENCH-ARGS]`: fetch the suite's models (and the ONNX Runtime
//!   library) if missing, build and run
//!   the shipped suite here or on devices (see `devices`), print the table and the reports.
//! - `devices`: the `[[device]]` inventory of melt.toml, each probed.
//! - `test [--allow-skip] [-- CARGO-TEST-ARGS]`: bring what the tests need, then every test
//!   of the workspace (release profile, so llama.cpp is compiled once for tests and benches).
//! - `gate --baseline NAME`: exit 1 when tok/s regressed for real against a saved baseline.

mod board;
mod cli;
mod devices;
mod gate;
mod history;
mod models;
mod prereq;
mod pypi;
mod runs;
mod runtimes;
mod testing;

use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

/// The models the shipped suite (`benches/suite.rs`) benches: Gemma 3 270M as llama.cpp runs
/// it, and the same weights exported to ONNX for ONNX Runtime.
const SUITE_MODELS: [&str; 2] = ["gemma-3-270m-q4_k_m", "gemma-3-270m-f32-onnx"];

/// The suite's model for libtorch, made and benched when the `libtorch` feature is asked for.
const LIBTORCH_SUITE_MODEL: &str = "gemma-3-270m-f32-torchscript";

/// A cargo command with `features` (and, for `libtorch`, the libtorch this host's cache holds,
/// made first if need be).
fn with_features(mut cmd: Command, features: &[cli::Feature]) -> Result<Command> {
    if features.is_empty() {
        return Ok(cmd);
    }
    if features.contains(&cli::Feature::Libtorch) {
        let tc = devices::build::Toolchain::detect()?;
        let dir = runtimes::setup_libtorch(&tc.host_triple, &tc.host_triple)?;
        cmd.envs(runtimes::libtorch_env(&dir));
    }
    let names: Vec<&str> = features.iter().map(|f| f.name()).collect();
    cmd.args(["--features", &names.join(",")]);
    Ok(cmd)
}

/// The cargo target directory (where `criterion/` and `melt/` are).
pub(crate) fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), std::path::PathBuf::from)
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(mut cmd: Command) -> Result<ExitCode> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// The melt.toml xtask reads (models and devices).
fn config_path() -> Result<std::path::PathBuf> {
    let cwd = std::env::current_dir()?;
    melt_bench::model::Registry::find(&cwd)
        .context("no melt.toml found here or above (set MELT_CONFIG to its path)")
}

/// The melt.toml read and its devices.
fn inventory() -> Result<(std::path::PathBuf, Vec<devices::Device>)> {
    let host = devices::build::Toolchain::detect()?.host_triple;
    let config = config_path()?;
    let devices = devices::load(&config, &host)?;
    Ok((config, devices))
}

/// The suite's models in the cache (fetched or exported) and, for its ONNX model, this host's
/// ONNX Runtime library: each a no-op once done.
fn ready_suite() -> Result<()> {
    let registry = models::registry()?;
    for name in SUITE_MODELS {
        models::fetch(&registry, &models::cache(), name)?;
    }
    let tc = devices::build::Toolchain::detect()?;
    runtimes::setup_onnxruntime(&tc.host_triple, &tc.host_triple)?;
    Ok(())
}

fn bench(b: cli::Bench) -> Result<ExitCode> {
    let features = b.features.clone();
    let mut opts = devices::run::Options {
        target: b.target,
        resume: b.resume,
        case_timeout: b.case_timeout,
        cross: b.cross,
        bench_bin: b.bench_bin,
        bench: "suite".into(),
        args: b.args,
        rounds: b.rounds,
        features: features.iter().map(|f| f.name().to_string()).collect(),
    };
    if opts.resume && opts.target != "host" {
        // The run being resumed decides the cases and models, before any is fetched.
        let (_, all) = inventory()?;
        let selected = devices::select(&all, &opts.target)?;
        opts.args = devices::run::resumed_args(&selected, &opts.args, &target_dir())?;
    }
    let libtorch = features.contains(&cli::Feature::Libtorch);
    let suite_models: Vec<&str> = SUITE_MODELS
        .iter()
        .copied()
        .chain(libtorch.then_some(LIBTORCH_SUITE_MODEL))
        .collect();
    let rest = &opts.args;
    let wants_local_model = rest
        .iter()
        .any(|a| a == "--model" || a.starts_with("--model="));
    let asks_help = rest
        .iter()
        .any(|a| a == "--help" || a == "-h" || a == "--list");
    if opts.target != "host" {
        if opts.target.split(',').any(|t| t.trim() == "host") {
            bail!(
                "--target host runs here, in-process; name it alone (or add a `local` [[device]])"
            );
        }
        let (config, all) = inventory()?;
        let selected = devices::select(&all, &opts.target)?;
        // Models are fetched on the host (registry, hash-verified) and pushed by hash.
        let mut registry_models = Vec::new();
        if !wants_local_model && !asks_help {
            let registry = models::registry()?;
            for name in &suite_models {
                let path = models::fetch(&registry, &models::cache(), name)?;
                let entry = registry.get(name)?;
                let spec = models::cache().lookup(name, entry)?;
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
                registry_models.push(devices::run::ModelFile {
                    local: path,
                    sha256: spec.sha256,
                    file: entry.file.clone(),
                    dir: entry.cache_key(),
                    beside,
                    registry_name: Some(name.to_string()),
                });
            }
        }
        if !opts.resume && opts.bench_bin.is_none() {
            prereq::ensure()?;
        }
        for round in 1..=opts.rounds {
            if opts.rounds > 1 {
                eprintln!("xtask: bench: round {round} of {}", opts.rounds);
            }
            let code = devices::run::bench_devices(
                &opts,
                &selected,
                &config,
                registry_models.clone(),
                &target_dir(),
            )?;
            if code != 0 || round == opts.rounds {
                return Ok(ExitCode::from(code as u8));
            }
        }
        unreachable!("rounds ≥ 1");
    }
    if opts.resume || opts.cross || opts.bench_bin.is_some() {
        bail!("--resume, --cross and --bench-bin are for device runs (--target DEVICE)");
    }
    prereq::ensure()?;
    if !wants_local_model && !asks_help {
        ready_suite()?;
        if libtorch {
            models::fetch(&models::registry()?, &models::cache(), LIBTORCH_SUITE_MODEL)?;
        }
    }
    let suite = || -> Result<Command> {
        let mut cmd = cargo();
        cmd.args(["bench", "--bench", "suite"]);
        let mut cmd = with_features(cmd, &features)?;
        cmd.arg("--").args(rest);
        Ok(cmd)
    };
    for round in 1..opts.rounds {
        eprintln!("xtask: bench: round {round} of {}", opts.rounds);
        let code = run(suite()?)?;
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
    }
    run(suite()?)
}

fn main() -> ExitCode {
    // Usage errors exit 2 and `--help` exits 0 here, before anything is built or fetched.
    let cli = <cli::Cli as clap::Parser>::parse();
    run_command(cli.command).unwrap_or_else(|e| {
        eprintln!("xtask: error: {e:#}");
        ExitCode::from(2)
    })
}

fn run_command(command: cli::Command) -> Result<ExitCode> {
    use cli::{Command as C, Models, Setup};
    let host_triple = || devices::build::Toolchain::detect().map(|tc| tc.host_triple);
    match command {
        C::SetupPrereqs => prereq::ensure()?,
        C::Setup { what: None } => {
            prereq::ensure()?;
            ready_suite()?;
        }
        C::Setup {
            what: Some(Setup::Onnxruntime { triple }),
        } => {
            let host = host_triple()?;
            runtimes::setup_onnxruntime(triple.as_deref().unwrap_or(&host), &host)?;
        }
        C::Setup {
            what: Some(Setup::Libtorch { triple }),
        } => {
            let host = host_triple()?;
            let dir = runtimes::setup_libtorch(triple.as_deref().unwrap_or(&host), &host)?;
            // For cargo run without xtask; xtask's own builds set it themselves.
            println!("export LIBTORCH={}", dir.display());
        }
        C::Setup {
            what: Some(Setup::Arm64Board { dir, port, stop }),
        } => {
            let board = board::Board::at(dir)?;
            if stop {
                board.stop()?;
            } else {
                print!("{}", board.set_up(port)?.0);
            }
        }
        C::Models {
            command: Models::List,
        } => models::list(&models::registry()?, &models::cache()),
        C::Models {
            command: Models::Fetch { names },
        } => {
            let (registry, cache) = (models::registry()?, models::cache());
            let names: Vec<&str> = if names.is_empty() {
                SUITE_MODELS.to_vec()
            } else {
                names.iter().map(String::as_str).collect()
            };
            for name in names {
                let path = models::fetch(&registry, &cache, name)?;
                println!("{name}: {}", path.display());
            }
        }
        C::Models {
            command: Models::Quantize { source, to },
        } => {
            let registry = models::registry()?;
            let (source, made) = models::quantize(&registry, &models::cache(), &source, &to)?;
            for path in &made {
                println!("{}", path.display());
            }
            // What to run next: the files side by side, with the accuracy tasks.
            let models: Vec<String> = std::iter::once(&source)
                .chain(&made)
                .map(|p| format!("--model {}", p.display()))
                .collect();
            eprintln!(
                "xtask: compare them: cargo xtask bench -- {} --perplexity tinyshakespeare --choices openbookqa",
                models.join(" ")
            );
        }
        C::Bench(b) => return bench(b),
        C::Devices => {
            let (_, d) = inventory()?;
            print!("{}", devices::list(&d));
        }
        C::History(h) => history::run(&h, &target_dir())?,
        C::Report(r) => print!("{}", runs::report(&r, &target_dir())?),
        C::Meter(m) => print!("{}", runs::meter(&m, &target_dir())?),
        C::Export(e) => runs::export(&e, &target_dir())?,
        C::Gate(g) => {
            let code = gate::run(&gate::Options::from_cli(g), gate::config()?)?;
            return Ok(ExitCode::from(code as u8));
        }
        C::Test(t) => return testing::run(&t, &target_dir()),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn bench_args(args: &[&str]) -> cli::Bench {
        match cli::Cli::try_parse_from(["xtask", "bench"].iter().chain(args))
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
    }
}
