//! `cargo melt history`: what melt remembers, and moving it between machines.
//! - `history [--history PATH|URL] [--device D] [--case SUBSTR] [--metric NAME] [--limit N]`:
//!   the latest runs, or one metric of the matching cases over runs;
//! - `history push --to URL [--ref REF] [--device D]`: this machine's runs into a shared one;
//! - `history pull --from URL [--ref REF] [--device D]`: a shared history's runs into this
//!   machine's, e.g. to gate offline against a ref this checkout never ran.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use melt_report::history::{History, Location, MetricQuery, RunFilter};

use crate::cli::{HistoryAction, HistoryList, HistoryRuns};

/// This machine's history file.
pub fn local(target_dir: &Path) -> PathBuf {
    melt_bench::store::Layout::at(target_dir).history_path()
}

/// This machine's history, which must exist (a run made it).
pub fn open(target_dir: &Path) -> Result<History> {
    let path = local(target_dir);
    if !path.is_file() {
        bail!(
            "no history yet at {}: run `cargo melt bench` first",
            path.display()
        );
    }
    Ok(History::open(&path)?)
}

/// The history `at` names (a file or a URL), or this machine's.
pub fn open_at(at: Option<&str>, target_dir: &Path) -> Result<History> {
    match at.map(Location::parse) {
        None => open(target_dir),
        Some(Location::File(path)) if !path.is_file() => {
            bail!("no history at {}", path.display())
        }
        Some(at) => Ok(History::at(&at)?),
    }
}

pub fn run(opts: &crate::cli::History, target_dir: &Path) -> Result<()> {
    match &opts.action {
        None => list(&opts.list, target_dir),
        Some(HistoryAction::Push { to, from, runs }) => {
            let mut from = open_at(from.as_deref(), target_dir)?;
            let mut to = History::at(&Location::parse(to))?;
            copy(&mut from, &mut to, runs)
        }
        Some(HistoryAction::Pull { from, runs }) => {
            let mut from = History::at(&Location::parse(from))?;
            let mut to = History::open(&local(target_dir))?;
            copy(&mut from, &mut to, runs)
        }
    }
}

/// Copies the runs `runs` selects, and says what it did.
fn copy(from: &mut History, to: &mut History, runs: &HistoryRuns) -> Result<()> {
    let filter = RunFilter {
        commit: match &runs.git_ref {
            Some(r) => Some(crate::paired::commit_of(&std::env::current_dir()?, r)?),
            None => None,
        },
        device: runs.device.clone(),
    };
    let (src, dst) = (from.location().to_string(), to.location().to_string());
    let pushed = from.push(to, &filter).map_err(|e| {
        anyhow::anyhow!(
            "{e}\nthe runs copied before this are in {dst} whole; run the same command again \
             to copy the rest"
        )
    })?;
    eprintln!(
        "melt: {} run(s) copied from {src} to {dst}, {} already there",
        pushed.added.len(),
        pushed.already_there
    );
    Ok(())
}

fn list(opts: &HistoryList, target_dir: &Path) -> Result<()> {
    let mut h = open_at(opts.history.at.as_deref(), target_dir)?;
    let device = opts.device.as_deref();
    let short = |c: &Option<String>| {
        c.as_deref()
            .map_or("-".to_string(), |c| c.chars().take(10).collect())
    };
    let mut out = String::new();
    match &opts.case {
        None => {
            let _ = writeln!(out, "| run | device | commit | dirty | cases |");
            let _ = writeln!(out, "| --- | --- | --- | --- | ---: |");
            for r in h.runs(device, opts.limit)? {
                let dirty = r.git_dirty.map_or("-", |d| if d { "yes" } else { "no" });
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {dirty} | {} |",
                    r.key.run_id,
                    r.key.device,
                    short(&r.git_commit),
                    r.cases
                );
            }
        }
        Some(case) => {
            let metric = &opts.metric;
            let rows = h.metric(case, metric, device, opts.limit)?;
            if rows.is_empty() {
                bail!("no `{metric}` recorded for cases matching `{case}`");
            }
            let _ = writeln!(
                out,
                "| run | device | commit | case | {metric} | 95% CI | n |"
            );
            let _ = writeln!(out, "| --- | --- | --- | --- | ---: | --- | ---: |");
            for m in rows {
                let ci = match (m.lower, m.upper) {
                    (Some(lo), Some(hi)) => format!("{lo:.2} … {hi:.2}"),
                    _ => "-".into(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {:.2} {} | {ci} | {} |",
                    m.key.run_id,
                    m.key.device,
                    short(&m.git_commit),
                    m.case_id,
                    m.estimate,
                    m.unit,
                    m.n
                );
            }
        }
    }
    print!("{}", melt_bench::markdown::aligned(&out));
    Ok(())
}

/// `report --history [AT]`: every case's tok/s, TTFT, memory and energy per run over time,
/// as a table (returned) and, with `--html`/`--open`, `target/melt/report/trends.html`.
pub fn trends(opts: &crate::cli::Report, at: Option<&str>, target_dir: &Path) -> Result<String> {
    let env = std::env::var(melt_report::sinks::SHARED_HISTORY_ENV).ok();
    let at = at.or(env.as_deref().filter(|s| !s.is_empty()));
    let mut h = open_at(at, target_dir)?;
    let since = match &opts.since {
        Some(s) => Some(since(s)?),
        None => None,
    };
    let query = MetricQuery {
        metric: String::new(),
        case: opts.case.clone(),
        device: opts.device.clone(),
        since,
    };
    let series = melt_report::trends::collect(&mut h, &query)?;
    if series.is_empty() {
        bail!("no runs in {} match", h.location());
    }
    if opts.html || opts.open {
        let path = melt_bench::store::Layout::at(target_dir).report_path();
        let path = path.with_file_name("trends.html");
        std::fs::create_dir_all(path.parent().unwrap_or(target_dir))?;
        let page = melt_report::html::trends_page(&series, &h.location().to_string());
        std::fs::write(&path, page)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        eprintln!("melt: wrote {}", path.display());
        if opts.open {
            crate::runs::open_in_browser(&path);
        }
    }
    Ok(melt_report::trends::markdown(&series))
}

/// `--since`: a date or time (`2026-11-01`, `2026-11-01T10:00:00Z`) as the history stamps
/// runs, or a git ref's commit time.
fn since(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let is_date = b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit);
    if is_date {
        return Ok(s.replace(':', "-"));
    }
    let dir = std::env::current_dir()?;
    let commit = crate::paired::commit_of(&dir, s).map_err(|_| {
        anyhow::anyhow!("--since {s}: neither a date (2026-11-01) nor a git ref here")
    })?;
    let secs: u64 = crate::paired::git(&dir, &["show", "-s", "--format=%ct", &commit])?
        .parse()
        .map_err(|_| anyhow::anyhow!("--since {s}: git gave no commit time"))?;
    Ok(melt_bench::timestamp::timestamp_id_at(secs))
}
