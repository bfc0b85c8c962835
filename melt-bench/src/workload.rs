//! What is measured: prefill of `n` tokens, decode of `n` tokens, or both, at a context depth.
//!
//! As in llama-bench, prompt tokens are synthetic (uniform over the vocabulary, fixed by a
//! seed, BOS first) and the depth is filled before the clock starts. Unlike llama-bench, decode
//! feeds back melt's greedy choice — what a real generation does — and never stops at EOS, so
//! every sample decodes exactly `n` tokens.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::{argmax, BackendError, Session, Token};
use crate::probe::{Phase, PhaseLog};
use crate::stats::Rng;

/// A workload: `prefill` prompt tokens, then `decode` generated tokens, after `depth` tokens of
/// context that are not timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Workload {
    pub prefill: usize,
    pub decode: usize,
    pub depth: usize,
}

/// `ppN`: prefill of `n` tokens.
pub fn pp(n: usize) -> Workload {
    Workload {
        prefill: n,
        decode: 0,
        depth: 0,
    }
}

/// `tgN`: decode of `n` tokens.
pub fn tg(n: usize) -> Workload {
    Workload {
        prefill: 0,
        decode: n,
        depth: 0,
    }
}

/// `ppP+tgT`: prefill then decode, timed together (llama-bench `-pg`).
pub fn pp_tg(prefill: usize, decode: usize) -> Workload {
    Workload {
        prefill,
        decode,
        depth: 0,
    }
}

/// Test mode's decode: enough tokens to go through the decode path and the KV cache a few
/// times, few enough that `cargo test --benches` is a quick check, not a second benchmark run.
pub const TEST_MODE_DECODE: usize = 8;

impl Workload {
    /// What test mode runs of this workload: the same prefill and depth (the context sizes
    /// the case needs), the decode cut to [`TEST_MODE_DECODE`] tokens.
    pub fn for_test(self) -> Workload {
        Workload {
            decode: self.decode.min(TEST_MODE_DECODE),
            ..self
        }
    }

    /// The same workload after `depth` tokens of untimed context (llama-bench `-d`).
    pub fn at_depth(self, depth: usize) -> Workload {
        Workload { depth, ..self }
    }

    /// Tokens the clock is divided by: prompt plus generated, as llama-bench counts.
    pub fn tokens(&self) -> usize {
        self.prefill + self.decode
    }

    /// Context positions the workload needs.
    pub fn n_ctx_needed(&self) -> usize {
        self.depth + self.prefill + self.decode
    }

    /// llama-bench's test name: `pp512`, `tg128`, `pp512+tg128`, `tg128 @ d512`.
    pub fn name(&self) -> String {
        let base = match (self.prefill, self.decode) {
            (p, 0) => format!("pp{p}"),
            (0, t) => format!("tg{t}"),
            (p, t) => format!("pp{p}+tg{t}"),
        };
        if self.depth > 0 {
            format!("{base} @ d{}", self.depth)
        } else {
            base
        }
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// `n` synthetic tokens for a vocabulary of `n_vocab`, fixed by `seed`, BOS first if given.
pub fn synthetic_tokens(n: usize, n_vocab: usize, bos: Option<Token>, seed: u64) -> Vec<Token> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| match (i, bos) {
            (0, Some(b)) => b,
            _ => rng.below(n_vocab) as Token,
        })
        .collect()
}

/// What one run of a workload measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Wall time of the timed part (prefill + decode), nanoseconds.
    pub ns: u64,
    /// Prefill call, nanoseconds (0 without prefill).
    pub prefill_ns: u64,
    /// Sum of decode steps, nanoseconds.
    pub decode_ns: u64,
    /// Time to first token: prefill plus choosing the first token (prefill workloads only).
    pub ttft_ns: Option<u64>,
    /// Each decode step: evaluate one token and choose the next.
    pub token_ns: Vec<u64>,
    /// When the run began, ns since measuring began (set by the runner for measured runs;
    /// what places a sustained run's samples in time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ns: Option<u64>,
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// Runs `w` once on `session`. `seed` fixes the prompt; `n_vocab` bounds synthetic tokens.
pub fn run_once(
    w: &Workload,
    session: &mut dyn Session,
    n_vocab: usize,
    seed: u64,
) -> Result<Measured, BackendError> {
    run_once_marked(w, session, n_vocab, seed, None)
}

/// [`run_once`], marking where prefill and decode begin and end in `phases` (for the probes'
/// attribution): three marks per run at most, none per token.
pub fn run_once_marked(
    w: &Workload,
    session: &mut dyn Session,
    n_vocab: usize,
    seed: u64,
    phases: Option<&PhaseLog>,
) -> Result<Measured, BackendError> {
    let mark = |p: Phase| {
        if let Some(log) = phases {
            log.mark(p)
        }
    };
    mark(Phase::Idle);
    session.clear()?;
    let bos = session.bos();
    if w.depth > 0 {
        let ctx = synthetic_tokens(w.depth, n_vocab, bos, seed ^ 0xd3b7);
        session.prefill(&ctx)?;
    }
    let mut m = Measured::default();
    // The first token to decode: the prompt's continuation, or a seeded token as llama-bench.
    let mut next: Token = synthetic_tokens(1, n_vocab, None, seed ^ 0x7467)[0];
    if w.prefill > 0 {
        let first_bos = if w.depth == 0 { bos } else { None };
        let prompt = synthetic_tokens(w.prefill, n_vocab, first_bos, seed);
        mark(Phase::Prefill);
        let start = Instant::now();
        session.prefill(&prompt)?;
        let prefilled = start.elapsed();
        if w.decode > 0 {
            next = argmax(session.logits()?);
            m.ttft_ns = Some(nanos(start.elapsed()));
        }
        m.prefill_ns = nanos(prefilled);
    }
    m.token_ns.reserve(w.decode);
    if w.decode > 0 {
        mark(Phase::Decode);
    }
    for _ in 0..w.decode {
        let start = Instant::now();
        session.decode(next)?;
        next = argmax(session.logits()?);
        m.token_ns.push(nanos(start.elapsed()));
    }
    mark(Phase::Idle);
    m.decode_ns = m.token_ns.iter().sum();
    m.ns = match m.ttft_ns {
        // pp+tg: the first token was chosen inside the TTFT window.
        Some(ttft) => ttft + m.decode_ns,
        None => m.prefill_ns + m.decode_ns,
    };
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_mode_keeps_the_context_and_cuts_the_decode() {
        assert_eq!(pp(512).for_test(), pp(512));
        assert_eq!(tg(128).for_test(), tg(TEST_MODE_DECODE));
        assert_eq!(tg(4).for_test(), tg(4));
        assert_eq!(
            pp_tg(512, 128).at_depth(512).for_test(),
            pp_tg(512, TEST_MODE_DECODE).at_depth(512)
        );
    }

    #[test]
    fn names_follow_llama_bench() {
        assert_eq!(pp(512).name(), "pp512");
        assert_eq!(tg(128).name(), "tg128");
        assert_eq!(pp_tg(512, 128).name(), "pp512+tg128");
        assert_eq!(tg(128).at_depth(512).name(), "tg128 @ d512");
        assert_eq!(tg(128).at_depth(512).n_ctx_needed(), 640);
        assert_eq!(pp_tg(512, 128).tokens(), 640);
    }

    #[test]
    fn synthetic_tokens_are_seeded_in_range_and_start_with_bos() {
        let a = synthetic_tokens(100, 50, Some(1), 9);
        assert_eq!(a, synthetic_tokens(100, 50, Some(1), 9));
        assert_ne!(a, synthetic_tokens(100, 50, Some(1), 10));
        assert_eq!(a[0], 1);
        assert!(a.iter().all(|&t| (0..50).contains(&t)));
    }
}
