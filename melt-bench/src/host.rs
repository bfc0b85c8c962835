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
        info
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn detects_this_machine() {
        let h = super::HostInfo::detect();
        assert!(h.logical_cores >= 1);
        assert!(!h.arch.is_empty());
        #[cfg(target_os = "linux")]
        assert!(h.memory_bytes > 0 && !h.kernel.is_empty(), "{h:?}");
    }
}
