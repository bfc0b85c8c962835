//! ONNX Runtime through `ort` (load-dynamic): decoder-only LMs exported in the Optimum /
//! onnxruntime-genai convention, driven token by token with their KV cache.
//!
//! **Convention.** Inputs `input_ids`, `attention_mask`, `position_ids` (when present),
//! `past_key_values.{i}.key/value` `[batch, kv_heads, past, head_dim]`, and `use_cache_branch`
//! for Optimum's merged decoders; outputs `logits` and `present.{i}.key/value`. Layer count,
//! KV heads, head size and the KV dtype (fp32 or fp16) are read from the graph. The tokenizer
//! is the model directory's `tokenizer.json`.
//!
//! **Runtime library.** Nothing is linked at build time: `libonnxruntime.so` is opened on first
//! use from `ORT_DYLIB_PATH`, else beside the executable or in `LD_LIBRARY_PATH` (where device
//! runs put it), else from `cargo melt setup onnxruntime`'s cache
//! (`<melt cache>/runtimes/onnxruntime-<version>/`). ort refuses a library older than the
//! ONNX Runtime API it was built for.
//!
//! **Timing.** ONNX Runtime's threads and graph optimisation are session options, so each melt
//! session builds its own ONNX Runtime session: `load_ms` is the first load (parse, check the
//! convention), `context_ms` the session build with the case's options. The KV cache stays in
//! ONNX Runtime's own tensors between steps (each step's `present` is the next `past`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod convention;
mod options;
mod shared_kv;

use convention::{Convention, KvType};
use options::Options;
use shared_kv::SharedKv;

use melt_core::{
    Backend, BackendError, KvShape, LoadedModel, ModelFormat, ModelInfo, ModelParams, ModelSpec,
    Session, SessionParams, Token,
};
use ort::value::{DynValue, Tensor};

const NAME: &str = "onnxruntime";

/// The ONNX Runtime release `cargo melt setup onnxruntime` fetches (ort 2.0.0-rc.15 is built
/// for its API).
pub const ORT_VERSION: &str = "1.31.1";

/// The ONNX Runtime backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct OnnxRuntime;

impl OnnxRuntime {
    pub fn new() -> OnnxRuntime {
        OnnxRuntime
    }
}

fn runtime(what: impl std::fmt::Display) -> BackendError {
    BackendError::Runtime {
        backend: NAME.into(),
        what: what.to_string(),
    }
}

fn unsupported(what: impl std::fmt::Display) -> BackendError {
    BackendError::Unsupported {
        backend: NAME.into(),
        what: what.to_string(),
    }
}

/// The file name of the runtime library on this OS.
fn library_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "libonnxruntime.dylib"
    } else if cfg!(windows) {
        "onnxruntime.dll"
    } else {
        "libonnxruntime.so"
    }
}

/// Where the runtime library is looked for, in order, after `ORT_DYLIB_PATH`.
pub fn library_candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(dir.join("lib"));
        dirs.push(dir);
    }
    if let Some(paths) = std::env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&paths));
    }
    dirs.push(
        melt_core::cache_root()
            .join("runtimes")
            .join(format!("onnxruntime-{ORT_VERSION}")),
    );
    dirs.into_iter().map(|d| d.join(library_name())).collect()
}

/// The runtime library to open, or an error saying where it was looked for.
pub fn find_library() -> Result<PathBuf, BackendError> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(runtime(format!(
                "ORT_DYLIB_PATH is {}, which is not a file",
                p.display()
            )))
        };
    }
    let candidates = library_candidates();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        runtime(format!(
            "no ONNX Runtime library found: run `cargo melt setup onnxruntime` or set ORT_DYLIB_PATH (looked for {})",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// The version the library reports (`OrtGetApiBase()->GetVersionString()`, e.g. `1.31.1`);
/// its build-info string only names the git branch.
pub fn library_version(path: &Path) -> Result<String, String> {
    // SAFETY: opening ONNX Runtime runs no initialisers with preconditions; the symbol has
    // the C signature of onnxruntime_c_api.h, and the returned string is static in the library,
    // which stays loaded while `lib` lives (and after: ort holds it too).
    unsafe {
        let lib = libloading::Library::new(path).map_err(|e| e.to_string())?;
        let get: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
            lib.get(b"OrtGetApiBase").map_err(|e| e.to_string())?;
        let base = get();
        if base.is_null() {
            return Err("OrtGetApiBase returned null".into());
        }
        let v = ((*base).GetVersionString)();
        if v.is_null() {
            return Err("GetVersionString returned null".into());
        }
        Ok(std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned())
    }
}

/// The process-wide ONNX Runtime environment, created on first use.
pub(crate) fn environment() -> Result<&'static ort::environment::Environment, BackendError> {
    static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = find_library().map_err(|e| e.to_string())?;
        let builder = ort::init_from(&path)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
        builder
            .with_name("melt")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))
    })
    .as_ref()
    .map_err(runtime)
}

impl Backend for OnnxRuntime {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> String {
        environment()
            .ok()
            .and_then(|_| find_library().ok())
            .and_then(|p| library_version(&p).ok())
            .unwrap_or_else(|| "not loaded".into())
    }

    fn accepts(&self, format: ModelFormat) -> bool {
        format == ModelFormat::Onnx
    }

    fn load(
        &self,
        model: &ModelSpec,
        _: &ModelParams,
    ) -> Result<Box<dyn LoadedModel>, BackendError> {
        let path = &model.path;
        let bad = |reason: String| BackendError::Model {
            path: path.clone(),
            reason,
        };
        if !path.is_file() {
            return Err(bad("no such file".into()));
        }
        let tokenizer = crate::hf_tokenizer::beside(path).map_err(bad)?;
        let options = Options::from_params(&SessionParams::default())?;
        let session = options
            .builder()?
            .commit_from_file(path)
            .map_err(|e| bad(format!("ONNX Runtime rejected it: {e}")))?;
        let mut convention = Convention::read(&session, path)?;
        let n_vocab = convention
            .n_vocab
            .unwrap_or_else(|| tokenizer.get_vocab_size(true));
        let bos = crate::hf_tokenizer::bos(&tokenizer);
        // Weights and the graph's name from the file itself (ONNX Runtime does not list
        // initializers); a file it loaded but this cannot read only loses those columns.
        let summary = melt_formats::onnx_proto::summarize(path).unwrap_or_default();
        // Attention that writes the cache in place at every layer (and nothing else that
        // grows it): the past can be a buffer of the whole context.
        convention.shares_kv_buffer = convention.has_attention_mask
            && !convention.has_cache_branch
            && summary.op_types.get("GroupQueryAttention") == Some(&convention.n_layer);
        let name = match summary.graph_name.as_str() {
            "" => String::new(),
            n => format!("{n} "),
        };
        let description = format!(
            "{name}onnx decoder {}L {}x{} KV {}{}",
            convention.n_layer,
            convention.kv_heads,
            convention.head_dim,
            match convention.kv {
                KvType::F32 => "f32",
                KvType::F16 => "f16",
            },
            if convention.shares_kv_buffer {
                " in place (GroupQueryAttention)"
            } else {
                ""
            }
        );
        // Every layer keeps every position: a sliding window, if the graph has one, is a
        // mask over the full cache.
        let kv = KvShape {
            n_layer: convention.n_layer as u32,
            swa_layers: 0,
            window: 0,
            kv_heads: convention.kv_heads as u32,
            k_dim: convention.head_dim as u32,
            v_dim: convention.head_dim as u32,
            elem_bytes: match convention.kv {
                KvType::F32 => 4.0,
                KvType::F16 => 2.0,
            },
            elem_from_session: false,
        };
        Ok(Box::new(OrtModel {
            path: path.clone(),
            convention,
            end_of_generation: crate::hf_tokenizer::end_of_generation(path, &tokenizer),
            tokenizer,
            bos,
            info: ModelInfo {
                description,
                architecture: "onnx-decoder".into(),
                // What melt's exporter says it wrote (`INT4`), else the weights' element type.
                quantization: summary
                    .metadata
                    .get("quantization")
                    .cloned()
                    .unwrap_or_else(|| summary.weight_type().unwrap_or_default().to_string()),
                n_params: summary.n_params(),
                size_bytes: model.size_bytes,
                n_vocab,
                n_ctx_train: 0,
                kv: Some(kv),
            },
        }))
    }
}

struct OrtModel {
    path: PathBuf,
    convention: Convention,
    tokenizer: tokenizers::Tokenizer,
    bos: Option<Token>,
    end_of_generation: Vec<Token>,
    info: ModelInfo,
}

impl LoadedModel for OrtModel {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    fn session<'m>(
        &'m self,
        params: &SessionParams,
    ) -> Result<Box<dyn Session + 'm>, BackendError> {
        let options = Options::from_params(params)?;
        let session = options.session(&self.path)?;
        let n_ctx = params.n_ctx.unwrap_or(512).max(1) as usize;
        let shared = match (options.share_kv, self.convention.shares_kv_buffer) {
            (Some(true), false) => {
                return Err(unsupported(format!(
                    "share_kv=on: {} does not write its KV cache in place (that needs GroupQueryAttention at every layer, fed by attention_mask)",
                    self.path.display()
                )))
            }
            (None | Some(true), true) => Some(SharedKv::new(&session, &self.convention, n_ctx)?),
            _ => None,
        };
        Ok(Box::new(OrtSession {
            model: self,
            session,
            n_ctx,
            n_batch: params.n_batch.max(1) as usize,
            shared,
            past: Vec::new(),
            n_past: 0,
            logits: Vec::new(),
        }))
    }
}

struct OrtSession<'m> {
    model: &'m OrtModel,
    session: ort::session::Session,
    n_ctx: usize,
    n_batch: usize,
    /// The KV cache bound in place, where the graph allows it; `past` is unused then.
    shared: Option<SharedKv>,
    /// `present.{i}.key`, `present.{i}.value` of the last step, in layer order; empty when
    /// the context is empty.
    past: Vec<DynValue>,
    n_past: usize,
    logits: Vec<f32>,
}

impl OrtSession<'_> {
    fn empty_past(&self) -> Result<DynValue, BackendError> {
        let c = &self.model.convention;
        let shape = [1usize, c.kv_heads, 0, c.head_dim];
        let v = match c.kv {
            KvType::F32 => Tensor::<f32>::from_array((shape, Vec::new())).map(|t| t.into_dyn()),
            KvType::F16 => {
                Tensor::<half::f16>::from_array((shape, Vec::new())).map(|t| t.into_dyn())
            }
        };
        v.map_err(|e| runtime(format!("empty KV cache tensor: {e}")))
    }

    /// Runs the graph on `tokens` after the cache; keeps the new cache and last logits, and
    /// hands `each` the logits of the rows from `rows_from` on (indices into `tokens`).
    fn step(
        &mut self,
        tokens: &[Token],
        rows_from: usize,
        mut each: Option<melt_core::backend::LogitsSink<'_>>,
    ) -> Result<(), BackendError> {
        let model = self.model;
        let c = &model.convention;
        let (n, past) = (tokens.len(), self.n_past);
        if past + n > self.n_ctx {
            return Err(runtime(format!(
                "the context holds {} tokens; {past} are used and {n} more were given",
                self.n_ctx
            )));
        }
        let err = |what: &str| {
            let what = what.to_string();
            move |e: ort::Error| runtime(format!("{what}: {e}"))
        };
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let mut inputs: Vec<(String, DynValue)> = Vec::with_capacity(4 + 2 * c.n_layer);
        inputs.push((
            "input_ids".into(),
            Tensor::from_array(([1, n], ids))
                .map_err(err("input_ids"))?
                .into_dyn(),
        ));
        if c.has_attention_mask {
            inputs.push((
                "attention_mask".into(),
                Tensor::from_array(([1, past + n], vec![1i64; past + n]))
                    .map_err(err("attention_mask"))?
                    .into_dyn(),
            ));
        }
        if c.has_position_ids {
            let pos: Vec<i64> = (past as i64..(past + n) as i64).collect();
            inputs.push((
                "position_ids".into(),
                Tensor::from_array(([1, n], pos))
                    .map_err(err("position_ids"))?
                    .into_dyn(),
            ));
        }
        if c.has_logits_to_keep {
            // The last position's logits alone, unless rows go to `each` (0: every one).
            let keep: i64 = if each.is_some() { 0 } else { 1 };
            inputs.push((
                "logits_to_keep".into(),
                Tensor::from_array(([1], vec![keep]))
                    .map_err(err("logits_to_keep"))?
                    .into_dyn(),
            ));
        }
        if c.has_cache_branch {
            inputs.push((
                "use_cache_branch".into(),
                Tensor::from_array(([1], vec![past > 0]))
                    .map_err(err("use_cache_branch"))?
                    .into_dyn(),
            ));
        }
        // On failure the cache is gone: the context is reset rather than left inconsistent.
        self.n_past = 0;
        let (logits, present) = match self.shared.as_mut() {
            // The cache is bound in place: the graph writes the new positions into it.
            Some(shared) => (shared.run(&mut self.session, &inputs)?, None),
            None => {
                let mut cache = std::mem::take(&mut self.past).into_iter();
                for i in 0..c.n_layer {
                    for kv in ["key", "value"] {
                        let v = match cache.next() {
                            Some(v) => v,
                            None => self.empty_past()?,
                        };
                        inputs.push((format!("past_key_values.{i}.{kv}"), v));
                    }
                }
                let mut outputs = self.session.run(inputs).map_err(err("running the graph"))?;
                let logits = outputs
                    .remove("logits")
                    .ok_or_else(|| runtime("the run returned no `logits`"))?;
                let mut present = Vec::with_capacity(2 * c.n_layer);
                for i in 0..c.n_layer {
                    for kv in ["key", "value"] {
                        let name = format!("present.{i}.{kv}");
                        present.push(
                            outputs
                                .remove(&name)
                                .ok_or_else(|| runtime(format!("the run returned no `{name}`")))?,
                        );
                    }
                }
                (logits, Some(present))
            }
        };
        let rows_of = |shape: &[i64]| -> Result<(usize, usize), BackendError> {
            let vocab = *shape.last().unwrap_or(&0) as usize;
            let rows = shape.iter().rev().skip(1).product::<i64>() as usize;
            if vocab == 0 || rows == 0 {
                return Err(runtime(format!("`logits` came back with shape {shape:?}")));
            }
            Ok((rows, vocab))
        };
        // Every row from `rows_from` goes to `each` (scoring); the last one is kept.
        self.logits.clear();
        if c.logits_f16 {
            let (shape, data) = logits
                .try_extract_tensor::<half::f16>()
                .map_err(err("reading logits"))?;
            let (rows, vocab) = rows_of(shape)?;
            let row = |r: usize| data[r * vocab..(r + 1) * vocab].iter().map(|x| x.to_f32());
            if let Some(each) = each.as_mut() {
                for r in rows_from.min(rows)..rows {
                    self.logits.clear();
                    self.logits.extend(row(r));
                    each(r, &self.logits);
                }
            }
            self.logits.clear();
            self.logits.extend(row(rows - 1));
        } else {
            let (shape, data) = logits
                .try_extract_tensor::<f32>()
                .map_err(err("reading logits"))?;
            let (rows, vocab) = rows_of(shape)?;
            if let Some(each) = each.as_mut() {
                for r in rows_from.min(rows)..rows {
                    each(r, &data[r * vocab..(r + 1) * vocab]);
                }
            }
            self.logits
                .extend_from_slice(&data[(rows - 1) * vocab..rows * vocab]);
        }
        if let Some(present) = present {
            self.past = present;
        }
        self.n_past = past + n;
        Ok(())
    }
}

impl Session for OrtSession<'_> {
    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<Token>, BackendError> {
        crate::hf_tokenizer::encode(&self.model.tokenizer, text, add_special).map_err(runtime)
    }

    fn detokenize(&self, tokens: &[Token]) -> Result<String, BackendError> {
        crate::hf_tokenizer::decode(&self.model.tokenizer, tokens).map_err(runtime)
    }

    fn prefill(&mut self, tokens: &[Token]) -> Result<(), BackendError> {
        if tokens.is_empty() {
            return Err(runtime("prefill of zero tokens"));
        }
        for chunk in tokens.chunks(self.n_batch) {
            self.step(chunk, chunk.len(), None)?;
        }
        Ok(())
    }

    fn decode(&mut self, token: Token) -> Result<(), BackendError> {
        self.step(&[token], 1, None)
    }

    fn is_end_of_generation(&self, token: Token) -> bool {
        self.model.end_of_generation.contains(&token)
    }

    /// Every position's logits (prefill and decode ask a graph with `logits_to_keep` for the
    /// last position's alone).
    fn prefill_with_logits(
        &mut self,
        tokens: &[Token],
        from: usize,
        each: melt_core::backend::LogitsSink<'_>,
    ) -> Result<(), BackendError> {
        let n_batch = self.n_batch;
        melt_core::backend::prefill_batches_with_logits(tokens, from, n_batch, each, |b, r, s| {
            self.step(b, r, Some(s))
        })
    }

    fn logits(&self) -> Result<&[f32], BackendError> {
        if self.logits.is_empty() {
            return Err(runtime("no logits yet: nothing was evaluated"));
        }
        Ok(&self.logits)
    }

    fn clear(&mut self) -> Result<(), BackendError> {
        self.past.clear();
        self.n_past = 0;
        self.logits.clear();
        Ok(())
    }

    /// With the cache bound in place, positions past `n` are simply not valid any more (the
    /// attention mask says how many are); a growing past would have to be sliced.
    fn truncate(&mut self, n: usize) -> Result<bool, BackendError> {
        if n == 0 {
            self.clear()?;
            return Ok(true);
        }
        if self.shared.is_none() || n > self.n_past {
            return Ok(false);
        }
        self.n_past = n;
        self.logits.clear();
        Ok(true)
    }

    fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    fn n_past(&self) -> usize {
        self.n_past
    }

    fn bos(&self) -> Option<Token> {
        self.model.bos
    }
}

#[cfg(test)]
mod tests;
