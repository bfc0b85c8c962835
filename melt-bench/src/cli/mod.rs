//! Arguments of a bench binary, defined once with clap (the help is generated from it):
//! criterion's flags with criterion's meaning, so `cargo bench -- ...` habits carry over, plus
//! melt's own. Parsing only validates; nothing is probed here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, ValueEnum};

use crate::criterion_format::BaselineMode;
use crate::datasets::DataSource;
use crate::params::FlashAttn;
pub use crate::sampling::Sampling;
use sweep::List;
pub use sweep::SweepArgs;
pub use values::Expected;
use values::*;

mod sweep;
mod values;

/// The help heading of llama-bench's flags.
const SWEEP: &str = "Sweep (llama-bench's flags; an axis given replaces the bench's)";

/// What the binary does with the cases it selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `cargo bench` (cargo passes `--bench`): measure, analyse, report.
    #[default]
    Benchmark,
    /// `cargo test --benches` (no `--bench`), or `--test`: as criterion, every case runs once
    /// to show that it works (its decode cut to a few tokens); nothing is analysed or stored.
    Test,
    /// `--list`: the cases and tasks, nothing run.
    List(ListFormat),
    /// `--worker`: take "measure this case once" requests on stdin and answer each with one
    /// sample on stdout, holding the model between them (the paired gate's two sides).
    Worker,
}

/// `--format`: how `--list` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ListFormat {
    /// `ID: benchmark` lines, as criterion and libtest print them.
    #[default]
    Pretty,
    /// The same lines (criterion's terse list is its pretty one).
    Terse,
    /// One JSON array of `{"id", "kind"}` objects, for tools.
    Json,
}

/// `--output-format`: what a measured run prints on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// melt's markdown tables (progress goes to stderr).
    #[default]
    Criterion,
    /// libtest's `test ID ... bench: N ns/iter (+/- D)` lines, which github-action-benchmark
    /// and other bencher-format tools parse: the median time of one sample and its spread.
    Bencher,
}

/// `--message-format`: machine-readable messages instead of the human output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MessageFormat {
    /// One JSON event per line on stdout as it happens (`run_start`, `case_start`, `sample`,
    /// `case_end`, `task_end`, `error`, `run_end`), nothing else: what a host reads from a
    /// device.
    Json,
}

/// `--color`: melt prints no colour codes, so every choice prints the same; the flag is
/// accepted and checked so criterion's command lines work unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Color {
    #[default]
    Auto,
    Always,
    Never,
}

/// Parsed arguments.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Args {
    pub mode: Mode,
    pub output_format: OutputFormat,
    pub message_format: Option<MessageFormat>,
    /// `--quiet`: only the results table on stdout.
    pub quiet: bool,
    /// `--noplot`: no HTML report (criterion: "disable plot and HTML generation").
    pub noplot: bool,
    /// Regex over case ids (`group/function/value`); criterion's positional filter.
    pub filter: Option<String>,
    pub exact: bool,
    pub help: bool,
    pub baseline: BaselineMode,
    pub sampling: Sampling,
    /// Local model files that replace the suite's models.
    pub models: Vec<PathBuf>,
    /// Only these backends (by name); empty means all of the suite's.
    pub backends: Vec<String>,
    pub nresamples: Option<usize>,
    pub confidence_level: Option<f64>,
    pub significance_level: Option<f64>,
    pub noise_threshold: Option<f64>,
    /// Overrides where `criterion/` and `melt/` are written.
    pub target_dir: Option<PathBuf>,
    /// The device this run is on (set by `cargo melt bench --target`): case ids carry it
    /// as ` @NAME` at the end of their value, so devices compare side by side.
    pub device: Option<String>,
    /// Case ids not to run (exact; repeatable): what `--resume` already has.
    pub skip: Vec<String>,
    /// Replay, perplexity and multiple-choice tasks (`--replay`, `--perplexity`, `--choices`).
    pub tasks: Vec<crate::tasks::Task>,
    /// Run the tasks only, not the suite's pp/tg workloads.
    pub tasks_only: bool,
    /// llama-bench's flags (`-p`, `-n`, `-t`, …): the workloads and sweep axes they replace.
    pub sweep: SweepArgs,
}

impl Args {
    /// Whether stdout carries the event stream and nothing else.
    pub fn events_on_stdout(&self) -> bool {
        self.message_format == Some(MessageFormat::Json)
    }
}

/// `--probe-period`: `None` turns the probes off.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProbePeriod(Option<Duration>);

/// The command line as clap reads it; [`Args::parse`] turns it into [`Args`].
#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "A melt bench target.",
    override_usage = "cargo bench --bench <TARGET> -- [OPTIONS] [FILTER]",
    disable_version_flag = true,
    // `--warm-up-time -1` is a bad value to name, not an unknown flag.
    allow_negative_numbers = true,
    after_help = "Under `cargo test --benches` (no --bench) every case runs once, unmeasured, its \
                  decode cut to 8 tokens, and nothing is stored: criterion's test mode."
)]
struct Cli {
    /// Regex over case ids (model/workload/backend params)
    filter: Option<String>,
    /// List the cases and tasks and exit
    #[arg(long)]
    list: bool,
    /// How --list prints
    #[arg(long, value_enum, default_value_t, value_name = "FORMAT")]
    format: ListFormat,
    /// Serve one-sample requests on stdin (JSON lines), for `cargo melt gate --against`
    #[arg(long, conflicts_with = "list")]
    worker: bool,
    /// FILTER is an exact case id
    #[arg(long)]
    exact: bool,
    /// Bench this local model file instead of the suite's (repeatable)
    #[arg(long, value_name = "PATH")]
    model: Vec<PathBuf>,
    /// Only this backend, e.g. llama.cpp (repeatable)
    #[arg(long, value_name = "NAME")]
    backend: Vec<String>,

    /// Prompt tokens: ppN tests (with -n and -pg, instead of the bench's workloads)
    #[arg(short = 'p', long = "n-prompt", value_name = "N,..", value_parser = sweep::usizes,
          help_heading = SWEEP)]
    n_prompt: Vec<List<usize>>,
    /// Generated tokens: tgN tests
    #[arg(short = 'n', long = "n-gen", value_name = "N,..", value_parser = sweep::usizes,
          help_heading = SWEEP)]
    n_gen: Vec<List<usize>>,
    /// -pg: a prompt then generation test, ppP+tgT (repeatable)
    #[arg(long = "pg", value_name = "P,T", value_parser = sweep::pair, help_heading = SWEEP)]
    pg: Vec<(usize, usize)>,
    /// Every test after this many tokens of untimed context
    #[arg(short = 'd', long = "n-depth", value_name = "N,..", value_parser = sweep::usizes,
          help_heading = SWEEP)]
    n_depth: Vec<List<usize>>,
    /// Threads
    #[arg(short = 't', long = "threads", value_name = "N,..",
          value_parser = sweep::positive_usizes, help_heading = SWEEP)]
    threads: Vec<List<usize>>,
    /// Logical batch size
    #[arg(short = 'b', long = "batch-size", value_name = "N,..", value_parser = sweep::u32s,
          help_heading = SWEEP)]
    batch_size: Vec<List<u32>>,
    /// -ub: physical batch size
    #[arg(long = "ubatch-size", value_name = "N,..", value_parser = sweep::u32s,
          help_heading = SWEEP)]
    ubatch_size: Vec<List<u32>>,
    /// -ctk: KV cache type for K, e.g. f16,q8_0
    #[arg(long = "cache-type-k", value_name = "TYPE,..", value_parser = sweep::names,
          help_heading = SWEEP)]
    cache_type_k: Vec<List<String>>,
    /// -ctv: KV cache type for V
    #[arg(long = "cache-type-v", value_name = "TYPE,..", value_parser = sweep::names,
          help_heading = SWEEP)]
    cache_type_v: Vec<List<String>>,
    /// -fa: flash attention, 0,1 or on,off,auto
    #[arg(long = "flash-attn", value_name = "0|1,..", value_parser = sweep::flash_attn,
          help_heading = SWEEP)]
    flash_attn: Vec<List<FlashAttn>>,
    /// -ngl: layers offloaded to a GPU
    #[arg(long = "n-gpu-layers", value_name = "N,..", value_parser = sweep::u32s,
          help_heading = SWEEP)]
    n_gpu_layers: Vec<List<u32>>,

    /// Compare with NAME if present, then save this run as NAME [default: base]
    #[arg(short = 's', long, value_name = "NAME", help_heading = "Baselines")]
    save_baseline: Option<String>,
    /// Compare with NAME, which must exist; save nothing but new/
    #[arg(long, value_name = "NAME", help_heading = "Baselines",
          conflicts_with_all = ["save_baseline", "baseline_lenient"])]
    baseline: Option<String>,
    /// Compare with NAME if it exists
    #[arg(
        long,
        value_name = "NAME",
        help_heading = "Baselines",
        conflicts_with = "save_baseline"
    )]
    baseline_lenient: Option<String>,
    /// Save nothing but new/
    #[arg(long, help_heading = "Baselines",
          conflicts_with_all = ["save_baseline", "baseline", "baseline_lenient"])]
    discard_baseline: bool,

    /// Fewer samples, 5% target, short budgets
    #[arg(long, help_heading = "Sampling")]
    quick: bool,
    /// Exactly N samples per case (no adaptive stopping; llama-bench's -r)
    #[arg(short = 'r', long, visible_alias = "repetitions", value_name = "N",
          value_parser = positive, help_heading = "Sampling")]
    sample_size: Option<usize>,
    /// Warm-up per case [default: 1]
    #[arg(long, value_name = "SECS", value_parser = seconds, help_heading = "Sampling")]
    warm_up_time: Option<Duration>,
    /// Time budget per case [default: 20]
    #[arg(long, value_name = "SECS", value_parser = seconds, help_heading = "Sampling")]
    measurement_time: Option<Duration>,
    /// Adaptive stopping: at least N samples [default: 3]
    #[arg(long, value_name = "N", value_parser = positive, help_heading = "Sampling")]
    min_samples: Option<usize>,
    /// Adaptive stopping: at most N samples [default: 100]
    #[arg(long, value_name = "N", value_parser = positive, help_heading = "Sampling")]
    max_samples: Option<usize>,
    /// Adaptive stopping: 95% CI half-width of tok/s, % of the mean [default: 2]
    #[arg(long, value_name = "PCT", value_parser = percent, help_heading = "Sampling")]
    target_ci: Option<f64>,
    /// Repeat each case back to back for DURATION (90s, 10m, 1h): throughput, power and
    /// temperature over time, and when throughput fell 10% below its start
    #[arg(long, value_name = "DURATION", value_parser = duration, allow_hyphen_values = true,
          help_heading = "Sampling")]
    sustained: Option<Duration>,

    /// Memory/energy/temperature sampling period in ms, 0 = off [default: 50]
    #[arg(long, value_name = "MS", value_parser = probe_period, help_heading = "Probes")]
    probe_period: Option<ProbePeriod>,
    /// Read /sys and /proc under DIR (fixture trees) [default: /]
    #[arg(long, value_name = "DIR", value_parser = existing_dir, help_heading = "Probes")]
    sysroot: Option<PathBuf>,
    /// Measure the memory bandwidth (the roofline's roof) again instead of using this
    /// device's cached figure (kept a week)
    #[arg(long, help_heading = "Probes")]
    remeasure_bandwidth: bool,
    /// Before each case, wait until the hottest thermal zone is back near its temperature at
    /// the run's start
    #[arg(long, help_heading = "Probes")]
    cooldown: bool,
    /// How near, in °C [default: 2]
    #[arg(long, value_name = "C", value_parser = celsius, help_heading = "Probes")]
    cooldown_tolerance: Option<f64>,
    /// Wait at most this long, then run warm and say so [default: 300]
    #[arg(long, value_name = "SECS", value_parser = seconds, help_heading = "Probes")]
    cooldown_max: Option<Duration>,

    /// Bootstrap resamples [default: 100000]
    #[arg(long, value_name = "N", value_parser = positive, help_heading = "Analysis")]
    nresamples: Option<usize>,
    /// [default: 0.95]
    #[arg(long, value_name = "X", value_parser = fraction, help_heading = "Analysis")]
    confidence_level: Option<f64>,
    /// [default: 0.05]
    #[arg(long, value_name = "X", value_parser = fraction, help_heading = "Analysis")]
    significance_level: Option<f64>,
    /// [default: 0.01]
    #[arg(long, value_name = "X", value_parser = non_negative, help_heading = "Analysis")]
    noise_threshold: Option<f64>,

    /// What a measured run prints on stdout
    #[arg(
        long,
        value_enum,
        default_value_t,
        value_name = "FORMAT",
        help_heading = "Output"
    )]
    output_format: OutputFormat,
    /// Machine-readable messages on stdout instead
    #[arg(long, value_enum, value_name = "FORMAT", help_heading = "Output")]
    message_format: Option<MessageFormat>,
    /// Only the results table on stdout
    #[arg(long, conflicts_with = "verbose", help_heading = "Output")]
    quiet: bool,
    /// Accepted for criterion's command lines (melt always prints its full tables)
    #[arg(short = 'v', long, help_heading = "Output")]
    verbose: bool,
    /// No HTML report
    #[arg(long, help_heading = "Output")]
    noplot: bool,
    /// Accepted for criterion's command lines (melt prints no colour)
    #[arg(
        short = 'c',
        long,
        alias = "colour",
        value_enum,
        default_value_t,
        value_name = "WHEN",
        help_heading = "Output"
    )]
    color: Color,
    /// Accepted for criterion's command lines (melt's HTML report draws its own plots)
    #[arg(long, value_parser = ["gnuplot", "plotters"], value_name = "BACKEND",
          help_heading = "Output")]
    plotting_backend: Option<String>,
    /// Write criterion/ and melt/ under DIR [default: the cargo target dir]
    #[arg(long, value_name = "DIR", help_heading = "Output")]
    target_dir: Option<PathBuf>,
    /// Tag every case id with ` @NAME` (set by cargo melt bench --target)
    #[arg(long, value_name = "NAME", help_heading = "Output")]
    device: Option<String>,
    /// Do not run this case (exact id, repeatable; used by --resume)
    #[arg(long, value_name = "CASE-ID", help_heading = "Output")]
    skip: Vec<String>,

    /// Replay conversations (a JSON list of lists of user prompts) with the model's chat
    /// template, answers kept in context; shipped: conversations, sustained (the paper's)
    #[arg(long, value_name = "NAME|FILE", value_parser = data, help_heading = TASKS)]
    replay: Vec<DataSource>,
    /// Between a turn's answer and the next prompt [default: 5]
    #[arg(long, value_name = "SECS", value_parser = seconds, help_heading = TASKS)]
    think_time: Option<Duration>,
    /// Between conversations (the context is emptied) [default: 60]
    #[arg(long, value_name = "SECS", value_parser = seconds, help_heading = TASKS)]
    conversation_gap: Option<Duration>,
    /// An answer ends at end of turn or after N tokens [default: 256]
    #[arg(long, value_name = "N", value_parser = positive, help_heading = TASKS)]
    max_output: Option<usize>,
    /// Every answer exactly N tokens (end of turn suppressed)
    #[arg(long, value_name = "N", value_parser = positive, help_heading = TASKS)]
    fixed_output: Option<usize>,
    /// gemma, chatml, llama3 or a Jinja file [default: the model's own]
    #[arg(long, value_name = "NAME|FILE", help_heading = TASKS)]
    chat_template: Option<String>,
    /// The chat's context; when full, the oldest turns go [default: 4096]
    #[arg(long, value_name = "N", value_parser = positive, help_heading = TASKS)]
    replay_ctx: Option<usize>,
    /// Replay only the first N conversations
    #[arg(long, value_name = "N", value_parser = positive, help_heading = TASKS)]
    conversations: Option<usize>,
    /// Perplexity of a text file, llama-perplexity's method; shipped: tinyshakespeare
    #[arg(long, value_name = "NAME|FILE", value_parser = data, help_heading = TASKS)]
    perplexity: Vec<DataSource>,
    /// Tokens per chunk; the second half of each is scored [default: 512]
    #[arg(long, value_name = "N", value_parser = positive, help_heading = TASKS)]
    ppl_ctx: Option<usize>,
    /// Score at most N chunks [default: all]
    #[arg(long, value_name = "N", value_parser = positive, help_heading = TASKS)]
    ppl_chunks: Option<usize>,
    /// Save the --perplexity run's log-probabilities here as the reference for
    /// --kl-divergence (llama-perplexity's file); for one model × backend
    #[arg(long, value_name = "FILE", help_heading = TASKS)]
    kl_divergence_base: Option<PathBuf>,
    /// KL-divergence from a reference saved by --kl-divergence-base (or by
    /// llama-perplexity), on the tokens and chunks the file holds
    #[arg(long, value_name = "FILE", help_heading = TASKS)]
    kl_divergence: Vec<PathBuf>,
    /// Multiple-choice accuracy (ARC/OpenBookQA or HellaSwag JSONL, TruthfulQA.csv) by
    /// log-likelihood, as lm-evaluation-harness; shipped: openbookqa, truthfulqa
    #[arg(long, value_name = "NAME|FILE", value_parser = data, help_heading = TASKS)]
    choices: Vec<DataSource>,
    /// A seeded subset of N questions
    #[arg(long, value_name = "N", value_parser = positive, help_heading = TASKS)]
    limit: Option<usize>,
    /// Skip the suite's pp/tg workloads
    #[arg(long, help_heading = TASKS)]
    tasks_only: bool,

    // What cargo and libtest pass: `cargo bench` adds --bench; without it (`cargo test
    // --benches`) the binary tests instead of measuring, as criterion's does.
    #[arg(long, hide = true)]
    bench: bool,
    #[arg(long, hide = true, conflicts_with = "list")]
    test: bool,
    #[arg(long, hide = true)]
    nocapture: bool,
    #[arg(long, hide = true)]
    show_output: bool,
    #[arg(long, hide = true)]
    include_ignored: bool,
}

const TASKS: &str =
    "Tasks (once per model × backend, at the sweep's last point, after the workloads)";

/// The generated help.
pub fn help() -> String {
    Cli::command().render_long_help().to_string()
}

/// The task options as given, turned into [`crate::tasks::Task`]s once all are read (their
/// order on the command line does not matter).
#[derive(Debug, Default)]
struct TaskArgs {
    replay: Vec<DataSource>,
    perplexity: Vec<DataSource>,
    choices: Vec<DataSource>,
    think_time_s: Option<f64>,
    conversation_gap_s: Option<f64>,
    max_output: Option<usize>,
    fixed_output: Option<usize>,
    chat_template: Option<String>,
    replay_ctx: Option<usize>,
    conversations: Option<usize>,
    ppl_ctx: Option<usize>,
    ppl_chunks: Option<usize>,
    kl_divergence_base: Option<PathBuf>,
    kl_divergence: Vec<PathBuf>,
    limit: Option<usize>,
}

impl TaskArgs {
    fn tasks(self) -> Result<Vec<crate::tasks::Task>, CliError> {
        use crate::tasks::{
            choice::ChoiceSpec, kl_divergence::KlDivergenceSpec, perplexity::PerplexitySpec,
            replay::ReplaySpec,
        };
        // A task option without its task is a mistake worth saying, not ignoring.
        let orphan = |flag: &str, set: bool, task: &[DataSource], needs: &'static str| {
            if set && task.is_empty() {
                Err(CliError::OnlyWith(flag.into(), needs))
            } else {
                Ok(())
            }
        };
        let (r, rn) = (&self.replay, "--replay NAME|FILE");
        orphan("--think-time", self.think_time_s.is_some(), r, rn)?;
        orphan(
            "--conversation-gap",
            self.conversation_gap_s.is_some(),
            r,
            rn,
        )?;
        orphan("--max-output", self.max_output.is_some(), r, rn)?;
        orphan("--fixed-output", self.fixed_output.is_some(), r, rn)?;
        orphan("--chat-template", self.chat_template.is_some(), r, rn)?;
        orphan("--replay-ctx", self.replay_ctx.is_some(), r, rn)?;
        orphan("--conversations", self.conversations.is_some(), r, rn)?;
        let (p, pn) = (&self.perplexity, "--perplexity NAME|FILE");
        orphan("--ppl-ctx", self.ppl_ctx.is_some(), p, pn)?;
        orphan("--ppl-chunks", self.ppl_chunks.is_some(), p, pn)?;
        orphan(
            "--kl-divergence-base",
            self.kl_divergence_base.is_some(),
            p,
            pn,
        )?;
        if self.kl_divergence_base.is_some() && p.len() > 1 {
            return Err(CliError::Usage(
                "`--kl-divergence-base` saves one text's log-probabilities; give one \
                 `--perplexity` with it"
                    .into(),
            ));
        }
        let cn = "--choices NAME|FILE";
        orphan("--limit", self.limit.is_some(), &self.choices, cn)?;
        let mut out = Vec::new();
        for data in self.replay {
            let mut s = ReplaySpec::new(data);
            s.think_time_s = self.think_time_s.unwrap_or(s.think_time_s);
            s.conversation_gap_s = self.conversation_gap_s.unwrap_or(s.conversation_gap_s);
            s.max_output = self.max_output.unwrap_or(s.max_output);
            s.fixed_output = self.fixed_output;
            s.n_ctx = self.replay_ctx.unwrap_or(s.n_ctx);
            s.chat_template = self.chat_template.clone();
            s.max_conversations = self.conversations;
            out.push(crate::tasks::Task::Replay(s));
        }
        for data in self.perplexity {
            out.push(crate::tasks::Task::Perplexity(PerplexitySpec {
                data,
                n_ctx: self.ppl_ctx.unwrap_or(512),
                max_chunks: self.ppl_chunks,
                save_log_probs: self.kl_divergence_base.clone(),
            }));
        }
        for base in self.kl_divergence {
            let spec = KlDivergenceSpec::open(base.clone()).map_err(|e| CliError::File {
                flag: "--kl-divergence".into(),
                why: e.to_string(),
            })?;
            out.push(crate::tasks::Task::KlDivergence(spec));
        }
        for data in self.choices {
            out.push(crate::tasks::Task::MultipleChoice(ChoiceSpec {
                data,
                limit: self.limit,
            }));
        }
        Ok(out)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CliError {
    /// What clap found wrong: an unknown flag, a missing or bad value, a second filter, two
    /// baselines at once. Its text names the flag, the value and what was expected.
    #[error("{0}")]
    Usage(String),
    #[error("option `{flag}`: {why}")]
    File { flag: String, why: String },
    #[error("option `{0}` only applies with {1}")]
    OnlyWith(String, &'static str),
    #[error("option `{flag}`: `{value}` is not {expected}")]
    BadValue {
        flag: String,
        value: String,
        expected: &'static str,
    },
}

impl CliError {
    fn from_clap(e: &clap::Error) -> CliError {
        // clap's text starts "error: " and ends with a pointer to --help; melt prefixes its
        // own name, so the first is dropped.
        let text = e.to_string();
        let text = text.strip_prefix("error: ").unwrap_or(&text);
        CliError::Usage(text.trim_end().to_string())
    }
}

impl Args {
    /// Parses arguments without the program name.
    pub fn parse<I, S>(args: I) -> Result<Args, CliError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args = sweep::long_forms(args.into_iter().map(Into::into));
        let argv = std::iter::once("bench".to_string()).chain(args);
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli.into_args(),
            Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => Ok(Args {
                help: true,
                ..Args::default()
            }),
            Err(e) => Err(CliError::from_clap(&e)),
        }
    }
}

impl Cli {
    fn into_args(self) -> Result<Args, CliError> {
        let tasks = TaskArgs {
            replay: self.replay,
            perplexity: self.perplexity,
            choices: self.choices,
            think_time_s: self.think_time.map(|d| d.as_secs_f64()),
            conversation_gap_s: self.conversation_gap.map(|d| d.as_secs_f64()),
            max_output: self.max_output,
            fixed_output: self.fixed_output,
            chat_template: self.chat_template,
            replay_ctx: self.replay_ctx,
            conversations: self.conversations,
            ppl_ctx: self.ppl_ctx,
            ppl_chunks: self.ppl_chunks,
            kl_divergence_base: self.kl_divergence_base,
            kl_divergence: self.kl_divergence,
            limit: self.limit,
        }
        .tasks()?;
        if self.tasks_only && tasks.is_empty() {
            return Err(CliError::OnlyWith(
                "--tasks-only".into(),
                "--replay, --perplexity, --kl-divergence or --choices",
            ));
        }
        // --quick sets the defaults; explicit options still win.
        let base = if self.quick {
            Sampling::quick()
        } else {
            Sampling::default()
        };
        let cooldown =
            (self.cooldown || self.cooldown_tolerance.is_some() || self.cooldown_max.is_some())
                .then(|| {
                    let d = crate::probe::thermal::Cooldown::default();
                    crate::probe::thermal::Cooldown {
                        tolerance_c: self.cooldown_tolerance.unwrap_or(d.tolerance_c),
                        max_wait: self.cooldown_max.unwrap_or(d.max_wait),
                    }
                });
        let sampling = Sampling {
            warm_up: self.warm_up_time.unwrap_or(base.warm_up),
            min_warm_up_runs: base.min_warm_up_runs,
            measurement_time: self.measurement_time.unwrap_or(base.measurement_time),
            fixed_samples: self.sample_size,
            min_samples: self.min_samples.unwrap_or(base.min_samples),
            max_samples: self.max_samples.unwrap_or(base.max_samples),
            target_rel_ci: self.target_ci.unwrap_or(base.target_rel_ci),
            probe_period: self.probe_period.map_or(base.probe_period, |p| p.0),
            sysroot: self.sysroot.unwrap_or(base.sysroot),
            sustained: self.sustained,
            cooldown,
            remeasure_bandwidth: self.remeasure_bandwidth,
        };
        if sampling.min_samples > sampling.max_samples {
            return Err(CliError::BadValue {
                flag: "--min-samples".into(),
                value: sampling.min_samples.to_string(),
                expected: "at most --max-samples",
            });
        }
        let baseline = match (
            self.save_baseline,
            self.baseline,
            self.baseline_lenient,
            self.discard_baseline,
        ) {
            (_, _, _, true) => BaselineMode::Discard,
            (_, Some(name), _, _) => BaselineMode::CompareStrict(name),
            (_, _, Some(name), _) => BaselineMode::CompareLenient(name),
            (Some(name), ..) => BaselineMode::Save(name),
            _ => BaselineMode::default(),
        };
        // criterion's rule: `--bench` alone measures; no `--bench`, or `--test`, tests.
        let mode = if self.list {
            Mode::List(self.format)
        } else if self.worker {
            Mode::Worker
        } else if self.test || !self.bench {
            Mode::Test
        } else {
            Mode::Benchmark
        };
        let _ = (self.verbose, self.color, self.plotting_backend);
        let _ = (self.nocapture, self.show_output, self.include_ignored);
        Ok(Args {
            mode,
            output_format: self.output_format,
            message_format: self.message_format,
            quiet: self.quiet,
            noplot: self.noplot,
            filter: self.filter,
            exact: self.exact,
            help: false,
            baseline,
            sampling,
            models: self.model,
            backends: self.backend,
            nresamples: self.nresamples,
            confidence_level: self.confidence_level,
            significance_level: self.significance_level,
            noise_threshold: self.noise_threshold,
            target_dir: self.target_dir,
            device: self.device,
            skip: self.skip,
            tasks,
            tasks_only: self.tasks_only,
            sweep: SweepArgs {
                n_prompt: sweep::joined(self.n_prompt),
                n_gen: sweep::joined(self.n_gen),
                pg: self.pg,
                depth: sweep::joined(self.n_depth),
                threads: sweep::joined(self.threads),
                n_batch: sweep::joined(self.batch_size),
                n_ubatch: sweep::joined(self.ubatch_size),
                type_k: sweep::joined(self.cache_type_k),
                type_v: sweep::joined(self.cache_type_v),
                flash_attn: sweep::joined(self.flash_attn),
                n_gpu_layers: sweep::joined(self.n_gpu_layers),
            },
        })
    }
}

#[cfg(test)]
mod tests;
