//! The GGUF reader (melt-formats) on what the tiny-model writer makes: every key and tensor
//! reads back as written, and a cut file is a named error.

use melt_formats::gguf::{Gguf, GgufError};

use crate::TinyLlama;

#[test]
fn reads_what_the_testkit_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let tiny = TinyLlama::default();
    tiny.write(&path).unwrap();
    let g = Gguf::open(&path).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.architecture(), Some("llama"));
    assert_eq!(g.u64("llama.embedding_length").unwrap(), 64);
    assert_eq!(g.f64("llama.rope.freq_base").unwrap(), 10_000.0);
    let tokens = g.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap();
    assert_eq!(tokens[1].as_str(), Some("<s>"));
    let (_, tensors) = tiny.build();
    assert_eq!(g.tensors.len(), tensors.len());
    // Every tensor's data is where the directory says: compare with what was written.
    for (info, t) in g.tensors.iter().zip(&tensors) {
        assert_eq!(info.name, t.name);
        assert_eq!(info.dims, t.dims);
        assert_eq!(info.ggml_type, 0);
        let bytes = g.read_tensor_bytes(info, t.data.len() * 4).unwrap();
        let back: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(back, t.data, "{}", t.name);
    }
    assert!(matches!(
        g.u64("llama.nope"),
        Err(GgufError::Key {
            reason: "missing",
            ..
        })
    ));
    assert!(g.u64("general.name").is_err());
}

#[test]
fn bad_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.gguf");
    std::fs::write(&text, "hello, not a model").unwrap();
    let err = Gguf::open(&text).unwrap_err().to_string();
    assert!(err.contains("not a GGUF file"), "{err}");

    let full = dir.path().join("full.gguf");
    TinyLlama::default().write(&full).unwrap();
    let bytes = std::fs::read(&full).unwrap();
    for keep in [10, 200, bytes.len() / 2] {
        let cut = dir.path().join(format!("cut{keep}.gguf"));
        std::fs::write(&cut, &bytes[..keep]).unwrap();
        let result = Gguf::open(&cut).and_then(|g| {
            // The directory may survive the cut; the data does not.
            let last = g.tensors.last().unwrap().clone();
            let n = last.n_elements() as usize * 4;
            g.read_tensor_bytes(&last, n)
        });
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains("truncated") || err.contains("cut short"),
            "{keep}: {err}"
        );
    }
}
