//! How a case decides it has enough samples: the runner's policy, set from the command line.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a case stopped taking samples (in `summary.json`, `samples.jsonl` and the reports, as
/// its snake_case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The 95% CI of tok/s was as tight as `--target-ci` asks.
    CiTarget,
    /// `--measurement-time` was spent first.
    TimeBudget,
    /// `--max-samples` were taken first.
    MaxSamples,
    /// Exactly `--sample-size` samples, as asked.
    SampleSize,
    /// `--sustained`: the case ran for its whole duration.
    Sustained,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::CiTarget => "ci_target",
            StopReason::TimeBudget => "time_budget",
            StopReason::MaxSamples => "max_samples",
            StopReason::SampleSize => "sample_size",
            StopReason::Sustained => "sustained",
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a case decides it has enough samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub warm_up: Duration,
    /// Warm-up runs however short `warm_up` is: one, so the first measured run is never the
    /// cold one; none in test mode, which measures nothing.
    pub min_warm_up_runs: usize,
    /// Time budget for measuring one case (after warm-up).
    pub measurement_time: Duration,
    /// Exactly this many samples (criterion's `--sample-size`); disables adaptive stopping.
    pub fixed_samples: Option<usize>,
    pub min_samples: usize,
    pub max_samples: usize,
    /// Stop once the 95% CI half-width of mean tok/s is within this fraction of the mean.
    pub target_rel_ci: f64,
    /// How often the probes' sampler reads memory, energy and temperature (`None`: off).
    pub probe_period: Option<Duration>,
    /// Where `/sys` and `/proc` are read (a fixture tree in tests).
    pub sysroot: std::path::PathBuf,
    /// Sustained mode: repeat each case back to back for this long, whatever the noise.
    pub sustained: Option<Duration>,
    /// `--cooldown`: wait for the device to cool to its starting temperature between cases.
    pub cooldown: Option<crate::probe::thermal::Cooldown>,
    /// Measure the memory bandwidth again rather than take the device's cached figure.
    pub remeasure_bandwidth: bool,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            warm_up: Duration::from_secs(1),
            min_warm_up_runs: 1,
            measurement_time: Duration::from_secs(20),
            fixed_samples: None,
            // The stopping rule is a t-interval, honest at n = 3 (it then needs CV <~ 0.8%
            // for a 2% target); more samples are taken whenever the noise asks for them.
            min_samples: 3,
            max_samples: 100,
            target_rel_ci: 0.02,
            // 50 ms: every wake-up preempts a worker when the case uses every core; at 20 ms
            // that cost 1–4% of tok/s on 2 cores, at 50 ms 0–3% (book: Measuring).
            probe_period: Some(Duration::from_millis(50)),
            sysroot: "/".into(),
            sustained: None,
            cooldown: None,
            remeasure_bandwidth: false,
        }
    }
}

impl Sampling {
    /// criterion's `--quick`: fewer samples, a looser target, short budgets.
    pub fn quick() -> Sampling {
        Sampling {
            warm_up: Duration::from_millis(300),
            measurement_time: Duration::from_secs(5),
            fixed_samples: None,
            min_samples: 3,
            max_samples: 20,
            target_rel_ci: 0.05,
            ..Sampling::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_keep_their_names_on_disk() {
        for r in [
            StopReason::CiTarget,
            StopReason::TimeBudget,
            StopReason::MaxSamples,
            StopReason::SampleSize,
            StopReason::Sustained,
        ] {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{r}\""));
            assert_eq!(serde_json::from_str::<StopReason>(&json).unwrap(), r);
        }
    }
}
