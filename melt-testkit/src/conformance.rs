//! The conformance kit: what every backend must get right for melt's numbers to mean the same
//! thing across engines. A backend's own tests call [`run`] (or the single checks) on a real
//! model — the generated tiny GGUF/ONNX/TorchScript model in CI, a real one by hand.
//!
//! Checks: tokenize round-trip; greedy determinism; prefill-then-decode logits equal one long
//! prefill (the KV cache is correct), also when the prompt arrives in two chunks; `clear()`
//! really empties the cache; every position's logits (for scoring) equal those of prefills that
//! end there; `truncate()` keeps exactly the first positions; wrong-format, truncated and missing model files give errors
//! naming the file, never a panic.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use melt_bench::backend::{argmax, Backend, Session, Token};
use melt_bench::model::ModelSpec;
use melt_bench::params::Params;
use melt_bench::workload::synthetic_tokens;

/// What a check found wrong.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The backend returned an error where it should not have.
    #[error(transparent)]
    Backend(#[from] melt_bench::backend::BackendError),
    /// It answered, but not what the check requires (the text says what differed).
    #[error("{0}")]
    Mismatch(String),
    /// The scratch files the check writes.
    #[error("scratch file: {0}")]
    Scratch(#[from] std::io::Error),
    #[error("panicked")]
    Panicked,
}

/// The outcome of one check.
#[derive(Debug)]
pub struct Check {
    pub name: &'static str,
    pub result: Result<(), Failure>,
}

/// Texts for the tokenizer round-trip: ASCII, punctuation, accents, CJK, emoji.
pub const ROUND_TRIP_TEXTS: &[&str] = &[
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "naïve café, 東京 and 🚀!",
    "  two leading spaces and\na newline",
];

/// Largest absolute difference between two logit vectors, relative to the largest logit.
pub fn relative_max_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn logits_of(s: &dyn Session) -> Result<Vec<f32>, Failure> {
    Ok(s.logits().map(|l| l.to_vec())?)
}

fn same_logits(what: &str, a: &[f32], b: &[f32], tolerance: f32) -> Result<(), Failure> {
    if a.len() != b.len() {
        return Err(Failure::Mismatch(format!(
            "{what}: {} logits vs {}",
            a.len(),
            b.len()
        )));
    }
    let d = relative_max_diff(a, b);
    if d > tolerance {
        return Err(Failure::Mismatch(format!(
            "{what}: logits differ by {d:.2e} (relative), more than {tolerance:.0e}"
        )));
    }
    if argmax(a) != argmax(b) {
        return Err(Failure::Mismatch(format!(
            "{what}: greedy choice differs ({} vs {})",
            argmax(a),
            argmax(b)
        )));
    }
    Ok(())
}

pub fn check_round_trip(s: &dyn Session) -> Result<(), Failure> {
    for text in ROUND_TRIP_TEXTS {
        let tokens = s.tokenize(text, false)?;
        if tokens.is_empty() {
            return Err(Failure::Mismatch(format!("{text:?} tokenized to nothing")));
        }
        let back = s.detokenize(&tokens)?;
        if back != *text {
            return Err(Failure::Mismatch(format!(
                "{text:?} came back as {back:?} (tokens {tokens:?})"
            )));
        }
    }
    Ok(())
}

fn greedy(s: &mut dyn Session, prompt: &[Token], n: usize) -> Result<Vec<Token>, Failure> {
    s.clear()?;
    s.prefill(prompt)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = argmax(s.logits()?);
        out.push(t);
        s.decode(t)?;
    }
    Ok(out)
}

pub fn check_greedy_determinism(s: &mut dyn Session, prompt: &[Token]) -> Result<(), Failure> {
    let a = greedy(s, prompt, 16)?;
    let b = greedy(s, prompt, 16)?;
    if a != b {
        return Err(Failure::Mismatch(format!(
            "two greedy runs differ: {a:?} vs {b:?}"
        )));
    }
    Ok(())
}

/// Prefill n-1 tokens then decode the last must give the logits of prefilling all n; so must
/// prefilling in two chunks.
pub fn check_kv_cache(
    s: &mut dyn Session,
    prompt: &[Token],
    tolerance: f32,
) -> Result<(), Failure> {
    let n = prompt.len();
    s.clear()?;
    s.prefill(prompt)?;
    let whole = logits_of(s)?;
    if s.n_past() != n {
        return Err(Failure::Mismatch(format!(
            "after prefilling {n} tokens n_past() is {}",
            s.n_past()
        )));
    }
    s.clear()?;
    s.prefill(&prompt[..n - 1])?;
    s.decode(prompt[n - 1])?;
    same_logits(
        "prefill(n-1) + decode(1) vs prefill(n)",
        &logits_of(s)?,
        &whole,
        tolerance,
    )?;
    s.clear()?;
    s.prefill(&prompt[..n / 2])?;
    s.prefill(&prompt[n / 2..])?;
    same_logits(
        "prefill in two chunks vs prefill(n)",
        &logits_of(s)?,
        &whole,
        tolerance,
    )
}

/// [`Session::prefill_with_logits`] hands over each position from `from` once, in order, and
/// each position's logits are those of a prefill that ends there (what perplexity and
/// multiple-choice scoring rely on); the context then holds every token.
pub fn check_all_logits(
    s: &mut dyn Session,
    prompt: &[Token],
    tolerance: f32,
) -> Result<(), Failure> {
    let (n, from) = (prompt.len(), prompt.len() / 4);
    s.clear()?;
    let mut rows: Vec<(usize, Vec<f32>)> = Vec::new();
    s.prefill_with_logits(prompt, from, &mut |i, l| rows.push((i, l.to_vec())))?;
    let seen: Vec<usize> = rows.iter().map(|(i, _)| *i).collect();
    if seen != (from..n).collect::<Vec<_>>() {
        return Err(Failure::Mismatch(format!(
            "asked for positions {from}..{n}, was handed {seen:?}"
        )));
    }
    if s.n_past() != n {
        return Err(Failure::Mismatch(format!(
            "after prefill_with_logits of {n} tokens n_past() is {}",
            s.n_past()
        )));
    }
    same_logits(
        "logits() after prefill_with_logits vs its last row",
        &logits_of(s)?,
        &rows[rows.len() - 1].1,
        tolerance,
    )?;
    for i in [from, (from + n) / 2, n - 1] {
        s.clear()?;
        s.prefill(&prompt[..=i])?;
        // A row of one long batch against a shorter batch: quantized engines pick kernels by
        // batch size, so these differ more than prefill against prefill+decode does.
        same_logits(
            &format!(
                "position {i} of prefill_with_logits vs a prefill of {} tokens",
                i + 1
            ),
            &rows[i - from].1,
            &logits_of(s)?,
            2.0 * tolerance,
        )?;
    }
    Ok(())
}

/// [`Session::truncate`] keeps exactly the first positions: a prefill after it gives the
/// logits of a fresh context holding the kept prefix and the new tokens (an engine may
/// decline with `false`; then it must still work after a `clear()`).
pub fn check_truncate(
    s: &mut dyn Session,
    prompt: &[Token],
    tolerance: f32,
) -> Result<(), Failure> {
    let (n, keep) = (prompt.len(), prompt.len() / 2);
    // The reference: the kept half, then the second half reversed.
    let mut other: Vec<Token> = prompt[..keep].to_vec();
    other.extend(prompt[keep..].iter().rev());
    s.clear()?;
    s.prefill(&other)?;
    let fresh = logits_of(s)?;
    s.clear()?;
    s.prefill(prompt)?;
    if !s.truncate(keep)? {
        return Ok(());
    }
    if s.n_past() != keep {
        return Err(Failure::Mismatch(format!(
            "after truncate({keep}) of {n} positions n_past() is {}",
            s.n_past()
        )));
    }
    s.prefill(&other[keep..])?;
    same_logits(
        "truncate then prefill vs a fresh prefill",
        &logits_of(s)?,
        &fresh,
        tolerance,
    )
}

/// After `clear()` the context is empty: n_past is 0 and a prefill gives the logits of a fresh
/// context, not of a continuation.
pub fn check_clear(s: &mut dyn Session, prompt: &[Token], tolerance: f32) -> Result<(), Failure> {
    s.clear()?;
    s.prefill(prompt)?;
    let fresh = logits_of(s)?;
    // Fill more context, then clear and do the same prefill again.
    s.prefill(prompt)?;
    let continued = logits_of(s)?;
    s.clear()?;
    if s.n_past() != 0 {
        return Err(Failure::Mismatch(format!(
            "after clear() n_past() is {}",
            s.n_past()
        )));
    }
    s.prefill(prompt)?;
    same_logits(
        "prefill after clear() vs fresh prefill",
        &logits_of(s)?,
        &fresh,
        tolerance,
    )?;
    if relative_max_diff(&continued, &fresh) <= tolerance {
        return Err(Failure::Mismatch(
            "a continued context gave the same logits as a fresh one: the check cannot tell \
             whether clear() works (is the KV cache used at all?)"
                .into(),
        ));
    }
    Ok(())
}

fn expect_load_error(
    backend: &dyn Backend,
    spec: &ModelSpec,
    params: &Params,
) -> Result<(), Failure> {
    let result = catch_unwind(AssertUnwindSafe(|| {
        backend.load(spec, &params.model).map(|_| ())
    }));
    let name = spec
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match result {
        Err(_) => Err(Failure::Mismatch(format!(
            "loading {} panicked instead of returning an error",
            spec.path.display()
        ))),
        Ok(Ok(())) => Err(Failure::Mismatch(format!(
            "{} loaded although it is not a valid model",
            spec.path.display()
        ))),
        Ok(Err(e)) if !e.to_string().contains(&name) => Err(Failure::Mismatch(format!(
            "error for {} does not name the file: {e}",
            spec.path.display()
        ))),
        Ok(Err(_)) => Ok(()),
    }
}

/// A missing file, a truncated copy of `model` and a text file with its extension must each
/// fail to load with an error that names the file.
pub fn check_bad_files(
    backend: &dyn Backend,
    model: &ModelSpec,
    params: &Params,
    scratch: &Path,
) -> Result<(), Failure> {
    let ext = model
        .path
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bytes = std::fs::read(&model.path)?;
    let truncated = scratch.join(format!("truncated.{ext}"));
    std::fs::write(&truncated, &bytes[..bytes.len() / 2])?;
    let text = scratch.join(format!("not-a-model.{ext}"));
    std::fs::write(&text, "this is a text file, not a model\n")?;
    let missing = scratch.join(format!("missing.{ext}"));
    for path in [truncated, text, missing] {
        let spec = ModelSpec {
            path,
            ..model.clone()
        };
        expect_load_error(backend, &spec, params)?;
    }
    Ok(())
}

/// Runs every check on `model`; `tolerance` bounds the relative logit difference allowed
/// between batched and incremental evaluation (1e-3 suits F32, quantized models need more).
pub fn run(
    backend: &dyn Backend,
    model: &ModelSpec,
    params: &Params,
    tolerance: f32,
    scratch: &Path,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut session_checks = || -> Result<Vec<Check>, Failure> {
        let loaded = backend.load(model, &params.model)?;
        let n_vocab = loaded.info().n_vocab;
        let mut sp = params.session.clone();
        sp.n_ctx = Some(sp.n_ctx.unwrap_or(256));
        let mut s = loaded.session(&sp)?;
        let prompt = synthetic_tokens(24, n_vocab, s.bos(), 17);
        Ok(vec![
            Check {
                name: "tokenize round-trip",
                result: check_round_trip(s.as_ref()),
            },
            Check {
                name: "greedy determinism",
                result: check_greedy_determinism(s.as_mut(), &prompt),
            },
            Check {
                name: "kv cache: prefill+decode equals one prefill",
                result: check_kv_cache(s.as_mut(), &prompt, tolerance),
            },
            Check {
                name: "clear() empties the cache",
                result: check_clear(s.as_mut(), &prompt, tolerance),
            },
            Check {
                name: "every position's logits equal prefills that end there",
                result: check_all_logits(s.as_mut(), &prompt, tolerance),
            },
            Check {
                name: "truncate() keeps exactly the first positions",
                result: check_truncate(s.as_mut(), &prompt, tolerance),
            },
            Check {
                name: "every position's logits, in batches of 7",
                result: {
                    // The prompt then spans four batches, the first position asked for inside
                    // the first: each batch's rows must come back once, shifted right.
                    let mut small = sp.clone();
                    (small.n_batch, small.n_ubatch) = (7, 7);
                    loaded
                        .session(&small)
                        .map_err(Failure::from)
                        .and_then(|mut b| check_all_logits(b.as_mut(), &prompt, tolerance))
                },
            },
        ])
    };
    match catch_unwind(AssertUnwindSafe(&mut session_checks)) {
        Ok(Ok(c)) => checks.extend(c),
        Ok(Err(e)) => checks.push(Check {
            name: "load and open a session",
            result: Err(e),
        }),
        Err(_) => checks.push(Check {
            name: "load and open a session",
            result: Err(Failure::Panicked),
        }),
    }
    checks.push(Check {
        name: "bad model files give errors",
        result: check_bad_files(backend, model, params, scratch),
    });
    checks
}

/// Panics with every failed check listed (for use in `#[test]`s).
pub fn assert_conforms(checks: &[Check]) {
    let failed: Vec<String> = checks
        .iter()
        .filter_map(|c| {
            c.result
                .as_ref()
                .err()
                .map(|e| format!("- {}: {e}", c.name))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "conformance failures:\n{}",
        failed.join("\n")
    );
}
