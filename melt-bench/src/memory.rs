//! Peak resident memory of a case, from `/proc/self/status`.
//!
//! Linux keeps one high-water mark (VmHWM) per process. Writing `5` to `/proc/self/clear_refs`
//! resets it to the current RSS, which makes the peak per case; where that write is refused
//! (old kernels, some Android builds) the peak is process-wide and the report says so.

use std::fs;

/// Resets the high-water mark; returns whether the peak that follows is per case.
pub fn reset_peak() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// VmHWM in bytes, if this system has `/proc/self/status`.
pub fn peak_rss_bytes() -> Option<u64> {
    status_field("VmHWM:")
}

fn status_field(name: &str) -> Option<u64> {
    let text = fs::read_to_string("/proc/self/status").ok()?;
    parse_kib(&text, name)
}

/// `name   1234 kB` → bytes (the `/proc/*/status` and `smaps` line format).
pub(crate) fn parse_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        let s = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(parse_kib(s, "VmHWM:"), Some(2048 * 1024));
        assert_eq!(parse_kib(s, "VmRSS:"), Some(1024 * 1024));
        assert_eq!(parse_kib(s, "VmSwap:"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn peak_follows_an_allocation_and_resets() {
        let before = peak_rss_bytes().unwrap();
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        let after = peak_rss_bytes().unwrap();
        assert!(after >= before + (60 << 20), "{before} -> {after}");
        drop(big);
        if reset_peak() {
            assert!(peak_rss_bytes().unwrap() < after);
        }
    }
}
