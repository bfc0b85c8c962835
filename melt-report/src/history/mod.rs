//! The run history: every run recorded, so results are remembered across runs, commits and
//! devices, and the gate can compare with "the latest run of `main`".
//!
//! One interface, two stores ([`Location`]): the embedded SQLite file of one machine
//! (`target/melt/history.sqlite`, the default) and a PostgreSQL database a team shares
//! (`postgres://…`). Both hold the same schema ([`schema`]), migrated forward by the same
//! versioned migrations, and answer the same queries, written once (in `store`).
//!
//! # Format
//!
//! - `runs(run_id, device, recorded_at, git_commit, git_dirty, host_json, schema_version)` —
//!   a run is its id and its device;
//! - `cases(run_id, device, case_id, backend, backend_version, model, model_sha256,
//!   params_json, workload, tokens, samples_ns_json)` — `samples_ns_json` holds the per-sample
//!   times, so a later comparison can run its statistics on them;
//! - `metrics(run_id, device, case_id, metric, unit, estimate, lower, upper, n)`.
//!
//! A run is written in one transaction, and written at most once: recording or pushing a run
//! that is already there adds nothing. So concurrent writers (several devices merging at once,
//! several hosts pushing) cannot interleave, and a push cut short leaves whole runs or none.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use melt_bench::store::Summary;

mod postgres;
pub mod schema;
mod sqlite;
pub(crate) mod store;

use store::{args, Row, Sql};
pub use store::{DbError, Engine};

/// Where a history is kept. Shown (and debug-printed) without a URL's password.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file.
    File(PathBuf),
    /// A PostgreSQL database, by its `postgres://` URL (which may hold a password: shown
    /// without it).
    Postgres(String),
}

impl Location {
    /// A `postgres://` or `postgresql://` URL, or else a file's path.
    pub fn parse(s: &str) -> Location {
        if postgres::is_url(s) {
            Location::Postgres(s.to_string())
        } else {
            Location::File(PathBuf::from(s))
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File(p) => write!(f, "{}", p.display()),
            Location::Postgres(url) => f.write_str(&postgres::redacted(url)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{at} is not a usable melt history database ({reason}); it was left untouched — move it away to start a new history")]
    Corrupt { at: Location, reason: String },
    #[error("{at} was written by a newer melt (schema {found}, this melt knows up to {known}); it was left untouched")]
    TooNew {
        at: Location,
        found: i64,
        known: i64,
    },
    #[error("cannot reach the history at {at}: {reason}")]
    Connect { at: Location, reason: String },
    #[error("history {at}: {source}")]
    Sql { at: Location, source: DbError },
}

/// Refuses a schema newer than this melt's.
fn check_version(at: &Location, found: i64) -> Result<(), HistoryError> {
    if found > schema::VERSION {
        return Err(HistoryError::TooNew {
            at: at.clone(),
            found,
            known: schema::VERSION,
        });
    }
    Ok(())
}

/// The commit a run measured, if it ran inside a git checkout.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GitState {
    pub commit: Option<String>,
    pub dirty: Option<bool>,
}

impl GitState {
    /// `git rev-parse HEAD` and whether tracked files differ from it, in `dir`.
    pub fn detect(dir: &Path) -> GitState {
        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        GitState {
            commit: git(&["rev-parse", "HEAD"]),
            dirty: git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
        }
    }
}

/// The device a run on the host itself is recorded as.
pub const HOST_DEVICE: &str = "host";

/// What names a run: its id and the device it ran on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunKey {
    pub run_id: String,
    pub device: String,
}

impl fmt::Display for RunKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.run_id, self.device)
    }
}

/// Which metric rows a listing or a trend takes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricQuery {
    /// `tokens_per_second`, `ttft_ms`, ...
    pub metric: String,
    /// Cases whose id contains this.
    pub case: Option<String>,
    pub device: Option<String>,
    /// Runs recorded at or after this UTC time (`2026-11-25`, `2026-11-25T10-00-00Z`).
    pub since: Option<String>,
}

/// Which runs a listing or a push takes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    /// Runs of this commit (the full hash).
    pub commit: Option<String>,
    /// Runs on this device.
    pub device: Option<String>,
}

/// One run as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub key: RunKey,
    pub recorded_at: String,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    pub cases: usize,
}

/// One metric of one case of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub key: RunKey,
    pub recorded_at: String,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    pub case_id: String,
    pub metric: String,
    pub unit: String,
    pub estimate: f64,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    pub n: usize,
}

/// A whole run as stored: what recording writes and what a push copies.
#[derive(Debug, Clone, PartialEq)]
struct StoredRun {
    key: RunKey,
    recorded_at: String,
    git_commit: Option<String>,
    git_dirty: Option<bool>,
    host_json: String,
    schema_version: i64,
    cases: Vec<StoredCase>,
}

#[derive(Debug, Clone, PartialEq)]
struct StoredCase {
    case_id: String,
    backend: String,
    backend_version: String,
    model: String,
    model_sha256: String,
    params_json: String,
    workload: String,
    tokens: i64,
    samples_ns_json: String,
    metrics: Vec<StoredMetric>,
}

#[derive(Debug, Clone, PartialEq)]
struct StoredMetric {
    metric: String,
    unit: String,
    estimate: f64,
    lower: Option<f64>,
    upper: Option<f64>,
    n: i64,
}

/// Whether writing a run added it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Added,
    /// The run (its id and device) was there already, whole: nothing was written.
    AlreadyThere,
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushed {
    pub added: Vec<RunKey>,
    pub already_there: usize,
}

/// The open connection.
enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<::postgres::Client>),
}

/// An open history.
pub struct History {
    at: Location,
    conn: Conn,
}

impl History {
    /// Opens (creating if absent) and migrates the SQLite file at `path`.
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        History::at(&Location::File(path.to_path_buf()))
    }

    /// Opens the history at `at`, creating or migrating its schema.
    pub fn at(at: &Location) -> Result<History, HistoryError> {
        let conn = match at {
            Location::File(path) => Conn::Sqlite(sqlite::open(path)?),
            Location::Postgres(url) => Conn::Postgres(Box::new(postgres::connect(url)?)),
        };
        Ok(History {
            at: at.clone(),
            conn,
        })
    }

    pub fn location(&self) -> &Location {
        &self.at
    }

    pub fn engine(&self) -> Engine {
        match self.conn {
            Conn::Sqlite(_) => Engine::Sqlite,
            Conn::Postgres(_) => Engine::Postgres,
        }
    }

    fn err(&self, source: DbError) -> HistoryError {
        match source {
            DbError::Decode(reason) => HistoryError::Corrupt {
                at: self.at.clone(),
                reason,
            },
            source => HistoryError::Sql {
                at: self.at.clone(),
                source,
            },
        }
    }

    /// A query's rows, each mapped.
    fn rows<T>(
        &mut self,
        sql: &str,
        params: &[store::Param],
        map: impl FnMut(&Row) -> Result<T, DbError>,
    ) -> Result<Vec<T>, HistoryError> {
        let rows = match &mut self.conn {
            Conn::Sqlite(c) => store::Lite(c).query(sql, params),
            Conn::Postgres(c) => store::Pg(c.as_mut()).query(sql, params),
        };
        rows.and_then(|rows| rows.iter().map(map).collect())
            .map_err(|e| self.err(e))
    }

    /// `f` in one transaction of the store.
    fn transaction<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, DbError>,
    ) -> Result<T, HistoryError> {
        let out = match &mut self.conn {
            Conn::Sqlite(c) => sqlite::transaction(c, f),
            Conn::Postgres(c) => postgres::transaction(c, f),
        };
        out.map_err(|e| self.err(e))
    }

    pub fn schema_version(&mut self) -> Result<i64, HistoryError> {
        let v = match &mut self.conn {
            Conn::Sqlite(c) => sqlite::version(c),
            Conn::Postgres(c) => postgres::version(c),
        };
        v.map_err(|e| self.err(e))
    }

    /// Records a run: its summary and each case's per-sample times (ns), in one transaction.
    pub fn record(
        &mut self,
        summary: &Summary,
        samples_ns: &BTreeMap<String, Vec<f64>>,
        git: &GitState,
        device: &str,
    ) -> Result<Written, HistoryError> {
        let run = StoredRun {
            key: RunKey {
                run_id: summary.run_id.clone(),
                device: device.to_string(),
            },
            recorded_at: summary
                .run_id
                .get(..20)
                .unwrap_or(&summary.run_id)
                .to_string(),
            git_commit: git.commit.clone(),
            git_dirty: git.dirty,
            host_json: json(&summary.host),
            schema_version: summary.schema_version.into(),
            cases: summary
                .cases
                .iter()
                .map(|c| StoredCase {
                    case_id: c.id.clone(),
                    backend: c.backend.clone(),
                    backend_version: c.backend_version.clone(),
                    model: c.model.name.clone(),
                    model_sha256: c.model.sha256.clone(),
                    params_json: json(&c.params),
                    workload: c.workload.name(),
                    tokens: c.workload.tokens() as i64,
                    samples_ns_json: json(&samples_ns.get(&c.id).cloned().unwrap_or_default()),
                    metrics: c
                        .metrics
                        .iter()
                        .map(|(name, m)| StoredMetric {
                            metric: name.clone(),
                            unit: m.unit.clone(),
                            estimate: m.estimate,
                            lower: m.lower,
                            upper: m.upper,
                            n: m.n as i64,
                        })
                        .collect(),
                })
                .collect(),
        };
        self.write(&run)
    }

    /// Writes a whole run in one transaction, unless its id and device are there already.
    fn write(&mut self, run: &StoredRun) -> Result<Written, HistoryError> {
        self.transaction(|tx| {
            // The run's row first: where another writer holds the same run, this waits for
            // it, then adds nothing — and the rest is skipped, since runs are written whole.
            let added = tx.execute(
                "INSERT INTO runs (run_id, device, recorded_at, git_commit, git_dirty, host_json,
                                   schema_version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &args![
                    &run.key.run_id,
                    &run.key.device,
                    &run.recorded_at,
                    &run.git_commit,
                    run.git_dirty,
                    &run.host_json,
                    run.schema_version
                ],
            )?;
            if added == 0 {
                return Ok(Written::AlreadyThere);
            }
            for c in &run.cases {
                tx.execute(
                    "INSERT INTO cases (run_id, device, case_id, backend, backend_version, model,
                                        model_sha256, params_json, workload, tokens,
                                        samples_ns_json)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    &args![
                        &run.key.run_id,
                        &run.key.device,
                        &c.case_id,
                        &c.backend,
                        &c.backend_version,
                        &c.model,
                        &c.model_sha256,
                        &c.params_json,
                        &c.workload,
                        c.tokens,
                        &c.samples_ns_json
                    ],
                )?;
                for m in &c.metrics {
                    tx.execute(
                        "INSERT INTO metrics (run_id, device, case_id, metric, unit, estimate,
                                              lower, upper, n)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        &args![
                            &run.key.run_id,
                            &run.key.device,
                            &c.case_id,
                            &m.metric,
                            &m.unit,
                            m.estimate,
                            m.lower,
                            m.upper,
                            m.n
                        ],
                    )?;
                }
            }
            Ok(Written::Added)
        })
    }

    /// Reads a whole run back, as it was written.
    fn read(&mut self, key: &RunKey) -> Result<Option<StoredRun>, HistoryError> {
        let k = args![&key.run_id, &key.device];
        let run = self.rows(
            "SELECT recorded_at, git_commit, git_dirty, host_json, schema_version
             FROM runs WHERE run_id = $1 AND device = $2",
            &k,
            |r| {
                Ok(StoredRun {
                    key: key.clone(),
                    recorded_at: r.text(0)?,
                    git_commit: r.opt_text(1)?,
                    git_dirty: r.opt_bool(2)?,
                    host_json: r.text(3)?,
                    schema_version: r.int(4)?,
                    cases: Vec::new(),
                })
            },
        )?;
        let Some(mut run) = run.into_iter().next() else {
            return Ok(None);
        };
        let mut metrics: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for (case, m) in self.rows(
            "SELECT case_id, metric, unit, estimate, lower, upper, n FROM metrics
             WHERE run_id = $1 AND device = $2 ORDER BY case_id, metric",
            &k,
            |r| {
                Ok((
                    r.text(0)?,
                    StoredMetric {
                        metric: r.text(1)?,
                        unit: r.text(2)?,
                        estimate: r.real(3)?,
                        lower: r.opt_real(4)?,
                        upper: r.opt_real(5)?,
                        n: r.int(6)?,
                    },
                ))
            },
        )? {
            metrics.entry(case).or_default().push(m);
        }
        run.cases = self.rows(
            "SELECT case_id, backend, backend_version, model, model_sha256, params_json,
                    workload, tokens, samples_ns_json
             FROM cases WHERE run_id = $1 AND device = $2 ORDER BY case_id",
            &k,
            |r| {
                let case_id = r.text(0)?;
                Ok(StoredCase {
                    metrics: metrics.remove(&case_id).unwrap_or_default(),
                    case_id,
                    backend: r.text(1)?,
                    backend_version: r.text(2)?,
                    model: r.text(3)?,
                    model_sha256: r.text(4)?,
                    params_json: r.text(5)?,
                    workload: r.text(6)?,
                    tokens: r.int(7)?,
                    samples_ns_json: r.text(8)?,
                })
            },
        )?;
        Ok(Some(run))
    }

    /// Copies every run `filter` takes into `to`, oldest first, each in its own transaction:
    /// a run already there (same id and device) is left as it is, so pushing twice adds
    /// nothing, and a push cut short is finished by running it again.
    pub fn push(&mut self, to: &mut History, filter: &RunFilter) -> Result<Pushed, HistoryError> {
        let mut keys = self.run_keys(filter)?;
        keys.reverse();
        let mut pushed = Pushed::default();
        for key in keys {
            // Listed a moment ago; gone only if someone deleted it meanwhile.
            let Some(run) = self.read(&key)? else {
                continue;
            };
            match to.write(&run)? {
                Written::Added => pushed.added.push(key),
                Written::AlreadyThere => pushed.already_there += 1,
            }
        }
        Ok(pushed)
    }

    /// The keys of the runs `filter` takes, most recent first.
    fn run_keys(&mut self, filter: &RunFilter) -> Result<Vec<RunKey>, HistoryError> {
        self.rows(
            "SELECT run_id, device FROM runs
             WHERE (CAST($1 AS TEXT) IS NULL OR git_commit = $1)
               AND (CAST($2 AS TEXT) IS NULL OR device = $2)
             ORDER BY recorded_at DESC, run_id DESC, device",
            &args![&filter.commit, &filter.device],
            |r| run_key(r, 0),
        )
    }

    /// The most recent runs first (of one device, if `device` is given).
    pub fn runs(
        &mut self,
        device: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRow>, HistoryError> {
        self.rows(
            "SELECT r.run_id, r.device, r.recorded_at, r.git_commit, r.git_dirty,
                    (SELECT COUNT(*) FROM cases c
                     WHERE c.run_id = r.run_id AND c.device = r.device)
             FROM runs r WHERE (CAST($1 AS TEXT) IS NULL OR r.device = $1)
             ORDER BY r.recorded_at DESC, r.run_id DESC, r.device LIMIT $2",
            &args![device, limit as i64],
            |r| {
                Ok(RunRow {
                    key: run_key(r, 0)?,
                    recorded_at: r.text(2)?,
                    git_commit: r.opt_text(3)?,
                    git_dirty: r.opt_bool(4)?,
                    cases: r.int(5)? as usize,
                })
            },
        )
    }

    /// A metric of the cases whose id contains `case_filter` (on one device, if given), most
    /// recent run first.
    pub fn metric(
        &mut self,
        case_filter: &str,
        metric: &str,
        device: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MetricRow>, HistoryError> {
        let mut rows = self.metric_rows(&MetricQuery {
            metric: metric.to_string(),
            case: Some(case_filter.to_string()),
            device: device.map(str::to_string),
            since: None,
        })?;
        rows.reverse();
        rows.truncate(limit);
        Ok(rows)
    }

    /// The rows `q` selects, oldest run first: a trend.
    pub fn metric_rows(&mut self, q: &MetricQuery) -> Result<Vec<MetricRow>, HistoryError> {
        self.rows(
            "SELECT m.run_id, m.device, r.recorded_at, r.git_commit, r.git_dirty, m.case_id,
                    m.metric, m.unit, m.estimate, m.lower, m.upper, m.n
             FROM metrics m JOIN runs r ON r.run_id = m.run_id AND r.device = m.device
             WHERE m.metric = $1
               AND (CAST($2 AS TEXT) IS NULL OR strpos(m.case_id, $2) > 0)
               AND (CAST($3 AS TEXT) IS NULL OR m.device = $3)
               AND (CAST($4 AS TEXT) IS NULL OR r.recorded_at >= $4)
             ORDER BY r.recorded_at, m.run_id, m.device, m.case_id",
            &args![&q.metric, &q.case, &q.device, &q.since],
            |r| {
                Ok(MetricRow {
                    key: run_key(r, 0)?,
                    recorded_at: r.text(2)?,
                    git_commit: r.opt_text(3)?,
                    git_dirty: r.opt_bool(4)?,
                    case_id: r.text(5)?,
                    metric: r.text(6)?,
                    unit: r.text(7)?,
                    estimate: r.real(8)?,
                    lower: r.opt_real(9)?,
                    upper: r.opt_real(10)?,
                    n: r.int(11)? as usize,
                })
            },
        )
    }

    /// The latest run of `commit` on `device` other than `except` (clean runs preferred over
    /// dirty ones).
    pub fn latest_run_of_commit(
        &mut self,
        commit: &str,
        device: &str,
        except: Option<&RunKey>,
    ) -> Result<Option<RunKey>, HistoryError> {
        let except = except.map(|k| k.run_id.as_str()).unwrap_or("");
        let rows = self.rows(
            "SELECT run_id FROM runs WHERE git_commit = $1 AND device = $2 AND run_id != $3
             ORDER BY (git_dirty IS TRUE), recorded_at DESC, run_id DESC LIMIT 1",
            &args![commit, device, except],
            |r| r.text(0),
        )?;
        Ok(rows.into_iter().next().map(|run_id| RunKey {
            run_id,
            device: device.to_string(),
        }))
    }

    /// tok/s (or another metric's) estimates of a case on a device in its most recent runs,
    /// excluding `except`, each with the code it ran: `commit` (or `commit+dirty`, or
    /// `unknown`). The gate's drift estimate is made from runs of the same code, so that a
    /// real change between commits is never mistaken for noise.
    pub fn recent_estimates(
        &mut self,
        case_id: &str,
        metric: &str,
        device: &str,
        except: &[&str],
        limit: usize,
    ) -> Result<Vec<(String, f64)>, HistoryError> {
        let rows = self.rows(
            "SELECT m.run_id, m.estimate, r.git_commit, r.git_dirty
             FROM metrics m JOIN runs r ON r.run_id = m.run_id AND r.device = m.device
             WHERE m.case_id = $1 AND m.metric = $2 AND m.device = $3
             ORDER BY r.recorded_at DESC, m.run_id DESC",
            &args![case_id, metric, device],
            |r| Ok((r.text(0)?, r.real(1)?, r.opt_text(2)?, r.opt_bool(3)?)),
        )?;
        Ok(rows
            .into_iter()
            .filter(|(run, ..)| !except.contains(&run.as_str()))
            .map(|(_, e, commit, dirty)| {
                let code = match (commit, dirty) {
                    (Some(c), Some(true)) => format!("{c}+dirty"),
                    (Some(c), _) => c,
                    (None, _) => "unknown".to_string(),
                };
                (code, e)
            })
            .take(limit)
            .collect())
    }

    /// Every metric of a case in a run (empty when the run does not have the case).
    pub fn case_metrics(
        &mut self,
        run: &RunKey,
        case_id: &str,
    ) -> Result<BTreeMap<String, melt_bench::store::Metric>, HistoryError> {
        let rows = self.rows(
            "SELECT metric, unit, estimate, lower, upper, n FROM metrics
             WHERE run_id = $1 AND device = $2 AND case_id = $3",
            &args![&run.run_id, &run.device, case_id],
            |r| {
                Ok((
                    r.text(0)?,
                    melt_bench::store::Metric {
                        unit: r.text(1)?,
                        estimate: r.real(2)?,
                        lower: r.opt_real(3)?,
                        upper: r.opt_real(4)?,
                        n: r.int(5)? as usize,
                        note: None,
                    },
                ))
            },
        )?;
        Ok(rows.into_iter().collect())
    }

    /// The case ids of a run.
    pub fn cases_of_run(&mut self, run: &RunKey) -> Result<Vec<String>, HistoryError> {
        self.rows(
            "SELECT case_id FROM cases WHERE run_id = $1 AND device = $2 ORDER BY case_id",
            &args![&run.run_id, &run.device],
            |r| r.text(0),
        )
    }

    /// A case's tokens per iteration and per-sample times in a run.
    pub fn case_samples(
        &mut self,
        run: &RunKey,
        case_id: &str,
    ) -> Result<Option<(u64, Vec<f64>)>, HistoryError> {
        let rows = self.rows(
            "SELECT tokens, samples_ns_json FROM cases
             WHERE run_id = $1 AND device = $2 AND case_id = $3",
            &args![&run.run_id, &run.device, case_id],
            |r| Ok((r.int(0)?, r.text(1)?)),
        )?;
        match rows.into_iter().next() {
            None => Ok(None),
            Some((tokens, json)) => {
                let times: Vec<f64> =
                    serde_json::from_str(&json).map_err(|e| HistoryError::Corrupt {
                        at: self.at.clone(),
                        reason: format!("samples of {case_id} in run {run}: {e}"),
                    })?;
                Ok(Some((tokens as u64, times)))
            }
        }
    }
}

/// The run key in columns `at` (run id) and `at + 1` (device) of a row.
fn run_key(r: &Row, at: usize) -> Result<RunKey, DbError> {
    Ok(RunKey {
        run_id: r.text(at)?,
        device: r.text(at + 1)?,
    })
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

#[cfg(test)]
mod tests;
