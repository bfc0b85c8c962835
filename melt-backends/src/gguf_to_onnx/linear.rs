//! The export's weight matrices in the precision asked for: f32 `MatMul` operands, or ONNX
//! Runtime's block-quantized ones ([`super::nbits`]). The graph is the same either way; only
//! the nodes that multiply by a weight matrix (and the embedding lookup) change.

use llama_cpp_sys_2 as sys;
use melt_formats::onnx_proto::Graph;

use super::nbits::Blocks;
use super::{pairs_to_halves, ExportError, Weights};

/// The precision of an export's weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quant {
    /// Every weight dequantized to f32: what llama.cpp computes from the file, exactly.
    #[default]
    F32,
    /// Weight matrices and the embedding as blocks of 32 (`MatMulNBits`,
    /// `GatherBlockQuantized`): 4-bit where the GGUF holds 4 bits a weight or fewer, 8-bit
    /// where it holds more (a "Q4_K_M" file keeps most matrices at Q5_0, some at Q6_K and its
    /// embedding at Q8_0; 4 bits there would cost what llama.cpp chose not to pay: measured on
    /// Gemma 3 270M, KL-divergence 0.17 instead of 0.04). Norms stay f32.
    Int4,
}

impl Quant {
    /// What the export's `quantization` metadata says.
    pub fn label(self) -> &'static str {
        match self {
            Quant::F32 => "F32",
            Quant::Int4 => "INT4",
        }
    }
}

impl std::str::FromStr for Quant {
    type Err = String;

    fn from_str(s: &str) -> Result<Quant, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Quant::F32),
            "int4" => Ok(Quant::Int4),
            _ => Err(format!("unknown quantization `{s}` (f32, int4)")),
        }
    }
}

/// A weight matrix in the graph, multiplied by with [`Linear::apply`].
pub(crate) enum Linear {
    /// An initializer of shape `[n_in, n_out]`, the right operand of `MatMul`.
    F32(String),
    /// Blocks of `n_out` rows of `n_in`, written when applied under this name.
    Blocks(Blocks, String),
}

/// The width of the blocks a GGUF tensor of `ggml_type` becomes in a [`Quant::Int4`] export.
pub(crate) fn block_bits(ggml_type: u32) -> u8 {
    match ggml_type as sys::ggml_type {
        sys::GGML_TYPE_Q5_0
        | sys::GGML_TYPE_Q5_1
        | sys::GGML_TYPE_Q5_K
        | sys::GGML_TYPE_Q6_K
        | sys::GGML_TYPE_Q8_0
        | sys::GGML_TYPE_Q8_1
        | sys::GGML_TYPE_Q8_K
        | sys::GGML_TYPE_F16
        | sys::GGML_TYPE_BF16
        | sys::GGML_TYPE_F32 => 8,
        _ => 4,
    }
}

/// `w` (row-major `rows × cols`) in blocks as wide as the GGUF tensor's type calls for.
pub(crate) fn blocks_for(ggml_type: u32, w: &[f32], rows: usize, cols: usize) -> Blocks {
    match block_bits(ggml_type) {
        8 => Blocks::quantize8(w, rows, cols),
        _ => Blocks::quantize4(w, rows, cols),
    }
}

impl Linear {
    /// Reads the GGUF's `{n_in → n_out}` matrix `gguf_name` and stores it as `name`.
    /// `heads` (`n_heads`, `head_dim`) reorders each head's outputs from llama.cpp's adjacent
    /// RoPE pairs to halves.
    pub(crate) fn load(
        w: &mut Weights,
        g: &mut Graph,
        quant: Quant,
        gguf_name: &str,
        name: &str,
        (n_in, n_out): (u64, u64),
        heads: Option<(usize, usize)>,
    ) -> Result<Linear, ExportError> {
        match quant {
            Quant::F32 => {
                let mut m = w.linear(gguf_name, n_in, n_out)?;
                if let Some((n_heads, head_dim)) = heads {
                    m = pairs_to_halves(&m, n_in as usize, n_heads, head_dim);
                }
                g.f32s(name, &[n_in as i64, n_out as i64], &m);
                Ok(Linear::F32(name.to_string()))
            }
            Quant::Int4 => {
                // ggml's [n_in, n_out] is a row of n_in inputs per output: the blocks' layout.
                let mut rows = w.get(gguf_name, &[n_in, n_out])?;
                if let Some((n_heads, head_dim)) = heads {
                    rows = rows_pairs_to_halves(&rows, n_in as usize, n_heads, head_dim);
                }
                let ty = w.g.tensor(gguf_name).map_or(0, |t| t.ggml_type);
                Ok(Linear::Blocks(
                    blocks_for(ty, &rows, n_out as usize, n_in as usize),
                    name.to_string(),
                ))
            }
        }
    }

    /// `x · W`: `[…, n_in]` → `[…, n_out]`.
    pub(crate) fn apply(&self, g: &mut Graph, x: &str) -> String {
        match self {
            Linear::F32(name) => g.op("MatMul", &[x, name], &[]),
            Linear::Blocks(blocks, name) => {
                let stored = blocks.store(g, name);
                blocks.matmul(g, x, &stored)
            }
        }
    }
}

/// [`pairs_to_halves`] for a matrix stored a row per output: permutes rows.
fn rows_pairs_to_halves(w: &[f32], n_in: usize, n_heads: usize, head_dim: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_heads {
        for j in 0..head_dim {
            let old = if j < half { 2 * j } else { 2 * (j - half) + 1 };
            let (to, from) = ((h * head_dim + j) * n_in, (h * head_dim + old) * n_in);
            out[to..to + n_in].copy_from_slice(&w[from..from + n_in]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_permuted_as_pairs_to_halves_permutes_columns() {
        let (n_in, n_heads, head_dim) = (3, 2, 4);
        let n_out = n_heads * head_dim;
        // Row-major [n_out][n_in] and its transpose [n_in][n_out].
        let rows: Vec<f32> = (0..n_out * n_in).map(|i| i as f32).collect();
        let cols: Vec<f32> = (0..n_in * n_out)
            .map(|i| rows[(i % n_out) * n_in + i / n_out])
            .collect();
        let by_rows = rows_pairs_to_halves(&rows, n_in, n_heads, head_dim);
        let by_cols = pairs_to_halves(&cols, n_in, n_heads, head_dim);
        for o in 0..n_out {
            for i in 0..n_in {
                assert_eq!(by_rows[o * n_in + i], by_cols[i * n_out + o]);
            }
        }
    }
}
