//! Stored runs: `cargo melt report` (re-render the table of one or more runs) and
//! `cargo melt export` (a run in another tool's format), without re-running anything.

use std::path::Path;

use anyhow::{bail, Context, Result};
use melt_bench::store::{Layout, RunDir};
use melt_report::export;

/// Run `id`, or the latest finished run.
pub fn run_dir(target_dir: &Path, id: Option<&str>) -> Result<RunDir> {
    let layout = Layout::at(target_dir);
    let run = match id {
        Some(id) => layout.run(id),
        None => layout
            .latest_finished_run()
            .with_context(|| no_runs(&layout))?,
    };
    if !run.is_finished() {
        bail!(
            "{} has no summary (unknown run, or one that did not finish)",
            run.path().display()
        );
    }
    Ok(run)
}

fn no_runs(layout: &Layout) -> String {
    format!(
        "no finished run under {}: run `cargo melt bench` first",
        layout.runs_dir().display()
    )
}

/// The latest finished run of each device (the host counts as one), oldest device first:
/// what `report` shows when no run is named, so devices appear side by side.
pub fn latest_per_device(target_dir: &Path) -> Result<Vec<RunDir>> {
    let layout = Layout::at(target_dir);
    let runs = layout.finished_runs();
    if runs.is_empty() {
        bail!("{}", no_runs(&layout));
    }
    let mut latest: std::collections::BTreeMap<String, RunDir> = Default::default();
    for run in runs {
        if let Ok(s) = run.load_summary() {
            latest.insert(s.device.unwrap_or_else(|| "host".into()), run);
        }
    }
    let mut out: Vec<RunDir> = latest.into_values().collect();
    out.sort();
    Ok(out)
}

/// `report [--run ID]... [--html]`: the table of the given runs (default: the latest of
/// each device),
/// merged; with `--html` also `target/melt/report/index.html` for them.
pub fn report(opts: &crate::cli::Report, target_dir: &Path) -> Result<String> {
    if let Some(at) = &opts.history {
        return crate::history::trends(opts, at.as_deref(), target_dir);
    }
    let (html, ids) = (opts.html || opts.open, &opts.runs);
    let dirs: Vec<RunDir> = if ids.is_empty() {
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
        let s = d.load_summary()?;
        runs.push(s.run_id.clone());
        cases.extend(s.cases.clone());
        if html {
            let events = d.read_events()?;
            samples.extend(export::samples_by_case(&events));
            probes.extend(export::probes_by_case(&events));
        }
        summaries.push(s);
    }
    if html {
        let path = Layout::at(target_dir).report_path();
        std::fs::create_dir_all(path.parent().unwrap_or(target_dir))?;
        std::fs::write(
            &path,
            melt_report::html::render_with_probes(&summaries, &samples, &probes),
        )
        .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("melt: wrote {}", path.display());
        if opts.open {
            open_in_browser(&path);
        }
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

/// The desktop's opener for `path`, or where it is when there is none (a headless machine).
pub(crate) fn open_in_browser(path: &Path) {
    let opener = ["xdg-open", "open"]
        .into_iter()
        .find(|p| crate::devices::build::on_path(p));
    let opened = opener.is_some_and(|o| {
        std::process::Command::new(o)
            .arg(path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !opened {
        eprintln!(
            "melt: no browser to open it here (no xdg-open or open); the page is {}",
            path.display()
        );
    }
}

/// `export --format F [--run ID] [--output FILE]`.
pub fn export(opts: &crate::cli::Export, target_dir: &Path) -> Result<()> {
    let dir = run_dir(target_dir, opts.run.as_deref())?;
    let summary = dir.load_summary()?;
    let events = dir.read_events()?;
    let text = export::render(opts.format, &summary, &export::samples_by_case(&events));
    match &opts.output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("melt: wrote {}", path.display());
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
    let mut summary = dir.load_summary()?;
    let events = dir.read_events()?;
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
        eprintln!("melt: not from the meter: {e}");
    }
    dir.save_summary(&summary)?;
    eprintln!(
        "melt: {covered} case(s) of run {} now carry the meter's energy ({})",
        summary.run_id,
        dir.summary_path().display()
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
        assert!(e.contains("cargo melt bench"), "{e}");
        std::fs::create_dir_all(dir.path().join("melt/runs/half-finished")).unwrap();
        let e = run_dir(dir.path(), Some("half-finished"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no summary"), "{e}");
        let export_x = crate::cli::Export {
            format: export::Format::Csv,
            run: Some("x".into()),
            output: None,
        };
        let e = export(&export_x, dir.path()).unwrap_err().to_string();
        assert!(e.contains("no summary"), "{e}");
    }
}
