//! The run history: every run recorded in an embedded SQLite database
//! (`target/melt/history.sqlite`), so results are remembered across runs, commits and
//! devices, and the gate can compare with "the latest run of `main`".
//!
//! # Format
//!
//! Schema version in `PRAGMA user_version`, migrated forward in a transaction when an older
//! database is opened; a database from a newer melt, or a file that is not a database, is an
//! error that names the file — it is never reset. Tables:
//! - `runs(run_id, recorded_at, git_commit, git_dirty, device, host_json, schema_version)`;
//! - `cases(run_id, case_id, backend, backend_version, model, model_sha256, params_json,
//!   workload, tokens, samples_ns_json)` — `samples_ns_json` holds the per-sample times, so a
//!   later comparison can run its statistics on them;
//! - `metrics(run_id, case_id, metric, unit, estimate, lower, upper, n)`.
//!
//! Writers use WAL and a busy timeout and insert a run in one immediate transaction, so
//! concurrent runs (several devices merging at once) cannot corrupt it or interleave.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use melt_bench::store::Summary;

const MIGRATIONS: &[&str] = &[
    // 1
    "CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        recorded_at TEXT NOT NULL,
        git_commit TEXT,
        git_dirty INTEGER,
        device TEXT NOT NULL,
        host_json TEXT NOT NULL,
        schema_version INTEGER NOT NULL
    );
    CREATE TABLE cases (
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        case_id TEXT NOT NULL,
        backend TEXT NOT NULL,
        backend_version TEXT NOT NULL,
        model TEXT NOT NULL,
        model_sha256 TEXT NOT NULL,
        params_json TEXT NOT NULL,
        workload TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        samples_ns_json TEXT NOT NULL,
        PRIMARY KEY (run_id, case_id)
    );
    CREATE TABLE metrics (
        run_id TEXT NOT NULL,
        case_id TEXT NOT NULL,
        metric TEXT NOT NULL,
        unit TEXT NOT NULL,
        estimate REAL NOT NULL,
        lower REAL,
        upper REAL,
        n INTEGER NOT NULL,
        PRIMARY KEY (run_id, case_id, metric)
    );
    CREATE INDEX cases_by_case ON cases(case_id);
    CREATE INDEX runs_by_commit ON runs(git_commit);",
];

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{path} is not a usable melt history database ({reason}); it was left untouched — move it away to start a new history")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path} was written by a newer melt (schema {found}, this melt knows up to {known}); it was left untouched")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("history {path}: {reason}")]
    Sql { path: PathBuf, reason: String },
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

/// One run as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub run_id: String,
    pub recorded_at: String,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    pub device: String,
    pub cases: usize,
}

/// One metric of one case of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub run_id: String,
    pub git_commit: Option<String>,
    pub case_id: String,
    pub metric: String,
    pub unit: String,
    pub estimate: f64,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    pub n: usize,
}

/// An open history database.
pub struct History {
    path: PathBuf,
    conn: Connection,
}

impl History {
    /// Opens (creating if absent) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| HistoryError::Sql {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
        // A busy database is another writer at work, not a broken file.
        let corrupt = |e: rusqlite::Error| {
            if is_busy(&e) {
                HistoryError::Sql {
                    path: path.to_path_buf(),
                    reason: format!("{e} (another melt kept it locked for too long)"),
                }
            } else {
                HistoryError::Corrupt {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }
            }
        };
        let conn = Connection::open(path).map_err(corrupt)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(corrupt)?;
        // Reading the schema version is the first access to the file: a file that is not a
        // database fails here, before anything is written.
        let version: i64 = retry_busy(|| conn.query_row("PRAGMA user_version", [], |r| r.get(0)))
            .map_err(corrupt)?;
        // Switching to WAL takes an exclusive lock and SQLite answers BUSY at once, without
        // its busy handler, while another connection creates or migrates the file: retry.
        retry_busy(|| conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())))
            .map_err(corrupt)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(HistoryError::TooNew {
                path: path.to_path_buf(),
                found: version,
                known,
            });
        }
        let mut h = History {
            path: path.to_path_buf(),
            conn,
        };
        if version < known {
            h.migrate(version)?;
        }
        Ok(h)
    }

    fn sql(&self, e: rusqlite::Error) -> HistoryError {
        HistoryError::Sql {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn migrate(&mut self, from: i64) -> Result<(), HistoryError> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| HistoryError::Sql {
            path: path.clone(),
            reason: e.to_string(),
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        // Another process may have migrated while this one waited for the lock.
        let now: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(now.max(from) as usize) {
            tx.execute_batch(m).map_err(err)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Runs a query and maps every row.
    fn rows<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, HistoryError> {
        let mut st = self.conn.prepare(sql).map_err(|e| self.sql(e))?;
        let rows = st.query_map(params, map).map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    pub fn schema_version(&self) -> Result<i64, HistoryError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.sql(e))
    }

    /// Records a run: its summary and each case's per-sample times (ns), in one transaction.
    pub fn record(
        &mut self,
        summary: &Summary,
        samples_ns: &BTreeMap<String, Vec<f64>>,
        git: &GitState,
        device: &str,
    ) -> Result<(), HistoryError> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| HistoryError::Sql {
            path: path.clone(),
            reason: e.to_string(),
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute(
            "INSERT INTO runs (run_id, recorded_at, git_commit, git_dirty, device, host_json, schema_version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                summary.run_id,
                summary.run_id.get(..20).unwrap_or(&summary.run_id),
                git.commit,
                git.dirty,
                device,
                json(&summary.host),
                summary.schema_version
            ],
        )
        .map_err(err)?;
        for c in &summary.cases {
            let times = samples_ns.get(&c.id).cloned().unwrap_or_default();
            tx.execute(
                "INSERT INTO cases (run_id, case_id, backend, backend_version, model, model_sha256,
                                    params_json, workload, tokens, samples_ns_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    summary.run_id,
                    c.id,
                    c.backend,
                    c.backend_version,
                    c.model.name,
                    c.model.sha256,
                    json(&c.params),
                    c.workload.name(),
                    c.workload.tokens() as i64,
                    json(&times)
                ],
            )
            .map_err(err)?;
            for (name, m) in &c.metrics {
                tx.execute(
                    "INSERT INTO metrics (run_id, case_id, metric, unit, estimate, lower, upper, n)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        summary.run_id,
                        c.id,
                        name,
                        m.unit,
                        m.estimate,
                        m.lower,
                        m.upper,
                        m.n as i64
                    ],
                )
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// The most recent runs first.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRow>, HistoryError> {
        self.rows(
            "SELECT r.run_id, r.recorded_at, r.git_commit, r.git_dirty, r.device,
                    (SELECT COUNT(*) FROM cases c WHERE c.run_id = r.run_id)
             FROM runs r ORDER BY r.run_id DESC LIMIT ?1",
            params![limit as i64],
            |r| {
                Ok(RunRow {
                    run_id: r.get(0)?,
                    recorded_at: r.get(1)?,
                    git_commit: r.get(2)?,
                    git_dirty: r.get(3)?,
                    device: r.get(4)?,
                    cases: r.get::<_, i64>(5)? as usize,
                })
            },
        )
    }

    /// A metric of the cases whose id contains `case_filter`, most recent run first.
    pub fn metric(
        &self,
        case_filter: &str,
        metric: &str,
        limit: usize,
    ) -> Result<Vec<MetricRow>, HistoryError> {
        self.rows(
            "SELECT m.run_id, r.git_commit, m.case_id, m.metric, m.unit, m.estimate, m.lower, m.upper, m.n
             FROM metrics m JOIN runs r ON r.run_id = m.run_id
             WHERE instr(m.case_id, ?1) > 0 AND m.metric = ?2
             ORDER BY m.run_id DESC, m.case_id LIMIT ?3",
            params![case_filter, metric, limit as i64],
            |r| {
                Ok(MetricRow {
                    run_id: r.get(0)?,
                    git_commit: r.get(1)?,
                    case_id: r.get(2)?,
                    metric: r.get(3)?,
                    unit: r.get(4)?,
                    estimate: r.get(5)?,
                    lower: r.get(6)?,
                    upper: r.get(7)?,
                    n: r.get::<_, i64>(8)? as usize,
                })
            },
        )
    }

    /// The latest run of `commit` other than `except` (clean runs preferred over dirty ones).
    pub fn latest_run_of_commit(
        &self,
        commit: &str,
        except: Option<&str>,
    ) -> Result<Option<String>, HistoryError> {
        self.conn
            .query_row(
                "SELECT run_id FROM runs WHERE git_commit = ?1 AND run_id != ?2
                 ORDER BY COALESCE(git_dirty, 0) ASC, run_id DESC LIMIT 1",
                params![commit, except.unwrap_or("")],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// tok/s (or another metric's) estimates of a case in its most recent runs, excluding
    /// `except`, each with the code it ran: `commit` (or `commit+dirty`, or `unknown`). The
    /// gate's drift estimate is made from runs of the same code, so that a real change between
    /// commits is never mistaken for noise.
    pub fn recent_estimates(
        &self,
        case_id: &str,
        metric: &str,
        except: &[&str],
        limit: usize,
    ) -> Result<Vec<(String, f64)>, HistoryError> {
        let rows = self.rows(
            "SELECT m.run_id, m.estimate, r.git_commit, r.git_dirty
             FROM metrics m JOIN runs r ON r.run_id = m.run_id
             WHERE m.case_id = ?1 AND m.metric = ?2
             ORDER BY m.run_id DESC",
            params![case_id, metric],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, f64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<bool>>(3)?,
                ))
            },
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
        &self,
        run_id: &str,
        case_id: &str,
    ) -> Result<BTreeMap<String, melt_bench::store::Metric>, HistoryError> {
        let rows = self.rows(
            "SELECT metric, unit, estimate, lower, upper, n FROM metrics
             WHERE run_id = ?1 AND case_id = ?2",
            params![run_id, case_id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    melt_bench::store::Metric {
                        unit: r.get(1)?,
                        estimate: r.get(2)?,
                        lower: r.get(3)?,
                        upper: r.get(4)?,
                        n: r.get::<_, i64>(5)? as usize,
                        note: None,
                    },
                ))
            },
        )?;
        Ok(rows.into_iter().collect())
    }

    /// The case ids of a run.
    pub fn cases_of_run(&self, run_id: &str) -> Result<Vec<String>, HistoryError> {
        self.rows(
            "SELECT case_id FROM cases WHERE run_id = ?1 ORDER BY case_id",
            params![run_id],
            |r| r.get(0),
        )
    }

    /// A case's tokens per iteration and per-sample times in a run.
    pub fn case_samples(
        &self,
        run_id: &str,
        case_id: &str,
    ) -> Result<Option<(u64, Vec<f64>)>, HistoryError> {
        let row: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT tokens, samples_ns_json FROM cases WHERE run_id = ?1 AND case_id = ?2",
                params![run_id, case_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        match row {
            None => Ok(None),
            Some((tokens, json)) => {
                let times: Vec<f64> =
                    serde_json::from_str(&json).map_err(|e| HistoryError::Corrupt {
                        path: self.path.clone(),
                        reason: format!("samples of {case_id} in run {run_id}: {e}"),
                    })?;
                Ok(Some((tokens as u64, times)))
            }
        }
    }
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Runs `f` again while SQLite says the database is busy, for up to [`BUSY_TIMEOUT`].
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match f() {
            Err(e) if is_busy(&e) && start.elapsed() < BUSY_TIMEOUT => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

#[cfg(test)]
mod tests;
