//! `melt-convert quantize MODEL.gguf OUT.gguf TYPE`: llama.cpp's quantizer (`Q8_0`, `Q4_K_M`,
//! `F16`...), what `cargo melt models quantize` runs.
//!
//! `melt-convert gguf-to-onnx|gguf-to-torchscript MODEL.gguf OUT_DIR [--quant f32|int4]
//! [--layout plain|genai]`: writes the same weights for another engine — `OUT_DIR/model.onnx`
//! (`melt::backends::gguf_to_onnx`, f32 or ONNX Runtime's 4-bit blocks, in plain operators or
//! onnxruntime-genai's `GroupQueryAttention` convention) or
//! `OUT_DIR/model.pt` and `config.json` (`melt::backends::gguf_to_torchscript`, built with the
//! `libtorch` feature), each with a `tokenizer.json`. `cargo melt models fetch` runs it for
//! registry entries with `source = { export = ... }`; it is also there for any local GGUF.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: melt-convert gguf-to-onnx MODEL.gguf OUT_DIR [--quant f32|int4] [--layout plain|genai]\n       melt-convert gguf-to-torchscript MODEL.gguf OUT_DIR\n       melt-convert quantize MODEL.gguf OUT.gguf TYPE";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let [cmd, model, out, to] = args.as_slice() {
        if cmd == "quantize" {
            return quantize(model, out, to);
        }
    }
    use melt::backends::gguf_to_onnx::{Layout, Quant};
    let quant: Quant = match take_flag(&mut args, "--quant") {
        Ok(q) => q.unwrap_or_default(),
        Err(e) => return usage_error(&e),
    };
    let layout: Layout = match take_flag(&mut args, "--layout") {
        Ok(l) => l.unwrap_or_default(),
        Err(e) => return usage_error(&e),
    };
    let [cmd, model, out] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let (model, out) = (PathBuf::from(model), PathBuf::from(out));
    let started = std::time::Instant::now();
    let done: Result<(u64, PathBuf), String> = match cmd.as_str() {
        "gguf-to-onnx" => melt::backends::gguf_to_onnx::export_as(&model, &out, quant, layout)
            .map(|d| (d.n_params, d.model))
            .map_err(|e| e.to_string()),
        "gguf-to-torchscript" => torchscript(&model, &out),
        other => {
            eprintln!("melt-convert: unknown conversion `{other}`\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match done {
        Ok((n_params, written)) => {
            eprintln!(
                "melt-convert: {} ({:.1} M weights, {}, {} layout) → {} in {:.1} s",
                model.display(),
                n_params as f64 / 1e6,
                quant.label(),
                layout.label(),
                written.display(),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("melt-convert: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Removes `flag VALUE` from `args` and parses VALUE (`None` when the flag is absent).
fn take_flag<T: std::str::FromStr<Err = String>>(
    args: &mut Vec<String>,
    flag: &str,
) -> Result<Option<T>, String> {
    let Some(at) = args.iter().position(|a| a == flag) else {
        return Ok(None);
    };
    let value = args.get(at + 1).cloned();
    args.drain(at..(at + 2).min(args.len()));
    match value {
        Some(v) => v.parse().map(Some).map_err(|e| format!("{flag}: {e}")),
        None => Err(format!("{flag} needs a value")),
    }
}

fn usage_error(e: &str) -> ExitCode {
    eprintln!("melt-convert: {e}\n{USAGE}");
    ExitCode::from(2)
}

#[cfg(feature = "libtorch")]
fn torchscript(model: &std::path::Path, out: &std::path::Path) -> Result<(u64, PathBuf), String> {
    melt::backends::gguf_to_torchscript::export(model, out)
        .map(|d| (d.n_params, d.model))
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "libtorch"))]
fn torchscript(_: &std::path::Path, _: &std::path::Path) -> Result<(u64, PathBuf), String> {
    Err("this melt-convert was built without the `libtorch` feature (cargo melt setup libtorch, then build with --features libtorch)".into())
}

fn quantize(model: &str, out: &str, to: &str) -> ExitCode {
    let started = std::time::Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    match melt::backends::llama_cpp::quantize(model.as_ref(), out.as_ref(), to, threads) {
        Ok(()) => {
            let size = std::fs::metadata(out).map_or(0, |m| m.len());
            eprintln!(
                "melt-convert: {model} → {out} ({to}, {:.1} MB) in {:.1} s",
                size as f64 / 1e6,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("melt-convert: {e}");
            ExitCode::FAILURE
        }
    }
}
