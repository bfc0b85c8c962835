//! What a bench target declares (`melt_bench!` builds one): models, backends, the sweep, the
//! workloads, and the report sinks its runs go to.

use std::path::PathBuf;

use crate::backend::Backend;
use crate::params::Sweep;
use crate::workload::Workload;

/// A bench target: what `melt_bench!` declares.
pub struct Suite {
    /// Model names from the registry (or paths to local files).
    pub models: Vec<String>,
    pub backends: Vec<Box<dyn Backend>>,
    pub sweep: Sweep,
    pub workloads: Vec<Workload>,
    /// The bench target's package directory, where `melt.toml` is looked for first.
    pub manifest_dir: Option<PathBuf>,
    /// Sinks beyond the run store's own files (history, HTML: see `melt-report`).
    pub reports: crate::report::Reports,
}
