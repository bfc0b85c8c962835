//! The llama.cpp backend on a tiny random-weight GGUF written by the test itself.

use super::*;
use melt_bench::{workload, Params};
use melt_testkit::conformance;
use melt_testkit::TinyLlama;

fn tiny(dir: &std::path::Path) -> ModelSpec {
    let path = dir.join("tiny-llama.gguf");
    TinyLlama::default().write(&path).unwrap();
    ModelSpec::from_path(&path).unwrap()
}

fn two_threads() -> Params {
    melt_testkit::with_threads(2)
}

#[test]
fn conformance_kit_passes_on_a_tiny_llama() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path());
    let checks = conformance::run(&LlamaCpp, &model, &two_threads(), 1e-3, dir.path());
    assert_eq!(checks.len(), 8);
    conformance::assert_conforms(&checks);
}

#[test]
fn model_info_reads_the_gguf_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path());
    let loaded = LlamaCpp.load(&model, &ModelParams::default()).unwrap();
    let info = loaded.info();
    assert_eq!(info.architecture, "llama");
    assert_eq!(info.quantization, "F32");
    assert!(info.description.starts_with("llama ") && info.description.ends_with("all F32"));
    assert_eq!(info.n_vocab, melt_testkit::tiny_vocab().0.len());
    assert!(info.n_params > 50_000, "{info:?}");
    // 2 layers, 2 KV heads of 64 / 4 = 16, no sliding window.
    let kv = info.kv.unwrap();
    assert_eq!(
        (kv.n_layer, kv.swa_layers, kv.kv_heads, kv.k_dim, kv.v_dim),
        (2, 0, 2, 16, 16)
    );
    assert!(
        LlamaCpp.version().contains("ggml"),
        "{}",
        LlamaCpp.version()
    );
}

#[test]
fn workloads_run_and_decode_exactly_n_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path());
    let loaded = LlamaCpp.load(&model, &ModelParams::default()).unwrap();
    let mut sp = two_threads().session;
    sp.n_ctx = Some(64);
    let mut s = loaded.session(&sp).unwrap();
    let w = workload::pp_tg(16, 8).at_depth(8);
    let m = workload::run_once(&w, s.as_mut(), loaded.info().n_vocab, 1).unwrap();
    assert_eq!(m.token_ns.len(), 8);
    assert!(m.prefill_ns > 0 && m.ttft_ns.unwrap() >= m.prefill_ns);
    assert_eq!(m.ns, m.ttft_ns.unwrap() + m.decode_ns);
    assert_eq!(s.n_past(), 8 + 16 + 8);
    // A workload that does not fit is an error, not a crash.
    // (llama.cpp rounds n_ctx up to a multiple of 256.)
    let too_big = workload::tg(s.n_ctx() + 1);
    let err = workload::run_once(&too_big, s.as_mut(), loaded.info().n_vocab, 1).unwrap_err();
    assert!(err.to_string().contains("context full"), "{err}");
}

#[test]
fn bad_parameters_and_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path());
    let loaded = LlamaCpp.load(&model, &ModelParams::default()).unwrap();
    let sp = SessionParams {
        type_k: "q9_9".into(),
        ..SessionParams::default()
    };
    let err = loaded.session(&sp).err().unwrap().to_string();
    assert!(err.contains("q9_9"), "{err}");

    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "hello").unwrap();
    let spec = ModelSpec {
        path: text,
        ..model.clone()
    };
    let err = LlamaCpp
        .load(&spec, &ModelParams::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("notes.gguf") && err.contains("GGUF magic"),
        "{err}"
    );

    let bytes = std::fs::read(&model.path).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let spec = ModelSpec { path: cut, ..model };
    let err = LlamaCpp
        .load(&spec, &ModelParams::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("cut.gguf") && err.contains("truncated"),
        "{err}"
    );
}

/// The kit on the real default model, from the cache (`cargo xtask test` fetches it; its
/// absence fails the test, naming it).
#[test]
fn conformance_kit_passes_on_gemma_3_270m_q4_k_m() {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(model) = melt_testkit::cached_model(here, "gemma-3-270m-q4_k_m") else {
        return;
    };
    // Its KV cache as llama.cpp lays it out: 18 layers, every sixth global and the rest on a
    // 512-position window, one KV head of 256.
    let kv = LlamaCpp
        .load(&model, &ModelParams::default())
        .unwrap()
        .info()
        .kv
        .unwrap();
    assert_eq!(
        (
            kv.n_layer,
            kv.swa_layers,
            kv.window,
            kv.kv_heads,
            kv.k_dim,
            kv.v_dim
        ),
        (18, 15, 512, 1, 256, 256)
    );
    let dir = tempfile::tempdir().unwrap();
    // Q4_K weights: batched and single-token matmuls take different kernels, so logits agree
    // to a few % of their range (2.2% measured for 24 against 23 + 1 tokens, 5.6% for a
    // row of a 24-token batch against a 7-token prefill, which the kit allows twice the
    // tolerance) rather than to float precision. The clear() check fails if a different
    // context also fell within this tolerance, so it still discriminates.
    let checks = conformance::run(&LlamaCpp, &model, &two_threads(), 5e-2, dir.path());
    conformance::assert_conforms(&checks);
}

/// The version is read from many threads at once — each bench case asks for it — and is the
/// same string every time (llama.cpp's system-info getter rewrites one static buffer per call,
/// which corrupted the heap when two runs asked at once).
#[test]
fn the_version_is_one_string_from_many_threads_at_once() {
    let first = LlamaCpp.version();
    let threads: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(|| (0..500).map(|_| LlamaCpp.version()).collect::<Vec<_>>()))
        .collect();
    for t in threads {
        for v in t.join().unwrap() {
            assert_eq!(v, first);
        }
    }
}
