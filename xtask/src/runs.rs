//! Stored runs: `cargo xtask report` (re-render the table of one or more runs) and
//! `cargo xtask export` (a run in another tool's format), without re-running anything.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use melt_bench::store::{read_events, Summary};
use melt_report::export;

/// The directory of run `id`, or of the latest run.
pub fn run_dir(target_dir: &Path, id: Option<&str>) -> Result<PathBuf> {
    let runs = target_dir.join("melt").join("runs");
    let dir = match id {
        Some(id) => runs.join(id),
        None => std::fs::read_dir(&runs)
            .with_context(|| {
                format!(
                    "no runs under {}: run `cargo xtask bench` first",
                    runs.display()
                )
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("summary.json").is_file())
            .max()
            .with_context(|| format!("no finished run under {}", runs.display()))?,
    };
    if !dir.join("summary.json").is_file() {
        bail!(
            "{} has no summary.json (unknown run, or one that did not finish)",
            dir.display()
        );
    }
    Ok(dir)
}

/// The latest finished run of each device (the host counts as one), oldest device first:
/// what `report` shows when no run is named, so devices appear side by side.
pub fn latest_per_device(target_dir: &Path) -> Result<Vec<PathBuf>> {
    let newest = run_dir(target_dir, None)?;
    let runs = newest.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&runs)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("summary.json").is_file())
        .collect();
    dirs.sort();
    let mut latest: std::collections::BTreeMap<String, PathBuf> = Default::default();
    for d in dirs {
        if let Ok(s) = load_summary(&d) {
            latest.insert(s.device.unwrap_or_else(|| "host".into()), d);
        }
    }
    let mut out: Vec<PathBuf> = latest.into_values().collect();
    out.sort();
    Ok(out)
}

pub fn load_summary(dir: &Path) -> Result<Summary> {
    let path = dir.join("summary.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a melt summary", path.display()))
}

/// `report [--run ID]... [--html]`: the table of the given runs (default: the latest of
/// each device),
/// merged; with `--html` also `target/melt/report/index.html` for them.
pub fn report(opts: &crate::cli::Report, target_dir: &Path) -> Result<String> {
    let (html, ids) = (opts.html, &opts.runs);
    let dirs: Vec<PathBuf> = if ids.is_empty() {
        latest_per_device(target_dir)?
    } else {
        ids.iter()
            .map(|id| run_dir(target_dir, Some(id)))
            .collect::<Result<_>>()?
    };
    let mut cases = Vec::new();
    let mut runs = Vec::new();
    let mut summaries = Vec::new();
    let mut samples = std::collections::BTreeMap::new();
    let mut probes = std::collections::BTreeMap::new();
    for d in &dirs {
        let s = load_summary(d)?;
        runs.push(s.run_id.clone());
        cases.extend(s.cases.clone());
        if html {
            let events = read_events(&d.join("samples.jsonl")).map_err(anyhow::Error::msg)?;
            samples.extend(export::samples_by_case(&events));
            probes.extend(export::probes_by_case(&events));
        }
        summaries.push(s);
    }
    if html {
        let path = target_dir.join("melt").join("report").join("index.html");
        std::fs::create_dir_all(path.parent().unwrap_or(target_dir))?;
        std::fs::write(
            &path,
            melt_report::html::render_with_probes(&summaries, &samples, &probes),
        )
        .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("xtask: wrote {}", path.display());
    }
    // The tasks of every run too: replays, perplexities, accuracies, the quantization table.
    let tasks: String = summaries
        .iter()
        .map(melt_bench::tasks::report::section)
        .collect();
    Ok(format!(
        "{}{tasks}\nmelt: {} case(s) from run(s) {}\n",
        melt_bench::analysis::table(&cases),
        cases.len(),
        runs.join(", ")
    ))
}

/// `export --format F [--run ID] [--output FILE]`.
pub fn export(opts: &crate::cli::Export, target_dir: &Path) -> Result<()> {
    let dir = run_dir(target_dir, opts.run.as_deref())?;
    let summary = load_summary(&dir)?;
    let events = read_events(&dir.join("samples.jsonl")).map_err(anyhow::Error::msg)?;
    let text = export::render(opts.format, &summary, &export::samples_by_case(&events));
    match &opts.output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("xtask: wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// `meter CSV [--run ID] [--meter-offset S] [--meter-start UNIX_S]`: an external power
/// meter's readings put into a stored run (its `summary.json`), aligned by wall-clock time.
pub fn meter(opts: &crate::cli::Meter, target_dir: &Path) -> Result<String> {
    use melt_report::meter;
    let align = meter::Alignment {
        start_unix_s: opts.meter_start,
        offset_s: opts.meter_offset.unwrap_or(0.0),
    };
    let dir = run_dir(target_dir, opts.run.as_deref())?;
    let csv = opts.csv.display();
    let series = meter::read_csv(&opts.csv, align)?;
    let mut summary = load_summary(&dir)?;
    let events = read_events(&dir.join("samples.jsonl")).map_err(anyhow::Error::msg)?;
    let (covered, skipped) = meter::import(&mut summary, &export::probes_by_case(&events), &series);
    if covered == 0 {
        let why: Vec<String> = skipped.iter().map(|e| format!("  {e}")).collect();
        bail!(
            "{csv} covers no case of run {}; nothing was changed:\n{}",
            summary.run_id,
            why.join("\n")
        );
    }
    for e in &skipped {
        eprintln!("xtask: not from the meter: {e}");
    }
    let path = dir.join("summary.json");
    melt_bench::store::write_json(&path, &summary)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "xtask: {covered} case(s) of run {} now carry the meter's energy ({})",
        summary.run_id,
        path.display()
    );
    Ok(format!(
        "{}{}",
        melt_bench::analysis::table(&summary.cases),
        melt_bench::analysis::probes_section(&summary)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_runs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = run_dir(dir.path(), None).unwrap_err().to_string();
        assert!(e.contains("cargo xtask bench"), "{e}");
        std::fs::create_dir_all(dir.path().join("melt/runs/half-finished")).unwrap();
        let e = run_dir(dir.path(), Some("half-finished"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no summary.json"), "{e}");
        let export_x = crate::cli::Export {
            format: export::Format::Csv,
            run: Some("x".into()),
            output: None,
        };
        let e = export(&export_x, dir.path()).unwrap_err().to_string();
        assert!(e.contains("no summary.json"), "{e}");
    }
}
