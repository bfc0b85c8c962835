//! Report sinks, in criterion's `Report` shape: a trait whose hooks default to nothing, and one
//! fan-out in the driver. melt-bench keeps what a bench binary must write wherever it runs (the
//! event log, `summary.json`, criterion's files — the run store); what only a host reads (the
//! history, the HTML page) are sinks in `melt-report`, registered by whoever builds the binary
//! (`melt::melt_bench!` registers them; a bench target on `melt_bench` alone gets none).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::host::HostInfo;
use crate::probe::ProbeSummary;
use crate::runner::CaseRecord;
use crate::store::{Layout, Summary};
use crate::tasks::TaskRecord;
use crate::workload::Measured;

/// What a sink may fail with: its own error type, boxed. The run's results are kept either
/// way; the failure is reported beside them as an error of the run.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// A finished run, analysed, as the sinks see it.
pub struct RunReport<'a> {
    pub layout: &'a Layout,
    pub summary: &'a Summary,
    /// The measured samples of each case, by case id.
    pub samples: &'a BTreeMap<String, Vec<Measured>>,
    /// The probes' readings of each case that had them, by case id.
    pub probes: &'a BTreeMap<String, ProbeSummary>,
    /// Where the git state of the measured code is read (the history records it).
    pub git_dir: &'a Path,
}

/// A report sink. Every hook defaults to nothing.
pub trait Report {
    /// Names the sink in its errors.
    fn name(&self) -> &'static str;
    /// Plots and pages, which criterion's `--noplot` turns off.
    fn is_plot(&self) -> bool {
        false
    }
    fn run_start(&self, _run_id: &str, _host: &HostInfo) {}
    fn case_measured(&self, _record: &CaseRecord) {}
    fn task_result(&self, _task: &TaskRecord) {}
    /// The whole run, analysed, before `summary.json` is written.
    fn run_end(&self, _run: &RunReport<'_>) -> Result<(), SinkError> {
        Ok(())
    }
}

/// The sinks of one run, fanned out to in registration order.
#[derive(Default, Clone)]
pub struct Reports(Vec<Arc<dyn Report + Send + Sync>>);

impl Reports {
    pub fn new(sinks: Vec<Arc<dyn Report + Send + Sync>>) -> Reports {
        Reports(sinks)
    }

    /// Without plots and pages (`--noplot`).
    pub fn without_plots(&self) -> Reports {
        Reports(self.0.iter().filter(|s| !s.is_plot()).cloned().collect())
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|s| s.name()).collect()
    }

    pub fn run_start(&self, run_id: &str, host: &HostInfo) {
        for s in &self.0 {
            s.run_start(run_id, host);
        }
    }

    pub fn case_measured(&self, record: &CaseRecord) {
        for s in &self.0 {
            s.case_measured(record);
        }
    }

    pub fn task_result(&self, task: &TaskRecord) {
        for s in &self.0 {
            s.task_result(task);
        }
    }

    /// Every sink's `run_end`; the failures (each error names its file or database).
    pub fn run_end(&self, run: &RunReport<'_>) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|s| s.run_end(run).err().map(|e| e.to_string()))
            .collect()
    }
}

impl std::fmt::Debug for Reports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}
