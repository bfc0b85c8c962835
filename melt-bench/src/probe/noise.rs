//! The noise check: how quiet the device is before a paired gate measures on it.
//!
//! A verdict on a 5% change means little when another process holds a core, the hypervisor
//! steals time, the SoC sits a few degrees under its trip point or a phone is at 10% battery.
//! Read over a short window while melt itself is idle: the CPU time others took and the time
//! stolen (`proc/stat`), the load average, free memory, the hottest thermal zone against its
//! throttle trip, the battery and whether it charges (Android), the CPU governor — and the
//! spread of a short fixed-work loop, which sees what the counters miss (an emulator, a
//! frequency that hops). The score is the share of the machine that is not melt's, the largest
//! of the busy share (others plus steal) and the loop's relative spread ×5 (a 4% spread on a
//! loop that should not vary is as bad as a fifth of the CPU gone).

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::read_trimmed;
use super::thermal::Thermal;
use crate::memory::parse_kib;

/// What the check saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Noise {
    /// 0 (quiet) to 1 (the machine is someone else's).
    pub score: f64,
    pub window_s: f64,
    /// Share of all CPUs' time others used during the window.
    pub others_cpu: Option<f64>,
    /// Share stolen by the hypervisor.
    pub steal: Option<f64>,
    pub load_1m: Option<f64>,
    pub cpus: usize,
    pub mem_available_bytes: Option<u64>,
    pub mem_total_bytes: Option<u64>,
    /// The hottest zone's degrees below its throttle trip, and its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thermal_headroom_c: Option<(String, f64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charging: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governor: Option<String>,
    /// Relative spread (MAD / median) of a fixed-work loop's times.
    pub loop_spread: f64,
    /// What makes the machine noisy, in words; empty when nothing does.
    pub reasons: Vec<String>,
}

/// Below this the machine counts as quiet (`--wait-quiet` waits for it).
pub const QUIET: f64 = 0.15;
/// Past this a verdict on a few percent would be drowned: the gate refuses one.
pub const DROWNED: f64 = 0.5;

/// CPU jiffies from the `cpu` line of `proc/stat`: (busy, steal, total).
fn cpu_times(root: &Path) -> Option<(u64, u64, u64)> {
    let text = read_trimmed(&root.join("proc/stat")).ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if f.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    let total: u64 = (0..8).map(get).sum();
    let idle = get(3) + get(4);
    let steal = get(7);
    Some((total - idle - steal, steal, total))
}

/// Times of `n` runs of a fixed arithmetic loop, seconds.
fn loop_times(n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let start = Instant::now();
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            for i in 0..400_000u64 {
                x = std::hint::black_box(x.rotate_left(5) ^ i).wrapping_mul(0x2545_F491_4F6C_DD1D);
            }
            std::hint::black_box(x);
            start.elapsed().as_secs_f64()
        })
        .collect()
}

fn battery(root: &Path) -> (Option<f64>, Option<bool>) {
    let dir = root.join("sys/class/power_supply/battery");
    let percent = read_trimmed(&dir.join("capacity"))
        .ok()
        .and_then(|s| s.parse().ok());
    let charging = read_trimmed(&dir.join("status"))
        .ok()
        .map(|s| s == "Charging" || s == "Full");
    (percent, charging)
}

/// Looks at the machine under `root` (`/`, or a fixture tree) for `window`, then runs the
/// fixed-work loop.
pub fn check(root: &Path, window: Duration) -> Noise {
    let start = Instant::now();
    let before = cpu_times(root);
    std::thread::sleep(window);
    let after = cpu_times(root);
    let window_s = start.elapsed().as_secs_f64();
    let (others_cpu, steal) = match (before, after) {
        (Some((b0, s0, t0)), Some((b1, s1, t1))) if t1 > t0 => {
            let dt = (t1 - t0) as f64;
            (
                Some(b1.saturating_sub(b0) as f64 / dt),
                Some(s1.saturating_sub(s0) as f64 / dt),
            )
        }
        _ => (None, None),
    };
    let times = loop_times(15);
    let median = crate::stats::median(&times);
    let loop_spread = crate::stats::median_abs_dev(&times, median) * 1.4826 / median;
    let load_1m = read_trimmed(&root.join("proc/loadavg"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok());
    let meminfo = read_trimmed(&root.join("proc/meminfo")).unwrap_or_default();
    let (thermal, _) = Thermal::detect(root);
    let thermal_headroom_c = thermal
        .zones
        .iter()
        .filter_map(|z| Some((z.name.clone(), z.throttle_trip()? - z.read_c()?)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    let (battery_percent, charging) = battery(root);
    let governor =
        read_trimmed(&root.join("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")).ok();
    let mut n = Noise {
        score: 0.0,
        window_s,
        others_cpu,
        steal,
        load_1m,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        mem_available_bytes: parse_kib(&meminfo, "MemAvailable:"),
        mem_total_bytes: parse_kib(&meminfo, "MemTotal:"),
        thermal_headroom_c,
        battery_percent,
        charging,
        governor,
        loop_spread,
        reasons: Vec::new(),
    };
    n.score_it();
    n
}

impl Noise {
    /// Sets the score and the reasons from the readings.
    pub fn score_it(&mut self) {
        let busy = self.others_cpu.unwrap_or(0.0) + self.steal.unwrap_or(0.0);
        self.score = busy.max(self.loop_spread * 5.0).min(1.0);
        let mut why = Vec::new();
        if let Some(o) = self.others_cpu.filter(|o| *o >= 0.05) {
            why.push(format!(
                "other processes used {:.0}% of the CPUs",
                o * 100.0
            ));
        }
        if let Some(s) = self.steal.filter(|s| *s >= 0.02) {
            why.push(format!(
                "the hypervisor stole {:.0}% of the CPU time",
                s * 100.0
            ));
        }
        if self.loop_spread >= 0.02 {
            why.push(format!(
                "a fixed-work loop varied by {:.1}%",
                self.loop_spread * 100.0
            ));
        }
        if let Some((zone, h)) = self.thermal_headroom_c.as_ref().filter(|(_, h)| *h < 5.0) {
            why.push(format!(
                "thermal zone `{zone}` is {h:.1} °C from its throttle trip"
            ));
        }
        if let (Some(p), Some(false)) = (self.battery_percent, self.charging) {
            if p < 20.0 {
                why.push(format!("the battery is at {p:.0}% and not charging"));
            }
        }
        if let (Some(a), Some(t)) = (self.mem_available_bytes, self.mem_total_bytes) {
            if (a as f64) < 0.1 * t as f64 {
                why.push(format!("only {} MiB of memory is free", a / (1 << 20)));
            }
        }
        self.reasons = why;
    }

    /// One line for people: the score and what raised it.
    pub fn line(&self) -> String {
        let what = if self.reasons.is_empty() {
            "quiet".to_string()
        } else {
            self.reasons.join("; ")
        };
        format!("noise {:.2} ({what})", self.score)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn put(root: &Path, path: &str, text: &str) {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// A fixture machine whose counters do not move reads as no CPU used; a busy one, a hot
    /// zone and a low battery raise the score and say why.
    #[test]
    fn readings_and_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(
            root,
            "proc/stat",
            "cpu  100 0 50 1000 10 0 0 0 0 0\ncpu0 1 2 3 4\n",
        );
        put(root, "proc/loadavg", "0.52 0.40 0.30 1/100 12345\n");
        put(
            root,
            "proc/meminfo",
            "MemTotal: 1000000 kB\nMemAvailable: 50000 kB\n",
        );
        put(root, "sys/class/thermal/thermal_zone0/type", "cpu-thermal");
        put(root, "sys/class/thermal/thermal_zone0/temp", "77000");
        put(
            root,
            "sys/class/thermal/thermal_zone0/trip_point_0_type",
            "passive",
        );
        put(
            root,
            "sys/class/thermal/thermal_zone0/trip_point_0_temp",
            "80000",
        );
        put(root, "sys/class/power_supply/battery/capacity", "12");
        put(root, "sys/class/power_supply/battery/status", "Discharging");
        put(
            root,
            "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
            "schedutil",
        );
        let n = check(root, Duration::from_millis(10));
        // The file did not change: the window's deltas are empty, so nothing is known.
        assert_eq!(n.others_cpu, None);
        assert_eq!(n.load_1m, Some(0.52));
        assert_eq!(n.governor.as_deref(), Some("schedutil"));
        assert_eq!(n.battery_percent, Some(12.0));
        let (zone, h) = n.thermal_headroom_c.clone().unwrap();
        assert_eq!(zone, "cpu-thermal");
        assert!((h - 3.0).abs() < 1e-9);
        let all = n.reasons.join("\n");
        assert!(all.contains("3.0 °C from its throttle trip"), "{all}");
        assert!(all.contains("battery is at 12%"), "{all}");
        assert!(all.contains("48 MiB of memory"), "{all}");
        // Busy counters: half of the window's CPU time others', a tenth stolen.
        let mut busy = n.clone();
        busy.others_cpu = Some(0.5);
        busy.steal = Some(0.1);
        busy.loop_spread = 0.0;
        busy.score_it();
        assert!((busy.score - 0.6).abs() < 1e-9);
        assert!(busy.score > DROWNED);
        assert!(
            busy.line().contains("other processes used 50%"),
            "{}",
            busy.line()
        );
    }

    /// On this machine, with one core kept busy by another thread, the check sees it.
    #[test]
    fn sees_a_busy_core() {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let spinner = std::thread::spawn(move || {
            let mut x = 0u64;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        });
        let n = check(Path::new("/"), Duration::from_millis(600));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        spinner.join().unwrap();
        let cpus = n.cpus as f64;
        let others = n.others_cpu.expect("proc/stat readable here");
        // One of `cpus` cores busy (the spinner is a thread of this process, which is what
        // the counters see too).
        assert!(others >= 0.8 / cpus, "{n:?}");
        assert!(n.score >= 0.8 / cpus);
    }
}
