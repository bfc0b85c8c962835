//! llama.cpp through `llama-cpp-2`: GGUF models on CPU (and whatever ggml backend the build
//! enables). One process-wide `LlamaBackend`; weights loaded once per [`ModelParams`]; a
//! context per session with its own batch buffer, reused across calls so the harness measures
//! llama.cpp and not allocation.

use std::ffi::CStr;
use std::num::NonZeroU32;
use std::sync::OnceLock;

use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use melt_core::{
    Backend, BackendError, FlashAttn, KvShape, LoadedModel, ModelFormat, ModelInfo, ModelParams,
    ModelSpec, Session, SessionParams, Token,
};

const NAME: &str = "llama.cpp";

/// The llama.cpp backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct LlamaCpp;

impl LlamaCpp {
    pub fn new() -> LlamaCpp {
        LlamaCpp
    }
}

fn runtime(what: impl std::fmt::Display) -> BackendError {
    BackendError::Runtime {
        backend: NAME.into(),
        what: what.to_string(),
    }
}

/// llama.cpp allows one backend initialisation per process; its logs go to stderr unless
/// `MELT_LLAMA_LOG=1`, since they would drown the report.
fn backend() -> Result<&'static LlamaBackend, BackendError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            if std::env::var_os("MELT_LLAMA_LOG").is_none() {
                llama_cpp_2::send_logs_to_tracing(
                    llama_cpp_2::LogOptions::default().with_logs_enabled(false),
                );
            }
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| runtime(format!("cannot initialise llama.cpp: {e}")))
}

/// # Safety
/// `p` is null or points to a NUL-terminated string that lives through the call (ggml's
/// version and system-info getters return static ones).
unsafe fn c_str(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the caller's promise above.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// llama.cpp's names for `general.file_type` (`llama_model_ftype_name`), as llama-bench shows.
fn ftype_name(ftype: u32) -> (&'static str, &'static str) {
    match ftype {
        0 => ("F32", "all F32"),
        1 => ("F16", "F16"),
        2 => ("Q4_0", "Q4_0"),
        3 => ("Q4_1", "Q4_1"),
        7 => ("Q8_0", "Q8_0"),
        8 => ("Q5_0", "Q5_0"),
        9 => ("Q5_1", "Q5_1"),
        10 => ("Q2_K", "Q2_K - Medium"),
        11 => ("Q3_K_S", "Q3_K - Small"),
        12 => ("Q3_K_M", "Q3_K - Medium"),
        13 => ("Q3_K_L", "Q3_K - Large"),
        14 => ("Q4_K_S", "Q4_K - Small"),
        15 => ("Q4_K_M", "Q4_K - Medium"),
        16 => ("Q5_K_S", "Q5_K - Small"),
        17 => ("Q5_K_M", "Q5_K - Medium"),
        18 => ("Q6_K", "Q6_K"),
        25 => ("IQ4_NL", "IQ4_NL - 4.5 bpw"),
        30 => ("IQ4_XS", "IQ4_XS - 4.25 bpw"),
        32 => ("BF16", "BF16"),
        _ => ("unknown", "unknown type"),
    }
}

/// The file types [`quantize`] writes, by llama.cpp's names.
pub fn quantization_types() -> Vec<&'static str> {
    (0..=32)
        .map(|id| ftype_name(id).0)
        .filter(|n| *n != "unknown")
        .collect()
}

/// Writes `output`: the GGUF `input` with its weights quantized to `to` (`Q8_0`, `Q4_K_M`,
/// `F16`... as [`quantization_types`]), by llama.cpp's own quantizer (`llama_model_quantize`,
/// what `llama-quantize` runs). An already quantized input is quantized again — its losses
/// stay — which is what `cargo melt models quantize` says it did.
pub fn quantize(
    input: &std::path::Path,
    output: &std::path::Path,
    to: &str,
    threads: usize,
) -> Result<(), BackendError> {
    let bad = |reason: String| BackendError::Model {
        path: input.to_path_buf(),
        reason,
    };
    match melt_core::model::detect_format(input) {
        Ok(ModelFormat::Gguf) => {}
        Ok(other) => return Err(bad(format!("a {other} file, not GGUF"))),
        Err(e) => return Err(bad(e.to_string())),
    }
    let ftype = (0..=32u32)
        .find(|&id| ftype_name(id).0.eq_ignore_ascii_case(to))
        .ok_or_else(|| BackendError::Unsupported {
            backend: NAME.into(),
            what: format!(
                "quantization type `{to}` (one of {})",
                quantization_types().join(", ")
            ),
        })?;
    backend()?;
    let c = |p: &std::path::Path| {
        std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| runtime(format!("{} has a NUL byte", p.display())))
    };
    let (inp, out) = (c(input)?, c(output)?);
    // SAFETY: the defaults are plain values; the paths are NUL-terminated and outlive the call.
    let code = unsafe {
        let mut params = llama_cpp_sys_2::llama_model_quantize_default_params();
        params.ftype = ftype as _;
        params.nthread = threads.max(1) as i32;
        params.allow_requantize = true;
        llama_cpp_sys_2::llama_model_quantize(inp.as_ptr(), out.as_ptr(), &params)
    };
    if code != 0 {
        let _ = std::fs::remove_file(output);
        return Err(bad(format!(
            "llama.cpp could not quantize it to {to} into {} (code {code}; MELT_LLAMA_LOG=1 shows why)",
            output.display()
        )));
    }
    Ok(())
}

fn kv_type(name: &str) -> Result<KvCacheType, BackendError> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "f32" => KvCacheType::F32,
        "f16" => KvCacheType::F16,
        "bf16" => KvCacheType::BF16,
        "q8_0" => KvCacheType::Q8_0,
        "q4_0" => KvCacheType::Q4_0,
        "q4_1" => KvCacheType::Q4_1,
        "q5_0" => KvCacheType::Q5_0,
        "q5_1" => KvCacheType::Q5_1,
        "iq4_nl" => KvCacheType::IQ4_NL,
        other => {
            return Err(BackendError::Unsupported {
                backend: NAME.into(),
                what: format!(
                    "KV cache type `{other}` (use f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1 or iq4_nl)"
                ),
            })
        }
    })
}

impl Backend for LlamaCpp {
    fn name(&self) -> &str {
        NAME
    }

    /// The crate versions and the ggml version/commit compiled in, plus the CPU features
    /// ggml was built with (AVX2, NEON, ...): the numbers depend on all of them.
    ///
    /// Read once per process: `llama_print_system_info` fills a function-local static
    /// `std::string` in place on every call, so two threads asking at once (two suites run
    /// from one test binary, or any program embedding melt) write the same heap buffer while
    /// the other reads or frees it — the `malloc_consolidate(): invalid chunk size` aborts.
    fn version(&self) -> String {
        static VERSION: OnceLock<String> = OnceLock::new();
        VERSION
            .get_or_init(|| {
                // SAFETY: plain getters of static strings; the OnceLock makes this the only
                // call of `llama_print_system_info` melt ever makes, so nothing races it.
                let (ggml, commit, system) = unsafe {
                    (
                        c_str(llama_cpp_sys_2::ggml_version()),
                        c_str(llama_cpp_sys_2::ggml_commit()),
                        c_str(llama_cpp_sys_2::llama_print_system_info()),
                    )
                };
                format!(
                    "llama-cpp-2 {}, ggml {ggml} ({commit}); {}",
                    LLAMA_CPP_2_VERSION,
                    system.trim()
                )
            })
            .clone()
    }

    fn accepts(&self, format: ModelFormat) -> bool {
        format == ModelFormat::Gguf
    }

    fn load(
        &self,
        model: &ModelSpec,
        params: &ModelParams,
    ) -> Result<Box<dyn LoadedModel>, BackendError> {
        let bad = |reason: String| BackendError::Model {
            path: model.path.clone(),
            reason,
        };
        // llama.cpp would only say "failed to load"; check what can be checked first.
        match melt_core::model::detect_format(&model.path) {
            Ok(ModelFormat::Gguf) => {}
            Ok(other) => return Err(bad(format!("a {other} file, not GGUF"))),
            Err(e) => return Err(bad(e.to_string())),
        }
        let backend = backend()?;
        let mp = LlamaModelParams::default()
            .with_use_mmap(params.mmap)
            .with_n_gpu_layers(params.n_gpu_layers);
        let loaded = LlamaModel::load_from_file(backend, &model.path, &mp).map_err(|e| {
            bad(format!(
                "llama.cpp refused it ({e}): truncated, corrupt or an unsupported architecture \
                 (MELT_LLAMA_LOG=1 shows llama.cpp's own log)"
            ))
        })?;
        Ok(Box::new(LlamaLoaded { model: loaded }))
    }
}

const LLAMA_CPP_2_VERSION: &str = "0.1.160";

struct LlamaLoaded {
    model: LlamaModel,
}

impl LlamaLoaded {
    fn meta(&self, key: &str) -> Option<String> {
        self.model.meta_val_str(key).ok()
    }

    /// The KV cache as llama.cpp lays it out for this architecture: key/value lengths from
    /// the file (else n_embd / n_head), and the sliding-window layers of Gemma 2 (every
    /// other layer) and Gemma 3 (all but every `pattern`-th, 6 unless the file says).
    fn kv_shape(&self, arch: &str) -> Option<KvShape> {
        let num = |k: &str| {
            self.meta(&format!("{arch}.{k}"))
                .and_then(|v| v.trim().parse::<u32>().ok())
        };
        let n_layer = num("block_count")?;
        let n_head = num("attention.head_count")?.max(1);
        let k_dim = num("attention.key_length").unwrap_or(num("embedding_length")? / n_head);
        let window = num("attention.sliding_window").unwrap_or(0);
        let pattern = match arch {
            "gemma3" => num("attention.sliding_window_pattern").unwrap_or(6),
            "gemma2" => 2,
            _ => 0,
        };
        let swa_layers = if window > 0 && pattern > 0 {
            (0..n_layer).filter(|il| il % pattern < pattern - 1).count() as u32
        } else {
            0
        };
        Some(KvShape {
            n_layer,
            swa_layers,
            window,
            kv_heads: num("attention.head_count_kv").unwrap_or(n_head),
            k_dim,
            v_dim: num("attention.value_length").unwrap_or(k_dim),
            elem_bytes: 2.0,
            elem_from_session: true,
        })
    }
}

impl LoadedModel for LlamaLoaded {
    fn info(&self) -> ModelInfo {
        let arch = self.meta("general.architecture").unwrap_or_default();
        let ftype: u32 = self
            .meta("general.file_type")
            .and_then(|v| v.parse().ok())
            .unwrap_or(u32::MAX);
        let (quant, quant_desc) = ftype_name(ftype);
        let n_params = self.model.n_params();
        let size_label = self.meta("general.size_label").unwrap_or_else(|| {
            let n = n_params as f64;
            if n >= 1e9 {
                format!("{:.0}B", n / 1e9)
            } else {
                format!("{:.0}M", n / 1e6)
            }
        });
        ModelInfo {
            kv: self.kv_shape(&arch),
            description: format!("{arch} {size_label} {quant_desc}"),
            architecture: arch,
            quantization: quant.to_string(),
            n_params,
            size_bytes: self.model.size(),
            n_vocab: self.model.n_vocab().max(0) as usize,
            n_ctx_train: self.model.n_ctx_train() as usize,
        }
    }

    fn session<'m>(
        &'m self,
        params: &SessionParams,
    ) -> Result<Box<dyn Session + 'm>, BackendError> {
        if let Some(key) = params.options.keys().next() {
            return Err(BackendError::Unsupported {
                backend: NAME.into(),
                what: format!(
                    "the option `{key}`: llama.cpp's settings are melt's own parameters (threads, n_batch, flash_attn, type_k...), it takes no backend options"
                ),
            });
        }
        let backend = backend()?;
        let n_ctx = params.n_ctx.unwrap_or(512).max(1);
        let threads = i32::try_from(params.threads).unwrap_or(i32::MAX).max(1);
        let threads_batch = params
            .threads_batch
            .map(|t| i32::try_from(t).unwrap_or(i32::MAX).max(1))
            .unwrap_or(threads);
        let fa = match params.flash_attn {
            FlashAttn::Auto => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_AUTO,
            FlashAttn::On => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED,
            FlashAttn::Off => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED,
        };
        let cp = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(params.n_batch)
            .with_n_ubatch(params.n_ubatch)
            .with_n_threads(threads)
            .with_n_threads_batch(threads_batch)
            .with_flash_attention_policy(fa)
            .with_type_k(kv_type(&params.type_k)?)
            .with_type_v(kv_type(&params.type_v)?);
        let ctx = self
            .model
            .new_context(backend, cp)
            .map_err(|e| runtime(format!("cannot create a context with n_ctx={n_ctx}: {e}")))?;
        let n_batch = ctx.n_batch().max(1) as usize;
        Ok(Box::new(LlamaSession {
            model: &self.model,
            ctx,
            batch: LlamaBatch::new(n_batch, 1),
            n_batch,
            n_past: 0,
            last_logits: None,
        }))
    }
}

struct LlamaSession<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    n_past: usize,
    /// Batch index whose logits were computed last.
    last_logits: Option<i32>,
}

impl LlamaSession<'_> {
    fn check_room(&self, n: usize) -> Result<(), BackendError> {
        let n_ctx = self.n_ctx();
        if self.n_past + n > n_ctx {
            return Err(runtime(format!(
                "context full: {} tokens in context + {n} new > n_ctx {n_ctx}",
                self.n_past
            )));
        }
        Ok(())
    }

    /// Evaluates `tokens` as one batch, with logits for the positions from `logits_from` on
    /// (`tokens.len() - 1`: the last only; `tokens.len()`: none).
    fn eval(&mut self, tokens: &[Token], logits_from: usize) -> Result<(), BackendError> {
        self.batch.clear();
        for (i, &t) in tokens.iter().enumerate() {
            self.batch
                .add(
                    LlamaToken(t),
                    (self.n_past + i) as i32,
                    &[0],
                    i >= logits_from,
                )
                .map_err(runtime)?;
        }
        self.ctx
            .decode(&mut self.batch)
            .map_err(|e| runtime(format!("llama_decode failed: {e}")))?;
        self.n_past += tokens.len();
        self.last_logits = (logits_from < tokens.len()).then_some(tokens.len() as i32 - 1);
        Ok(())
    }
}

impl Session for LlamaSession<'_> {
    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<Token>, BackendError> {
        Ok(self
            .model
            .vocab()
            .tokenize(text.as_bytes(), add_special, false)
            .into_iter()
            .map(|t| t.0)
            .collect())
    }

    fn tokenize_special(&self, text: &str) -> Result<Vec<Token>, BackendError> {
        Ok(self
            .model
            .vocab()
            .tokenize(text.as_bytes(), false, true)
            .into_iter()
            .map(|t| t.0)
            .collect())
    }

    fn is_end_of_generation(&self, token: Token) -> bool {
        self.model.vocab().is_eog(LlamaToken(token))
    }

    /// `llama_memory_seq_rm` of the tail — refused once a sliding-window cache has pruned
    /// early positions (Gemma's local layers past their window), since positions kept may
    /// then attend to what is gone.
    fn truncate(&mut self, n: usize) -> Result<bool, BackendError> {
        if n >= self.n_past {
            return Ok(n == self.n_past);
        }
        if n == 0 {
            self.clear()?;
            return Ok(true);
        }
        if self.ctx.kv_cache_seq_pos_min(0) > 0 {
            return Ok(false);
        }
        let removed = self
            .ctx
            .clear_kv_cache_seq(Some(0), Some(n as u32), None)
            .map_err(|e| runtime(format!("dropping positions {n}..: {e}")))?;
        if removed {
            self.n_past = n;
            self.last_logits = None;
        }
        Ok(removed)
    }

    /// Every position's logits in one pass per batch, as llama-perplexity asks for them.
    fn prefill_with_logits(
        &mut self,
        tokens: &[Token],
        from: usize,
        each: melt_core::backend::LogitsSink<'_>,
    ) -> Result<(), BackendError> {
        self.check_room(tokens.len())?;
        let n_batch = self.n_batch;
        melt_core::backend::prefill_batches_with_logits(tokens, from, n_batch, each, |b, r, s| {
            self.eval(b, r)?;
            for i in r..b.len() {
                s(i, self.ctx.get_logits_ith(i as i32));
            }
            Ok(())
        })?;
        self.ctx.synchronize();
        Ok(())
    }

    fn detokenize(&self, tokens: &[Token]) -> Result<String, BackendError> {
        let tokens: Vec<LlamaToken> = tokens.iter().map(|&t| LlamaToken(t)).collect();
        let bytes = self.model.vocab().detokenize(&tokens, true, false);
        // Byte tokens can end mid-character (an answer cut at its cap): replaced, as Hugging
        // Face's decode does, rather than refused.
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn prefill(&mut self, tokens: &[Token]) -> Result<(), BackendError> {
        if tokens.is_empty() {
            return Ok(());
        }
        self.check_room(tokens.len())?;
        let n_chunks = tokens.len().div_ceil(self.n_batch);
        for (i, chunk) in tokens.chunks(self.n_batch).enumerate() {
            let logits_from = if i + 1 == n_chunks {
                chunk.len() - 1
            } else {
                chunk.len()
            };
            self.eval(chunk, logits_from)?;
        }
        // Returns once the work is done, so the harness's clock is honest on async backends.
        self.ctx.synchronize();
        Ok(())
    }

    fn decode(&mut self, token: Token) -> Result<(), BackendError> {
        self.check_room(1)?;
        self.eval(&[token], 0)?;
        self.ctx.synchronize();
        Ok(())
    }

    fn logits(&self) -> Result<&[f32], BackendError> {
        match self.last_logits {
            Some(i) => Ok(self.ctx.get_logits_ith(i)),
            None => Err(runtime(
                "no logits yet: nothing was evaluated since the last clear()",
            )),
        }
    }

    fn clear(&mut self) -> Result<(), BackendError> {
        self.ctx.clear_kv_cache();
        self.n_past = 0;
        self.last_logits = None;
        Ok(())
    }

    fn n_ctx(&self) -> usize {
        self.ctx.n_ctx() as usize
    }

    fn n_past(&self) -> usize {
        self.n_past
    }

    fn bos(&self) -> Option<Token> {
        let vocab = self.model.vocab();
        vocab.should_add_bos().then(|| vocab.bos().0)
    }
}

#[cfg(test)]
mod tasks_tests;
#[cfg(test)]
mod tests;
