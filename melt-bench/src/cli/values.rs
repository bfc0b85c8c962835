//! The checks on flag values clap runs while parsing: each says what it expected, and clap
//! puts the flag and the value beside it.

use std::path::PathBuf;
use std::time::Duration;

use crate::datasets::DataSource;

use super::ProbePeriod;

/// What a flag's value should have been (clap puts the flag and the value beside it).
#[derive(Debug, thiserror::Error)]
#[error("expected {0}")]
pub struct Expected(pub(super) &'static str);

pub(super) fn positive(value: &str) -> Result<usize, Expected> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Expected("a positive whole number")),
    }
}

/// A finite number that `ok` accepts; else what was `expected`.
fn number(value: &str, ok: fn(f64) -> bool, expected: &'static str) -> Result<f64, Expected> {
    value
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && ok(*x))
        .ok_or(Expected(expected))
}

pub(super) fn seconds(value: &str) -> Result<Duration, Expected> {
    let s = number(value, |s| s >= 0.0, "a non-negative number of seconds")?;
    Ok(Duration::from_secs_f64(s))
}

/// `90`, `90s`, `10m`, `1h`, `1.5m`.
pub(super) fn duration(value: &str) -> Result<Duration, Expected> {
    let expected = "a positive duration such as 90s, 10m or 1h";
    let (num, unit) = match value.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => value.split_at(i),
        None => (value, "s"),
    };
    let scale = match unit {
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(Expected(expected)),
    };
    let x = number(num, |x| x > 0.0, expected)?;
    Ok(Duration::from_secs_f64(x * scale))
}

pub(super) fn fraction(value: &str) -> Result<f64, Expected> {
    number(value, |x| x > 0.0 && x < 1.0, "a number between 0 and 1")
}

pub(super) fn non_negative(value: &str) -> Result<f64, Expected> {
    number(value, |x| x >= 0.0, "a non-negative number")
}

pub(super) fn percent(value: &str) -> Result<f64, Expected> {
    number(
        value,
        |x| x > 0.0 && x < 100.0,
        "a percentage between 0 and 100",
    )
    .map(|x| x / 100.0)
}

pub(super) fn celsius(value: &str) -> Result<f64, Expected> {
    number(value, |c| c >= 0.0, "degrees Celsius ≥ 0")
}

pub(super) fn probe_period(value: &str) -> Result<ProbePeriod, Expected> {
    let ms = number(
        value,
        |ms| ms >= 0.0,
        "milliseconds ≥ 0 (0 turns the probes off)",
    )?;
    Ok(ProbePeriod(
        (ms > 0.0).then(|| Duration::from_secs_f64(ms / 1e3)),
    ))
}

pub(super) fn existing_dir(value: &str) -> Result<PathBuf, Expected> {
    if std::path::Path::new(value).is_dir() {
        Ok(value.into())
    } else {
        Err(Expected("an existing directory"))
    }
}

/// A task's data: a shipped set's name or a file (see [`DataSource::from_arg`]).
pub(super) fn data(value: &str) -> Result<DataSource, crate::datasets::DatasetError> {
    DataSource::from_arg(value)
}
