//! Parameters a case runs with, and the sweeps that produce them.
//!
//! Parameters are split by cost: [`ModelParams`] need the weights reloaded, [`SessionParams`]
//! only a new context. A [`Sweep`] expands to the cartesian product ordered with the model
//! parameters outermost, so that a model is loaded as rarely as possible.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Settings that require loading the weights again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelParams {
    /// Map the file instead of reading it (llama.cpp `--mmap`).
    pub mmap: bool,
    /// Layers to offload to an accelerator (0 on CPU-only builds).
    pub n_gpu_layers: u32,
}

impl Default for ModelParams {
    fn default() -> Self {
        ModelParams {
            mmap: true,
            n_gpu_layers: 0,
        }
    }
}

/// Flash attention policy (llama.cpp `-fa`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FlashAttn {
    #[default]
    Auto,
    On,
    Off,
}

impl std::fmt::Display for FlashAttn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FlashAttn::Auto => "auto",
            FlashAttn::On => "on",
            FlashAttn::Off => "off",
        })
    }
}

impl From<bool> for FlashAttn {
    fn from(on: bool) -> Self {
        if on {
            FlashAttn::On
        } else {
            FlashAttn::Off
        }
    }
}

/// Settings of one context. Defaults are llama-bench's, so results compare with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionParams {
    /// Threads for single-token decode.
    pub threads: usize,
    /// Threads for batched prefill (llama.cpp `-tb`); `None` means the same as `threads`.
    pub threads_batch: Option<usize>,
    /// Logical batch size (llama-bench default 2048).
    pub n_batch: u32,
    /// Physical batch size (llama-bench default 512).
    pub n_ubatch: u32,
    /// Context size; `None` lets the runner size it to the workload, as llama-bench does.
    pub n_ctx: Option<u32>,
    pub flash_attn: FlashAttn,
    /// KV cache element types, ggml names (`f16`, `q8_0`, ...).
    pub type_k: String,
    pub type_v: String,
    /// Engine-specific settings (`graph_opt=basic`, `ep=xnnpack`, `inter_threads=2` for ONNX
    /// Runtime): each backend documents its keys and rejects the ones it does not know, so a
    /// typo is an error and not a silently ignored setting.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// Parses `key=value,key=value` (a sweep's `options` entry). A part without `=` keeps an empty
/// value for the backend to reject by name.
pub fn parse_options(spec: &str) -> BTreeMap<String, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            threads: all_cores(),
            threads_batch: None,
            n_batch: 2048,
            n_ubatch: 512,
            n_ctx: None,
            flash_attn: FlashAttn::Auto,
            type_k: "f16".into(),
            type_v: "f16".into(),
            options: BTreeMap::new(),
        }
    }
}

impl Params {
    /// What in these parameters can change the logits a model computes, as `key=value` words
    /// (none for the defaults): KV cache types, flash attention, offloaded layers and backend
    /// options (ONNX Runtime's `accuracy_level`, libtorch's `dtype`). Threads, batch sizes and
    /// the context change only how fast — so tasks, which measure what is computed, run once
    /// per distinct value of this, not once per point.
    pub fn numerics(&self) -> Vec<String> {
        let (s, d) = (&self.session, SessionParams::default());
        let mut out = Vec::new();
        if s.type_k != d.type_k {
            out.push(format!("type_k={}", s.type_k));
        }
        if s.type_v != d.type_v {
            out.push(format!("type_v={}", s.type_v));
        }
        if s.flash_attn != d.flash_attn {
            out.push(format!("flash_attn={}", s.flash_attn));
        }
        if self.model.n_gpu_layers != 0 {
            out.push(format!("n_gpu_layers={}", self.model.n_gpu_layers));
        }
        out.extend(s.options.iter().map(|(k, v)| format!("{k}={v}")));
        out
    }
}

/// Number of CPU cores this process may use (at least 1).
pub fn all_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Both halves of a case's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Params {
    pub model: ModelParams,
    pub session: SessionParams,
}

/// The axes a bench target may sweep. An empty axis keeps the default. Field names are the
/// `melt_bench!` keys, so a misspelt key is a compile error.
#[derive(Debug, Clone, Default)]
pub struct Sweep {
    pub threads: Vec<usize>,
    pub threads_batch: Vec<usize>,
    pub n_batch: Vec<u32>,
    pub n_ubatch: Vec<u32>,
    pub n_ctx: Vec<u32>,
    pub flash_attn: Vec<FlashAttn>,
    pub type_k: Vec<&'static str>,
    pub type_v: Vec<&'static str>,
    /// Backend options, one `key=value,...` string per point (see [`parse_options`]).
    pub options: Vec<&'static str>,
    pub mmap: Vec<bool>,
    pub n_gpu_layers: Vec<u32>,
}

/// One point of a sweep: the parameters and the short label of the swept axes (`t=2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    pub params: Params,
    pub label: String,
}

fn axis<T: Clone + PartialEq>(values: &[T]) -> Vec<Option<T>> {
    let mut out: Vec<Option<T>> = Vec::new();
    for v in values {
        if !out.iter().any(|o| o.as_ref() == Some(v)) {
            out.push(Some(v.clone()));
        }
    }
    if out.is_empty() {
        out.push(None);
    }
    out
}

impl Sweep {
    /// The cartesian product, model axes outermost. Duplicate values (e.g. `1` and
    /// `all_cores()` on a one-core machine) collapse to one point.
    pub fn points(&self) -> Vec<Point> {
        let mut points = Vec::new();
        for mmap in axis(&self.mmap) {
            for ngl in axis(&self.n_gpu_layers) {
                let mut model = ModelParams::default();
                let mut model_label = Vec::new();
                if let Some(m) = mmap {
                    model.mmap = m;
                    model_label.push(format!("mmap={}", m as u8));
                }
                if let Some(n) = ngl {
                    model.n_gpu_layers = n;
                    model_label.push(format!("ngl={n}"));
                }
                self.session_points(&model, &model_label, &mut points);
            }
        }
        points
    }

    fn session_points(&self, model: &ModelParams, model_label: &[String], out: &mut Vec<Point>) {
        for threads in axis(&self.threads) {
            for tb in axis(&self.threads_batch) {
                for nb in axis(&self.n_batch) {
                    for nub in axis(&self.n_ubatch) {
                        for nctx in axis(&self.n_ctx) {
                            for fa in axis(&self.flash_attn) {
                                for tk in axis(&self.type_k) {
                                    for tv in axis(&self.type_v) {
                                        for opts in axis(&self.options) {
                                            let mut s = SessionParams::default();
                                            let mut label: Vec<String> = model_label.to_vec();
                                            // Threads are always in the label, as in llama-bench.
                                            s.threads = threads.unwrap_or(s.threads);
                                            label.insert(0, format!("t={}", s.threads));
                                            if let Some(v) = tb {
                                                s.threads_batch = Some(v);
                                                label.push(format!("tb={v}"));
                                            }
                                            if let Some(v) = nb {
                                                s.n_batch = v;
                                                label.push(format!("b={v}"));
                                            }
                                            if let Some(v) = nub {
                                                s.n_ubatch = v;
                                                label.push(format!("ub={v}"));
                                            }
                                            if let Some(v) = nctx {
                                                s.n_ctx = Some(v);
                                                label.push(format!("ctx={v}"));
                                            }
                                            if let Some(v) = fa {
                                                s.flash_attn = v;
                                                label.push(format!("fa={v}"));
                                            }
                                            if let Some(v) = tk {
                                                s.type_k = v.to_string();
                                                label.push(format!("ctk={v}"));
                                            }
                                            if let Some(v) = tv {
                                                s.type_v = v.to_string();
                                                label.push(format!("ctv={v}"));
                                            }
                                            if let Some(v) = opts {
                                                s.options = parse_options(v);
                                                label.push(v.to_string());
                                            }
                                            out.push(Point {
                                                params: Params {
                                                    model: model.clone(),
                                                    session: s,
                                                },
                                                label: label.join(" "),
                                            });
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_sweep_is_one_default_point() {
        let points = Sweep::default().points();
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].params, Params::default());
        assert_eq!(points[0].label, format!("t={}", all_cores()));
    }

    #[test]
    fn cartesian_product_keeps_model_axes_outermost_and_dedups() {
        let sweep = Sweep {
            threads: vec![1, 2, 2],
            mmap: vec![true, false],
            type_k: vec!["f16", "q8_0"],
            ..Sweep::default()
        };
        let points = sweep.points();
        assert_eq!(points.len(), 2 * 2 * 2);
        // The first half all share mmap=1: one model load serves four cases.
        assert!(points[..4].iter().all(|p| p.params.model.mmap));
        assert!(points[4..].iter().all(|p| !p.params.model.mmap));
        assert_eq!(points[0].label, "t=1 mmap=1 ctk=f16");
        assert_eq!(points[3].label, "t=2 mmap=1 ctk=q8_0");
    }

    #[test]
    fn backend_options_are_one_axis_of_key_value_lists() {
        let sweep = Sweep {
            threads: vec![2],
            options: vec!["graph_opt=basic", "graph_opt=all, inter_threads=2", "oops"],
            ..Sweep::default()
        };
        let points = sweep.points();
        assert_eq!(points.len(), 3);
        assert_eq!(points[0].label, "t=2 graph_opt=basic");
        let o = &points[1].params.session.options;
        assert_eq!(
            (o["graph_opt"].as_str(), o["inter_threads"].as_str()),
            ("all", "2")
        );
        assert_eq!(points[2].params.session.options["oops"], "");
        // Empty options leave summary.json as before.
        let json = serde_json::to_value(SessionParams::default()).unwrap();
        assert!(json.get("options").is_none());
    }
}
