//! The graph's inputs and its attention, in the two layouts an export can have.
//!
//! - [`Layout::Plain`]: RoPE, the masks and the cache's growth written out in opset-17
//!   operators, driven by `input_ids`, `attention_mask`, `position_ids`, `logits_to_keep` and
//!   `past_key_values.*`. Any ONNX Runtime build (and any ONNX engine) runs it; each step
//!   concatenates the past with the new keys, so a step copies the whole cache.
//! - [`Layout::Genai`]: the convention of onnxruntime-genai's model builder, which is how ONNX
//!   LLMs ship. ONNX Runtime's fused `GroupQueryAttention` (com.microsoft) applies RoPE from
//!   cos/sin tables, the grouped heads, the causal mask and the sliding window. Its inputs are
//!   `input_ids`, `attention_mask` and `past_key_values.*` alone: positions come from
//!   `seqlens_k` (the mask's sum − 1). The past may be a buffer of the whole context, and then
//!   it can be the present itself (ONNX Runtime compares the pointers): a step writes its own
//!   keys in place and copies nothing.

use melt_formats::onnx_proto::{Attr, Dim, Graph, BOOL, FLOAT, INT32, INT64};

use super::{rms_norm, Hparams};

/// How an export's graph holds attention and its KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// Plain opset-17 operators, with `position_ids` and `logits_to_keep` inputs.
    #[default]
    Plain,
    /// onnxruntime-genai's builder convention: `GroupQueryAttention`, whose KV buffer can be
    /// shared between past and present.
    Genai,
}

impl Layout {
    pub fn label(self) -> &'static str {
        match self {
            Layout::Plain => "plain",
            Layout::Genai => "genai",
        }
    }
}

impl std::str::FromStr for Layout {
    type Err = String;

    fn from_str(s: &str) -> Result<Layout, String> {
        match s.to_ascii_lowercase().as_str() {
            "plain" => Ok(Layout::Plain),
            "genai" => Ok(Layout::Genai),
            _ => Err(format!("unknown layout `{s}` (plain, genai)")),
        }
    }
}

/// What every layer's attention reads, made once per graph.
pub(super) enum Attention {
    Plain {
        /// Additive masks `[batch, 1, 1, seq, total]`, global and sliding-window.
        bias: [String; 2],
        /// `cos`, `sin` `[batch, 1, seq, head_dim/2]`: global, then sliding-window if any.
        rope: Vec<(String, String)>,
    },
    Genai {
        /// `[batch]` int32: the keys each sequence has, minus one.
        seqlens_k: String,
        /// Scalar int32: the mask's length.
        total: String,
        /// `cos_cache`, `sin_cache` `[positions, head_dim/2]`: global, then sliding-window.
        rope: Vec<(String, String)>,
    },
}

fn kv_dims(hp: &Hparams, len: &'static str) -> [Dim<'static>; 4] {
    [
        Dim::Sym("batch"),
        Dim::Fixed(hp.n_head_kv as i64),
        Dim::Sym(len),
        Dim::Fixed(hp.head_dim as i64),
    ]
}

/// Linear RoPE frequencies of one base: `scale · base^(−2i/d)`.
fn inv_freq(hp: &Hparams, base: f64, scale: f64) -> Vec<f64> {
    (0..hp.head_dim / 2)
        .map(|i| scale * base.powf(-2.0 * i as f64 / hp.head_dim as f64))
        .collect()
}

impl Attention {
    /// Declares the layout's inputs (`input_ids` first, the KV cache last) and builds what
    /// every layer shares. `n_positions` bounds the genai layout's RoPE tables.
    pub(super) fn prepare(
        g: &mut Graph,
        hp: &Hparams,
        layout: Layout,
        n_positions: u64,
    ) -> Attention {
        g.input("input_ids", INT64, &[Dim::Sym("batch"), Dim::Sym("seq")]);
        g.input(
            "attention_mask",
            INT64,
            &[Dim::Sym("batch"), Dim::Sym("total")],
        );
        if layout == Layout::Plain {
            g.input("position_ids", INT64, &[Dim::Sym("batch"), Dim::Sym("seq")]);
            g.input("logits_to_keep", INT64, &[Dim::Fixed(1)]);
        }
        for i in 0..hp.n_layer {
            for kv in ["key", "value"] {
                g.input(
                    &format!("past_key_values.{i}.{kv}"),
                    FLOAT,
                    &kv_dims(hp, "past"),
                );
            }
        }
        // A second RoPE base only where sliding-window layers have one.
        let mut bases = vec![(hp.rope_base, hp.rope_freq_scale)];
        if hp.is_swa.iter().any(|&s| s) {
            bases.push((hp.rope_base_swa, 1.0));
        }
        match layout {
            Layout::Plain => {
                let bias = plain_masks(g, hp);
                let p = g.op("Cast", &["position_ids"], &[Attr::Int("to", FLOAT)]);
                let p = g.op("Unsqueeze", &[&p, "axis_last"], &[]);
                let rope = bases
                    .iter()
                    .map(|&(base, scale)| rope_tables(g, hp, &p, base, scale))
                    .collect();
                Attention::Plain { bias, rope }
            }
            Layout::Genai => {
                let sum = g.op(
                    "ReduceSum",
                    &["attention_mask", "axis1"],
                    &[Attr::Int("keepdims", 0)],
                );
                let last = g.op("Sub", &[&sum, "one_i"], &[]);
                let seqlens_k = g.op("Cast", &[&last], &[Attr::Int("to", INT32)]);
                let shape = g.op("Shape", &["attention_mask"], &[]);
                let total = g.op("Gather", &[&shape, "one_i"], &[]);
                let total = g.op("Cast", &[&total], &[Attr::Int("to", INT32)]);
                let half = (hp.head_dim / 2) as usize;
                let rope = (bases.iter().enumerate())
                    .map(|(tag, &(base, scale))| {
                        let f = inv_freq(hp, base, scale);
                        let (mut cos, mut sin) = (Vec::new(), Vec::new());
                        for p in 0..n_positions {
                            for &f in &f {
                                let a = p as f64 * f;
                                cos.push(a.cos() as f32);
                                sin.push(a.sin() as f32);
                            }
                        }
                        let dims = [n_positions as i64, half as i64];
                        let (c, s) = (format!("cos_cache_{tag}"), format!("sin_cache_{tag}"));
                        g.f32s(&c, &dims, &cos);
                        g.f32s(&s, &dims, &sin);
                        (c, s)
                    })
                    .collect();
                Attention::Genai {
                    seqlens_k,
                    total,
                    rope,
                }
            }
        }
    }

    /// Whether the graph takes `logits_to_keep`.
    pub(super) fn keeps_logits_choice(&self) -> bool {
        matches!(self, Attention::Plain { .. })
    }

    /// Layer `il`'s attention over the projections `q`, `k`, `v` (`[batch, seq, heads ×
    /// head_dim]`), each head of Q and K RMS-normed by `qk_norm` first when given (Gemma).
    /// Writes `present.{il}.key/value`; returns the context `[batch, seq, n_head × head_dim]`.
    pub(super) fn layer(
        &self,
        g: &mut Graph,
        hp: &Hparams,
        il: u64,
        [q, k, v]: [&str; 3],
        qk_norm: Option<(&str, &str)>,
    ) -> String {
        let swa = hp.is_swa[il as usize];
        // Sliding-window layers exist only with a window; they read the second tables.
        let pick = usize::from(swa);
        let q = g.op("Reshape", &[q, "q_heads"], &[]);
        let k = g.op("Reshape", &[k, "kv_heads"], &[]);
        let (q, k) = match qk_norm {
            Some((qn, kn)) => (rms_norm(g, &q, qn), rms_norm(g, &k, kn)),
            None => (q, k),
        };
        let past = |kv: &str| format!("past_key_values.{il}.{kv}");
        let present = |kv: &str| format!("present.{il}.{kv}");
        match self {
            Attention::Plain { bias, rope } => {
                let v = g.op("Reshape", &[v, "kv_heads"], &[]);
                let to_heads = |g: &mut Graph, x: &str| {
                    g.op("Transpose", &[x], &[Attr::Ints("perm", &[0, 2, 1, 3])])
                };
                let (q, k, v) = (to_heads(g, &q), to_heads(g, &k), to_heads(g, &v));
                let (cos, sin) = &rope[pick.min(rope.len() - 1)];
                let q = plain_rope(g, &q, cos, sin);
                let k = plain_rope(g, &k, cos, sin);
                let mut cache = Vec::new();
                for (kv, new) in [("key", &k), ("value", &v)] {
                    g.node(
                        "Concat",
                        &[&past(kv), new],
                        &[&present(kv)],
                        &[Attr::Int("axis", 2)],
                    );
                    g.output(&present(kv), FLOAT, &kv_dims(hp, "total"));
                    // [batch, kv_heads, 1, total, head_dim]: broadcast over the query heads
                    // sharing it.
                    cache.push(g.op("Unsqueeze", &[&present(kv), "axis2"], &[]));
                }
                // Heads h·group … h·group+group−1 share KV head h (llama.cpp's broadcast).
                let qg = g.op("Reshape", &[&q, "q_groups"], &[]);
                let kt = g.op(
                    "Transpose",
                    &[&cache[0]],
                    &[Attr::Ints("perm", &[0, 1, 2, 4, 3])],
                );
                let scores = g.op("MatMul", &[&qg, &kt], &[]);
                let scores = g.op("Mul", &[&scores, "attn_scale"], &[]);
                let scores = g.op("Add", &[&scores, &bias[pick]], &[]);
                let probs = g.op("Softmax", &[&scores], &[Attr::Int("axis", -1)]);
                let ctx = g.op("MatMul", &[&probs, &cache[1]], &[]);
                let ctx = g.op("Reshape", &[&ctx, "q_flat"], &[]);
                let ctx = g.op("Transpose", &[&ctx], &[Attr::Ints("perm", &[0, 2, 1, 3])]);
                g.op("Reshape", &[&ctx, "q_rows"], &[])
            }
            Attention::Genai {
                seqlens_k,
                total,
                rope,
            } => {
                let q = g.op("Reshape", &[&q, "q_rows"], &[]);
                let k = g.op("Reshape", &[&k, "kv_rows"], &[]);
                let (cos, sin) = &rope[pick.min(rope.len() - 1)];
                let ctx = g.tmp("gqa");
                // `local_window_size` n sees the position and the n − 1 before it, as
                // llama.cpp's window does. Measured on Gemma 3 past position 512 against the
                // plain graph: n − 1 moves the logits by 4e-3 of their range, n by 2e-6.
                let window = if swa { hp.n_swa as i64 } else { -1 };
                g.node_in(
                    melt_formats::onnx_proto::MS_DOMAIN,
                    "GroupQueryAttention",
                    &[
                        &q,
                        &k,
                        v,
                        &past("key"),
                        &past("value"),
                        seqlens_k,
                        total,
                        cos,
                        sin,
                    ],
                    &[&ctx, &present("key"), &present("value")],
                    &[
                        Attr::Int("num_heads", hp.n_head as i64),
                        Attr::Int("kv_num_heads", hp.n_head_kv as i64),
                        Attr::Float("scale", hp.attention_scale as f32),
                        Attr::Int("do_rotary", 1),
                        Attr::Int("rotary_interleaved", 0),
                        Attr::Int("local_window_size", window),
                    ],
                );
                for kv in ["key", "value"] {
                    g.output(&present(kv), FLOAT, &kv_dims(hp, "total"));
                }
                ctx
            }
        }
    }
}

/// The plain layout's additive masks `[batch, 1, 1, seq, total]`: key j is visible to a query
/// at position p when j ≤ p, attention_mask[j] is 1, and — on sliding-window layers —
/// p − j < window.
fn plain_masks(g: &mut Graph, hp: &Hparams) -> [String; 2] {
    let am_shape = g.op("Shape", &["attention_mask"], &[]);
    let total = g.op("Gather", &[&am_shape, "one_i"], &[]);
    let key_pos = g.op("Range", &["zero_i", &total, "one_i"], &[]);
    let query_pos = g.op("Unsqueeze", &["position_ids", "axis_last"], &[]);
    let causal = g.op("LessOrEqual", &[&key_pos, &query_pos], &[]);
    let padding = g.op("Cast", &["attention_mask"], &[Attr::Int("to", BOOL)]);
    let padding = g.op("Unsqueeze", &[&padding, "axis1"], &[]);
    let visible = g.op("And", &[&causal, &padding], &[]);
    let mask_bias = |g: &mut Graph, visible: &str| {
        let b = g.op("Where", &[visible, "zero_f", "neg_inf"], &[]);
        g.op("Unsqueeze", &[&b, "axes12"], &[])
    };
    let global = mask_bias(g, &visible);
    let swa = if hp.n_swa > 0 {
        let dist = g.op("Sub", &[&query_pos, &key_pos], &[]);
        let near = g.op("Less", &[&dist, "swa_i"], &[]);
        let vis = g.op("And", &[&visible, &near], &[]);
        mask_bias(g, &vis)
    } else {
        global.clone()
    };
    [global, swa]
}

/// `cos` and `sin` `[batch, 1, seq, head_dim/2]` of the positions `p` (`[batch, seq, 1]`
/// f32) for one RoPE base.
fn rope_tables(g: &mut Graph, hp: &Hparams, p: &str, base: f64, scale: f64) -> (String, String) {
    let f: Vec<f32> = inv_freq(hp, base, scale)
        .into_iter()
        .map(|f| f as f32)
        .collect();
    let name = g.tmp("rope_inv_freq");
    g.f32s(&name, &[f.len() as i64], &f);
    let freqs = g.op("Mul", &[p, &name], &[]);
    let freqs = g.op("Unsqueeze", &[&freqs, "axis1"], &[]);
    (g.op("Cos", &[&freqs], &[]), g.op("Sin", &[&freqs], &[]))
}

/// RoPE on the halves of the last axis of `x` `[batch, heads, seq, head_dim]`.
fn plain_rope(g: &mut Graph, x: &str, cos: &str, sin: &str) -> String {
    let x1 = g.op("Slice", &[x, "zero_1", "half_1", "axis_last"], &[]);
    let x2 = g.op("Slice", &[x, "half_1", "dim_1", "axis_last"], &[]);
    let a = g.op("Mul", &[&x1, cos], &[]);
    let b = g.op("Mul", &[&x2, sin], &[]);
    let lo = g.op("Sub", &[&a, &b], &[]);
    let c = g.op("Mul", &[&x2, cos], &[]);
    let d = g.op("Mul", &[&x1, sin], &[]);
    let hi = g.op("Add", &[&c, &d], &[]);
    g.op("Concat", &[&lo, &hi], &[Attr::Int("axis", -1)])
}
