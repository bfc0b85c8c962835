//! `cargo xtask test`: brings everything the workspace's tests need, then runs them — so a
//! green run means every test ran. What it brings: llama.cpp's build prerequisites, the
//! programs the end-to-end tests drive (sshd, PostgreSQL, chromium, GNU time, critcmp), the ONNX Runtime
//! library and libtorch, the real models, and the suite's bench binary.
//!
//! What it cannot bring (no root, no apt-get) stops it with the exact command to run — unless
//! `--allow-skip` is given: then the tests that need it skip (each records why, see
//! `melt_testkit::needs`) and the run ends with the list.
//!
//! cargo builds the test binaries (`cargo test --no-run`); xtask runs them one at a time
//! ([`binaries`]), so each one's seconds are known and no cargo holds the build directory while
//! they run: the new-project test builds its project into it
//! ([`melt_testkit::needs::SHARED_BUILD_DIR_ENV`]). Every
//! phase is timed and the table printed at the end ([`phases`]).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

use melt_cli::workspace::{BenchTarget, Workspace};
use melt_cli::{board, cargo, devices, models, prereq, runtimes};

mod binaries;
mod phases;

use binaries::Split;
use phases::{Phases, Status};

/// The suite's model for libtorch (the tests run all three engines).
const LIBTORCH_SUITE_MODEL: &str = "gemma-3-270m-f32-torchscript";

/// critcmp's version the e2e test reads melt's criterion files with.
const CRITCMP: (&str, &str) = ("critcmp", "0.1.8");

/// `test [--quick] [--allow-skip] [-- CARGO-TEST-ARGS]`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// The contributor's loop: no board and no cross build, and not the two test binaries
    /// that build whole projects or drive devices (xtask's and cargo-melt's); CI runs all
    #[arg(long)]
    pub quick: bool,
    /// Run even where something cannot be brought: the tests that need it skip, and the run
    /// ends with the list of what was skipped and why
    #[arg(long)]
    pub allow_skip: bool,
    /// Passed to `cargo test --workspace --release --features libtorch`: cargo's options, a
    /// filter, or `--` and libtest's own options
    #[arg(trailing_var_arg = true, value_name = "CARGO-TEST-ARGS")]
    pub cargo_test: Vec<String>,
}

/// melt's shipped suite, the bench the device tests push.
fn suite() -> Result<BenchTarget> {
    let ws = Workspace::discover()?;
    let suite = ws.select(&["melt".into()], &["suite".into()])?;
    Ok(suite[0].clone())
}

/// A program an end-to-end test drives, and how to get it.
struct Tool {
    what: &'static str,
    present: fn() -> bool,
    install: Install,
}

enum Install {
    /// Debian packages.
    Apt(&'static [&'static str]),
    /// `cargo install NAME --locked --version V`.
    Cargo(&'static str, &'static str),
}

impl Install {
    fn command(&self) -> String {
        match self {
            Install::Apt(p) => format!("apt-get install -y {}", p.join(" ")),
            Install::Cargo(name, v) => format!("cargo install {name} --locked --version {v}"),
        }
    }
}

fn answers(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_file(p: &str) -> bool {
    Path::new(p).is_file()
}

const TOOLS: [Tool; 6] = [
    Tool {
        what: "sshd and the ssh client (the ssh device tests start a real sshd on loopback)",
        present: || {
            (is_file("/usr/sbin/sshd") || is_file("/usr/bin/sshd"))
                && ["ssh", "scp", "ssh-keygen"]
                    .into_iter()
                    .all(devices::build::on_path)
        },
        install: Install::Apt(&["openssh-server", "openssh-client"]),
    },
    Tool {
        what: "mksh, toybox and the one true awk (the adb tests run device scripts in \
               Android's shell)",
        present: || {
            ["mksh", "toybox", "original-awk"]
                .into_iter()
                .all(devices::build::on_path)
        },
        install: Install::Apt(&["mksh", "toybox", "original-awk"]),
    },
    Tool {
        what: "chromium (the HTML report is opened in it, headless)",
        present: || answers("chromium", "--version"),
        install: Install::Apt(&["chromium"]),
    },
    Tool {
        what: "the PostgreSQL server (the shared-history tests start their own on loopback)",
        present: || melt_testkit::postgres::server_bin_dir().is_some(),
        install: Install::Apt(&["postgresql"]),
    },
    Tool {
        what: "GNU time (the memory probe is checked against /usr/bin/time -v)",
        present: || is_file("/usr/bin/time"),
        install: Install::Apt(&["time"]),
    },
    Tool {
        what: "critcmp (criterion's comparison tool reads melt's files)",
        present: || answers(CRITCMP.0, "--version"),
        install: Install::Cargo(CRITCMP.0, CRITCMP.1),
    },
];

/// The end-to-end tests' programs: installed where missing; what cannot be installed is
/// returned with its command (the caller stops, or skips under `--allow-skip`).
fn bring_tools() -> Vec<String> {
    let mut apt: Vec<&str> = Vec::new();
    let mut cannot = Vec::new();
    for t in TOOLS.iter().filter(|t| !(t.present)()) {
        match &t.install {
            Install::Apt(p) => apt.extend_from_slice(p),
            Install::Cargo(name, version) => {
                eprintln!("melt: installing {name} {version} with cargo install");
                let ok = cargo()
                    .args(["install", name, "--locked", "--quiet", "--version", version])
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok || !(t.present)() {
                    cannot.push(format!("{}: {}", t.what, t.install.command()));
                }
            }
        }
    }
    if !apt.is_empty() {
        if let Err(e) = prereq::apt_install(&apt) {
            eprintln!("melt: {e:#}");
        }
        for t in TOOLS.iter().filter(|t| !(t.present)()) {
            if let Install::Apt(_) = t.install {
                cannot.push(format!("{}: {}", t.what, t.install.command()));
            }
        }
    }
    cannot
}

/// Where the tests record what they skipped under `--allow-skip` (one line each).
fn skip_log(target: &Path) -> PathBuf {
    target.join("melt").join("test-skips.txt")
}

/// Runs the tests, then prints where the time went (also when a phase failed).
pub fn run(o: &Options, target: &Path) -> Result<ExitCode> {
    let mut phases = Phases::new();
    let result = run_phases(o, target, &mut phases);
    eprintln!("\nxtask: where the time went\n{}", phases.table());
    result
}

fn run_phases(o: &Options, target: &Path, phases: &mut Phases) -> Result<ExitCode> {
    let cannot = phases.time("installs (apt-get, critcmp)", || -> Result<_> {
        prereq::ensure()?;
        Ok(bring_tools())
    })?;
    if !cannot.is_empty() && !o.allow_skip {
        bail!(
            "the tests need what this machine lacks and xtask could not install:\n  {}\n\
             install them and run again, or run `cargo xtask test --allow-skip` to skip the \
             tests that need them",
            cannot.join("\n  ")
        );
    }
    let tc = devices::build::Toolchain::detect()?;
    // The ONNX Runtime backend's tests run the real library; libtorch is built and tested too.
    let libtorch = phases.time("runtimes (ONNX Runtime, libtorch)", || {
        runtimes::setup_onnxruntime(&tc.host_triple, &tc.host_triple)?;
        runtimes::setup_libtorch(&tc.host_triple, &tc.host_triple)
    })?;
    for (k, v) in runtimes::libtorch_env(&libtorch) {
        // Exports (melt-convert) then build with libtorch too, sharing the test build.
        std::env::set_var(k, v);
    }
    // The real models the tests compare engines on: fetched (hash-verified) or exported. The
    // first export builds melt-convert, in the release build the tests share.
    phases.time("models (downloads, exports)", || -> Result<()> {
        let registry = models::registry()?;
        for name in models::SHIPPED.iter().chain([&LIBTORCH_SUITE_MODEL]) {
            models::fetch(&registry, &models::cache(), name)
                .with_context(|| format!("the tests need model `{name}`"))?;
        }
        Ok(())
    })?;
    // The device tests push the shipped bench binary to their devices: built first, in the
    // same release build the tests use, so nothing compiles twice.
    let suite = suite()?;
    let bin = phases.time("suite binary (host build)", || -> Result<PathBuf> {
        let mut plan = devices::build::plan(&tc, &tc.host_triple, &suite, 0, false)?;
        plan.args.extend(["--features".into(), "libtorch".into()]);
        plan.env.extend(
            runtimes::libtorch_env(&libtorch)
                .map(|(k, v)| (k.to_string(), v.display().to_string())),
        );
        Ok(devices::build::run(&plan, "suite")?.0)
    })?;
    let board = if o.quick {
        None
    } else if prereq::is_root() {
        Some(bring_board(&tc, &suite, &libtorch, phases)?)
    } else if o.allow_skip {
        None
    } else {
        bail!(
            "the board tests need root to set up the emulated arm64 board (apt-get, mount, \
             chroot): run as root, or `cargo xtask test --allow-skip` to skip them"
        );
    };

    let code = run_tests(o, target, &bin, board.as_ref(), phases);
    // A board this run started goes away with it; one that was running stays.
    if let Some(started) = board.and_then(|b| b.started) {
        if let Err(e) = started.stop() {
            eprintln!("melt: stopping the arm64 board: {e:#}");
        }
    }
    let code = code?;
    if o.allow_skip {
        let skipped = std::fs::read_to_string(skip_log(target)).unwrap_or_default();
        let lines: Vec<&str> = skipped.lines().collect();
        if lines.is_empty() {
            eprintln!("melt: --allow-skip: every test ran");
        } else {
            eprintln!(
                "xtask: --allow-skip: {} test(s) did not run:\n  {}",
                lines.len(),
                lines.join("\n  ")
            );
        }
        for c in &cannot {
            eprintln!("melt: not installed: {c}");
        }
    }
    Ok(code)
}

/// Builds every test binary (`cargo test --no-run`), runs each in turn — all of them, a
/// failure does not stop the rest — then the doc tests.
fn run_tests(
    o: &Options,
    target: &Path,
    suite_bin: &Path,
    board: Option<&Board>,
    phases: &mut Phases,
) -> Result<ExitCode> {
    let args = Split::of(&o.cargo_test);
    let test = |extra: &[&str]| {
        let mut cmd = cargo();
        cmd.args(["test", "--workspace", "--release", "--features", "libtorch"])
            .args(extra)
            .args(&args.cargo);
        cmd
    };
    let built = phases.time("test build (host)", || binaries::build(test(&[])))?;
    let profile_dir = std::path::absolute(target.join("release"))?;

    // What every test binary (and the doc tests) is told.
    let mut env: Vec<(&str, std::ffi::OsString)> = vec![
        (melt_testkit::needs::SUITE_BIN_ENV, suite_bin.into()),
        (
            melt_testkit::needs::SHARED_BUILD_DIR_ENV,
            std::path::absolute(target)?.into(),
        ),
    ];
    if let Some(board) = board {
        env.push((melt_testkit::needs::BOARD_BIN_ENV, board.bin.clone().into()));
        env.push((
            melt_testkit::needs::BOARD_DEVICE_ENV,
            board.device.clone().into(),
        ));
        env.push((
            melt_testkit::needs::CONVERT_BIN_ENV,
            board.convert.clone().into(),
        ));
    }
    if let Some(path) = cargo_bin_on_path() {
        env.push(("PATH", path));
    }
    let log = skip_log(target);
    let _ = std::fs::remove_file(&log);
    if o.allow_skip {
        std::fs::create_dir_all(log.parent().unwrap_or(target))?;
        env.push((
            melt_testkit::needs::ALLOW_SKIP_ENV,
            std::path::absolute(&log)?.into(),
        ));
    }
    for (k, v) in &env {
        std::env::set_var(k, v);
    }

    let mut failed = Vec::new();
    for bin in &built {
        if o.quick && bin.builds_projects_or_drives_devices() {
            eprintln!("xtask: --quick: not running {}", bin.label());
            continue;
        }
        let label = format!("test binary {}", bin.label());
        eprintln!("xtask: == {label}");
        let (took, ok) = binaries::run(bin, &args.tests, &profile_dir)?;
        phases.record(&label, took, if ok { Status::Ok } else { Status::Failed });
        if !ok {
            failed.push(bin.label());
        }
    }
    if args.with_doc_tests() {
        let mut doc = test(&["--doc"]);
        if !args.tests.is_empty() {
            doc.arg("--").args(&args.tests);
        }
        let ok = phases.time("doc tests", || -> Result<bool> {
            Ok(melt_cli::run(doc)? == ExitCode::SUCCESS)
        })?;
        if !ok {
            failed.push("doc tests".into());
        }
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("xtask: failed: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

/// What the board test gets from `cargo xtask test`.
struct Board {
    /// The suite cross-built for the board.
    bin: PathBuf,
    /// The board's `[[device]]`.
    device: PathBuf,
    /// melt-convert with libtorch, to make the test's TorchScript model on the host.
    convert: PathBuf,
    /// The board, when this run started it: stopped once the tests are done.
    started: Option<board::Board>,
}

/// The emulated arm64 board, running, and the suite cross-built for it as a device build is
/// (its own compiler, no host reports, all three engines: libtorch from the aarch64 torch
/// wheel, and ONNX Runtime's aarch64 library fetched so that it ships beside the binary).
fn bring_board(
    host: &devices::build::Toolchain,
    suite: &BenchTarget,
    host_libtorch: &Path,
    phases: &mut Phases,
) -> Result<Board> {
    let board = board::Board::at(None)?;
    let (_, started) = phases.time("board (packages, toolchain, root filesystem, sshd)", || {
        board
            .set_up(board::DEFAULT_PORT)
            .context("the board tests need the emulated arm64 board")
    })?;
    let tc = devices::build::Toolchain::detect_with(Some(&board.rustc()))?;
    let libtorch = phases.time("board runtimes (aarch64 ONNX Runtime, libtorch)", || {
        runtimes::setup_onnxruntime(board::TRIPLE, &host.host_triple)?;
        runtimes::setup_libtorch(board::TRIPLE, &host.host_triple)
    })?;
    let bin = phases.time("cross build (aarch64 suite)", || -> Result<PathBuf> {
        let mut plan = devices::build::plan(&tc, board::TRIPLE, suite, 0, false)?;
        plan.args
            .extend(devices::run::device_features(suite, &["libtorch".into()]));
        plan.env.extend(
            runtimes::libtorch_env(&libtorch)
                .map(|(k, v)| (k.to_string(), v.display().to_string())),
        );
        Ok(devices::build::run(&plan, "suite")?.0)
    })?;
    // The same release build as the tests', so only melt-convert itself is linked.
    phases.time("melt-convert (host build)", || -> Result<()> {
        let mut convert = cargo();
        convert
            .args([
                "build",
                "--release",
                "--features",
                "libtorch",
                "--bin",
                "melt-convert",
            ])
            .envs(runtimes::libtorch_env(host_libtorch));
        if melt_cli::run(convert)? != ExitCode::SUCCESS {
            bail!("building melt-convert for the board test's TorchScript model failed");
        }
        Ok(())
    })?;
    // Absolute: the tests run in their packages' directories.
    let target = std::path::absolute(melt_cli::target_dir())?;
    Ok(Board {
        bin,
        device: board.device_toml(),
        convert: target.join("release/melt-convert"),
        started: started.then_some(board),
    })
}

/// PATH with cargo's bin directory (where `cargo install` put critcmp) added when missing.
fn cargo_bin_on_path() -> Option<std::ffi::OsString> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let bin = home.join("bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|p| p == bin) {
        return None;
    }
    std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_commands() {
        assert_eq!(
            Install::Cargo("critcmp", "0.1.8").command(),
            "cargo install critcmp --locked --version 0.1.8"
        );
    }
}
