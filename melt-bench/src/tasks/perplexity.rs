//! Perplexity of a text file, by llama.cpp's method (`llama-perplexity`): the text tokenized
//! once (BOS first), cut into chunks of `n_ctx` tokens, each chunk evaluated in a fresh
//! context with BOS in its first position, and only the second half of each chunk scored (so
//! every scored token has at least `n_ctx / 2` tokens of context).

use crate::datasets::DataSource;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::{log_prob, Session};
use crate::tasks::log_probs;
use crate::tasks::TaskError;

/// What to measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerplexitySpec {
    pub data: DataSource,
    /// Tokens per chunk (llama-perplexity's `-c`).
    pub n_ctx: usize,
    /// Score at most this many chunks (llama-perplexity's `--chunks`); all when `None`.
    pub max_chunks: Option<usize>,
    /// Also save the scored positions' log-probabilities here, as the reference that
    /// [`super::kl_divergence`] scores other models against (`--kl-divergence-base`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_log_probs: Option<PathBuf>,
}

/// The result, with what llama-perplexity prints beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Perplexity {
    pub file: String,
    pub n_ctx: usize,
    pub chunks: usize,
    /// Tokens scored: `chunks × (n_ctx − 1 − n_ctx / 2)`.
    pub tokens_scored: usize,
    /// Tokens of the whole file (with BOS).
    pub tokens_in_file: usize,
    pub ppl: f64,
    /// llama-perplexity's `+/-`: the standard error of the mean negative log-likelihood,
    /// carried through the exponential.
    pub ppl_stderr: f64,
    /// Mean negative log-likelihood per scored token (nats).
    pub nll: f64,
    /// Perplexity after each chunk (llama-perplexity's running `[1]a,[2]b,...`).
    pub running: Vec<f64>,
    pub seconds: f64,
    /// Tokens evaluated per second (every token of every chunk, scored or not).
    pub eval_tokens_per_s: f64,
}

/// The running sums llama-perplexity keeps.
#[derive(Debug, Default, Clone, Copy)]
pub struct NllSum {
    pub count: usize,
    pub nll: f64,
    pub nll2: f64,
}

impl NllSum {
    pub fn add(&mut self, logp: f64) {
        self.count += 1;
        self.nll -= logp;
        self.nll2 += logp * logp;
    }

    pub fn ppl(&self) -> f64 {
        (self.nll / self.count.max(1) as f64).exp()
    }

    /// `(ppl, stderr)` as llama-perplexity's final estimate computes them.
    pub fn estimate(&self) -> (f64, f64) {
        let n = self.count.max(1) as f64;
        let mean = self.nll / n;
        let var = self.nll2 / n - mean * mean;
        let ppl = mean.exp();
        let err = if var > 0.0 && self.count > 1 {
            (var / (n - 1.0)).sqrt() * ppl
        } else {
            0.0
        };
        (ppl, err)
    }
}

/// What stopped a chunk.
enum Failure {
    NotFinite(usize),
    Save(log_probs::LogProbsError),
}

/// Perplexity of `text` on `session` (whose context must hold `spec.n_ctx`). `progress` hears
/// the running perplexity after each chunk.
pub fn run(
    session: &mut dyn Session,
    spec: &PerplexitySpec,
    text: &str,
    progress: &mut dyn FnMut(usize, usize, f64),
) -> Result<Perplexity, TaskError> {
    let n_ctx = spec.n_ctx;
    let file = spec.data.to_string();
    if n_ctx < 4 {
        return Err(TaskError::Input(format!(
            "perplexity: a context of {n_ctx} tokens is too small to score"
        )));
    }
    if session.n_ctx() < n_ctx {
        return Err(TaskError::Input(format!(
            "perplexity: chunks of {n_ctx} tokens but the session holds {}",
            session.n_ctx()
        )));
    }
    let tokens = session.tokenize(text, true)?;
    if tokens.len() < 2 * n_ctx {
        return Err(TaskError::Input(format!(
            "perplexity: {file} is {} tokens; a context of {n_ctx} needs at least {} \
             (llama-perplexity's rule: two chunks)",
            tokens.len(),
            2 * n_ctx
        )));
    }
    let available = tokens.len() / n_ctx;
    let chunks = spec
        .max_chunks
        .map_or(available, |m| m.min(available))
        .max(1);
    let first = n_ctx / 2;
    let bos = session.bos();
    let mut sum = NllSum::default();
    let mut running = Vec::with_capacity(chunks);
    let start = Instant::now();
    let mut chunk = Vec::with_capacity(n_ctx);
    // Made at the first row, when the vocabulary's size is known.
    let mut saved: Option<log_probs::Writer> = None;
    for c in 0..chunks {
        chunk.clear();
        chunk.extend_from_slice(&tokens[c * n_ctx..(c + 1) * n_ctx]);
        if let Some(b) = bos {
            chunk[0] = b;
        }
        session.clear()?;
        let mut failed = None;
        session.prefill_with_logits(&chunk, first, &mut |i, logits| {
            // Position i predicts token i + 1; the chunk's last position predicts nothing.
            if let Some(&next) = chunk.get(i + 1) {
                if let (Some(path), None) = (&spec.save_log_probs, &failed) {
                    let writer = match saved.as_mut() {
                        Some(w) => Ok(w),
                        None => {
                            let rows = &tokens[..chunks * n_ctx];
                            log_probs::Writer::create(path, n_ctx, logits.len(), rows)
                                .map(|w| saved.insert(w))
                        }
                    };
                    if let Err(e) = writer.and_then(|w| w.row(logits)) {
                        failed = Some(Failure::Save(e));
                    }
                }
                let lp = log_prob(logits, next);
                if lp.is_finite() {
                    sum.add(lp);
                } else if failed.is_none() {
                    failed = Some(Failure::NotFinite(i));
                }
            }
        })?;
        match failed {
            Some(Failure::NotFinite(i)) => {
                return Err(TaskError::Input(format!(
                    "perplexity: chunk {c}, position {i}: the logits are not finite (NaN or the \
                     token's probability is 0)"
                )))
            }
            Some(Failure::Save(e)) => {
                return Err(TaskError::Input(format!(
                    "perplexity: saving the log-probabilities: {e}"
                )))
            }
            None => {}
        }
        running.push(sum.ppl());
        progress(c + 1, chunks, sum.ppl());
    }
    if let Some(w) = saved {
        w.finish().map_err(|e| {
            TaskError::Input(format!("perplexity: saving the log-probabilities: {e}"))
        })?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let (ppl, ppl_stderr) = sum.estimate();
    Ok(Perplexity {
        file,
        n_ctx,
        chunks,
        tokens_scored: sum.count,
        tokens_in_file: tokens.len(),
        ppl,
        ppl_stderr,
        nll: sum.nll / sum.count.max(1) as f64,
        running,
        seconds,
        eval_tokens_per_s: (chunks * n_ctx) as f64 / seconds.max(1e-9),
    })
}
