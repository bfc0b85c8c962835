//! Build prerequisites of llama.cpp (cmake, a C/C++ compiler, libclang for bindgen): detected,
//! installed with apt-get when that is possible (root on Debian/Ubuntu), otherwise named with
//! the exact command to run.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

fn has(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Whether bindgen will find libclang: `LIBCLANG_PATH`, or a libclang in the usual places.
fn has_libclang() -> bool {
    if let Some(p) = std::env::var_os("LIBCLANG_PATH") {
        return Path::new(&p).exists();
    }
    let roots = [
        "/usr/lib",
        "/usr/lib64",
        "/usr/local/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
    ];
    let mut dirs: Vec<std::path::PathBuf> = roots.iter().map(Into::into).collect();
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("llvm-") {
                dirs.push(e.path().join("lib"));
            }
        }
    }
    dirs.iter().any(|d| {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("libclang"))
            })
            .unwrap_or(false)
    })
}

/// The Debian packages still missing.
pub fn missing() -> Vec<&'static str> {
    let mut m = Vec::new();
    if !has("cmake", "--version") {
        m.push("cmake");
    }
    if !has("c++", "--version") && !has("g++", "--version") && !has("clang++", "--version") {
        m.push("g++");
    }
    if !has("clang", "--version") {
        m.push("clang");
    }
    if !has_libclang() {
        m.push("libclang-dev");
    }
    m
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Installs what is missing, or fails with the command a person must run.
pub fn ensure() -> Result<()> {
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    apt_install(&missing).context(format!(
        "llama.cpp needs {list} to build (or your system's equivalents: cmake, a C++ \
         compiler, clang and libclang)"
    ))?;
    if !self::missing().is_empty() {
        bail!("apt-get could not install {list}; try: apt-get install -y {list}");
    }
    Ok(())
}

/// `apt-get install` of Debian packages where this process can (root, apt-get present);
/// otherwise an error with the exact command a person must run.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let list = packages.join(" ");
    if !(is_root() && has("apt-get", "--version")) {
        bail!(
            "not root or no apt-get here; install them, e.g.\n    sudo apt-get install -y {list}"
        );
    }
    eprintln!("melt: installing {list} with apt-get");
    let ok = Command::new("apt-get")
        .arg("update")
        .arg("-qq")
        .status()
        .context("running apt-get update")?
        .success()
        && Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get install")?
            .success();
    if !ok {
        bail!("apt-get could not install {list}; try: apt-get install -y {list}");
    }
    Ok(())
}
