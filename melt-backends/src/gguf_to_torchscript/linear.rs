//! The export's weight matrices in the precision asked for, and the one way each is multiplied
//! by. Activations, norms, attention and the KV cache stay f32 in every precision: only what
//! streams from memory once per token — the weights — gets narrower, which is what decides
//! decode speed on a CPU.

use tch::{Kind, Tensor};

/// How an export stores its weight matrices and embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Every weight as ggml dequantizes it: what llama.cpp computes from the file, exactly.
    #[default]
    F32,
    /// bfloat16 weights (f32's exponent, 8 bits of mantissa); each product takes its
    /// activations to bf16 and its result back to f32.
    Bf16,
    /// int8 weight-only, as torchao's `int8_weight_only`: one symmetric scale per output row,
    /// multiplied by libtorch's `_weight_int8pack_mm` (f32 activations, int8 weights).
    /// libtorch's dynamic quantization (int8 activations too) needs packed-parameter objects
    /// that a traced module cannot hold; this is the int8 path a trace can carry.
    Int8,
}

impl Precision {
    /// What the report calls it (`ModelInfo::quantization`).
    pub fn label(self) -> &'static str {
        match self {
            Precision::F32 => "F32",
            Precision::Bf16 => "BF16",
            Precision::Int8 => "INT8",
        }
    }

    /// `config.json`'s `torch_dtype`: the weights' type, or f32 for the int8 scheme (whose
    /// `quantization_config` says the rest).
    pub fn torch_dtype(self) -> &'static str {
        match self {
            Precision::Bf16 => "bfloat16",
            Precision::F32 | Precision::Int8 => "float32",
        }
    }

    /// `config.json`'s `quantization_config`, where the weights are quantized.
    pub fn quantization_config(self) -> Option<serde_json::Value> {
        (self == Precision::Int8).then(|| {
            serde_json::json!({
                "quant_method": "int8_weight_only",
                "bits": 8,
                "granularity": "per_channel",
                "symmetric": true,
            })
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Precision, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "int8" => Ok(Precision::Int8),
            _ => Err(format!("unknown precision `{s}` (f32, bf16, int8)")),
        }
    }
}

/// A weight matrix of the traced module, multiplied by with [`Linear::apply`].
pub(crate) enum Linear {
    /// f32 `[n_in, n_out]`, the right operand as it is — the embedding table too, looked up
    /// through its transpose. oneMKL's one-row SGEMM reads this layout faster: the 262144-wide
    /// head of Gemma 3 270M takes 30–42 ms a token against 53–68 ms from rows (2 threads).
    F32(Tensor),
    /// bf16 `[n_out, n_in]`: libtorch's bf16 one-row product has a fast path for this layout
    /// only (the head: 21–22 ms; from columns, 1.1–1.2 s).
    Bf16Rows(Tensor),
    /// int8 `[n_out, n_in]` codes and their f32 scales `[n_out]`: `w = code · scale`.
    Int8Rows { codes: Tensor, scales: Tensor },
}

impl Linear {
    /// A `[n_in, n_out]` f32 matrix (`x · W`) stored in `precision`.
    pub(crate) fn columns(precision: Precision, w: Tensor) -> Linear {
        match precision {
            Precision::F32 => Linear::F32(w),
            _ => Linear::rows(precision, w.tr().contiguous()),
        }
    }

    /// A `[n_out, n_in]` f32 matrix (one row per output) stored in `precision`.
    pub(crate) fn rows(precision: Precision, w: Tensor) -> Linear {
        match precision {
            Precision::F32 => Linear::F32(w.tr().contiguous()),
            Precision::Bf16 => Linear::Bf16Rows(w.to_kind(Kind::BFloat16)),
            Precision::Int8 => {
                // Symmetric per row: the row's largest magnitude is ±127 steps.
                let scales = w.abs().amax(1i64, false).clamp_min(1e-30) / 127.0;
                let codes = (&w / scales.unsqueeze(1))
                    .round()
                    .clamp(-127.0, 127.0)
                    .to_kind(Kind::Int8);
                Linear::Int8Rows { codes, scales }
            }
        }
    }

    /// `x · W`: f32 `[1, n, n_in]` → f32 `[1, n, n_out]`.
    pub(crate) fn apply(&self, x: &Tensor) -> Tensor {
        match self {
            Linear::F32(w) => x.matmul(w),
            Linear::Bf16Rows(w) => x
                .to_kind(Kind::BFloat16)
                .matmul(&w.tr())
                .to_kind(Kind::Float),
            Linear::Int8Rows { codes, scales } => {
                let n_in = codes.size()[1];
                // The kernel takes a 2-D, contiguous left operand.
                let flat = x.reshape([-1, n_in]).contiguous();
                flat.internal_weight_int8pack_mm(codes, scales).unsqueeze(0)
            }
        }
    }

    /// Rows `ids` `[n]` of a row-major matrix (the embedding lookup), as f32 `[n, n_in]`.
    pub(crate) fn lookup(&self, ids: &Tensor) -> Tensor {
        match self {
            Linear::F32(w) => w.tr().index_select(0, ids),
            Linear::Bf16Rows(w) => w.index_select(0, ids).to_kind(Kind::Float),
            Linear::Int8Rows { codes, scales } => {
                codes.index_select(0, ids).to_kind(Kind::Float)
                    * scales.index_select(0, ids).unsqueeze(-1)
            }
        }
    }

    /// The weights the module multiplies by, as f32 `[n_out, n_in]` (for tests).
    #[cfg(test)]
    pub(crate) fn dequantized(&self) -> Tensor {
        match self {
            Linear::F32(w) => w.tr().contiguous(),
            Linear::Bf16Rows(w) => w.to_kind(Kind::Float),
            Linear::Int8Rows { codes, scales } => codes.to_kind(Kind::Float) * scales.unsqueeze(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    const F32: (Kind, Device) = (Kind::Float, Device::Cpu);

    fn worst(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn precisions_parse_and_unknown_ones_are_named() {
        assert_eq!("BF16".parse(), Ok(Precision::Bf16));
        assert_eq!("int8".parse(), Ok(Precision::Int8));
        let e = "int4".parse::<Precision>().unwrap_err();
        assert!(e.contains("int4") && e.contains("f32, bf16, int8"), "{e}");
    }

    #[test]
    fn int8_rows_are_symmetric_per_row_and_multiply_as_they_dequantize() {
        tch::manual_seed(7);
        // [n_in, n_out], one output row scaled far above the others.
        let w = Tensor::randn([64, 48], F32);
        let _ = w.narrow(1, 5, 1).g_mul_scalar_(40.0);
        let l = Linear::columns(Precision::Int8, w.shallow_clone());
        let Linear::Int8Rows { codes, scales } = &l else {
            panic!("int8 stores rows of codes")
        };
        assert_eq!(codes.kind(), Kind::Int8);
        assert_eq!(codes.size(), [48, 64]);
        // Every row's largest weight is ±127 steps of its own scale.
        let peak = codes.to_kind(Kind::Int).abs().amax(1i64, false);
        assert_eq!(peak.min().int64_value(&[]), 127);
        // Each weight comes back within half a step of its row.
        let error = (l.dequantized() - w.tr()).abs();
        let half_step = scales.unsqueeze(1) * 0.5 + 1e-7;
        assert_eq!(error.le_tensor(&half_step).all().int64_value(&[]), 1);
        // libtorch's kernel multiplies by exactly those weights (rows × scales, not columns).
        let x = Tensor::randn([1, 3, 64], F32);
        let want = x.matmul(&l.dequantized().tr());
        let got = l.apply(&x);
        assert_eq!(got.size(), [1, 3, 48]);
        let tol = 1e-4 * want.abs().max().double_value(&[]);
        assert!(worst(&got, &want) < tol, "{}", worst(&got, &want));
        // The lookup reads the same rows.
        let ids = Tensor::from_slice(&[5i64, 0, 47]);
        let rows = l.dequantized().index_select(0, &ids);
        assert!(worst(&l.lookup(&ids), &rows) < 1e-6);
    }

    #[test]
    fn bf16_rows_round_the_weights_and_return_f32() {
        tch::manual_seed(8);
        let w = Tensor::randn([32, 16], F32);
        let l = Linear::columns(Precision::Bf16, w.shallow_clone());
        let Linear::Bf16Rows(stored) = &l else {
            panic!("bf16 stores rows")
        };
        assert_eq!(stored.kind(), Kind::BFloat16);
        // bf16 keeps 8 significant bits: within 2^-8 of each weight, relatively.
        let rel = ((l.dequantized() - w.tr()).abs() / w.tr().abs().clamp_min(1e-30)).max();
        let rel = rel.double_value(&[]);
        assert!(rel > 0.0 && rel <= 1.0 / 256.0, "{rel}");
        let x = Tensor::randn([1, 2, 32], F32);
        let got = l.apply(&x);
        assert_eq!(got.kind(), Kind::Float);
        let want = x.matmul(&w);
        let tol = 2e-2 * want.abs().max().double_value(&[]);
        assert!(worst(&got, &want) < tol, "{}", worst(&got, &want));
    }

    #[test]
    fn f32_is_the_matrix_as_given() {
        let w = Tensor::randn([8, 4], F32);
        let x = Tensor::randn([1, 2, 8], F32);
        let l = Linear::columns(Precision::F32, w.shallow_clone());
        assert_eq!(worst(&l.apply(&x), &x.matmul(&w)), 0.0);
        let rows = Linear::rows(Precision::F32, w.tr().contiguous());
        assert!(worst(&rows.apply(&x), &x.matmul(&w)) < 1e-6);
    }
}
