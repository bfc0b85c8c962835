//! What an ONNX decoder graph says about itself (layers, KV shapes and types, logits, which
//! optional inputs it takes), read from its inputs and outputs and checked against the
//! convention the backend drives.

use std::collections::BTreeMap;
use std::path::Path;

use melt_core::backend::BackendError;
use ort::value::{TensorElementType, ValueType};

/// The KV cache element type of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KvType {
    F32,
    F16,
}

/// What the graph says about itself, checked against the convention.
#[derive(Debug, Clone)]
pub(super) struct Convention {
    pub(super) n_layer: usize,
    pub(super) kv_heads: usize,
    pub(super) head_dim: usize,
    pub(super) kv: KvType,
    pub(super) logits_f16: bool,
    pub(super) n_vocab: Option<usize>,
    /// An input choosing how many positions' logits the graph computes (melt's exports have
    /// it): runs that need only the last position's ask for 1, and the output head runs on one
    /// row.
    pub(super) has_logits_to_keep: bool,
    pub(super) has_attention_mask: bool,
    pub(super) has_position_ids: bool,
    pub(super) has_cache_branch: bool,
    /// Whether the past may be a buffer of the whole context that is also the present: set by
    /// the loader from the graph's operators (`GroupQueryAttention` at every layer).
    pub(super) shares_kv_buffer: bool,
}

fn tensor_of(t: &ValueType) -> Option<(TensorElementType, Vec<i64>)> {
    match t {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.to_vec())),
        _ => None,
    }
}

impl Convention {
    pub(super) fn read(
        session: &ort::session::Session,
        path: &Path,
    ) -> Result<Convention, BackendError> {
        let bad = |reason: String| BackendError::Model {
            path: path.to_path_buf(),
            reason,
        };
        let inputs: BTreeMap<&str, &ValueType> = session
            .inputs()
            .iter()
            .map(|o| (o.name(), o.dtype()))
            .collect();
        let outputs: BTreeMap<&str, &ValueType> = session
            .outputs()
            .iter()
            .map(|o| (o.name(), o.dtype()))
            .collect();
        let names =
            |m: &BTreeMap<&str, &ValueType>| m.keys().copied().collect::<Vec<_>>().join(", ");
        for required in ["input_ids"] {
            if !inputs.contains_key(required) {
                return Err(bad(format!(
                    "the graph has no input `{required}`, so it is not a decoder in the Optimum/onnxruntime-genai convention (its inputs: {})",
                    names(&inputs)
                )));
            }
        }
        let Some((logits_ty, logits_shape)) = outputs.get("logits").and_then(|t| tensor_of(t))
        else {
            return Err(bad(format!(
                "the graph has no tensor output `logits` (its outputs: {})",
                names(&outputs)
            )));
        };
        let logits_f16 = match logits_ty {
            TensorElementType::Float32 => false,
            TensorElementType::Float16 => true,
            other => return Err(bad(format!("`logits` are {other}; melt reads f32 or f16"))),
        };
        let n_vocab = logits_shape
            .last()
            .and_then(|&v| usize::try_from(v).ok())
            .filter(|&v| v > 0);
        let mut n_layer = 0;
        while inputs.contains_key(format!("past_key_values.{n_layer}.key").as_str()) {
            n_layer += 1;
        }
        if n_layer == 0 {
            return Err(bad(format!(
                "the graph has no input `past_key_values.0.key`: melt measures decoders exported with their KV cache (Optimum `--task text-generation-with-past`); its inputs: {}",
                names(&inputs)
            )));
        }
        let mut kv_shape = None;
        let mut kv_type = None;
        for i in 0..n_layer {
            for kv in ["key", "value"] {
                let input = format!("past_key_values.{i}.{kv}");
                let output = format!("present.{i}.{kv}");
                let Some((ty, shape)) = inputs.get(input.as_str()).and_then(|t| tensor_of(t))
                else {
                    return Err(bad(format!("the graph has no tensor input `{input}`")));
                };
                if !outputs.contains_key(output.as_str()) {
                    return Err(bad(format!(
                        "the graph takes `{input}` but has no output `{output}`"
                    )));
                }
                let ty = match ty {
                    TensorElementType::Float32 => KvType::F32,
                    TensorElementType::Float16 => KvType::F16,
                    other => {
                        return Err(bad(format!(
                            "`{input}` is {other}; melt drives f32 or f16 KV caches"
                        )))
                    }
                };
                if shape.len() != 4 || shape[1] <= 0 || shape[3] <= 0 {
                    return Err(bad(format!(
                        "`{input}` has shape {shape:?}; expected [batch, kv_heads, past, head_dim] with fixed kv_heads and head_dim"
                    )));
                }
                let dims = (shape[1] as usize, shape[3] as usize);
                if *kv_shape.get_or_insert(dims) != dims || *kv_type.get_or_insert(ty) != ty {
                    return Err(bad(format!(
                        "`{input}` differs from `past_key_values.0.key` in shape or type"
                    )));
                }
            }
        }
        let known = |name: &str| {
            matches!(
                name,
                "input_ids"
                    | "attention_mask"
                    | "position_ids"
                    | "use_cache_branch"
                    | "logits_to_keep"
            ) || name.starts_with("past_key_values.")
        };
        if let Some(other) = inputs.keys().find(|n| !known(n)) {
            return Err(bad(format!(
                "the graph has an input `{other}` that the decoder convention melt drives does not have (input_ids, attention_mask, position_ids, past_key_values.*, use_cache_branch, logits_to_keep)"
            )));
        }
        let (kv_heads, head_dim) = kv_shape.expect("n_layer > 0");
        Ok(Convention {
            n_layer,
            kv_heads,
            head_dim,
            kv: kv_type.expect("n_layer > 0"),
            logits_f16,
            n_vocab,
            has_logits_to_keep: inputs.contains_key("logits_to_keep"),
            has_attention_mask: inputs.contains_key("attention_mask"),
            has_position_ids: inputs.contains_key("position_ids"),
            has_cache_branch: inputs.contains_key("use_cache_branch"),
            shares_kv_buffer: false,
        })
    }
}
