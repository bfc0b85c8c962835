//! The libtorch backend on tiny llamas the tests write as GGUF and trace into TorchScript
//! with tch ops (`gguf_to_torchscript`), checked against llama.cpp on the same weights.

use super::*;
use melt_bench::Params;
use melt_testkit::conformance;
use melt_testkit::TinyLlama;

/// A tiny llama as GGUF and as TorchScript (`model.pt`, `config.json`, `tokenizer.json`).
fn tiny(dir: &Path, t: TinyLlama) -> (ModelSpec, ModelSpec) {
    let gguf = dir.join("tiny-llama.gguf");
    t.write(&gguf).unwrap();
    let out = crate::gguf_to_torchscript::export(&gguf, &dir.join("ts")).unwrap();
    (
        ModelSpec::from_path(&gguf).unwrap(),
        ModelSpec::from_path(&out.model).unwrap(),
    )
}

fn two_threads() -> Params {
    melt_testkit::with_threads(2)
}

#[test]
fn conformance_kit_passes_on_a_traced_tiny_llama() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ts) = tiny(dir.path(), TinyLlama::default());
    let checks = conformance::run(&LibTorch, &ts, &two_threads(), 1e-3, dir.path());
    conformance::assert_conforms(&checks);
}

/// Greedy tokens and logits of `prompt` then `n` decoded tokens.
fn greedy(
    backend: &dyn melt_bench::Backend,
    m: &ModelSpec,
    prompt: &[Token],
    n: usize,
) -> (Vec<Token>, Vec<Vec<f32>>) {
    let loaded = backend.load(m, &ModelParams::default()).unwrap();
    let mut s = loaded.session(&two_threads().session).unwrap();
    s.prefill(prompt).unwrap();
    let (mut tokens, mut logits) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let l = s.logits().unwrap().to_vec();
        let t = melt_bench::backend::argmax(&l);
        logits.push(l);
        tokens.push(t);
        s.decode(t).unwrap();
    }
    (tokens, logits)
}

#[test]
fn the_trace_computes_what_llama_cpp_computes_from_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    // Grouped-query attention: 8 heads over 2 KV heads.
    let t = TinyLlama {
        n_head: 8,
        n_head_kv: 2,
        ..TinyLlama::default()
    };
    let (gguf, ts) = tiny(dir.path(), t);
    let prompt: Vec<Token> = vec![1, 200, 171, 40, 99, 7, 160, 120];
    let (a, la) = greedy(&crate::LlamaCpp, &gguf, &prompt, 12);
    let (b, lb) = greedy(&LibTorch, &ts, &prompt, 12);
    assert_eq!(a, b, "greedy tokens");
    for (x, y) in la.iter().zip(&lb) {
        let range = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-3 * range.max(1.0),
            "worst {worst} of range {range}"
        );
    }
}

/// Logits after `prompt`, then after each of `tokens` decoded in turn (teacher-forced, so two
/// models are compared position by position even where their argmax would part).
fn logits_along(
    backend: &dyn melt_bench::Backend,
    m: &ModelSpec,
    prompt: &[Token],
    tokens: &[Token],
) -> Vec<Vec<f32>> {
    let loaded = backend.load(m, &ModelParams::default()).unwrap();
    let mut s = loaded.session(&two_threads().session).unwrap();
    s.prefill(prompt).unwrap();
    let mut out = vec![s.logits().unwrap().to_vec()];
    for &t in tokens {
        s.decode(t).unwrap();
        out.push(s.logits().unwrap().to_vec());
    }
    out
}

/// The largest logit difference, relative to the reference's range, over every position.
fn worst_relative(want: &[Vec<f32>], got: &[Vec<f32>]) -> f32 {
    want.iter()
        .zip(got)
        .map(|(x, y)| {
            let range = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
            let d = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            d / range
        })
        .fold(0f32, f32::max)
}

#[test]
fn bf16_and_int8_exports_are_narrower_close_to_llama_cpp_and_say_so() {
    use crate::gguf_to_torchscript::{export_as, Precision};
    let dir = tempfile::tempdir().unwrap();
    let t = TinyLlama {
        n_head: 8,
        n_head_kv: 2,
        ..TinyLlama::default()
    };
    let (gguf, f32_ts) = tiny(dir.path(), t);
    let prompt: Vec<Token> = vec![1, 200, 171, 40, 99, 7, 160, 120];
    let (tokens, _) = greedy(&crate::LlamaCpp, &gguf, &prompt, 10);
    let want = logits_along(&crate::LlamaCpp, &gguf, &prompt, &tokens);
    let f32_size = f32_ts.size_bytes as f64;
    // (precision, its label, the most its logits may move, the most its file may weigh
    // against the f32 export's).
    for (precision, label, bound, size) in [
        (Precision::Bf16, "BF16", 1e-2, 0.6),
        (Precision::Int8, "INT8", 2e-2, 0.4),
    ] {
        let out = export_as(&gguf.path, &dir.path().join(label), precision).unwrap();
        let m = ModelSpec::from_path(&out.model).unwrap();
        let ratio = m.size_bytes as f64 / f32_size;
        assert!(ratio < size, "{label}: {ratio:.2} of the f32 file");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out.config).unwrap()).unwrap();
        assert_eq!(config["torch_dtype"], precision.torch_dtype(), "{label}");
        let info = LibTorch.load(&m, &ModelParams::default()).unwrap().info();
        assert_eq!(info.quantization, label);
        assert!(
            info.description.ends_with(&label.to_ascii_lowercase()),
            "{}",
            info.description
        );
        let got = logits_along(&LibTorch, &m, &prompt, &tokens);
        let worst = worst_relative(&want, &got);
        eprintln!(
            "{label}: worst logit difference {worst:.5} of the range, file {ratio:.2}× f32's"
        );
        // Narrower weights move the logits (an export still in f32 would not) ...
        assert!(worst > 1e-5, "{label}: {worst}, as if still f32");
        // ... by their rounding, not by a wrong graph.
        assert!(worst < bound, "{label}: {worst}");
        let checks = conformance::run(&LibTorch, &m, &two_threads(), 1e-3, dir.path());
        conformance::assert_conforms(&checks);
    }
}

#[test]
fn model_info_threads_and_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ts) = tiny(dir.path(), TinyLlama::default());
    let loaded = LibTorch.load(&ts, &ModelParams::default()).unwrap();
    let info = loaded.info();
    assert_eq!(info.n_vocab, melt_testkit::tiny_vocab().0.len());
    assert_eq!(info.kv.unwrap().n_layer, 2);
    assert!(
        info.description.contains("torchscript 2L 2x16"),
        "{}",
        info.description
    );
    // bf16 cannot convert a traced module's weights (constants of its graph): refused rather
    // than run in f32 under another name.
    let mut p = two_threads().session;
    p.options.insert("dtype".into(), "bf16".into());
    let e = loaded.session(&p).err().unwrap().to_string();
    assert!(
        e.contains("constants of a traced graph") && e.contains("--quant bf16"),
        "{e}"
    );
    // Unknown options and values are refused by name.
    let mut bad = two_threads().session;
    bad.options.insert("dtype".into(), "int3".into());
    let e = loaded.session(&bad).err().unwrap().to_string();
    assert!(e.contains("int3"), "{e}");
    let mut bad = two_threads().session;
    bad.options.insert("graph_opt".into(), "all".into());
    let e = loaded.session(&bad).err().unwrap().to_string();
    assert!(
        e.contains("graph_opt") && e.contains("dtype, inter_threads"),
        "{e}"
    );
}

#[test]
fn bad_models_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ts) = tiny(dir.path(), TinyLlama::default());
    let err = |m: &ModelSpec| {
        LibTorch
            .load(m, &ModelParams::default())
            .err()
            .unwrap()
            .to_string()
    };
    // Not TorchScript: a zip of something else, named .pt.
    let ts_dir = ts.path.parent().unwrap().to_path_buf();
    let junk = ts_dir.join("junk.pt");
    std::fs::write(&junk, b"PK\x03\x04 not really a zip").unwrap();
    let e = err(&ModelSpec::from_path(&junk).unwrap());
    assert!(
        e.contains("junk.pt") && e.contains("cannot load it as TorchScript"),
        "{e}"
    );
    // Truncated.
    let bytes = std::fs::read(&ts.path).unwrap();
    let cut = ts_dir.join("cut.pt");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = err(&ModelSpec::from_path(&cut).unwrap());
    assert!(e.contains("cut.pt") && e.contains("TorchScript"), "{e}");
    // The wrong calling convention: a module whose forward takes one tensor.
    let other = ts_dir.join("identity.pt");
    let x = Tensor::zeros([2], (Kind::Float, Device::Cpu));
    CModule::create_by_tracing("Double", "forward", &[x], &mut |xs: &[Tensor]| {
        vec![&xs[0] * 2.0]
    })
    .unwrap()
    .save(&other)
    .unwrap();
    let e = err(&ModelSpec::from_path(&other).unwrap());
    assert!(e.contains("identity.pt") && e.contains("convention"), "{e}");
    // A config.json that lies about the vocabulary.
    let cfg = ts_dir.join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["vocab_size"] = serde_json::json!(7);
    std::fs::write(&cfg, v.to_string()).unwrap();
    let e = err(&ts);
    assert!(
        e.contains("logits have shape") && e.contains("vocab_size"),
        "{e}"
    );
    std::fs::remove_file(&cfg).unwrap();
    let e = err(&ts);
    assert!(e.contains("config.json"), "{e}");
}

/// Gemma 3 270M: the Q4_K_M GGUF on llama.cpp against its TorchScript export (the registry's,
/// when cached; else exported here) on libtorch. The GGUF's absence fails the test, naming it.
#[test]
fn gemma_3_270m_traced_agrees_with_llama_cpp() {
    use melt_testkit::cached_model;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let Some(gguf) = cached_model(&root, "gemma-3-270m-q4_k_m") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ts = match melt_testkit::lookup_cached(&root, "gemma-3-270m-f32-torchscript") {
        Ok(m) => m,
        Err(_) => {
            let out = crate::gguf_to_torchscript::export(&gguf.path, dir.path()).unwrap();
            ModelSpec::from_path(&out.model).unwrap()
        }
    };
    // Past the 512-position sliding window, as the ONNX exporter's test does.
    let text: String = melt_bench::datasets::Shipped::TinyShakespeare
        .text()
        .chars()
        .take(2400)
        .collect();
    let mut sp = two_threads().session;
    sp.n_ctx = Some(1024);
    let run = |b: &dyn melt_bench::Backend, m: &ModelSpec| {
        let loaded = b.load(m, &ModelParams::default()).unwrap();
        let mut s = loaded.session(&sp).unwrap();
        let prompt = s.tokenize(&text, true).unwrap();
        s.prefill(&prompt).unwrap();
        let mut out = Vec::new();
        for _ in 0..16 {
            let l = s.logits().unwrap().to_vec();
            let t = melt_bench::backend::argmax(&l);
            s.decode(t).unwrap();
            out.push((t, l));
        }
        (prompt, out)
    };
    let (pa, a) = run(&crate::LlamaCpp, &gguf);
    let (pb, b) = run(&LibTorch, &ts);
    assert_eq!(pa, pb, "both tokenizers split the prompt alike");
    let mut worst = 0f32;
    let mut agree = 0;
    for ((ta, la), (tb, lb)) in a.iter().zip(&b) {
        let range = la.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = la
            .iter()
            .zip(lb)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        worst = worst.max(d / range);
        agree += (ta == tb) as usize;
        if ta != tb {
            break;
        }
    }
    eprintln!("gemma-3-270m torchscript: worst relative logit difference {worst:.4}, greedy {agree}/16 before the first divergence");
    assert!(worst < 0.1, "relative logit difference {worst}");
    assert!(agree >= 8, "greedy tokens agree {agree}/16");
    let kit = Params {
        session: two_threads().session,
        ..Params::default()
    };
    let checks = conformance::run(&LibTorch, &ts, &kit, 1e-3, dir.path());
    conformance::assert_conforms(&checks);
}

#[test]
fn libtorch_scores_perplexity_as_llama_cpp_does() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, ts) = tiny(dir.path(), TinyLlama::default());
    let mut sp = two_threads().session;
    // An f32 cache on the llama.cpp side too: the comparison is of the graphs.
    (sp.type_k, sp.type_v, sp.n_ctx) = ("f32".into(), "f32".into(), Some(64));
    let ppl = |b: &dyn melt_bench::Backend, m: &ModelSpec| melt_testkit::tiny_perplexity(b, m, &sp);
    let (a, b) = (ppl(&crate::LlamaCpp, &gguf), ppl(&LibTorch, &ts));
    assert!((a - b).abs() / a < 1e-4, "llama.cpp {a} vs libtorch {b}");
}
