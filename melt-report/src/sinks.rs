//! The host's report sinks: a run recorded in the history, and its HTML page.

use std::collections::BTreeMap;
use std::sync::Arc;

use melt_bench::report::{Report, Reports, RunReport, SinkError};

use crate::history::{GitState, History, Location, HOST_DEVICE};

/// What a host registers: the history, then the HTML page.
pub fn host_reports() -> Reports {
    Reports::new(vec![Arc::new(HistorySink::from_env()), Arc::new(HtmlPage)])
}

/// Where a shared history is named (a `postgres://` URL): every run is recorded there too.
pub const SHARED_HISTORY_ENV: &str = "MELT_HISTORY_URL";

/// Records every run that measured a case in `target/melt/history.sqlite`, with the git
/// state of the measured code and each sample's time — and in a shared history too, when
/// there is one.
pub struct HistorySink {
    pub shared: Option<Location>,
}

impl HistorySink {
    /// Sharing with the history [`SHARED_HISTORY_ENV`] names, if it is set.
    pub fn from_env() -> HistorySink {
        HistorySink {
            shared: std::env::var(SHARED_HISTORY_ENV)
                .ok()
                .filter(|s| !s.is_empty())
                .map(|s| Location::parse(&s)),
        }
    }
}

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
        let device = run.summary.device.as_deref().unwrap_or(HOST_DEVICE);
        let local = run.layout.history_path();
        History::open(&local)?.record(run.summary, &samples, &git, device)?;
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        // The run is safe in the local file: a shared history that cannot take it now
        // (unreachable, a wrong password) is an error that says how to send it later.
        History::at(shared)
            .and_then(|mut h| h.record(run.summary, &samples, &git, device))
            .map_err(|e| {
                format!(
                    "{e}\nthe run {} is kept in {}: `cargo melt history push --to URL` sends \
                     it once the shared history is back",
                    run.summary.run_id,
                    local.display()
                )
            })?;
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
