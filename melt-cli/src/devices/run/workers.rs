//! The paired gate on a device: both sides' bench binaries pushed there with the models their
//! cases use, and started as `--worker`s whose requests and answers travel over the transport.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use indicatif::MultiProgress;

use super::{deploy, list_on_device, push_models, worker_script, DeviceArgs, ModelFile, Payload};
use super::{Resolve, LIST_MODE};
use crate::devices::Device;

/// The device with its work directory resolved, and each binary's path there.
pub struct Deployed {
    pub device: Device,
    pub binaries: Vec<String>,
}

/// Pushes `binaries` (one per side) with `libs`, the config and the models that either side's
/// cases use under `args`.
pub fn deploy_sides(
    d: &Device,
    binaries: &[&Path],
    libs: &[PathBuf],
    config: &Path,
    args: &DeviceArgs,
    resolve: &Resolve,
) -> Result<Deployed> {
    d.transport.connect()?;
    let mut props = crate::devices::probe(d)?;
    // Every path in a script is absolute, as the device resolved a relative workdir.
    let device = Device {
        workdir: props
            .remove("workdir")
            .filter(|w| w.starts_with('/'))
            .unwrap_or_else(|| d.workdir.clone()),
        ..d.clone()
    };
    let mp = MultiProgress::new();
    let mut remote = Vec::new();
    let mut names = BTreeSet::new();
    for (i, binary) in binaries.iter().enumerate() {
        let payload = Payload {
            binary,
            libs,
            config,
            models: &args.models,
            data: &[],
        };
        let bin = deploy(&device, &payload, &mp)?;
        let list_args = args.for_device(&device, LIST_MODE, &BTreeSet::new());
        names.extend(list_on_device(&device, &bin, &list_args, &format!("paired-{i}"))?.models);
        remote.push(bin);
    }
    let used = names
        .iter()
        .filter_map(|m| resolve(m).transpose())
        .collect::<Result<Vec<ModelFile>>>()?;
    push_models(&device, &used.iter().collect::<Vec<_>>(), &mp)?;
    Ok(Deployed {
        device,
        binaries: remote,
    })
}

/// The command that starts the bench binary at `binary` on the device as a worker.
pub fn worker_command(d: &Device, binary: &str, args: &DeviceArgs) -> Command {
    let argv = args.for_device(d, &["--bench", "--worker"], &BTreeSet::new());
    d.transport.shell(&worker_script(d, binary, &argv))
}
