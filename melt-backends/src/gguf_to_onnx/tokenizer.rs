//! A `tokenizer.json` (the `tokenizers` crate's format) from a GGUF SentencePiece vocabulary
//! (`tokenizer.ggml.model = "llama"`: tokens, scores, token types).
//!
//! llama.cpp's SentencePiece tokenizer starts from characters and repeatedly merges the
//! adjacent pair whose concatenation is the highest-scoring token; characters that are not
//! tokens fall back to `<0xXX>` byte tokens. The same is a BPE model whose merges are every
//! split `(a, b)` of every token `a+b` (both halves tokens themselves), ranked by the score of
//! `a+b` — the conversion Hugging Face's own `SentencePieceExtractor` makes — with byte
//! fallback. (BPE merges need both halves to be tokens; SentencePiece vocabularies hold every
//! character of every piece, so nothing is lost.) Spaces become `▁` (and a leading `▁` is prepended when the GGUF says
//! `add_space_prefix`); control, unknown and user-defined tokens are added tokens.

use std::collections::HashMap;

use melt_formats::gguf::{Gguf, Value};
use serde_json::json;

use super::{unsupported, ExportError};

/// GGUF token types (llama.cpp `llama_token_type`).
const NORMAL: i64 = 1;
const UNKNOWN: i64 = 2;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;
const BYTE: i64 = 6;

fn int(v: &Value) -> Option<i64> {
    match *v {
        Value::I32(x) => Some(x.into()),
        Value::I64(x) => Some(x),
        _ => v.as_u64().map(|x| x as i64),
    }
}

pub(crate) fn from_gguf(g: &Gguf) -> Result<String, ExportError> {
    let model = g
        .get("tokenizer.ggml.model")
        .and_then(Value::as_str)
        .unwrap_or("(none)");
    if model != "llama" {
        return Err(unsupported(
            g,
            format!("tokenizer model `{model}` (SentencePiece `llama` is supported)"),
        ));
    }
    let tokens: Vec<&str> = g
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .ok_or_else(|| unsupported(g, "no tokenizer.ggml.tokens"))?
        .iter()
        .map(|t| t.as_str().unwrap_or(""))
        .collect();
    let n = tokens.len();
    let array = |key: &str| {
        g.get(key)
            .and_then(Value::as_array)
            .filter(|a| a.len() == n)
    };
    let scores: Vec<f64> = array("tokenizer.ggml.scores")
        .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(0.0)).collect())
        .unwrap_or_else(|| vec![0.0; n]);
    let types: Vec<i64> = array("tokenizer.ggml.token_type")
        .map(|a| a.iter().map(|x| int(x).unwrap_or(NORMAL)).collect())
        .unwrap_or_else(|| vec![NORMAL; n]);
    let id_of = |key: &str| {
        g.get(key)
            .and_then(Value::as_u64)
            .filter(|&i| (i as usize) < n)
    };
    let bos = id_of("tokenizer.ggml.bos_token_id");
    let unk = id_of("tokenizer.ggml.unknown_token_id");
    let flag = |key: &str, default: bool| g.get(key).and_then(Value::as_bool).unwrap_or(default);
    let add_bos = flag("tokenizer.ggml.add_bos_token", true) && bos.is_some();
    let add_space_prefix = flag("tokenizer.ggml.add_space_prefix", true);

    // token → id, first occurrence winning (as llama.cpp's text_to_token map).
    let mut vocab: HashMap<&str, usize> = HashMap::with_capacity(n);
    for (i, t) in tokens.iter().enumerate() {
        vocab.entry(t).or_insert(i);
    }
    let mergeable = |id: usize| matches!(types[id], NORMAL | USER_DEFINED | BYTE);
    let mut merges: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (id, t) in tokens.iter().enumerate() {
        if types[id] != NORMAL || vocab[t] != id {
            continue;
        }
        for (k, _) in t.char_indices().skip(1) {
            let (a, b) = t.split_at(k);
            if let (Some(&ia), Some(&ib)) = (vocab.get(a), vocab.get(b)) {
                if mergeable(ia) && mergeable(ib) {
                    merges.push((scores[id], id, ia, ib));
                }
            }
        }
    }
    // Highest score first; ties in a fixed order so the file is reproducible.
    merges.sort_by(|x, y| {
        y.0.total_cmp(&x.0)
            .then(x.1.cmp(&y.1))
            .then(x.2.cmp(&y.2))
            .then(x.3.cmp(&y.3))
    });

    let vocab_json: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .filter(|(i, t)| vocab[*t] == *i)
        .map(|(i, t)| (t.to_string(), json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .enumerate()
        .filter(|(i, t)| matches!(types[*i], UNKNOWN | CONTROL | USER_DEFINED) && vocab[*t] == *i)
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": types[i] != USER_DEFINED})
        })
        .collect();
    let space = json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
    let normalizer = if add_space_prefix {
        json!({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u{2581}"}, space]})
    } else {
        space
    };
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if add_space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let post_processor = match bos.filter(|_| add_bos) {
        Some(b) => {
            let t = tokens[b as usize];
            json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {t: {"id": t, "ids": [b], "tokens": [t]}}
            })
        }
        None => serde_json::Value::Null,
    };
    let json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": null,
        "post_processor": post_processor,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE", "dropout": null,
            "unk_token": unk.map(|u| tokens[u as usize]),
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab_json,
            "merges": merges.iter().map(|m| [tokens[m.2], tokens[m.3]]).collect::<Vec<_>>(),
        }
    });
    Ok(serde_json::to_string(&json).expect("a JSON value serializes"))
}
