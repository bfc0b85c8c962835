//! `cargo xtask bench --target DEVICE`: push the bench binary, its libraries and its models
//! to each device, run it headless with `--bench --message-format json`, and turn the stream
//! into results on the host — criterion files, history, summary, HTML — with the device's
//! name in every case id.
//!
//! The stream *is* the pull: each event is appended to the host's
//! `target/melt/runs/<id>/samples.jsonl` the moment it arrives, so a device lost mid-run
//! keeps every sample it sent, and `--resume` runs only the cases that did not finish.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use melt_bench::cli::Args;
use melt_bench::criterion_format::make_filename_safe;
use melt_bench::datasets::DataSource;
use melt_bench::driver::{analysis_config, replay, Finish, Outcome, Results};
use melt_bench::store::{self, read_events, CaseError, Event, EventLog, Layout};
use serde::{Deserialize, Serialize};

use super::shell::{join, quote};
use super::Device;

/// What `bench --target` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: String,
    /// Continue the device's latest unfinished run.
    pub resume: bool,
    /// A case that sends nothing for this long is killed.
    pub case_timeout: Duration,
    pub cross: bool,
    /// A bench binary built already (skips the build; its triple must be the devices').
    pub bench_bin: Option<PathBuf>,
    pub bench: String,
    /// Arguments for the bench binary.
    pub args: Vec<String>,
    /// Back-to-back runs of the suite, each recorded on its own (the history then has the
    /// run-to-run spread the gate widens its intervals by).
    pub rounds: usize,
    /// Cargo features of the bench build (`libtorch`: built against, and shipped with, the
    /// libtorch `setup libtorch` made for the device's triple).
    pub features: Vec<String>,
}

/// A model file to put in the device's cache.
#[derive(Debug, Clone)]
pub struct ModelFile {
    pub local: PathBuf,
    pub sha256: String,
    pub file: String,
    /// The cache directory it goes in on the device (its hash, or an export's cache key).
    pub dir: String,
    /// Files that go beside it (an ONNX model's `tokenizer.json`, an export's recorded hash).
    pub beside: Vec<PathBuf>,
}

impl ModelFile {
    pub fn new(local: &Path) -> Result<ModelFile> {
        let sha256 = melt_bench::model::sha256_file(local)
            .with_context(|| format!("{}", local.display()))?;
        let tokenizer = local.with_file_name("tokenizer.json");
        Ok(ModelFile {
            local: local.to_path_buf(),
            dir: sha256.clone(),
            sha256,
            beside: [tokenizer].into_iter().filter(|p| p.is_file()).collect(),
            file: local
                .file_name()
                .context("a model path without a file name")?
                .to_string_lossy()
                .into_owned(),
        })
    }

    /// Where the device keeps it: the layout of melt's host cache, so a registry model is
    /// found by the device's own `Cache` and a path model is pushed once per content.
    fn remote(&self, workdir: &str) -> String {
        format!("{workdir}/cache/models/{}/{}", self.dir, self.file)
    }

    /// Where the device keeps a task's data file: by content, under its own name (the name
    /// is part of the task's id, so a device's results line up with the host's).
    fn remote_data(&self, workdir: &str) -> String {
        format!("{workdir}/cache/data/{}/{}", self.sha256, self.file)
    }
}

/// The bench binary's arguments split into what the host handles and what the device gets.
#[derive(Debug, Clone)]
pub struct DeviceArgs {
    /// Parsed, for the host's analysis settings and baseline mode.
    pub parsed: Args,
    /// `--model` files, pushed by hash and replaced by their device paths.
    pub models: Vec<ModelFile>,
    /// The tasks' data files (`--replay`, `--perplexity`, `--choices`, a `--chat-template`
    /// file) with their flags, pushed by hash like the models.
    pub data: Vec<(String, ModelFile)>,
    rest: Vec<String>,
}

impl DeviceArgs {
    pub fn parse(args: &[String]) -> Result<DeviceArgs> {
        let mut rest = Vec::new();
        let mut models = Vec::new();
        let mut data = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (a.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .unwrap_or_default()
            };
            match flag {
                "--model" => models.push(ModelFile::new(Path::new(&value()))?),
                // A shipped set is in the binary: its name travels, spelled unambiguously.
                "--replay" | "--perplexity" | "--choices" => {
                    let v = value();
                    match DataSource::from_arg(&v).with_context(|| format!("{flag} {v}"))? {
                        source @ DataSource::Shipped(_) => {
                            rest.extend([flag.to_string(), source.to_string()])
                        }
                        DataSource::File(path) => {
                            let file = ModelFile::new(&path)
                                .with_context(|| format!("{flag} {v}: the data file to push"))?;
                            data.push((flag.to_string(), file));
                        }
                    }
                }
                // A template file travels; a built-in name (gemma, chatml...) is passed on.
                "--chat-template" => {
                    let v = value();
                    if Path::new(&v).is_file() {
                        data.push((flag.to_string(), ModelFile::new(Path::new(&v))?));
                    } else {
                        rest.extend([flag.to_string(), v]);
                    }
                }
                "--target-dir" => {
                    value();
                }
                "--message-format" | "--device" | "--skip" => {
                    bail!("`{flag}` is set by `cargo xtask bench --target`, not by hand")
                }
                _ => rest.push(a.clone()),
            }
        }
        let parsed = Args::parse(args.iter().cloned()).context("bench arguments")?;
        Ok(DeviceArgs {
            parsed,
            models,
            data,
            rest,
        })
    }

    /// The device-side arguments, with `mode` ([`LIST_MODE`] or [`RUN_MODE`]).
    fn for_device(&self, d: &Device, mode: &[&str], skip: &BTreeSet<String>) -> Vec<String> {
        let mut v = self.rest.clone();
        for m in &self.models {
            v.push("--model".into());
            v.push(m.remote(&d.workdir));
        }
        for (flag, f) in &self.data {
            v.extend([flag.clone(), f.remote_data(&d.workdir)]);
        }
        v.extend(mode.iter().map(|a| a.to_string()));
        v.extend(["--device".into(), d.name.clone()]);
        for s in skip {
            v.extend(["--skip".into(), s.clone()]);
        }
        v
    }
}

/// The cargo features of a device build: the engines (the default ones and those asked for),
/// without `host-reports` — the device keeps its event log, the host writes the history and
/// the page from the stream, so no SQLite or HTML writer is built for the device.
fn device_features(asked: &[String]) -> [String; 3] {
    let mut features = vec!["llama-cpp".to_string(), "onnxruntime".to_string()];
    features.extend(
        asked
            .iter()
            .filter(|f| !features.contains(f))
            .cloned()
            .collect::<Vec<_>>(),
    );
    [
        "--no-default-features".into(),
        "--features".into(),
        features.join(","),
    ]
}

/// How the host asks the device's bench binary for its cases: JSON, not criterion's text.
const LIST_MODE: &[&str] = &["--list", "--format", "json"];

/// How the host runs it: measured (the binary runs directly, so `--bench` is not added by
/// cargo), every event streamed on stdout.
const RUN_MODE: &[&str] = &["--bench", "--message-format", "json"];

/// The case and task ids in `--list --format json` output (the transport may add other
/// lines, such as the exit mark).
fn listed_ids(stdout: &str) -> Result<BTreeSet<String>> {
    #[derive(Deserialize)]
    struct Listed {
        id: String,
    }
    let line = stdout
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .find(|l| l.starts_with('['))
        .context("no JSON list on stdout")?;
    let listed: Vec<Listed> = serde_json::from_str(line).context("not a JSON list of cases")?;
    Ok(listed.into_iter().map(|l| l.id).collect())
}

/// `device.json` beside a device run's `samples.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeviceRunState {
    device: String,
    /// `running`, `interrupted` or `complete`.
    state: String,
    props: BTreeMap<String, String>,
}

fn write_state(run_dir: &Path, s: &DeviceRunState) -> Result<()> {
    store::write_json(&run_dir.join("device.json"), s)
        .with_context(|| format!("writing {}", run_dir.join("device.json").display()))
}

/// The latest run of `device` that did not complete.
fn unfinished_run(layout: &Layout, device: &str) -> Option<PathBuf> {
    std::fs::read_dir(layout.runs_dir())
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(p.join("device.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<DeviceRunState>(&t).ok())
                .is_some_and(|s| s.device == device && s.state != "complete")
        })
        .max()
}

/// The script that runs the bench binary on the device. Everything melt puts in it is quoted;
/// the exit status comes back as the last stdout line (`adb shell` does not forward it).
pub fn run_script(d: &Device, binary: &str, args: &[String], pid_file: &str) -> String {
    let w = quote(&d.workdir);
    let wd = |sub: &str| quote(&format!("{}/{sub}", d.workdir));
    let mut env: Vec<String> = vec![
        format!(
            "LD_LIBRARY_PATH={}\"${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\"",
            wd("lib")
        ),
        format!("MELT_CACHE_DIR={}", wd("cache")),
        format!("MELT_CONFIG={}", wd("melt.toml")),
        format!("MELT_TARGET_DIR={}", wd("target")),
    ];
    env.extend(d.env.iter().map(|(k, v)| format!("{k}={}", quote(v))));
    let android = d.kind == super::Kind::Adb;
    let mut s = format!("cd {w} || exit 97\n");
    if android {
        // Keep the screen (and so the CPU) awake while plugged in; the old setting comes back.
        s.push_str("melt_stay=$(settings get global stay_on_while_plugged_in 2>/dev/null)\nsvc power stayon true 2>/dev/null\n");
    }
    s.push_str(&format!(
        "{} {} {} </dev/null &\nmelt_pid=$!\necho \"$melt_pid\" > {}\nwait \"$melt_pid\"\nmelt_code=$?\n",
        env.join(" "),
        quote(binary),
        join(args),
        quote(pid_file)
    ));
    if android {
        s.push_str("[ -n \"$melt_stay\" ] && settings put global stay_on_while_plugged_in \"$melt_stay\" 2>/dev/null\n");
    }
    s.push_str(&format!(
        "rm -f {}\necho \"{EXIT_MARK}$melt_code\"\n",
        quote(pid_file)
    ));
    s
}

pub const EXIT_MARK: &str = "__MELT_EXIT__=";

/// How one launch on a device ended.
#[derive(Debug)]
enum Ended {
    Exited(i32),
    TimedOut { case: Option<String> },
    Lost { why: String },
}

/// Progress of one device: a bar on a terminal, a line per case in a log.
struct Progress {
    bar: ProgressBar,
    mp: MultiProgress,
    name: String,
    tty: bool,
    case: Option<String>,
    tokens: usize,
    samples: usize,
    cases_done: usize,
    cases_total: usize,
}

/// A line for the user: above the progress bars on a terminal, plain stderr in a log.
fn say(mp: &MultiProgress, line: &str) {
    if std::io::stderr().is_terminal() {
        let _ = mp.println(line);
    } else {
        eprintln!("{line}");
    }
}

impl Progress {
    fn new(mp: &MultiProgress, name: &str, total: usize) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = if tty {
            let b = mp.add(ProgressBar::new(total as u64));
            b.set_style(
                ProgressStyle::with_template("{prefix:.bold} [{bar:20}] {pos}/{len} {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            b.set_prefix(name.to_string());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        } else {
            ProgressBar::hidden()
        };
        Progress {
            bar,
            mp: mp.clone(),
            name: name.into(),
            tty,
            case: None,
            tokens: 0,
            samples: 0,
            cases_done: 0,
            cases_total: total,
        }
    }

    fn say(&self, line: &str) {
        say(&self.mp, line);
    }

    fn event(&mut self, e: &Event) {
        match e {
            Event::CaseStart { case, workload, .. } => {
                self.case = Some(case.clone());
                self.tokens = workload.tokens();
                self.samples = 0;
                self.bar.set_message(case.clone());
            }
            Event::Sample {
                warmup: false,
                measured,
                ..
            } => {
                self.samples += 1;
                let tok_s = self.tokens as f64 / (measured.ns.max(1) as f64 / 1e9);
                self.bar.set_message(format!(
                    "{} · {} samples · {tok_s:.1} tok/s",
                    self.case.as_deref().unwrap_or(""),
                    self.samples
                ));
            }
            Event::CaseEnd { case, samples, .. } => {
                self.cases_done += 1;
                self.bar.set_position(self.cases_done as u64);
                if !self.tty {
                    eprintln!(
                        "xtask: [{}] {}/{} {case}: {samples} samples",
                        self.name, self.cases_done, self.cases_total
                    );
                }
            }
            Event::Error { case, message } => self.say(&format!(
                "xtask: [{}] error{}: {message}",
                self.name,
                case.as_deref()
                    .map(|c| format!(" in {c}"))
                    .unwrap_or_default()
            )),
            _ => {}
        }
    }
}

/// Copies `local` to `remote` on the device unless a file of the same size is there: via a
/// `.part` file renamed into place only once whole (and, with `sha256`, once its hash matches
/// on the device), so an interrupted push is resumed and never used half-written.
fn push(
    d: &Device,
    local: &Path,
    remote: &str,
    sha256: Option<&str>,
    executable: bool,
) -> Result<bool> {
    let t = &d.transport;
    let size = std::fs::metadata(local)
        .with_context(|| format!("{}", local.display()))?
        .len();
    if t.remote_size(remote)? == size {
        return Ok(false);
    }
    let part = format!("{remote}.part");
    let dir = remote.rsplit_once('/').map_or(".", |(d, _)| d);
    t.output(&format!("mkdir -p {}", quote(dir)))?;
    t.push_resumable(local, &part)?;
    if let Some(expected) = sha256 {
        let got = t.output(&format!(
            "if command -v sha256sum >/dev/null 2>&1; then sha256sum {} | cut -d ' ' -f 1; else echo unavailable; fi",
            quote(&part)
        ))?;
        let got = got.trim();
        if got != "unavailable" && got != expected {
            t.output(&format!("rm -f {}", quote(&part)))?;
            bail!(
                "{} arrived on device `{}` with sha256 {got}, not {expected}; removed it",
                local.display(),
                d.name
            );
        }
    }
    let chmod = if executable {
        format!("chmod 755 {} && ", quote(&part))
    } else {
        String::new()
    };
    t.output(&format!("{chmod}mv -f {} {}", quote(&part), quote(remote)))?;
    Ok(true)
}

/// The files a run needs on the device.
pub struct Payload<'a> {
    pub binary: &'a Path,
    pub libs: &'a [PathBuf],
    pub config: &'a Path,
    pub models: &'a [ModelFile],
    /// The tasks' data files.
    pub data: &'a [ModelFile],
}

/// Pushes the payload; the binary's device path.
fn deploy(d: &Device, p: &Payload, mp: &MultiProgress) -> Result<String> {
    let w = &d.workdir;
    d.transport.output(&format!(
        "mkdir -p {} {} {} {}",
        quote(&format!("{w}/bin")),
        quote(&format!("{w}/lib")),
        quote(&format!("{w}/cache/models")),
        quote(&format!("{w}/run"))
    ))?;
    // Content-addressed, so re-running the same build pushes nothing.
    let sha = melt_bench::model::sha256_file(p.binary)?;
    let name = p
        .binary
        .file_name()
        .context("bench binary without a file name")?
        .to_string_lossy();
    let remote_bin = format!("{w}/bin/{}/{name}", &sha[..16]);
    if push(d, p.binary, &remote_bin, Some(&sha), true)? {
        say(
            mp,
            &format!("xtask: [{}] pushed {}", d.name, p.binary.display()),
        );
    }
    for lib in p.libs.iter().chain(&d.libs) {
        let file = lib.file_name().context("library without a file name")?;
        let remote = format!("{w}/lib/{}", file.to_string_lossy());
        // Same name, other content (a new NDK): replace.
        d.transport.output(&format!("rm -f {}", quote(&remote)))?;
        push(d, lib, &remote, None, false)?;
    }
    let remote_cfg = format!("{w}/melt.toml");
    d.transport
        .output(&format!("rm -f {}", quote(&remote_cfg)))?;
    push(d, p.config, &remote_cfg, None, false)?;
    for m in p.models {
        let remote = m.remote(w);
        say(
            mp,
            &format!(
                "xtask: [{}] model {} ({:.0} MB) → {remote}",
                d.name,
                m.file,
                std::fs::metadata(&m.local).map_or(0.0, |x| x.len() as f64 / 1e6)
            ),
        );
        if push(d, &m.local, &remote, Some(&m.sha256), false)? {
            say(mp, &format!("xtask: [{}] pushed {}", d.name, m.file));
        }
        let dir = remote.rsplit_once('/').map_or(".", |(d, _)| d);
        for b in &m.beside {
            let file = b.file_name().context("a file without a name")?;
            let remote = format!("{dir}/{}", file.to_string_lossy());
            d.transport.output(&format!("rm -f {}", quote(&remote)))?;
            push(d, b, &remote, None, false)?;
        }
    }
    for f in p.data {
        let remote = f.remote_data(w);
        if push(d, &f.local, &remote, Some(&f.sha256), false)? {
            say(
                mp,
                &format!("xtask: [{}] pushed {} → {remote}", d.name, f.file),
            );
        }
    }
    Ok(remote_bin)
}

/// Runs one launch: streams events into `log` until the device's exit line, a silence longer
/// than `timeout`, or the end of the connection.
fn launch(
    d: &Device,
    script: &str,
    log: &mut EventLog,
    stderr_log: &Path,
    timeout: Duration,
    progress: &mut Progress,
) -> Result<Launched> {
    let mut cmd = d.transport.shell(script);
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", d.transport.describe()))?;
    let (tx, rx) = mpsc::channel::<Option<String>>();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) => {
                    if tx.send(Some(l)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = tx.send(None);
    });
    // The device's stderr goes to a file beside the run; its tail goes into error messages.
    let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
    let stderr = child.stderr.take().expect("piped");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr_log)
        .with_context(|| format!("{}", stderr_log.display()))?;
    let tail2 = tail.clone();
    let err_thread = std::thread::spawn(move || {
        let mut r = BufReader::new(stderr);
        let mut buf = Vec::new();
        while r
            .read_until(b'\n', &mut buf)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            let _ = file.write_all(&buf);
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            // Live progress lines of the device's own terminal mode are not news.
            if !line.is_empty() {
                let mut t = tail2.lock().expect("tail");
                t.push_back(line);
                if t.len() > 20 {
                    t.pop_front();
                }
            }
            buf.clear();
        }
    });
    let mut code = None;
    let mut device_run = None;
    let mut forwarded = 0;
    let ended = loop {
        match rx.recv_timeout(timeout) {
            Ok(Some(line)) => {
                let line = line.trim_end_matches('\r');
                if let Some(c) = line.strip_prefix(EXIT_MARK) {
                    code = c.trim().parse::<i32>().ok();
                    continue;
                }
                match serde_json::from_str::<Event>(line) {
                    // The device's own paths mean nothing here; the host writes its own end.
                    Ok(Event::RunEnd { .. }) => {}
                    Ok(e) => {
                        if let Event::RunStart { run_id, .. } = &e {
                            device_run = Some(run_id.clone());
                        }
                        forwarded += 1;
                        log.write(&e)
                            .with_context(|| format!("appending to {}", log.path().display()))?;
                        progress.event(&e);
                    }
                    Err(_) if !line.trim().is_empty() => {
                        let _ = std::fs::OpenOptions::new()
                            .append(true)
                            .open(stderr_log)
                            .and_then(|mut f| writeln!(f, "[stdout] {line}"));
                    }
                    Err(_) => {}
                }
            }
            Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                let _ = err_thread.join();
                break match code {
                    Some(c) => Ended::Exited(c),
                    None => Ended::Lost {
                        why: format!(
                            "{} ended ({status}) before the run did",
                            d.transport.describe()
                        ),
                    },
                };
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                break Ended::TimedOut {
                    case: progress.case.clone(),
                };
            }
        }
    };
    let tail: Vec<String> = tail.lock().expect("tail").iter().cloned().collect();
    Ok(Launched {
        ended,
        tail,
        device_run,
        forwarded,
    })
}

struct Launched {
    ended: Ended,
    /// The last lines of the device's stderr.
    tail: Vec<String>,
    /// The run id the device gave itself (its own `target/melt/runs/<id>`).
    device_run: Option<String>,
    /// Events streamed, `run_end` excepted.
    forwarded: usize,
}

/// Pulls the device's own `samples.jsonl` of a finished launch beside the host's, and checks
/// that the stream carried every event of it (the device writes each line to its file first).
fn pull_and_check(d: &Device, l: &Launched, run_dir: &Path) -> Result<Option<String>> {
    let Some(id) = &l.device_run else {
        return Ok(None);
    };
    let remote = format!("{}/target/melt/runs/{id}/samples.jsonl", d.workdir);
    let local = run_dir.join(format!("device-{}.samples.jsonl", make_filename_safe(id)));
    d.transport.pull(&remote, &local)?;
    let on_device = read_events(&local)
        .map_err(anyhow::Error::msg)?
        .iter()
        .filter(|e| !matches!(e, Event::RunEnd { .. }))
        .count();
    Ok((on_device != l.forwarded).then(|| {
        format!(
            "the device logged {on_device} events but the stream carried {}; its own log is {}",
            l.forwarded,
            local.display()
        )
    }))
}

/// What one device's run came to.
pub struct DeviceRun {
    pub device: String,
    pub run_dir: Option<PathBuf>,
    pub outcome: Option<Outcome>,
    /// 0 every case measured, 1 some case failed, 2 the run could not complete.
    pub code: i32,
    pub message: Option<String>,
}

/// Everything one device needs; run on its own thread.
pub struct DeviceJob<'a> {
    pub device: &'a Device,
    pub payload: Payload<'a>,
    pub args: &'a DeviceArgs,
    pub options: &'a Options,
    pub layout: Layout,
    pub git_dir: PathBuf,
}

impl DeviceJob<'_> {
    pub fn run(&self, mp: &MultiProgress) -> DeviceRun {
        let mut run_dir = None;
        match self.try_run(mp, &mut run_dir) {
            Ok(outcome) => {
                let code = i32::from(outcome.failed());
                DeviceRun {
                    device: self.device.name.clone(),
                    run_dir,
                    outcome: Some(outcome),
                    code,
                    message: None,
                }
            }
            Err(e) => DeviceRun {
                device: self.device.name.clone(),
                run_dir,
                outcome: None,
                code: 2,
                message: Some(format!("{e:#}")),
            },
        }
    }

    fn try_run(&self, mp: &MultiProgress, run_dir_out: &mut Option<PathBuf>) -> Result<Outcome> {
        let d = self.device;
        let t = &d.transport;
        t.connect()?;
        let props = super::probe(d)?;
        let remote_bin = deploy(d, &self.payload, mp)?;

        // The host's record of this run: a new one, or the one being resumed.
        let (run_dir, resumed) = if self.options.resume {
            let dir = unfinished_run(&self.layout, &d.name).with_context(|| {
                format!(
                    "nothing to resume for device `{}`: no unfinished run of it under {}",
                    d.name,
                    self.layout.runs_dir().display()
                )
            })?;
            (dir, true)
        } else {
            let tag = make_filename_safe(&d.name).replace(' ', "_");
            let (_, dir) = self.layout.create_run_dir(&tag).with_context(|| {
                format!("a run directory under {}", self.layout.runs_dir().display())
            })?;
            (dir, false)
        };
        *run_dir_out = Some(run_dir.clone());
        std::fs::create_dir_all(&run_dir).with_context(|| format!("{}", run_dir.display()))?;
        let run_id = run_dir
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let samples = run_dir.join("samples.jsonl");
        let mut state = DeviceRunState {
            device: d.name.clone(),
            state: "running".into(),
            props: props.clone(),
        };
        write_state(&run_dir, &state)?;
        let mut skip: BTreeSet<String> = if resumed {
            let events = read_events(&samples).map_err(anyhow::Error::msg)?;
            replay(&events).completed()
        } else {
            BTreeSet::new()
        };
        let mut log =
            EventLog::create(&samples).with_context(|| format!("{}", samples.display()))?;

        // The planned cases, for the progress bar and to know when nothing is left.
        let list_args = self.args.for_device(d, LIST_MODE, &BTreeSet::new());
        let list_script = run_script(
            d,
            &remote_bin,
            &list_args,
            &format!("{}/run/{run_id}.list.pid", d.workdir),
        );
        let listed = t
            .shell(&list_script)
            .stdin(Stdio::null())
            .output()
            .context("listing the cases on the device")?;
        let listing = String::from_utf8_lossy(&listed.stdout);
        let code = listing
            .lines()
            .find_map(|l| l.trim_end_matches('\r').strip_prefix(EXIT_MARK))
            .and_then(|c| c.trim().parse::<i32>().ok());
        if code != Some(0) {
            bail!(
                "the bench binary on `{}` could not list its cases ({}):\n  {}",
                d.name,
                code.map_or_else(
                    || format!("{} failed", t.describe()),
                    |c| format!("exit {c}")
                ),
                String::from_utf8_lossy(&listed.stderr)
                    .trim()
                    .replace('\n', "\n  ")
            );
        }
        let planned = listed_ids(&listing)
            .with_context(|| format!("the case list from the bench binary on `{}`", d.name))?;
        if planned.is_empty() {
            bail!("the bench binary on `{}` lists no case", d.name);
        }
        let mut progress = Progress::new(mp, &d.name, planned.len());
        progress.cases_done = planned.intersection(&skip).count();
        progress.bar.set_position(progress.cases_done as u64);
        if resumed {
            progress.say(&format!(
                "xtask: [{}] resuming {}: {} of {} cases done",
                d.name,
                run_dir.display(),
                progress.cases_done,
                planned.len()
            ));
        }

        let pid_file = format!("{}/run/{run_id}.pid", d.workdir);
        let stderr_log = run_dir.join("device-stderr.log");
        let mut device_code = 0;
        let mut stream_problems = Vec::new();
        while planned.iter().any(|c| !skip.contains(c)) {
            let script = run_script(
                d,
                &remote_bin,
                &self.args.for_device(d, RUN_MODE, &skip),
                &pid_file,
            );
            let launched = launch(
                d,
                &script,
                &mut log,
                &stderr_log,
                self.options.case_timeout,
                &mut progress,
            )?;
            let tail = launched.tail.clone();
            match launched.ended {
                Ended::Exited(code) => {
                    device_code = code;
                    match pull_and_check(d, &launched, &run_dir) {
                        Ok(None) => {}
                        Ok(Some(problem)) => stream_problems.push(problem),
                        Err(e) => {
                            stream_problems.push(format!("cannot pull the device's log: {e:#}"))
                        }
                    }
                    if code == 2 {
                        bail!(
                            "the bench binary on `{}` could not run (exit 2):\n  {}",
                            d.name,
                            tail.join("\n  ")
                        );
                    }
                    break;
                }
                Ended::TimedOut { case } => {
                    // Stop the hung process on the device, record why, go on without it.
                    let _ = t.output(&format!(
                        "p=$(cat {f} 2>/dev/null) && kill \"$p\" 2>/dev/null; sleep 1; kill -9 \"$p\" 2>/dev/null; rm -f {f}; true",
                        f = quote(&pid_file)
                    ));
                    let message = format!(
                        "no event for {} s: killed on the device (--case-timeout)",
                        self.options.case_timeout.as_secs_f64()
                    );
                    log.write(&Event::Error {
                        case: case.clone(),
                        message: message.clone(),
                    })?;
                    progress.say(&format!(
                        "xtask: [{}] {} {message}",
                        d.name,
                        case.as_deref().unwrap_or("run")
                    ));
                    match case {
                        Some(c) => {
                            skip.insert(c);
                        }
                        None => bail!(
                            "`{}` sent nothing for {} s",
                            d.name,
                            self.options.case_timeout.as_secs()
                        ),
                    }
                    skip.extend(
                        replay(&read_events(&samples).map_err(anyhow::Error::msg)?).completed(),
                    );
                }
                Ended::Lost { why } => {
                    state.state = "interrupted".into();
                    write_state(&run_dir, &state)?;
                    progress.bar.abandon_with_message("connection lost");
                    let done = replay(&read_events(&samples).map_err(anyhow::Error::msg)?)
                        .completed()
                        .len();
                    bail!(
                        "lost `{}` mid-run: {why}\n  {}\n  {done} finished case(s) and every sample streamed so far are kept in {}; \
                         `cargo xtask bench --target {} --resume` runs the rest",
                        d.name,
                        tail.join("\n  "),
                        samples.display(),
                        d.name
                    );
                }
            }
        }
        progress.bar.finish_and_clear();

        let events = read_events(&samples).map_err(anyhow::Error::msg)?;
        let replayed = replay(&events);
        let finish = Finish {
            layout: self.layout.clone(),
            config: analysis_config(&self.args.parsed),
            baseline: self.args.parsed.baseline.clone(),
            git_dir: self.git_dir.clone(),
            device: Some(d.name.clone()),
            device_props: props,
            // The host reports once, from the stream: history and page here, not on the device.
            reports: if self.args.parsed.noplot {
                melt_report::host_reports().without_plots()
            } else {
                melt_report::host_reports()
            },
        };
        let mut errors: Vec<CaseError> = replayed.errors;
        errors.extend(stream_problems.into_iter().map(|message| CaseError {
            case: None,
            message,
        }));
        if device_code != 0 && errors.is_empty() {
            errors.push(CaseError {
                case: None,
                message: format!("the bench binary on `{}` exited with {device_code}", d.name),
            });
        }
        let outcome = finish.run(
            run_id,
            replayed.host.unwrap_or_default(),
            run_dir.clone(),
            Results {
                records: replayed.records,
                tasks: replayed.tasks,
                errors,
            },
            &mut log,
        );
        state.state = "complete".into();
        write_state(&run_dir, &state)?;
        Ok(outcome)
    }
}

/// Runs the suite on every device of `devices` at once, one thread (and one device-side
/// process) per device, each independent of the others. Returns the exit code: 0 all
/// measured, 1 some case failed, 2 some device could not run or was lost.
pub fn bench_devices(
    opts: &Options,
    devices: &[&Device],
    config: &Path,
    registry_models: Vec<ModelFile>,
    target_dir: &Path,
) -> Result<i32> {
    let args = DeviceArgs::parse(&opts.args)?;
    let mut models = args.models.clone();
    if models.is_empty() {
        models = registry_models;
    }
    let data: Vec<ModelFile> = args.data.iter().map(|(_, f)| f.clone()).collect();
    let layout = Layout {
        target_dir: args
            .parsed
            .target_dir
            .clone()
            .unwrap_or_else(|| target_dir.to_path_buf()),
    };
    let libtorch = |triple: &str| -> Result<Option<PathBuf>> {
        if !opts.features.iter().any(|f| f == "libtorch") {
            return Ok(None);
        }
        let host = super::build::Toolchain::detect()?.host_triple;
        crate::runtimes::setup_libtorch(triple, &host).map(Some)
    };
    // One build per triple, before any device is touched.
    let mut builds: BTreeMap<String, (PathBuf, Vec<PathBuf>)> = BTreeMap::new();
    let tc = super::build::Toolchain::detect()?;
    for d in devices {
        if builds.contains_key(&d.triple) {
            continue;
        }
        let linked_libtorch = libtorch(&d.triple)?;
        let built = match &opts.bench_bin {
            Some(bin) => {
                if !bin.is_file() {
                    bail!("--bench-bin {}: no such file", bin.display());
                }
                (bin.clone(), Vec::new())
            }
            None => {
                let mut plan =
                    super::build::plan(&tc, &d.triple, &opts.bench, d.api_level, opts.cross)?;
                plan.args.extend(device_features(&opts.features));
                if let Some(dir) = &linked_libtorch {
                    plan.env.extend(
                        crate::runtimes::libtorch_env(dir)
                            .map(|(k, v)| (k.to_string(), v.display().to_string())),
                    );
                }
                super::build::run(&plan, &opts.bench)?
            }
        };
        let mut built = built;
        // libtorch is linked: its libraries go beside the binary (LD_LIBRARY_PATH there).
        if let Some(dir) = &linked_libtorch {
            built.1.extend(crate::runtimes::libtorch_runtime_libs(dir));
        }
        // The ONNX Runtime backend opens its library at run time: ship it when it was fetched
        // for this triple (`cargo xtask setup onnxruntime --triple T`).
        if let Some(lib) = crate::runtimes::cached_onnxruntime(&d.triple, &tc.host_triple) {
            built.1.push(lib);
        }
        builds.insert(d.triple.clone(), built);
    }
    let git_dir = std::env::current_dir().unwrap_or_default();
    let mp = MultiProgress::new();
    let jobs: Vec<DeviceJob> = devices
        .iter()
        .map(|d| {
            let (binary, libs) = &builds[&d.triple];
            DeviceJob {
                device: d,
                payload: Payload {
                    binary,
                    libs,
                    config,
                    models: &models,
                    data: &data,
                },
                args: &args,
                options: opts,
                layout: layout.clone(),
                git_dir: git_dir.clone(),
            }
        })
        .collect();
    let runs: Vec<DeviceRun> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs.iter().map(|j| s.spawn(|| j.run(&mp))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a device thread panicked"))
            .collect()
    });
    let mut code = 0;
    for r in &runs {
        code = code.max(r.code);
        match (&r.outcome, &r.message) {
            (Some(out), _) => {
                println!("\n## {}\n\n{}", r.device, out.table);
                for e in &out.summary.errors {
                    eprintln!(
                        "xtask: [{}] FAILED {}: {}",
                        r.device,
                        e.case.as_deref().unwrap_or("run"),
                        e.message
                    );
                }
                eprintln!("xtask: [{}] results in {}", r.device, out.run_dir.display());
            }
            (None, Some(m)) => match &r.run_dir {
                Some(dir) => eprintln!(
                    "xtask: [{}] error: {m}\n  (run directory: {})",
                    r.device,
                    dir.display()
                ),
                None => eprintln!("xtask: [{}] error: {m}", r.device),
            },
            (None, None) => {}
        }
    }
    // The latest run of every device (the host's too) side by side.
    if runs.iter().any(|r| r.outcome.is_some()) {
        // `report` names the page it wrote; its table repeats what was printed above.
        if let Err(e) = crate::runs::report(
            &crate::cli::Report {
                runs: Vec::new(),
                html: true,
            },
            &layout.target_dir,
        ) {
            eprintln!("xtask: cannot write the merged report: {e:#}");
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::transport::Transport;
    use crate::devices::Kind;

    fn device(workdir: &str, kind: Kind) -> Device {
        Device {
            name: "dev 1; $(touch /tmp/melt-pwned-name)".into(),
            kind,
            transport: Transport::Local,
            triple: "t".into(),
            workdir: workdir.into(),
            env: [(
                "MELT_TEST_VALUE".to_string(),
                "v '$(touch /tmp/melt-pwned-env)' ;|".to_string(),
            )]
            .into(),
            tags: vec![],
            api_level: 28,
            libs: vec![],
        }
    }

    /// The run script, executed by a real `sh`, hands hostile names, paths and values to the
    /// program verbatim and forwards its exit status as the last line.
    #[test]
    fn run_script_quotes_everything_and_forwards_the_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let workdir = dir.path().join("work dir $(touch /tmp/melt-pwned-dir)");
        std::fs::create_dir_all(workdir.join("run")).unwrap();
        let prog = workdir.join("bin 'x'");
        std::fs::write(
            &prog,
            "#!/bin/sh\nfor a in \"$@\"; do printf 'arg=%s\\n' \"$a\"; done\nprintf 'env=%s\\n' \"$MELT_TEST_VALUE\"\nprintf 'ld=%s\\n' \"$LD_LIBRARY_PATH\"\nexit 7\n",
        )
        .unwrap();
        std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let w = workdir.display().to_string();
        let d = device(&w, Kind::Local);
        let args = vec![
            "--device".to_string(),
            d.name.clone(),
            "a b".into(),
            "`id`".into(),
        ];
        let script = run_script(
            &d,
            &prog.display().to_string(),
            &args,
            &format!("{w}/run/x.pid"),
        );
        let out = Transport::Local.shell(&script).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..4],
            [
                "arg=--device",
                "arg=dev 1; $(touch /tmp/melt-pwned-name)",
                "arg=a b",
                "arg=`id`"
            ]
        );
        assert_eq!(lines[4], "env=v '$(touch /tmp/melt-pwned-env)' ;|");
        assert!(lines[5].starts_with(&format!("ld={w}/lib")), "{}", lines[5]);
        assert_eq!(*lines.last().unwrap(), "__MELT_EXIT__=7");
        for f in [
            "/tmp/melt-pwned-name",
            "/tmp/melt-pwned-env",
            "/tmp/melt-pwned-dir",
        ] {
            assert!(!Path::new(f).exists(), "{f} was created: injection");
        }
        assert!(
            !workdir.join("run/x.pid").exists(),
            "pid file removed at the end"
        );
    }

    #[test]
    fn android_script_keeps_the_device_awake_and_restores() {
        let d = device("/data/local/tmp/melt", Kind::Adb);
        let s = run_script(
            &d,
            "/data/local/tmp/melt/bin/x/suite",
            &[],
            "/data/local/tmp/melt/run/r.pid",
        );
        assert!(s.contains("svc power stayon true"), "{s}");
        assert!(
            s.contains("settings put global stay_on_while_plugged_in \"$melt_stay\""),
            "{s}"
        );
        assert!(
            s.starts_with("cd '/data/local/tmp/melt' || exit 97\n"),
            "{s}"
        );
    }

    #[test]
    fn device_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, b"GGUF").unwrap();
        let args: Vec<String> = [
            "--quick",
            "--model",
            model.to_str().unwrap(),
            "--target-dir",
            "/x",
            "pp512",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let a = DeviceArgs::parse(&args).unwrap();
        assert_eq!(a.models.len(), 1);
        let d = device("/w", Kind::Ssh);
        let skip: BTreeSet<String> = ["m/pp512/llama.cpp t=1 @d".to_string()].into();
        let v = a.for_device(&d, RUN_MODE, &skip);
        let sha = &a.models[0].sha256;
        assert_eq!(
            v,
            [
                "--quick",
                "pp512",
                "--model",
                &format!("/w/cache/models/{sha}/m.gguf"),
                "--bench",
                "--message-format",
                "json",
                "--device",
                &d.name,
                "--skip",
                "m/pp512/llama.cpp t=1 @d"
            ]
        );
        // Task data files travel by hash under their own names; a built-in template name
        // is passed on as it is.
        let text = dir.path().join("corpus.txt");
        std::fs::write(&text, b"some text").unwrap();
        let args: Vec<String> = [
            "--replay",
            text.to_str().unwrap(),
            "--chat-template",
            "gemma",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let a = DeviceArgs::parse(&args).unwrap();
        let sha = melt_bench::model::sha256_file(&text).unwrap();
        assert_eq!(
            a.for_device(&d, &[], &BTreeSet::new())[..4],
            [
                "--chat-template".to_string(),
                "gemma".into(),
                "--replay".into(),
                format!("/w/cache/data/{sha}/corpus.txt"),
            ]
        );
        // A shipped set is inside the binary: nothing to push, its name goes as `melt:NAME`.
        let a = DeviceArgs::parse(&["--choices".into(), "openbookqa".into()]).unwrap();
        assert!(a.data.is_empty());
        assert_eq!(
            a.for_device(&d, &[], &BTreeSet::new())[..2],
            ["--choices".to_string(), "melt:openbookqa".into()]
        );
        let e = DeviceArgs::parse(&["--choices".into(), "melt:nope".into()]).unwrap_err();
        assert!(
            format!("{e:#}").contains("no shipped data set `nope`"),
            "{e:#}"
        );
        let e = DeviceArgs::parse(&["--choices".into(), "/no/such.jsonl".into()]).unwrap_err();
        assert!(
            format!("{e:#}").contains("--choices /no/such.jsonl"),
            "{e:#}"
        );
        for bad in ["--message-format", "--device", "--skip"] {
            let e = DeviceArgs::parse(&[bad.to_string(), "x".into()])
                .unwrap_err()
                .to_string();
            assert!(e.contains("set by `cargo xtask bench --target`"), "{e}");
        }
        let e = format!(
            "{:#}",
            DeviceArgs::parse(&["--sample-size".into(), "zero".into()]).unwrap_err()
        );
        assert!(e.contains("--sample-size"), "{e}");
        let e = format!(
            "{:#}",
            DeviceArgs::parse(&["--model".into(), "/no/such.gguf".into()]).unwrap_err()
        );
        assert!(e.contains("/no/such.gguf"), "{e}");
    }

    #[test]
    fn device_builds_leave_the_host_reports_out() {
        assert_eq!(
            device_features(&["libtorch".into(), "llama-cpp".into()]),
            [
                "--no-default-features",
                "--features",
                "llama-cpp,onnxruntime,libtorch"
            ]
        );
    }

    #[test]
    fn the_case_list_is_read_as_json() {
        let out = "[{\"id\":\"m/pp4/llama.cpp t=1 @d\",\"kind\":\"case\"},\
                   {\"id\":\"ppl:x\",\"kind\":\"task\"}]\r\n__MELT_EXIT__=0\n";
        let ids = listed_ids(out).unwrap();
        assert_eq!(
            ids,
            ["m/pp4/llama.cpp t=1 @d".to_string(), "ppl:x".into()].into()
        );
        let e = format!("{:#}", listed_ids("m/pp4: benchmark\n").unwrap_err());
        assert!(e.contains("no JSON list"), "{e}");
    }
}
