//! The `tokenizer.json` (Hugging Face `tokenizers`) that ONNX and TorchScript models carry
//! beside them: loading it, its BOS, and the [`melt_bench::Session`] tokenization both of
//! those backends share.

use std::path::Path;

use melt_bench::Token;
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
