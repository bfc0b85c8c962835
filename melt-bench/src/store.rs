//! melt's own on-disk format: one directory per run under `<target>/melt/runs/<run-id>/`.
//!
//! # Format
//!
//! - `samples.jsonl` — one JSON object per line, appended and flushed as it happens, so a crash
//!   or a lost device loses nothing already measured. Each line has an `event` field:
//!   `run_start` (run id, host, schema version), `case_start` (case id, backend, model,
//!   params, workload), `sample` (case id, index, `warmup`, and the [`Measured`] fields:
//!   `ns`, `prefill_ns`, `decode_ns`, `ttft_ns`, `token_ns`), `case_end` (stop reason) and
//!   `error` (case id, message).
//! - `summary.json` — a [`Summary`]: `schema_version`, run id, host, and per case the backend
//!   and its version, the model (name, sha256, size, quantization, parameter count), all
//!   parameters, every metric with its estimate, 95% CI and sample count, outliers and the
//!   comparison with the baseline when there was one.
//!
//! `SCHEMA_VERSION` changes whenever a field changes meaning or disappears; adding fields
//! does not change it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::ModelInfo;
use crate::criterion_format::BenchmarkId;
use crate::host::HostInfo;
use crate::model::ModelSpec;
use crate::params::Params;
use crate::sampling::StopReason;
use crate::stats::{Comparison, OutlierCounts};
use crate::workload::{Measured, Workload};

// Leaf modules, so that what this module's types are made of can use them without a circle;
// re-exported under the paths the rest of melt has used.
pub use crate::fs::write_json;
pub use crate::metric::Metric;
pub use crate::timestamp::timestamp_id;

pub const SCHEMA_VERSION: u32 = 1;

/// Where a bench run writes: `<target>/criterion` and `<target>/melt`.
#[derive(Debug, Clone)]
pub struct Layout {
    pub target_dir: PathBuf,
}

impl Layout {
    /// The layout under a given target directory.
    pub fn at(target_dir: impl Into<PathBuf>) -> Layout {
        Layout {
            target_dir: target_dir.into(),
        }
    }

    /// `$MELT_TARGET_DIR`, else `$CARGO_TARGET_DIR`, else the cargo target directory that
    /// holds this executable (cargo marks it with `CACHEDIR.TAG`), else `./target`.
    pub fn discover() -> Layout {
        for var in ["MELT_TARGET_DIR", "CARGO_TARGET_DIR"] {
            if let Some(p) = std::env::var_os(var) {
                return Layout {
                    target_dir: PathBuf::from(p),
                };
            }
        }
        let from_exe = std::env::current_exe().ok().and_then(|exe| {
            exe.ancestors()
                .find(|d| d.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        });
        Layout {
            target_dir: from_exe.unwrap_or_else(|| PathBuf::from("target")),
        }
    }

    pub fn criterion_dir(&self) -> PathBuf {
        self.target_dir.join("criterion")
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.target_dir.join("melt").join("runs")
    }

    /// Creates a new run's directory, `runs/<UTC time>-<tag>`. Creating it is what claims the
    /// id: a second run in the same second (another suite in the same process, another
    /// process with the same tag) gets `-2`, `-3`, ... instead of writing into the first
    /// one's files.
    pub fn create_run_dir(&self, tag: &str) -> io::Result<RunDir> {
        let runs = self.runs_dir();
        fs::create_dir_all(&runs)?;
        let stem = format!("{}-{tag}", timestamp_id());
        for n in 1.. {
            let id = if n == 1 {
                stem.clone()
            } else {
                format!("{stem}-{n}")
            };
            let dir = runs.join(&id);
            match fs::create_dir(&dir) {
                Ok(()) => return Ok(RunDir::at(dir)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        unreachable!("an unbounded range ends only by returning")
    }

    /// The directory of run `id` (which may not exist).
    pub fn run(&self, id: &str) -> RunDir {
        RunDir::at(self.runs_dir().join(id))
    }

    /// Every finished run (with its `summary.json`), oldest first: run ids begin with their
    /// UTC start time. None when there is no runs directory.
    pub fn finished_runs(&self) -> Vec<RunDir> {
        let Ok(entries) = fs::read_dir(self.runs_dir()) else {
            return Vec::new();
        };
        let mut runs: Vec<RunDir> = entries
            .flatten()
            .map(|e| RunDir::at(e.path()))
            .filter(RunDir::is_finished)
            .collect();
        runs.sort();
        runs
    }

    /// The latest finished run.
    pub fn latest_finished_run(&self) -> Option<RunDir> {
        self.finished_runs().pop()
    }

    pub fn report_path(&self) -> PathBuf {
        self.target_dir
            .join("melt")
            .join("report")
            .join("index.html")
    }

    pub fn history_path(&self) -> PathBuf {
        self.target_dir.join("melt").join("history.sqlite")
    }
}

/// One run's directory, `<target>/melt/runs/<id>/`: the one place its files' names are spelled.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RunDir {
    path: PathBuf,
}

/// A run file that could not be read or written, with its path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a melt summary: {source}")]
    Summary {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}:{line}: {source}")]
    Event {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}

impl RunDir {
    pub fn at(path: PathBuf) -> RunDir {
        RunDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The run's id: its directory's name.
    pub fn id(&self) -> String {
        self.path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Every event as it happened (`samples.jsonl`).
    pub fn samples_path(&self) -> PathBuf {
        self.path.join("samples.jsonl")
    }

    /// The analysed run (`summary.json`), written when the run ends.
    pub fn summary_path(&self) -> PathBuf {
        self.path.join("summary.json")
    }

    /// Where a device run stands (`device.json`, host side).
    pub fn device_state_path(&self) -> PathBuf {
        self.path.join("device.json")
    }

    /// Whether the run ended and was analysed.
    pub fn is_finished(&self) -> bool {
        self.summary_path().is_file()
    }

    pub fn load_summary(&self) -> Result<Summary, StoreError> {
        let path = self.summary_path();
        let text = fs::read_to_string(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| StoreError::Summary { path, source })
    }

    pub fn save_summary(&self, summary: &Summary) -> Result<(), StoreError> {
        let path = self.summary_path();
        write_json(&path, summary).map_err(|source| StoreError::Io { path, source })
    }

    pub fn read_events(&self) -> Result<Vec<Event>, StoreError> {
        read_events(&self.samples_path())
    }
}

/// One line of `samples.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStart {
        run_id: String,
        schema_version: u32,
        host: HostInfo,
    },
    CaseStart {
        case: String,
        backend: String,
        model: String,
        params: Params,
        workload: Workload,
    },
    Sample {
        case: String,
        index: usize,
        warmup: bool,
        #[serde(flatten)]
        measured: Measured,
    },
    CaseEnd {
        case: String,
        samples: usize,
        stop_reason: StopReason,
        /// Everything else the analysis needs, so a host rebuilds the case from the stream
        /// alone (a device run). Absent in logs written before it existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        meta: Option<Box<CaseMeta>>,
    },
    Error {
        case: Option<String>,
        message: String,
    },
    /// A replay's turn, as soon as it is measured.
    TaskTurn {
        task: String,
        #[serde(flatten)]
        turn: crate::tasks::replay::Turn,
    },
    /// A finished task and everything it measured.
    TaskEnd {
        record: Box<crate::tasks::TaskRecord>,
    },
    RunEnd {
        run_id: String,
        run_dir: PathBuf,
        criterion_dir: PathBuf,
        cases: usize,
        errors: usize,
    },
}

/// What a finished case knows besides its samples (see [`Event::CaseEnd`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseMeta {
    pub id: BenchmarkId,
    pub backend_version: String,
    pub model: ModelSpec,
    pub model_info: ModelInfo,
    pub load_ns: u64,
    pub context_ns: u64,
    pub peak_rss_bytes: Option<u64>,
    pub peak_rss_per_case: bool,
    /// Memory, energy, temperature over the measured runs (absent: probes off, or a run
    /// recorded before melt had them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<crate::probe::ProbeSummary>,
}

/// Appends events to `samples.jsonl`, flushing each line.
pub struct EventLog {
    path: PathBuf,
    /// `None`: a run that keeps nothing (test mode).
    out: Option<BufWriter<File>>,
    /// Also write each event here (stdout for `--message-format json`).
    echo: Option<Box<dyn Write + Send>>,
}

impl EventLog {
    pub fn create(path: &Path) -> io::Result<EventLog> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(EventLog {
            path: path.to_path_buf(),
            out: Some(BufWriter::new(file)),
            echo: None,
        })
    }

    /// A log that writes no file (test mode: nothing of the run is kept).
    pub fn discard() -> EventLog {
        EventLog {
            path: PathBuf::new(),
            out: None,
            echo: None,
        }
    }

    /// Echo every event to `out` as well, one JSON object per line, flushed.
    pub fn echo_to(&mut self, out: Box<dyn Write + Send>) {
        self.echo = Some(out);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, event: &Event) -> io::Result<()> {
        let mut line = serde_json::to_vec(event)?;
        line.push(b'\n');
        if let Some(out) = &mut self.out {
            out.write_all(&line)?;
            out.flush()?;
        }
        if let Some(echo) = &mut self.echo {
            echo.write_all(&line)?;
            echo.flush()?;
        }
        Ok(())
    }
}

/// Reads every event back (for tests, `--resume` and report regeneration).
pub fn read_events(path: &Path) -> Result<Vec<Event>, StoreError> {
    let text = fs::read_to_string(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| StoreError::Event {
                path: path.to_path_buf(),
                line: i + 1,
                source,
            })
        })
        .collect()
}

/// Everything known about one case after analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseSummary {
    pub id: String,
    pub group: String,
    pub function: String,
    pub value: String,
    pub backend: String,
    pub backend_version: String,
    pub model: ModelSpec,
    pub model_info: ModelInfo,
    pub params: Params,
    pub workload: Workload,
    pub samples: usize,
    pub stop_reason: StopReason,
    /// Metric name → metric: `tokens_per_second`, `prefill_tokens_per_second`,
    /// `decode_tokens_per_second`, `ttft_ms`, `itl_p50_ms`, `itl_p90_ms`, `itl_p99_ms`,
    /// `load_ms`, `context_ms`, `peak_rss_bytes`.
    pub metrics: std::collections::BTreeMap<String, Metric>,
    pub outliers: OutlierCounts,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub comparison: Option<BaselineComparison>,
    /// Directory of this case under `target/criterion`.
    pub criterion_dir: PathBuf,
    /// Throughput, power and temperature over time (`--sustained` runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sustained: Option<crate::sustained::Sustained>,
}

/// The comparison against a criterion baseline directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineComparison {
    pub baseline: String,
    #[serde(flatten)]
    pub result: Comparison,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub schema_version: u32,
    pub run_id: String,
    pub host: HostInfo,
    /// The device from melt.toml when the run was driven by `cargo melt bench --target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// What probing the device found (model, SoC, Android version, governor...).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub device_props: std::collections::BTreeMap<String, String>,
    pub cases: Vec<CaseSummary>,
    /// Cases that failed, with the reason; their samples (if any) are in samples.jsonl.
    pub errors: Vec<CaseError>,
    /// What the probes could read on this machine, and why the rest is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<ProbesOverview>,
    /// Replays, perplexities and multiple-choice accuracies (`--replay`, `--perplexity`,
    /// `--choices`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<crate::tasks::TaskRecord>,
}

/// The probes of a run at a glance: every case's sources and reasons, without repeats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbesOverview {
    pub period_ms: f64,
    pub energy_sources: Vec<String>,
    pub assumptions: Vec<String>,
    pub unavailable: Vec<String>,
}

impl ProbesOverview {
    pub fn of<'a>(
        probes: impl IntoIterator<Item = &'a crate::probe::ProbeSummary>,
    ) -> Option<ProbesOverview> {
        let mut out: Option<ProbesOverview> = None;
        for p in probes {
            let o = out.get_or_insert_with(|| ProbesOverview {
                period_ms: p.period_ms,
                ..ProbesOverview::default()
            });
            for (from, to) in [
                (&p.energy_sources, &mut o.energy_sources),
                (&p.assumptions, &mut o.assumptions),
                (&p.unavailable, &mut o.unavailable),
            ] {
                for x in from {
                    if !to.contains(x) {
                        to.push(x.clone());
                    }
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseError {
    pub case: Option<String>,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` whose bytes the test can read back.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn run_dirs_are_claimed_once_and_found_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout {
            target_dir: dir.path().to_path_buf(),
        };
        assert!(layout.finished_runs().is_empty(), "no runs directory yet");
        // Three runs in the same second under one tag: three directories.
        let runs: Vec<RunDir> = (0..3)
            .map(|_| layout.create_run_dir("42").unwrap())
            .collect();
        let ids: std::collections::BTreeSet<String> = runs.iter().map(RunDir::id).collect();
        assert_eq!(ids.len(), 3, "{ids:?}");
        assert!(layout.latest_finished_run().is_none(), "none has a summary");
        // Only finished runs count; the latest is the last made.
        let summary = Summary {
            schema_version: SCHEMA_VERSION,
            run_id: runs[0].id(),
            host: HostInfo::default(),
            device: None,
            device_props: Default::default(),
            cases: vec![],
            errors: vec![],
            probes: None,
            tasks: vec![],
        };
        runs[0].save_summary(&summary).unwrap();
        runs[2].save_summary(&summary).unwrap();
        assert_eq!(layout.finished_runs(), [runs[0].clone(), runs[2].clone()]);
        assert_eq!(layout.latest_finished_run(), Some(runs[2].clone()));
        assert_eq!(runs[2].load_summary().unwrap(), summary);
        // A summary that is not one, and a missing log, are errors naming the file.
        std::fs::write(runs[1].summary_path(), "{").unwrap();
        let e = runs[1].load_summary().unwrap_err().to_string();
        assert!(
            e.contains("summary.json") && e.contains("not a melt summary"),
            "{e}"
        );
        let e = runs[1].read_events().unwrap_err().to_string();
        assert!(e.contains("samples.jsonl"), "{e}");
        assert_eq!(layout.run(&runs[1].id()), runs[1]);
    }

    #[test]
    fn the_echoed_event_stream_is_the_log_line_for_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.jsonl");
        let mut log = EventLog::create(&path).unwrap();
        let echo = Shared::default();
        log.echo_to(Box::new(echo.clone()));
        log.write(&Event::Error {
            case: Some("c".into()),
            message: "x".into(),
        })
        .unwrap();
        log.write(&Event::RunEnd {
            run_id: "r".into(),
            run_dir: "/r".into(),
            criterion_dir: "/c".into(),
            cases: 0,
            errors: 1,
        })
        .unwrap();
        let streamed = String::from_utf8(echo.0.lock().unwrap().clone()).unwrap();
        assert_eq!(streamed, fs::read_to_string(&path).unwrap());
        let last: Event = serde_json::from_str(streamed.lines().last().unwrap()).unwrap();
        assert!(matches!(last, Event::RunEnd { errors: 1, .. }));
    }

    #[test]
    fn timestamp_has_fixed_shape() {
        let t = timestamp_id();
        assert_eq!(t.len(), "2026-11-24T10-56-00Z".len(), "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }

    #[test]
    fn events_round_trip_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs/x/samples.jsonl");
        let mut log = EventLog::create(&path).unwrap();
        let sample = Event::Sample {
            case: "m/pp4/b t=1".into(),
            index: 0,
            warmup: false,
            measured: Measured {
                ns: 10,
                prefill_ns: 10,
                decode_ns: 0,
                ttft_ns: None,
                token_ns: vec![],
                at_ns: None,
            },
        };
        log.write(&sample).unwrap();
        log.write(&Event::Error {
            case: None,
            message: "boom".into(),
        })
        .unwrap();
        // Flushed as written: readable before the log is dropped.
        let events = read_events(&path).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0], sample);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\"event\":\"sample\""), "{text}");
    }
}
