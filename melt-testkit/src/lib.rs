//! melt-testkit: what melt's tests and a backend author's need, as a dev-dependency — the
//! [`conformance`] kit every engine must pass, and test support that needs no download: a writer of tiny, valid GGUF v3 llama models with
//! random F32 weights and a small SentencePiece-style vocabulary, which real llama.cpp loads
//! and runs; and [`NoBackend`], a backend that accepts nothing (for examples).
//!
//! The GGUF layout (ggml's `docs/gguf.md`): magic `GGUF`, version 3, tensor count and
//! key/value count (u64), the key/values, the tensor infos (name, dims, type, offset), padding
//! to the alignment (32), then the tensor data, each tensor aligned.

pub mod conformance;
pub mod drifting;
#[cfg(test)]
mod gguf_reads_back;
pub mod needs;
pub mod onnx;
pub mod postgres;
pub mod sshd;
pub mod summaries;
pub mod synthetic;

use std::io::{self, Write};
use std::path::Path;

use melt_bench::backend::{Backend, BackendError, LoadedModel};
use melt_bench::model::{ModelFormat, ModelSpec};
use melt_bench::params::ModelParams;
use melt_bench::stats::Rng;

/// A value in GGUF metadata.
#[derive(Debug, Clone)]
pub enum GgufValue {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    F32Array(Vec<f32>),
    I32Array(Vec<i32>),
}

/// An F32 tensor: ggml dimension order (`dims[0]` is the fastest-varying).
#[derive(Debug, Clone)]
pub struct GgufTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub data: Vec<f32>,
}

const ALIGNMENT: usize = 32;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    // Type ids: u32 4, i32 5, f32 6, bool 7, string 8, array 9.
    let (ty, body): (u32, Vec<u8>) = match v {
        GgufValue::U32(x) => (4, x.to_le_bytes().to_vec()),
        GgufValue::I32(x) => (5, x.to_le_bytes().to_vec()),
        GgufValue::F32(x) => (6, x.to_le_bytes().to_vec()),
        GgufValue::Bool(x) => (7, vec![u8::from(*x)]),
        GgufValue::Str(s) => {
            let mut b = Vec::new();
            put_str(&mut b, s);
            (8, b)
        }
        GgufValue::StrArray(xs) => {
            let mut b = 8u32.to_le_bytes().to_vec();
            b.extend_from_slice(&(xs.len() as u64).to_le_bytes());
            for s in xs {
                put_str(&mut b, s);
            }
            (9, b)
        }
        GgufValue::F32Array(xs) => {
            let mut b = 6u32.to_le_bytes().to_vec();
            b.extend_from_slice(&(xs.len() as u64).to_le_bytes());
            xs.iter()
                .for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
            (9, b)
        }
        GgufValue::I32Array(xs) => {
            let mut b = 5u32.to_le_bytes().to_vec();
            b.extend_from_slice(&(xs.len() as u64).to_le_bytes());
            xs.iter()
                .for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
            (9, b)
        }
    };
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&body);
}

fn pad(out: &mut Vec<u8>) {
    while out.len() % ALIGNMENT != 0 {
        out.push(0);
    }
}

/// Serialises a GGUF v3 file.
pub fn write_gguf(
    w: &mut impl Write,
    metadata: &[(String, GgufValue)],
    tensors: &[GgufTensor],
) -> io::Result<()> {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut out, k);
        put_value(&mut out, v);
    }
    let mut offset = 0usize;
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        t.dims
            .iter()
            .for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
        out.extend_from_slice(&0u32.to_le_bytes()); // GGML_TYPE_F32
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        offset += (t.data.len() * 4).div_ceil(ALIGNMENT) * ALIGNMENT;
    }
    pad(&mut out);
    for t in tensors {
        t.data
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        pad(&mut out);
    }
    w.write_all(&out)
}

/// Shape of a tiny llama model.
#[derive(Debug, Clone)]
pub struct TinyLlama {
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    pub n_ctx_train: usize,
    pub seed: u64,
    /// Written as `tokenizer.chat_template` when set.
    pub chat_template: Option<String>,
}

impl Default for TinyLlama {
    fn default() -> Self {
        TinyLlama {
            n_embd: 64,
            n_layer: 2,
            n_head: 4,
            n_head_kv: 2,
            n_ff: 128,
            n_ctx_train: 1024,
            seed: 1,
            chat_template: None,
        }
    }
}

/// Default parameters with `n` threads: what the backends' tests run at.
pub fn with_threads(n: usize) -> melt_bench::Params {
    melt_bench::Params {
        session: melt_bench::SessionParams {
            threads: n,
            ..melt_bench::SessionParams::default()
        },
        ..melt_bench::Params::default()
    }
}

/// Vocabulary: `<unk>`, `<s>`, `</s>`, the 256 byte tokens, then `▁` and common pieces, so
/// any text tokenizes (byte fallback) and round-trips.
pub fn tiny_vocab() -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3]; // unknown, control, control
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6); // byte
    }
    let pieces = [
        "\u{2581}",
        "e",
        "t",
        "a",
        "o",
        "i",
        "n",
        "s",
        "h",
        "r",
        "l",
        "d",
        "\u{2581}t",
        "\u{2581}a",
        "\u{2581}the",
        "he",
        "in",
        "er",
        "an",
        "\u{2581}w",
        "or",
        "ll",
        "\u{2581}s",
        "\u{2581}o",
        "\u{2581}h",
        "H",
        "W",
        "\u{2581}W",
        "lo",
        "llo",
        "ello",
        // Every character of a piece is a piece itself, as SentencePiece guarantees (the ONNX
        // exporter's BPE merges need it).
        "w",
    ];
    for p in pieces {
        tokens.push(p.to_string());
        types.push(1); // normal
    }
    let n = tokens.len();
    // Longer pieces score higher so the SentencePiece merge prefers them.
    let scores = (0..n)
        .map(|i| if i < 259 { 0.0 } else { -((n - i) as f32) })
        .collect();
    (tokens, scores, types)
}

impl TinyLlama {
    /// The model as GGUF metadata and tensors.
    pub fn build(&self) -> (Vec<(String, GgufValue)>, Vec<GgufTensor>) {
        let (tokens, scores, types) = tiny_vocab();
        let n_vocab = tokens.len();
        let head_dim = self.n_embd / self.n_head;
        let kv_dim = head_dim * self.n_head_kv;
        let kv = |k: &str, v: GgufValue| (k.to_string(), v);
        let metadata = vec![
            kv("general.architecture", GgufValue::Str("llama".into())),
            kv("general.name", GgufValue::Str("melt tiny llama".into())),
            kv("general.file_type", GgufValue::U32(0)),
            kv(
                "llama.context_length",
                GgufValue::U32(self.n_ctx_train as u32),
            ),
            kv("llama.embedding_length", GgufValue::U32(self.n_embd as u32)),
            kv("llama.block_count", GgufValue::U32(self.n_layer as u32)),
            kv(
                "llama.feed_forward_length",
                GgufValue::U32(self.n_ff as u32),
            ),
            kv(
                "llama.attention.head_count",
                GgufValue::U32(self.n_head as u32),
            ),
            kv(
                "llama.attention.head_count_kv",
                GgufValue::U32(self.n_head_kv as u32),
            ),
            kv(
                "llama.attention.layer_norm_rms_epsilon",
                GgufValue::F32(1e-5),
            ),
            kv(
                "llama.rope.dimension_count",
                GgufValue::U32(head_dim as u32),
            ),
            kv("llama.rope.freq_base", GgufValue::F32(10_000.0)),
            kv("llama.vocab_size", GgufValue::U32(n_vocab as u32)),
            kv("tokenizer.ggml.model", GgufValue::Str("llama".into())),
            kv("tokenizer.ggml.tokens", GgufValue::StrArray(tokens)),
            kv("tokenizer.ggml.scores", GgufValue::F32Array(scores)),
            kv("tokenizer.ggml.token_type", GgufValue::I32Array(types)),
            kv("tokenizer.ggml.unknown_token_id", GgufValue::U32(0)),
            kv("tokenizer.ggml.bos_token_id", GgufValue::U32(1)),
            kv("tokenizer.ggml.eos_token_id", GgufValue::U32(2)),
            kv("tokenizer.ggml.add_bos_token", GgufValue::Bool(true)),
            kv("tokenizer.ggml.add_eos_token", GgufValue::Bool(false)),
        ];
        let mut metadata = metadata;
        if let Some(t) = &self.chat_template {
            metadata.push(kv("tokenizer.chat_template", GgufValue::Str(t.clone())));
        }
        let mut rng = Rng::new(self.seed);
        let mut random = |name: &str, dims: &[usize], scale: f32| GgufTensor {
            name: name.to_string(),
            dims: dims.iter().map(|&d| d as u64).collect(),
            data: (0..dims.iter().product::<usize>())
                .map(|_| (rng.unit() as f32 * 2.0 - 1.0) * scale)
                .collect(),
        };
        let ones = |name: &str, n: usize| GgufTensor {
            name: name.to_string(),
            dims: vec![n as u64],
            data: vec![1.0; n],
        };
        let e = self.n_embd;
        let mut tensors = vec![
            random("token_embd.weight", &[e, n_vocab], 1.0),
            ones("output_norm.weight", e),
            random("output.weight", &[e, n_vocab], 0.5),
        ];
        let s = 1.0 / (e as f32).sqrt();
        for i in 0..self.n_layer {
            let b = |t: &str| format!("blk.{i}.{t}.weight");
            tensors.push(ones(&b("attn_norm"), e));
            tensors.push(random(&b("attn_q"), &[e, e], s));
            tensors.push(random(&b("attn_k"), &[e, kv_dim], s));
            tensors.push(random(&b("attn_v"), &[e, kv_dim], s));
            tensors.push(random(&b("attn_output"), &[e, e], s));
            tensors.push(ones(&b("ffn_norm"), e));
            tensors.push(random(&b("ffn_gate"), &[e, self.n_ff], s));
            tensors.push(random(&b("ffn_up"), &[e, self.n_ff], s));
            tensors.push(random(
                &b("ffn_down"),
                &[self.n_ff, e],
                1.0 / (self.n_ff as f32).sqrt(),
            ));
        }
        (metadata, tensors)
    }

    /// Writes the model to `path`.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let (metadata, tensors) = self.build();
        let mut file = io::BufWriter::new(std::fs::File::create(path)?);
        write_gguf(&mut file, &metadata, &tensors)?;
        file.flush()
    }
}

/// Perplexity of a short fixed text on a tiny model (chunks of 32, three of them): what the
/// backends' tests compare across engines to check every position's logits.
pub fn tiny_perplexity(
    backend: &dyn melt_bench::Backend,
    model: &ModelSpec,
    params: &melt_bench::SessionParams,
) -> f64 {
    use melt_bench::tasks::perplexity;
    let loaded = backend
        .load(model, &melt_bench::ModelParams::default())
        .unwrap();
    let mut s = loaded.session(params).unwrap();
    let text = "the hello world and the other world, a lot of words in the shell; ".repeat(8);
    let spec = perplexity::PerplexitySpec {
        data: std::path::PathBuf::from("text.txt").into(),
        n_ctx: 32,
        max_chunks: Some(3),
        save_log_probs: None,
    };
    let p = perplexity::run(s.as_mut(), &spec, &text, &mut |_, _, _| {}).unwrap();
    assert_eq!(p.tokens_scored, 3 * 15);
    p.ppl
}

/// A backend that accepts no model: lets examples and doc tests declare a suite without an
/// engine.
pub struct NoBackend;

/// A registry model from the cache, for tests that need a real one: `melt.toml` is found from
/// `start` upwards. Absent, the test fails naming it (`cargo xtask test` fetches it first) —
/// or, under `--allow-skip`, is skipped (`None`).
pub fn cached_model(start: &Path, name: &str) -> Option<ModelSpec> {
    match lookup_cached(start, name) {
        Ok(m) => Some(m),
        Err(e) => {
            needs::missing(
                &format!("model `{name}`: {e}"),
                &format!("`cargo melt models fetch {name}`"),
            );
            None
        }
    }
}

/// A registry model from the cache, or why it is not there: for a test that can make the
/// model itself when it is missing (an export of a cached GGUF).
pub fn lookup_cached(start: &Path, name: &str) -> Result<ModelSpec, String> {
    use melt_bench::model::{Cache, Registry};
    Registry::discover(start)
        .map_err(|e| e.to_string())
        .and_then(|r| {
            let entry = r.get(name).map_err(|e| e.to_string())?;
            Cache::new(Cache::default_root())
                .lookup(name, entry)
                .map_err(|e| e.to_string())
        })
}

impl Backend for NoBackend {
    fn name(&self) -> &str {
        "none"
    }
    fn version(&self) -> String {
        "0".into()
    }
    fn accepts(&self, _format: ModelFormat) -> bool {
        false
    }
    fn load(
        &self,
        model: &ModelSpec,
        _params: &ModelParams,
    ) -> Result<Box<dyn LoadedModel>, BackendError> {
        Err(BackendError::Unsupported {
            backend: "none".into(),
            what: model.path.display().to_string(),
        })
    }
}

/// A loopback port nobody listens on (now), for the servers tests start.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Printed text with its tables' padding gone (runs of spaces as one), so a test can look for
/// `| host | llama.cpp |` in a table melt aligned for a terminal.
pub fn squeezed(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last_space = false;
    for c in text.chars() {
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_header_and_alignment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        TinyLlama::default().write(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..4], b"GGUF");
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 3);
        let n_tensors = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
        assert_eq!(n_tensors, 3 + 2 * 9);
        assert_eq!(bytes.len() % ALIGNMENT, 0);
        assert_eq!(
            melt_bench::model::detect_format(&path).unwrap(),
            ModelFormat::Gguf
        );
    }

    #[test]
    fn squeezed_tables_read_as_their_cells() {
        assert_eq!(
            super::squeezed("| host        |   7.5 |\n"),
            "| host | 7.5 |\n"
        );
    }
}
