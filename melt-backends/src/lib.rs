//! melt-backends: the inference engines melt measures, one module per engine, each behind a
//! cargo feature so a build carries only what it needs.
//!
//! | feature | engine | module |
//! | --- | --- | --- |
//! | `llama-cpp` (default) | llama.cpp through `llama-cpp-2` | [`llama_cpp`] |
//! | `onnxruntime` | ONNX Runtime through `ort` (runtime library loaded at run time) | [`onnxruntime`] |
//! | `libtorch` | libtorch through `tch` (links libtorch 2.13.0: `cargo melt setup libtorch`) | [`libtorch`] |
//!
//! [`gguf_to_onnx`] (with `llama-cpp`) writes a GGUF model as an ONNX decoder, and
//! [`gguf_to_torchscript`] (with `llama-cpp` and `libtorch`) as a TorchScript one, so the same
//! weights run on every engine.
//!
//! Without its feature an engine's module still exists and its constructor still works; loading
//! a model then fails with an error saying which feature to enable (ripgrep's pattern for PCRE2).

use melt_core::Backend;

#[cfg_attr(feature = "llama-cpp", path = "llama_cpp/mod.rs")]
#[cfg_attr(not(feature = "llama-cpp"), path = "llama_cpp/disabled.rs")]
pub mod llama_cpp;

#[cfg_attr(feature = "onnxruntime", path = "onnxruntime/mod.rs")]
#[cfg_attr(not(feature = "onnxruntime"), path = "onnxruntime/disabled.rs")]
pub mod onnxruntime;

#[cfg_attr(feature = "libtorch", path = "libtorch/mod.rs")]
#[cfg_attr(not(feature = "libtorch"), path = "libtorch/disabled.rs")]
pub mod libtorch;

/// GGUF → ONNX export (ggml dequantizes; needs the llama.cpp build).
#[cfg(feature = "llama-cpp")]
pub mod gguf_to_onnx;

/// GGUF → TorchScript export (ggml dequantizes, tch traces).
#[cfg(all(feature = "llama-cpp", feature = "libtorch"))]
pub mod gguf_to_torchscript;

/// `tokenizer.json` handling shared by the ONNX Runtime and libtorch backends.
#[cfg(any(feature = "onnxruntime", feature = "libtorch"))]
mod hf_tokenizer;

pub use libtorch::LibTorch;
pub use llama_cpp::LlamaCpp;
pub use onnxruntime::OnnxRuntime;

/// Every backend compiled into this build, for suites that run "all enabled backends".
#[allow(clippy::vec_init_then_push)]
pub fn enabled() -> Vec<Box<dyn Backend>> {
    // One cfg-gated push per engine: `vec![]` cannot hold the cfgs.
    #[allow(unused_mut)]
    let mut v: Vec<Box<dyn Backend>> = Vec::new();
    #[cfg(feature = "llama-cpp")]
    v.push(Box::new(LlamaCpp::new()));
    #[cfg(feature = "onnxruntime")]
    v.push(Box::new(OnnxRuntime::new()));
    #[cfg(feature = "libtorch")]
    v.push(Box::new(LibTorch::new()));
    v
}
