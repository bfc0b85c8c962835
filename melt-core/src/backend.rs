//! The two traits an inference engine implements to be benchmarked by melt.
//!
//! A [`Backend`] turns a model file into a [`LoadedModel`] (weights in memory, loaded once per
//! sweep of session parameters), which opens [`Session`]s (a context with its KV cache and
//! threads). The harness, not the backend, owns the clock: every backend is timed the same way,
//! around [`Session::prefill`] and each [`Session::decode`], and sampling is greedy inside melt
//! so that outputs are comparable across engines.

use std::path::PathBuf;

use crate::model::{ModelFormat, ModelSpec};
use crate::params::{ModelParams, SessionParams};

/// A token id in the model's vocabulary.
pub type Token = i32;

/// Why a backend could not do what was asked. Every variant names the file or the step.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The model file is missing, truncated, of the wrong format, or rejected by the engine.
    #[error("cannot load model {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    /// The backend cannot run this model or parameter (format, feature, value out of range).
    #[error("{backend} does not support {what}")]
    Unsupported { backend: String, what: String },
    /// The engine failed while running (context creation, decode, tokenizer).
    #[error("{backend}: {what}")]
    Runtime { backend: String, what: String },
}

/// Facts about a loaded model, reported beside every result.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ModelInfo {
    /// Human description in llama-bench's style, e.g. `gemma3 270M Q4_K - Medium`.
    pub description: String,
    /// Architecture from the file's metadata (`llama`, `gemma3`, ...).
    pub architecture: String,
    /// Quantization / dtype of the weights (`Q4_K_M`, `F32`, `fp16`, ...).
    pub quantization: String,
    /// Number of parameters.
    pub n_params: u64,
    /// Bytes of weights as the engine holds them.
    pub size_bytes: u64,
    /// Vocabulary size (length of [`Session::logits`]).
    pub n_vocab: usize,
    /// Context length the model was trained with.
    pub n_ctx_train: usize,
    /// The KV cache's shape, for the roofline (what decoding reads besides the weights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv: Option<KvShape>,
}

/// The KV cache's shape: decoding one token reads every cached position's K and V of every
/// layer (of a sliding-window layer, at most its window).
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct KvShape {
    pub n_layer: u32,
    /// How many of the layers attend a sliding window of `window` positions.
    pub swa_layers: u32,
    pub window: u32,
    pub kv_heads: u32,
    pub k_dim: u32,
    pub v_dim: u32,
    /// Bytes per cached element (f16: 2, f32: 4).
    pub elem_bytes: f64,
    /// The element type is the session's `type_k` / `type_v` (llama.cpp), not `elem_bytes`.
    #[serde(default)]
    pub elem_from_session: bool,
}

impl KvShape {
    /// Bytes of K and V read to decode one token that attends `ctx` positions, with K and V
    /// elements of `k_bytes` and `v_bytes`.
    pub fn bytes_per_token(&self, ctx: u64, k_bytes: f64, v_bytes: f64) -> f64 {
        let full = self.n_layer.saturating_sub(self.swa_layers) as u64 * ctx;
        let swa = self.swa_layers as u64 * ctx.min(self.window as u64);
        let per_position =
            self.kv_heads as f64 * (self.k_dim as f64 * k_bytes + self.v_dim as f64 * v_bytes);
        (full + swa) as f64 * per_position
    }
}

/// Bytes per element of a ggml type as llama.cpp names it (`f16`, `q8_0`, ...): the block
/// size over the block's elements.
pub fn ggml_type_bytes(name: &str) -> Option<f64> {
    Some(match name.to_ascii_lowercase().as_str() {
        "f32" => 4.0,
        "f16" | "bf16" => 2.0,
        "q8_0" => 34.0 / 32.0,
        "q5_1" => 24.0 / 32.0,
        "q5_0" => 22.0 / 32.0,
        "q4_1" => 20.0 / 32.0,
        "q4_0" | "iq4_nl" => 18.0 / 32.0,
        _ => return None,
    })
}

/// An inference engine. Implementations live in `melt-backends`, one per cargo feature.
pub trait Backend: Send + Sync {
    /// Short stable name used in reports and filters, e.g. `llama.cpp`.
    fn name(&self) -> &str;
    /// Version of the engine, as precise as the build knows (commit, build number).
    fn version(&self) -> String;
    /// Whether this backend can load models of this format, so a suite over several backends
    /// and models only plans the pairs that make sense (decided before any file is hashed).
    fn accepts(&self, format: ModelFormat) -> bool;
    /// Loads the weights. Called once per model and [`ModelParams`]; the runner opens a
    /// session per measured case (and counts its making as the case's context time).
    fn load(
        &self,
        model: &ModelSpec,
        params: &ModelParams,
    ) -> Result<Box<dyn LoadedModel>, BackendError>;
}

/// Weights in memory, from which sessions (contexts) are opened.
pub trait LoadedModel {
    fn info(&self) -> ModelInfo;
    /// Opens a context with its own KV cache. `n_ctx` in `params` is the caller's request.
    fn session<'m>(&'m self, params: &SessionParams)
        -> Result<Box<dyn Session + 'm>, BackendError>;
}

/// One context of a loaded model. Methods return only when the work is done (synchronised),
/// so the harness's clock around them measures the real cost.
pub trait Session {
    /// Text to tokens. `add_special` adds BOS (or what the model's tokenizer adds).
    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<Token>, BackendError>;
    /// Tokens to text, special tokens omitted.
    fn detokenize(&self, tokens: &[Token]) -> Result<String, BackendError>;
    /// Appends `tokens` to the context and evaluates them; afterwards [`Session::logits`] holds
    /// the logits of the last one.
    fn prefill(&mut self, tokens: &[Token]) -> Result<(), BackendError>;
    /// Appends one token and evaluates it (one decode step).
    fn decode(&mut self, token: Token) -> Result<(), BackendError>;
    /// Logits of the last evaluated position (length [`ModelInfo::n_vocab`]).
    fn logits(&self) -> Result<&[f32], BackendError>;
    /// Empties the KV cache: the next prefill starts at position 0.
    fn clear(&mut self) -> Result<(), BackendError>;
    /// Number of positions the context can hold.
    fn n_ctx(&self) -> usize;
    /// Number of positions currently in the context.
    fn n_past(&self) -> usize;
    /// Beginning-of-sequence token, if the model uses one.
    fn bos(&self) -> Option<Token>;

    /// Text that may spell out the model's special tokens (a chat template's
    /// `<start_of_turn>`), those read as the tokens they name; nothing added in front.
    /// The default is [`Session::tokenize`], right for tokenizers that always match their
    /// added tokens (Hugging Face `tokenizer.json`).
    fn tokenize_special(&self, text: &str) -> Result<Vec<Token>, BackendError> {
        self.tokenize(text, false)
    }

    /// Whether generating `token` ends the answer (end of sequence, end of turn). A chat
    /// replay stops there; the timed pp/tg workloads never do.
    fn is_end_of_generation(&self, token: Token) -> bool {
        let _ = token;
        false
    }

    /// Keeps the first `n` positions of the context and drops the rest, so a shared prefix
    /// (a few-shot prompt, a question's context) is evaluated once. `Ok(false)` when the
    /// engine cannot (the caller clears and starts over); afterwards there are no logits
    /// until the next evaluation.
    fn truncate(&mut self, n: usize) -> Result<bool, BackendError> {
        if n == 0 {
            self.clear()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Appends `tokens` to the context like [`Session::prefill`], and hands `each` the logits
    /// of every position from `from` on — `(i, logits)` predicts the token after `tokens[i]` —
    /// in order. What perplexity and log-likelihood scoring read; afterwards
    /// [`Session::logits`] is the last position's, as after a prefill.
    ///
    /// The default prefills up to `from` and decodes the rest one token at a time: right on
    /// any engine, slow. Engines that compute every position's logits in one pass override it.
    fn prefill_with_logits(
        &mut self,
        tokens: &[Token],
        from: usize,
        each: LogitsSink<'_>,
    ) -> Result<(), BackendError> {
        check_scored_range(tokens, from)?;
        self.prefill(&tokens[..=from])?;
        each(from, self.logits()?);
        for (i, &t) in tokens.iter().enumerate().skip(from + 1) {
            self.decode(t)?;
            each(i, self.logits()?);
        }
        Ok(())
    }
}

/// What [`Session::prefill_with_logits`] hands each position's logits to.
pub type LogitsSink<'a> = &'a mut dyn FnMut(usize, &[f32]);

/// The loop of an engine's [`Session::prefill_with_logits`]: `tokens` in batches of `n_batch`;
/// `eval(batch, rows_from, sink)` evaluates one batch and hands `sink` the logits of its rows
/// from `rows_from` on (`batch.len()`: none), indexed within the batch; they reach `each`
/// indexed within `tokens`.
pub fn prefill_batches_with_logits(
    tokens: &[Token],
    from: usize,
    n_batch: usize,
    each: LogitsSink<'_>,
    mut eval: impl FnMut(&[Token], usize, LogitsSink<'_>) -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    check_scored_range(tokens, from)?;
    let n_batch = n_batch.max(1);
    for (c, batch) in tokens.chunks(n_batch).enumerate() {
        let start = c * n_batch;
        let mut shifted = |i: usize, row: &[f32]| each(start + i, row);
        eval(
            batch,
            from.saturating_sub(start).min(batch.len()),
            &mut shifted,
        )?;
    }
    Ok(())
}

/// The error [`Session::prefill_with_logits`] gives when `from` is not a position of `tokens`.
pub fn check_scored_range(tokens: &[Token], from: usize) -> Result<(), BackendError> {
    if from >= tokens.len() {
        return Err(BackendError::Runtime {
            backend: "melt".into(),
            what: format!(
                "logits asked from position {from} of {} tokens",
                tokens.len()
            ),
        });
    }
    Ok(())
}

/// `ln p(token)` under `logits` (a log-softmax at one index), summed in f64 so that a 262k
/// vocabulary loses nothing: the numbers perplexity and log-likelihood scoring add up.
pub fn log_prob(logits: &[f32], token: Token) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    logits
        .get(token as usize)
        .map_or(f64::NEG_INFINITY, |&x| x as f64 - max - sum.ln())
}

/// Index of the largest logit: melt's greedy sampler, the same for every backend.
/// Ties go to the lowest index so that results are deterministic; NaN is never chosen.
///
/// It runs inside the timed decode loop over vocabularies of up to ~260k entries, so it keeps
/// 16 independent lanes (value and index) that the compiler turns into vector max/blend
/// instructions, instead of one serial dependency chain.
pub fn argmax(logits: &[f32]) -> Token {
    const LANES: usize = 16;
    let mut best = [f32::NEG_INFINITY; LANES];
    let mut index = [usize::MAX; LANES];
    let chunks = logits.chunks_exact(LANES);
    let tail = chunks.remainder();
    for (k, chunk) in chunks.enumerate() {
        for i in 0..LANES {
            // Strictly greater: each lane keeps its first occurrence of its maximum.
            if chunk[i] > best[i] {
                best[i] = chunk[i];
                index[i] = k * LANES + i;
            }
        }
    }
    let offset = logits.len() - tail.len();
    let (mut best_value, mut best_index) = (f32::NEG_INFINITY, usize::MAX);
    let lanes = best.iter().zip(index).chain(tail.iter().zip(offset..));
    for (&v, i) in lanes {
        if i != usize::MAX && (v > best_value || (v == best_value && i < best_index)) {
            best_value = v;
            best_index = i;
        }
    }
    if best_index == usize::MAX {
        0
    } else {
        best_index as Token
    }
}

/// Lets a suite's `backends: [...]` take single backends and lists such as
/// `melt::backends::enabled()` alike. (It lives beside [`Backend`]: only the trait's own crate
/// may implement it both for every backend and for a list of them.)
pub trait IntoBackends {
    fn into_backends(self) -> Vec<Box<dyn Backend>>;
}

impl<B: Backend + 'static> IntoBackends for B {
    fn into_backends(self) -> Vec<Box<dyn Backend>> {
        vec![Box::new(self)]
    }
}

impl IntoBackends for Vec<Box<dyn Backend>> {
    fn into_backends(self) -> Vec<Box<dyn Backend>> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(xs: &[f32]) -> Token {
        let mut best = 0;
        for (i, &x) in xs.iter().enumerate() {
            if x > xs[best] || xs[best].is_nan() && !x.is_nan() {
                best = i;
            }
        }
        best as Token
    }

    #[test]
    fn argmax_picks_first_of_ties_and_skips_nan() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.2]), 1);
        assert_eq!(argmax(&[-2.0]), 0);
        assert_eq!(argmax(&[]), 0);
        // Ties across lanes and in the tail: still the first index.
        let mut v = vec![0.0f32; 100];
        v[37] = 5.0;
        v[5] = 5.0;
        v[99] = 5.0;
        assert_eq!(argmax(&v), 5);
        v[5] = 1.0;
        assert_eq!(argmax(&v), 37);
    }

    #[test]
    fn argmax_matches_a_naive_scan_on_random_logits() {
        // xorshift64: reproducible values without a dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut below_50 = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 50) as f32
        };
        for len in [1, 15, 16, 17, 255, 4096, 262_145] {
            // Coarse values make ties common.
            let v: Vec<f32> = (0..len).map(|_| below_50() - 25.0).collect();
            assert_eq!(argmax(&v), naive(&v), "len {len}");
        }
    }
}
