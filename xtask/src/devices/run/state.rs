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
}

pub(super) fn write_state(run_dir: &Path, s: &DeviceRunState) -> Result<()> {
    let path = RunDir::at(run_dir.to_path_buf()).device_state_path();
    store::write_json(&path, s).with_context(|| format!("writing {}", path.display()))
}

/// The latest run of `device` that did not complete.
pub(super) fn unfinished_run(layout: &Layout, device: &str) -> Option<PathBuf> {
    std::fs::read_dir(layout.runs_dir())
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(RunDir::at(p.clone()).device_state_path())
                .ok()
                .and_then(|t| serde_json::from_str::<DeviceRunState>(&t).ok())
                .is_some_and(|s| s.device == device && s.state != RunState::Complete)
        })
        .max()
}
