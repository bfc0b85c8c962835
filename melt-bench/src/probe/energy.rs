//! Energy and power sources, each read from its real sysfs files under a configurable root.
//! A source that cannot be read says why ([`Unavailable`]) instead of inventing a number.
//!
//! | source | files | unit |
//! | --- | --- | --- |
//! | RAPL powercap | `class/powercap/intel-rapl:N/{name,energy_uj,max_energy_range_uj}` | µJ counter, wraps |
//! | hwmon | `class/hwmon/hwmon*/{name,energy*_input,power*_input}` | µJ counter / µW |
//! | Jetson INA3221 (hwmon driver) | `bus/i2c/drivers/ina3221/*/hwmon/hwmon*/in{i}_label` + `power{i}_input`, or `in{i}_input` (mV) × `curr{i}_input` (mA) | µW / mW |
//! | Jetson INA3221 (older iio driver) | `bus/i2c/drivers/ina3221x/*/iio:device*/rail_name_{i}` + `in_power{i}_input` | mW |
//! | Android battery | `class/power_supply/battery/{current_now,voltage_now,status}` | µA, µV |

use std::fs;
use std::path::{Path, PathBuf};

use super::{read_trimmed, Unavailable};

/// What a source gives at one instant.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reading {
    /// A cumulative energy in joules since the source was opened (wraparound undone).
    Joules(f64),
    /// Instantaneous power in watts.
    Watts(f64),
}

/// One energy or power source.
pub trait EnergySource: Send {
    /// A short name for reports (`rapl:package-0`, `jetson:VDD_IN`, `battery`).
    fn name(&self) -> String;
    /// The reading now.
    fn read(&mut self) -> Result<Reading, Unavailable>;
    /// What was assumed to make the number (sign, scale, which rails), for the report.
    fn assumptions(&self) -> Option<String> {
        None
    }
}

fn parse_num(path: &Path) -> Result<f64, Unavailable> {
    let text = read_trimmed(path)?;
    text.parse::<f64>()
        .map_err(|_| Unavailable(format!("{}: `{text}` is not a number", path.display())))
}

/// A RAPL zone's energy counter (µJ), which wraps at `max_energy_range_uj`.
pub struct Rapl {
    name: String,
    energy: PathBuf,
    range_uj: f64,
    last_uj: Option<f64>,
    total_j: f64,
}

impl Rapl {
    /// The top-level package zones under `root/sys/class/powercap` (subzones — core, uncore,
    /// dram — are parts of or beside a package and are not added to it).
    pub fn detect(root: &Path) -> Result<Vec<Rapl>, Unavailable> {
        let dir = root.join("sys/class/powercap");
        let entries =
            fs::read_dir(&dir).map_err(|e| Unavailable(format!("RAPL: {}: {e}", dir.display())))?;
        let mut zones: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap_or_default().to_string_lossy();
                // `intel-rapl:0` but not `intel-rapl:0:1` (AMD uses the same driver).
                n.starts_with("intel-rapl:") && n.matches(':').count() == 1
            })
            .collect();
        zones.sort();
        let mut out = Vec::new();
        for z in zones {
            let name = read_trimmed(&z.join("name")).unwrap_or_default();
            if !name.starts_with("package") {
                continue;
            }
            let range_uj = parse_num(&z.join("max_energy_range_uj"))?;
            let mut r = Rapl {
                name: format!("rapl:{name}"),
                energy: z.join("energy_uj"),
                range_uj,
                last_uj: None,
                total_j: 0.0,
            };
            // Readable? energy_uj is root-only since Linux 5.10 (CVE-2020-8694).
            r.read().map_err(|e| {
                Unavailable(format!(
                    "{e} (RAPL counters are root-only on recent kernels; run as root or `chmod a+r` them)"
                ))
            })?;
            out.push(r);
        }
        if out.is_empty() {
            return Err(Unavailable(format!(
                "RAPL: no package zone in {}",
                dir.display()
            )));
        }
        Ok(out)
    }
}

impl EnergySource for Rapl {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn read(&mut self) -> Result<Reading, Unavailable> {
        let uj = parse_num(&self.energy)?;
        if let Some(last) = self.last_uj {
            let delta = if uj >= last {
                uj - last
            } else {
                // Wrapped: the counter went past its range and restarted at 0.
                self.range_uj - last + uj
            };
            self.total_j += delta / 1e6;
        }
        self.last_uj = Some(uj);
        Ok(Reading::Joules(self.total_j))
    }
}

/// An hwmon channel: an energy counter (µJ) or a power input (µW).
pub struct Hwmon {
    name: String,
    path: PathBuf,
    energy: bool,
    first_uj: Option<f64>,
}

impl Hwmon {
    /// The first channel of the first hwmon device with energy inputs (preferred: a counter
    /// integrates exactly), else with power inputs. Only one: a device's channels may overlap
    /// (a socket and its cores), so adding them could count energy twice.
    pub fn detect(root: &Path) -> Result<Vec<Hwmon>, Unavailable> {
        let dir = root.join("sys/class/hwmon");
        let entries = fs::read_dir(&dir)
            .map_err(|e| Unavailable(format!("hwmon: {}: {e}", dir.display())))?;
        let mut devices: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        devices.sort();
        for kind in ["energy", "power"] {
            for d in &devices {
                let mut inputs: Vec<PathBuf> = fs::read_dir(d)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        let n = p.file_name().unwrap_or_default().to_string_lossy();
                        n.starts_with(kind) && n.ends_with("_input")
                    })
                    .collect();
                inputs.sort();
                if inputs.is_empty() {
                    continue;
                }
                let dev = read_trimmed(&d.join("name")).unwrap_or_else(|_| "hwmon".into());
                let p = &inputs[0];
                let chan = p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                let label = p.with_file_name(chan.replace("_input", "_label"));
                let label = read_trimmed(&label).unwrap_or_else(|_| chan.replace("_input", ""));
                let mut h = Hwmon {
                    name: format!("hwmon:{dev}:{label}"),
                    path: p.clone(),
                    energy: kind == "energy",
                    first_uj: None,
                };
                h.read()?;
                return Ok(vec![h]);
            }
        }
        Err(Unavailable(format!(
            "hwmon: no energy*_input or power*_input under {}",
            dir.display()
        )))
    }
}

impl EnergySource for Hwmon {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn read(&mut self) -> Result<Reading, Unavailable> {
        let v = parse_num(&self.path)?;
        if self.energy {
            let first = *self.first_uj.get_or_insert(v);
            Ok(Reading::Joules((v - first) / 1e6))
        } else {
            Ok(Reading::Watts(v / 1e6))
        }
    }
}

/// How one INA3221 rail's power is read.
#[derive(Debug, Clone)]
enum RailFiles {
    /// µW (hwmon `power{i}_input`).
    Power(PathBuf),
    /// mV × mA (hwmon `in{i}_input`, `curr{i}_input`).
    VoltsAmps(PathBuf, PathBuf),
    /// mW (iio `in_power{i}_input`).
    PowerMilli(PathBuf),
}

/// Jetson's INA3221 monitor: the board-total rail (`VDD_IN`, or `POM_5V_IN` on older boards)
/// when there is one — never the sum of it and its sub-rails — else the sum of all rails.
pub struct Jetson {
    rails: Vec<(String, RailFiles)>,
    total: bool,
}

const BOARD_TOTAL: [&str; 2] = ["VDD_IN", "POM_5V_IN"];

impl Jetson {
    pub fn detect(root: &Path) -> Result<Jetson, Unavailable> {
        let mut rails = Vec::new();
        let drivers = root.join("sys/bus/i2c/drivers");
        let sorted = |d: &Path| -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = fs::read_dir(d)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect();
            v.sort();
            v
        };
        // Newer L4T: the hwmon driver.
        for dev in sorted(&drivers.join("ina3221")) {
            for h in sorted(&dev.join("hwmon")) {
                for i in 1..=3 {
                    let Ok(label) = read_trimmed(&h.join(format!("in{i}_label"))) else {
                        continue;
                    };
                    let power = h.join(format!("power{i}_input"));
                    let files = if power.is_file() {
                        RailFiles::Power(power)
                    } else {
                        RailFiles::VoltsAmps(
                            h.join(format!("in{i}_input")),
                            h.join(format!("curr{i}_input")),
                        )
                    };
                    rails.push((label, files));
                }
            }
        }
        // Older L4T: the iio driver.
        for dev in sorted(&drivers.join("ina3221x")) {
            for iio in sorted(&dev).into_iter().filter(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .starts_with("iio:device")
            }) {
                for i in 0..3 {
                    let Ok(label) = read_trimmed(&iio.join(format!("rail_name_{i}"))) else {
                        continue;
                    };
                    rails.push((
                        label,
                        RailFiles::PowerMilli(iio.join(format!("in_power{i}_input"))),
                    ));
                }
            }
        }
        if rails.is_empty() {
            return Err(Unavailable(format!(
                "Jetson INA3221: no rails under {}",
                drivers.display()
            )));
        }
        let total: Vec<_> = rails
            .iter()
            .filter(|(l, _)| BOARD_TOTAL.contains(&l.as_str()))
            .cloned()
            .collect();
        let mut j = if total.is_empty() {
            Jetson {
                rails,
                total: false,
            }
        } else {
            Jetson {
                rails: total[..1].to_vec(),
                total: true,
            }
        };
        j.read()?;
        Ok(j)
    }
}

impl EnergySource for Jetson {
    fn name(&self) -> String {
        if self.total {
            format!("jetson:{}", self.rails[0].0)
        } else {
            "jetson:sum-of-rails".into()
        }
    }

    fn read(&mut self) -> Result<Reading, Unavailable> {
        let mut watts = 0.0;
        for (_, f) in &self.rails {
            watts += match f {
                RailFiles::Power(p) => parse_num(p)? / 1e6,
                RailFiles::VoltsAmps(v, a) => parse_num(v)? * parse_num(a)? / 1e6,
                RailFiles::PowerMilli(p) => parse_num(p)? / 1e3,
            };
        }
        Ok(Reading::Watts(watts))
    }

    fn assumptions(&self) -> Option<String> {
        Some(if self.total {
            format!(
                "board total rail {} alone (sub-rails are inside it)",
                self.rails[0].0
            )
        } else {
            let names: Vec<&str> = self.rails.iter().map(|(l, _)| l.as_str()).collect();
            format!("no board-total rail: sum of {}", names.join(" + "))
        })
    }
}

/// An Android battery's discharge power from `current_now` × `voltage_now`. Vendors disagree
/// on the sign of a discharge current and some report mA instead of µA, so the first reading
/// calibrates both, and the assumption is reported.
pub struct Battery {
    current: PathBuf,
    voltage: PathBuf,
    /// Multiplier that turns the raw current into discharge µA (sign and scale).
    current_scale: f64,
    assumed: String,
}

impl Battery {
    pub fn detect(root: &Path) -> Result<Battery, Unavailable> {
        let dir = root.join("sys/class/power_supply/battery");
        let status = read_trimmed(&dir.join("status"))
            .map_err(|e| Unavailable(format!("battery: {}", e.0)))?;
        if matches!(status.as_str(), "Charging" | "Full") {
            return Err(Unavailable(format!(
                "battery: status is {status}: the battery is not what powers the device (unplug it)"
            )));
        }
        let current = dir.join("current_now");
        let voltage = dir.join("voltage_now");
        let raw = parse_num(&current)?;
        parse_num(&voltage)?;
        if raw == 0.0 {
            return Err(Unavailable(
                "battery: current_now reads 0 (no fuel gauge current)".into(),
            ));
        }
        // Discharging draws current out: whichever sign this vendor uses for that is made
        // positive. Phones draw 50 mA–5 A; a magnitude below 10 000 is mA, not µA.
        let sign = raw.signum();
        let scale = if raw.abs() < 10_000.0 { 1000.0 } else { 1.0 };
        let assumed = format!(
            "discharge current reads {} in {} (status {status}, first reading {raw})",
            if sign < 0.0 { "negative" } else { "positive" },
            if scale == 1.0 { "µA" } else { "mA" }
        );
        Ok(Battery {
            current,
            voltage,
            current_scale: sign * scale,
            assumed,
        })
    }
}

impl EnergySource for Battery {
    fn name(&self) -> String {
        "battery".into()
    }

    fn read(&mut self) -> Result<Reading, Unavailable> {
        let ua = parse_num(&self.current)? * self.current_scale;
        let uv = parse_num(&self.voltage)?;
        Ok(Reading::Watts(ua * uv / 1e12))
    }

    fn assumptions(&self) -> Option<String> {
        Some(self.assumed.clone())
    }
}

/// The energy source melt reports J/token from, in order of trust: a board-total rail, the
/// CPU package counters, an hwmon device, the battery. Returns it and why each other one is
/// unavailable.
pub fn detect(root: &Path) -> (Vec<Box<dyn EnergySource>>, Vec<String>) {
    fn boxed<S: EnergySource + 'static>(v: Vec<S>) -> Vec<Box<dyn EnergySource>> {
        v.into_iter()
            .map(|s| Box::new(s) as Box<dyn EnergySource>)
            .collect()
    }
    type Detect = fn(&Path) -> Result<Vec<Box<dyn EnergySource>>, Unavailable>;
    let in_order: [Detect; 4] = [
        |r| Jetson::detect(r).map(|j| boxed(vec![j])),
        |r| Rapl::detect(r).map(boxed),
        |r| Hwmon::detect(r).map(boxed),
        |r| Battery::detect(r).map(|b| boxed(vec![b])),
    ];
    let mut why = Vec::new();
    for detect in in_order {
        match detect(root) {
            Ok(sources) => return (sources, why),
            Err(e) => why.push(e.0),
        }
    }
    (Vec::new(), why)
}
