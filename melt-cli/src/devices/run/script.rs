//! The shell script that runs the bench binary on a device, everything quoted.

use crate::devices::shell::{join, quote};
use crate::devices::Device;

/// The script that runs the bench binary on the device. Everything melt puts in it is quoted;
/// the exit status comes back as the last stdout line (`adb shell` does not forward it).
pub fn run_script(d: &Device, binary: &str, args: &[String], pid_file: &str) -> String {
    let w = quote(&d.workdir);
    let wd = |sub: &str| quote(&format!("{}/{sub}", d.workdir));
    let mut env: Vec<String> = vec![
        format!(
            "LD_LIBRARY_PATH={}\"${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\"",
            wd("lib")
        ),
        format!("MELT_CACHE_DIR={}", wd("cache")),
        format!("MELT_CONFIG={}", wd("melt.toml")),
        format!("MELT_TARGET_DIR={}", wd("target")),
    ];
    env.extend(d.env.iter().map(|(k, v)| format!("{k}={}", quote(v))));
    let android = d.kind == crate::devices::Kind::Adb;
    let mut s = format!("cd {w} || exit 97\n");
    if android {
        // Keep the screen (and so the CPU) awake while plugged in; the old setting comes back.
        s.push_str("melt_stay=$(settings get global stay_on_while_plugged_in 2>/dev/null)\nsvc power stayon true 2>/dev/null\n");
    }
    s.push_str(&format!(
        "{} {} {} </dev/null &\nmelt_pid=$!\necho \"$melt_pid\" > {}\nwait \"$melt_pid\"\nmelt_code=$?\n",
        env.join(" "),
        quote(binary),
        join(args),
        quote(pid_file)
    ));
    if android {
        s.push_str("[ -n \"$melt_stay\" ] && settings put global stay_on_while_plugged_in \"$melt_stay\" 2>/dev/null\n");
    }
    s.push_str(&format!(
        "rm -f {}\necho \"{EXIT_MARK}$melt_code\"\n",
        quote(pid_file)
    ));
    s
}

pub const EXIT_MARK: &str = "__MELT_EXIT__=";

/// The script that starts a bench binary as a `--worker` on the device: in the foreground,
/// its stdin and stdout the transport's (ssh's, `adb shell`'s), so the gate on the host talks
/// to it directly; the environment is a run's.
pub fn worker_script(d: &Device, binary: &str, args: &[String]) -> String {
    let w = quote(&d.workdir);
    let wd = |sub: &str| quote(&format!("{}/{sub}", d.workdir));
    let mut s = format!("cd {w} || exit 97\n");
    s.push_str(&format!(
        "LD_LIBRARY_PATH={}\"${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\"\nexport LD_LIBRARY_PATH\n",
        wd("lib")
    ));
    let vars: Vec<(String, String)> = [
        ("MELT_CACHE_DIR", wd("cache")),
        ("MELT_CONFIG", wd("melt.toml")),
        ("MELT_TARGET_DIR", wd("target")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(d.env.iter().map(|(k, v)| (k.clone(), quote(v))))
    .collect();
    for (k, v) in vars {
        s.push_str(&format!("{k}={v}\nexport {k}\n"));
    }
    s.push_str(&format!("exec {} {}\n", quote(binary), join(args)));
    s
}
