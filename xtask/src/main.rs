//! `cargo xtask`: melt's developer commands.
//!
//! - `setup`: install llama.cpp's build prerequisites if missing, fetch the default model.
//! - `models list` / `models fetch [NAME...]`: the `melt.toml` registry and the model cache.
//! - `bench [--target host] [-- BENCH-ARGS]`: fetch the default model if missing, build and run
//!   the shipped suite, print the table and where the reports are.
//! - `test [-- CARGO-TEST-ARGS]`: every test of the workspace (release profile, so llama.cpp
//!   is compiled once for tests and benches alike).
//! - `gate --baseline NAME`: exit 1 when tok/s regressed for real against a saved baseline.

mod gate;
mod history;
mod models;
mod prereq;
mod runs;

use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

/// The model the shipped suite benches.
const DEFAULT_MODEL: &str = "gemma-3-270m-q4_k_m";

const HELP: &str = "\
cargo xtask <command>

  setup                          install build prerequisites, fetch the default model
  setup-prereqs                  only install llama.cpp's build prerequisites if missing
  models list                    registry models and whether they are cached
  models fetch [NAME...]         fetch models into the cache (default: gemma-3-270m-q4_k_m)
  bench [--target host] [-- ARGS]  run the shipped suite (ARGS go to the bench binary,
                                 e.g. -- --quick, -- --save-baseline main, -- --help)
  test [-- ARGS]                 run every test (cargo test --workspace --release)
  gate (--baseline NAME | --baseline-ref GIT-REF) [--threshold PCT] [--lenient] [--target-dir DIR]
                                 exit 1 if tok/s regressed for real against a saved criterion
                                 baseline, or against the latest recorded run of a git ref
  history [--case SUBSTR] [--metric NAME] [--limit N]
                                 recorded runs, or one metric of matching cases over runs
  report [--run ID]... [--html]  the table of stored runs (default: the latest), merged;
                                 --html also writes target/melt/report/index.html
  export --format csv|jsonl|bmf|github|llama-bench [--run ID] [--output FILE]
                                 a stored run in another tool's format
";

/// The cargo target directory (where `criterion/` and `melt/` are).
fn target_dir() -> std::path::PathBuf {
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

/// Splits `[--target T] [--] rest...`.
fn parse_target(args: &[String]) -> Result<(String, Vec<String>)> {
    let mut target = "host".to_string();
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--target" => target = it.next().context("--target needs a device name")?.clone(),
            s if s.starts_with("--target=") => target = s["--target=".len()..].to_string(),
            "--" => {
                rest.extend(it.cloned());
                break;
            }
            _ => rest.push(a.clone()),
        }
    }
    Ok((target, rest))
}

fn bench(args: &[String]) -> Result<ExitCode> {
    let (target, rest) = parse_target(args)?;
    if target != "host" {
        bail!(
            "unknown device `{target}`: melt.toml has no [[device]] of that name or kind (only `host` runs in this version)"
        );
    }
    prereq::ensure()?;
    let wants_local_model = rest
        .iter()
        .any(|a| a == "--model" || a.starts_with("--model="));
    let asks_help = rest
        .iter()
        .any(|a| a == "--help" || a == "-h" || a == "--list");
    if !wants_local_model && !asks_help {
        models::fetch(&models::registry()?, &models::cache(), DEFAULT_MODEL)?;
    }
    let mut cmd = cargo();
    cmd.args(["bench", "--bench", "suite", "--"]).args(&rest);
    run(cmd)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup-prereqs") => prereq::ensure().map(|_| ExitCode::SUCCESS),
        Some("setup") => prereq::ensure().and_then(|_| {
            models::fetch(&models::registry()?, &models::cache(), DEFAULT_MODEL)?;
            Ok(ExitCode::SUCCESS)
        }),
        Some("models") => match args.get(1).map(String::as_str) {
            Some("list") => models::registry().map(|r| {
                models::list(&r, &models::cache());
                ExitCode::SUCCESS
            }),
            Some("fetch") => models::registry().and_then(|r| {
                let cache = models::cache();
                let names: Vec<&str> = match &args[2..] {
                    [] => vec![DEFAULT_MODEL],
                    more => more.iter().map(String::as_str).collect(),
                };
                for name in names {
                    let path = models::fetch(&r, &cache, name)?;
                    println!("{name}: {}", path.display());
                }
                Ok(ExitCode::SUCCESS)
            }),
            other => Err(anyhow::anyhow!(
                "unknown `models` command {other:?}: use `models list` or `models fetch NAME`"
            )),
        },
        Some("bench") => bench(&args[1..]),
        Some("history") => history::run(&args[1..], &target_dir()).map(|_| ExitCode::SUCCESS),
        Some("report") => runs::report(&args[1..], &target_dir()).map(|t| {
            print!("{t}");
            ExitCode::SUCCESS
        }),
        Some("export") => runs::export(&args[1..], &target_dir()).map(|_| ExitCode::SUCCESS),
        Some("gate") => gate::parse(&args[1..]).and_then(|o| {
            let code = gate::run(&o, gate::config()?)?;
            Ok(ExitCode::from(code as u8))
        }),
        Some("test") => prereq::ensure().and_then(|_| {
            let rest = args[1..].iter().skip_while(|a| *a == "--");
            let mut cmd = cargo();
            cmd.args(["test", "--workspace", "--release"]).args(rest);
            run(cmd)
        }),
        Some("help" | "--help" | "-h") | None => {
            print!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        Some(other) => Err(anyhow::anyhow!("unknown command `{other}`\n\n{HELP}")),
    };
    result.unwrap_or_else(|e| {
        eprintln!("xtask: error: {e:#}");
        ExitCode::from(2)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_and_pass_through_arguments() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_target(&s(&[])).unwrap(), ("host".into(), vec![]));
        assert_eq!(
            parse_target(&s(&["--target", "pixel", "--", "--quick"])).unwrap(),
            ("pixel".into(), s(&["--quick"]))
        );
        assert_eq!(
            parse_target(&s(&["--target=host", "--quick"])).unwrap(),
            ("host".into(), s(&["--quick"]))
        );
        assert!(parse_target(&s(&["--target"])).is_err());
        let err = bench(&s(&["--target", "pixel9"])).unwrap_err().to_string();
        assert!(err.contains("unknown device `pixel9`"), "{err}");
    }
}
