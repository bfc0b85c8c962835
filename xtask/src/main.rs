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

/// `--features A,B` (before `--`) taken out of `args`: cargo features of the bench build.
fn take_features(args: &[String]) -> Result<(Vec<String>, Vec<String>)> {
    let (mut features, mut rest) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            rest.push(a.clone());
            rest.extend(it.by_ref().cloned());
            break;
        }
        let list = match a.strip_prefix("--features=") {
            Some(v) => v.to_string(),
            None if a == "--features" => it.next().context("--features needs a list")?.clone(),
            None => {
                rest.push(a.clone());
                continue;
            }
        };
        features.extend(
            list.split([',', ' '])
                .filter(|f| !f.is_empty())
                .map(String::from),
        );
    }
    for f in &features {
        if !["libtorch", "llama-cpp", "onnxruntime"].contains(&f.as_str()) {
            bail!("--features: unknown feature `{f}` (llama-cpp and onnxruntime are on by default; libtorch)");
        }
    }
    Ok((features, rest))
}

/// A cargo command with `features` (and, for `libtorch`, the libtorch this host's cache holds,
/// made first if need be).
fn with_features(mut cmd: Command, features: &[String]) -> Result<Command> {
    if features.is_empty() {
        return Ok(cmd);
    }
    if features.iter().any(|f| f == "libtorch") {
        let tc = devices::build::Toolchain::detect()?;
        let dir = runtimes::setup_libtorch(&tc.host_triple, &tc.host_triple)?;
        cmd.envs(runtimes::libtorch_env(&dir));
    }
    cmd.args(["--features", &features.join(",")]);
    Ok(cmd)
}

const HELP: &str = "\
cargo xtask <command>

  setup                          install build prerequisites, fetch the suite's models and
                                 the ONNX Runtime library
  setup onnxruntime [--triple T] fetch libonnxruntime.so from the PyPI wheel into the cache
  setup libtorch [--triple T]    make a CPU libtorch 2.13.0 from the PyPI torch wheel (cached);
                                 prints the LIBTORCH to export for plain cargo builds
  setup-prereqs                  only install llama.cpp's build prerequisites if missing
  models list                    registry models and whether they are cached
  models fetch [NAME...]         fetch (or export) models into the cache (default: the suite's)
  models quantize NAME|PATH --to Q8_0,Q4_0,...
                                 the GGUF at other quantizations (llama.cpp's quantizer), in the
                                 cache; prints their paths for bench --model
  bench [--target T] [-- ARGS]   run the shipped suite here (T = host, the default) or on
                                 devices: a [[device]] name, a tag, `android`, `ssh`, `local`,
                                 or several, comma-separated (ARGS go to the bench binary,
                                 e.g. -- --quick, -- --save-baseline main, -- --help)
        [--rounds N]             N runs back to back, each recorded (gate drift) [1]
        [--resume]               device runs: continue the device's unfinished run
        [--case-timeout SECS]    device runs: kill a case silent this long [300]
        [--cross] [--bench-bin PATH]  build with `cross` / use a binary built already
        [--features libtorch]    also the libtorch backend and its model (on a device: built
                                 against that triple's libtorch, shipped beside the binary)
  devices                        the [[device]]s of melt.toml, probed
  test [--allow-skip] [-- ARGS]  bring what the tests need (packages, critcmp, runtimes,
                                 models, the suite binary), then run every test (cargo test
                                 --workspace --release --features libtorch ARGS);
                                 --allow-skip: skip what cannot be brought, and list it
  gate (--baseline NAME | --baseline-ref GIT-REF) [--threshold PCT] [--lenient] [--target-dir DIR]
                                 exit 1 if tok/s regressed for real against a saved criterion
                                 baseline, or against the latest recorded run of a git ref
  history [--case SUBSTR] [--metric NAME] [--limit N]
                                 recorded runs, or one metric of matching cases over runs
  report [--run ID]... [--html]  the table of stored runs (default: the latest), merged;
                                 --html also writes target/melt/report/index.html
  meter FILE.csv [--run ID] [--meter-offset S] [--meter-start UNIX_S]
                                 an external power meter's CSV put into a stored run
                                 (default: the latest), aligned by wall-clock time
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

/// `bench` options: `[--target T] [--resume] [--case-timeout SECS] [--cross]
/// [--bench-bin PATH] [--] rest...`; unknown options go to the bench binary.
fn parse_bench(args: &[String]) -> Result<devices::run::Options> {
    let mut o = devices::run::Options {
        target: "host".into(),
        resume: false,
        case_timeout: std::time::Duration::from_secs(300),
        cross: false,
        bench_bin: None,
        bench: "suite".into(),
        args: Vec::new(),
        rounds: 1,
        features: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |what: &str| -> Result<String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .with_context(|| format!("{flag} needs {what}"))
        };
        match flag {
            "--target" => o.target = value("a device name")?,
            "--resume" => o.resume = true,
            "--rounds" => {
                let v = value("a number of runs")?;
                o.rounds = v
                    .parse()
                    .ok()
                    .filter(|&n: &usize| n >= 1)
                    .with_context(|| format!("--rounds: `{v}` is not a whole number ≥ 1"))?;
            }
            "--cross" => o.cross = true,
            "--bench-bin" => o.bench_bin = Some(value("a path")?.into()),
            "--case-timeout" => {
                let v = value("a number of seconds")?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .with_context(|| {
                        format!("--case-timeout: `{v}` is not a positive number of seconds")
                    })?;
                o.case_timeout = std::time::Duration::from_secs_f64(secs);
            }
            "--" => {
                o.args.extend(it.by_ref().cloned());
                break;
            }
            _ => o.args.push(a.clone()),
        }
    }
    if o.resume && o.rounds > 1 {
        bail!("--resume continues one unfinished run; it does not go with --rounds");
    }
    Ok(o)
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

fn bench(args: &[String]) -> Result<ExitCode> {
    let (features, args) = take_features(args)?;
    let mut opts = parse_bench(&args)?;
    opts.features = features.clone();
    let libtorch = features.iter().any(|f| f == "libtorch");
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup-prereqs") => prereq::ensure().map(|_| ExitCode::SUCCESS),
        Some("setup") if args.get(1).map(String::as_str) == Some("onnxruntime") => {
            devices::build::Toolchain::detect().and_then(|tc| {
                let triple = match &args[2..] {
                    [] => tc.host_triple.clone(),
                    [flag, t] if flag == "--triple" => t.clone(),
                    other => bail!("setup onnxruntime: unexpected {other:?} (use [--triple T])"),
                };
                runtimes::setup_onnxruntime(&triple, &tc.host_triple)?;
                Ok(ExitCode::SUCCESS)
            })
        }
        Some("setup") if args.get(1).map(String::as_str) == Some("libtorch") => {
            devices::build::Toolchain::detect().and_then(|tc| {
                let triple = match &args[2..] {
                    [] => tc.host_triple.clone(),
                    [flag, t] if flag == "--triple" => t.clone(),
                    other => bail!("setup libtorch: unexpected {other:?} (use [--triple T])"),
                };
                let dir = runtimes::setup_libtorch(&triple, &tc.host_triple)?;
                // For cargo run without xtask; xtask's own builds set it themselves.
                println!("export LIBTORCH={}", dir.display());
                Ok(ExitCode::SUCCESS)
            })
        }
        Some("setup") => prereq::ensure()
            .and_then(|_| ready_suite())
            .map(|_| ExitCode::SUCCESS),
        Some("models") => match args.get(1).map(String::as_str) {
            Some("list") => models::registry().map(|r| {
                models::list(&r, &models::cache());
                ExitCode::SUCCESS
            }),
            Some("fetch") => models::registry().and_then(|r| {
                let cache = models::cache();
                let names: Vec<&str> = match &args[2..] {
                    [] => SUITE_MODELS.to_vec(),
                    more => more.iter().map(String::as_str).collect(),
                };
                for name in names {
                    let path = models::fetch(&r, &cache, name)?;
                    println!("{name}: {}", path.display());
                }
                Ok(ExitCode::SUCCESS)
            }),
            Some("quantize") => models::registry().and_then(|r| {
                let (source, made) = models::quantize(&r, &models::cache(), &args[2..])?;
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
                Ok(ExitCode::SUCCESS)
            }),
            other => Err(anyhow::anyhow!(
                "unknown `models` command {other:?}: use `models list`, `models fetch NAME` or `models quantize NAME|PATH --to TYPES`"
            )),
        },
        Some("bench") => bench(&args[1..]),
        Some("devices") => inventory().map(|(_, d)| {
            print!("{}", devices::list(&d));
            ExitCode::SUCCESS
        }),
        Some("history") => history::run(&args[1..], &target_dir()).map(|_| ExitCode::SUCCESS),
        Some("report") => runs::report(&args[1..], &target_dir()).map(|t| {
            print!("{t}");
            ExitCode::SUCCESS
        }),
        Some("meter") => runs::meter(&args[1..], &target_dir()).map(|t| {
            print!("{t}");
            ExitCode::SUCCESS
        }),
        Some("export") => runs::export(&args[1..], &target_dir()).map(|_| ExitCode::SUCCESS),
        Some("gate") => gate::parse(&args[1..]).and_then(|o| {
            let code = gate::run(&o, gate::config()?)?;
            Ok(ExitCode::from(code as u8))
        }),
        Some("test") => testing::parse(&args[1..]).and_then(|o| match o {
            Some(o) => testing::run(&o, &target_dir()),
            None => {
                print!("{}", testing::USAGE);
                Ok(ExitCode::SUCCESS)
            }
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
    fn bench_options_and_pass_through_arguments() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let o = parse_bench(&s(&[])).unwrap();
        assert_eq!(
            (o.target.as_str(), o.args.len(), o.resume),
            ("host", 0, false)
        );
        let o = parse_bench(&s(&[
            "--target",
            "pixel",
            "--resume",
            "--case-timeout=30",
            "--",
            "--quick",
            "--resume",
        ]))
        .unwrap();
        assert_eq!(o.target, "pixel");
        assert!(o.resume);
        assert_eq!(o.case_timeout, std::time::Duration::from_secs(30));
        assert_eq!(o.args, s(&["--quick", "--resume"]));
        assert!(parse_bench(&s(&["--target"])).is_err());
        assert_eq!(parse_bench(&s(&["--rounds", "3"])).unwrap().rounds, 3);
        for bad in ["0", "x"] {
            let e = parse_bench(&s(&["--rounds", bad])).unwrap_err().to_string();
            assert!(e.contains("--rounds"), "{e}");
        }
        let e = parse_bench(&s(&["--rounds=2", "--target", "p", "--resume"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not go with --rounds"), "{e}");
        let e = parse_bench(&s(&["--case-timeout", "-1"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--case-timeout"), "{e}");
        let err = bench(&s(&["--target", "pixel9"])).unwrap_err().to_string();
        assert!(err.contains("unknown device `pixel9`"), "{err}");
        let err = bench(&s(&["--resume"])).unwrap_err().to_string();
        assert!(err.contains("for device runs"), "{err}");
    }
}
