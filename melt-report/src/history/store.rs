//! The two places a history lives — an embedded SQLite file or a PostgreSQL database — behind
//! one small interface, so every query in [`super`] is written once.
//!
//! Queries are written in PostgreSQL's spelling (`$1` parameters, `strpos`); the SQLite side
//! rewrites those two things ([`sqlite_spelling`]). Values cross the boundary as [`Param`]
//! (typed even when null, because PostgreSQL types every parameter) and come back as
//! [`Value`] rows.

use std::fmt;

/// What a database said, from either engine.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", postgres_text(.0))]
    Postgres(#[from] postgres::Error),
    /// A value of the wrong type or shape where melt wrote its own.
    #[error("{0}")]
    Decode(String),
}

/// postgres::Error's own text says only "db error" or "error connecting to server"; the
/// server's message, or the refused connection, is its source.
fn postgres_text(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        source = s.source();
    }
    text
}

impl DbError {
    /// SQLite's "another connection holds the lock" (not a broken file).
    pub fn is_busy(&self) -> bool {
        matches!(self, DbError::Sqlite(e) if sqlite_busy(e))
    }
}

/// SQLite's "another connection holds the lock".
pub fn sqlite_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// A query parameter. Each carries its type, so that a null binds as PostgreSQL expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(Option<String>),
    Int(Option<i64>),
    Real(Option<f64>),
    Bool(Option<bool>),
}

impl From<&str> for Param {
    fn from(v: &str) -> Param {
        Param::Text(Some(v.to_string()))
    }
}
impl From<&String> for Param {
    fn from(v: &String) -> Param {
        Param::Text(Some(v.clone()))
    }
}
impl From<Option<&str>> for Param {
    fn from(v: Option<&str>) -> Param {
        Param::Text(v.map(str::to_string))
    }
}
impl From<&Option<String>> for Param {
    fn from(v: &Option<String>) -> Param {
        Param::Text(v.clone())
    }
}
impl From<i64> for Param {
    fn from(v: i64) -> Param {
        Param::Int(Some(v))
    }
}
impl From<f64> for Param {
    fn from(v: f64) -> Param {
        Param::Real(Some(v))
    }
}
impl From<Option<f64>> for Param {
    fn from(v: Option<f64>) -> Param {
        Param::Real(v)
    }
}
impl From<Option<bool>> for Param {
    fn from(v: Option<bool>) -> Param {
        Param::Bool(v)
    }
}

/// `args![a, b]`: a query's parameters, each converted into a [`Param`].
macro_rules! args {
    ($($v:expr),* $(,)?) => { [$($crate::history::store::Param::from($v)),*] };
}
pub(crate) use args;

/// A value read back. SQLite has no booleans: [`Value::bool`] reads 0/1 as one.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
}

/// One row: its values by column position.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value, DbError> {
        self.0
            .get(i)
            .ok_or_else(|| DbError::Decode(format!("a row has no column {i}")))
    }

    fn wrong(&self, i: usize, want: &str) -> DbError {
        DbError::Decode(format!(
            "column {i} holds {:?} where {want} was expected",
            self.0.get(i)
        ))
    }

    pub fn text(&self, i: usize) -> Result<String, DbError> {
        self.opt_text(i)?.ok_or_else(|| self.wrong(i, "text"))
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            _ => Err(self.wrong(i, "text")),
        }
    }

    pub fn int(&self, i: usize) -> Result<i64, DbError> {
        match self.at(i)? {
            Value::Int(v) => Ok(*v),
            _ => Err(self.wrong(i, "an integer")),
        }
    }

    pub fn real(&self, i: usize) -> Result<f64, DbError> {
        self.opt_real(i)?.ok_or_else(|| self.wrong(i, "a number"))
    }

    pub fn opt_real(&self, i: usize) -> Result<Option<f64>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Real(v) => Ok(Some(*v)),
            // SQLite stores a REAL that happens to be whole as written: 70.0 may read as 70.
            Value::Int(v) => Ok(Some(*v as f64)),
            _ => Err(self.wrong(i, "a number")),
        }
    }

    pub fn opt_bool(&self, i: usize) -> Result<Option<bool>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Bool(b) => Ok(Some(*b)),
            Value::Int(v) => Ok(Some(*v != 0)),
            _ => Err(self.wrong(i, "a boolean")),
        }
    }
}

/// What every query runs on: a connection or a transaction, of either engine.
pub trait Sql {
    fn query(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Row>, DbError>;
    /// The number of rows the statement changed.
    fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64, DbError>;
}

/// The engine a history is kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Sqlite => "SQLite",
            Engine::Postgres => "PostgreSQL",
        })
    }
}

/// A query written for PostgreSQL, as SQLite spells it: `$N` parameters become `?N` (numbered
/// the same), `strpos(` becomes `instr(` (both take the haystack first).
pub fn sqlite_spelling(sql: &str) -> String {
    sql.replace('$', "?").replace("strpos(", "instr(")
}

// SQLite: values bound and read through rusqlite.

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Param::Text(v) => v.to_sql(),
            Param::Int(v) => v.to_sql(),
            Param::Real(v) => v.to_sql(),
            Param::Bool(v) => v.to_sql(),
        }
    }
}

/// A SQLite connection (or the connection under an open transaction).
pub struct Lite<'c>(pub &'c rusqlite::Connection);

impl Sql for Lite<'_> {
    fn query(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Row>, DbError> {
        use rusqlite::types::ValueRef;
        let mut st = self.0.prepare_cached(&sqlite_spelling(sql))?;
        let columns = st.column_count();
        let rows = st.query_map(rusqlite::params_from_iter(params), |r| {
            (0..columns)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        ValueRef::Null => Value::Null,
                        ValueRef::Integer(v) => Value::Int(v),
                        ValueRef::Real(v) => Value::Real(v),
                        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                        ValueRef::Blob(_) => {
                            return Err(rusqlite::Error::InvalidColumnType(
                                i,
                                "blob".into(),
                                rusqlite::types::Type::Blob,
                            ))
                        }
                    })
                })
                .collect::<rusqlite::Result<Vec<Value>>>()
                .map(Row)
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64, DbError> {
        let mut st = self.0.prepare_cached(&sqlite_spelling(sql))?;
        Ok(st.execute(rusqlite::params_from_iter(params))? as u64)
    }
}

// PostgreSQL: the same through the postgres crate, on a client or a transaction.

/// A PostgreSQL client or transaction.
pub struct Pg<'c, C: postgres::GenericClient>(pub &'c mut C);

fn pg_params(params: &[Param]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    params
        .iter()
        .map(|p| -> Box<dyn postgres::types::ToSql + Sync> {
            match p.clone() {
                Param::Text(v) => Box::new(v),
                Param::Int(v) => Box::new(v),
                Param::Real(v) => Box::new(v),
                Param::Bool(v) => Box::new(v),
            }
        })
        .collect()
}

impl<C: postgres::GenericClient> Sql for Pg<'_, C> {
    fn query(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Row>, DbError> {
        use postgres::types::Type;
        let boxed = pg_params(params);
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            boxed.iter().map(|b| b.as_ref()).collect();
        let rows = self.0.query(sql, &refs)?;
        rows.iter()
            .map(|r| {
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let v = match *c.type_() {
                            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Int),
                            Type::INT4 => r
                                .try_get::<_, Option<i32>>(i)?
                                .map(|v| Value::Int(v.into())),
                            Type::FLOAT8 => r.try_get::<_, Option<f64>>(i)?.map(Value::Real),
                            Type::BOOL => r.try_get::<_, Option<bool>>(i)?.map(Value::Bool),
                            Type::TEXT | Type::VARCHAR => {
                                r.try_get::<_, Option<String>>(i)?.map(Value::Text)
                            }
                            ref t => {
                                return Err(DbError::Decode(format!(
                                    "column {} has type {t}, which melt does not write",
                                    c.name()
                                )))
                            }
                        };
                        Ok(v.unwrap_or(Value::Null))
                    })
                    .collect::<Result<Vec<Value>, DbError>>()
                    .map(Row)
            })
            .collect()
    }

    fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64, DbError> {
        let boxed = pg_params(params);
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            boxed.iter().map(|b| b.as_ref()).collect();
        Ok(self.0.execute(sql, &refs)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_spelling_numbers_parameters_the_same() {
        assert_eq!(
            sqlite_spelling("SELECT a FROM t WHERE strpos(b, $1) > 0 AND c = $2 LIMIT $10"),
            "SELECT a FROM t WHERE instr(b, ?1) > 0 AND c = ?2 LIMIT ?10"
        );
    }

    #[test]
    fn rows_read_sqlite_integers_as_booleans_and_numbers() {
        let row = Row(vec![
            Value::Int(1),
            Value::Int(70),
            Value::Null,
            Value::Text("x".into()),
        ]);
        assert_eq!(row.opt_bool(0).unwrap(), Some(true));
        assert_eq!(row.real(1).unwrap(), 70.0);
        assert_eq!(row.opt_real(2).unwrap(), None);
        assert!(row.int(3).is_err());
        assert!(row.text(9).is_err());
    }
}
