//! An external power meter (a Monsoon, a USB meter): its CSV of timestamped readings,
//! imported after the run and aligned with each case's phase marks by wall-clock time.
//!
//! The meter runs on its own clock and writes its own file, so nothing is read while
//! measuring: every case keeps the Unix time of its epoch and its marks ([`ProbeSummary`]),
//! and [`attribute`] integrates the meter's power over exactly those windows afterwards.
//!
//! Columns are found by name or unit in the header: a time column (`time`, `timestamp`,
//! `(s)`, `(ms)`, `(us)`), then either power (`power`, `watts`, `(W)`, `(mW)`) or voltage and
//! current (`(V)`, `(mV)`, `(A)`, `(mA)` — Monsoon's `Time(ms),Main(mA),Main Voltage(V)`).
//! Times are absolute (Unix seconds/ms/µs/ns told apart by magnitude, or RFC 3339 such as
//! `2026-11-24T17:05:00.250Z`) or relative to the meter's start, which must then be given.

use std::path::{Path, PathBuf};

use melt_bench::probe::{EnergyByPhase, ProbeSummary};

#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    #[error("cannot read the meter file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{file}: no {what} column in the header `{header}` (recognized: {hint})")]
    NoColumn {
        file: PathBuf,
        what: &'static str,
        header: String,
        hint: &'static str,
    },
    #[error("{file}:{line}: {why}")]
    BadRow {
        file: PathBuf,
        line: usize,
        why: String,
    },
    #[error("{0}: fewer than two readings")]
    TooFew(PathBuf),
    #[error(
        "{0}: its times are relative to the meter's start (largest {1}); give that start as Unix seconds (--meter-start)"
    )]
    NeedsStart(PathBuf, f64),
    #[error(
        "the meter's readings ({meter}) do not cover case `{case}` ({case_span}): is a clock off? (--meter-offset SECONDS shifts the meter's times)"
    )]
    NotCovered {
        case: String,
        meter: String,
        case_span: String,
    },
    #[error("case `{0}` has no phase marks or epoch (run with the probes on: --probe-period > 0)")]
    NoMarks(String),
}

/// How to place the meter's times on the Unix clock.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Alignment {
    /// Unix seconds of the meter's zero, for files with relative times.
    pub start_unix_s: Option<f64>,
    /// Added to every meter time (its clock's error against the device's).
    pub offset_s: f64,
}

/// A meter's readings: (Unix ns, watts), sorted by time.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterSeries {
    pub name: String,
    pub points: Vec<(i128, f64)>,
    /// What was read from which columns, for the report.
    pub assumed: String,
}

/// The column whose normalized name contains one of `names` or whose unit is one of
/// `units` (unit → scale to SI).
fn find(header: &[String], names: &[&str], units: &[(&str, f64)]) -> Option<(usize, f64)> {
    for (i, h) in header.iter().enumerate() {
        for (u, scale) in units {
            if h.ends_with(&format!("({u})")) || h.ends_with(&format!("_{u}")) || h == u {
                return Some((i, *scale));
            }
        }
    }
    header
        .iter()
        .enumerate()
        .find_map(|(i, h)| names.iter().any(|n| h.contains(n)).then_some((i, 1.0)))
}

/// Days from 1970-01-01 to a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.frac][Z|±HH:MM]` as Unix ns (UTC when no zone is given).
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac_ns: i128 = 0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits: String = r.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() {
            return None;
        }
        let padded = format!("{:0<9}", &digits[..digits.len().min(9)]);
        frac_ns = padded.parse().ok()?;
        rest = &r[digits.len()..];
    }
    let zone_s: i64 = match rest {
        "" | "Z" | "z" => 0,
        z if z.len() == 6 && (z.starts_with('+') || z.starts_with('-')) && &z[3..4] == ":" => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            sign * (z[1..3].parse::<i64>().ok()? * 3600 + z[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - zone_s;
    Some(secs as i128 * 1_000_000_000 + frac_ns)
}

/// A decimal number of units of 10^`pow10` ns as exact ns (`1795539900.25` s has more
/// digits than an f64 keeps at ns resolution); exponent notation goes through f64.
fn decimal_ns(text: &str, pow10: u32) -> Option<i128> {
    if text.contains(['e', 'E']) {
        let x: f64 = text.parse().ok()?;
        return x
            .is_finite()
            .then(|| (x * 10f64.powi(pow10 as i32)) as i128);
    }
    let (neg, digits) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let scale = 10i128.pow(pow10);
    let mut ns = if int.is_empty() {
        0
    } else {
        int.parse::<i128>().ok()? * scale
    };
    let kept = &frac[..frac.len().min(pow10 as usize)];
    if !kept.is_empty() {
        ns += kept.parse::<i128>().ok()? * 10i128.pow(pow10 - kept.len() as u32);
    }
    Some(if neg { -ns } else { ns })
}

/// Reads a meter's CSV (comma, semicolon or tab separated; `#` lines are comments).
pub fn read_csv(path: &Path, align: Alignment) -> Result<MeterSeries, MeterError> {
    let text = std::fs::read_to_string(path).map_err(|e| MeterError::Io(path.into(), e))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let sep = |l: &str| {
        [',', ';', '\t']
            .into_iter()
            .max_by_key(|c| l.matches(*c).count())
            .unwrap_or(',')
    };
    let (_, header_line) = lines
        .next()
        .ok_or_else(|| MeterError::TooFew(path.into()))?;
    let delim = sep(header_line);
    let header: Vec<String> = header_line
        .split(delim)
        .map(|h| h.trim().trim_matches('"').to_lowercase().replace(' ', ""))
        .collect();
    let no = |what, hint| MeterError::NoColumn {
        file: path.into(),
        what,
        header: header_line.trim().into(),
        hint,
    };
    let time = find(
        &header,
        &["timestamp", "time", "unix"],
        &[("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)],
    )
    .ok_or_else(|| no("time", "time, timestamp, or a unit (s), (ms), (us), (ns)"))?;
    let power = find(
        &header,
        &["power", "watt"],
        &[("w", 1.0), ("mw", 1e-3), ("uw", 1e-6)],
    );
    let vi = (
        find(&header, &["voltage", "volt"], &[("v", 1.0), ("mv", 1e-3)]),
        find(
            &header,
            &["current", "curr"],
            &[("a", 1.0), ("ma", 1e-3), ("ua", 1e-6)],
        ),
    );
    let hint = "power, watts, (W), (mW); or voltage (V)/(mV) and current (A)/(mA)";
    // Power is the product of these columns (each scaled to SI): power alone, or V × I.
    let (assumed, factors): (String, Vec<(usize, f64)>) = match (power, vi) {
        (Some(p), _) => (format!("power from column `{}`", header[p.0]), vec![p]),
        (None, (Some(v), Some(i))) => (
            format!("power = `{}` × `{}`", header[v.0], header[i.0]),
            vec![v, i],
        ),
        _ => return Err(no("power (or voltage and current)", hint)),
    };
    let (t_col, t_scale) = time;
    let explicit_unit =
        t_scale != 1.0 || header[t_col].ends_with("(s)") || header[t_col].ends_with("_s");
    // Rows: the time as text (it may be RFC 3339), the rest as numbers.
    let mut raw: Vec<(usize, String, f64)> = Vec::new();
    for (i, line) in lines {
        let cells: Vec<&str> = line
            .split(delim)
            .map(|c| c.trim().trim_matches('"'))
            .collect();
        let bad = |why: String| MeterError::BadRow {
            file: path.into(),
            line: i + 1,
            why,
        };
        if cells.len() < header.len() {
            return Err(bad(format!(
                "{} cells, the header has {}",
                cells.len(),
                header.len()
            )));
        }
        let mut w = 1.0;
        for &(k, scale) in &factors {
            let c = cells[k];
            let x: f64 = c
                .parse()
                .map_err(|_| bad(format!("`{c}` in column `{}` is not a number", header[k])))?;
            w *= x * scale;
        }
        if !w.is_finite() {
            return Err(bad(format!("power `{w}` is not finite")));
        }
        raw.push((i + 1, cells[t_col].to_string(), w));
    }
    if raw.len() < 2 {
        return Err(MeterError::TooFew(path.into()));
    }
    // Numeric times: a unit from the header, or (seconds) told apart from absolute by size.
    let numeric: Option<Vec<f64>> = raw.iter().map(|r| r.1.parse::<f64>().ok()).collect();
    let offset_ns = (align.offset_s * 1e9) as i128;
    let mut points = Vec::with_capacity(raw.len());
    match numeric {
        Some(ts) => {
            let max = ts.iter().copied().fold(f64::MIN, f64::max);
            // A Unix time in any unit is past 1e8 (1973 in seconds); a capture is shorter.
            let (scale, absolute) = if explicit_unit {
                let abs = max * t_scale > 1e8;
                (t_scale, abs)
            } else if max > 1e17 {
                (1e-9, true)
            } else if max > 1e14 {
                (1e-6, true)
            } else if max > 1e11 {
                (1e-3, true)
            } else {
                (1.0, max > 1e8)
            };
            let zero_ns = if absolute {
                0
            } else {
                let start = align
                    .start_unix_s
                    .ok_or_else(|| MeterError::NeedsStart(path.into(), max))?;
                (start * 1e9) as i128
            };
            let pow10 = (9.0 + scale.log10()).round() as u32;
            for (line, t, w) in &raw {
                let ns = decimal_ns(t, pow10).ok_or_else(|| MeterError::BadRow {
                    file: path.into(),
                    line: *line,
                    why: format!("`{t}` is not a time"),
                })?;
                points.push((zero_ns + ns + offset_ns, *w));
            }
        }
        None => {
            for (line, t, w) in &raw {
                let ns = parse_rfc3339(t).ok_or_else(|| MeterError::BadRow {
                    file: path.into(),
                    line: *line,
                    why: format!("`{t}` is neither a number nor an RFC 3339 time"),
                })?;
                points.push((ns + offset_ns, *w));
            }
        }
    }
    points.sort_by_key(|p| p.0);
    Ok(MeterSeries {
        name: format!(
            "meter:{}",
            path.file_name()
                .map_or("csv".into(), |f| f.to_string_lossy())
        ),
        points,
        assumed,
    })
}

impl MeterSeries {
    /// Power at `t` (Unix ns), linear between readings.
    fn watts_at(&self, t: i128) -> f64 {
        let p = &self.points;
        let i = p.partition_point(|x| x.0 <= t);
        if i == 0 {
            return p[0].1;
        }
        if i >= p.len() {
            return p[p.len() - 1].1;
        }
        let (a, b) = (p[i - 1], p[i]);
        a.1 + (b.1 - a.1) * (t - a.0) as f64 / (b.0 - a.0).max(1) as f64
    }

    /// Joules between `a` and `b` (Unix ns): the piecewise-linear power integrated exactly.
    pub fn joules_between(&self, a: i128, b: i128) -> f64 {
        if b <= a {
            return 0.0;
        }
        let mut knots = vec![a];
        knots.extend(self.points.iter().map(|p| p.0).filter(|&t| t > a && t < b));
        knots.push(b);
        knots
            .windows(2)
            .map(|w| (self.watts_at(w[0]) + self.watts_at(w[1])) / 2.0 * (w[1] - w[0]) as f64 / 1e9)
            .sum()
    }

    fn span(&self) -> (i128, i128) {
        (self.points[0].0, self.points[self.points.len() - 1].0)
    }

    /// The longest gap between readings: how far outside its span a window may reach.
    fn period(&self) -> i128 {
        self.points
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .max()
            .unwrap_or(0)
    }
}

fn clock(ns: i128) -> String {
    let s = ns.div_euclid(1_000_000_000);
    let ms = ns.rem_euclid(1_000_000_000) / 1_000_000;
    let day = s.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}.{ms:03} UTC",
        day / 3600,
        day / 60 % 60,
        day % 60
    )
}

/// The meter's energy by phase for one case: prefill, decode, and tokens per joule.
pub fn attribute(
    meter: &MeterSeries,
    case: &str,
    p: &ProbeSummary,
    tokens: (u64, u64),
) -> Result<EnergyByPhase, MeterError> {
    if p.epoch_unix_ns == 0 || p.marks.is_empty() {
        return Err(MeterError::NoMarks(case.into()));
    }
    let epoch = p.epoch_unix_ns as i128;
    let (first, last) = (epoch + p.marks[0].0 as i128, epoch + p.end_ns as i128);
    let (lo, hi) = meter.span();
    let slack = meter.period();
    if first < lo - slack || last > hi + slack {
        return Err(MeterError::NotCovered {
            case: case.into(),
            meter: format!("{} – {}", clock(lo), clock(hi)),
            case_span: format!("{} – {}", clock(first), clock(last)),
        });
    }
    Ok(melt_bench::probe::energy_by_phase(
        &p.marks,
        p.end_ns,
        tokens,
        |a, b| meter.joules_between(epoch + a as i128, epoch + b as i128),
    ))
}

/// Puts the meter's energy into a run's summary: every case its readings cover gets
/// `prefill_power_w`, `prefill_j_per_token`, `decode_power_w`, `decode_j_per_token` and
/// `tokens_per_joule` from the meter (replacing any on-board figure, and saying so). Returns
/// how many cases were covered and why the others were not; nothing else is touched.
pub fn import(
    summary: &mut melt_bench::store::Summary,
    probes: &std::collections::BTreeMap<String, ProbeSummary>,
    meter: &MeterSeries,
) -> (usize, Vec<MeterError>) {
    let mut covered = 0;
    let mut skipped = Vec::new();
    let source = format!("{} ({})", meter.name, meter.assumed);
    for c in &mut summary.cases {
        let Some(p) = probes.get(&c.id) else {
            skipped.push(MeterError::NoMarks(c.id.clone()));
            continue;
        };
        let n = c.samples as u64;
        let tokens = (n * c.workload.prefill as u64, n * c.workload.decode as u64);
        let EnergyByPhase {
            prefill,
            decode,
            tokens_per_joule: per_joule,
        } = match attribute(meter, &c.id, p, tokens) {
            Ok(x) => x,
            Err(e) => {
                skipped.push(e);
                continue;
            }
        };
        covered += 1;
        let mut put = |name: &str, unit: &str, x: f64| {
            c.metrics.insert(
                name.into(),
                melt_bench::store::Metric {
                    unit: unit.into(),
                    estimate: x,
                    lower: None,
                    upper: None,
                    n: 1,
                    note: Some(source.clone()),
                },
            );
        };
        if let Some(e) = prefill {
            put("prefill_power_w", "W", e.watts);
            put("prefill_j_per_token", "J", e.joules_per_token);
        }
        if let Some(e) = decode {
            put("decode_power_w", "W", e.watts);
            put("decode_j_per_token", "J", e.joules_per_token);
        }
        if let Some(t) = per_joule {
            put("tokens_per_joule", "tok/J", t);
        }
        // A sustained case's power over time, window by window.
        if let Some(s) = &mut c.sustained {
            let epoch = p.epoch_unix_ns as i128;
            let ends: Vec<f64> = s.windows.iter().skip(1).map(|w| w.t_s).collect();
            for (w, end) in s
                .windows
                .iter_mut()
                .zip(ends.into_iter().chain([s.duration_s]))
            {
                let (a, b) = (epoch + (w.t_s * 1e9) as i128, epoch + (end * 1e9) as i128);
                if b > a {
                    w.watts = Some(meter.joules_between(a, b) / ((b - a) as f64 / 1e9));
                }
            }
        }
    }
    if covered > 0 {
        let o = summary.probes.get_or_insert_with(Default::default);
        if !o.energy_sources.contains(&meter.name) {
            o.energy_sources.push(meter.name.clone());
        }
        if !o.assumptions.contains(&source) {
            o.assumptions.push(source);
        }
    }
    (covered, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use melt_bench::probe::Phase;

    fn csv(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meter.csv");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    const T0: i128 = 1_795_539_900_250_000_000; // 2026-11-24T17:05:00.250Z

    #[test]
    fn rfc3339_times_with_zones_and_fractions() {
        assert_eq!(decimal_ns("1795539900.25", 9), Some(T0));
        assert_eq!(decimal_ns("1795539900250", 6), Some(T0));
        assert_eq!(decimal_ns("-0.5", 9), Some(-500_000_000));
        assert_eq!(decimal_ns("1.5e3", 6), Some(1_500_000_000));
        assert_eq!(decimal_ns("12:00", 9), None);
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-24T17:05:00.250Z"), Some(T0));
        assert_eq!(parse_rfc3339("2026-11-24 18:05:00.25+01:00"), Some(T0));
        assert_eq!(parse_rfc3339("2026-11-24T17:05:00.250000000"), Some(T0));
        for bad in [
            "2026-13-24T17:05:00Z",
            "2026-11-24",
            "17:05:00",
            "2026-11-24T17:05:00.Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn unix_seconds_and_power_columns_integrate_exactly() {
        // A ramp from 0 to 10 W over one second, then flat: 5 J, then 10 J/s.
        let (_d, p) =
            csv("timestamp,power_w\n1795539900.25,0\n1795539901.25,10\n1795539902.25,10\n");
        let m = read_csv(&p, Alignment::default()).unwrap();
        assert_eq!(m.points.len(), 3);
        assert_eq!(m.points[0].0, T0);
        assert!((m.joules_between(T0, T0 + 1_000_000_000) - 5.0).abs() < 1e-9);
        assert!((m.joules_between(T0 + 500_000_000, T0 + 2_000_000_000) - 13.75).abs() < 1e-9);
        assert!(m.assumed.contains("power_w"), "{}", m.assumed);
        // Milliseconds told apart by size, mW by unit, and a clock offset.
        let (_d, p) = csv("time,Power (mW)\n1795539900250,1500\n1795539900350,1500\n");
        let m = read_csv(
            &p,
            Alignment {
                offset_s: -0.25,
                ..Alignment::default()
            },
        )
        .unwrap();
        assert_eq!(m.points[0], (T0 - 250_000_000, 1.5));
    }

    #[test]
    fn monsoon_relative_times_need_the_meters_start() {
        let text = "Time(ms),Main(mA),Main Voltage(V)\n0,500,4.0\n100,750,4.0\n200,500,4.0\n";
        let (_d, p) = csv(text);
        let e = read_csv(&p, Alignment::default()).unwrap_err().to_string();
        assert!(e.contains("--meter-start") && e.contains("relative"), "{e}");
        let start = T0 as f64 / 1e9;
        let m = read_csv(
            &p,
            Alignment {
                start_unix_s: Some(start),
                offset_s: 0.0,
            },
        )
        .unwrap();
        assert!(m.assumed.contains("main(ma)") && m.assumed.contains("mainvoltage(v)"));
        assert!(
            (m.points[1].0 - (T0 + 100_000_000)).abs() < 1_000,
            "{:?}",
            m.points[1]
        );
        assert!((m.points[1].1 - 3.0).abs() < 1e-12, "750 mA at 4 V is 3 W");
    }

    #[test]
    fn rfc3339_rows_and_bad_files_are_named() {
        let (_d, p) = csv(
            "# usb meter\ntime;watts\n2026-11-24T17:05:00.250Z;2\n2026-11-24T17:05:01.250Z;2\n",
        );
        let m = read_csv(&p, Alignment::default()).unwrap();
        assert_eq!(m.points, vec![(T0, 2.0), (T0 + 1_000_000_000, 2.0)]);
        assert_eq!(m.name, "meter:meter.csv");

        let (_d, p) = csv("time,temperature\n1,2\n2,3\n");
        let e = read_csv(&p, Alignment::default()).unwrap_err().to_string();
        assert!(
            e.contains("no power") && e.contains("time,temperature"),
            "{e}"
        );
        let (_d, p) = csv("voltage,power\n1,2\n");
        let e = read_csv(&p, Alignment::default()).unwrap_err().to_string();
        assert!(e.contains("no time column"), "{e}");
        let (_d, p) = csv("timestamp,power_w\n1795539900.25,1\n1795539901.25,lots\n");
        let e = read_csv(&p, Alignment::default()).unwrap_err().to_string();
        assert!(e.contains("meter.csv:3") && e.contains("`lots`"), "{e}");
        let (_d, p) = csv("timestamp,power_w\n1795539900.25\n");
        let e = read_csv(&p, Alignment::default()).unwrap_err().to_string();
        assert!(e.contains("meter.csv:2") && e.contains("1 cells"), "{e}");
        let (_d, p) = csv("timestamp,power_w\n1795539900.25,1\n");
        assert!(matches!(
            read_csv(&p, Alignment::default()),
            Err(MeterError::TooFew(_))
        ));
        let (_d, p) = csv("timestamp,power_w\nyesterday,1\nnoon,2\n");
        let e = read_csv(&p, Alignment::default()).unwrap_err().to_string();
        assert!(e.contains("RFC 3339"), "{e}");
        assert!(matches!(
            read_csv(Path::new("/no/such/meter.csv"), Alignment::default()),
            Err(MeterError::Io(..))
        ));
    }

    #[test]
    fn phases_are_attributed_by_wall_clock_and_a_gap_is_named() {
        // 4 W for 2 s from T0, then 8 W: prefill 0.2–0.6 s, decode 0.6–1.6 s and 2.0–2.5 s.
        let (_d, p) = csv(&format!(
            "timestamp,power_w\n{0}.25,4\n{1}.25,4\n{1}.2501,8\n{2}.25,8\n",
            1_795_539_900, 1_795_539_902, 1_795_539_904
        ));
        let m = read_csv(&p, Alignment::default()).unwrap();
        let ms = |x: u64| x * 1_000_000;
        let probes = ProbeSummary {
            epoch_unix_ns: T0 as u64,
            marks: vec![
                (ms(200), Phase::Prefill),
                (ms(600), Phase::Decode),
                (ms(1600), Phase::Idle),
                (ms(2000), Phase::Decode),
            ],
            end_ns: ms(2500),
            ..ProbeSummary::default()
        };
        let a = attribute(&m, "case", &probes, (40, 15)).unwrap();
        let (pre, dec, per_j) = (a.prefill.unwrap(), a.decode.unwrap(), a.tokens_per_joule);
        assert!((pre.watts - 4.0).abs() < 1e-9 && (pre.joules - 1.6).abs() < 1e-9);
        // 1 s at 4 W, then 0.5 s at 8 W (less the 0.1 ms ramp between them).
        assert!((dec.joules - 8.0).abs() < 1e-3, "{dec:?}");
        assert!((dec.joules_per_token - 8.0 / 15.0).abs() < 1e-3);
        assert!((per_j.unwrap() - 55.0 / 9.6).abs() < 1e-2);
        // A meter file from another time (or a clock 10 s off) does not cover the case.
        let late = Alignment {
            offset_s: 10.0,
            ..Alignment::default()
        };
        let e = attribute(&read_csv(&p, late).unwrap(), "case", &probes, (40, 15))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`case`") && e.contains("17:05:10.250 UTC") && e.contains("--meter-offset"),
            "{e}"
        );
        let none = ProbeSummary::default();
        assert!(matches!(
            attribute(&m, "x", &none, (1, 1)),
            Err(MeterError::NoMarks(_))
        ));
    }
}
