//! libtorch through `tch`: decoder LMs saved as TorchScript, driven token by token with an
//! explicit KV cache.
//!
//! **Convention.** The module's `forward(input_ids, positions, past_keys, past_values,
//! new_keys, new_values)` takes `input_ids` and `positions` as int64 `[1, n]` (the new tokens
//! and their absolute positions, from 0), the cache so far as `[n_layer, kv_heads, past,
//! head_dim]` tensors of the model's dtype (`past` = 0 at the start), and `new_keys` /
//! `new_values` `[n_layer, kv_heads, n, head_dim]`, into which it writes this step's keys and
//! values in place; it returns the logits `[1, n, vocab]`. (TorchScript methods return one
//! value, and a traced module cannot build a tuple, so the cache goes out through arguments —
//! as ExecuTorch's mutable KV buffers do.) The backend keeps one buffer per K and V of the
//! session's `n_ctx` and passes views of it: nothing is copied between steps. Beside the
//! model: `config.json` with Hugging Face's names (`num_hidden_layers`, `num_key_value_heads`
//! or `num_attention_heads`, `head_dim` or `hidden_size / num_attention_heads`, `vocab_size`,
//! optionally `bos_token_id` and `max_position_embeddings`) and the `tokenizer.json`.
//!
//! **Parameters.** `threads` is libtorch's intra-op thread count (set for each session: the
//! process has one pool); session options `dtype=f32|bf16|f16` (the module is loaded again
//! and converted, which `context_ms` includes; a module whose weights are graph constants, as
//! a traced one's are, is refused) and `inter_threads=N` (libtorch takes it once
//! per process, before any inter-op work; a later different value is refused by name).
//!
//! **Library.** `cargo melt setup libtorch` makes a CPU libtorch 2.13.0 from the PyPI wheel;
//! building with the `libtorch` feature needs `LIBTORCH` pointing at it (xtask sets it, and
//! melt's build scripts put its `lib/` in the binaries' rpath).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use melt_core::{
    Backend, BackendError, KvShape, LoadedModel, ModelFormat, ModelInfo, ModelParams, ModelSpec,
    Session, SessionParams, Token,
};
use tch::{CModule, Device, IValue, Kind, Tensor};

const NAME: &str = "libtorch";

/// The libtorch release tch 0.26 links.
pub const TORCH_VERSION: &str = "2.13.0";

/// The libtorch backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct LibTorch;

impl LibTorch {
    pub fn new() -> LibTorch {
        LibTorch
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

/// The model's shape, from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub n_layer: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub bos: Option<Token>,
    /// Hugging Face's `model_type` (`gemma3`, `llama`), for the report.
    pub model_type: String,
    /// `num_parameters` (melt's exports write it: a traced module keeps its weights as
    /// constants, not parameters, so libtorch cannot count them).
    pub n_params: Option<u64>,
    /// The weights' type for the report: `quantization_config.bits` as `INT8`, else
    /// `torch_dtype` (`F32`, `BF16`, `F16`); `F32` when neither is there.
    pub quantization: String,
}

impl Config {
    /// Reads a Hugging Face style `config.json`.
    pub fn read(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        let num = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        let need =
            |k: &str| num(k).ok_or_else(|| format!("{} has no whole number `{k}`", path.display()));
        let n_head = num("num_attention_heads");
        let head_dim = match (num("head_dim"), num("hidden_size"), n_head) {
            (Some(d), _, _) => d,
            (None, Some(e), Some(h)) if h > 0 => e / h,
            _ => {
                return Err(format!(
                    "{} has neither `head_dim` nor `hidden_size` and `num_attention_heads`",
                    path.display()
                ))
            }
        };
        let kv_heads = num("num_key_value_heads").or(n_head).ok_or_else(|| {
            format!(
                "{} has neither `num_key_value_heads` nor `num_attention_heads`",
                path.display()
            )
        })?;
        Ok(Config {
            n_layer: need("num_hidden_layers")? as usize,
            kv_heads: kv_heads as usize,
            head_dim: head_dim as usize,
            n_vocab: need("vocab_size")? as usize,
            n_ctx_train: num("max_position_embeddings").unwrap_or(0) as usize,
            bos: num("bos_token_id").map(|b| b as Token),
            model_type: v
                .get("model_type")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string(),
            n_params: num("num_parameters"),
            quantization: quantization(&v),
        })
    }
}

/// What `config.json` says the weights are: quantized (`quantization_config.bits`) or of
/// which `torch_dtype`.
fn quantization(config: &serde_json::Value) -> String {
    let bits = config
        .get("quantization_config")
        .and_then(|q| q.get("bits"))
        .and_then(serde_json::Value::as_u64);
    if let Some(bits) = bits {
        return format!("INT{bits}");
    }
    match config
        .get("torch_dtype")
        .and_then(serde_json::Value::as_str)
    {
        None | Some("float32") => "F32".into(),
        Some("bfloat16") => "BF16".into(),
        Some("float16") => "F16".into(),
        Some(other) => other.to_ascii_uppercase(),
    }
}

/// `dtype=` option values.
fn kind_of(name: &str) -> Result<Kind, BackendError> {
    match name {
        "f32" | "float32" => Ok(Kind::Float),
        "bf16" | "bfloat16" => Ok(Kind::BFloat16),
        "f16" | "float16" => Ok(Kind::Half),
        other => Err(unsupported(format!(
            "dtype `{other}` (known: f32, bf16, f16)"
        ))),
    }
}

/// Session options this backend knows, checked before anything runs.
struct Options {
    dtype: Kind,
    inter_threads: Option<i32>,
}

impl Options {
    fn from_params(p: &SessionParams) -> Result<Options, BackendError> {
        let mut o = Options {
            dtype: Kind::Float,
            inter_threads: None,
        };
        for (k, v) in &p.options {
            match k.as_str() {
                "dtype" => o.dtype = kind_of(v)?,
                "inter_threads" => {
                    o.inter_threads =
                        Some(v.parse().ok().filter(|&n: &i32| n > 0).ok_or_else(|| {
                            unsupported(format!("inter_threads=`{v}` (a positive whole number)"))
                        })?)
                }
                other => {
                    return Err(unsupported(format!(
                        "session option `{other}` (known: dtype, inter_threads)"
                    )))
                }
            }
        }
        Ok(o)
    }
}

/// The inter-op thread count libtorch was given (it takes one, once per process).
static INTER_THREADS: Mutex<Option<i32>> = Mutex::new(None);

fn set_inter_threads(n: i32) -> Result<(), BackendError> {
    let mut set = INTER_THREADS
        .lock()
        .map_err(|_| runtime("a poisoned lock"))?;
    match *set {
        Some(m) if m != n => Err(unsupported(format!(
            "inter_threads={n}: libtorch already runs {m} inter-op threads in this process (it takes the count once)"
        ))),
        Some(_) => Ok(()),
        None => {
            tch::set_num_interop_threads(n);
            *set = Some(n);
            Ok(())
        }
    }
}

/// Loads a module, turning libtorch's exception text into a reason that names the file.
fn load_module(path: &Path, kind: Kind) -> Result<CModule, BackendError> {
    let bad = |reason: String| BackendError::Model {
        path: path.to_path_buf(),
        reason,
    };
    let mut m = CModule::load_on_device(path, Device::Cpu).map_err(|e| {
        let first = e.to_string();
        let first = first.lines().next().unwrap_or_default().to_string();
        bad(format!("libtorch cannot load it as TorchScript: {first}"))
    })?;
    m.set_eval();
    if kind != Kind::Float {
        // `to` converts parameters and buffers; a traced module (melt's exports are) holds its
        // weights as constants of the graph, which it leaves in f32 — the session would
        // compute in f32 under another name (measured: KL-divergence 0 from f32 "in bf16").
        let params = m
            .named_parameters()
            .map_err(|e| bad(format!("listing its parameters: {e}")))?;
        if params.is_empty() {
            return Err(unsupported(format!(
                "dtype={kind:?}: {} keeps its weights as constants of a traced graph (as melt's gguf-to-torchscript exports do), which libtorch cannot convert; it would still compute in f32 (export the weights narrower instead: melt-convert gguf-to-torchscript --quant bf16|int8)",
                path.display()
            )));
        }
        m.to(Device::Cpu, kind, false);
    }
    Ok(m)
}

impl Backend for LibTorch {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> String {
        format!("libtorch {TORCH_VERSION} (tch 0.26)")
    }

    fn accepts(&self, format: ModelFormat) -> bool {
        format == ModelFormat::TorchScript
    }

    fn load(
        &self,
        model: &ModelSpec,
        _params: &ModelParams,
    ) -> Result<Box<dyn LoadedModel>, BackendError> {
        let path = &model.path;
        let bad = |reason: String| BackendError::Model {
            path: path.clone(),
            reason,
        };
        if !path.is_file() {
            return Err(bad("no such file".into()));
        }
        let mut config = Config::read(&path.with_file_name("config.json"))
            .map_err(|e| bad(format!("its config.json: {e}")))?;
        let tokenizer = crate::hf_tokenizer::beside(path).map_err(bad)?;
        // config.json may not say; the tokenizer then does.
        config.bos = config.bos.or_else(|| crate::hf_tokenizer::bos(&tokenizer));
        let module = load_module(path, Kind::Float)?;
        let end_of_generation = crate::hf_tokenizer::end_of_generation(path, &tokenizer);
        let loaded = TorchModel {
            path: path.clone(),
            config,
            tokenizer,
            module,
            size_bytes: model.size_bytes,
            end_of_generation,
        };
        // One step of one token: a module that does not follow the convention is refused
        // here, by name, rather than in the middle of a case.
        loaded.check_convention()?;
        Ok(Box::new(loaded))
    }
}

struct TorchModel {
    path: PathBuf,
    config: Config,
    tokenizer: tokenizers::Tokenizer,
    module: CModule,
    size_bytes: u64,
    end_of_generation: Vec<Token>,
}

impl TorchModel {
    /// A K or V buffer of `n_ctx` positions.
    fn buffer(&self, kind: Kind, n_ctx: usize) -> Tensor {
        let c = &self.config;
        Tensor::zeros(
            [
                c.n_layer as i64,
                c.kv_heads as i64,
                n_ctx as i64,
                c.head_dim as i64,
            ],
            (kind, Device::Cpu),
        )
    }

    /// Runs `forward` on `tokens` at positions `start..`, the cache in `keys` / `values`
    /// (positions `0..start` filled; the new ones are written after them), and returns the
    /// logits, checked against the convention.
    fn forward(
        &self,
        module: &CModule,
        tokens: &[Token],
        start: usize,
        (keys, values): (&Tensor, &Tensor),
    ) -> Result<Tensor, BackendError> {
        let n = tokens.len() as i64;
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let ids = Tensor::from_slice(&ids).view([1, n]);
        let positions =
            Tensor::arange_start(start as i64, start as i64 + n, (Kind::Int64, Device::Cpu))
                .view([1, n]);
        let view = |t: &Tensor, from: i64, len: i64| IValue::Tensor(t.narrow(2, from, len));
        let out = tch::no_grad(|| {
            module.forward_is(&[
                IValue::Tensor(ids),
                IValue::Tensor(positions),
                view(keys, 0, start as i64),
                view(values, 0, start as i64),
                view(keys, start as i64, n),
                view(values, start as i64, n),
            ])
        })
        .map_err(|e| {
            let e = e.to_string();
            runtime(format!(
                "forward failed (is it a decoder in melt's TorchScript convention, forward(input_ids, positions, past_keys, past_values, new_keys, new_values) -> logits?): {}",
                e.lines().find(|l| !l.trim().is_empty()).unwrap_or_default()
            ))
        })?;
        let logits = match out {
            IValue::Tensor(t) => t,
            other => {
                return Err(runtime(format!(
                    "forward returned {}; the convention returns the logits tensor",
                    match other {
                        IValue::Tuple(v) => format!("a tuple of {}", v.len()),
                        _ => "something else".to_string(),
                    }
                )))
            }
        };
        let c = &self.config;
        if logits.size() != [1, n, c.n_vocab as i64] {
            return Err(runtime(format!(
                "logits have shape {:?}; expected [1, {n}, {}] (config.json's vocab_size)",
                logits.size(),
                c.n_vocab
            )));
        }
        Ok(logits)
    }

    fn check_convention(&self) -> Result<(), BackendError> {
        let (k, v) = (self.buffer(Kind::Float, 1), self.buffer(Kind::Float, 1));
        self.forward(&self.module, &[self.config.bos.unwrap_or(0)], 0, (&k, &v))
            .map(|_| ())
            .map_err(|e| BackendError::Model {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }
}

impl LoadedModel for TorchModel {
    fn info(&self) -> ModelInfo {
        let c = &self.config;
        let counted: u64 = self
            .module
            .named_parameters()
            .map(|ps| ps.iter().map(|(_, t)| t.numel() as u64).sum())
            .unwrap_or(0);
        let n_params = c.n_params.unwrap_or(counted);
        ModelInfo {
            description: format!(
                "{} torchscript {}L {}x{} {}",
                if c.model_type.is_empty() {
                    "decoder"
                } else {
                    &c.model_type
                },
                c.n_layer,
                c.kv_heads,
                c.head_dim,
                c.quantization.to_ascii_lowercase()
            )
            .trim_start()
            .to_string(),
            architecture: "torchscript-decoder".into(),
            quantization: c.quantization.clone(),
            n_params,
            size_bytes: self.size_bytes,
            n_vocab: c.n_vocab,
            n_ctx_train: c.n_ctx_train,
            kv: Some(KvShape {
                n_layer: c.n_layer as u32,
                swa_layers: 0,
                window: 0,
                kv_heads: c.kv_heads as u32,
                k_dim: c.head_dim as u32,
                v_dim: c.head_dim as u32,
                elem_bytes: 4.0,
                elem_from_session: false,
            }),
        }
    }

    fn session<'m>(
        &'m self,
        params: &SessionParams,
    ) -> Result<Box<dyn Session + 'm>, BackendError> {
        let options = Options::from_params(params)?;
        if let Some(n) = options.inter_threads {
            set_inter_threads(n)?;
        }
        tch::set_num_threads(params.threads.max(1) as i32);
        // Another dtype is another copy of the weights: loaded again and converted.
        let own = match options.dtype {
            Kind::Float => None,
            kind => Some(load_module(&self.path, kind)?),
        };
        // The runner sizes n_ctx to the workload; without one, 4096 at most (the buffers
        // are allocated whole).
        let trained = match self.config.n_ctx_train {
            0 => 4096,
            n => n.min(4096),
        };
        let n_ctx = params.n_ctx.map_or(trained, |n| n as usize);
        Ok(Box::new(TorchSession {
            model: self,
            own,
            keys: self.buffer(options.dtype, n_ctx),
            values: self.buffer(options.dtype, n_ctx),
            n_past: 0,
            n_ctx,
            n_batch: params.n_batch.max(1) as usize,
            logits: Vec::new(),
        }))
    }
}

struct TorchSession<'m> {
    model: &'m TorchModel,
    /// The module converted to another dtype, when the session asked for one.
    own: Option<CModule>,
    /// The K and V buffers `[n_layer, kv_heads, n_ctx, head_dim]`; positions `..n_past` hold
    /// the cache.
    keys: Tensor,
    values: Tensor,
    n_past: usize,
    n_ctx: usize,
    n_batch: usize,
    logits: Vec<f32>,
}

impl TorchSession<'_> {
    /// Evaluates `tokens` after the cache; keeps the last position's logits and hands `each`
    /// those of the positions from `rows_from` on (indices into `tokens`).
    fn step(
        &mut self,
        tokens: &[Token],
        rows_from: usize,
        each: Option<melt_core::backend::LogitsSink<'_>>,
    ) -> Result<(), BackendError> {
        if self.n_past + tokens.len() > self.n_ctx {
            return Err(runtime(format!(
                "context full: {} + {} positions > n_ctx {}",
                self.n_past,
                tokens.len(),
                self.n_ctx
            )));
        }
        let module = self.own.as_ref().unwrap_or(&self.model.module);
        let logits = self
            .model
            .forward(module, tokens, self.n_past, (&self.keys, &self.values))?;
        let n = tokens.len();
        let first = if each.is_some() {
            rows_from.min(n - 1)
        } else {
            n - 1
        };
        let rows = logits
            .narrow(1, first as i64, (n - first) as i64)
            .contiguous()
            .view([-1])
            .to_kind(Kind::Float);
        let rows = Vec::<f32>::try_from(&rows).map_err(|e| runtime(format!("logits: {e}")))?;
        let vocab = self.model.config.n_vocab;
        if let Some(each) = each {
            for (r, row) in rows.chunks_exact(vocab).enumerate().skip(rows_from - first) {
                each(first + r, row);
            }
        }
        self.logits = rows[rows.len() - vocab..].to_vec();
        self.n_past += n;
        Ok(())
    }
}

impl Session for TorchSession<'_> {
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

    /// Only positions before n_past are read: moving it back is the whole truncation.
    fn truncate(&mut self, n: usize) -> Result<bool, BackendError> {
        if n > self.n_past {
            return Ok(false);
        }
        self.n_past = n;
        self.logits.clear();
        Ok(true)
    }

    /// The module returns every position's logits; this reads them all.
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
        // Only positions before n_past are ever read: the buffers need no zeroing.
        self.n_past = 0;
        self.logits.clear();
        Ok(())
    }

    fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    fn n_past(&self) -> usize {
        self.n_past
    }

    fn bos(&self) -> Option<Token> {
        self.model.config.bos
    }
}

#[cfg(test)]
mod tests;
