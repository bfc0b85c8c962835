//! The `tokenizer.json` (Hugging Face `tokenizers`) that ONNX and TorchScript models carry
//! beside them: loading it, its BOS, and the [`melt_core::Session`] tokenization both of
//! those backends share.

use std::path::Path;

use melt_core::Token;
use tokenizers::Tokenizer;

/// The model directory's `tokenizer.json`; the error names the file.
pub(crate) fn beside(model: &Path) -> Result<Tokenizer, String> {
    let path = model.with_file_name("tokenizer.json");
    Tokenizer::from_file(&path)
        .map_err(|e| format!("its tokenizer {} could not be read: {e}", path.display()))
}

/// The token the tokenizer puts first when asked for special tokens, if any.
pub(crate) fn bos(t: &Tokenizer) -> Option<Token> {
    t.encode("", true)
        .ok()
        .and_then(|e| e.get_ids().first().copied())
        .map(|id| id as Token)
}

pub(crate) fn encode(t: &Tokenizer, text: &str, add_special: bool) -> Result<Vec<Token>, String> {
    let enc = t
        .encode(text, add_special)
        .map_err(|e| format!("tokenizing: {e}"))?;
    Ok(enc.get_ids().iter().map(|&id| id as Token).collect())
}

pub(crate) fn decode(t: &Tokenizer, tokens: &[Token]) -> Result<String, String> {
    let ids: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
    t.decode(&ids, true)
        .map_err(|e| format!("detokenizing: {e}"))
}

/// Token texts that end a turn in the common chat formats (what llama.cpp also treats as
/// end of generation when a vocabulary has them).
const END_OF_TURN: [&str; 7] = [
    "</s>",
    "<eos>",
    "<end_of_turn>",
    "<|eot_id|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|end|>",
];

/// The tokens that end an answer: the `eos_token_id` (one or a list) of the model directory's
/// `generation_config.json` and `config.json`, `tokenizer_config.json`'s `eos_token`, and the
/// tokenizer's end-of-turn tokens by name.
pub(crate) fn end_of_generation(model: &Path, t: &Tokenizer) -> Vec<Token> {
    let json = |name: &str| -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(model.with_file_name(name)).ok()?;
        serde_json::from_str(&text).ok()
    };
    let mut ids: Vec<Token> = Vec::new();
    for name in ["generation_config.json", "config.json"] {
        match json(name).as_ref().and_then(|v| v.get("eos_token_id")) {
            Some(serde_json::Value::Number(n)) => ids.extend(n.as_i64().map(|i| i as Token)),
            Some(serde_json::Value::Array(list)) => {
                ids.extend(list.iter().filter_map(|n| n.as_i64()).map(|i| i as Token))
            }
            _ => {}
        }
    }
    let named = json("tokenizer_config.json").and_then(|v| {
        v.get("eos_token")
            .and_then(|e| e.as_str())
            .map(String::from)
    });
    for text in named.iter().map(String::as_str).chain(END_OF_TURN) {
        ids.extend(t.token_to_id(text).map(|id| id as Token));
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}
