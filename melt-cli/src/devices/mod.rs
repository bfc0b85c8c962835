//! The device inventory (`[[device]]` in melt.toml), `--target` selection, and probing.
//!
//! ```toml
//! [[device]]
//! name = "jetson"
//! transport = "ssh"                      # local | ssh | adb
//! host = "192.168.1.20"                  # ssh: host, user, port, key, ssh_options
//! user = "melt"
//! key = "~/.ssh/id_ed25519"
//! triple = "aarch64-unknown-linux-gnu"   # default: this machine's (local, ssh),
//!                                        # aarch64-linux-android (adb)
//! workdir = "/home/melt/melt"            # default: melt (ssh, in $HOME), /data/local/tmp/melt (adb)
//! rustc = "/opt/rust-aarch64/bin/rustc"  # default: cargo's; one with this triple's std
//! libs = ["/opt/vendor/libfoo.so"]       # shipped beside the binary
//! ssh_options = ["-o", "StrictHostKeyChecking=accept-new"]
//! env = { OMP_PROC_BIND = "close" }
//! tags = ["boards"]
//!
//! [[device]]
//! name = "pixel7"
//! transport = "adb"
//! serial = "28131FDH2000A1"              # or "192.168.1.30:5555": adb over TCP
//! api_level = 28
//! ```

pub mod build;
pub mod run;
pub mod shell;
pub mod transport;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use transport::Transport;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Local,
    Ssh,
    Adb,
}

/// One `[[device]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub name: String,
    pub transport: Kind,
    pub host: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub ssh_options: Vec<String>,
    pub serial: Option<String>,
    pub triple: Option<String>,
    pub workdir: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Android API level the binary is built for (NDK clang `...-linux-android<N>-clang`).
    pub api_level: Option<u32>,
    /// Extra shared libraries to ship beside the binary (into `<workdir>/lib`).
    #[serde(default)]
    pub libs: Vec<PathBuf>,
    /// The Rust compiler that builds for this device's triple, where the default one has no
    /// standard library for it and rustup cannot add one (e.g. the board's unpacked rustc).
    pub rustc: Option<PathBuf>,
}

/// A device ready to use: its transport, triple and work directory resolved.
#[derive(Debug, Clone)]
pub struct Device {
    pub name: String,
    pub kind: Kind,
    pub transport: Transport,
    pub triple: String,
    pub workdir: String,
    pub env: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub api_level: u32,
    pub libs: Vec<PathBuf>,
    pub rustc: Option<PathBuf>,
}

pub const DEFAULT_ANDROID_API: u32 = 28;

#[derive(Deserialize)]
struct Inventory {
    #[serde(default)]
    device: Vec<DeviceConfig>,
}

fn expand_home(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_path_buf(),
    }
}

impl DeviceConfig {
    pub fn resolve(self, host_triple: &str, config_dir: &Path) -> Result<Device> {
        let name = self.name.clone();
        let need = |field: &str, v: &Option<String>| -> Result<String> {
            v.clone().with_context(|| {
                format!(
                    "device `{name}`: transport {:?} needs `{field}`",
                    self.transport
                )
            })
        };
        if name.trim().is_empty() {
            bail!("a [[device]] has an empty name");
        }
        if let Some(bad) = self.env.keys().find(|k| !shell::is_env_name(k)) {
            bail!("device `{name}`: `{bad}` is not a valid environment variable name");
        }
        let transport = match self.transport {
            Kind::Local => Transport::Local,
            Kind::Ssh => {
                let host = need("host", &self.host)?;
                if host.starts_with('-') {
                    bail!("device `{name}`: host `{host}` may not start with `-`");
                }
                Transport::Ssh {
                    destination: match &self.user {
                        Some(u) => format!("{u}@{host}"),
                        None => host,
                    },
                    port: self.port,
                    key: self.key.as_deref().map(expand_home),
                    options: self.ssh_options.clone(),
                }
            }
            Kind::Adb => Transport::Adb {
                serial: self.serial.clone(),
            },
        };
        let triple = self.triple.clone().unwrap_or_else(|| match self.transport {
            Kind::Adb => "aarch64-linux-android".into(),
            _ => host_triple.into(),
        });
        let workdir = match (&self.workdir, self.transport) {
            (Some(w), Kind::Local) => {
                let p = expand_home(Path::new(w));
                if p.is_absolute() {
                    p
                } else {
                    config_dir.join(p)
                }
                .display()
                .to_string()
            }
            (Some(w), _) => w.clone(),
            (None, Kind::Local) => config_dir
                .join("target/melt/devices")
                .join(melt_bench::criterion_format::make_filename_safe(&name))
                .display()
                .to_string(),
            (None, Kind::Ssh) => "melt".into(),
            (None, Kind::Adb) => "/data/local/tmp/melt".into(),
        };
        if workdir.is_empty() {
            bail!("device `{name}`: empty workdir");
        }
        Ok(Device {
            name,
            kind: self.transport,
            transport,
            triple,
            workdir,
            env: self.env,
            tags: self.tags,
            api_level: self.api_level.unwrap_or(DEFAULT_ANDROID_API),
            libs: self
                .libs
                .iter()
                .map(|l| config_dir.join(expand_home(l)))
                .collect(),
            rustc: self
                .rustc
                .as_deref()
                .map(|r| config_dir.join(expand_home(r))),
        })
    }
}

/// The devices of `melt.toml` at `path`.
pub fn load(path: &Path, host_triple: &str) -> Result<Vec<Device>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let inv: Inventory = toml::from_str(&text)
        .with_context(|| format!("{}: bad [[device]] entry", path.display()))?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .canonicalize()
        .unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for d in inv.device {
        if !seen.insert(d.name.clone()) {
            bail!("{}: two devices named `{}`", path.display(), d.name);
        }
        out.push(d.resolve(host_triple, &dir)?);
    }
    Ok(out)
}

/// The devices `--target` names: a device name, a tag, a transport kind (`android` is every
/// adb device, `ssh`, `local`), or several of these separated by commas.
pub fn select<'a>(devices: &'a [Device], target: &str) -> Result<Vec<&'a Device>> {
    let mut out: Vec<&Device> = Vec::new();
    for t in target.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let by_name: Vec<&Device> = devices.iter().filter(|d| d.name == t).collect();
        let matched = if !by_name.is_empty() {
            by_name
        } else {
            let kind = match t {
                "android" | "adb" => Some(Kind::Adb),
                "ssh" => Some(Kind::Ssh),
                "local" => Some(Kind::Local),
                _ => None,
            };
            devices
                .iter()
                .filter(|d| d.tags.iter().any(|g| g == t) || Some(d.kind) == kind)
                .collect()
        };
        if matched.is_empty() {
            let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
            let mut tags: Vec<&str> = devices
                .iter()
                .flat_map(|d| d.tags.iter().map(String::as_str))
                .collect();
            tags.sort_unstable();
            tags.dedup();
            bail!(
                "unknown device `{t}`: melt.toml has no [[device]] of that name, tag or kind \
                 (devices: {}; tags: {}; kinds: host, android, ssh, local)",
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                },
                if tags.is_empty() {
                    "none".into()
                } else {
                    tags.join(", ")
                },
            );
        }
        for d in matched {
            if !out.iter().any(|o| o.name == d.name) {
                out.push(d);
            }
        }
    }
    if out.is_empty() {
        bail!("--target names no device");
    }
    Ok(out)
}

/// What `cargo melt devices` and every run record about a device.
pub fn probe_script(workdir: &str) -> String {
    let w = shell::quote(workdir);
    // One `key=value` per line; a line that cannot be read is left out, not invented.
    format!(
        r#"echo "arch=$(uname -m)"
echo "kernel=$(uname -r)"
awk '/^MemAvailable:/ {{print "mem_available_kb=" $2}} /^MemTotal:/ {{print "mem_total_kb=" $2}}' /proc/meminfo 2>/dev/null
mkdir -p {w} 2>/dev/null && df -k {w} 2>/dev/null | awk 'END {{print "disk_free_kb=" $(NF-2)}}'
echo "workdir=$(cd {w} 2>/dev/null && pwd)"
g=/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor
[ -r "$g" ] && echo "governor=$(cat "$g")"
if command -v getprop >/dev/null 2>&1; then
  echo "android_model=$(getprop ro.product.model)"
  echo "android_soc=$(getprop ro.soc.model)"
  echo "android_platform=$(getprop ro.board.platform)"
  echo "android_release=$(getprop ro.build.version.release)"
  echo "android_api=$(getprop ro.build.version.sdk)"
fi
true"#
    )
}

/// Runs the probe; `key=value` pairs with non-empty values.
pub fn probe(d: &Device) -> Result<BTreeMap<String, String>> {
    d.transport.connect()?;
    let out = d
        .transport
        .output(&probe_script(&d.workdir))
        .with_context(|| format!("device `{}` is not reachable", d.name))?;
    Ok(parse_props(&out))
}

pub fn parse_props(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim_end_matches('\r').split_once('='))
        .filter(|(k, v)| !k.is_empty() && !v.trim().is_empty())
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// `cargo melt devices`: every device, probed.
pub fn list(devices: &[Device]) -> String {
    if devices.is_empty() {
        return "no [[device]] in melt.toml (see the book, book/src/devices.md)\n".into();
    }
    let mut out = String::from("| device | transport | triple | reachable | arch | kernel | free disk | free memory | android |\n|---|---|---|---|---|---|---|---|---|\n");
    for d in devices {
        let (reach, p) = match probe(d) {
            Ok(p) => ("yes".to_string(), p),
            Err(e) => (format!("no: {e:#}").replace('\n', " "), BTreeMap::new()),
        };
        let get = |k: &str| p.get(k).cloned().unwrap_or_else(|| "-".into());
        let gib = |k: &str| {
            p.get(k)
                .and_then(|v| v.parse::<f64>().ok())
                .map_or("-".into(), |kb| format!("{:.1} GiB", kb / 1_048_576.0))
        };
        let android = match p.get("android_release") {
            Some(r) => format!(
                "{} {} (API {})",
                get("android_model"),
                r,
                get("android_api")
            ),
            None => "-".into(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            d.name,
            d.transport.describe(),
            d.triple,
            reach,
            get("arch"),
            get("kernel"),
            gib("disk_free_kb"),
            gib("mem_available_kb"),
            android
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVENTORY: &str = r#"
[models.x]
file = "x.gguf"
format = "gguf"
sha256 = "00"
size = 1
source = { path = "/x.gguf" }

[[device]]
name = "jetson"
transport = "ssh"
host = "10.0.0.2"
user = "melt"
port = 2222
key = "keys/id"
triple = "aarch64-unknown-linux-gnu"
tags = ["boards", "arm"]
env = { OMP_PROC_BIND = "close" }

[[device]]
name = "pixel 7"
transport = "adb"
serial = "192.168.1.30:5555"
tags = ["arm"]

[[device]]
name = "here"
transport = "local"
"#;

    fn devices() -> Vec<Device> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("melt.toml");
        std::fs::write(&path, INVENTORY).unwrap();
        load(&path, "x86_64-unknown-linux-gnu").unwrap()
    }

    #[test]
    fn inventory_resolves_defaults() {
        let d = devices();
        assert_eq!(d.len(), 3);
        assert_eq!(
            d[0].transport,
            Transport::Ssh {
                destination: "melt@10.0.0.2".into(),
                port: Some(2222),
                key: Some(d[0].transport_key_for_test()),
                options: vec![],
            }
        );
        assert_eq!(d[0].workdir, "melt");
        assert_eq!(d[1].triple, "aarch64-linux-android");
        assert_eq!(d[1].workdir, "/data/local/tmp/melt");
        assert_eq!(d[1].api_level, DEFAULT_ANDROID_API);
        assert_eq!(d[2].triple, "x86_64-unknown-linux-gnu");
        assert!(
            d[2].workdir.ends_with("target/melt/devices/here"),
            "{}",
            d[2].workdir
        );
    }

    impl Device {
        fn transport_key_for_test(&self) -> PathBuf {
            match &self.transport {
                Transport::Ssh { key: Some(k), .. } => k.clone(),
                _ => panic!("no key"),
            }
        }
    }

    #[test]
    fn target_selects_by_name_tag_and_kind() {
        let d = devices();
        let names = |t: &str| -> Vec<String> {
            select(&d, t)
                .unwrap()
                .iter()
                .map(|d| d.name.clone())
                .collect()
        };
        assert_eq!(names("jetson"), ["jetson"]);
        assert_eq!(names("pixel 7"), ["pixel 7"]);
        assert_eq!(names("android"), ["pixel 7"]);
        assert_eq!(names("arm"), ["jetson", "pixel 7"]);
        assert_eq!(names("here,jetson,arm"), ["here", "jetson", "pixel 7"]);
        let e = select(&d, "pixel9").unwrap_err().to_string();
        assert!(
            e.contains("unknown device `pixel9`") && e.contains("jetson") && e.contains("boards"),
            "{e}"
        );
    }

    #[test]
    fn bad_entries_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("melt.toml");
        let cases = [
            ("[[device]]\nname = \"a\"\ntransport = \"ssh\"\n", "needs `host`"),
            ("[[device]]\nname = \"a\"\ntransport = \"usb\"\n", "unknown variant"),
            ("[[device]]\nname = \"a\"\ntransport = \"local\"\nhots = \"x\"\n", "unknown field"),
            (
                "[[device]]\nname = \"a\"\ntransport = \"local\"\nenv = { \"A;rm -rf /\" = \"1\" }\n",
                "not a valid environment variable name",
            ),
            (
                "[[device]]\nname = \"a\"\ntransport = \"local\"\n[[device]]\nname = \"a\"\ntransport = \"local\"\n",
                "two devices named `a`",
            ),
            ("[[device]]\nname = \"a\"\ntransport = \"ssh\"\nhost = \"-oProxyCommand=x\"\n", "may not start with `-`"),
        ];
        for (text, want) in cases {
            std::fs::write(&path, text).unwrap();
            let e = format!("{:#}", load(&path, "t").unwrap_err());
            assert!(e.contains(want), "{text}\n→ {e}");
        }
    }

    #[test]
    fn probe_reads_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let d = Device {
            name: "here".into(),
            kind: Kind::Local,
            transport: Transport::Local,
            triple: "t".into(),
            workdir: dir.path().join("w 1").display().to_string(),
            env: BTreeMap::new(),
            tags: vec![],
            api_level: 28,
            libs: vec![],
            rustc: None,
        };
        let p = probe(&d).unwrap();
        assert_eq!(p["arch"], std::env::consts::ARCH);
        assert!(p["mem_available_kb"].parse::<u64>().unwrap() > 0, "{p:?}");
        assert!(p["disk_free_kb"].parse::<u64>().unwrap() > 0, "{p:?}");
        assert!(
            !p.contains_key("android_model"),
            "not an Android device: {p:?}"
        );
        let table = list(std::slice::from_ref(&d));
        assert!(
            table.contains("| here | local shell |") && table.contains("| yes |"),
            "{table}"
        );
    }
}
