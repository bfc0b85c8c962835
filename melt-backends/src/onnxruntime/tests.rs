//! The ONNX Runtime backend on tiny random-weight decoders written by the tests themselves,
//! run by the real ONNX Runtime library (`cargo melt setup onnxruntime`, or ORT_DYLIB_PATH).

use super::*;
use melt_bench::{workload, Params};
use melt_testkit::conformance;
use melt_testkit::onnx::TinyOnnxLm;

fn write(dir: &Path, lm: &TinyOnnxLm) -> ModelSpec {
    let path = lm.write(dir).unwrap();
    ModelSpec::from_path(&path).unwrap()
}

fn two_threads() -> Params {
    melt_testkit::with_threads(2)
}

fn load_error(model: &ModelSpec) -> String {
    match OnnxRuntime.load(model, &ModelParams::default()) {
        Ok(_) => panic!("{} loaded", model.path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn conformance_kit_passes_with_an_f32_kv_cache() {
    let dir = tempfile::tempdir().unwrap();
    let model = write(dir.path(), &TinyOnnxLm::default());
    let checks = conformance::run(&OnnxRuntime, &model, &two_threads(), 1e-4, dir.path());
    assert_eq!(checks.len(), 8);
    conformance::assert_conforms(&checks);
}

#[test]
fn conformance_kit_passes_with_an_f16_kv_cache() {
    let dir = tempfile::tempdir().unwrap();
    let lm = TinyOnnxLm {
        kv_fp16: true,
        ..TinyOnnxLm::default()
    };
    let model = write(dir.path(), &lm);
    // Rounding the cache to f16 between steps differs from one batched pass by ~1e-3.
    let checks = conformance::run(&OnnxRuntime, &model, &two_threads(), 1e-2, dir.path());
    conformance::assert_conforms(&checks);
    let info = OnnxRuntime
        .load(&model, &ModelParams::default())
        .unwrap()
        .info();
    assert!(info.description.ends_with("KV f16"), "{info:?}");
}

#[test]
fn the_graph_is_read_and_the_version_is_the_wheels() {
    let dir = tempfile::tempdir().unwrap();
    let lm = TinyOnnxLm::default();
    let model = write(dir.path(), &lm);
    let loaded = OnnxRuntime.load(&model, &ModelParams::default()).unwrap();
    let info = loaded.info();
    let (_, n_vocab) = melt_testkit::onnx::tiny_tokenizer_json();
    assert_eq!(info.n_vocab, n_vocab);
    assert_eq!(
        info.description,
        "melt-tiny-decoder onnx decoder 2L 4x16 KV f32"
    );
    // Weights counted from the file: embeddings, 4 attention and 2 MLP matrices per layer,
    // the output matrix.
    let (e, ff) = (lm.n_embd as u64, lm.n_ff as u64);
    let v = info.n_vocab as u64;
    let weights = v * e + lm.n_layer as u64 * (4 * e * e + 2 * e * ff) + e * v;
    assert!(
        (weights..weights + 64).contains(&info.n_params),
        "{} vs {weights}",
        info.n_params
    );
    assert_eq!(info.quantization, "F32");
    assert_eq!(OnnxRuntime.version(), ORT_VERSION);
    // <s> comes from the tokenizer's post-processor.
    let s = loaded.session(&two_threads().session).unwrap();
    assert_eq!(s.bos(), Some(n_vocab as Token - 2));
    assert_eq!(s.tokenize("the", true).unwrap()[0], n_vocab as Token - 2);
}

#[test]
fn workloads_run_with_swept_session_options() {
    let dir = tempfile::tempdir().unwrap();
    let model = write(dir.path(), &TinyOnnxLm::default());
    let loaded = OnnxRuntime.load(&model, &ModelParams::default()).unwrap();
    let w = workload::pp_tg(16, 8).at_depth(8);
    let mut reference = None;
    for options in [
        "",
        "graph_opt=disable,arena=off,mem_pattern=off",
        "graph_opt=basic,inter_threads=2",
        "ep=cpu",
    ] {
        let mut sp = two_threads().session;
        sp.n_ctx = Some(64);
        sp.options = melt_bench::params::parse_options(options);
        let mut s = loaded.session(&sp).unwrap();
        let m = workload::run_once(&w, s.as_mut(), loaded.info().n_vocab, 1).unwrap();
        assert_eq!(m.token_ns.len(), 8, "{options}");
        assert_eq!(s.n_past(), 8 + 16 + 8, "{options}");
        // Every option set computes the same model: the same greedy continuation.
        let logits = s.logits().unwrap().to_vec();
        match &reference {
            None => reference = Some(logits),
            Some(r) => assert!(
                conformance::relative_max_diff(r, &logits) < 1e-3,
                "{options}"
            ),
        }
    }
}

#[test]
fn bad_options_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = write(dir.path(), &TinyOnnxLm::default());
    let loaded = OnnxRuntime.load(&model, &ModelParams::default()).unwrap();
    let err = |options: &str| {
        let mut sp = two_threads().session;
        sp.options = melt_bench::params::parse_options(options);
        match loaded.session(&sp) {
            Ok(_) => panic!("{options} accepted"),
            Err(e) => e.to_string(),
        }
    };
    assert!(err("graph_opt=fast").contains("graph_opt=fast"));
    assert!(err("intra=2").contains("the option `intra`"));
    assert!(err("arena=maybe").contains("arena=maybe"));
    assert!(err("ep=tpu").contains("ep=tpu"));
    // The PyPI wheel is a CPU build: XNNPACK is named as missing, not silently skipped.
    let e = err("ep=xnnpack");
    assert!(
        e.contains("XnnpackExecutionProvider") && e.contains("built without"),
        "{e}"
    );
    let mut sp = two_threads().session;
    sp.threads_batch = Some(1);
    assert!(loaded
        .session(&sp)
        .err()
        .unwrap()
        .to_string()
        .contains("threads_batch"));
}

#[test]
fn graphs_outside_the_convention_are_named() {
    let dir = tempfile::tempdir().unwrap();
    // An export without the KV cache loads in ONNX Runtime; melt refuses it by name.
    let no_cache = TinyOnnxLm {
        with_past: false,
        ..TinyOnnxLm::default()
    };
    let e = load_error(&write(&dir.path().join("no-cache"), &no_cache));
    assert!(e.contains("no input `past_key_values.0.key`"), "{e}");
    assert!(e.contains("model.onnx"), "names the file: {e}");
    // A graph that uses an input it does not declare is rejected by ONNX Runtime itself,
    // whose message (passed on) names the input.
    for input in ["input_ids", "past_key_values.1.value"] {
        let lm = TinyOnnxLm {
            drop_input: Some(input.into()),
            ..TinyOnnxLm::default()
        };
        let e = load_error(&write(&dir.path().join(input), &lm));
        assert!(
            e.contains(input) && e.contains("model.onnx"),
            "{input}: {e}"
        );
    }
}

#[test]
fn a_missing_tokenizer_and_a_missing_library_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = write(dir.path(), &TinyOnnxLm::default());
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let e = load_error(&model);
    assert!(e.contains("tokenizer.json"), "{e}");
    // Where the library is looked for is part of the error when it is nowhere.
    let candidates = library_candidates();
    assert!(candidates
        .last()
        .unwrap()
        .to_string_lossy()
        .contains(&format!("onnxruntime-{ORT_VERSION}")));
}
