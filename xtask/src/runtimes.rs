//! `cargo xtask setup onnxruntime [--triple T]`: the ONNX Runtime library melt's `onnxruntime`
//! backend opens at run time, taken from the PyPI `onnxruntime` wheel (its
//! `onnxruntime/capi/libonnxruntime.so.<version>`), because the ort crate's own download
//! cannot work offline or for a device.
//!
//! Cached as `<melt cache>/runtimes/onnxruntime-<version>/libonnxruntime.so` for the host
//! (where the backend looks) and `.../<triple>/libonnxruntime.so` for device triples, which
//! `cargo xtask bench --target` pushes beside the bench binary.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The ONNX Runtime release ort 2.0.0-rc.15 is built for (melt-backends' `ORT_VERSION`).
pub const ORT_VERSION: &str = "1.31.1";

/// The directory of the cached library for `triple`.
pub fn onnxruntime_dir(triple: &str, host: &str) -> PathBuf {
    let base = crate::models::cache()
        .root()
        .join("runtimes")
        .join(format!("onnxruntime-{ORT_VERSION}"));
    if triple == host {
        base
    } else {
        base.join(triple)
    }
}

/// The cached library for `triple`, if `setup onnxruntime` fetched it.
pub fn cached_onnxruntime(triple: &str, host: &str) -> Option<PathBuf> {
    let p = onnxruntime_dir(triple, host).join("libonnxruntime.so");
    p.is_file().then_some(p)
}

/// pip platform tags under which PyPI has the wheel for a triple.
fn wheel_platforms(triple: &str) -> Result<&'static [&'static str]> {
    Ok(match triple {
        "x86_64-unknown-linux-gnu" => &[
            "manylinux_2_28_x86_64",
            "manylinux_2_27_x86_64",
            "manylinux2014_x86_64",
        ],
        "aarch64-unknown-linux-gnu" => &[
            "manylinux_2_28_aarch64",
            "manylinux_2_27_aarch64",
            "manylinux2014_aarch64",
        ],
        t if t.contains("android") => bail!(
            "PyPI has no Android build of ONNX Runtime: take jni/<abi>/libonnxruntime.so from the onnxruntime-android AAR (Maven Central) and list it under `libs` of the [[device]] in melt.toml"
        ),
        t => bail!(
            "no PyPI onnxruntime wheel is known for {t}: put its libonnxruntime.so under `libs` of the [[device]] (or set ORT_DYLIB_PATH on the device)"
        ),
    })
}

/// Fetches the library for `triple` into the cache unless it is there; returns its path.
pub fn setup_onnxruntime(triple: &str, host: &str) -> Result<PathBuf> {
    if let Some(p) = cached_onnxruntime(triple, host) {
        eprintln!(
            "xtask: ONNX Runtime {ORT_VERSION} for {triple}: {}",
            p.display()
        );
        return Ok(p);
    }
    let platforms = wheel_platforms(triple)?;
    let dir = onnxruntime_dir(triple, host);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let work = tempfile::tempdir_in(&dir).context("a download directory")?;
    let spec = format!("onnxruntime=={ORT_VERSION}");
    crate::models::pip_download_into(&spec, platforms, work.path())
        .with_context(|| format!("the ONNX Runtime wheel for {triple}"))?;
    let wheel = std::fs::read_dir(work.path())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .with_context(|| {
            format!(
                "pip saved no onnxruntime wheel in {}",
                work.path().display()
            )
        })?;
    let member = format!("onnxruntime/capi/libonnxruntime.so.{ORT_VERSION}");
    let part = work.path().join("libonnxruntime.so.part");
    crate::models::extract_member(&wheel, &member, &part)?;
    check_elf(&part)?;
    let to = dir.join("libonnxruntime.so");
    std::fs::rename(&part, &to).with_context(|| format!("moving it to {}", to.display()))?;
    eprintln!(
        "xtask: ONNX Runtime {ORT_VERSION} for {triple}: {}",
        to.display()
    );
    Ok(to)
}

fn check_elf(path: &Path) -> Result<()> {
    let head = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if head.len() < 1 << 20 || &head[..4] != b"\x7fELF" {
        bail!(
            "{} is not the ONNX Runtime shared library ({} bytes)",
            path.display(),
            head.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_and_android_advice() {
        assert!(wheel_platforms("aarch64-unknown-linux-gnu").unwrap()[0].ends_with("aarch64"));
        let e = wheel_platforms("aarch64-linux-android")
            .unwrap_err()
            .to_string();
        assert!(e.contains("AAR") && e.contains("libs"), "{e}");
        assert!(wheel_platforms("riscv64gc-unknown-linux-gnu").is_err());
        let host = "x86_64-unknown-linux-gnu";
        assert!(onnxruntime_dir(host, host).ends_with(format!("onnxruntime-{ORT_VERSION}")));
        assert!(onnxruntime_dir("aarch64-unknown-linux-gnu", host)
            .ends_with("aarch64-unknown-linux-gnu"));
    }

    #[test]
    fn a_file_that_is_not_the_library_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("libonnxruntime.so");
        std::fs::write(&p, b"<html>not found</html>").unwrap();
        assert!(check_elf(&p)
            .unwrap_err()
            .to_string()
            .contains("not the ONNX Runtime"));
    }
}
