//! What the gate is told: thresholds per metric and case (`[gate]` in melt.toml), checked.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The metric every case is gated on.
pub const TOKENS_PER_SECOND: &str = "tokens_per_second";

/// Thresholds: a default relative tok/s drop, thresholds for further metrics, and overrides
/// for cases matching a substring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Fractional tok/s drop that counts (0.05 = 5%).
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Further metrics to gate (`ttft_ms = 0.10`: 10% slower to the first token fails); a
    /// metric not named here is not gated.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// `(substring of the case id, [metric], threshold)`: the last match wins.
    #[serde(default)]
    pub cases: Vec<CaseThreshold>,
    #[serde(default = "default_significance")]
    pub significance_level: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseThreshold {
    pub matching: String,
    /// The metric this threshold is for; tok/s when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    pub threshold: f64,
}

/// Which way a metric gets better, from its name: throughputs up, times and sizes down.
/// `None` for a metric melt cannot judge.
pub fn higher_is_better(metric: &str) -> Option<bool> {
    if metric.ends_with(TOKENS_PER_SECOND) {
        Some(true)
    } else if metric.ends_with("_ms") || metric.ends_with("_bytes") {
        Some(false)
    } else {
        None
    }
}

/// A `[gate]` table that cannot mean anything.
#[derive(Debug, thiserror::Error)]
pub enum GateConfigError {
    #[error("{what}: threshold {threshold} is not a fraction between 0 and 1 (0.05 = 5%)")]
    NotAFraction { what: String, threshold: f64 },
    #[error("{what}: melt does not know which way `{metric}` gets better; gate metrics ending in `tokens_per_second` (higher is better), `_ms` or `_bytes` (lower is better)")]
    UnknownDirection { what: String, metric: String },
}

pub(super) fn default_threshold() -> f64 {
    0.05
}
pub(super) fn default_significance() -> f64 {
    0.05
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            threshold: default_threshold(),
            metrics: BTreeMap::new(),
            cases: Vec::new(),
            significance_level: default_significance(),
        }
    }
}

impl GateConfig {
    /// The tok/s threshold of a case.
    pub fn threshold_for(&self, case: &str) -> f64 {
        self.metric_threshold(case, TOKENS_PER_SECOND)
            .unwrap_or(self.threshold)
    }

    /// A metric's threshold for a case, `None` when that metric is not gated for it.
    pub fn metric_threshold(&self, case: &str, metric: &str) -> Option<f64> {
        let default = if metric == TOKENS_PER_SECOND {
            Some(self.threshold)
        } else {
            self.metrics.get(metric).copied()
        };
        self.cases
            .iter()
            .rev()
            .find(|c| {
                case.contains(&c.matching)
                    && c.metric.as_deref().unwrap_or(TOKENS_PER_SECOND) == metric
            })
            .map(|c| c.threshold)
            .or(default)
    }

    /// Metrics besides tok/s that have a threshold somewhere.
    pub fn extra_metrics(&self) -> Vec<String> {
        let mut out: Vec<String> = self.metrics.keys().cloned().collect();
        for c in &self.cases {
            if let Some(m) = &c.metric {
                if m != TOKENS_PER_SECOND && !out.contains(m) {
                    out.push(m.clone());
                }
            }
        }
        out
    }

    /// Rejects thresholds that cannot mean anything: not in (0, 1), or a metric whose
    /// better direction melt does not know.
    pub fn check(&self) -> Result<(), GateConfigError> {
        let range = |what: &str, t: f64| {
            if t > 0.0 && t < 1.0 {
                Ok(())
            } else {
                Err(GateConfigError::NotAFraction {
                    what: what.to_string(),
                    threshold: t,
                })
            }
        };
        range("[gate] threshold", self.threshold)?;
        let metrics = self
            .metrics
            .iter()
            .map(|(m, t)| (m.as_str(), *t, format!("[gate.metrics] {m}")));
        let cases = self.cases.iter().map(|c| {
            let m = c.metric.as_deref().unwrap_or(TOKENS_PER_SECOND);
            (m, c.threshold, format!("[gate] case `{}`", c.matching))
        });
        for (metric, t, what) in metrics.chain(cases) {
            range(&what, t)?;
            if higher_is_better(metric).is_none() {
                return Err(GateConfigError::UnknownDirection {
                    what,
                    metric: metric.to_string(),
                });
            }
        }
        Ok(())
    }
}
