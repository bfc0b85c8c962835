//! The host's report sinks: a run recorded in the history, and its HTML page.

use std::collections::BTreeMap;
use std::sync::Arc;

use melt_bench::report::{Report, Reports, RunReport, SinkError};

use crate::history::{GitState, History};

/// What a host registers: the history, then the HTML page.
pub fn host_reports() -> Reports {
    Reports::new(vec![Arc::new(HistorySink), Arc::new(HtmlPage)])
}

/// Records every run that measured a case in `target/melt/history.sqlite`, with the git
/// state of the measured code and each sample's time.
pub struct HistorySink;

impl Report for HistorySink {
    fn name(&self) -> &'static str {
        "history"
    }

    fn run_end(&self, run: &RunReport<'_>) -> Result<(), SinkError> {
        if run.summary.cases.is_empty() {
            return Ok(());
        }
        let samples: BTreeMap<String, Vec<f64>> = run
            .samples
            .iter()
            .map(|(id, ms)| (id.clone(), ms.iter().map(|m| m.ns as f64).collect()))
            .collect();
        let git = GitState::detect(run.git_dir);
        let device = run.summary.device.as_deref().unwrap_or("host");
        History::open(&run.layout.history_path())?.record(run.summary, &samples, &git, device)?;
        Ok(())
    }
}

/// `target/melt/report/index.html`: the run's page (criterion's `--noplot` leaves it out).
pub struct HtmlPage;

/// A page that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the HTML report {path}: {source}")]
pub struct PageError {
    path: std::path::PathBuf,
    source: std::io::Error,
}

impl Report for HtmlPage {
    fn name(&self) -> &'static str {
        "html"
    }

    fn is_plot(&self) -> bool {
        true
    }

    fn run_end(&self, run: &RunReport<'_>) -> Result<(), SinkError> {
        let path = run.layout.report_path();
        let page = crate::html::render_with_probes(
            std::slice::from_ref(run.summary),
            run.samples,
            run.probes,
        );
        path.parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&path, page))
            .map_err(|source| PageError {
                path: path.clone(),
                source,
            })?;
        Ok(())
    }
}
