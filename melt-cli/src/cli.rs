//! `cargo melt`'s command line, defined once with clap: every command answers `--help`
//! before anything is built or fetched, `--flag=value` works everywhere, and the help is
//! generated from these definitions.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// The command line: melt's commands (`C` = [`Command`]), or a project's own that add to them.
#[derive(Debug, Parser)]
#[command(
    name = "cargo melt",
    bin_name = "cargo melt",
    about = "Benchmark language models on this machine and on the devices people carry",
    disable_version_flag = true
)]
pub struct Cli<C: Subcommand> {
    #[command(subcommand)]
    pub command: C,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install build prerequisites, fetch the shipped models and the ONNX Runtime library
    Setup {
        #[command(subcommand)]
        what: Option<Setup>,
    },
    /// Only install llama.cpp's build prerequisites if missing
    SetupPrereqs,
    /// The melt.toml model registry and the model cache
    Models {
        #[command(subcommand)]
        command: Models,
    },
    /// Build the workspace's melt benches, fetch their models, run them here or on devices
    Bench(Bench),
    /// Bench a model without writing a bench target, with llama-bench's flags
    Run(Run),
    /// The `[[device]]`s of melt.toml, probed
    Devices,
    /// Exit 1 if tok/s regressed for real: against a revision measured in alternation, a
    /// saved baseline, or a git ref's recorded run
    Gate(Gate),
    /// Measure two revisions (or one and the working tree) in alternation and print the
    /// change
    Compare(Compare),
    /// Recorded runs, or one metric of matching cases over runs
    History(History),
    /// The table of stored runs (default: the latest of each device), merged
    Report(Report),
    /// An external power meter's CSV put into a stored run, aligned by wall-clock time
    Meter(Meter),
    /// A stored run in another tool's format
    Export(Export),
}

#[derive(Debug, Subcommand)]
pub enum Setup {
    /// Fetch libonnxruntime.so from the PyPI wheel into the cache
    Onnxruntime {
        /// For this target triple [default: the host's]
        #[arg(long)]
        triple: Option<String>,
    },
    /// Make a CPU libtorch 2.13.0 from the PyPI torch wheel (cached); prints the LIBTORCH to
    /// export for plain cargo builds
    Libtorch {
        /// For this target triple [default: the host's]
        #[arg(long)]
        triple: Option<String>,
    },
    /// An emulated aarch64 board (qemu-user, an arm64 Debian with sshd on 127.0.0.1) and a
    /// Rust toolchain for it, from Debian's archive; prints its `[[device]]` for melt.toml
    #[command(name = "arm64-board")]
    Arm64Board {
        /// Where the board lives [default: the melt cache's boards/arm64]
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Its sshd's port on 127.0.0.1
        #[arg(long, default_value_t = crate::board::DEFAULT_PORT)]
        port: u16,
        /// Stop the board (its sshd and whatever runs in it) and unmount
        #[arg(long)]
        stop: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum Models {
    /// Registry models and whether they are cached
    List,
    /// Fetch (or export) models into the cache
    Fetch {
        /// Registry names [default: the suite's]
        names: Vec<String>,
    },
    /// The GGUF at other quantizations (llama.cpp's quantizer), in the cache; prints their
    /// paths for `bench -- --model`
    Quantize {
        /// A registry name or a GGUF file
        #[arg(value_name = "NAME|PATH")]
        source: String,
        /// Quantization types, e.g. q8_0,q4_0
        #[arg(long, required = true, value_delimiter = ',', value_name = "TYPES")]
        to: Vec<String>,
    },
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  cargo melt bench -- --quick
  cargo melt bench --bench llm -- --save-baseline main
  cargo melt bench --target android            every adb device, in parallel
  cargo melt bench --target jetson --resume    finish a run whose device went away
  cargo melt bench -- --help                   the bench binary's own options")]
pub struct Bench {
    /// Only this bench target (repeatable) [default: every `melt_bench!` target]
    #[arg(long = "bench", value_name = "NAME")]
    pub benches: Vec<String>,
    /// Only the bench targets of this package (repeatable)
    #[arg(short = 'p', long = "package", value_name = "SPEC")]
    pub packages: Vec<String>,
    /// Where: `host`, or devices — a `[[device]]` name, a tag, `android`, `ssh`, `local`, or
    /// several, comma-separated
    #[arg(
        long,
        visible_alias = "device",
        default_value = "host",
        value_name = "T"
    )]
    pub target: String,
    /// N runs back to back, each recorded (the gate's drift)
    #[arg(long, default_value_t = 1, value_parser = at_least_one, value_name = "N")]
    pub rounds: usize,
    /// Device runs: continue the device's unfinished run
    #[arg(long, conflicts_with = "rounds")]
    pub resume: bool,
    /// Device runs: kill a case silent this long
    #[arg(long, default_value = "300", value_parser = positive_seconds, value_name = "SECS")]
    pub case_timeout: Duration,
    /// Device runs: build with `cross`
    #[arg(long)]
    pub cross: bool,
    /// Device runs: use a bench binary built already
    #[arg(long, value_name = "PATH")]
    pub bench_bin: Option<PathBuf>,
    /// Cargo features of the bench build (`libtorch`: built against the libtorch `setup
    /// libtorch` makes, which a device run ships)
    #[arg(long, value_delimiter = ',', value_name = "FEATURES")]
    pub features: Vec<String>,
    /// Also record every run in this shared history (postgres://…); each run stays in
    /// target/melt/history.sqlite either way
    #[arg(long = "history", env = melt_report::sinks::SHARED_HISTORY_ENV, value_name = "URL")]
    pub history: Option<String>,
    /// Arguments for the bench binary (after `--`; `-- --help` lists them)
    #[arg(last = true, value_name = "BENCH-ARGS")]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Everything else goes to melt's generic bench binary: llama-bench's flags
-p, -n, -pg, -d, -t, -b, -ub, -ctk, -ctv, -fa, -ngl, -r (comma lists, ranges such as 1-8+1 or
1-16*2), --backend NAME, and criterion's options (`cargo melt run --model M -- --help` lists
them). The binary is built once per melt version and feature set, in the melt cache.

Examples:
  cargo melt run --model gemma-3-270m-q4_k_m -t 1,2 -p 512 -n 128
  cargo melt run --model ~/models/qwen.gguf -pg 512,128 -d 0,4096 -r 5
  cargo melt run --model m.gguf --target pixel7 -p 128 -n 32"
)]
pub struct Run {
    /// A model file, or a registry name (repeatable)
    #[arg(long = "model", value_name = "PATH|NAME")]
    pub models: Vec<String>,
    /// Where: `host`, or devices, as for `bench`
    #[arg(
        long,
        visible_alias = "device",
        default_value = "host",
        value_name = "T"
    )]
    pub target: String,
    /// Cargo features of melt for the generic bench (e.g. libtorch)
    #[arg(long, value_delimiter = ',', value_name = "FEATURES")]
    pub features: Vec<String>,
    /// The bench binary's arguments
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "BENCH-ARGS"
    )]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
#[command(
    group(clap::ArgGroup::new("judged_against").required(true).args(["against", "baseline", "baseline_ref"])),
    after_help = "With --against, the revision's bench and the working tree's are built and measured \
                  in alternation on this machine, pair by pair, until every case has a verdict: \
                  0 pass, 1 regressed, 2 could not compare, 3 inconclusive (the budget ran out)."
)]
pub struct Gate {
    /// Build REV's bench and the working tree's and measure them in alternation, here
    #[arg(long, value_name = "REV")]
    pub against: Option<String>,
    /// A criterion baseline saved earlier (`bench -- --save-baseline NAME`)
    #[arg(long, value_name = "NAME")]
    pub baseline: Option<String>,
    /// The latest recorded run of this git ref in the history
    #[arg(long, value_name = "GIT-REF")]
    pub baseline_ref: Option<String>,
    /// Fail on a drop past PCT percent [default: melt.toml's `[gate]`, else 5]
    #[arg(long, value_parser = percent, value_name = "PCT")]
    pub threshold: Option<f64>,
    /// A case without a baseline is skipped, not an error (with --against: an inconclusive
    /// case exits 0)
    #[arg(long)]
    pub lenient: bool,
    /// Do not widen the intervals by the run-to-run drift learned from the history
    #[arg(long)]
    pub ignore_drift: bool,
    /// Where --baseline-ref looks for the ref's run and the drift: an SQLite file or a
    /// shared postgres:// URL [default: target/melt/history.sqlite]
    #[arg(long = "history", env = melt_report::sinks::SHARED_HISTORY_ENV, value_name = "PATH|URL")]
    pub history: Option<String>,
    /// Where criterion/ and melt/ are [default: $CARGO_TARGET_DIR or target]
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
    #[command(flatten)]
    pub paired: Paired,
}

/// How two builds are measured in alternation (`gate --against`, `compare`).
#[derive(Debug, Args, Clone)]
pub struct Paired {
    /// The bench target [default: the workspace's only `melt_bench!` target]
    #[arg(long = "bench", value_name = "NAME", help_heading = PAIRED)]
    pub benches: Vec<String>,
    /// The bench target's package
    #[arg(short = 'p', long = "package", value_name = "SPEC", help_heading = PAIRED)]
    pub packages: Vec<String>,
    /// Cargo features of both builds
    #[arg(long, value_delimiter = ',', value_name = "FEATURES", help_heading = PAIRED)]
    pub features: Vec<String>,
    /// Where both sides run: `host`, or one `[[device]]` of melt.toml
    #[arg(long, visible_alias = "device", default_value = "host", value_name = "T", help_heading = PAIRED)]
    pub target: String,
    /// At most N pairs per case; then an undecided case is inconclusive
    #[arg(long, default_value_t = 60, value_parser = at_least_two, value_name = "N", help_heading = PAIRED)]
    pub max_pairs: usize,
    /// Pairs before the first look
    #[arg(long, default_value_t = 6, value_parser = at_least_two, value_name = "N", help_heading = PAIRED)]
    pub min_pairs: usize,
    /// At most this long measuring one case
    #[arg(long, default_value = "600", value_parser = positive_seconds, value_name = "SECS", help_heading = PAIRED)]
    pub max_time: Duration,
    /// Wait up to SECS for the machine to be quiet before measuring (no value: 120)
    #[arg(long, num_args = 0..=1, default_missing_value = "120", value_parser = positive_seconds, value_name = "SECS", help_heading = PAIRED)]
    pub wait_quiet: Option<Duration>,
    /// The gate refuses to judge when the noise check scores above this (0 quiet; 0.5 is a
    /// fixed-work loop varying by about 10%). `compare` measures and prints whatever the score,
    /// with the noise beside the numbers
    #[arg(long, default_value_t = melt_bench::probe::noise::DROWNED, value_parser = non_negative, value_name = "SCORE", help_heading = PAIRED)]
    pub noise_limit: f64,
    /// Load the model again at every turn instead of holding both (for models too big to
    /// hold twice)
    #[arg(long, help_heading = PAIRED)]
    pub reload_each_turn: bool,
    /// Arguments for both bench binaries: a filter, llama-bench's flags (after `--`)
    #[arg(last = true, value_name = "BENCH-ARGS")]
    pub args: Vec<String>,
}

const PAIRED: &str = "Measuring in alternation (--against, compare)";

#[derive(Debug, Args)]
#[command(
    after_help = "Prints the change of every case with its interval and exits 0; `gate --against` judges."
)]
pub struct Compare {
    /// The baseline revision
    #[arg(value_name = "REV")]
    pub rev: String,
    /// The candidate revision [default: the working tree]
    #[arg(value_name = "REV2")]
    pub rev2: Option<String>,
    #[command(flatten)]
    pub paired: Paired,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct History {
    #[command(subcommand)]
    pub action: Option<HistoryAction>,
    #[command(flatten)]
    pub list: HistoryList,
}

/// Where a history is kept: an SQLite file's path, or a `postgres://` URL.
#[derive(Debug, Args, Clone)]
pub struct HistoryAt {
    /// The history to read: an SQLite file, or a shared PostgreSQL database
    /// (postgres://USER:PASSWORD@HOST:PORT/DB) [default: target/melt/history.sqlite]
    #[arg(long = "history", env = melt_report::sinks::SHARED_HISTORY_ENV, value_name = "PATH|URL")]
    pub at: Option<String>,
}

#[derive(Debug, Args)]
pub struct HistoryList {
    #[command(flatten)]
    pub history: HistoryAt,
    /// Cases whose id contains SUBSTR: one metric over runs
    #[arg(long, value_name = "SUBSTR")]
    pub case: Option<String>,
    /// The metric shown with --case
    #[arg(long, default_value = "tokens_per_second", value_name = "NAME")]
    pub metric: String,
    /// Only runs on this device
    #[arg(long, value_name = "NAME")]
    pub device: Option<String>,
    /// At most N rows
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub limit: usize,
}

#[derive(Debug, Subcommand)]
pub enum HistoryAction {
    /// Copy this machine's runs into another history (a shared PostgreSQL database); runs
    /// already there are left alone, so pushing twice adds nothing
    Push {
        /// The history that receives the runs
        #[arg(long, value_name = "PATH|URL")]
        to: String,
        /// The history the runs come from [default: target/melt/history.sqlite]
        #[arg(long, value_name = "PATH|URL")]
        from: Option<String>,
        #[command(flatten)]
        runs: HistoryRuns,
    },
    /// Copy runs of a shared history into this machine's, e.g. a git ref's for
    /// `gate --baseline-ref` offline
    Pull {
        /// The history the runs come from
        #[arg(long, env = melt_report::sinks::SHARED_HISTORY_ENV, value_name = "PATH|URL")]
        from: String,
        #[command(flatten)]
        runs: HistoryRuns,
    },
}

/// Which runs a push or a pull copies [default: all].
#[derive(Debug, Args, Clone)]
pub struct HistoryRuns {
    /// Only the runs of this git ref's commit
    #[arg(long = "ref", value_name = "GIT-REF")]
    pub git_ref: Option<String>,
    /// Only the runs on this device
    #[arg(long, value_name = "NAME")]
    pub device: Option<String>,
}

#[derive(Debug, Args)]
pub struct Report {
    /// These runs (repeatable) [default: the latest of each device]
    #[arg(long = "run", value_name = "ID")]
    pub runs: Vec<String>,
    /// Also write target/melt/report/index.html
    #[arg(long)]
    pub html: bool,
    /// Write the HTML page and open it in the browser (xdg-open, or open on macOS)
    #[arg(long)]
    pub open: bool,
    /// Trends over the runs of a history instead: this machine's, $MELT_HISTORY_URL's, or
    /// the file or postgres:// URL given (with --html: target/melt/report/trends.html)
    #[arg(long = "history", num_args = 0..=1, value_name = "PATH|URL", conflicts_with = "runs")]
    pub history: Option<Option<String>>,
    /// Trends: only this device
    #[arg(long, value_name = "NAME", requires = "history")]
    pub device: Option<String>,
    /// Trends: only cases whose id contains SUBSTR
    #[arg(long, value_name = "SUBSTR", requires = "history")]
    pub case: Option<String>,
    /// Trends: only runs recorded since this date (2026-11-01) or this git ref's commit
    #[arg(long, value_name = "REF|DATE", requires = "history")]
    pub since: Option<String>,
}

#[derive(Debug, Args)]
pub struct Meter {
    /// The meter's CSV file
    #[arg(value_name = "FILE.csv")]
    pub csv: PathBuf,
    /// The run [default: the latest]
    #[arg(long, value_name = "ID")]
    pub run: Option<String>,
    /// Seconds to add to the meter's clock
    #[arg(long, value_parser = finite, allow_negative_numbers = true, value_name = "S")]
    pub meter_offset: Option<f64>,
    /// The meter's first row's wall-clock time, when its CSV has relative times
    #[arg(long, value_parser = finite, value_name = "UNIX_S")]
    pub meter_start: Option<f64>,
}

#[derive(Debug, Args)]
pub struct Export {
    /// csv, jsonl, bmf (bencher), github (github-action-benchmark) or llama-bench
    #[arg(long, value_name = "FORMAT")]
    pub format: melt_report::export::Format,
    /// The run [default: the latest]
    #[arg(long, value_name = "ID")]
    pub run: Option<String>,
    /// Write here instead of stdout
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

fn at_least_one(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a whole number ≥ 1".into()),
    }
}

fn at_least_two(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n >= 2 => Ok(n),
        _ => Err("expected a whole number ≥ 2 (an interval needs two pairs)".into()),
    }
}

fn positive_seconds(v: &str) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err("expected a positive number of seconds".into()),
    }
}

fn non_negative(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err("expected a number ≥ 0".into()),
    }
}

/// `3` or `3%`, as a fraction.
fn percent(v: &str) -> Result<f64, String> {
    match v.trim_end_matches('%').parse::<f64>() {
        Ok(p) if p > 0.0 && p < 100.0 => Ok(p / 100.0),
        _ => Err("expected a percentage between 0 and 100".into()),
    }
}

fn finite(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err("expected a number of seconds".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::<Command>::try_parse_from(std::iter::once("cargo-melt").chain(args.iter().copied()))
            .map(|c| c.command)
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::<Command>::command().debug_assert();
    }

    #[test]
    fn every_command_answers_help() {
        for cmd in [
            "setup", "models", "bench", "devices", "gate", "history", "report", "meter", "export",
        ] {
            let e = parse(&[cmd, "--help"]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{cmd}");
        }
        let e = parse(&["models", "quantize", "--help"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
    }

    #[test]
    fn flags_take_their_value_either_way() {
        let Command::Gate(g) = parse(&["gate", "--baseline", "main", "--threshold=3"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (g.baseline.as_deref(), g.threshold),
            (Some("main"), Some(0.03))
        );
        let e = parse(&["gate", "--threshold", "3"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--baseline"), "{e}");
        let e = parse(&["gate", "--baseline=a", "--threshold=200"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("200") && e.contains("percentage"), "{e}");
        // In alternation: --against with its budget, and bench arguments after `--`.
        let Command::Gate(g) = parse(&[
            "gate",
            "--against",
            "HEAD~1",
            "--max-pairs",
            "30",
            "--wait-quiet",
            "--",
            "tg128",
            "-t",
            "4",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(g.against.as_deref(), Some("HEAD~1"));
        assert_eq!(g.paired.max_pairs, 30);
        assert_eq!(g.paired.wait_quiet, Some(Duration::from_secs(120)));
        assert_eq!(g.paired.args, ["tg128", "-t", "4"]);
        assert_eq!(g.paired.target, "host");
        let e = parse(&["gate", "--against", "x", "--baseline", "y"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot be used with"), "{e}");
        let e = parse(&["gate", "--against", "x", "--max-pairs", "1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("≥ 2"), "{e}");
        // The noise limit: the default refusal line, a test's own, and a bad one named.
        assert_eq!(g.paired.noise_limit, melt_bench::probe::noise::DROWNED);
        let Command::Gate(g) = parse(&["gate", "--against", "x", "--noise-limit", "2.5"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(g.paired.noise_limit, 2.5);
        let e = parse(&["gate", "--against", "x", "--noise-limit=-1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--noise-limit") && e.contains("≥ 0"), "{e}");
        let Command::Compare(c) = parse(&["compare", "v1", "v2", "--target", "pixel"]).unwrap()
        else {
            panic!()
        };
        assert_eq!((c.rev.as_str(), c.rev2.as_deref()), ("v1", Some("v2")));
        assert_eq!(c.paired.target, "pixel");
    }

    #[test]
    fn bench_options_and_pass_through_arguments() {
        let Command::Bench(b) = parse(&["bench"]).unwrap() else {
            panic!()
        };
        assert_eq!((b.target.as_str(), b.rounds, b.args.len()), ("host", 1, 0));
        let Command::Bench(b) = parse(&["bench", "--bench", "a", "-p", "x", "--bench=b"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (b.benches, b.packages),
            (vec!["a".into(), "b".into()], vec!["x".into()])
        );
        let Command::Bench(b) = parse(&[
            "bench",
            "--device=pixel",
            "--resume",
            "--case-timeout=30",
            "--features",
            "libtorch",
            "--",
            "--quick",
            "--resume",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(b.target, "pixel");
        assert!(b.resume);
        assert_eq!(b.case_timeout, Duration::from_secs(30));
        assert_eq!(b.features, ["libtorch"]);
        assert_eq!(b.args, ["--quick", "--resume"]);
        for bad in [
            &["bench", "--rounds", "0"][..],
            &["bench", "--rounds=2", "--resume"],
            &["bench", "--case-timeout", "-1"],
            &["bench", "--target"],
            // The bench binary's options go after `--`; clap says so.
            &["bench", "--quick"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let e = parse(&["bench", "--quick"]).unwrap_err().to_string();
        assert!(e.contains("-- --quick"), "{e}");
    }

    #[test]
    fn other_commands() {
        let Command::Models {
            command: Models::Quantize { source, to },
        } = parse(&["models", "quantize", "m", "--to", "q8_0,q4_0"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (source.as_str(), to),
            ("m", vec!["q8_0".into(), "q4_0".into()])
        );
        let Command::Export(e) = parse(&["export", "--format=bmf"]).unwrap() else {
            panic!()
        };
        assert_eq!(e.format, melt_report::export::Format::Bmf);
        let e = parse(&["export", "--format", "xml"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("xml") && e.contains("llama-bench"), "{e}");
        let Command::Report(r) = parse(&["report", "--run", "a", "--run=b", "--html"]).unwrap()
        else {
            panic!()
        };
        assert_eq!((r.runs, r.html), (vec!["a".into(), "b".into()], true));
        let Command::Report(r) = parse(&["report", "--open"]).unwrap() else {
            panic!()
        };
        assert!(r.open && !r.html);
        let Command::Meter(m) = parse(&["meter", "m.csv", "--meter-offset", "-1.5"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(m.meter_offset, Some(-1.5));
        assert!(parse(&["history", "--limit", "x"]).is_err());
        assert!(parse(&["frobnicate"]).is_err());
    }

    #[test]
    fn history_lists_pushes_and_pulls() {
        let Command::History(h) = parse(&[
            "history",
            "--history",
            "postgres://db/melt",
            "--device",
            "pixel",
            "--case",
            "tg",
        ])
        .unwrap() else {
            panic!()
        };
        assert!(h.action.is_none());
        assert_eq!(h.list.history.at.as_deref(), Some("postgres://db/melt"));
        assert_eq!(
            (h.list.device.as_deref(), h.list.case.as_deref()),
            (Some("pixel"), Some("tg"))
        );
        let Command::History(h) = parse(&[
            "history",
            "push",
            "--to",
            "postgres://db/melt",
            "--ref",
            "main",
        ])
        .unwrap() else {
            panic!()
        };
        let Some(HistoryAction::Push { to, from, runs }) = h.action else {
            panic!()
        };
        assert_eq!((to.as_str(), from), ("postgres://db/melt", None));
        assert_eq!(runs.git_ref.as_deref(), Some("main"));
        let Command::History(h) = parse(&[
            "history", "pull", "--from", "x.sqlite", "--device", "jetson",
        ])
        .unwrap() else {
            panic!()
        };
        let Some(HistoryAction::Pull { from, runs }) = h.action else {
            panic!()
        };
        assert_eq!(
            (from.as_str(), runs.device.as_deref()),
            ("x.sqlite", Some("jetson"))
        );
        // A push needs somewhere to go; listing flags do not mix with a push.
        assert!(parse(&["history", "push"]).is_err());
        assert!(parse(&["history", "--case", "tg", "push", "--to", "x"]).is_err());
        let Command::Gate(g) = parse(&[
            "gate",
            "--baseline-ref",
            "main",
            "--history",
            "postgres://db/melt",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(g.history.as_deref(), Some("postgres://db/melt"));
    }
}
