//! The shipped suite: Gemma 3 270M on every enabled backend — the Q4_K_M GGUF on llama.cpp,
//! its f32 and 4-bit ONNX exports on ONNX Runtime (the 4-bit one also in onnxruntime-genai's
//! convention) and, with the `libtorch` feature, its f32
//! TorchScript export on libtorch — one thread and all cores, the llama-bench tests pp512, tg128,
//! pp512+tg128 and tg128 at depth 512. (A model no enabled backend accepts has no cases.)
//!
//! `cargo xtask bench` fetches the model and runs this; `cargo bench --bench suite -- --help`
//! lists the options (criterion's, plus `--model PATH` to bench any local GGUF).

melt::melt_bench! {
    models: [
        "gemma-3-270m-q4_k_m",
        "gemma-3-270m-f32-onnx",
        "gemma-3-270m-int4-onnx",
        "gemma-3-270m-int4-genai-onnx",
        "gemma-3-270m-f32-torchscript",
    ],
    backends: [melt::backends::enabled()],
    sweep: { threads: [1, melt::all_cores()] },
    workloads: [pp(512), tg(128), pp_tg(512, 128), tg(128).at_depth(512)],
}
