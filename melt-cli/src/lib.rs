//! melt's command line, as a library: `cargo melt` is [`main`], and so is any project's own
//! xtask — `fn main() -> std::process::ExitCode { melt_cli::main() }`.
//!
//! - `setup`: llama.cpp's build prerequisites, the runtimes (ONNX Runtime, libtorch), an
//!   emulated arm64 board.
//! - `models list | fetch | quantize`: the registry (built in, plus melt.toml's) and the cache.
//! - `bench [--bench B] [-p P] [--target T] [-- BENCH-ARGS]`: the workspace's `melt_bench!`
//!   targets, built, their models fetched, run here or on devices (see `devices`).
//! - `devices`: the `[[device]]` inventory of melt.toml, each probed.
//! - `gate`, `history`, `report`, `meter`, `export`: the runs recorded under `target/`.

mod bench;
pub mod board;
pub mod cli;
pub mod devices;
mod download;
mod gate;
mod history;
pub mod models;
mod paired;
pub mod prereq;
mod pypi;
mod run;
mod runs;
pub mod runtimes;
pub mod workspace;

use std::ffi::OsString;
use std::process::{Command, ExitCode};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches};
use melt_bench::markdown::aligned;

/// The cargo target directory (where `criterion/` and `melt/` are): `$CARGO_TARGET_DIR`,
/// else the workspace's (cargo metadata), else `target`.
pub fn target_dir() -> std::path::PathBuf {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .or_else(|| workspace::Workspace::discover().ok().map(|w| w.target_dir))
            .unwrap_or_else(|| "target".into())
    })
    .clone()
}

/// The cargo that runs this (cargo sets `$CARGO` for its subcommands and `cargo run`).
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `cmd`, its exit code as this process's.
pub fn run(mut cmd: Command) -> Result<ExitCode> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// The melt.toml the commands read (devices, the gate's thresholds).
fn config_path() -> Result<std::path::PathBuf> {
    let cwd = std::env::current_dir()?;
    melt_bench::model::Registry::find(&cwd)
        .context("no melt.toml found here or above (set MELT_CONFIG to its path)")
}

/// The melt.toml read and its devices.
pub(crate) fn inventory() -> Result<(std::path::PathBuf, Vec<devices::Device>)> {
    let host = devices::build::Toolchain::detect()?.host_triple;
    let config = config_path()?;
    let devices = devices::load(&config, &host)?;
    Ok((config, devices))
}

/// How this program is called: `cargo melt` as cargo's subcommand `cargo-melt`, else
/// `cargo NAME` for a project's xtask binary NAME; and its arguments, without the `melt` that
/// cargo passes its subcommands.
fn invocation(mut args: Vec<OsString>) -> (String, Vec<OsString>) {
    let stem = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "melt".into());
    let sub = stem.strip_prefix("cargo-").unwrap_or(&stem).to_string();
    if stem.starts_with("cargo-") && args.get(1).is_some_and(|a| *a == *sub) {
        args.remove(1);
    }
    (format!("cargo {sub}"), args)
}

/// Parses `args` as the command line of `program` (`cargo melt`, `cargo xtask`): usage errors
/// exit 2 and `--help` exits 0 here, before anything is built or fetched.
pub fn parse<C: clap::Subcommand>(program: &str, args: Vec<OsString>) -> C {
    // Once per process: clap's names are &'static.
    let name: &'static str = Box::leak(program.to_string().into_boxed_str());
    let cmd = cli::Cli::<C>::command().name(name).bin_name(name);
    let matches = cmd.get_matches_from(args);
    cli::Cli::<C>::from_arg_matches(&matches)
        .unwrap_or_else(|e| e.exit())
        .command
}

/// The program's name and arguments, as [`main`] reads them (for an xtask that adds commands
/// of its own, see melt's).
pub fn args() -> (String, Vec<OsString>) {
    invocation(std::env::args_os().collect())
}

/// `cargo melt`: parse, run, exit 0 (done), 1 (a regression, a failed case) or 2 (an error).
pub fn main() -> ExitCode {
    let (program, args) = args();
    let command = parse::<cli::Command>(&program, args);
    exit(run_command(command))
}

/// An error printed as `melt: error: …`, exit code 2.
pub fn exit(result: Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("melt: error: {e:#}");
        ExitCode::from(2)
    })
}

/// Runs one command.
pub fn run_command(command: cli::Command) -> Result<ExitCode> {
    use cli::{Command as C, Models, Setup};
    let host_triple = || devices::build::Toolchain::detect().map(|tc| tc.host_triple);
    match command {
        C::SetupPrereqs => prereq::ensure()?,
        C::Setup { what: None } => {
            prereq::ensure()?;
            let (registry, cache) = (models::registry()?, models::cache());
            for name in models::SHIPPED {
                models::fetch(&registry, &cache, name)?;
            }
            let host = host_triple()?;
            runtimes::setup_onnxruntime(&host, &host)?;
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
                models::SHIPPED.to_vec()
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
                "melt: compare them: cargo melt bench -- {} --perplexity tinyshakespeare --choices openbookqa",
                models.join(" ")
            );
        }
        C::Bench(b) => return bench::bench(b),
        C::Run(r) => return run::run(r),
        C::Devices => {
            let (_, d) = inventory()?;
            print!("{}", aligned(&devices::list(&d)));
        }
        C::History(h) => history::run(&h, &target_dir())?,
        C::Report(r) => print!("{}", aligned(&runs::report(&r, &target_dir())?)),
        C::Meter(m) => print!("{}", runs::meter(&m, &target_dir())?),
        C::Export(e) => runs::export(&e, &target_dir())?,
        C::Gate(g) if g.against.is_some() => {
            let mut config = gate::config()?;
            if let Some(t) = g.threshold {
                config.threshold = t;
            }
            let opts = paired::Options {
                a: g.against.clone().expect("matched"),
                b: None,
                judge: true,
                lenient: g.lenient,
                paired: g.paired,
                target_dir: g.target_dir,
            };
            let code = paired::run(&opts, &config)?;
            return Ok(ExitCode::from(code as u8));
        }
        C::Compare(c) => {
            let opts = paired::Options {
                a: c.rev,
                b: c.rev2,
                judge: false,
                lenient: true,
                paired: c.paired,
                target_dir: None,
            };
            let code = paired::run(&opts, &gate::config()?)?;
            return Ok(ExitCode::from(code as u8));
        }
        C::Gate(g) => {
            let code = gate::run(&gate::Options::from_cli(g), gate::config()?)?;
            return Ok(ExitCode::from(code as u8));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn cargo_melt_and_an_xtask_are_named_as_they_are_called() {
        // `cargo melt bench` runs `cargo-melt melt bench`.
        let (name, args) = invocation(os(&["/home/u/.cargo/bin/cargo-melt", "melt", "bench"]));
        assert_eq!(
            (name.as_str(), args),
            (
                "cargo melt",
                os(&["/home/u/.cargo/bin/cargo-melt", "bench"])
            )
        );
        // Run directly, it has no `melt` to drop.
        let (name, args) = invocation(os(&["cargo-melt", "bench"]));
        assert_eq!((name.as_str(), args.len()), ("cargo melt", 2));
        // A project's xtask binary, run by its `cargo xtask` alias.
        let (name, args) = invocation(os(&["target/debug/xtask", "bench", "--", "melt"]));
        assert_eq!((name.as_str(), args.len()), ("cargo xtask", 4));
    }
}
