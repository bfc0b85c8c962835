//! A device run's state on the host (`device.json`), and finding the one to `--resume`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use melt_bench::store::{self, Layout, RunDir};
use serde::{Deserialize, Serialize};

/// Where a device run stands (`device.json`'s `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RunState {
    /// Streaming, or cut off without a word (a killed host): `--resume` continues it.
    Running,
    /// The connection or the device went away: `--resume` continues it.
    Interrupted,
    /// Finished and reported.
    Complete,
}

/// `device.json` beside a device run's `samples.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct DeviceRunState {
    pub(super) device: String,
    pub(super) state: RunState,
    pub(super) props: BTreeMap<String, String>,
    /// The bench arguments the run was started with, which `--resume` replays (empty in
    /// runs recorded before they were kept).
    #[serde(default)]
    pub(super) bench_args: Vec<String>,
}

pub(super) fn write_state(run_dir: &Path, s: &DeviceRunState) -> Result<()> {
    let path = RunDir::at(run_dir.to_path_buf()).device_state_path();
    store::write_json(&path, s).with_context(|| format!("writing {}", path.display()))
}

fn read_state(run_dir: &Path) -> Option<DeviceRunState> {
    let text = std::fs::read_to_string(RunDir::at(run_dir.to_path_buf()).device_state_path());
    serde_json::from_str(&text.ok()?).ok()
}

/// The latest run of `device` that did not complete.
pub(super) fn unfinished_run(layout: &Layout, device: &str) -> Option<PathBuf> {
    std::fs::read_dir(layout.runs_dir())
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            read_state(p).is_some_and(|s| s.device == device && s.state != RunState::Complete)
        })
        .max()
}

/// The bench arguments `--resume` runs with: those the unfinished runs of `devices` were
/// started with — the same cases, models and settings — unless none were kept. Arguments
/// given again must be the same; others are refused by name rather than resume a different
/// run under the old one's name.
pub(super) fn resumed_args(
    layout: &Layout,
    devices: &[&str],
    given: &[String],
) -> Result<Vec<String>> {
    let mut kept: Vec<(String, Vec<String>)> = devices
        .iter()
        .filter_map(|d| {
            let s = read_state(&unfinished_run(layout, d)?)?;
            (!s.bench_args.is_empty()).then(|| (d.to_string(), s.bench_args))
        })
        .collect();
    kept.dedup_by(|a, b| a.1 == b.1);
    let Some((device, args)) = kept.first() else {
        return Ok(given.to_vec());
    };
    if kept.len() > 1 {
        anyhow::bail!(
            "--resume: the unfinished runs of `{device}` and `{}` were started with different \
             bench arguments; resume one device at a time",
            kept[1].0
        );
    }
    if !given.is_empty() && given != args.as_slice() {
        let extra: Vec<&String> = given.iter().filter(|a| !args.contains(a)).collect();
        let missing: Vec<&String> = args.iter().filter(|a| !given.contains(a)).collect();
        anyhow::bail!(
            "--resume continues the run of `{device}` started with `{}`; the arguments given \
             now differ (new: {extra:?}, left out: {missing:?}). Give none (or the same) to \
             resume it, or start a new run without --resume",
            args.join(" ")
        );
    }
    Ok(args.clone())
}
