//! Putting the binary, its libraries, its models and its data on a device: content-addressed,
//! resumable, never used half-written.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::MultiProgress;

use super::args::ModelFile;
use super::progress::say;
use crate::devices::shell::quote;
use crate::devices::Device;

/// Copies `local` to `remote` on the device unless a file of the same size is there: via a
/// `.part` file renamed into place only once whole (and, with `sha256`, once its hash matches
/// on the device), so an interrupted push is resumed and never used half-written.
pub(super) fn push(
    d: &Device,
    local: &Path,
    remote: &str,
    sha256: Option<&str>,
    executable: bool,
) -> Result<bool> {
    let t = &d.transport;
    let size = std::fs::metadata(local)
        .with_context(|| format!("{}", local.display()))?
        .len();
    if t.remote_size(remote)? == size {
        return Ok(false);
    }
    let part = format!("{remote}.part");
    let dir = remote.rsplit_once('/').map_or(".", |(d, _)| d);
    t.output(&format!("mkdir -p {}", quote(dir)))?;
    t.push_resumable(local, &part)?;
    if let Some(expected) = sha256 {
        let got = t.output(&format!(
            "if command -v sha256sum >/dev/null 2>&1; then sha256sum {} | cut -d ' ' -f 1; else echo unavailable; fi",
            quote(&part)
        ))?;
        let got = got.trim();
        if got != "unavailable" && got != expected {
            t.output(&format!("rm -f {}", quote(&part)))?;
            bail!(
                "{} arrived on device `{}` with sha256 {got}, not {expected}; removed it",
                local.display(),
                d.name
            );
        }
    }
    let chmod = if executable {
        format!("chmod 755 {} && ", quote(&part))
    } else {
        String::new()
    };
    t.output(&format!("{chmod}mv -f {} {}", quote(&part), quote(remote)))?;
    Ok(true)
}

/// The files a run needs on the device.
pub struct Payload<'a> {
    pub binary: &'a Path,
    pub libs: &'a [PathBuf],
    pub config: &'a Path,
    pub models: &'a [ModelFile],
    /// The tasks' data files.
    pub data: &'a [ModelFile],
}

/// Pushes the payload but the registry models (see [`push_models`]); the binary's device
/// path.
pub(super) fn deploy(d: &Device, p: &Payload, mp: &MultiProgress) -> Result<String> {
    let w = &d.workdir;
    d.transport.output(&format!(
        "mkdir -p {} {} {} {}",
        quote(&format!("{w}/bin")),
        quote(&format!("{w}/lib")),
        quote(&format!("{w}/cache/models")),
        quote(&format!("{w}/run"))
    ))?;
    // Content-addressed, so re-running the same build pushes nothing.
    let sha = melt_bench::model::sha256_file(p.binary)?;
    let name = p
        .binary
        .file_name()
        .context("bench binary without a file name")?
        .to_string_lossy();
    let remote_bin = format!("{w}/bin/{}/{name}", &sha[..16]);
    if push(d, p.binary, &remote_bin, Some(&sha), true)? {
        say(
            mp,
            &format!("melt: [{}] pushed {}", d.name, p.binary.display()),
        );
    }
    push_libs(d, &p.libs.iter().chain(&d.libs).collect::<Vec<_>>(), mp)?;
    let remote_cfg = format!("{w}/melt.toml");
    d.transport
        .output(&format!("rm -f {}", quote(&remote_cfg)))?;
    push(d, p.config, &remote_cfg, None, false)?;
    push_models(d, &p.models.iter().collect::<Vec<_>>(), mp)?;
    for f in p.data {
        let remote = f.remote_data(w);
        if push(d, &f.local, &remote, Some(&f.sha256), false)? {
            say(
                mp,
                &format!("melt: [{}] pushed {} → {remote}", d.name, f.file),
            );
        }
    }
    Ok(remote_bin)
}

/// Pushes the shared libraries into `<workdir>/lib`, each unless the device has this very
/// content: a `.sha256` beside each says what it holds (libtorch's 255 MB are pushed once,
/// and a library of the same name and other content, from a new NDK, replaces the old).
fn push_libs(d: &Device, libs: &[&PathBuf], mp: &MultiProgress) -> Result<()> {
    let w = &d.workdir;
    let mut wanted: Vec<(&PathBuf, String, String)> = Vec::new();
    for lib in libs {
        let file = lib.file_name().context("library without a file name")?;
        let remote = format!("{w}/lib/{}", file.to_string_lossy());
        // One file per name: the first, the build's own (a cross build's libgomp.so.1 comes
        // before libtorch's; the newer GNU runtime serves both).
        if wanted.iter().any(|(_, r, _)| *r == remote) {
            continue;
        }
        let sha =
            melt_bench::model::sha256_file(lib).with_context(|| format!("{}", lib.display()))?;
        wanted.push((lib, remote, sha));
    }
    if wanted.is_empty() {
        return Ok(());
    }
    // What the device holds, in one round trip: a line per library, its recorded hash or
    // nothing.
    let marks: Vec<String> = wanted
        .iter()
        .map(|(_, remote, _)| quote(&format!("{remote}.sha256")))
        .collect();
    let held = d.transport.output(&format!(
        "for m in {}; do echo \"$(cat \"$m\" 2>/dev/null)\"; done",
        marks.join(" ")
    ))?;
    let held: Vec<&str> = held.lines().map(str::trim).collect();
    for (i, (lib, remote, sha)) in wanted.iter().enumerate() {
        if held.get(i) == Some(&sha.as_str()) {
            continue;
        }
        let mark = format!("{remote}.sha256");
        d.transport
            .output(&format!("rm -f {} {}", quote(remote), quote(&mark)))?;
        push(d, lib, remote, Some(sha), false)?;
        d.transport
            .output(&format!("echo {sha} > {}", quote(&mark)))?;
        say(mp, &format!("melt: [{}] pushed {}", d.name, lib.display()));
    }
    Ok(())
}

/// Pushes `models` (by hash, once) with what goes beside each.
pub(super) fn push_models(d: &Device, models: &[&ModelFile], mp: &MultiProgress) -> Result<()> {
    let w = &d.workdir;
    for m in models {
        let remote = m.remote(w);
        say(
            mp,
            &format!(
                "melt: [{}] model {} ({:.0} MB) → {remote}",
                d.name,
                m.file,
                std::fs::metadata(&m.local).map_or(0.0, |x| x.len() as f64 / 1e6)
            ),
        );
        if push(d, &m.local, &remote, Some(&m.sha256), false)? {
            say(mp, &format!("melt: [{}] pushed {}", d.name, m.file));
        }
        let dir = remote.rsplit_once('/').map_or(".", |(d, _)| d);
        for b in &m.beside {
            let file = b.file_name().context("a file without a name")?;
            let remote = format!("{dir}/{}", file.to_string_lossy());
            d.transport.output(&format!("rm -f {}", quote(&remote)))?;
            push(d, b, &remote, None, false)?;
        }
    }
    Ok(())
}
