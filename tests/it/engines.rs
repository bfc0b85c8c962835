//! Engines side by side end to end: GGUF on llama.cpp, its ONNX and TorchScript exports, in one report.

use crate::common::*;

/// The ONNX Runtime backend beside llama.cpp in one run: each model goes to the backend that
/// accepts its format, and the report has both (issue 6's "Done when", on generated models).
#[test]
fn onnx_and_gguf_models_run_side_by_side_in_one_report() {
    use melt_testkit::onnx::TinyOnnxLm;
    let dir = tempfile::tempdir().unwrap();
    let gguf = tiny_model(dir.path());
    let onnx = TinyOnnxLm::default()
        .write(&dir.path().join("tiny-onnx"))
        .unwrap();
    let onnx_arg = onnx.display().to_string();
    let out = run(
        &gguf,
        dir.path(),
        &["--model", &onnx_arg, "--sample-size", "3", "t=2$"],
    );
    assert!(!out.failed(), "{:?}", out.summary.errors);
    assert_eq!(backends_of(&out), ["llama.cpp", "onnxruntime"]);
    assert_eq!(out.summary.cases.len(), 2 * 4, "{}", out.table);
    for c in &out.summary.cases {
        let expected = if c.backend == "onnxruntime" {
            "tiny-onnx"
        } else {
            "tiny-llama"
        };
        assert!(
            c.id.starts_with(expected) || c.model.path.to_string_lossy().contains(expected),
            "{}",
            c.id
        );
        assert!(c.metrics["tokens_per_second"].estimate > 0.0, "{}", c.id);
    }
    assert!(
        out.table.contains("onnxruntime") && out.table.contains("llama.cpp"),
        "{}",
        out.table
    );
    println!("{}", out.table);
}

/// With the `libtorch` feature, a traced TorchScript model runs beside the GGUF and the ONNX
/// model in the same report (issue 7's "Done when", on generated models).
#[cfg(feature = "libtorch")]
#[test]
fn torchscript_runs_beside_gguf_and_onnx_in_one_report() {
    use melt_testkit::onnx::TinyOnnxLm;
    let dir = tempfile::tempdir().unwrap();
    let gguf = tiny_model(dir.path());
    let ts = melt::backends::gguf_to_torchscript::export(&gguf, &dir.path().join("tiny-ts"))
        .unwrap()
        .model;
    let onnx = TinyOnnxLm::default()
        .write(&dir.path().join("tiny-onnx"))
        .unwrap();
    let (ts_arg, onnx_arg) = (ts.display().to_string(), onnx.display().to_string());
    let out = run(
        &gguf,
        dir.path(),
        &[
            "--model",
            &onnx_arg,
            "--model",
            &ts_arg,
            "--sample-size",
            "3",
            "t=2$",
        ],
    );
    assert!(!out.failed(), "{:?}", out.summary.errors);
    assert_eq!(backends_of(&out), ["libtorch", "llama.cpp", "onnxruntime"]);
    assert_eq!(out.summary.cases.len(), 3 * 4, "{}", out.table);
    for c in out.summary.cases.iter().filter(|c| c.backend == "libtorch") {
        assert!(c.model_info.description.contains("torchscript"), "{}", c.id);
        assert!(c.metrics["tokens_per_second"].estimate > 0.0, "{}", c.id);
        assert!(c.metrics.contains_key("decode_kv_bytes_per_token") || c.workload.decode == 0);
    }
}
