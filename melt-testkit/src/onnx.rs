//! A writer of tiny decoder LMs in the ONNX export convention that Optimum and
//! onnxruntime-genai use, with random weights and a byte-level BPE `tokenizer.json`, so the
//! ONNX Runtime backend is tested on a real file that real ONNX Runtime loads and runs.
//!
//! Graph (opset 17): `input_ids [batch, seq]`, `attention_mask [batch, total]`,
//! `position_ids [batch, seq]` (int64) and `past_key_values.{i}.key/value
//! [batch, kv_heads, past, head_dim]` in; `logits [batch, seq, vocab]` (f32) and
//! `present.{i}.key/value [batch, kv_heads, total, head_dim]` out. Each layer is causal
//! multi-head attention over the concatenated cache (the mask is built from `position_ids` and
//! `attention_mask`, as exported models do) and a tanh MLP, both residual.
//!
//! The file is written with [`melt_bench::onnx_proto`].

use std::io;
use std::path::Path;

use melt_bench::onnx_proto::{Attr, Dim, Graph, BOOL, FLOAT, FLOAT16, INT64};
use melt_bench::stats::Rng;

/// GPT-2's byte ↔ printable character map, which byte-level BPE vocabularies are written in.
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| {
        (u32::from('!')..=u32::from('~')).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b)
    };
    let mut extra = 0;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap()
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap()
            }
        })
        .collect()
}

/// Merges of the tiny tokenizer, in byte-level spelling (`Ġ` is a space).
const MERGES: &[(&str, &str)] = &[
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("Ġ", "a"),
    ("e", "r"),
    ("o", "n"),
    ("Ġ", "w"),
    ("o", "r"),
    ("Ġ", "s"),
];

/// A byte-level BPE `tokenizer.json` (the `tokenizers` crate's format) over the 256 bytes,
/// `MERGES`, and `<s>` / `</s>`; `<s>` is added in front of every encoding with special
/// tokens. Any text round-trips. Returns the JSON and the vocabulary size.
pub fn tiny_tokenizer_json() -> (String, usize) {
    let chars = byte_chars();
    let mut vocab: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    for (a, b) in MERGES {
        vocab.push(format!("{a}{b}"));
    }
    let bos = vocab.len();
    let eos = bos + 1;
    let vocab_json: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::json!(i)))
        .collect();
    let special = |id: usize, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false,
        "trim_offsets": true, "use_regex": true});
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(bos, "<s>"), special(eos, "</s>")],
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [bos], "tokens": ["<s>"]}}
        },
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab_json,
            "merges": MERGES.iter().map(|(a, b)| format!("{a} {b}")).collect::<Vec<_>>(),
        }
    });
    (serde_json::to_string_pretty(&json).expect("JSON"), eos + 1)
}

/// A tiny decoder LM to write as `model.onnx` + `tokenizer.json`.
#[derive(Debug, Clone)]
pub struct TinyOnnxLm {
    pub n_embd: usize,
    pub n_head: usize,
    pub n_layer: usize,
    pub n_ff: usize,
    /// Keep the KV cache in fp16 (`Cast` around the `Concat`), as fp16 exports do.
    pub kv_fp16: bool,
    /// Leave this graph input out (for bad-input tests).
    pub drop_input: Option<String>,
    /// Take and return the KV cache; `false` is an export without past (Optimum's default
    /// `text-generation` task), which melt must refuse by name.
    pub with_past: bool,
    pub seed: u64,
}

impl Default for TinyOnnxLm {
    fn default() -> Self {
        TinyOnnxLm {
            n_embd: 64,
            n_head: 4,
            n_layer: 2,
            n_ff: 128,
            kv_fp16: false,
            drop_input: None,
            with_past: true,
            seed: 7,
        }
    }
}

impl TinyOnnxLm {
    /// The serialized ONNX model.
    pub fn build(&self) -> Vec<u8> {
        let (_, n_vocab) = tiny_tokenizer_json();
        let (e, h, v) = (self.n_embd as i64, self.n_head as i64, n_vocab as i64);
        let d = e / h;
        let mut rng = Rng::new(self.seed);
        let mut random = |n: usize, scale: f64| -> Vec<f32> {
            (0..n).map(|_| (rng.normal() * scale) as f32).collect()
        };
        let mut g = Graph::default();
        let kv_type = if self.kv_fp16 { FLOAT16 } else { FLOAT };

        let wanted = |name: &str| {
            self.drop_input.as_deref() != Some(name)
                && (self.with_past || !name.starts_with("past_key_values."))
        };
        if wanted("input_ids") {
            g.input("input_ids", INT64, &[Dim::Sym("batch"), Dim::Sym("seq")]);
        }
        if wanted("attention_mask") {
            g.input(
                "attention_mask",
                INT64,
                &[Dim::Sym("batch"), Dim::Sym("total")],
            );
        }
        if wanted("position_ids") {
            g.input("position_ids", INT64, &[Dim::Sym("batch"), Dim::Sym("seq")]);
        }
        let kv_dims = |len: &'static str| {
            [
                Dim::Sym("batch"),
                Dim::Fixed(h),
                Dim::Sym(len),
                Dim::Fixed(d),
            ]
        };
        for i in 0..self.n_layer {
            for kv in ["key", "value"] {
                let name = format!("past_key_values.{i}.{kv}");
                if wanted(&name) {
                    g.input(&name, kv_type, &kv_dims("past"));
                }
            }
        }

        // Constants.
        g.f32s("embed", &[v, e], &random((v * e) as usize, 1.0));
        g.i64s("axis1", &[1], &[1]);
        g.i64s("axis2", &[1], &[2]);
        g.i64s("axes12", &[2], &[1, 2]);
        g.i64s("zero_i", &[], &[0]);
        g.i64s("one_i", &[], &[1]);
        g.f32s("zero_f", &[], &[0.0]);
        g.f32s("neg_inf", &[], &[-1e9]);
        g.f32s("scale", &[], &[1.0 / (d as f32).sqrt()]);
        g.i64s("heads_shape", &[4], &[0, 0, h, d]);
        g.i64s("embd_shape", &[3], &[0, 0, e]);

        // Causal + padding mask from positions: key j is visible to a query at position p
        // when j <= p and attention_mask[j] is 1. Bias 0 / -1e9 added to the scores.
        let am_shape = g.op("Shape", &["attention_mask"], &[]);
        let total = g.op("Gather", &[&am_shape, "one_i"], &[]);
        let key_pos = g.op("Range", &["zero_i", &total, "one_i"], &[]);
        let query_pos = g.op("Unsqueeze", &["position_ids", "axis2"], &[]);
        let causal = g.op("LessOrEqual", &[&key_pos, &query_pos], &[]);
        let causal = g.op("Unsqueeze", &[&causal, "axis1"], &[]);
        let padding = g.op("Cast", &["attention_mask"], &[Attr::Int("to", BOOL)]);
        let padding = g.op("Unsqueeze", &[&padding, "axes12"], &[]);
        let visible = g.op("And", &[&causal, &padding], &[]);
        let bias = g.op("Where", &[&visible, "zero_f", "neg_inf"], &[]);

        let mut x = g.op("Gather", &["embed", "input_ids"], &[]);
        for i in 0..self.n_layer {
            let s = 1.0 / (e as f64).sqrt();
            let mut proj = |g: &mut Graph, name: &str, rows: i64, cols: i64, scale: f64| {
                let w = format!("layers.{i}.{name}");
                g.f32s(&w, &[rows, cols], &random((rows * cols) as usize, scale));
                w
            };
            let (wq, wk, wv, wo) = (
                proj(&mut g, "wq", e, e, s),
                proj(&mut g, "wk", e, e, s),
                proj(&mut g, "wv", e, e, s),
                proj(&mut g, "wo", e, e, s),
            );
            let w1 = proj(&mut g, "w1", e, self.n_ff as i64, s);
            let w2 = proj(
                &mut g,
                "w2",
                self.n_ff as i64,
                e,
                1.0 / (self.n_ff as f64).sqrt(),
            );
            let heads = |g: &mut Graph, w: &str| {
                let p = g.op("MatMul", &[&x, w], &[]);
                let p = g.op("Reshape", &[&p, "heads_shape"], &[]);
                g.op("Transpose", &[&p], &[Attr::Ints("perm", &[0, 2, 1, 3])])
            };
            let q = heads(&mut g, &wq);
            let mut attend = Vec::new();
            for (kv, w) in [("key", &wk), ("value", &wv)] {
                let new = heads(&mut g, w);
                let new = if self.kv_fp16 {
                    g.op("Cast", &[&new], &[Attr::Int("to", FLOAT16)])
                } else {
                    new
                };
                let past = format!("past_key_values.{i}.{kv}");
                let present = format!("present.{i}.{kv}");
                if self.with_past {
                    g.node(
                        "Concat",
                        &[&past, &new],
                        &[&present],
                        &[Attr::Int("axis", 2)],
                    );
                } else {
                    g.node("Identity", &[&new], &[&present], &[]);
                }
                g.output(&present, kv_type, &kv_dims("total"));
                attend.push(if self.kv_fp16 {
                    g.op("Cast", &[&present], &[Attr::Int("to", FLOAT)])
                } else {
                    present
                });
            }
            let kt = g.op(
                "Transpose",
                &[&attend[0]],
                &[Attr::Ints("perm", &[0, 1, 3, 2])],
            );
            let scores = g.op("MatMul", &[&q, &kt], &[]);
            let scores = g.op("Mul", &[&scores, "scale"], &[]);
            let scores = g.op("Add", &[&scores, &bias], &[]);
            let probs = g.op("Softmax", &[&scores], &[Attr::Int("axis", -1)]);
            let ctx = g.op("MatMul", &[&probs, &attend[1]], &[]);
            let ctx = g.op("Transpose", &[&ctx], &[Attr::Ints("perm", &[0, 2, 1, 3])]);
            let ctx = g.op("Reshape", &[&ctx, "embd_shape"], &[]);
            let out = g.op("MatMul", &[&ctx, &wo], &[]);
            x = g.op("Add", &[&x, &out], &[]);
            let up = g.op("MatMul", &[&x, &w1], &[]);
            let up = g.op("Tanh", &[&up], &[]);
            let down = g.op("MatMul", &[&up, &w2], &[]);
            x = g.op("Add", &[&x, &down], &[]);
        }
        let norm_scale = 1.0 / (e as f64).sqrt();
        g.f32s("lm_head", &[e, v], &random((e * v) as usize, norm_scale));
        g.node("MatMul", &[&x, "lm_head"], &["logits"], &[]);
        g.output(
            "logits",
            FLOAT,
            &[Dim::Sym("batch"), Dim::Sym("seq"), Dim::Fixed(v)],
        );
        g.model("melt-tiny-decoder", "melt-testkit")
    }

    /// Writes `model.onnx` and `tokenizer.json` into `dir` (created); returns the model path.
    pub fn write(&self, dir: &Path) -> io::Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir)?;
        let model = dir.join("model.onnx");
        std::fs::write(&model, self.build())?;
        std::fs::write(dir.join("tokenizer.json"), tiny_tokenizer_json().0)?;
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_a_bijection_and_tokenizer_is_json() {
        let chars = byte_chars();
        let mut sorted = chars.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
        assert_eq!(chars[b' ' as usize], 'Ġ');
        assert_eq!(chars[b'a' as usize], 'a');
        let (json, n) = tiny_tokenizer_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["model"]["vocab"].as_object().unwrap().len() + 2, n);
    }

    #[test]
    fn dropping_an_input_removes_it_from_the_graph() {
        let full = TinyOnnxLm::default().build();
        let without = TinyOnnxLm {
            drop_input: Some("position_ids".into()),
            ..TinyOnnxLm::default()
        }
        .build();
        let has = |b: &[u8], s: &str| b.windows(s.len()).any(|w| w == s.as_bytes());
        assert!(has(&full, "position_ids"));
        // Still used by a node, but no longer declared as an input.
        assert!(without.len() < full.len());
    }
}
