//! Description of the machine a run happened on, recorded in every summary so results from
//! different devices are never confused.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub cpu: String,
    pub logical_cores: usize,
    pub physical_cores: Option<usize>,
    pub memory_bytes: u64,
    /// The CPU features the bench binary was compiled with (`-C target-cpu`/`target-feature`),
    /// which bound the kernels Rust code can use whatever the CPU has.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compiled_features: Vec<String>,
    /// Why this machine is not what it says: a binary for one architecture on a CPU that
    /// `/proc/cpuinfo` describes as another (qemu-user shows the host's CPU). Its speed is
    /// the emulator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emulated: Option<String>,
}

impl HostInfo {
    /// Reads the host through `sysinfo`; a field it cannot read is left empty, not invented.
    pub fn detect() -> HostInfo {
        use sysinfo::System;
        let mut info = HostInfo {
            hostname: System::host_name().unwrap_or_default(),
            os: System::long_os_version().unwrap_or_default(),
            kernel: System::kernel_version().unwrap_or_default(),
            arch: System::cpu_arch(),
            logical_cores: crate::params::all_cores(),
            physical_cores: System::physical_core_count().ok(),
            ..HostInfo::default()
        };
        if let Ok(mut sys) = System::new() {
            sys.refresh_cpu_all();
            sys.refresh_memory();
            info.cpu = sys
                .cpus()
                .first()
                .map(|c| c.brand().trim().to_string())
                .unwrap_or_default();
            info.memory_bytes = sys.total_memory();
        }
        info.compiled_features = compiled_features().iter().map(|f| f.to_string()).collect();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        info.emulated = emulation(std::env::consts::ARCH, &cpuinfo);
        info
    }
}

/// The target features of interest to LLM kernels this binary was compiled with.
fn compiled_features() -> Vec<&'static str> {
    let mut on = Vec::new();
    macro_rules! check {
        ($($f:literal),*) => {
            $(if cfg!(target_feature = $f) { on.push($f); })*
        };
    }
    if cfg!(target_arch = "aarch64") {
        check!("neon", "fp16", "dotprod", "i8mm", "sve", "sve2", "bf16");
    } else if cfg!(any(target_arch = "x86_64", target_arch = "x86")) {
        check!(
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512vnni",
            "avxvnni"
        );
    }
    on
}

/// Whether `/proc/cpuinfo` describes a CPU of another architecture than `arch` the binary's:
/// x86 lists `vendor_id` and `flags`, ARM `CPU implementer` and `Features`.
fn emulation(arch: &str, cpuinfo: &str) -> Option<String> {
    let has = |key: &str| cpuinfo.lines().any(|l| l.starts_with(key));
    let described = if has("vendor_id") && has("flags") {
        "x86_64"
    } else if has("CPU implementer") {
        "aarch64"
    } else {
        return None;
    };
    let same = match arch {
        "x86" | "x86_64" => described == "x86_64",
        "aarch64" | "arm" => described == "aarch64",
        _ => true,
    };
    (!same).then(|| {
        format!(
            "this {arch} binary runs on a CPU that /proc/cpuinfo describes as {described}: \
             an emulator (qemu-user?), whose speed is not the device's"
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_arm_binary_on_an_x86_cpuinfo_is_emulated() {
        let x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2\n";
        let arm =
            "processor\t: 0\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n";
        assert!(super::emulation("aarch64", x86)
            .unwrap()
            .contains("qemu-user"));
        assert_eq!(super::emulation("x86_64", x86), None);
        assert_eq!(super::emulation("aarch64", arm), None);
        assert!(super::emulation("x86_64", arm).is_some());
        assert_eq!(super::emulation("riscv64", x86), None, "unknown: no claim");
        assert_eq!(super::emulation("aarch64", ""), None);
    }

    #[test]
    fn detects_this_machine() {
        let h = super::HostInfo::detect();
        assert!(h.logical_cores >= 1);
        assert!(!h.arch.is_empty());
        assert_eq!(h.emulated, None, "{h:?}");

        #[cfg(target_os = "linux")]
        assert!(h.memory_bytes > 0 && !h.kernel.is_empty(), "{h:?}");
    }
}
