//! `melt-convert gguf-to-onnx MODEL.gguf OUT_DIR`: writes `OUT_DIR/model.onnx` and
//! `OUT_DIR/tokenizer.json` from a llama.cpp model (`melt::backends::gguf_to_onnx`), so the same
//! weights can be benchmarked on ONNX Runtime. `cargo xtask models fetch` runs it for registry
//! entries with `source = { export = ... }`; it is also there for any local GGUF.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: melt-convert gguf-to-onnx MODEL.gguf OUT_DIR";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cmd, model, out] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if cmd != "gguf-to-onnx" {
        eprintln!("melt-convert: unknown conversion `{cmd}`\n{USAGE}");
        return ExitCode::from(2);
    }
    let started = std::time::Instant::now();
    match melt::backends::gguf_to_onnx::export(&PathBuf::from(model), &PathBuf::from(out)) {
        Ok(done) => {
            eprintln!(
                "melt-convert: {} ({}, {:.1} M weights, f32) → {} and {} in {:.1} s",
                model,
                done.architecture,
                done.n_params as f64 / 1e6,
                done.model.display(),
                done.tokenizer.display(),
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
