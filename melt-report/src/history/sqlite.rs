//! The embedded store: one SQLite file per machine (`target/melt/history.sqlite`).
//!
//! Writers use WAL and a busy timeout and write a run in one immediate transaction, so
//! concurrent runs (several devices merging at once) cannot corrupt it or interleave. A file
//! that is not a database, or one from a newer melt, is an error — it is never reset.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::store::{sqlite_busy, DbError, Engine, Lite, Sql};
use super::{schema, HistoryError, Location};

const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens (creating if absent) and migrates the database at `path`.
pub fn open(path: &Path) -> Result<Connection, HistoryError> {
    let at = || Location::File(path.to_path_buf());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| HistoryError::Sql {
            at: at(),
            source: DbError::Decode(e.to_string()),
        })?;
    }
    // A busy database is another writer at work, not a broken file.
    let corrupt = |e: rusqlite::Error| {
        let e = DbError::from(e);
        if e.is_busy() {
            HistoryError::Sql {
                at: at(),
                source: DbError::Decode(format!("{e} (another melt kept it locked for too long)")),
            }
        } else {
            HistoryError::Corrupt {
                at: at(),
                reason: e.to_string(),
            }
        }
    };
    let conn = Connection::open(path).map_err(corrupt)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(corrupt)?;
    // Reading the schema version is the first access to the file: a file that is not a
    // database fails here, before anything is written.
    let version: i64 =
        retry_busy(|| conn.query_row("PRAGMA user_version", [], |r| r.get(0))).map_err(corrupt)?;
    // Switching to WAL takes an exclusive lock and SQLite answers BUSY at once, without
    // its busy handler, while another connection creates or migrates the file: retry.
    retry_busy(|| conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))).map_err(corrupt)?;
    super::check_version(&at(), version)?;
    if version < schema::VERSION {
        migrate(&conn).map_err(|source| HistoryError::Sql { at: at(), source })?;
    }
    Ok(conn)
}

pub fn version(conn: &Connection) -> Result<i64, DbError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

fn migrate(conn: &Connection) -> Result<(), DbError> {
    // Immediate: the write lock first, so that two processes opening a new file do not both
    // migrate it.
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    // Another process may have migrated while this one waited for the lock.
    for v in version(&tx)? + 1..=schema::VERSION {
        tx.execute_batch(&schema::render(v, Engine::Sqlite))?;
        tx.pragma_update(None, "user_version", v)?;
    }
    Ok(tx.commit()?)
}

/// `f` in one immediate transaction: committed when it returns Ok, rolled back otherwise.
pub fn transaction<T>(
    conn: &Connection,
    f: impl FnOnce(&mut dyn Sql) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let out = f(&mut Lite(&tx))?;
    tx.commit()?;
    Ok(out)
}

/// Runs `f` again while SQLite says the database is busy, for up to [`BUSY_TIMEOUT`].
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match f() {
            Err(e) if sqlite_busy(&e) && start.elapsed() < BUSY_TIMEOUT => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}
