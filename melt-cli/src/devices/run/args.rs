//! The bench arguments of a device run: what travels (model and data files by hash), what
//! the device binary is given, and the case list it answers with.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use melt_bench::cli::Args;

use crate::workspace::BenchTarget;
use melt_bench::datasets::DataSource;
use serde::Deserialize;

use crate::devices::Device;

/// A model file to put in the device's cache.
#[derive(Debug, Clone)]
pub struct ModelFile {
    pub local: PathBuf,
    pub sha256: String,
    pub file: String,
    /// The cache directory it goes in on the device (its hash, or an export's cache key).
    pub dir: String,
    /// Files that go beside it (an ONNX model's `tokenizer.json`, an export's recorded hash).
    pub beside: Vec<PathBuf>,
}

impl ModelFile {
    pub fn new(local: &Path) -> Result<ModelFile> {
        let sha256 = melt_bench::model::sha256_file(local)
            .with_context(|| format!("{}", local.display()))?;
        // What an ONNX or TorchScript model reads beside itself.
        let beside = ["tokenizer.json", "config.json"].map(|f| local.with_file_name(f));
        Ok(ModelFile {
            local: local.to_path_buf(),
            dir: sha256.clone(),
            sha256,
            beside: beside.into_iter().filter(|p| p.is_file()).collect(),
            file: local
                .file_name()
                .context("a model path without a file name")?
                .to_string_lossy()
                .into_owned(),
        })
    }

    /// Where the device keeps it: the layout of melt's host cache, so a registry model is
    /// found by the device's own `Cache` and a path model is pushed once per content.
    pub(super) fn remote(&self, workdir: &str) -> String {
        format!("{workdir}/cache/models/{}/{}", self.dir, self.file)
    }

    /// Where the device keeps a task's data file: by content, under its own name (the name
    /// is part of the task's id, so a device's results line up with the host's).
    pub(super) fn remote_data(&self, workdir: &str) -> String {
        format!("{workdir}/cache/data/{}/{}", self.sha256, self.file)
    }
}

/// The bench binary's arguments split into what the host handles and what the device gets.
#[derive(Debug, Clone)]
pub struct DeviceArgs {
    /// Parsed, for the host's analysis settings and baseline mode.
    pub parsed: Args,
    /// `--model` files, pushed by hash and replaced by their device paths.
    pub models: Vec<ModelFile>,
    /// The tasks' data files (`--replay`, `--perplexity`, `--choices`, `--kl-divergence`, a
    /// `--chat-template` file) with their flags, pushed by hash like the models.
    pub data: Vec<(String, ModelFile)>,
    pub(super) rest: Vec<String>,
    /// The arguments as given, kept with a device run for `--resume`.
    pub given: Vec<String>,
}

impl DeviceArgs {
    pub fn parse(args: &[String]) -> Result<DeviceArgs> {
        let mut rest = Vec::new();
        let mut models = Vec::new();
        let mut data = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (a.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .unwrap_or_default()
            };
            match flag {
                "--model" => models.push(ModelFile::new(Path::new(&value()))?),
                // A shipped set is in the binary: its name travels, spelled unambiguously.
                "--replay" | "--perplexity" | "--choices" => {
                    let v = value();
                    match DataSource::from_arg(&v).with_context(|| format!("{flag} {v}"))? {
                        source @ DataSource::Shipped(_) => {
                            rest.extend([flag.to_string(), source.to_string()])
                        }
                        DataSource::File(path) => {
                            let file = ModelFile::new(&path)
                                .with_context(|| format!("{flag} {v}: the data file to push"))?;
                            data.push((flag.to_string(), file));
                        }
                    }
                }
                // A reference's log-probabilities travel like data; one is written on the host.
                "--kl-divergence" => {
                    let v = value();
                    let file = ModelFile::new(Path::new(&v))
                        .with_context(|| format!("{flag} {v}: the reference to push"))?;
                    data.push((flag.to_string(), file));
                }
                "--kl-divergence-base" => bail!(
                    "`--kl-divergence-base` writes the reference where the bench runs; write it \
                     on the host (without --target) and score the device with --kl-divergence FILE"
                ),
                // A template file travels; a built-in name (gemma, chatml...) is passed on.
                "--chat-template" => {
                    let v = value();
                    if Path::new(&v).is_file() {
                        data.push((flag.to_string(), ModelFile::new(Path::new(&v))?));
                    } else {
                        rest.extend([flag.to_string(), v]);
                    }
                }
                "--target-dir" => {
                    value();
                }
                "--message-format" | "--device" | "--skip" => {
                    bail!("`{flag}` is set by `cargo melt bench --target`, not by hand")
                }
                _ => rest.push(a.clone()),
            }
        }
        let parsed = Args::parse(args.iter().cloned()).context("bench arguments")?;
        Ok(DeviceArgs {
            parsed,
            models,
            data,
            rest,
            given: args.to_vec(),
        })
    }

    /// The device-side arguments, with `mode` ([`LIST_MODE`] or [`RUN_MODE`]).
    pub(super) fn for_device(
        &self,
        d: &Device,
        mode: &[&str],
        skip: &BTreeSet<String>,
    ) -> Vec<String> {
        let mut v = self.rest.clone();
        for m in &self.models {
            v.push("--model".into());
            v.push(m.remote(&d.workdir));
        }
        for (flag, f) in &self.data {
            v.extend([flag.clone(), f.remote_data(&d.workdir)]);
        }
        v.extend(mode.iter().map(|a| a.to_string()));
        v.extend(["--device".into(), d.name.clone()]);
        for s in skip {
            v.extend(["--skip".into(), s.clone()]);
        }
        v
    }
}

/// The cargo features of a device build. A package with a `host-reports` feature (melt's
/// own) gets its engines (the default ones and those asked for) without it — the device keeps
/// its event log, the host writes the history and the page from the stream, so no SQLite or
/// HTML writer is built for the device. Any other package gets the features asked for.
pub fn device_features(bench: &BenchTarget, asked: &[String]) -> Vec<String> {
    if !bench.features.iter().any(|f| f == "host-reports") {
        return match asked.is_empty() {
            true => Vec::new(),
            false => vec!["--features".into(), asked.join(",")],
        };
    }
    let mut features = vec!["llama-cpp".to_string(), "onnxruntime".to_string()];
    features.extend(
        asked
            .iter()
            .filter(|f| !features.contains(f))
            .cloned()
            .collect::<Vec<_>>(),
    );
    vec![
        "--no-default-features".into(),
        "--features".into(),
        features.join(","),
    ]
}

/// How the host asks the device's bench binary for its cases: JSON, not criterion's text.
pub(crate) const LIST_MODE: &[&str] = &["--list", "--format", "json"];

/// How the host runs it: measured (the binary runs directly, so `--bench` is not added by
/// cargo), every event streamed on stdout.
pub(super) const RUN_MODE: &[&str] = &["--bench", "--message-format", "json"];

/// What the device's `--list --format json` plans: the case and task ids, and the models
/// they use.
#[derive(Debug, PartialEq)]
pub(crate) struct Listed {
    pub(crate) ids: BTreeSet<String>,
    pub(crate) models: BTreeSet<String>,
}

/// Reads `--list --format json` output (the transport may add other lines, such as the exit
/// mark).
pub(crate) fn listed(stdout: &str) -> Result<Listed> {
    #[derive(Deserialize)]
    struct Entry {
        id: String,
        #[serde(default)]
        model: Option<String>,
    }
    let line = stdout
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .find(|l| l.starts_with('['))
        .context("no JSON list on stdout")?;
    let entries: Vec<Entry> = serde_json::from_str(line).context("not a JSON list of cases")?;
    Ok(Listed {
        models: entries.iter().filter_map(|e| e.model.clone()).collect(),
        ids: entries.into_iter().map(|e| e.id).collect(),
    })
}
