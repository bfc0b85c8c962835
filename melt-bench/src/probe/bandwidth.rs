//! The device's sustainable memory bandwidth, measured by melt itself (a STREAM-like triad
//! and read over arrays far larger than any cache, on every core), so each decode case can say
//! what share of it the model's weights streamed per token used: decode is memory-bound, and
//! this is how close to the roof an engine gets.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Best of several passes, in GB/s (10⁹ bytes), as STREAM reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bandwidth {
    /// `a[i] = b[i] + s·c[i]`: 24 bytes moved per element (STREAM's count).
    pub triad_gbs: f64,
    /// `Σ a[i]`: 8 bytes per element.
    pub read_gbs: f64,
    pub threads: usize,
    pub array_bytes: usize,
}

/// Measures with `threads` threads over three arrays of `array_bytes` each, `passes` times.
pub fn measure(threads: usize, array_bytes: usize, passes: usize) -> Bandwidth {
    let threads = threads.max(1);
    let n = (array_bytes / 8).max(threads);
    let mut a = vec![0.0f64; n];
    let b = vec![1.0f64; n];
    let c = vec![2.0f64; n];
    let chunk = n.div_ceil(threads);
    let (mut triad, mut read) = (0.0f64, 0.0f64);
    for pass in 0..passes.max(1) {
        let s = 3.0 + pass as f64;
        let t0 = Instant::now();
        std::thread::scope(|scope| {
            for ((a, b), c) in a
                .chunks_mut(chunk)
                .zip(b.chunks(chunk))
                .zip(c.chunks(chunk))
            {
                scope.spawn(move || {
                    for ((x, y), z) in a.iter_mut().zip(b).zip(c) {
                        *x = y + s * z;
                    }
                });
            }
        });
        triad = triad.max(24.0 * n as f64 / t0.elapsed().as_secs_f64() / 1e9);
        let t0 = Instant::now();
        let sum: f64 = std::thread::scope(|scope| {
            let parts: Vec<_> = a
                .chunks(chunk)
                .map(|p| scope.spawn(move || sum_wide(p)))
                .collect();
            parts.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        read = read.max(8.0 * n as f64 / t0.elapsed().as_secs_f64() / 1e9);
        // Uses the result, so the read pass cannot be optimized away.
        assert!(
            (sum - n as f64 * (1.0 + 2.0 * s)).abs() <= 1e-6 * sum.abs(),
            "the triad computed {sum}"
        );
    }
    Bandwidth {
        triad_gbs: triad,
        read_gbs: read,
        threads,
        array_bytes: n * 8,
    }
}

/// A sum with eight independent accumulators: one running sum is a chain of dependent adds,
/// bound by the adder's latency long before memory, so the read rate would be the CPU's.
fn sum_wide(xs: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f64>() + chunks.remainder().iter().sum::<f64>()
}

/// The bandwidth a decode achieved if every token streamed `bytes` (the weights) once, and its
/// share of the measured triad bandwidth.
pub fn decode_share(bytes: u64, decode_tokens_per_second: f64, roof: &Bandwidth) -> (f64, f64) {
    let gbs = bytes as f64 * decode_tokens_per_second / 1e9;
    (gbs, gbs / roof.triad_gbs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_compute_and_report_positive_rates() {
        // Small arrays: this checks the arithmetic and the bookkeeping, not the machine.
        let b = measure(2, 1 << 20, 2);
        assert!(b.triad_gbs > 0.0 && b.read_gbs > 0.0, "{b:?}");
        assert_eq!((b.threads, b.array_bytes), (2, 1 << 20));
        let (gbs, share) = decode_share(
            250_000_000,
            80.0,
            &Bandwidth {
                triad_gbs: 25.0,
                ..b
            },
        );
        assert_eq!((gbs, share), (20.0, 0.8));
    }
}
