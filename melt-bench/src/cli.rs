//! Arguments of a bench binary: criterion's where criterion has one, so `cargo bench -- ...`
//! habits carry over, plus melt's own. Parsing only validates; nothing is probed here.

use std::path::PathBuf;
use std::time::Duration;

use crate::criterion_format::BaselineMode;
use crate::datasets::DataSource;

/// How a case decides it has enough samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub warm_up: Duration,
    /// Time budget for measuring one case (after warm-up).
    pub measurement_time: Duration,
    /// Exactly this many samples (criterion's `--sample-size`); disables adaptive stopping.
    pub fixed_samples: Option<usize>,
    pub min_samples: usize,
    pub max_samples: usize,
    /// Stop once the 95% CI half-width of mean tok/s is within this fraction of the mean.
    pub target_rel_ci: f64,
    /// How often the probes' sampler reads memory, energy and temperature (`None`: off).
    pub probe_period: Option<Duration>,
    /// Where `/sys` and `/proc` are read (a fixture tree in tests).
    pub sysroot: std::path::PathBuf,
    /// Sustained mode: repeat each case back to back for this long, whatever the noise.
    pub sustained: Option<Duration>,
    /// `--cooldown`: wait for the device to cool to its starting temperature between cases.
    pub cooldown: Option<crate::probe::thermal::Cooldown>,
    /// Measure the memory bandwidth again rather than take the device's cached figure.
    pub remeasure_bandwidth: bool,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            warm_up: Duration::from_secs(1),
            measurement_time: Duration::from_secs(20),
            fixed_samples: None,
            // The stopping rule is a t-interval, honest at n = 3 (it then needs CV <~ 0.8%
            // for a 2% target); more samples are taken whenever the noise asks for them.
            min_samples: 3,
            max_samples: 100,
            target_rel_ci: 0.02,
            // 50 ms: every wake-up preempts a worker when the case uses every core; at 20 ms
            // that cost 1–4% of tok/s on 2 cores, at 50 ms 0–3% (README: How it measures).
            probe_period: Some(Duration::from_millis(50)),
            sysroot: "/".into(),
            sustained: None,
            cooldown: None,
            remeasure_bandwidth: false,
        }
    }
}

impl Sampling {
    /// criterion's `--quick`: fewer samples, a looser target, short budgets.
    pub fn quick() -> Sampling {
        Sampling {
            warm_up: Duration::from_millis(300),
            measurement_time: Duration::from_secs(5),
            fixed_samples: None,
            min_samples: 3,
            max_samples: 20,
            target_rel_ci: 0.05,
            ..Sampling::default()
        }
    }
}

/// What goes to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// The markdown table at the end (progress on stderr).
    #[default]
    Table,
    /// One JSON event per line as it happens (the `samples.jsonl` events, then `run_end`),
    /// for hosts driving remote devices; nothing else on stdout.
    JsonStream,
}

/// Parsed arguments.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Args {
    pub output_format: OutputFormat,
    /// Regex over case ids (`group/function/value`); criterion's positional filter.
    pub filter: Option<String>,
    pub exact: bool,
    pub list: bool,
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
    /// The device this run is on (set by `cargo xtask bench --target`): case ids carry it
    /// as ` @NAME` at the end of their value, so devices compare side by side.
    pub device: Option<String>,
    /// Case ids not to run (exact; repeatable): what `--resume` already has.
    pub skip: Vec<String>,
    /// Replay, perplexity and multiple-choice tasks (`--replay`, `--perplexity`, `--choices`).
    pub tasks: Vec<crate::tasks::Task>,
    /// Run the tasks only, not the suite's pp/tg workloads.
    pub tasks_only: bool,
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
    limit: Option<usize>,
}

impl TaskArgs {
    fn tasks(self) -> Result<Vec<crate::tasks::Task>, CliError> {
        use crate::tasks::{choice::ChoiceSpec, perplexity::PerplexitySpec, replay::ReplaySpec};
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
            }));
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
    #[error("unknown option `{0}` (see --help)")]
    Unknown(String),
    #[error("option `{0}` needs a value")]
    MissingValue(String),
    #[error("option `{flag}`: `{value}` is not {expected}")]
    BadValue {
        flag: String,
        value: String,
        expected: &'static str,
    },
    #[error("more than one filter given: `{0}` and `{1}`")]
    TwoFilters(String, String),
    #[error("option `{0}` only applies with {1}")]
    OnlyWith(String, &'static str),
    #[error("option `{0}`: {1}")]
    Data(String, String),
}

pub const HELP: &str = "\
A melt bench target. Usage: cargo bench --bench <target> -- [OPTIONS] [FILTER]

  FILTER                       regex over case ids (model/workload/backend params)
  --list                       list the cases and exit
  --exact                      FILTER is an exact case id
  --model PATH                 bench this local model file instead of the suite's (repeatable)
  --backend NAME               only this backend, e.g. llama.cpp (repeatable)
  --save-baseline NAME         compare with NAME if present, then save this run as NAME [base]
  --baseline NAME              compare with NAME, which must exist; save nothing but new/
  --baseline-lenient NAME      compare with NAME if it exists
  --discard-baseline           save nothing but new/
  --quick                      fewer samples, 5% target, short budgets
  --sample-size N              exactly N samples per case (no adaptive stopping)
  --warm-up-time SECS          warm-up per case [1]
  --measurement-time SECS      time budget per case [20]
  --min-samples N              adaptive stopping: at least N samples [3]
  --max-samples N              adaptive stopping: at most N samples [100]
  --target-ci PCT              adaptive stopping: 95% CI half-width of tok/s, % of mean [2]
  --probe-period MS            memory/energy/temperature sampling period, 0 = off [50]
  --sysroot DIR                read /sys and /proc under DIR (fixture trees) [/]
  --remeasure-bandwidth        measure the memory bandwidth (the roofline's roof) again instead
                               of using this device's cached figure (kept a week)
  --cooldown                   before each case, wait until the hottest thermal zone is back
                               near its temperature at the run's start
  --cooldown-tolerance C       how near, in °C [2]
  --cooldown-max SECS          wait at most this long, then run warm and say so [300]
  --sustained DURATION         repeat each case back to back for DURATION (90s, 10m, 1h):
                               throughput, power and temperature over time, and when
                               throughput fell 10% below its start
  --nresamples N               bootstrap resamples [100000]
  --confidence-level X         [0.95]
  --significance-level X       [0.05]
  --noise-threshold X          [0.01]
  --target-dir DIR             write criterion/ and melt/ under DIR [the cargo target dir]
  --device NAME                tag every case id with ` @NAME` (set by cargo xtask bench --target)
  --skip CASE-ID               do not run this case (exact id, repeatable; used by --resume)

Tasks (once per model × backend, at the sweep's last point, after the workloads):
  --replay NAME|FILE           replay conversations (a JSON list of lists of user prompts)
                               with the model's chat template, answers kept in context;
                               shipped: conversations, sustained (the paper's)
  --think-time SECS            between a turn's answer and the next prompt [5]
  --conversation-gap SECS      between conversations (the context is emptied) [60]
  --max-output N               an answer ends at end of turn or after N tokens [256]
  --fixed-output N             every answer exactly N tokens (end of turn suppressed)
  --chat-template NAME|FILE    gemma, chatml, llama3 or a Jinja file [the model's own]
  --replay-ctx N               the chat's context; when full, the oldest turns go [4096]
  --conversations N            replay only the first N conversations
  --perplexity NAME|FILE       perplexity of a text file, llama-perplexity's method;
                               shipped: tinyshakespeare
  --ppl-ctx N                  tokens per chunk; the second half of each is scored [512]
  --ppl-chunks N               score at most N chunks [all]
  --choices NAME|FILE          multiple-choice accuracy (ARC/OpenBookQA or HellaSwag JSONL,
                               TruthfulQA.csv) by log-likelihood, as lm-evaluation-harness;
                               shipped: openbookqa, truthfulqa
  --limit N                    a seeded subset of N questions
  --tasks-only                 skip the suite's pp/tg workloads

  --output-format F            `table` [default] or `json-stream`: one JSON event per line on
                               stdout as it happens (case_start, sample, case_end, error, run_end)
  --bench, --noplot, --color C, --verbose, --quiet   accepted for criterion compatibility
";

/// A task's data: a shipped set's name or a file (see [`DataSource::from_arg`]).
fn data(flag: &str, value: &str) -> Result<DataSource, CliError> {
    DataSource::from_arg(value).map_err(|e| CliError::Data(flag.into(), e.to_string()))
}

fn parse_num<T: std::str::FromStr>(
    flag: &str,
    value: &str,
    expected: &'static str,
) -> Result<T, CliError> {
    value.parse().map_err(|_| CliError::BadValue {
        flag: flag.into(),
        value: value.into(),
        expected,
    })
}

fn secs(flag: &str, value: &str) -> Result<Duration, CliError> {
    let s: f64 = parse_num(flag, value, "a number of seconds")?;
    if !(s.is_finite() && s >= 0.0) {
        return Err(CliError::BadValue {
            flag: flag.into(),
            value: value.into(),
            expected: "a non-negative number of seconds",
        });
    }
    Ok(Duration::from_secs_f64(s))
}

/// `90`, `90s`, `10m`, `1h`, `1.5m`.
fn duration(flag: &str, value: &str) -> Result<Duration, CliError> {
    let bad = || CliError::BadValue {
        flag: flag.into(),
        value: value.into(),
        expected: "a positive duration such as 90s, 10m or 1h",
    };
    let (num, unit) = match value.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => value.split_at(i),
        None => (value, "s"),
    };
    let scale = match unit {
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    match num.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(Duration::from_secs_f64(x * scale)),
        _ => Err(bad()),
    }
}

fn fraction(flag: &str, value: &str) -> Result<f64, CliError> {
    let x: f64 = parse_num(flag, value, "a number between 0 and 1")?;
    if !(x > 0.0 && x < 1.0) {
        return Err(CliError::BadValue {
            flag: flag.into(),
            value: value.into(),
            expected: "a number between 0 and 1",
        });
    }
    Ok(x)
}

fn count(flag: &str, value: &str) -> Result<usize, CliError> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(CliError::BadValue {
            flag: flag.into(),
            value: value.into(),
            expected: "a positive whole number",
        }),
    }
}

impl Args {
    /// Parses arguments without the program name.
    pub fn parse<I, S>(args: I) -> Result<Args, CliError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut out = Args::default();
        let mut quick = false;
        let mut sampling = Sampling::default();
        let mut explicit: Vec<&'static str> = Vec::new();
        let mut tasks = TaskArgs::default();
        let mut it = args.into_iter().map(Into::into).peekable();
        while let Some(arg) = it.next() {
            // `--flag=value` is the same as `--flag value`.
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = |name: &str| -> Result<String, CliError> {
                match inline.clone() {
                    Some(v) => Ok(v),
                    None => it.next().ok_or_else(|| CliError::MissingValue(name.into())),
                }
            };
            match flag.as_str() {
                "--bench" | "--noplot" | "--verbose" | "-v" | "--quiet" | "--nocapture" => {}
                "--color" | "--colour" | "--format" | "--plotting-backend" => {
                    value(&flag)?;
                }
                "--output-format" => {
                    let v = value(&flag)?;
                    out.output_format = match v.as_str() {
                        "table" => OutputFormat::Table,
                        "json-stream" => OutputFormat::JsonStream,
                        _ => {
                            return Err(CliError::BadValue {
                                flag,
                                value: v,
                                expected: "`table` or `json-stream`",
                            })
                        }
                    };
                }
                "--help" | "-h" => out.help = true,
                "--list" => out.list = true,
                "--exact" => out.exact = true,
                "--quick" => quick = true,
                "--model" => out.models.push(PathBuf::from(value(&flag)?)),
                "--backend" => out.backends.push(value(&flag)?),
                "--save-baseline" | "-s" => out.baseline = BaselineMode::Save(value(&flag)?),
                "--baseline" | "-b" => out.baseline = BaselineMode::CompareStrict(value(&flag)?),
                "--baseline-lenient" => out.baseline = BaselineMode::CompareLenient(value(&flag)?),
                "--discard-baseline" => out.baseline = BaselineMode::Discard,
                "--sample-size" => {
                    sampling.fixed_samples = Some(count(&flag, &value(&flag)?)?);
                    explicit.push("fixed");
                }
                "--warm-up-time" => {
                    sampling.warm_up = secs(&flag, &value(&flag)?)?;
                    explicit.push("warm_up");
                }
                "--measurement-time" => {
                    sampling.measurement_time = secs(&flag, &value(&flag)?)?;
                    explicit.push("measurement_time");
                }
                "--probe-period" => {
                    let v = value(&flag)?;
                    let ms: f64 = parse_num(&flag, &v, "milliseconds")?;
                    if !(ms >= 0.0 && ms.is_finite()) {
                        return Err(CliError::BadValue {
                            flag: flag.clone(),
                            value: v,
                            expected: "milliseconds ≥ 0 (0 turns the probes off)",
                        });
                    }
                    sampling.probe_period = (ms > 0.0).then(|| Duration::from_secs_f64(ms / 1e3));
                    explicit.push("probe_period");
                }
                "--sysroot" => {
                    let v = value(&flag)?;
                    if !std::path::Path::new(&v).is_dir() {
                        return Err(CliError::BadValue {
                            flag: flag.clone(),
                            value: v,
                            expected: "an existing directory",
                        });
                    }
                    sampling.sysroot = v.into();
                }
                "--remeasure-bandwidth" => sampling.remeasure_bandwidth = true,
                "--cooldown" => {
                    sampling.cooldown.get_or_insert_with(Default::default);
                }
                "--cooldown-tolerance" => {
                    let v = value(&flag)?;
                    let c: f64 = parse_num(&flag, &v, "degrees Celsius")?;
                    if !(c >= 0.0 && c.is_finite()) {
                        return Err(CliError::BadValue {
                            flag,
                            value: v,
                            expected: "degrees Celsius ≥ 0",
                        });
                    }
                    sampling
                        .cooldown
                        .get_or_insert_with(Default::default)
                        .tolerance_c = c;
                }
                "--cooldown-max" => {
                    let d = secs(&flag, &value(&flag)?)?;
                    sampling
                        .cooldown
                        .get_or_insert_with(Default::default)
                        .max_wait = d;
                }
                "--sustained" => {
                    sampling.sustained = Some(duration(&flag, &value(&flag)?)?);
                }
                "--min-samples" => {
                    sampling.min_samples = count(&flag, &value(&flag)?)?;
                    explicit.push("min");
                }
                "--max-samples" => {
                    sampling.max_samples = count(&flag, &value(&flag)?)?;
                    explicit.push("max");
                }
                "--target-ci" => {
                    let v = value(&flag)?;
                    let pct: f64 = parse_num(&flag, &v, "a percentage")?;
                    if !(pct > 0.0 && pct < 100.0) {
                        return Err(CliError::BadValue {
                            flag,
                            value: v,
                            expected: "a percentage between 0 and 100",
                        });
                    }
                    sampling.target_rel_ci = pct / 100.0;
                    explicit.push("target");
                }
                "--nresamples" => out.nresamples = Some(count(&flag, &value(&flag)?)?),
                "--confidence-level" => {
                    out.confidence_level = Some(fraction(&flag, &value(&flag)?)?)
                }
                "--significance-level" => {
                    out.significance_level = Some(fraction(&flag, &value(&flag)?)?)
                }
                "--noise-threshold" => {
                    let v = value(&flag)?;
                    let x: f64 = parse_num(&flag, &v, "a non-negative number")?;
                    if !(x >= 0.0 && x.is_finite()) {
                        return Err(CliError::BadValue {
                            flag,
                            value: v,
                            expected: "a non-negative number",
                        });
                    }
                    out.noise_threshold = Some(x);
                }
                "--target-dir" => out.target_dir = Some(PathBuf::from(value(&flag)?)),
                "--device" => out.device = Some(value(&flag)?),
                "--skip" => out.skip.push(value(&flag)?),
                "--replay" => tasks.replay.push(data(&flag, &value(&flag)?)?),
                "--perplexity" => tasks.perplexity.push(data(&flag, &value(&flag)?)?),
                "--choices" => tasks.choices.push(data(&flag, &value(&flag)?)?),
                "--tasks-only" => out.tasks_only = true,
                "--think-time" => {
                    tasks.think_time_s = Some(secs(&flag, &value(&flag)?)?.as_secs_f64())
                }
                "--conversation-gap" => {
                    tasks.conversation_gap_s = Some(secs(&flag, &value(&flag)?)?.as_secs_f64())
                }
                "--max-output" => tasks.max_output = Some(count(&flag, &value(&flag)?)?),
                "--fixed-output" => tasks.fixed_output = Some(count(&flag, &value(&flag)?)?),
                "--chat-template" => tasks.chat_template = Some(value(&flag)?),
                "--replay-ctx" => tasks.replay_ctx = Some(count(&flag, &value(&flag)?)?),
                "--conversations" => tasks.conversations = Some(count(&flag, &value(&flag)?)?),
                "--ppl-ctx" => tasks.ppl_ctx = Some(count(&flag, &value(&flag)?)?),
                "--ppl-chunks" => tasks.ppl_chunks = Some(count(&flag, &value(&flag)?)?),
                "--limit" => tasks.limit = Some(count(&flag, &value(&flag)?)?),
                f if f.starts_with('-') => return Err(CliError::Unknown(arg)),
                _ => match &out.filter {
                    Some(prev) => return Err(CliError::TwoFilters(prev.clone(), arg)),
                    None => out.filter = Some(arg),
                },
            }
        }
        out.tasks = tasks.tasks()?;
        if out.tasks_only && out.tasks.is_empty() {
            return Err(CliError::OnlyWith(
                "--tasks-only".into(),
                "--replay, --perplexity or --choices",
            ));
        }
        if quick {
            // --quick sets the defaults; explicit options still win.
            let q = Sampling::quick();
            if !explicit.contains(&"warm_up") {
                sampling.warm_up = q.warm_up;
            }
            if !explicit.contains(&"measurement_time") {
                sampling.measurement_time = q.measurement_time;
            }
            if !explicit.contains(&"min") {
                sampling.min_samples = q.min_samples;
            }
            if !explicit.contains(&"max") {
                sampling.max_samples = q.max_samples;
            }
            if !explicit.contains(&"target") {
                sampling.target_rel_ci = q.target_rel_ci;
            }
        }
        if sampling.min_samples > sampling.max_samples {
            return Err(CliError::BadValue {
                flag: "--min-samples".into(),
                value: sampling.min_samples.to_string(),
                expected: "at most --max-samples",
            });
        }
        out.sampling = sampling;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criterion_style_arguments() {
        let a = Args::parse([
            "--bench",
            "pp512",
            "--save-baseline",
            "main",
            "--sample-size=12",
            "--warm-up-time",
            "0.5",
        ])
        .unwrap();
        assert_eq!(a.filter.as_deref(), Some("pp512"));
        assert_eq!(a.baseline, BaselineMode::Save("main".into()));
        assert_eq!(a.sampling.fixed_samples, Some(12));
        assert_eq!(a.sampling.warm_up, Duration::from_millis(500));
        let a = Args::parse(["--baseline", "main", "--model", "/m/x.gguf", "--list"]).unwrap();
        assert_eq!(a.baseline, BaselineMode::CompareStrict("main".into()));
        assert_eq!(a.models, vec![PathBuf::from("/m/x.gguf")]);
        assert!(a.list);
        assert_eq!(
            Args::parse(Vec::<String>::new()).unwrap().baseline,
            BaselineMode::default()
        );
    }

    #[test]
    fn output_formats() {
        assert_eq!(
            Args::parse(Vec::<String>::new()).unwrap().output_format,
            OutputFormat::Table
        );
        let a = Args::parse(["--output-format", "json-stream"]).unwrap();
        assert_eq!(a.output_format, OutputFormat::JsonStream);
        let e = Args::parse(["--output-format=xml"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("xml") && e.contains("json-stream"), "{e}");
    }

    #[test]
    fn device_tag_and_skipped_cases() {
        let a = Args::parse([
            "--device",
            "pixel 7; rm -rf /",
            "--skip",
            "m/pp4/b t=1 @x",
            "--skip=m/tg4/b t=1 @x",
        ])
        .unwrap();
        assert_eq!(a.device.as_deref(), Some("pixel 7; rm -rf /"));
        assert_eq!(a.skip, ["m/pp4/b t=1 @x", "m/tg4/b t=1 @x"]);
        assert_eq!(
            Args::parse(["--skip"]).unwrap_err(),
            CliError::MissingValue("--skip".into())
        );
    }

    #[test]
    fn quick_changes_defaults_but_not_explicit_options() {
        let a = Args::parse(["--quick", "--target-ci", "1"]).unwrap();
        assert_eq!(
            a.sampling.measurement_time,
            Sampling::quick().measurement_time
        );
        assert_ne!(
            a.sampling.measurement_time,
            Sampling::default().measurement_time
        );
        assert!((a.sampling.target_rel_ci - 0.01).abs() < 1e-12);
    }

    #[test]
    fn bad_flags_are_named() {
        assert_eq!(
            Args::parse(["--sample-sise", "3"]).unwrap_err(),
            CliError::Unknown("--sample-sise".into())
        );
        let e = Args::parse(["--sample-size", "zero"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--sample-size") && e.contains("zero"), "{e}");
        let e = Args::parse(["--baseline"]).unwrap_err();
        assert_eq!(e, CliError::MissingValue("--baseline".into()));
        let e = Args::parse(["--warm-up-time", "-1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("non-negative"), "{e}");
        assert!(matches!(
            Args::parse(["a", "b"]),
            Err(CliError::TwoFilters(..))
        ));
        let e = Args::parse(["--min-samples", "9", "--max-samples", "3"]).unwrap_err();
        assert!(e.to_string().contains("at most --max-samples"));
        for bad in ["0", "-5m", "10d", "m", "1e400"] {
            let e = Args::parse(["--sustained", bad]).unwrap_err().to_string();
            assert!(
                e.contains("--sustained") && e.contains("90s, 10m"),
                "{bad}: {e}"
            );
        }
        let e = Args::parse(["--cooldown-tolerance", "-1"]).unwrap_err();
        assert!(e.to_string().contains("degrees Celsius"), "{e}");
    }

    #[test]
    fn sustained_and_cooldown() {
        let s = |v: &str| Args::parse(["--sustained", v]).unwrap().sampling.sustained;
        assert_eq!(s("90"), Some(Duration::from_secs(90)));
        assert_eq!(s("90s"), Some(Duration::from_secs(90)));
        assert_eq!(s("1.5m"), Some(Duration::from_secs(90)));
        assert_eq!(s("2h"), Some(Duration::from_secs(7200)));
        let a = Args::parse(["--cooldown"])
            .unwrap()
            .sampling
            .cooldown
            .unwrap();
        assert_eq!(a, crate::probe::thermal::Cooldown::default());
        let a = Args::parse(["--cooldown-tolerance", "0.5", "--cooldown-max=60"])
            .unwrap()
            .sampling
            .cooldown
            .unwrap();
        assert_eq!((a.tolerance_c, a.max_wait), (0.5, Duration::from_secs(60)));
        assert_eq!(Args::parse(["--quick"]).unwrap().sampling.cooldown, None);
    }
}
