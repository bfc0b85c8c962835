//! `melt-convert quantize MODEL.gguf OUT.gguf TYPE`: llama.cpp's quantizer (`Q8_0`, `Q4_K_M`,
//! `F16`...), what `cargo melt models quantize` runs.
//!
//! `melt-convert gguf-to-onnx MODEL.gguf OUT_DIR [--quant f32|int4] [--layout plain|genai]`
//! and `melt-convert gguf-to-torchscript MODEL.gguf OUT_DIR [--quant f32|bf16|int8]`: write
//! the same weights for another engine — `OUT_DIR/model.onnx` (`melt::backends::gguf_to_onnx`,
//! f32 or ONNX Runtime's 4-bit blocks, in plain operators or onnxruntime-genai's
//! `GroupQueryAttention` convention) or `OUT_DIR/model.pt` and `config.json`
//! (`melt::backends::gguf_to_torchscript`, f32, bf16 or int8 weight-only, built with the
//! `libtorch` feature), each with a `tokenizer.json`. `cargo melt models fetch` runs it for
//! registry entries with `source = { export = ... }`; it is also there for any local GGUF.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: melt-convert gguf-to-onnx MODEL.gguf OUT_DIR [--quant f32|int4] [--layout plain|genai]\n       melt-convert gguf-to-torchscript MODEL.gguf OUT_DIR [--quant f32|bf16|int8]\n       melt-convert quantize MODEL.gguf OUT.gguf TYPE";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let [cmd, model, out, to] = args.as_slice() {
        if cmd == "quantize" {
            return quantize(model, out, to);
        }
    }
    use melt::backends::gguf_to_onnx::{Layout, Quant};
    // Each conversion reads `--quant` in its own terms.
    let quant = match take_flag(&mut args, "--quant") {
        Ok(q) => q,
        Err(e) => return usage_error(&e),
    };
    let layout: Option<Layout> =
        match take_flag(&mut args, "--layout").and_then(|l| parsed("--layout", l)) {
            Ok(l) => l,
            Err(e) => return usage_error(&e),
        };
    let [cmd, model, out] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let (model, out) = (PathBuf::from(model), PathBuf::from(out));
    let started = std::time::Instant::now();
    let done: Result<(u64, PathBuf, String), String> = match cmd.as_str() {
        "gguf-to-onnx" => {
            let quant: Quant = match parsed("--quant", quant) {
                Ok(q) => q.unwrap_or_default(),
                Err(e) => return usage_error(&e),
            };
            let layout = layout.unwrap_or_default();
            melt::backends::gguf_to_onnx::export_as(&model, &out, quant, layout)
                .map(|d| {
                    let what = format!("{}, {} layout", quant.label(), layout.label());
                    (d.n_params, d.model, what)
                })
                .map_err(|e| e.to_string())
        }
        "gguf-to-torchscript" => {
            if layout.is_some() {
                return usage_error("--layout is for gguf-to-onnx");
            }
            torchscript(&model, &out, quant)
        }
        other => {
            eprintln!("melt-convert: unknown conversion `{other}`\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match done {
        Ok((n_params, written, what)) => {
            eprintln!(
                "melt-convert: {} ({:.1} M weights, {what}) → {} in {:.1} s",
                model.display(),
                n_params as f64 / 1e6,
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

/// Removes `flag VALUE` from `args` and returns VALUE (`None` when the flag is absent).
fn take_flag(args: &mut Vec<String>, flag: &str) -> Result<Option<String>, String> {
    let Some(at) = args.iter().position(|a| a == flag) else {
        return Ok(None);
    };
    let value = args.get(at + 1).cloned();
    args.drain(at..(at + 2).min(args.len()));
    value
        .map(Some)
        .ok_or_else(|| format!("{flag} needs a value"))
}

/// A flag's value parsed (`None` stays `None`); the error names the flag.
fn parsed<T: std::str::FromStr<Err = String>>(
    flag: &str,
    value: Option<String>,
) -> Result<Option<T>, String> {
    value
        .map(|v| v.parse().map_err(|e| format!("{flag}: {e}")))
        .transpose()
}

fn usage_error(e: &str) -> ExitCode {
    eprintln!("melt-convert: {e}\n{USAGE}");
    ExitCode::from(2)
}

#[cfg(feature = "libtorch")]
fn torchscript(
    model: &std::path::Path,
    out: &std::path::Path,
    quant: Option<String>,
) -> Result<(u64, PathBuf, String), String> {
    use melt::backends::gguf_to_torchscript::{export_as, Precision};
    let precision: Precision = parsed("--quant", quant)?.unwrap_or_default();
    export_as(model, out, precision)
        .map(|d| (d.n_params, d.model, precision.label().to_string()))
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "libtorch"))]
fn torchscript(
    _: &std::path::Path,
    _: &std::path::Path,
    _: Option<String>,
) -> Result<(u64, PathBuf, String), String> {
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
