//! `cargo melt setup onnxruntime [--triple T]`: the ONNX Runtime library melt's `onnxruntime`
//! backend opens at run time, taken from the PyPI `onnxruntime` wheel (its
//! `onnxruntime/capi/libonnxruntime.so.<version>`), because the ort crate's own download
//! cannot work offline or for a device.
//!
//! Cached as `<melt cache>/runtimes/onnxruntime-<version>/libonnxruntime.so` for the host
//! (where the backend looks) and `.../<triple>/libonnxruntime.so` for device triples, which
//! `cargo melt bench --target` pushes beside the bench binary.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::pypi;

/// The ONNX Runtime release ort 2.0.0-rc.15 is built for (melt-backends' `ORT_VERSION`).
pub const ORT_VERSION: &str = "1.31.1";

/// The directory of the cached library for `triple`.
pub fn onnxruntime_dir(triple: &str, host: &str) -> PathBuf {
    let base = melt_bench::model::Cache::default_root()
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
            "melt: ONNX Runtime {ORT_VERSION} for {triple}: {}",
            p.display()
        );
        return Ok(p);
    }
    let platforms = wheel_platforms(triple)?;
    let dir = onnxruntime_dir(triple, host);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let work = tempfile::tempdir_in(&dir).context("a download directory")?;
    let spec = format!("onnxruntime=={ORT_VERSION}");
    pypi::pip_download_into(&spec, platforms, work.path())
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
    pypi::extract_member(&wheel, &member, &part)?;
    check_elf(&part)?;
    let to = dir.join("libonnxruntime.so");
    std::fs::rename(&part, &to).with_context(|| format!("moving it to {}", to.display()))?;
    eprintln!(
        "melt: ONNX Runtime {ORT_VERSION} for {triple}: {}",
        to.display()
    );
    Ok(to)
}

/// The libtorch release tch 0.26 is built for.
pub const TORCH_VERSION: &str = "2.13.0";

/// libtorch_cpu NEEDS the CUDA runtime and CUPTI (loaded, never used, without a GPU): these
/// PyPI wheels are `cuda-toolkit[cudart,cupti]==13.0.3`'s pins.
const CUDA_WHEELS: [&str; 2] = ["nvidia-cuda-runtime==13.0.96", "nvidia-cuda-cupti==13.0.85"];

/// What the CPU libtorch directory holds in `lib/` besides the stub `libtorch.so`.
const LIBTORCH_LIBS: [&str; 5] = [
    "libtorch_cpu.so",
    "libc10.so",
    "libgomp.so.1",
    "libcudart.so.13",
    "libcupti.so.13",
];

/// What aarch64's `libtorch_cpu` NEEDS besides: the wheel's own BLAS and LAPACK (NVIDIA's
/// NVPL) and Arm Compute Library, all in its `torch/lib`.
const AARCH64_LIBTORCH_LIBS: [&str; 6] = [
    "libnvpl_blas_core.so.0",
    "libnvpl_blas_lp64_gomp.so.0",
    "libnvpl_lapack_core.so.0",
    "libnvpl_lapack_lp64_gomp.so.0",
    "libarm_compute.so",
    "libarm_compute_graph.so",
];

/// Every library a CPU libtorch for `triple` holds in `lib/` besides the stub `libtorch.so`.
fn libtorch_libs(triple: &str) -> Vec<&'static str> {
    let mut libs = LIBTORCH_LIBS.to_vec();
    if triple.starts_with("aarch64") {
        libs.extend(AARCH64_LIBTORCH_LIBS);
    }
    libs
}

/// The cached CPU libtorch for `triple` (`LIBTORCH`): `include/`, `lib/`, `build-version`.
pub fn libtorch_dir(triple: &str, host: &str) -> PathBuf {
    let base = melt_bench::model::Cache::default_root()
        .join("runtimes")
        .join(format!("libtorch-{TORCH_VERSION}"));
    if triple == host {
        base
    } else {
        base.join(triple)
    }
}

/// The cached libtorch directory, if `setup libtorch` made it.
pub fn cached_libtorch(triple: &str, host: &str) -> Option<PathBuf> {
    let dir = libtorch_dir(triple, host);
    let complete = dir.join("build-version").is_file()
        && libtorch_libs(triple)
            .iter()
            .all(|l| dir.join("lib").join(l).is_file());
    complete.then_some(dir)
}

/// `cargo melt setup libtorch`: a CPU libtorch directory built from the PyPI `torch` wheel
/// (only `libtorch_cpu`, `libc10`, `libgomp` and the headers of its 527 MB; `libtorch.so`
/// would drag in the whole CUDA stack), plus the two small CUDA runtime libraries
/// `libtorch_cpu` needs to load, and an empty `libtorch.so` (a linker script with nothing
/// in it) for torch-sys's `-ltorch`: with `--as-needed` the binary then NEEDS only
/// `libtorch_cpu` and `libc10`.
pub fn setup_libtorch(triple: &str, host: &str) -> Result<PathBuf> {
    if let Some(dir) = cached_libtorch(triple, host) {
        eprintln!(
            "melt: libtorch {TORCH_VERSION} for {triple}: {}",
            dir.display()
        );
        return Ok(dir);
    }
    let platforms: &[&str] = match triple {
        "x86_64-unknown-linux-gnu" => &[
            "manylinux_2_28_x86_64",
            "manylinux_2_25_x86_64",
            "manylinux_2_17_x86_64",
            "manylinux2014_x86_64",
        ],
        "aarch64-unknown-linux-gnu" => &[
            "manylinux_2_28_aarch64",
            "manylinux_2_25_aarch64",
            "manylinux_2_17_aarch64",
            "manylinux2014_aarch64",
        ],
        t if t.contains("android") => bail!(
            "PyPI has no Android libtorch: build one with PyTorch's scripts/build_android.sh (or take lib/<abi>/ from the pytorch_android AAR) and point LIBTORCH at it"
        ),
        t => bail!("no PyPI torch wheel is known for {t}: point LIBTORCH at a libtorch {TORCH_VERSION} for it"),
    };
    let dir = libtorch_dir(triple, host);
    let parent = dir.parent().context("the runtimes directory")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let work = tempfile::tempdir_in(parent).context("a download directory")?;
    let wheels = work.path().join("wheels");
    pypi::pip_download_into(&format!("torch=={TORCH_VERSION}"), platforms, &wheels)
        .with_context(|| format!("the torch {TORCH_VERSION} wheel for {triple}"))?;
    for spec in CUDA_WHEELS {
        pypi::pip_download_into(spec, platforms, &wheels)
            .with_context(|| format!("the CUDA runtime wheel {spec} libtorch_cpu needs"))?;
    }
    let out = work.path().join("libtorch");
    let lib = out.join("lib");
    std::fs::create_dir_all(&lib)?;
    for wheel in std::fs::read_dir(&wheels)?.flatten().map(|e| e.path()) {
        let name = wheel
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if name.starts_with("torch-") {
            pypi::extract_prefix(&wheel, "torch/include/", &out.join("include"))?;
            let from_torch = libtorch_libs(triple)
                .into_iter()
                .filter(|l| !l.starts_with("libcu"));
            for l in from_torch {
                pypi::extract_member(&wheel, &format!("torch/lib/{l}"), &lib.join(l))?;
            }
        } else if name.starts_with("nvidia_cuda_runtime") {
            let l = "libcudart.so.13";
            pypi::extract_member(&wheel, &format!("nvidia/cu13/lib/{l}"), &lib.join(l))?;
        } else if name.starts_with("nvidia_cuda_cupti") {
            let l = "libcupti.so.13";
            pypi::extract_member(&wheel, &format!("nvidia/cu13/lib/{l}"), &lib.join(l))?;
        }
    }
    for l in libtorch_libs(triple) {
        let p = lib.join(l);
        if !p.is_file() {
            bail!("the wheels had no {l} (looked in {})", wheels.display());
        }
        check_elf(&p)?;
    }
    // torch-sys links `-ltorch` and `-lgomp`: an empty linker script, and the wheel's gomp.
    std::fs::write(lib.join("libtorch.so"), "")?;
    std::os::unix::fs::symlink("libgomp.so.1", lib.join("libgomp.so"))?;
    // torch-sys checks this against the version tch expects.
    std::fs::write(out.join("build-version"), format!("{TORCH_VERSION}\n"))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing the incomplete {}", dir.display()))?;
    }
    std::fs::rename(&out, &dir).with_context(|| format!("moving it to {}", dir.display()))?;
    eprintln!(
        "melt: libtorch {TORCH_VERSION} for {triple}: {}",
        dir.display()
    );
    Ok(dir)
}

/// The libraries a binary linked against the libtorch in `dir` loads at run time (what a
/// device needs beside it; the stub `libtorch.so` is not among them).
pub fn libtorch_runtime_libs(dir: &Path, triple: &str) -> Vec<PathBuf> {
    libtorch_libs(triple)
        .iter()
        .map(|l| dir.join("lib").join(l))
        .collect()
}

/// The environment a cargo build with the `libtorch` feature needs: torch-sys reads
/// `LIBTORCH` (and the build scripts of melt and melt-backends put `LIBTORCH/lib` in the
/// binaries' rpath).
pub fn libtorch_env(dir: &Path) -> [(&'static str, PathBuf); 1] {
    [("LIBTORCH", dir.to_path_buf())]
}

fn check_elf(path: &Path) -> Result<()> {
    let head = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if head.len() < 64 << 10 || &head[..4] != b"\x7fELF" {
        bail!(
            "{} is not a shared library ({} bytes)",
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
            .contains("not a shared library"));
    }
}
