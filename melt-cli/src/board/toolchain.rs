//! A Rust compiler for aarch64 from Debian's archive: `rustc-web` (bookworm-security carries a
//! recent one; the workspace's lock needs rustc ≥ 1.95) with the arm64 `libstd-rust-web-dev`.
//!
//! A private apt — its own sources, lists, cache and a *copy* of dpkg's status — downloads the
//! packages and what this machine lacks of their dependencies; `dpkg -x` unpacks them into
//! `pfx/`. Nothing is installed and the system's apt state is untouched. A `rustc` wrapper
//! sets the unpacked libraries' path for the compiler alone.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::host::Archive;
use super::TRIPLE;

/// The toolchain in `dir`, made if missing; returns its `rustc` wrapper.
pub fn ensure(dir: &Path) -> Result<PathBuf> {
    let wrapper = dir.join("rustc");
    let done = dir.join(".toolchain-ok");
    if done.is_file() && wrapper.is_file() {
        eprintln!(
            "melt: reusing the aarch64 Rust toolchain in {} (rustc-web {})",
            dir.display(),
            std::fs::read_to_string(&done).unwrap_or_default().trim()
        );
        return Ok(wrapper);
    }
    let archive = Archive::of_this_machine()?;
    let apt = PrivateApt::new(&dir.join("apt"), &archive)?;
    apt.run(
        Command::new("apt-get").args(["update", "-q"]),
        "apt-get update",
    )?;
    let policy = apt.output(Command::new("apt-cache").args(["policy", "rustc-web"]))?;
    let version = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "(none)")
        .with_context(|| {
            format!(
                "no rustc-web package in {0} or {0}-security (apt-cache policy: {1})",
                archive.suite,
                policy.trim()
            )
        })?
        .to_string();
    // 1.96.0+dfsg1-1~deb12u2 → 1.96, the std package's name suffix.
    let minor = version.split('.').take(2).collect::<Vec<_>>().join(".");
    eprintln!("melt: rustc-web {version} from {}", archive.security);
    apt.run(
        Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-q",
                "--download-only",
                "--no-install-recommends",
            ])
            .arg(format!("rustc-web={version}"))
            .arg(format!("cargo-web={version}")),
        "downloading rustc-web, cargo-web and what this machine lacks of their dependencies",
    )?;
    // The arm64 std is data for the cross target: fetched without its arm64 dependencies.
    let archives = apt.dir.join("archives");
    apt.run(
        Command::new("apt-get")
            .current_dir(&archives)
            .arg("download")
            .arg(format!("libstd-rust-web-dev:arm64={version}"))
            .arg(format!("libstd-rust-web-{minor}:arm64={version}")),
        "downloading the arm64 Rust standard library",
    )?;
    let prefix = dir.join("pfx");
    if prefix.exists() {
        std::fs::remove_dir_all(&prefix).with_context(|| format!("{}", prefix.display()))?;
    }
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&archives)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    for deb in &debs {
        super::run(
            Command::new("dpkg").arg("-x").arg(deb).arg(&prefix),
            &format!("unpacking {}", deb.display()),
        )?;
    }
    let (usr, libs) = (prefix.join("usr"), prefix.join("usr/lib/x86_64-linux-gnu"));
    if !usr.join("lib/rustlib").join(TRIPLE).join("lib").is_dir() {
        bail!(
            "no aarch64 standard library under {} after unpacking",
            usr.join("lib/rustlib").display()
        );
    }
    write_wrapper(&wrapper, &usr.join("bin/rustc"), &libs)?;
    super::run(
        Command::new(&wrapper).arg("--version"),
        "the unpacked rustc (a library missing?)",
    )?;
    std::fs::write(&done, &version)?;
    Ok(wrapper)
}

/// `rustc` that finds the libraries unpacked beside it (libLLVM and others the machine lacks).
fn write_wrapper(wrapper: &Path, rustc: &Path, libs: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let quote = crate::devices::shell::quote;
    let script = format!(
        "#!/bin/sh\n\
         # Debian's rustc-web, unpacked by `cargo melt setup arm64-board` (not installed).\n\
         LD_LIBRARY_PATH={libs}\"${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\" exec {rustc} \"$@\"\n",
        libs = quote(&libs.display().to_string()),
        rustc = quote(&rustc.display().to_string()),
    );
    std::fs::write(wrapper, script).with_context(|| format!("{}", wrapper.display()))?;
    std::fs::set_permissions(wrapper, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// apt with its own configuration, sources and state under `dir`.
struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    fn new(dir: &Path, archive: &Archive) -> Result<PrivateApt> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        }
        for sub in ["lists/partial", "archives/partial", "parts", "log"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // A copy of dpkg's status: the solver fetches only what this machine lacks.
        std::fs::copy("/var/lib/dpkg/status", dir.join("status"))
            .context("/var/lib/dpkg/status: is this Debian?")?;
        let signed = archive
            .keyring
            .as_ref()
            .map_or(String::new(), |k| format!(" signed-by={k}"));
        let s = &archive.suite;
        std::fs::write(
            dir.join("sources.list"),
            format!(
                "deb [arch=amd64,arm64{signed}] {main} {s} main\n\
                 deb [arch=amd64,arm64{signed}] {main} {s}-updates main\n\
                 deb [arch=amd64,arm64{signed}] {sec} {s}-security main\n",
                main = archive.main,
                sec = archive.security
            ),
        )?;
        let d = dir.display();
        std::fs::write(
            dir.join("apt.conf"),
            format!(
                "Dir::Etc::SourceList \"{d}/sources.list\";\n\
                 Dir::Etc::SourceParts \"{d}/parts\";\n\
                 Dir::Etc::PreferencesParts \"{d}/parts\";\n\
                 Dir::Etc::Preferences \"{d}/parts/none\";\n\
                 Dir::State \"{d}\";\n\
                 Dir::State::Lists \"{d}/lists\";\n\
                 Dir::State::status \"{d}/status\";\n\
                 Dir::Cache \"{d}\";\n\
                 Dir::Cache::Archives \"{d}/archives\";\n\
                 Dir::Log \"{d}/log\";\n\
                 APT::Architectures {{ \"amd64\"; \"arm64\"; }};\n\
                 // Root only, private directories: apt's _apt sandbox user could not write them.\n\
                 APT::Sandbox::User \"root\";\n"
            ),
        )?;
        Ok(PrivateApt {
            dir: dir.to_path_buf(),
        })
    }

    fn configure<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env("APT_CONFIG", self.dir.join("apt.conf"))
            .env("DEBIAN_FRONTEND", "noninteractive")
    }

    fn run(&self, cmd: &mut Command, what: &str) -> Result<()> {
        super::run_shown(self.configure(cmd), what)
    }

    fn output(&self, cmd: &mut Command) -> Result<String> {
        super::run(self.configure(cmd), "apt-cache")
    }
}
