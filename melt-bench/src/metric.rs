//! What analysis says of one measured quantity: the value every report, export and the gate
//! read.

use serde::{Deserialize, Serialize};

/// A metric over a case's samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub unit: String,
    /// Point estimate (mean over samples unless the name says otherwise).
    pub estimate: f64,
    /// 95% confidence interval of the estimate; absent for a single observation.
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    /// Number of observations behind the estimate.
    pub n: usize,
    /// Extra context, e.g. "process-wide peak" when VmHWM could not be reset per case.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
}
