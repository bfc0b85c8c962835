//! KL-divergence of a model's next-token distributions from a reference model's, by
//! llama.cpp's method (`llama-perplexity --kl-divergence`): the reference's log-probabilities
//! over a text were saved by a perplexity run ([`super::log_probs`]); this model evaluates the
//! same tokens in the same chunks and every scored position gives KL(reference ‖ model), whether
//! the two pick the same top token, and how the probability of the text's token moved (Δp).
//! The file decides the tokens, so any engine with the same vocabulary is scored on the same
//! input, whatever its own tokenizer would make of the text.

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::Session;
use crate::tasks::log_probs::{self, Reader, Row};
use crate::tasks::TaskError;

/// What to measure: against which saved reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KlDivergenceSpec {
    pub base: PathBuf,
    /// The reference's chunk length, read from the file when the option is parsed (the
    /// session is sized before the file is opened again).
    pub n_ctx: usize,
}

impl KlDivergenceSpec {
    /// Reads `base`'s header: a missing or foreign file is refused before anything runs.
    pub fn open(base: PathBuf) -> Result<KlDivergenceSpec, log_probs::LogProbsError> {
        let n_ctx = Reader::open(&base)?.header.n_ctx;
        Ok(KlDivergenceSpec { base, n_ctx })
    }

    pub fn file_name(&self) -> String {
        crate::tasks::file_name(&self.base)
    }
}

/// A mean and its standard error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub mean: f64,
    pub stderr: f64,
}

/// The result: llama-perplexity's statistics, named.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KlDivergence {
    /// The reference file's name.
    pub base: String,
    pub n_ctx: usize,
    pub chunks: usize,
    pub tokens_scored: usize,
    /// Mean KL(reference ‖ model) per scored token, nats.
    pub kld: Estimate,
    pub kld_median: f64,
    pub kld_p90: f64,
    pub kld_p99: f64,
    pub kld_max: f64,
    /// Fraction of positions where both put the same token on top.
    pub same_top: Estimate,
    /// Mean p(model) − p(reference) of the text's next token.
    pub delta_p: Estimate,
    /// Root mean square of that difference.
    pub delta_p_rms: Estimate,
    pub ppl: Estimate,
    pub ppl_base: Estimate,
    /// ln(PPL(model) / PPL(reference)), with the covariance of the two taken into account.
    pub ln_ppl_ratio: Estimate,
    pub seconds: f64,
    pub eval_tokens_per_s: f64,
}

/// The running sums llama-perplexity keeps.
#[derive(Debug, Default, Clone)]
struct Sums {
    nll: f64,
    nll2: f64,
    nll_base: f64,
    nll_base2: f64,
    nll_nll_base: f64,
    kld: f64,
    kld2: f64,
    p_diff: f64,
    p_diff2: f64,
    p_diff4: f64,
    same_top: usize,
    count: usize,
}

/// llama-perplexity's mean and uncertainty: no uncertainty from ten values or fewer.
fn mean_and_uncertainty(sum: f64, sum2: f64, count: usize) -> Estimate {
    if count == 0 {
        return Estimate {
            mean: 0.0,
            stderr: 0.0,
        };
    }
    let n = count as f64;
    let mean = sum / n;
    let var = sum2 / n - mean * mean;
    let stderr = if var > 0.0 && count > 10 {
        (var / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    Estimate { mean, stderr }
}

/// Scores one position: `logits` the model's, `base` the reference's row, `next` the text's
/// next token. Returns the position's KLD and Δp.
fn score(logits: &[f32], base: &Row, next: usize, sums: &mut Sums) -> (f64, f64) {
    let (mut max, mut top) = (logits[0], 0);
    for (i, &x) in logits.iter().enumerate().skip(1) {
        if x > max {
            (max, top) = (x, i);
        }
    }
    let sum_exp: f64 = logits.iter().map(|&x| (x - max).exp() as f64).sum();
    let log_z = max + sum_exp.ln() as f32;
    let nll = (log_z - logits[next]) as f64;
    let nll_base = -(base.log_prob(next) as f64);
    sums.nll += nll;
    sums.nll2 += nll * nll;
    sums.nll_base += nll_base;
    sums.nll_base2 += nll_base * nll_base;
    sums.nll_nll_base += nll * nll_base;
    let (mut kld, mut top_base, mut top_base_lp) = (0.0f64, 0, f32::NEG_INFINITY);
    for (i, &x) in logits.iter().enumerate() {
        let lp_base = base.log_prob(i);
        if lp_base > top_base_lp {
            (top_base, top_base_lp) = (i, lp_base);
        }
        // Below the file's 16-nat floor the reference's probability is not kept.
        if lp_base > -log_probs::RANGE_NATS {
            kld += (lp_base.exp() * (lp_base - (x - log_z))) as f64;
        }
    }
    sums.kld += kld;
    sums.kld2 += kld * kld;
    sums.count += 1;
    sums.same_top += usize::from(top == top_base);
    let p_diff = ((-nll).exp() - (-nll_base).exp()) as f32 as f64;
    sums.p_diff += p_diff;
    sums.p_diff2 += p_diff * p_diff;
    sums.p_diff4 += p_diff.powi(4);
    (kld, p_diff)
}

/// llama-perplexity's percentile: linear between the two nearest of the sorted values.
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let p = fraction * (sorted.len() - 1) as f64;
    let i = p as usize;
    let f = p - i as f64;
    (1.0 - f) * sorted[i] + f * sorted[(i + 1).min(sorted.len() - 1)]
}

/// KL-divergence of `session`'s model from the reference in `spec.base`. `progress` hears
/// the running mean KLD after each chunk.
pub fn run(
    session: &mut dyn Session,
    spec: &KlDivergenceSpec,
    progress: &mut dyn FnMut(usize, usize, f64),
) -> Result<KlDivergence, TaskError> {
    let mut reader = Reader::open(&spec.base).map_err(|e| TaskError::Input(e.to_string()))?;
    let (n_ctx, n_vocab, chunks) = (
        reader.header.n_ctx,
        reader.header.n_vocab,
        reader.header.n_chunk,
    );
    let name = spec.file_name();
    if session.n_ctx() < n_ctx {
        return Err(TaskError::Input(format!(
            "kl-divergence: {name} has chunks of {n_ctx} tokens but the session holds {}",
            session.n_ctx()
        )));
    }
    let first = n_ctx / 2;
    let per_chunk = log_probs::scored_per_chunk(n_ctx);
    let stride = log_probs::row_len(n_vocab);
    let bos = session.bos();
    let mut sums = Sums::default();
    let mut klds = Vec::with_capacity(chunks * per_chunk);
    let mut p_diffs = Vec::with_capacity(chunks * per_chunk);
    let mut rows = Vec::new();
    let mut chunk = Vec::with_capacity(n_ctx);
    let start = Instant::now();
    for c in 0..chunks {
        reader
            .next_chunk(&mut rows)
            .map_err(|e| TaskError::Input(format!("kl-divergence: chunk {c}: {e}")))?;
        chunk.clear();
        chunk.extend_from_slice(&reader.header.tokens[c * n_ctx..(c + 1) * n_ctx]);
        if let Some(b) = bos {
            chunk[0] = b;
        }
        session.clear()?;
        let mut failed = None;
        session.prefill_with_logits(&chunk, first, &mut |i, logits| {
            let Some(&next) = chunk.get(i + 1) else {
                return;
            };
            if failed.is_some() {
                return;
            }
            if logits.len() != n_vocab {
                failed = Some(format!(
                    "{name} was saved from a vocabulary of {n_vocab} tokens; this model's has {}",
                    logits.len()
                ));
                return;
            }
            if logits.iter().any(|x| !x.is_finite()) {
                failed = Some(format!(
                    "chunk {c}, position {i}: the logits are not finite"
                ));
                return;
            }
            let k = i - first;
            let base = Row::new(&rows[k * stride..(k + 1) * stride], n_vocab);
            let (kld, p_diff) = score(logits, &base, next as usize, &mut sums);
            klds.push(kld);
            p_diffs.push(p_diff);
        })?;
        if let Some(why) = failed {
            return Err(TaskError::Input(format!("kl-divergence: {why}")));
        }
        progress(c + 1, chunks, sums.kld / sums.count.max(1) as f64);
    }
    let seconds = start.elapsed().as_secs_f64();
    klds.sort_by(f64::total_cmp);
    let n = sums.count;
    let ppl_log = mean_and_uncertainty(sums.nll, sums.nll2, n);
    let base_log = mean_and_uncertainty(sums.nll_base, sums.nll_base2, n);
    let cov = if n < 10 {
        0.0
    } else {
        let n = n as f64;
        (sums.nll_nll_base / n - (sums.nll / n) * (sums.nll_base / n)) / (n - 1.0)
    };
    let mse = mean_and_uncertainty(sums.p_diff2, sums.p_diff4, n);
    let rms = mse.mean.sqrt();
    let same = sums.same_top as f64 / n.max(1) as f64;
    let exp = |e: Estimate| Estimate {
        mean: e.mean.exp(),
        stderr: e.mean.exp() * e.stderr,
    };
    Ok(KlDivergence {
        base: name,
        n_ctx,
        chunks,
        tokens_scored: n,
        kld: mean_and_uncertainty(sums.kld, sums.kld2, n),
        kld_median: percentile(&klds, 0.5),
        kld_p90: percentile(&klds, 0.9),
        kld_p99: percentile(&klds, 0.99),
        kld_max: klds.last().copied().unwrap_or(0.0),
        same_top: Estimate {
            mean: same,
            stderr: (same * (1.0 - same) / (n.max(2) - 1) as f64).sqrt(),
        },
        delta_p: mean_and_uncertainty(sums.p_diff, sums.p_diff2, n),
        delta_p_rms: Estimate {
            mean: rms,
            stderr: if rms > 0.0 {
                0.5 / rms * mse.stderr
            } else {
                0.0
            },
        },
        ppl: exp(ppl_log),
        ppl_base: exp(base_log),
        ln_ppl_ratio: Estimate {
            mean: ppl_log.mean - base_log.mean,
            stderr: (ppl_log.stderr.powi(2) + base_log.stderr.powi(2) - 2.0 * cov)
                .max(0.0)
                .sqrt(),
        },
        seconds,
        eval_tokens_per_s: (chunks * n_ctx) as f64 / seconds.max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_of(logits: &[f32]) -> Vec<u16> {
        let mut raw = vec![0; log_probs::row_len(logits.len())];
        log_probs::encode_row(logits, &mut raw);
        raw
    }

    /// KL(P ‖ Q) in f64 from the two logit vectors, the definition itself.
    fn exact_kld(p_logits: &[f32], q_logits: &[f32]) -> f64 {
        let ls = |l: &[f32]| {
            let m = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let z = l.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln() + m;
            l.iter().map(|&x| x as f64 - z).collect::<Vec<_>>()
        };
        let (p, q) = (ls(p_logits), ls(q_logits));
        p.iter().zip(&q).map(|(a, b)| a.exp() * (a - b)).sum()
    }

    #[test]
    fn a_model_against_itself_diverges_by_nothing() {
        let logits: Vec<f32> = (0..500).map(|i| ((i * 7919) % 613) as f32 / 60.0).collect();
        let raw = row_of(&logits);
        let mut sums = Sums::default();
        let (kld, p_diff) = score(&logits, &Row::new(&raw, 500), 17, &mut sums);
        assert!(kld.abs() < 1e-4, "{kld}");
        assert!(p_diff.abs() < 1e-6, "{p_diff}");
        assert_eq!(sums.same_top, 1);
    }

    #[test]
    fn the_divergence_is_the_definitions_within_the_files_resolution() {
        let p: Vec<f32> = (0..300).map(|i| ((i * 31) % 97) as f32 / 12.0).collect();
        let q: Vec<f32> = p
            .iter()
            .enumerate()
            .map(|(i, x)| x + ((i * 13) % 7) as f32 * 0.05 - 0.15)
            .collect();
        let raw = row_of(&p);
        let mut sums = Sums::default();
        let (kld, _) = score(&q, &Row::new(&raw, 300), 5, &mut sums);
        let exact = exact_kld(&p, &q);
        assert!(exact > 1e-3, "the test needs a visible divergence: {exact}");
        assert!(
            (kld - exact).abs() / exact < 0.01,
            "{kld} vs the definition's {exact}"
        );
    }

    #[test]
    fn the_statistics_are_llama_perplexitys() {
        let sorted: Vec<f64> = (0..11).map(|i| i as f64).collect();
        assert_eq!(percentile(&sorted, 0.5), 5.0);
        assert!((percentile(&sorted, 0.99) - 9.9).abs() < 1e-12);
        let few = mean_and_uncertainty(10.0, 30.0, 5);
        assert_eq!((few.mean, few.stderr), (2.0, 0.0));
        // 0,1,...,19: mean 9.5, variance 33.25 (over n), standard error sqrt(33.25 / 19).
        let (s, s2) = (0..20).fold((0.0, 0.0), |(a, b), i| (a + i as f64, b + (i * i) as f64));
        let e = mean_and_uncertainty(s, s2, 20);
        assert!((e.mean - 9.5).abs() < 1e-12);
        assert!((e.stderr - (33.25f64 / 19.0).sqrt()).abs() < 1e-12);
    }
}
