//! GGUF → ONNX: writes a llama.cpp model as an ONNX decoder in the Optimum /
//! onnxruntime-genai convention the ONNX Runtime backend reads (`input_ids`, `attention_mask`,
//! `past_key_values.{i}.key/value`, and in the plain layout `position_ids` and
//! `logits_to_keep`, in; `logits`, `present.{i}.key/value` out),
//! with a `tokenizer.json` built from the GGUF vocabulary — so the same weights can be measured
//! on both engines, and an ONNX model exists where no registry this project may use ships one.
//!
//! Weights are dequantized to f32 by ggml itself (`to_float` of each tensor's type), so the
//! ONNX model computes what llama.cpp computes from the same file, without llama.cpp's
//! quantized dot products: expect the same greedy tokens and logits within ~1e-2, and a model
//! 4–8× the size of a 4-bit GGUF (the f32 baseline).
//! [`Quant::Int4`](crate::gguf_to_onnx::Quant::Int4) writes the weight matrices and the
//! embedding as ONNX Runtime's 4- and 8-bit blocks instead
//! ([`nbits`](crate::gguf_to_onnx::nbits)): the like-for-like ONNX model, at the cost of
//! re-quantizing blocks to ONNX Runtime's formats.
//!
//! Architectures: `llama` (RoPE on adjacent pairs, SiLU-gated MLP) and `gemma3` (√d-scaled
//! embeddings, per-head RMS-normed Q and K, RoPE on halves with a second base on the
//! sliding-window layers, sliding-window attention, post-attention and post-MLP norms,
//! tanh-GELU-gated MLP, tied output). Anything else is refused by name. The graph is written in
//! one of two [`Layout`](crate::gguf_to_onnx::Layout)s: plain opset-17 operators, which every
//! ONNX Runtime build runs, or onnxruntime-genai's `GroupQueryAttention` convention, which is
//! how ONNX LLMs ship (see [`attention`](crate::gguf_to_onnx::attention)).

pub mod attention;
mod linear;
pub mod nbits;
pub(crate) mod tokenizer;

use attention::Attention;
pub use attention::Layout;
use linear::Linear;
pub use linear::Quant;

#[cfg(all(test, feature = "onnxruntime"))]
mod tests;

use std::path::{Path, PathBuf};

use llama_cpp_sys_2 as sys;
use melt_formats::gguf::{Gguf, GgufError, TensorInfo, Value};
use melt_formats::onnx_proto::{Attr, Dim, Graph, FLOAT};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{path}: architecture `{arch}` cannot be exported to ONNX (known: llama, gemma3)")]
    Architecture { path: PathBuf, arch: String },
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("{path}: tensor `{name}` is missing")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        path: PathBuf,
        name: String,
        found: Vec<u64>,
        expected: Vec<u64>,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Exported {
    pub model: PathBuf,
    pub tokenizer: PathBuf,
    pub architecture: String,
    /// Weights written (elements of every initializer taken from the GGUF).
    pub n_params: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Arch {
    Llama,
    Gemma3,
}

/// The hyperparameters a graph needs, read from the GGUF metadata.
#[derive(Debug, Clone)]
pub(crate) struct Hparams {
    pub(crate) arch: Arch,
    pub(crate) n_vocab: u64,
    pub(crate) n_embd: u64,
    pub(crate) n_layer: u64,
    pub(crate) n_head: u64,
    pub(crate) n_head_kv: u64,
    pub(crate) head_dim: u64,
    pub(crate) n_ff: u64,
    pub(crate) eps: f32,
    /// `context_length`: the longest position the model was trained for.
    pub(crate) n_ctx_train: Option<u64>,
    pub(crate) rope_base: f64,
    pub(crate) rope_base_swa: f64,
    /// Linear RoPE scaling of the global layers (1 = none): positions are multiplied by it.
    pub(crate) rope_freq_scale: f64,
    /// Sliding window (0 = none) and which layers use it.
    pub(crate) n_swa: u64,
    pub(crate) is_swa: Vec<bool>,
    pub(crate) attention_scale: f64,
    pub(crate) final_logit_softcapping: Option<f64>,
}

fn unsupported(g: &Gguf, reason: impl Into<String>) -> ExportError {
    ExportError::Unsupported {
        path: g.path.clone(),
        reason: reason.into(),
    }
}

impl Hparams {
    pub(crate) fn read(g: &Gguf) -> Result<Hparams, ExportError> {
        let arch_name = g.architecture().unwrap_or("(none)").to_string();
        let arch = match arch_name.as_str() {
            "llama" => Arch::Llama,
            "gemma3" => Arch::Gemma3,
            _ => {
                return Err(ExportError::Architecture {
                    path: g.path.clone(),
                    arch: arch_name,
                })
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let n_embd = g.u64(&key("embedding_length"))?;
        let n_layer = g.u64(&key("block_count"))?;
        let n_head = g.u64(&key("attention.head_count"))?;
        let n_head_kv = g
            .get(&key("attention.head_count_kv"))
            .and_then(Value::as_u64)
            .unwrap_or(n_head);
        let head_dim = g
            .get(&key("attention.key_length"))
            .and_then(Value::as_u64)
            .unwrap_or(n_embd / n_head.max(1));
        if let Some(v) = g
            .get(&key("attention.value_length"))
            .and_then(Value::as_u64)
        {
            if v != head_dim {
                return Err(unsupported(
                    g,
                    format!("key length {head_dim} ≠ value length {v}"),
                ));
            }
        }
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 || head_dim % 2 != 0 {
            return Err(unsupported(
                g,
                format!("{n_head} heads over {n_head_kv} KV heads of size {head_dim}"),
            ));
        }
        if let Some(rot) = g.get(&key("rope.dimension_count")).and_then(Value::as_u64) {
            if rot != head_dim {
                return Err(unsupported(
                    g,
                    format!("partial RoPE ({rot} of {head_dim} dimensions)"),
                ));
            }
        }
        let rope_freq_scale = match g.get(&key("rope.scaling.type")).and_then(Value::as_str) {
            None | Some("none") => 1.0,
            Some("linear") => 1.0 / g.f64(&key("rope.scaling.factor"))?,
            Some(other) => return Err(unsupported(g, format!("RoPE scaling `{other}`"))),
        };
        let n_vocab = g
            .get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .map(|t| t.len() as u64)
            .ok_or_else(|| unsupported(g, "no tokenizer.ggml.tokens vocabulary"))?;
        let mut n_swa = 0;
        let mut is_swa = vec![false; n_layer as usize];
        let mut rope_base_swa = g.f64(&key("rope.freq_base")).unwrap_or(10_000.0);
        if arch == Arch::Gemma3 {
            n_swa = g
                .get(&key("attention.sliding_window"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if n_swa > 0 {
                // llama.cpp's rule: an explicit per-layer array, else every `pattern`-th
                // layer is global (pattern 6 unless the file says otherwise).
                match g.get(&key("attention.sliding_window_pattern")) {
                    Some(Value::Array(xs)) => {
                        for (i, x) in xs.iter().enumerate().take(is_swa.len()) {
                            is_swa[i] = x.as_bool().unwrap_or(false);
                        }
                    }
                    other => {
                        let p = other.and_then(Value::as_u64).unwrap_or(6);
                        for (il, s) in is_swa.iter_mut().enumerate() {
                            *s = p == 0 || (il as u64 % p) < p - 1;
                        }
                    }
                }
                rope_base_swa = g
                    .get(&key("rope.freq_base_swa"))
                    .and_then(Value::as_f64)
                    .unwrap_or(10_000.0);
            }
        }
        let attention_scale = match arch {
            // gemma_pytorch's query_pre_attn_scalar: 1/√head_dim except for the 62-layer 27B.
            Arch::Gemma3 if n_layer == 62 => 1.0 / ((n_embd / n_head) as f64).sqrt(),
            _ => 1.0 / (head_dim as f64).sqrt(),
        };
        Ok(Hparams {
            arch,
            n_vocab,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: g.u64(&key("feed_forward_length"))?,
            eps: g.f64(&key("attention.layer_norm_rms_epsilon"))? as f32,
            n_ctx_train: g.get(&key("context_length")).and_then(Value::as_u64),
            rope_base: g.f64(&key("rope.freq_base")).unwrap_or(10_000.0),
            rope_base_swa,
            rope_freq_scale,
            n_swa,
            is_swa,
            attention_scale,
            final_logit_softcapping: g
                .get(&key("final_logit_softcapping"))
                .and_then(Value::as_f64)
                .filter(|&c| c > 0.0),
        })
    }
}

/// A tensor of the GGUF as f32 values (ggml order), dequantized by ggml.
fn dequantize(g: &Gguf, t: &TensorInfo) -> Result<Vec<f32>, ExportError> {
    let ty = t.ggml_type as sys::ggml_type;
    if ty >= sys::GGML_TYPE_COUNT {
        return Err(unsupported(
            g,
            format!("tensor {} has unknown ggml type {ty}", t.name),
        ));
    }
    let n = t.n_elements();
    let row = *t.dims.first().unwrap_or(&1);
    // SAFETY: `ty` is a valid ggml_type (checked above); these only read static tables.
    let (block, row_bytes, to_float) = unsafe {
        let traits = &*sys::ggml_get_type_traits(ty);
        (
            sys::ggml_blck_size(ty),
            sys::ggml_row_size(ty, row as i64),
            traits.to_float,
        )
    };
    if block <= 0 || row % block as u64 != 0 {
        return Err(unsupported(
            g,
            format!("tensor {} rows of {row} do not fit ggml type {ty}", t.name),
        ));
    }
    let bytes = g.read_tensor_bytes(t, row_bytes * (n / row.max(1)) as usize)?;
    if ty == sys::GGML_TYPE_F32 {
        return Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect());
    }
    let to_float = to_float.ok_or_else(|| {
        unsupported(
            g,
            format!("ggml cannot dequantize tensor {} (type {ty})", t.name),
        )
    })?;
    let mut out = vec![0f32; n as usize];
    // SAFETY: `bytes` holds exactly the `n` elements' blocks of type `ty`; `out` has room for n.
    unsafe { to_float(bytes.as_ptr().cast(), out.as_mut_ptr(), n as i64) };
    Ok(out)
}

/// Reads weights with the shapes the architecture expects.
pub(crate) struct Weights<'a> {
    pub(crate) g: &'a Gguf,
    pub(crate) n_params: u64,
}

impl Weights<'_> {
    fn info(&self, name: &str) -> Result<&TensorInfo, ExportError> {
        self.g
            .tensor(name)
            .ok_or_else(|| ExportError::MissingTensor {
                path: self.g.path.clone(),
                name: name.to_string(),
            })
    }

    /// A tensor of ggml shape `dims` (fastest first), as f32.
    pub(crate) fn get(&mut self, name: &str, dims: &[u64]) -> Result<Vec<f32>, ExportError> {
        let t = self.info(name)?.clone();
        if t.dims != dims {
            return Err(ExportError::Shape {
                path: self.g.path.clone(),
                name: name.to_string(),
                found: t.dims,
                expected: dims.to_vec(),
            });
        }
        self.n_params += t.n_elements();
        dequantize(self.g, &t)
    }

    /// A linear layer `{n_in → n_out}` (ggml shape `[n_in, n_out]`, row per output) as the
    /// `[n_in, n_out]` matrix ONNX `MatMul` takes on the right.
    pub(crate) fn linear(
        &mut self,
        name: &str,
        n_in: u64,
        n_out: u64,
    ) -> Result<Vec<f32>, ExportError> {
        let w = self.get(name, &[n_in, n_out])?;
        Ok(transpose(&w, n_out as usize, n_in as usize))
    }
}

/// `rows × cols` row-major → `cols × rows` row-major.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = w[r * cols + c];
        }
    }
    out
}

/// Reorders the output rows of a Q or K projection, per head, from llama.cpp's "normal" RoPE
/// (rotating adjacent pairs 2i, 2i+1) to the "neox" layout (rotating i, i + d/2), which is the
/// one graph this exporter writes. Q and K move together, so every q·k is unchanged.
pub(crate) fn pairs_to_halves(w: &[f32], n_in: usize, n_heads: usize, head_dim: usize) -> Vec<f32> {
    // `w` is [n_in, n_heads*head_dim] (MatMul orientation): permute columns.
    let n_out = n_heads * head_dim;
    let half = head_dim / 2;
    let mut out = vec![0f32; w.len()];
    for r in 0..n_in {
        for h in 0..n_heads {
            for j in 0..head_dim {
                let old = if j < half { 2 * j } else { 2 * (j - half) + 1 };
                out[r * n_out + h * head_dim + j] = w[r * n_out + h * head_dim + old];
            }
        }
    }
    out
}

/// RMS norm over the last axis, times `weight`.
fn rms_norm(g: &mut Graph, x: &str, weight: &str) -> String {
    let sq = g.op("Mul", &[x, x], &[]);
    let mean = g.op(
        "ReduceMean",
        &[&sq],
        &[Attr::Ints("axes", &[-1]), Attr::Int("keepdims", 1)],
    );
    let var = g.op("Add", &[&mean, "eps"], &[]);
    let rms = g.op("Sqrt", &[&var], &[]);
    let normed = g.op("Div", &[x, &rms], &[]);
    g.op("Mul", &[&normed, weight], &[])
}

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`: ggml's GELU (and Gemma's).
fn gelu_tanh(g: &mut Graph, x: &str) -> String {
    let x2 = g.op("Mul", &[x, x], &[]);
    let x3 = g.op("Mul", &[&x2, x], &[]);
    let t = g.op("Mul", &[&x3, "gelu_a"], &[]);
    let t = g.op("Add", &[x, &t], &[]);
    let t = g.op("Mul", &[&t, "gelu_k"], &[]);
    let t = g.op("Tanh", &[&t], &[]);
    let t = g.op("Add", &[&t, "one_f"], &[]);
    let t = g.op("Mul", &[x, &t], &[]);
    g.op("Mul", &[&t, "half_f"], &[])
}

/// Writes `model.onnx` and `tokenizer.json` for the GGUF at `gguf` into `out_dir` (created).
pub fn export(gguf: &Path, out_dir: &Path) -> Result<Exported, ExportError> {
    export_as(gguf, out_dir, Quant::F32, Layout::Plain)
}

/// [`export`] with the weight matrices in `quant` and the graph in `layout`.
pub fn export_as(
    gguf: &Path,
    out_dir: &Path,
    quant: Quant,
    layout: Layout,
) -> Result<Exported, ExportError> {
    let g = Gguf::open(gguf)?;
    let hp = Hparams::read(&g)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExportError::Io { path, source }
    };
    // Tokenizer first: it is cheap, and a vocabulary melt cannot convert fails before minutes
    // of dequantizing.
    let tokenizer_json = tokenizer::from_gguf(&g)?;
    let (model, n_params) = build(&g, &hp, quant, layout)?;
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let model_path = out_dir.join("model.onnx");
    let tokenizer_path = out_dir.join("tokenizer.json");
    std::fs::write(&tokenizer_path, tokenizer_json).map_err(io(&tokenizer_path))?;
    std::fs::write(&model_path, model).map_err(io(&model_path))?;
    Ok(Exported {
        model: model_path,
        tokenizer: tokenizer_path,
        architecture: g.architecture().unwrap_or_default().to_string(),
        n_params,
    })
}

/// The serialized graph and the number of weights in it.
fn build(
    gguf: &Gguf,
    hp: &Hparams,
    quant: Quant,
    layout: Layout,
) -> Result<(Vec<u8>, u64), ExportError> {
    let (e, v, d) = (hp.n_embd, hp.n_vocab, hp.head_dim);
    let (h, hkv) = (hp.n_head, hp.n_head_kv);
    let group = h / hkv;
    let gemma = hp.arch == Arch::Gemma3;
    // One protobuf message cannot pass 2 GiB (ONNX Runtime refuses it); past that the weights
    // would have to go in an external-data file, which this exporter does not write. Known
    // before any dequantizing.
    let f32_bytes = gguf.tensors.iter().map(|t| t.n_elements()).sum::<u64>() * 4;
    if f32_bytes > i32::MAX as u64 - (64 << 20) {
        return Err(unsupported(
            gguf,
            format!(
                "its f32 export would be {:.1} GiB, over protobuf's 2 GiB limit (external-data export is not implemented; models up to ~500M parameters fit)",
                f32_bytes as f64 / (1u64 << 30) as f64
            ),
        ));
    }
    // The genai layout's RoPE tables hold every position the model was trained for.
    let n_positions = match (layout, hp.n_ctx_train) {
        (Layout::Plain, _) => 0,
        (Layout::Genai, Some(n)) if n > 0 => n,
        (Layout::Genai, _) => {
            return Err(unsupported(
                gguf,
                "no context_length: the genai layout's RoPE tables need the longest position",
            ))
        }
    };
    let mut w = Weights {
        g: gguf,
        n_params: 0,
    };
    let mut g = Graph::default();

    // Constants.
    g.i64s("axis1", &[1], &[1]);
    g.i64s("axis2", &[1], &[2]);
    g.i64s("axes12", &[2], &[1, 2]);
    g.i64s("axis_last", &[1], &[-1]);
    g.i64s("zero_1", &[1], &[0]);
    g.i64s("half_1", &[1], &[(d / 2) as i64]);
    g.i64s("dim_1", &[1], &[d as i64]);
    g.i64s("zero_i", &[], &[0]);
    g.i64s("one_i", &[], &[1]);
    g.i64s("swa_i", &[], &[hp.n_swa as i64]);
    g.f32s("zero_f", &[], &[0.0]);
    g.f32s("one_f", &[], &[1.0]);
    g.f32s("half_f", &[], &[0.5]);
    g.f32s("neg_inf", &[], &[f32::NEG_INFINITY]);
    g.f32s("eps", &[], &[hp.eps]);
    g.f32s("gelu_a", &[], &[0.044_715]);
    g.f32s("gelu_k", &[], &[(2.0 / std::f64::consts::PI).sqrt() as f32]);
    g.f32s("attn_scale", &[], &[hp.attention_scale as f32]);
    g.f32s("embd_scale", &[], &[(e as f32).sqrt()]);
    g.i64s("q_heads", &[4], &[0, 0, h as i64, d as i64]);
    g.i64s("kv_heads", &[4], &[0, 0, hkv as i64, d as i64]);
    g.i64s(
        "q_groups",
        &[5],
        &[0, hkv as i64, group as i64, -1, d as i64],
    );
    g.i64s("q_flat", &[4], &[0, h as i64, -1, d as i64]);
    g.i64s("q_rows", &[3], &[0, 0, (h * d) as i64]);
    g.i64s("kv_rows", &[3], &[0, 0, (hkv * d) as i64]);
    g.i64s("rows_embd", &[2], &[-1, e as i64]);

    let attention = Attention::prepare(&mut g, hp, layout, n_positions);

    // Embeddings (shared with the output when the GGUF ties them).
    let embd = w.get("token_embd.weight", &[e, v])?;
    let (mut x, embd_blocks) = match quant {
        Quant::F32 => {
            g.f32s("token_embd", &[v as i64, e as i64], &embd);
            (g.op("Gather", &["token_embd", "input_ids"], &[]), None)
        }
        Quant::Int4 => {
            let ty = w.g.tensor("token_embd.weight").map_or(0, |t| t.ggml_type);
            let b = linear::blocks_for(ty, &embd, v as usize, e as usize);
            let stored = b.store(&mut g, "token_embd");
            let rows = b.gather(&mut g, "input_ids", &stored, "token_embd");
            g.i64s("embd_rows", &[3], &[0, 0, e as i64]);
            (
                g.op("Reshape", &[&rows, "embd_rows"], &[]),
                Some((b, stored)),
            )
        }
    };
    drop(embd);
    if gemma {
        x = g.op("Mul", &[&x, "embd_scale"], &[]);
    }

    for il in 0..hp.n_layer {
        let t = |s: &str| format!("blk.{il}.{s}.weight");
        let name = |s: &str| format!("layers.{il}.{s}");
        let norm_w = |w: &mut Weights, g: &mut Graph, s: &str, n: u64| {
            let data = w.get(&t(s), &[n])?;
            g.f32s(&name(s), &[n as i64], &data);
            Ok::<String, ExportError>(name(s))
        };
        let attn_norm = norm_w(&mut w, &mut g, "attn_norm", e)?;
        // llama.cpp's llama stores Q and K rows in RoPE's adjacent pairs; the graph's RoPE
        // rotates halves.
        let heads = |n: u64| (!gemma).then_some((n as usize, d as usize));
        let mut lin = |s: &str, dims: (u64, u64), heads: Option<(usize, usize)>| {
            Linear::load(&mut w, &mut g, quant, &t(s), &name(s), dims, heads)
        };
        let wq = lin("attn_q", (e, h * d), heads(h))?;
        let wk = lin("attn_k", (e, hkv * d), heads(hkv))?;
        let wv = lin("attn_v", (e, hkv * d), None)?;
        let wo = lin("attn_output", (h * d, e), None)?;
        let ff = hp.n_ff;
        let w_gate = lin("ffn_gate", (e, ff), None)?;
        let w_up = lin("ffn_up", (e, ff), None)?;
        let w_down = lin("ffn_down", (ff, e), None)?;
        let ffn_norm = norm_w(&mut w, &mut g, "ffn_norm", e)?;

        // Attention.
        let hn = rms_norm(&mut g, &x, &attn_norm);
        let (q, k, v) = (
            wq.apply(&mut g, &hn),
            wk.apply(&mut g, &hn),
            wv.apply(&mut g, &hn),
        );
        let qk_norm = if gemma {
            let qn = norm_w(&mut w, &mut g, "attn_q_norm", d)?;
            let kn = norm_w(&mut w, &mut g, "attn_k_norm", d)?;
            Some((qn, kn))
        } else {
            None
        };
        let qk_norm = qk_norm.as_ref().map(|(q, k)| (q.as_str(), k.as_str()));
        let ctx = attention.layer(&mut g, hp, il, [&q, &k, &v], qk_norm);
        let mut out = wo.apply(&mut g, &ctx);
        if gemma {
            let pn = norm_w(&mut w, &mut g, "post_attention_norm", e)?;
            out = rms_norm(&mut g, &out, &pn);
        }
        x = g.op("Add", &[&x, &out], &[]);

        // MLP: act(gate) · up → down.
        let hn = rms_norm(&mut g, &x, &ffn_norm);
        let gate = w_gate.apply(&mut g, &hn);
        let up = w_up.apply(&mut g, &hn);
        let act = if gemma {
            gelu_tanh(&mut g, &gate)
        } else {
            let s = g.op("Sigmoid", &[&gate], &[]);
            g.op("Mul", &[&gate, &s], &[])
        };
        let hidden = g.op("Mul", &[&act, &up], &[]);
        let mut down = w_down.apply(&mut g, &hidden);
        if gemma {
            let pn = norm_w(&mut w, &mut g, "post_ffw_norm", e)?;
            down = rms_norm(&mut g, &down, &pn);
        }
        x = g.op("Add", &[&x, &down], &[]);
    }

    let out_norm = w.get("output_norm.weight", &[e])?;
    g.f32s("output_norm", &[e as i64], &out_norm);
    let x = rms_norm(&mut g, &x, "output_norm");
    // The output matrix is [vocab, n_embd] like the embeddings: Gemm with transB reads it in
    // place (a MatMul would need a transposed copy — twice the biggest tensor); 4-bit blocks
    // are stored a row per output already.
    let output = if gguf.tensor("output.weight").is_some() {
        let o = w.get("output.weight", &[e, v])?;
        match quant {
            Quant::F32 => {
                g.f32s("output", &[v as i64, e as i64], &o);
                Head::F32("output")
            }
            Quant::Int4 => {
                let ty = w.g.tensor("output.weight").map_or(0, |t| t.ggml_type);
                let b = linear::blocks_for(ty, &o, v as usize, e as usize);
                let stored = b.store(&mut g, "output");
                Head::Blocks(b, stored)
            }
        }
    } else {
        // Tied: the head multiplies by the embedding's own codes.
        match embd_blocks {
            Some((b, stored)) => Head::Blocks(b, stored),
            None => Head::F32("token_embd"),
        }
    };
    // `logits_to_keep` (as in Hugging Face transformers) picks the positions whose logits are
    // computed: the last N, or every one for 0. Prefill and decode keep 1; perplexity, choices
    // and KL-divergence keep 0. ONNX Runtime runs every node of a graph whatever outputs are
    // asked for, so the choice is made before the head: in pp512 it spares 511 rows of an
    // n_embd × vocab product and their output, which llama.cpp does not compute either.
    g.i64s("minus_one_1", &[1], &[-1]);
    g.i64s("vocab_1", &[1], &[v as i64]);
    g.i64s("int_max_1", &[1], &[i64::MAX]);
    // (The genai layout has no such input: its graph computes every position's, as
    // onnxruntime-genai's builder writes it.)
    let kept = if attention.keeps_logits_choice() {
        let from = g.op("Neg", &["logits_to_keep"], &[]);
        g.op("Slice", &[&x, &from, "int_max_1", "axis1"], &[])
    } else {
        x.clone()
    };
    let x_shape = g.op("Shape", &[&x], &[]);
    let batch = g.op("Slice", &[&x_shape, "zero_1", "axis1", "zero_1"], &[]);
    // [batch, kept, vocab]
    let shape = g.op(
        "Concat",
        &[&batch, "minus_one_1", "vocab_1"],
        &[Attr::Int("axis", 0)],
    );
    let rows = g.op("Reshape", &[&kept, "rows_embd"], &[]);
    let logits = match &output {
        Head::F32(name) => g.op("Gemm", &[&rows, name], &[Attr::Int("transB", 1)]),
        Head::Blocks(b, stored) => b.matmul(&mut g, &rows, stored),
    };
    drop(output);
    match hp.final_logit_softcapping {
        Some(cap) => {
            let logits = g.op("Reshape", &[&logits, &shape], &[]);
            g.f32s("softcap", &[], &[cap as f32]);
            let s = g.op("Div", &[&logits, "softcap"], &[]);
            let s = g.op("Tanh", &[&s], &[]);
            g.node("Mul", &[&s, "softcap"], &["logits"], &[]);
        }
        None => g.node("Reshape", &[&logits, &shape], &["logits"], &[]),
    }
    g.output(
        "logits",
        FLOAT,
        &[Dim::Sym("batch"), Dim::Sym("kept"), Dim::Fixed(v as i64)],
    );
    let name = gguf
        .get("general.name")
        .and_then(Value::as_str)
        .unwrap_or("model")
        .to_string();
    g.metadata("quantization", quant.label());
    g.metadata("layout", layout.label());
    Ok((g.model(&name, "melt gguf-to-onnx"), w.n_params))
}

/// The output projection: an f32 initializer read by `Gemm`, or blocks already stored.
enum Head {
    F32(&'static str),
    Blocks(nbits::Blocks, nbits::Stored),
}
