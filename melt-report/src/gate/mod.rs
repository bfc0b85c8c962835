//! The CI gate: does the current run regress against a baseline, for real?
//!
//! criterion exits 0 after a regression and calls a 1% change significant; on real devices
//! runs drift by several percent, so a gate built on that would cry wolf. melt's rule: a case
//! *regresses* only when the change in tok/s is statistically significant (bootstrapped Welch
//! t-test, p < 0.05, criterion's) **and** its whole confidence interval lies beyond the
//! threshold (default 5% slower). A point estimate past the threshold without that is reported
//! as a warning, not a failure.
//!
//! Input is what the bench run wrote under `target/criterion`: each case's `new/` sample
//! against its baseline directory (a name given to `--save-baseline`, or `base`).
//!
//! Other metrics (time to first token, peak memory, latency percentiles) are gated when
//! `melt.toml` gives them a threshold. Their per-sample values are not kept, only the estimate
//! and its CI (`melt_metrics.json` beside criterion's files, or the history), so the rule is
//! the conservative one: the change from the baseline's CI bound nearest to the new CI's
//! farthest bound — a regression only when even that is past the threshold.

mod config;
mod files;
mod judge;
pub mod paired;
mod summary;

pub use config::*;
pub use files::*;
pub use judge::*;
pub use summary::*;

#[cfg(test)]
mod tests;
