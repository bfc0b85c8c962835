//! ONNX Runtime's block-quantized weights, as its `MatMulNBits` and `GatherBlockQuantized`
//! operators (`com.microsoft`) read them: blocks of 32 along the input dimension, each with an
//! f32 scale and a zero point, `w = (q − zero_point) · scale`, the codes 4 or 8 bits wide.
//!
//! The GGUF's weights are dequantized by ggml first, then each block is quantized again:
//! 4-bit blocks by round-to-nearest over the block's range (widened to hold 0, as ONNX
//! Runtime's own quantizer does), so a Q4_0 block that spans all 16 levels comes back
//! exactly; 8-bit blocks symmetrically around 128, so a Q8_0 block comes back exactly.

use melt_formats::onnx_proto::{Attr, Graph};

/// Weights per block along the input dimension (llama.cpp's Q4_0, Q5_0 and Q8_0 use 32 too).
pub const BLOCK: usize = 32;

/// `MatMulNBits`'s `accuracy_level` written into the graph: 4 multiplies 8-bit quantized
/// activations by the weights, as llama.cpp's CPU kernels do.
pub const ACCURACY_LEVEL: i64 = 4;

fn code4(x: f32, scale: f32, zp: u8) -> u8 {
    (x / scale + zp as f32).round().clamp(0.0, 15.0) as u8
}

/// The (scale, zero point) for one block of 4-bit codes with the least squared error: the
/// range fit (widened to hold 0, as ONNX Runtime's quantizer does), and fits of the block's
/// own range over 14.5 to 15.5 steps with the nearest zero points.
fn fit4(block: &[f32]) -> (f32, u8) {
    let lo = block.iter().fold(f32::INFINITY, |m, &x| m.min(x));
    let hi = block.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    if hi <= lo {
        // Every weight the same: one level holds it exactly.
        return if lo == 0.0 {
            (1.0, 0)
        } else {
            (lo.abs(), if lo > 0.0 { 0 } else { 2 })
        };
    }
    let error = |scale: f32, zp: u8| -> f32 {
        block
            .iter()
            .map(|&x| {
                let back = (code4(x, scale, zp) as f32 - zp as f32) * scale;
                (back - x) * (back - x)
            })
            .sum()
    };
    let (lo0, hi0) = (lo.min(0.0), hi.max(0.0));
    let scale0 = (hi0 - lo0) / 15.0;
    let mut best = (scale0, (-lo0 / scale0).round().clamp(0.0, 15.0) as u8);
    let mut best_err = error(best.0, best.1);
    for step in 0..=10 {
        let scale = (hi - lo) / (14.5 + step as f32 * 0.1);
        let z = -lo / scale;
        for zp in [z.floor(), z.ceil()] {
            let zp = zp.clamp(0.0, 15.0) as u8;
            let err = error(scale, zp);
            if err < best_err {
                (best, best_err) = ((scale, zp), err);
            }
        }
    }
    best
}

/// A matrix of `rows` × `cols` (each row a block-quantized vector of `cols` inputs).
#[derive(Debug, Clone, PartialEq)]
pub struct Blocks {
    /// 4 or 8.
    pub bits: u8,
    pub rows: usize,
    pub cols: usize,
    /// The codes, row by row; at 4 bits two a byte, the lower index in the low nibble.
    pub codes: Vec<u8>,
    /// `rows × blocks_per_row`.
    pub scales: Vec<f32>,
    /// One per block, `rows × blocks_per_row` (packed only when written).
    pub zero_points: Vec<u8>,
}

/// The initializers of a matrix written for `MatMulNBits` (the embedding lookup reads the
/// same codes).
pub struct Stored {
    codes: String,
    scales: String,
    zero_points: String,
}

impl Blocks {
    pub fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK
    }

    fn new(bits: u8, rows: usize, cols: usize) -> Blocks {
        assert!(
            cols % BLOCK == 0,
            "{cols} inputs are no whole number of blocks"
        );
        Blocks {
            bits,
            rows,
            cols,
            codes: vec![0; rows * cols * bits as usize / 8],
            scales: vec![0.0; rows * cols / BLOCK],
            zero_points: vec![0; rows * cols / BLOCK],
        }
    }

    fn put(&mut self, at: usize, q: u8) {
        if self.bits == 8 {
            self.codes[at] = q;
        } else {
            self.codes[at / 2] |= q << (4 * (at % 2));
        }
    }

    fn code(&self, at: usize) -> u8 {
        if self.bits == 8 {
            self.codes[at]
        } else {
            (self.codes[at / 2] >> (4 * (at % 2))) & 15
        }
    }

    /// 4-bit blocks of `w` (row-major `rows × cols`), asymmetric: each block's scale and
    /// zero point are the pair, of a few around its range, that leaves the least squared
    /// error (a re-quantized Q4_K block's offset is no whole number of its steps, so the
    /// plain range fit shifts every weight by up to half a step).
    pub fn quantize4(w: &[f32], rows: usize, cols: usize) -> Blocks {
        let mut out = Blocks::new(4, rows, cols);
        for (b, block) in w.chunks_exact(BLOCK).enumerate() {
            let (scale, zp) = fit4(block);
            (out.scales[b], out.zero_points[b]) = (scale, zp);
            for (i, &x) in block.iter().enumerate() {
                out.put(b * BLOCK + i, code4(x, scale, zp));
            }
        }
        out
    }

    /// 8-bit blocks of `w`, symmetric: the zero point is 128 and the block's largest
    /// magnitude is ±127 steps.
    pub fn quantize8(w: &[f32], rows: usize, cols: usize) -> Blocks {
        let mut out = Blocks::new(8, rows, cols);
        for (b, block) in w.chunks_exact(BLOCK).enumerate() {
            let amax = block.iter().fold(0f32, |m, &x| m.max(x.abs()));
            let scale = if amax > 0.0 { amax / 127.0 } else { 1.0 };
            (out.scales[b], out.zero_points[b]) = (scale, 128);
            for (i, &x) in block.iter().enumerate() {
                out.put(
                    b * BLOCK + i,
                    ((x / scale).round() + 128.0).clamp(0.0, 255.0) as u8,
                );
            }
        }
        out
    }

    /// The weights ONNX Runtime computes with, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        (0..self.rows * self.cols)
            .map(|at| {
                let b = at / BLOCK;
                (self.code(at) as f32 - self.zero_points[b] as f32) * self.scales[b]
            })
            .collect()
    }

    /// Zero points as `MatMulNBits` takes them: at 4 bits two a byte along each row.
    fn packed_zero_points(&self) -> (Vec<u8>, usize) {
        if self.bits == 8 {
            return (self.zero_points.clone(), self.blocks_per_row());
        }
        let per_row = self.blocks_per_row().div_ceil(2);
        let mut out = vec![0u8; self.rows * per_row];
        for (b, &zp) in self.zero_points.iter().enumerate() {
            let (r, i) = (b / self.blocks_per_row(), b % self.blocks_per_row());
            out[r * per_row + i / 2] |= zp << (4 * (i % 2));
        }
        (out, per_row)
    }

    /// Writes the codes `[rows, blocks, bytes a block]`, scales `[rows, blocks]` and zero
    /// points under `name`.
    pub fn store(&self, g: &mut Graph, name: &str) -> Stored {
        let (rows, per_row) = (self.rows as i64, self.blocks_per_row() as i64);
        let s = Stored {
            codes: format!("{name}.q{}", self.bits),
            scales: format!("{name}.scales"),
            zero_points: format!("{name}.zero_points"),
        };
        let blob = (BLOCK * self.bits as usize / 8) as i64;
        g.u8s(&s.codes, &[rows, per_row, blob], self.codes.clone());
        g.f32s(&s.scales, &[rows, per_row], &self.scales);
        let (zps, zp_row) = self.packed_zero_points();
        g.u8s(&s.zero_points, &[rows, zp_row as i64], zps);
        s
    }

    /// `x · Wᵀ` for `x` of shape `[…, cols]`: a `MatMulNBits` node over `stored`. Returns
    /// the output (`[…, rows]`).
    pub fn matmul(&self, g: &mut Graph, x: &str, stored: &Stored) -> String {
        g.ms_op(
            "MatMulNBits",
            &[x, &stored.codes, &stored.scales, &stored.zero_points],
            &[
                Attr::Int("K", self.cols as i64),
                Attr::Int("N", self.rows as i64),
                Attr::Int("bits", self.bits as i64),
                Attr::Int("block_size", BLOCK as i64),
                Attr::Int("accuracy_level", ACCURACY_LEVEL),
            ],
        )
    }

    /// Rows picked by `indices` (the embedding lookup): a `GatherBlockQuantized` node over the
    /// codes `stored` for `MatMulNBits` (one copy of a tied embedding), quantized along their
    /// last axis in one block each. Returns `[…indices, blocks, 32]`: reshape it to `cols`.
    pub fn gather(&self, g: &mut Graph, indices: &str, stored: &Stored, name: &str) -> String {
        let dims = [self.rows as i64, self.blocks_per_row() as i64, 1];
        let scales = format!("{name}.gather_scales");
        let zero_points = format!("{name}.gather_zero_points");
        g.f32s(&scales, &dims, &self.scales);
        // One block per innermost row: one zero point a byte (its low nibble at 4 bits).
        g.u8s(&zero_points, &dims, self.zero_points.clone());
        g.ms_op(
            "GatherBlockQuantized",
            &[&stored.codes, indices, &scales, &zero_points],
            &[
                Attr::Int("bits", self.bits as i64),
                Attr::Int("block_size", BLOCK as i64),
                Attr::Int("gather_axis", 0),
                Attr::Int("quantize_axis", 2),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_and_q8_0_blocks_come_back_exactly() {
        // A Q4_0 block: d · (q − 8) for q spanning 0..=15; a Q8_0 block: d · q, |q| ≤ 127.
        let d = 0.037f32;
        let q4_0: Vec<f32> = (0..64).map(|i| d * ((i * 7 % 16) as f32 - 8.0)).collect();
        let q8_0: Vec<f32> = (0..64)
            .map(|i| {
                d * if i % 32 == 0 {
                    127.0
                } else {
                    (i * 37 % 255) as f32 - 127.0
                }
            })
            .collect();
        for (b, w) in [
            (Blocks::quantize4(&q4_0, 2, 32), &q4_0),
            (Blocks::quantize8(&q8_0, 1, 64), &q8_0),
        ] {
            for (got, want) in b.dequantize().iter().zip(w) {
                assert!(
                    (got - want).abs() < 1e-5,
                    "{} bits: {got} vs {want}",
                    b.bits
                );
            }
        }
    }

    #[test]
    fn other_weights_come_back_within_a_step() {
        let w: Vec<f32> = (0..3 * 96)
            .map(|i| {
                if i < 32 {
                    0.0
                } else {
                    ((i * 37 % 101) as f32 - 50.0) / 70.0
                }
            })
            .collect();
        for b in [Blocks::quantize4(&w, 3, 96), Blocks::quantize8(&w, 3, 96)] {
            let bytes = 3 * 96 * b.bits as usize / 8;
            assert_eq!((b.codes.len(), b.scales.len()), (bytes, 9));
            let back = b.dequantize();
            for (i, (got, want)) in back.iter().zip(&w).enumerate() {
                let step = b.scales[i / BLOCK];
                assert!((got - want).abs() <= step + 1e-6, "{i}: {got} vs {want}");
            }
            assert!(
                back[..32].iter().all(|&x| x == 0.0),
                "a zero block stays zero"
            );
        }
    }

    #[test]
    fn a_q4_k_block_fits_better_than_its_range() {
        // Q4_K: s·q − m, the offset no whole number of steps, every level used.
        let (s, m) = (0.021f32, 0.0473f32);
        let block: Vec<f32> = (0..32).map(|i| s * (i % 16) as f32 - m).collect();
        let sq = |scale: f32, zp: u8| -> f32 {
            block
                .iter()
                .map(|&x| ((code4(x, scale, zp) as f32 - zp as f32) * scale - x).powi(2))
                .sum()
        };
        let (lo, hi) = (-m, 15.0 * s - m);
        let range = (hi - lo) / 15.0;
        let plain = sq(range, (-lo / range).round() as u8);
        let (scale, zp) = fit4(&block);
        assert!(sq(scale, zp) < 0.8 * plain, "{} vs {plain}", sq(scale, zp));
        // Constant blocks are exact.
        for c in [0.0f32, 0.3, -0.3] {
            let (scale, zp) = fit4(&[c; 32]);
            assert_eq!((code4(c, scale, zp) as f32 - zp as f32) * scale, c);
        }
    }

    #[test]
    fn four_bit_zero_points_pack_two_a_byte() {
        let w: Vec<f32> = (0..3 * 96)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 70.0)
            .collect();
        // Two 4-bit zero points a byte along a row, the odd block count padded.
        let b = Blocks::quantize4(&w, 3, 96);
        let (packed, per_row) = b.packed_zero_points();
        assert_eq!((packed.len(), per_row), (6, 2));
        assert_eq!(packed[2] & 15, b.zero_points[3]);
        assert_eq!(packed[2] >> 4, b.zero_points[4]);
    }
}
