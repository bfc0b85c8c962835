//! `cargo melt history [--case SUBSTR] [--metric NAME] [--limit N]`: what melt remembers.
//! Without `--case`, the latest runs; with it, one metric of the matching cases over runs.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Result};
use melt_report::history::History;

pub fn open(target_dir: &Path) -> Result<History> {
    let path = melt_bench::store::Layout::at(target_dir).history_path();
    if !path.is_file() {
        bail!(
            "no history yet at {}: run `cargo melt bench` first",
            path.display()
        );
    }
    Ok(History::open(&path)?)
}

pub fn run(opts: &crate::cli::History, target_dir: &Path) -> Result<()> {
    let (case, metric, limit) = (opts.case.clone(), opts.metric.clone(), opts.limit);
    let h = open(target_dir)?;
    let short = |c: &Option<String>| {
        c.as_deref()
            .map_or("-".to_string(), |c| c.chars().take(10).collect())
    };
    let mut out = String::new();
    match case {
        None => {
            let _ = writeln!(out, "| run | commit | dirty | device | cases |");
            let _ = writeln!(out, "| --- | --- | --- | --- | ---: |");
            for r in h.runs(limit)? {
                let dirty = r.git_dirty.map_or("-", |d| if d { "yes" } else { "no" });
                let _ = writeln!(
                    out,
                    "| {} | {} | {dirty} | {} | {} |",
                    r.run_id,
                    short(&r.git_commit),
                    r.device,
                    r.cases
                );
            }
        }
        Some(case) => {
            let rows = h.metric(&case, &metric, limit)?;
            if rows.is_empty() {
                bail!("no `{metric}` recorded for cases matching `{case}`");
            }
            let _ = writeln!(out, "| run | commit | case | {metric} | 95% CI | n |");
            let _ = writeln!(out, "| --- | --- | --- | ---: | --- | ---: |");
            for m in rows {
                let ci = match (m.lower, m.upper) {
                    (Some(lo), Some(hi)) => format!("{lo:.2} … {hi:.2}"),
                    _ => "-".into(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.2} {} | {ci} | {} |",
                    m.run_id,
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
