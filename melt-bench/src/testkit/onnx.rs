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
//! The file is written with a small protobuf encoder over the field numbers of `onnx.proto`
//! (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto).

use std::io;
use std::path::Path;

use crate::stats::Rng;

/// Protobuf wire encoding: just what an ONNX model needs.
#[derive(Default)]
struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.varint(((field as u64) << 3) | wire as u64);
    }
    fn int(&mut self, field: u32, v: i64) {
        self.key(field, 0);
        self.varint(v as u64);
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }
    fn msg(&mut self, field: u32, m: Pb) {
        self.bytes(field, &m.0);
    }
}

/// ONNX `TensorProto.DataType` values used here.
const FLOAT: i64 = 1;
const INT64: i64 = 7;
const BOOL: i64 = 9;
const FLOAT16: i64 = 10;

/// A tensor dimension in a graph input or output.
enum Dim<'a> {
    Fixed(i64),
    Sym(&'a str),
}

enum Attr<'a> {
    Int(&'a str, i64),
    Ints(&'a str, &'a [i64]),
}

#[derive(Default)]
struct Graph {
    nodes: Vec<Pb>,
    initializers: Vec<Pb>,
    inputs: Vec<Pb>,
    outputs: Vec<Pb>,
    next: usize,
}

impl Graph {
    /// A fresh intermediate name.
    fn tmp(&mut self, what: &str) -> String {
        self.next += 1;
        format!("{what}_{}", self.next)
    }

    fn node(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: &[Attr]) {
        let mut n = Pb::default();
        for i in inputs {
            n.str(1, i);
        }
        for o in outputs {
            n.str(2, o);
        }
        n.str(3, &format!("{op}_{}", self.nodes.len()));
        n.str(4, op);
        for a in attrs {
            let mut m = Pb::default();
            match a {
                Attr::Int(name, v) => {
                    m.str(1, name);
                    m.int(3, *v);
                    m.int(20, 2);
                }
                Attr::Ints(name, vs) => {
                    m.str(1, name);
                    for v in *vs {
                        m.int(8, *v);
                    }
                    m.int(20, 7);
                }
            }
            n.msg(5, m);
        }
        self.nodes.push(n);
    }

    /// One node with one fresh output, returned.
    fn op(&mut self, op: &str, inputs: &[&str], attrs: &[Attr]) -> String {
        let out = self.tmp(&op.to_lowercase());
        self.node(op, inputs, &[&out], attrs);
        out
    }

    fn initializer(&mut self, name: &str, data_type: i64, dims: &[i64], raw: Vec<u8>) {
        let mut t = Pb::default();
        for d in dims {
            t.int(1, *d);
        }
        t.int(2, data_type);
        t.str(8, name);
        t.bytes(9, &raw);
        self.initializers.push(t);
    }

    fn f32s(&mut self, name: &str, dims: &[i64], data: &[f32]) {
        let raw = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.initializer(name, FLOAT, dims, raw);
    }

    fn i64s(&mut self, name: &str, dims: &[i64], data: &[i64]) {
        let raw = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.initializer(name, INT64, dims, raw);
    }

    fn value_info(name: &str, elem_type: i64, dims: &[Dim]) -> Pb {
        let mut shape = Pb::default();
        for d in dims {
            let mut dim = Pb::default();
            match d {
                Dim::Fixed(v) => dim.int(1, *v),
                Dim::Sym(s) => dim.str(2, s),
            }
            shape.msg(1, dim);
        }
        let mut tensor = Pb::default();
        tensor.int(1, elem_type);
        tensor.msg(2, shape);
        let mut ty = Pb::default();
        ty.msg(1, tensor);
        let mut vi = Pb::default();
        vi.str(1, name);
        vi.msg(2, ty);
        vi
    }

    fn input(&mut self, name: &str, elem_type: i64, dims: &[Dim]) {
        self.inputs.push(Self::value_info(name, elem_type, dims));
    }

    fn output(&mut self, name: &str, elem_type: i64, dims: &[Dim]) {
        self.outputs.push(Self::value_info(name, elem_type, dims));
    }

    fn model(self) -> Vec<u8> {
        let mut g = Pb::default();
        for n in self.nodes {
            g.msg(1, n);
        }
        g.str(2, "melt-tiny-decoder");
        for t in self.initializers {
            g.msg(5, t);
        }
        for i in self.inputs {
            g.msg(11, i);
        }
        for o in self.outputs {
            g.msg(12, o);
        }
        let mut opset = Pb::default();
        opset.str(1, "");
        opset.int(2, 17);
        let mut m = Pb::default();
        m.int(1, 8); // IR version 8 (ONNX 1.10+)
        m.str(2, "melt-testkit");
        m.msg(7, g);
        m.msg(8, opset);
        m.0
    }
}

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
/// [`MERGES`], and `<s>` / `</s>`; `<s>` is added in front of every encoding with special
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
        g.model()
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
    fn varints_and_fields_are_protobuf() {
        let mut p = Pb::default();
        p.int(1, 300);
        assert_eq!(p.0, [0x08, 0xAC, 0x02]);
        let mut p = Pb::default();
        p.int(3, -1);
        assert_eq!(p.0.len(), 1 + 10, "negative int64 is ten bytes");
        let mut p = Pb::default();
        p.str(2, "ab");
        assert_eq!(p.0, [0x12, 2, b'a', b'b']);
    }

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
