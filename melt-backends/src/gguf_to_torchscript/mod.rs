//! GGUF → TorchScript: a llama.cpp model written with tch ops and traced into a module in melt's
//! TorchScript convention (see [`crate::libtorch`]), with `config.json` and `tokenizer.json`
//! beside it — so the same weights run on libtorch, and the tests trace their own tiny models.
//!
//! The hyperparameters, the weights (dequantized to f32 by ggml) and the tokenizer come from
//! the ONNX exporter ([`crate::gguf_to_onnx`]); the computation is the same (`llama` and
//! `gemma3`), written once more in tch ops. Tracing records the ops applied to the inputs and
//! keeps every other tensor (the weights) as a constant of the module; no shape is read from
//! an input, so one trace serves every prompt length and cache size.
//!
//! The weights can be stored narrower ([`Precision`](crate::gguf_to_torchscript::Precision):
//! bf16, or int8 weight-only with a scale per output row); since a traced module's weights are
//! constants, not parameters, the precision is chosen here, at export, not by the session.

use std::path::{Path, PathBuf};

use melt_formats::gguf::{Gguf, Value};
use tch::{CModule, Device, Kind, Tensor};

use crate::gguf_to_onnx::{pairs_to_halves, tokenizer, Arch, ExportError, Hparams, Weights};

mod linear;

use linear::Linear;
pub use linear::Precision;

/// What was written.
#[derive(Debug, Clone)]
pub struct Exported {
    pub model: PathBuf,
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub n_params: u64,
}

/// A matrix `[rows, cols]` from row-major f32 values.
fn matrix(v: &[f32], rows: u64, cols: u64) -> Tensor {
    Tensor::from_slice(v).view([rows as i64, cols as i64])
}

fn vector(v: &[f32]) -> Tensor {
    Tensor::from_slice(v)
}

struct Layer {
    attn_norm: Tensor,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    post_attn_norm: Option<Tensor>,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
    post_ffw_norm: Option<Tensor>,
}

struct Model {
    hp: Hparams,
    /// The `{n_embd → vocab}` embedding table, looked up by token (and the head when tied).
    embd: Linear,
    layers: Vec<Layer>,
    out_norm: Tensor,
    /// The `{n_embd → vocab}` head; `None` when the GGUF ties it to the embeddings.
    output: Option<Linear>,
    /// RoPE inverse frequencies of the global and the sliding-window layers.
    inv_freq: (Tensor, Tensor),
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Tensor {
    let ms = (x * x).mean_dim(-1, true, Kind::Float);
    x * (ms + eps as f64).rsqrt() * w
}

fn gelu_tanh(x: &Tensor) -> Tensor {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    let t = ((x + x * x * x * 0.044_715) * k).tanh();
    x * (t + 1.0) * 0.5
}

/// RoPE on the halves of the last axis of `x` `[1, heads, n, d]`; `cos`, `sin` `[1, 1, n, d/2]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, half: i64) -> Tensor {
    let x1 = x.narrow(-1, 0, half);
    let x2 = x.narrow(-1, half, half);
    Tensor::cat(&[&x1 * cos - &x2 * sin, &x2 * cos + &x1 * sin], -1)
}

impl Model {
    fn read(g: &Gguf, hp: Hparams, precision: Precision) -> Result<(Model, u64), ExportError> {
        let (e, v, d, h, hkv, ff) = (
            hp.n_embd,
            hp.n_vocab,
            hp.head_dim,
            hp.n_head,
            hp.n_head_kv,
            hp.n_ff,
        );
        let gemma = hp.arch == Arch::Gemma3;
        let mut w = Weights { g, n_params: 0 };
        let embd = Linear::rows(
            precision,
            matrix(&w.get("token_embd.weight", &[e, v])?, v, e),
        );
        let columns = |m: Vec<f32>, n_in: u64, n_out: u64| {
            Linear::columns(precision, matrix(&m, n_in, n_out))
        };
        let mut layers = Vec::new();
        for il in 0..hp.n_layer {
            let t = |s: &str| format!("blk.{il}.{s}.weight");
            let mut norm = |s: &str, n: u64| Ok::<_, ExportError>(vector(&w.get(&t(s), &[n])?));
            let attn_norm = norm("attn_norm", e)?;
            let ffn_norm = norm("ffn_norm", e)?;
            let (q_norm, k_norm, post_attn_norm, post_ffw_norm) = if gemma {
                (
                    Some(norm("attn_q_norm", d)?),
                    Some(norm("attn_k_norm", d)?),
                    Some(norm("post_attention_norm", e)?),
                    Some(norm("post_ffw_norm", e)?),
                )
            } else {
                (None, None, None, None)
            };
            let mut wq = w.linear(&t("attn_q"), e, h * d)?;
            let mut wk = w.linear(&t("attn_k"), e, hkv * d)?;
            if !gemma {
                // llama rotates adjacent pairs; one RoPE on halves serves both once Q and K
                // have their columns permuted alike.
                wq = pairs_to_halves(&wq, e as usize, h as usize, d as usize);
                wk = pairs_to_halves(&wk, e as usize, hkv as usize, d as usize);
            }
            layers.push(Layer {
                attn_norm,
                wq: columns(wq, e, h * d),
                wk: columns(wk, e, hkv * d),
                wv: columns(w.linear(&t("attn_v"), e, hkv * d)?, e, hkv * d),
                wo: columns(w.linear(&t("attn_output"), h * d, e)?, h * d, e),
                q_norm,
                k_norm,
                post_attn_norm,
                ffn_norm,
                gate: columns(w.linear(&t("ffn_gate"), e, ff)?, e, ff),
                up: columns(w.linear(&t("ffn_up"), e, ff)?, e, ff),
                down: columns(w.linear(&t("ffn_down"), ff, e)?, ff, e),
                post_ffw_norm,
            });
        }
        let out_norm = vector(&w.get("output_norm.weight", &[e])?);
        let output = match g.tensor("output.weight") {
            Some(_) => Some(Linear::rows(
                precision,
                matrix(&w.get("output.weight", &[e, v])?, v, e),
            )),
            None => None,
        };
        let inv = |base: f64, scale: f64| {
            let half = d / 2;
            let f: Vec<f32> = (0..half)
                .map(|i| (scale * base.powf(-2.0 * i as f64 / d as f64)) as f32)
                .collect();
            vector(&f)
        };
        let inv_freq = (
            inv(hp.rope_base, hp.rope_freq_scale),
            inv(hp.rope_base_swa, 1.0),
        );
        let n_params = w.n_params;
        Ok((
            Model {
                hp,
                embd,
                layers,
                out_norm,
                output,
                inv_freq,
            },
            n_params,
        ))
    }

    /// melt's convention: `(ids [1, n], positions [1, n], past_keys, past_values
    /// [L, kv_heads, past, d], new_keys, new_values [L, kv_heads, n, d])` → `logits
    /// [1, n, vocab]`, this step's keys and values written into `new_*` in place.
    fn forward(&self, xs: &[Tensor]) -> Vec<Tensor> {
        let (ids, positions, pk, pv, nk, nv) = (&xs[0], &xs[1], &xs[2], &xs[3], &xs[4], &xs[5]);
        let hp = &self.hp;
        let (h, hkv, d) = (hp.n_head as i64, hp.n_head_kv as i64, hp.head_dim as i64);
        let gemma = hp.arch == Arch::Gemma3;
        let mut x = self.embd.lookup(&ids.view([-1])).unsqueeze(0);
        if gemma {
            x *= (hp.n_embd as f64).sqrt();
        }
        // RoPE tables `[1, 1, n, d/2]` and the query positions `[1, 1, n, 1]`.
        let pos = positions.to_kind(Kind::Float).unsqueeze(-1);
        let tables = |inv: &Tensor| {
            let ang = (&pos * inv).unsqueeze(1);
            (ang.cos(), ang.sin())
        };
        let global = tables(&self.inv_freq.0);
        let swa = tables(&self.inv_freq.1);
        let qpos = positions.view([1, 1, -1, 1]);
        for (il, l) in self.layers.iter().enumerate() {
            let is_swa = hp.is_swa[il];
            let hn = rms_norm(&x, &l.attn_norm, hp.eps);
            let mut q = l.wq.apply(&hn).view([1, -1, h, d]);
            let mut k = l.wk.apply(&hn).view([1, -1, hkv, d]);
            let v = l.wv.apply(&hn).view([1, -1, hkv, d]).transpose(1, 2);
            if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                q = rms_norm(&q, qn, hp.eps);
                k = rms_norm(&k, kn, hp.eps);
            }
            let (cos, sin) = if is_swa { &swa } else { &global };
            let q = rope(&q.transpose(1, 2), cos, sin, d / 2);
            let k = rope(&k.transpose(1, 2), cos, sin, d / 2);
            // This step's cache, written where the caller keeps it.
            nk.select(0, il as i64).copy_(&k.squeeze_dim(0));
            nv.select(0, il as i64).copy_(&v.squeeze_dim(0));
            let k_all = Tensor::cat(&[pk.select(0, il as i64).unsqueeze(0), k], 2);
            let v_all = Tensor::cat(&[pv.select(0, il as i64).unsqueeze(0), v], 2);
            // Query heads h·group … share KV head h: broadcast, then flatten to `h` heads.
            let group = h / hkv;
            let spread = |t: &Tensor| {
                t.unsqueeze(2)
                    .expand([1, hkv, group, -1, d], false)
                    .reshape([1, h, -1, d])
            };
            let scores = q.matmul(&spread(&k_all).transpose(-1, -2)) * hp.attention_scale;
            // Key j (counted from 0 along the cache) is hidden from a query at position p
            // when j > p, or — on sliding-window layers — when p − j ≥ the window.
            let kidx = scores.ones_like().cumsum(-1, Kind::Int64) - 1;
            let mut hidden = kidx.gt_tensor(&qpos);
            if is_swa && hp.n_swa > 0 {
                hidden = hidden.logical_or(&(&qpos - &kidx).ge(hp.n_swa as i64));
            }
            let probs = scores
                .masked_fill(&hidden, f64::NEG_INFINITY)
                .softmax(-1, Kind::Float);
            let ctx = probs
                .matmul(&spread(&v_all))
                .transpose(1, 2)
                .reshape([1, -1, h * d]);
            let mut out = l.wo.apply(&ctx);
            if let Some(n) = &l.post_attn_norm {
                out = rms_norm(&out, n, hp.eps);
            }
            x += out;
            let hn = rms_norm(&x, &l.ffn_norm, hp.eps);
            let gate = l.gate.apply(&hn);
            let act = if gemma { gelu_tanh(&gate) } else { gate.silu() };
            let mut down = l.down.apply(&(act * l.up.apply(&hn)));
            if let Some(n) = &l.post_ffw_norm {
                down = rms_norm(&down, n, hp.eps);
            }
            x += down;
        }
        let x = rms_norm(&x, &self.out_norm, hp.eps);
        let mut logits = self.output.as_ref().unwrap_or(&self.embd).apply(&x);
        if let Some(cap) = hp.final_logit_softcapping {
            logits = (logits / cap).tanh() * cap;
        }
        vec![logits]
    }
}

/// Writes `model.pt`, `config.json` and `tokenizer.json` for the GGUF at `gguf` into
/// `out_dir` (created), with f32 weights.
pub fn export(gguf: &Path, out_dir: &Path) -> Result<Exported, ExportError> {
    export_as(gguf, out_dir, Precision::F32)
}

/// [`export`] with the weights in `precision`.
pub fn export_as(
    gguf: &Path,
    out_dir: &Path,
    precision: Precision,
) -> Result<Exported, ExportError> {
    let g = Gguf::open(gguf)?;
    let hp = Hparams::read(&g)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExportError::Io { path, source }
    };
    let tokenizer_json = tokenizer::from_gguf(&g)?;
    let bos = g.get("tokenizer.ggml.bos_token_id").and_then(Value::as_u64);
    let add_bos = g
        .get("tokenizer.ggml.add_bos_token")
        .and_then(|v| match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        })
        .unwrap_or(true);
    let (model, n_params) = Model::read(&g, hp.clone(), precision)?;
    let mut config = serde_json::json!({
        "architectures": [format!("melt gguf-to-torchscript ({})", g.architecture().unwrap_or_default())],
        "model_type": g.architecture().unwrap_or_default(),
        "num_parameters": n_params,
        "num_hidden_layers": hp.n_layer,
        "num_attention_heads": hp.n_head,
        "num_key_value_heads": hp.n_head_kv,
        "head_dim": hp.head_dim,
        "hidden_size": hp.n_embd,
        "vocab_size": hp.n_vocab,
        "max_position_embeddings": g
            .get(&format!("{}.context_length", g.architecture().unwrap_or_default()))
            .and_then(Value::as_u64),
        "bos_token_id": bos.filter(|_| add_bos),
        "torch_dtype": precision.torch_dtype(),
    });
    if let Some(q) = precision.quantization_config() {
        config["quantization_config"] = q;
    }
    // Example inputs: two new tokens after one cached position, so nothing is special-cased
    // on a length of 1 or 0 (the trace keeps only ops, not these sizes).
    let (l, hkv, d) = (hp.n_layer as i64, hp.n_head_kv as i64, hp.head_dim as i64);
    let ids = Tensor::from_slice(&[bos.unwrap_or(1) as i64, 2]).view([1, 2]);
    let positions = Tensor::from_slice(&[1i64, 2]).view([1, 2]);
    // Four distinct tensors: the tracer tells inputs apart by their storage.
    let zeros = |n: i64| Tensor::zeros([l, hkv, n, d], (Kind::Float, Device::Cpu));
    let inputs = [ids, positions, zeros(1), zeros(1), zeros(2), zeros(2)];
    let module = tch::no_grad(|| {
        CModule::create_by_tracing("MeltDecoder", "forward", &inputs, &mut |xs: &[Tensor]| {
            model.forward(xs)
        })
    })
    .map_err(|e| ExportError::Unsupported {
        path: gguf.to_path_buf(),
        reason: format!("tracing failed: {e}"),
    })?;
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let model_path = out_dir.join("model.pt");
    let config_path = out_dir.join("config.json");
    let tokenizer_path = out_dir.join("tokenizer.json");
    std::fs::write(&tokenizer_path, tokenizer_json).map_err(io(&tokenizer_path))?;
    let config_text = serde_json::to_string_pretty(&config).unwrap_or_default();
    std::fs::write(&config_path, config_text).map_err(io(&config_path))?;
    module
        .save(&model_path)
        .map_err(|e| ExportError::Unsupported {
            path: model_path.clone(),
            reason: format!("saving the module: {e}"),
        })?;
    Ok(Exported {
        model: model_path,
        config: config_path,
        tokenizer: tokenizer_path,
        n_params,
    })
}
