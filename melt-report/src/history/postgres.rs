//! The shared store: a PostgreSQL database a team already runs (`postgres://…`), holding the
//! same schema as the SQLite file, so several device hosts and CI runners keep one history.
//!
//! Migrations run in one transaction under an advisory lock, so that many hosts meeting a new
//! or older database at once migrate it exactly once. A database whose schema is newer than
//! this melt is refused, naming both versions.

use std::str::FromStr;
use std::time::Duration;

use postgres::config::{Host, SslMode};
use postgres::{Client, Config, NoTls};

use super::store::{DbError, Engine, Pg, Sql};
use super::{schema, HistoryError, Location};

/// How long connecting may take when the URL does not say (`connect_timeout=`): an
/// unreachable host is an error within it, not a hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Any constant: the key of the advisory lock migrations hold ("melt" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d65_6c74;

/// Whether `s` names a PostgreSQL database rather than a file.
pub fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// The URL without its password (for messages and listings).
pub fn redacted(url: &str) -> String {
    let Ok(c) = Config::from_str(url) else {
        // Unparsable: keep the scheme and drop the rest, which may hold a password.
        return format!("{}://…", url.split("://").next().unwrap_or("postgres"));
    };
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .zip(c.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, p)| match h {
            Host::Tcp(h) => format!("{h}:{p}"),
            Host::Unix(dir) => format!("{}:{p}", dir.display()),
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        c.get_user().unwrap_or(""),
        hosts.join(","),
        c.get_dbname().unwrap_or("")
    )
}

/// Connects to `url` and migrates its schema.
pub fn connect(url: &str) -> Result<Client, HistoryError> {
    let at = || Location::Postgres(url.to_string());
    let mut config = Config::from_str(url).map_err(|e| HistoryError::Connect {
        at: at(),
        reason: format!("not a PostgreSQL URL: {e}"),
    })?;
    if config.get_ssl_mode() == SslMode::Require {
        return Err(HistoryError::Connect {
            at: at(),
            reason: "the URL asks for TLS (sslmode=require), which this melt does not speak: \
                     reach the server over a private network or an SSH tunnel"
                .into(),
        });
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("melt");
    }
    let mut client = config.connect(NoTls).map_err(|e| HistoryError::Connect {
        at: at(),
        reason: DbError::from(e).to_string(),
    })?;
    let sql = |source| HistoryError::Sql { at: at(), source };
    let mut tx = client.transaction().map_err(|e| sql(e.into()))?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
         CREATE TABLE IF NOT EXISTS melt_schema (version BIGINT NOT NULL);"
    ))
    .map_err(|e| sql(e.into()))?;
    let found = Pg(&mut tx)
        .query("SELECT version FROM melt_schema", &[])
        .and_then(|rows| rows.first().map(|r| r.int(0)).transpose())
        .map_err(sql)?;
    let version = found.unwrap_or(0);
    super::check_version(&at(), version)?;
    if found.is_none() {
        tx.execute("INSERT INTO melt_schema (version) VALUES (0)", &[])
            .map_err(|e| sql(e.into()))?;
    }
    for v in version + 1..=schema::VERSION {
        tx.batch_execute(&schema::render(v, Engine::Postgres))
            .map_err(|e| sql(e.into()))?;
        tx.execute("UPDATE melt_schema SET version = $1", &[&v])
            .map_err(|e| sql(e.into()))?;
    }
    tx.commit().map_err(|e| sql(e.into()))?;
    Ok(client)
}

pub fn version(client: &mut Client) -> Result<i64, DbError> {
    let rows = Pg(client).query("SELECT version FROM melt_schema", &[])?;
    rows.first()
        .ok_or_else(|| DbError::Decode("melt_schema has no row".into()))?
        .int(0)
}

/// `f` in one transaction: committed when it returns Ok, rolled back otherwise (and by the
/// server, when the connection dies half-way).
pub fn transaction<T>(
    client: &mut Client,
    f: impl FnOnce(&mut dyn Sql) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let mut tx = client.transaction()?;
    let out = f(&mut Pg(&mut tx))?;
    tx.commit()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths_and_shown_without_passwords() {
        assert!(is_url("postgres://melt@db/melt") && is_url("postgresql://db"));
        assert!(!is_url("target/melt/history.sqlite"));
        assert_eq!(
            redacted("postgres://melt:s3cret@db.lab:6543/bench?connect_timeout=3"),
            "postgres://melt@db.lab:6543/bench"
        );
        assert_eq!(
            redacted("postgresql://melt:pw@127.0.0.1/h"),
            "postgres://melt@127.0.0.1:5432/h"
        );
        assert!(!redacted("postgres://u:pw@[::1:bad").contains("pw"));
    }
}
