//! How much does melt's harness cost? Runs, on one llama.cpp session and interleaved, the
//! decode loop exactly as llama-bench's `test_gen` does it (one token per batch, synchronise,
//! a random next token, logits never read) and melt's own `tg` workload (the same, plus the
//! per-token clock, reading the logits and greedy argmax), and prints the median tok/s of each
//! and their ratio.
//!
//! cargo run --release -p melt-backends --example harness_overhead -- MODEL.gguf [THREADS] [ROUNDS]

use std::time::Instant;

use melt_backends::LlamaCpp;
use melt_bench::{workload, Backend, ModelParams, ModelSpec, SessionParams};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .ok_or("usage: harness_overhead MODEL.gguf [THREADS] [ROUNDS]")?;
    let threads: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let rounds: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let n = 128;
    let spec = ModelSpec::from_path(path.as_ref())?;
    let loaded = LlamaCpp.load(&spec, &ModelParams::default())?;
    let n_vocab = loaded.info().n_vocab;
    let params = SessionParams {
        threads,
        n_ctx: Some(n as u32),
        ..SessionParams::default()
    };
    let mut s = loaded.session(&params)?;
    let w = workload::tg(n);
    let mut rng = melt_bench::stats::Rng::new(1);
    let (mut bare, mut melt) = (Vec::new(), Vec::new());
    for round in 0..=rounds {
        // llama-bench's loop.
        s.clear()?;
        let start = Instant::now();
        let mut token = rng.below(n_vocab) as i32;
        for _ in 0..n {
            s.decode(token)?;
            token = rng.below(n_vocab) as i32;
        }
        let t_bare = n as f64 / start.elapsed().as_secs_f64();
        // melt's workload.
        let m = workload::run_once(&w, s.as_mut(), n_vocab, 7)?;
        let t_melt = n as f64 / (m.ns as f64 / 1e9);
        if round > 0 {
            // Round 0 is the warm-up.
            bare.push(t_bare);
            melt.push(t_melt);
        }
    }
    let (b, m) = (median(bare), median(melt));
    println!("llama-bench loop: {b:.2} tok/s, melt tg{n}: {m:.2} tok/s, ratio {:.4} (medians of {rounds} interleaved rounds, {threads} threads)", m / b);
    Ok(())
}
