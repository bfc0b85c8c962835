//! Temperatures (`class/thermal/thermal_zone*/{type,temp,trip_point_*}`, m°C), cooling device
//! states (`class/thermal/cooling_device*/{type,cur_state,max_state}`) and CPU frequencies
//! (`devices/system/cpu/cpu*/cpufreq/scaling_cur_freq`, kHz).

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::read_trimmed;

/// A thermal zone and its trip points (°C, by type: `passive`, `hot`, `critical`, ...).
#[derive(Debug, Clone)]
pub struct Zone {
    pub name: String,
    temp: PathBuf,
    pub trips: Vec<(String, f64)>,
    /// Its temperature when detected; `None`: unreadable then (some zones always are — a
    /// sensor behind a powered-down bus answers EINVAL), so it is read once, not retried.
    pub detected_c: Option<f64>,
}

/// Tries for a zone that was readable: a sysfs file read while its writer rewrites it, or an
/// I²C sensor that is busy, fails once and answers the next time.
const READ_TRIES: u32 = 3;
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

impl Zone {
    /// The temperature now (°C), retried as `READ_TRIES` says when the zone was readable.
    pub fn read_c(&self) -> Option<f64> {
        let tries = if self.detected_c.is_some() {
            READ_TRIES
        } else {
            1
        };
        for i in 0..tries {
            if i > 0 {
                std::thread::sleep(RETRY_PAUSE);
            }
            if let Some(t) = num(&self.temp) {
                return Some(t / 1000.0);
            }
        }
        None
    }
}

impl Zone {
    /// The lowest trip at which the kernel starts cooling (passive or hot), if any.
    pub fn throttle_trip(&self) -> Option<f64> {
        self.trips
            .iter()
            .filter(|(t, _)| t == "passive" || t == "hot")
            .map(|(_, c)| *c)
            .reduce(f64::min)
    }
}

/// A cooling device (fan, CPU frequency clamp): its state rising means throttling.
#[derive(Debug, Clone)]
pub struct Cooling {
    pub name: String,
    cur: PathBuf,
}

/// One CPU's frequency file.
#[derive(Debug, Clone)]
pub struct Cpu {
    pub index: usize,
    cur: PathBuf,
}

/// What a thermal reading holds, in the order of [`Thermal`]'s lists (`None`: unreadable now).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThermalReading {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub temps_c: Vec<Option<f64>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freqs_mhz: Vec<Option<f64>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cooling: Vec<Option<f64>>,
}

#[derive(Debug, Clone, Default)]
pub struct Thermal {
    pub zones: Vec<Zone>,
    pub cooling: Vec<Cooling>,
    pub cpus: Vec<Cpu>,
}

fn sorted_dirs(dir: &Path, prefix: &str) -> Vec<(usize, PathBuf)> {
    let mut v: Vec<(usize, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            let i = n.strip_prefix(prefix)?.parse().ok()?;
            Some((i, e.path()))
        })
        .collect();
    v.sort();
    v
}

fn num(path: &Path) -> Option<f64> {
    read_trimmed(path).ok()?.parse().ok()
}

impl Thermal {
    /// Everything under `root/sys`; what is missing is said in the returned reasons.
    pub fn detect(root: &Path) -> (Thermal, Vec<String>) {
        let mut why = Vec::new();
        let class = root.join("sys/class/thermal");
        let mut zones = Vec::new();
        for (_, z) in sorted_dirs(&class, "thermal_zone") {
            let name = read_trimmed(&z.join("type")).unwrap_or_else(|_| "zone".into());
            let mut trips = Vec::new();
            for i in 0.. {
                let (Some(t), Ok(ty)) = (
                    num(&z.join(format!("trip_point_{i}_temp"))),
                    read_trimmed(&z.join(format!("trip_point_{i}_type"))),
                ) else {
                    break;
                };
                trips.push((ty, t / 1000.0));
            }
            let mut zone = Zone {
                name,
                temp: z.join("temp"),
                trips,
                detected_c: None,
            };
            zone.detected_c = num(&zone.temp).map(|t| t / 1000.0);
            zones.push(zone);
        }
        if zones.is_empty() {
            why.push(format!("thermal: no thermal_zone* in {}", class.display()));
        }
        let cooling = sorted_dirs(&class, "cooling_device")
            .into_iter()
            .map(|(_, c)| Cooling {
                name: read_trimmed(&c.join("type")).unwrap_or_else(|_| "cooling".into()),
                cur: c.join("cur_state"),
            })
            .collect();
        let cpus: Vec<Cpu> = sorted_dirs(&root.join("sys/devices/system/cpu"), "cpu")
            .into_iter()
            .map(|(index, c)| Cpu {
                index,
                cur: c.join("cpufreq/scaling_cur_freq"),
            })
            .filter(|c| c.cur.is_file())
            .collect();
        if cpus.is_empty() {
            why.push("cpufreq: no scaling_cur_freq (a VM or a kernel without cpufreq)".into());
        }
        (
            Thermal {
                zones,
                cooling,
                cpus,
            },
            why,
        )
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty() && self.cpus.is_empty() && self.cooling.is_empty()
    }

    pub fn read(&self) -> ThermalReading {
        ThermalReading {
            temps_c: self.zones.iter().map(Zone::read_c).collect(),
            freqs_mhz: self
                .cpus
                .iter()
                .map(|c| num(&c.cur).map(|k| k / 1000.0))
                .collect(),
            cooling: self.cooling.iter().map(|c| num(&c.cur)).collect(),
        }
    }
}

/// `--cooldown`: before each case after the first, wait until the hottest zone is back
/// within `tolerance_c` of where it was when the run began, for at most `max_wait`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cooldown {
    pub tolerance_c: f64,
    pub max_wait: std::time::Duration,
}

impl Default for Cooldown {
    fn default() -> Self {
        Cooldown {
            tolerance_c: 2.0,
            max_wait: std::time::Duration::from_secs(300),
        }
    }
}

/// What a cooldown did before a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CooledDown {
    pub waited_s: f64,
    pub from_c: f64,
    /// The hottest zone at the end: its last reading, for a zone that could not be read then.
    pub to_c: f64,
    pub target_c: f64,
    /// False: `max_wait` ran out first, and the case ran warmer than the run began — or a
    /// zone could not be read at the end, so how warm is not known.
    pub reached: bool,
    /// A zone that was readable when the cooldown began and stayed unreadable to its end:
    /// the other zones were not trusted (they may be the cool battery beside a hot SoC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable_zone: Option<String>,
}

impl Thermal {
    /// The hottest zone when detected, if any could be read.
    pub fn detected_hottest_c(&self) -> Option<f64> {
        self.zones
            .iter()
            .filter_map(|z| z.detected_c)
            .reduce(f64::max)
    }

    /// Polls every `poll` until the hottest zone is at or below `target_c`, for at most
    /// `max_wait`. `None`: no temperature can be read here. Only zones readable at detection
    /// count, and all of them must be read for the device to count as cooled.
    pub fn cool_down(
        &self,
        target_c: f64,
        max_wait: std::time::Duration,
        poll: std::time::Duration,
    ) -> Option<CooledDown> {
        let start = std::time::Instant::now();
        let from_c = self.detected_hottest_c()?;
        // The last reading of each zone, for the report when one stops answering.
        let mut last: Vec<Option<f64>> = self.zones.iter().map(|z| z.detected_c).collect();
        loop {
            let mut unreadable = None;
            for (z, last) in self.zones.iter().zip(&mut last) {
                if z.detected_c.is_none() {
                    continue;
                }
                match z.read_c() {
                    Some(t) => *last = Some(t),
                    None => unreadable = unreadable.or(Some(z.name.clone())),
                }
            }
            let now_c = last.iter().flatten().copied().reduce(f64::max)?;
            let reached = unreadable.is_none() && now_c <= target_c;
            if reached || start.elapsed() >= max_wait {
                return Some(CooledDown {
                    waited_s: start.elapsed().as_secs_f64(),
                    from_c,
                    to_c: now_c,
                    target_c,
                    reached,
                    unreadable_zone: unreadable,
                });
            }
            std::thread::sleep(poll.min(max_wait.saturating_sub(start.elapsed())));
        }
    }
}
