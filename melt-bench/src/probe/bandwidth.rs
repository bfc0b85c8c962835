//! The device's sustainable memory bandwidth, measured by melt itself (a STREAM-like triad
//! and read over arrays far larger than any cache, on every core), so each decode case can say
//! what share of it the model's weights streamed per token used: decode is memory-bound, and
//! this is how close to the roof an engine gets.

use std::path::Path;
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
    /// When it was measured (Unix seconds; 0 in runs recorded before melt kept it).
    #[serde(default)]
    pub measured_unix_s: u64,
}

/// What identifies a device for its cached bandwidth: CPU model, CPU count, memory, kernel,
/// and whether this is a debug build (whose unoptimized kernels measure a third of the roof).
pub fn device_description(root: &Path) -> String {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
    let cpuinfo = read("proc/cpuinfo");
    let cpu = ["model name", "Hardware", "CPU part"]
        .iter()
        .find_map(|k| {
            cpuinfo.lines().find_map(|l| {
                let (key, v) = l.split_once(':')?;
                (key.trim() == *k).then(|| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = crate::memory::parse_kib(&read("proc/meminfo"), "MemTotal:").unwrap_or(0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "{cpu}; {cpus} CPUs; {} MiB RAM; kernel {}{}",
        mem >> 20,
        read("proc/sys/kernel/osrelease").trim(),
        if cfg!(debug_assertions) {
            "; debug build"
        } else {
            ""
        }
    )
}

/// A device's measured bandwidth as cached on disk, with the description it was measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cached {
    pub description: String,
    pub bandwidth: Bandwidth,
}

fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How long a cached measurement stands for its device.
pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// The device's bandwidth: from `dir`'s cache when it was measured on a device of the same
/// description less than `max_age` ago (and `remeasure` is off), else measured now (3 arrays
/// of 64 MiB on every core, best of 5) and cached. Returns it and whether it came from the
/// cache. A cache that cannot be read or written only costs a measurement.
pub fn cached_or_measure(
    dir: &Path,
    description: &str,
    max_age: std::time::Duration,
    remeasure: bool,
) -> (Bandwidth, bool) {
    use sha2::{Digest, Sha256};
    let key: String = Sha256::digest(description.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = dir.join(format!("bandwidth-{key}.json"));
    let fresh = |c: &Cached| {
        c.description == description
            && now_unix_s().saturating_sub(c.bandwidth.measured_unix_s) < max_age.as_secs()
    };
    if !remeasure {
        let cached = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Cached>(&t).ok());
        if let Some(c) = cached.filter(fresh) {
            return (c.bandwidth, true);
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut b = measure(threads, 64 << 20, 5);
    b.measured_unix_s = now_unix_s();
    let entry = Cached {
        description: description.to_string(),
        bandwidth: b,
    };
    let _ = crate::fs::write_json(&path, &entry);
    (b, false)
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
        measured_unix_s: 0,
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

/// The bandwidth a decode achieved if every token streamed `bytes` (weights and KV) once, and its
/// share of the measured triad bandwidth.
pub fn decode_share(bytes: f64, decode_tokens_per_second: f64, roof: &Bandwidth) -> (f64, f64) {
    let gbs = bytes * decode_tokens_per_second / 1e9;
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
            250e6,
            80.0,
            &Bandwidth {
                triad_gbs: 25.0,
                ..b
            },
        );
        assert_eq!((gbs, share), (20.0, 0.8));
    }

    #[test]
    fn the_bandwidth_is_cached_per_device_description() {
        let root = tempfile::tempdir().unwrap();
        let put = |p: &str, v: &str| {
            let p = root.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, v).unwrap();
        };
        put(
            "proc/cpuinfo",
            "processor\t: 0\nmodel name\t: Test CPU 9000\n",
        );
        put("proc/meminfo", "MemTotal:       25165824 kB\n");
        put("proc/sys/kernel/osrelease", "6.1.0-test\n");
        let d = device_description(root.path());
        assert!(
            d.starts_with("Test CPU 9000; ") && d.contains("24576 MiB RAM; kernel 6.1.0-test"),
            "{d}"
        );
        let cache = tempfile::tempdir().unwrap();
        let week = MAX_AGE;
        let (first, cached) = cached_or_measure(cache.path(), &d, week, false);
        assert!(!cached && first.measured_unix_s > 0 && first.triad_gbs > 0.0);
        let (again, cached) = cached_or_measure(cache.path(), &d, week, false);
        assert!(
            cached && again == first,
            "the same device reads its cached figure"
        );
        let (_, cached) = cached_or_measure(cache.path(), "another phone", week, false);
        assert!(!cached, "another device measures its own");
        let (_, cached) = cached_or_measure(cache.path(), &d, week, true);
        assert!(!cached, "--remeasure-bandwidth measures");
        let (_, cached) = cached_or_measure(cache.path(), &d, std::time::Duration::ZERO, false);
        assert!(!cached, "a stale figure is measured again");
        // A garbled cache file costs a measurement, not the run.
        for e in std::fs::read_dir(cache.path()).unwrap() {
            std::fs::write(e.unwrap().path(), "{not json").unwrap();
        }
        let (b, cached) = cached_or_measure(cache.path(), &d, week, false);
        assert!(!cached && b.triad_gbs > 0.0);
    }

    #[test]
    fn kv_bytes_count_sliding_window_layers_up_to_their_window() {
        // Gemma 3 270M as llama.cpp holds it: 18 layers, 15 of them on a 512 window, one KV
        // head of 256, f16.
        let kv = crate::backend::KvShape {
            n_layer: 18,
            swa_layers: 15,
            window: 512,
            kv_heads: 1,
            k_dim: 256,
            v_dim: 256,
            elem_bytes: 2.0,
            elem_from_session: true,
        };
        let per_position = 256.0 * 2.0 * 2.0;
        assert_eq!(
            kv.bytes_per_token(100, 2.0, 2.0),
            18.0 * 100.0 * per_position
        );
        assert_eq!(
            kv.bytes_per_token(2000, 2.0, 2.0),
            (3.0 * 2000.0 + 15.0 * 512.0) * per_position
        );
        // q8_0 keys, f16 values.
        let q8 = crate::backend::ggml_type_bytes("q8_0").unwrap();
        assert_eq!(
            kv.bytes_per_token(10, q8, 2.0),
            18.0 * 10.0 * 256.0 * (q8 + 2.0)
        );
        assert_eq!(crate::backend::ggml_type_bytes("q3_k"), None);
    }
}
