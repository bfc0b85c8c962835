//! The ONNX Runtime session options melt sweeps, parsed from [`SessionParams`], and the
//! session they build.

use std::path::Path;

use melt_core::{BackendError, SessionParams};
use ort::ep::{self, ExecutionProvider};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;

use super::{environment, find_library, runtime, unsupported};

/// The session options melt sweeps, parsed from [`SessionParams`]. Keys of
/// `SessionParams::options`: `inter_threads`, `graph_opt` (`disable|basic|extended|all`),
/// `ep` (`cpu|xnnpack|nnapi|qnn|coreml|cuda`), `arena`, `mem_pattern` and `share_kv`
/// (`on|off`; by default on where the graph allows it), `accuracy_level` (`0..4`).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Options {
    intra_threads: usize,
    inter_threads: Option<usize>,
    graph_opt: GraphOptimizationLevel,
    ep: String,
    arena: bool,
    mem_pattern: bool,
    /// One KV buffer for past and present (`None`: where the graph allows it).
    pub(super) share_kv: Option<bool>,
    /// `MatMulNBits`'s `accuracy_level` for every such node (`None`: the model's own).
    accuracy_level: Option<u8>,
}

const OPTION_KEYS: &str =
    "inter_threads, graph_opt, ep, arena, mem_pattern, share_kv, accuracy_level";

fn on_off(key: &str, v: &str) -> Result<bool, BackendError> {
    match v {
        "on" | "1" | "true" => Ok(true),
        "off" | "0" | "false" => Ok(false),
        _ => Err(unsupported(format!("{key}={v} (use on or off)"))),
    }
}

impl Options {
    pub(super) fn from_params(p: &SessionParams) -> Result<Options, BackendError> {
        if p.threads_batch.is_some_and(|tb| tb != p.threads) {
            return Err(unsupported(
                "threads_batch: ONNX Runtime has one intra-op pool for every batch size; sweep `threads` (and `inter_threads=` in options)",
            ));
        }
        let mut o = Options {
            intra_threads: p.threads.max(1),
            inter_threads: None,
            graph_opt: GraphOptimizationLevel::All,
            ep: "cpu".into(),
            arena: true,
            mem_pattern: true,
            share_kv: None,
            accuracy_level: None,
        };
        for (k, v) in &p.options {
            match k.as_str() {
                "inter_threads" => {
                    o.inter_threads =
                        Some(v.parse().ok().filter(|&n: &usize| n >= 1).ok_or_else(|| {
                            unsupported(format!("inter_threads={v} (a whole number ≥ 1)"))
                        })?)
                }
                "graph_opt" => {
                    o.graph_opt = match v.as_str() {
                        "disable" => GraphOptimizationLevel::Disable,
                        "basic" => GraphOptimizationLevel::Level1,
                        "extended" => GraphOptimizationLevel::Level2,
                        "layout" => GraphOptimizationLevel::Level3,
                        "all" => GraphOptimizationLevel::All,
                        _ => {
                            return Err(unsupported(format!(
                                "graph_opt={v} (use disable, basic, extended, layout or all)"
                            )))
                        }
                    }
                }
                "ep" => o.ep = v.to_lowercase(),
                "arena" => o.arena = on_off(k, v)?,
                "mem_pattern" => o.mem_pattern = on_off(k, v)?,
                "share_kv" => o.share_kv = Some(on_off(k, v)?),
                "accuracy_level" => {
                    o.accuracy_level =
                        Some(v.parse().ok().filter(|&n: &u8| n <= 4).ok_or_else(|| {
                            unsupported(format!(
                                "accuracy_level={v} (0 unset, 1 f32, 2 f16, 3 bf16, 4 int8 activations)"
                            ))
                        })?)
                }
                _ => {
                    return Err(unsupported(format!(
                        "the option `{k}` (ONNX Runtime's are {OPTION_KEYS})"
                    )))
                }
            }
        }
        Ok(o)
    }

    /// The execution provider to register, checked against what the loaded library has.
    fn execution_provider(&self) -> Result<Option<ep::ExecutionProviderDispatch>, BackendError> {
        fn check<E>(ep: E) -> Result<ep::ExecutionProviderDispatch, BackendError>
        where
            E: ExecutionProvider + Into<ep::ExecutionProviderDispatch>,
        {
            match E::is_available() {
                Ok(true) => Ok(ep.into().error_on_failure()),
                Ok(false) => Err(unsupported(format!(
                    "the execution provider {}: the ONNX Runtime library in use was built without it ({})",
                    E::NAME,
                    find_library().map(|p| p.display().to_string()).unwrap_or_default()
                ))),
                Err(e) => Err(runtime(format!("asking ONNX Runtime for {}: {e}", E::NAME))),
            }
        }
        Ok(Some(match self.ep.as_str() {
            "cpu" => return Ok(None),
            "xnnpack" => check(ep::XNNPACK::default())?,
            "nnapi" => check(ep::NNAPI::default())?,
            "qnn" => check(ep::QNN::default())?,
            "coreml" => check(ep::CoreML::default())?,
            "cuda" => check(ep::CUDA::default())?,
            other => {
                return Err(unsupported(format!(
                    "ep={other} (melt passes through cpu, xnnpack, nnapi, qnn, coreml, cuda)"
                )))
            }
        }))
    }

    pub(super) fn builder(&self) -> Result<SessionBuilder, BackendError> {
        let e = |what: &str| {
            let what = what.to_string();
            move |err: ort::Error<SessionBuilder>| runtime(format!("{what}: {err}"))
        };
        let mut eps = Vec::new();
        if let Some(ep) = self.execution_provider()? {
            eps.push(ep);
        }
        eps.push(ep::CPU::default().with_arena_allocator(self.arena).build());
        let mut b = ort::session::Session::builder(environment()?)
            .map_err(|err| runtime(format!("session builder: {err}")))?
            .with_intra_threads(self.intra_threads)
            .map_err(e("intra-op threads"))?
            .with_optimization_level(self.graph_opt)
            .map_err(e("graph optimisation level"))?
            .with_memory_pattern(self.mem_pattern)
            .map_err(e("memory pattern"))?
            .with_execution_providers(eps)
            .map_err(e("execution provider"))?;
        if let Some(n) = self.inter_threads {
            b = b
                .with_parallel_execution(n > 1)
                .map_err(e("parallel execution"))?
                .with_inter_threads(n)
                .map_err(e("inter-op threads"))?;
        }
        Ok(b)
    }
}

impl Options {
    /// The session for the model at `path` with these options. `accuracy_level` is an
    /// attribute of the graph's `MatMulNBits` nodes, not a session setting, so it is changed in
    /// a copy of the model's bytes, which the session is built from.
    pub(super) fn session(&self, path: &Path) -> Result<Session, BackendError> {
        let failed = |e: ort::Error| {
            runtime(format!(
                "cannot build a session for {} with {self:?}: {e}",
                path.display()
            ))
        };
        let Some(level) = self.accuracy_level else {
            return self.builder()?.commit_from_file(path).map_err(failed);
        };
        let mut bytes =
            std::fs::read(path).map_err(|e| runtime(format!("reading {}: {e}", path.display())))?;
        let changed = melt_formats::onnx_rewrite::set_int_attribute(
            &mut bytes,
            "MatMulNBits",
            "accuracy_level",
            i64::from(level),
        )
        .map_err(|e| unsupported(format!("accuracy_level={level}: {}: {e}", path.display())))?;
        if changed == 0 {
            return Err(unsupported(format!(
                "accuracy_level={level}: {} has no MatMulNBits node (it applies to block-quantized weights)",
                path.display()
            )));
        }
        // Weights kept in files beside the model are found from its directory, not the
        // process's.
        let dir = path.parent().unwrap_or(Path::new("."));
        self.builder()?
            .with_config_entry(
                "session.model_external_initializers_file_folder_path",
                dir.to_string_lossy(),
            )
            .map_err(|e| runtime(format!("session options: {e}")))?
            .commit_from_memory(&bytes)
            .map_err(failed)
    }
}
