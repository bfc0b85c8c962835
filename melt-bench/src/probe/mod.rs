//! Probes: memory, energy, temperature and CPU frequency read beside a measurement by a
//! sampler thread, and attributed to the phases of each run (prefill, decode) afterwards.
//!
//! Every file is read under a root (`/` normally; a fixture tree in tests), in its real
//! format. A source that cannot be read is reported as `unavailable: <reason>`, never as a
//! number. The runner marks phase changes in a [`PhaseLog`] (two or three marks per run, not
//! per token); the sampler takes a [`Snapshot`] every period; [`summarize`] integrates energy
//! over exactly the marked windows (counters interpolated, power integrated by trapezoids).

pub mod bandwidth;
pub mod energy;
pub mod noise;
pub mod thermal;

#[cfg(test)]
mod tests;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::memory::parse_kib;
use energy::{EnergySource, Reading};
use thermal::{Thermal, ThermalReading};

/// Why a probe gives no number.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unavailable: {0}")]
pub struct Unavailable(pub String);

/// A sysfs/procfs file's content, trimmed; a missing or unreadable file is [`Unavailable`].
pub fn read_trimmed(path: &Path) -> Result<String, Unavailable> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| Unavailable(format!("{}: {e}", path.display())))
}

/// The process's memory from `proc/self/status` and `proc/self/smaps_rollup` (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MemReading {
    pub rss: Option<u64>,
    pub rss_anon: Option<u64>,
    pub rss_file: Option<u64>,
    pub pss: Option<u64>,
}

/// Reads memory under `root` (`/` for this process); PSS only when `pss` is asked, because
/// `smaps_rollup` walks every page table of the process (milliseconds for a loaded model,
/// under the lock its page faults need), where `status` is a counter read.
pub fn read_memory(root: &Path, pss: bool) -> MemReading {
    let status = fs::read_to_string(root.join("proc/self/status")).unwrap_or_default();
    let rollup = if pss {
        fs::read_to_string(root.join("proc/self/smaps_rollup")).unwrap_or_default()
    } else {
        String::new()
    };
    MemReading {
        rss: parse_kib(&status, "VmRSS:"),
        rss_anon: parse_kib(&status, "RssAnon:"),
        rss_file: parse_kib(&status, "RssFile:"),
        pss: parse_kib(&rollup, "Pss:"),
    }
}

/// How often PSS is read, at most: see [`read_memory`].
pub const PSS_PERIOD: Duration = Duration::from_millis(1000);

/// A model file's mappings in `proc/self/smaps`: (mapped, resident) bytes. mmap makes RSS
/// misleading (pages of the file count once touched, and may be dropped), so both are told.
pub fn model_mapping(root: &Path, model: &Path) -> Option<(u64, u64)> {
    let smaps = fs::read_to_string(root.join("proc/self/smaps")).ok()?;
    let want = model.canonicalize().unwrap_or_else(|_| model.to_path_buf());
    let (mut size, mut rss, mut found, mut inside) = (0, 0, false, false);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // A mapping header: `start-end perms offset dev inode [path]`.
            let path = line.split_whitespace().nth(5).map(PathBuf::from);
            inside = path.as_deref() == Some(want.as_path());
            found |= inside;
        } else if inside {
            if let Some(v) = parse_kib(line, "Size:") {
                size += v;
            } else if let Some(v) = parse_kib(line, "Rss:") {
                rss += v;
            }
        }
    }
    found.then_some((size, rss))
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Prefill,
    Decode,
    Idle,
}

/// Phase changes, marked by the runner as they happen (ns since the log's epoch).
#[derive(Debug)]
pub struct PhaseLog {
    epoch: Instant,
    marks: Mutex<Vec<(u64, Phase)>>,
}

impl PhaseLog {
    pub fn new(epoch: Instant) -> PhaseLog {
        PhaseLog {
            epoch,
            marks: Mutex::new(Vec::new()),
        }
    }

    pub fn mark(&self, phase: Phase) {
        let t = self.epoch.elapsed().as_nanos() as u64;
        if let Ok(mut m) = self.marks.lock() {
            m.push((t, phase));
        }
    }

    pub fn marks(&self) -> Vec<(u64, Phase)> {
        self.marks.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// Everything the sampler reads.
pub struct Probes {
    pub root: PathBuf,
    pub energy: Vec<Box<dyn EnergySource>>,
    pub thermal: Thermal,
    /// Why each missing source is missing.
    pub unavailable: Vec<String>,
    /// When PSS was last read (ns since the epoch).
    last_pss_ns: Option<u64>,
}

impl Probes {
    /// The sources present under `root`.
    pub fn detect(root: &Path) -> Probes {
        let (energy, mut unavailable) = energy::detect(root);
        let (thermal, why) = Thermal::detect(root);
        unavailable.extend(why);
        if !root.join("proc/self/smaps_rollup").is_file() {
            unavailable.push("memory: no proc/self/smaps_rollup (PSS); RSS only".into());
        }
        Probes {
            root: root.to_path_buf(),
            energy,
            thermal,
            unavailable,
            last_pss_ns: None,
        }
    }

    fn snapshot(&mut self, t_ns: u64, last: bool) -> Snapshot {
        let pss = last
            || self
                .last_pss_ns
                .is_none_or(|p| t_ns.saturating_sub(p) >= PSS_PERIOD.as_nanos() as u64);
        if pss {
            self.last_pss_ns = Some(t_ns);
        }
        Snapshot {
            t_ns,
            energy: self.energy.iter_mut().map(|s| s.read().ok()).collect(),
            thermal: self.thermal.read(),
            mem: read_memory(&self.root, pss),
        }
    }
}

/// One reading of every probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// ns since the case's epoch.
    pub t_ns: u64,
    /// Per energy source, in [`Probes::energy`] order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub energy: Vec<Option<Reading>>,
    #[serde(default)]
    pub thermal: ThermalReading,
    #[serde(default)]
    pub mem: MemReading,
}

/// The sampler thread: a [`Snapshot`] every `period` until stopped. The first snapshot is
/// taken in `start` and the last in `stop`, by the caller, so the series always spans the
/// whole window however short it is.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(Probes, Vec<Snapshot>, Duration)>,
    period: Duration,
    epoch: Instant,
}

impl Sampler {
    pub fn start(mut probes: Probes, period: Duration, epoch: Instant) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let t0 = Instant::now();
        let first = probes.snapshot(epoch.elapsed().as_nanos() as u64, false);
        let first_cost = t0.elapsed();
        let handle = std::thread::Builder::new()
            .name("melt-probes".into())
            .spawn(move || {
                let mut out = vec![first];
                let mut cost = first_cost;
                loop {
                    std::thread::sleep(period);
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    let t0 = Instant::now();
                    out.push(probes.snapshot(epoch.elapsed().as_nanos() as u64, false));
                    cost += t0.elapsed();
                }
                (probes, out, cost)
            })
            .expect("spawning the probe sampler thread");
        Sampler {
            stop,
            handle,
            period,
            epoch,
        }
    }

    /// Stops, with one last snapshot now; the probes back, the series, the time spent
    /// reading, the period.
    pub fn stop(self) -> (Probes, Vec<Snapshot>, Duration, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut p, mut s, mut cost) = self.handle.join().expect("probe sampler thread panicked");
        let t0 = Instant::now();
        s.push(p.snapshot(self.epoch.elapsed().as_nanos() as u64, true));
        cost += t0.elapsed();
        (p, s, cost, self.period)
    }
}

/// Energy and power of one phase over the measured runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PhaseEnergy {
    pub seconds: f64,
    pub joules: f64,
    pub watts: f64,
    pub tokens: u64,
    pub joules_per_token: f64,
}

/// Memory peaks over the snapshots of one phase (sampled: a peak between two snapshots is
/// missed; VmHWM, the exact peak, is the case's `peak_rss_bytes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseMemory {
    pub snapshots: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_peak_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_anon_peak_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_file_peak_bytes: Option<u64>,
    /// PSS is read at most every [`PSS_PERIOD`]: a short phase may have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pss_peak_bytes: Option<u64>,
}

impl PhaseMemory {
    /// The peaks over `snapshots`; `None` when there are none.
    pub fn of<'a>(snapshots: impl IntoIterator<Item = &'a Snapshot>) -> Option<PhaseMemory> {
        let mut out = PhaseMemory::default();
        let max = |a: Option<u64>, b: Option<u64>| a.max(b);
        for s in snapshots {
            out.snapshots += 1;
            out.rss_peak_bytes = max(out.rss_peak_bytes, s.mem.rss);
            out.rss_anon_peak_bytes = max(out.rss_anon_peak_bytes, s.mem.rss_anon);
            out.rss_file_peak_bytes = max(out.rss_file_peak_bytes, s.mem.rss_file);
            out.pss_peak_bytes = max(out.pss_peak_bytes, s.mem.pss);
        }
        (out.snapshots > 0).then_some(out)
    }
}

/// Memory by phase: loading the model, and the prefill and decode of the measured runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryByPhase {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<PhaseMemory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill: Option<PhaseMemory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode: Option<PhaseMemory>,
}

/// What the probes saw while the model was loaded (shared by the cases of that load).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadProbe {
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<PhaseMemory>,
    /// RSS when the load returned (what the loaded model costs before any session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_after_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joules: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watts: Option<f64>,
}

/// Summarizes a load of `seconds` from its snapshots: the average power over the sampled
/// span, times the load's duration (a load of a few milliseconds falls between snapshots).
pub fn summarize_load(probes: &Probes, series: &[Snapshot], seconds: f64) -> LoadProbe {
    let span = series
        .last()
        .zip(series.first())
        .map_or(0.0, |(l, f)| (l.t_ns - f.t_ns) as f64 / 1e9);
    let watts = cumulative_joules(series, probes.energy.len())
        .and_then(|c| c.last().copied())
        .filter(|_| span > 0.0)
        .map(|j| j / span);
    LoadProbe {
        seconds,
        memory: PhaseMemory::of(series),
        rss_after_bytes: series.last().and_then(|s| s.mem.rss),
        joules: watts.map(|w| w * seconds),
        watts,
    }
}

/// The phase each snapshot falls in: the last mark at or before it (idle before any mark).
pub fn phase_at(marks: &[(u64, Phase)], t_ns: u64) -> Phase {
    match marks.partition_point(|m| m.0 <= t_ns) {
        0 => Phase::Idle,
        i => marks[i - 1].1,
    }
}

/// What the probes say about one case: the summary the report and the gate use, and the
/// time series itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeSummary {
    pub period_ms: f64,
    /// Time the sampler spent reading, as a share of its wall time on one core.
    pub sampler_overhead: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub energy_sources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assumptions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill: Option<PhaseEnergy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode: Option<PhaseEnergy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_joule: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_start_c: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_max_c: Option<f64>,
    /// Why the case is flagged as throttled (empty: not seen).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttling: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pss_peak_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_anon_peak_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_file_peak_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_mapped_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_resident_bytes: Option<u64>,
    /// The device's memory bandwidth, measured once per run ([`bandwidth::measure`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bandwidth: Option<bandwidth::Bandwidth>,
    #[serde(default)]
    pub memory: MemoryByPhase,
    /// What `--cooldown` did before the case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<thermal::CooledDown>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadProbe>,
    /// Wall-clock time (Unix ns) of the series' epoch: what aligns an external meter's
    /// readings with the marks.
    #[serde(default)]
    pub epoch_unix_ns: u64,
    /// The phase changes (ns since the epoch) and when measuring ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub marks: Vec<(u64, Phase)>,
    #[serde(default)]
    pub end_ns: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<Snapshot>,
}

impl ProbeSummary {
    /// Average power and the hottest reading between `a` and `b` seconds after the epoch.
    /// Power is averaged over the part of the window the series covers.
    pub fn window(&self, a: f64, b: f64) -> (Option<f64>, Option<f64>) {
        let (a_ns, b_ns) = ((a * 1e9) as u64, (b * 1e9) as u64);
        let n_sources = self.series.first().map_or(0, |s| s.energy.len());
        let covered = self
            .series
            .first()
            .zip(self.series.last())
            .map(|(f, l)| (a_ns.max(f.t_ns), b_ns.min(l.t_ns)))
            .filter(|(a, b)| b > a);
        let watts = cumulative_joules(&self.series, n_sources)
            .zip(covered)
            .map(|(cum, (a, b))| {
                (joules_at(&self.series, &cum, b) - joules_at(&self.series, &cum, a))
                    / ((b - a) as f64 / 1e9)
            });
        let temp = self
            .series
            .iter()
            .filter(|s| (a_ns..=b_ns).contains(&s.t_ns))
            .filter_map(|s| s.thermal.temps_c.iter().flatten().copied().reduce(f64::max))
            .reduce(f64::max);
        (watts, temp)
    }
}

/// Cumulative joules of all sources at each snapshot (power integrated by trapezoids), or
/// `None` when a source gave nothing at some snapshot (no made-up energy across a gap).
fn cumulative_joules(series: &[Snapshot], n_sources: usize) -> Option<Vec<f64>> {
    if n_sources == 0 || series.len() < 2 {
        return None;
    }
    let mut total = vec![0.0; series.len()];
    for s in 0..n_sources {
        let mut acc = 0.0;
        for i in 0..series.len() {
            let r = (*series[i].energy.get(s)?)?;
            let c = match r {
                Reading::Joules(j) => j,
                Reading::Watts(w) => {
                    if i > 0 {
                        let prev = match (*series[i - 1].energy.get(s)?)? {
                            Reading::Watts(p) => p,
                            Reading::Joules(_) => return None,
                        };
                        let dt = (series[i].t_ns - series[i - 1].t_ns) as f64 / 1e9;
                        acc += (prev + w) / 2.0 * dt;
                    }
                    acc
                }
            };
            total[i] += c;
        }
    }
    Some(total)
}

/// The cumulative energy at `t` (ns), linear between snapshots.
fn joules_at(series: &[Snapshot], cum: &[f64], t: u64) -> f64 {
    let i = series.partition_point(|s| s.t_ns <= t);
    if i == 0 {
        return cum[0];
    }
    if i >= series.len() {
        return cum[cum.len() - 1];
    }
    let (a, b) = (&series[i - 1], &series[i]);
    let f = (t - a.t_ns) as f64 / (b.t_ns - a.t_ns).max(1) as f64;
    cum[i - 1] + f * (cum[i] - cum[i - 1])
}

/// A case's energy by phase: prefill, decode, and tokens per joule over both.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergyByPhase {
    pub prefill: Option<PhaseEnergy>,
    pub decode: Option<PhaseEnergy>,
    pub tokens_per_joule: Option<f64>,
}

/// Integrates `joules_between(start, end)` (ns since the epoch) over the marked prefill and
/// decode windows — from the probes' own series or an external meter's.
pub fn energy_by_phase(
    marks: &[(u64, Phase)],
    end_ns: u64,
    tokens: (u64, u64),
    joules_between: impl Fn(u64, u64) -> f64,
) -> EnergyByPhase {
    let mut per = [(0.0f64, 0.0f64); 2]; // (seconds, joules) for prefill, decode
    for (k, &(start, phase)) in marks.iter().enumerate() {
        let end = marks.get(k + 1).map_or(end_ns, |m| m.0);
        let slot = match phase {
            Phase::Prefill => 0,
            Phase::Decode => 1,
            Phase::Idle => continue,
        };
        per[slot].0 += (end - start) as f64 / 1e9;
        per[slot].1 += joules_between(start, end);
    }
    let phase = |(s, j): (f64, f64), n: u64| {
        (s > 0.0 && n > 0).then(|| PhaseEnergy {
            seconds: s,
            joules: j,
            watts: j / s,
            tokens: n,
            joules_per_token: j / n as f64,
        })
    };
    let joules = per[0].1 + per[1].1;
    EnergyByPhase {
        prefill: phase(per[0], tokens.0),
        decode: phase(per[1], tokens.1),
        tokens_per_joule: (joules > 0.0).then(|| (tokens.0 + tokens.1) as f64 / joules),
    }
}

/// Summarizes a case: `marks` are its phase changes, `end_ns` when measuring stopped, and
/// `tokens` the prefill and decode tokens of the marked runs.
pub fn summarize(
    probes: &Probes,
    series: Vec<Snapshot>,
    cost: Duration,
    period: Duration,
    marks: &[(u64, Phase)],
    end_ns: u64,
    tokens: (u64, u64),
) -> ProbeSummary {
    let wall = series
        .last()
        .zip(series.first())
        .map_or(0, |(l, f)| l.t_ns - f.t_ns);
    let mut out = ProbeSummary {
        period_ms: period.as_secs_f64() * 1e3,
        sampler_overhead: cost.as_nanos() as f64 / (wall.max(1) as f64),
        energy_sources: probes.energy.iter().map(|s| s.name()).collect(),
        assumptions: probes
            .energy
            .iter()
            .filter_map(|s| s.assumptions())
            .collect(),
        unavailable: probes.unavailable.clone(),
        ..ProbeSummary::default()
    };
    // Energy per phase over exactly the marked windows.
    if let Some(cum) = cumulative_joules(&series, probes.energy.len()) {
        let e = energy_by_phase(marks, end_ns, tokens, |a, b| {
            joules_at(&series, &cum, b) - joules_at(&series, &cum, a)
        });
        out.prefill = e.prefill;
        out.decode = e.decode;
        out.tokens_per_joule = e.tokens_per_joule;
    } else if !probes.energy.is_empty() {
        out.unavailable
            .push("energy: a source stopped answering during the case".into());
    }
    // Temperature, throttling.
    let max_temp = |s: &Snapshot| s.thermal.temps_c.iter().flatten().copied().reduce(f64::max);
    out.temp_start_c = series.first().and_then(max_temp);
    out.temp_max_c = series.iter().filter_map(max_temp).reduce(f64::max);
    for (z, zone) in probes.thermal.zones.iter().enumerate() {
        if let Some(trip) = zone.throttle_trip() {
            let peak = series
                .iter()
                .filter_map(|s| s.thermal.temps_c.get(z).copied().flatten())
                .reduce(f64::max);
            if let Some(p) = peak.filter(|&p| p >= trip) {
                out.throttling.push(format!(
                    "{} reached {p:.1} °C, past its {trip:.1} °C trip point",
                    zone.name
                ));
            }
        }
    }
    for (c, cpu) in probes.thermal.cpus.iter().enumerate() {
        let f: Vec<f64> = series
            .iter()
            .filter_map(|s| s.thermal.freqs_mhz.get(c).copied().flatten())
            .collect();
        if let (Some(&first), Some(low)) = (f.first(), f.iter().copied().reduce(f64::min)) {
            // Governors move the clock all the time; a fall by a tenth from where the case
            // started is what throttling looks like.
            if low < first * 0.9 {
                out.throttling.push(format!(
                    "cpu{} fell from {first:.0} to {low:.0} MHz",
                    cpu.index
                ));
            }
        }
    }
    for (c, dev) in probes.thermal.cooling.iter().enumerate() {
        let states: Vec<f64> = series
            .iter()
            .filter_map(|s| s.thermal.cooling.get(c).copied().flatten())
            .collect();
        if let (Some(&first), Some(high)) =
            (states.first(), states.iter().copied().reduce(f64::max))
        {
            if high > first && dev.name.contains("cpufreq") {
                out.throttling
                    .push(format!("{} rose from state {first} to {high}", dev.name));
            }
        }
    }
    let peak = |f: fn(&MemReading) -> Option<u64>| series.iter().filter_map(|s| f(&s.mem)).max();
    out.pss_peak_bytes = peak(|m| m.pss);
    out.rss_anon_peak_bytes = peak(|m| m.rss_anon);
    out.rss_file_peak_bytes = peak(|m| m.rss_file);
    let in_phase =
        |p: Phase| PhaseMemory::of(series.iter().filter(|s| phase_at(marks, s.t_ns) == p));
    out.memory.prefill = in_phase(Phase::Prefill);
    out.memory.decode = in_phase(Phase::Decode);
    out.marks = marks.to_vec();
    out.end_ns = end_ns;
    out.series = series;
    out
}
