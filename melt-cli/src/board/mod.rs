//! `cargo melt setup arm64-board`: an emulated aarch64 Linux board on this x86-64 Debian
//! machine, so that a cross-built melt runs on a foreign architecture over ssh, as on a Jetson
//! or a Raspberry Pi — with nothing but Debian's archive.
//!
//! - `toolchain`: a Rust compiler that targets aarch64 although rustup cannot download its
//!   standard library here — Debian's `rustc-web` with the arm64 `libstd-rust-web-dev`,
//!   downloaded by a private apt (the system's sources and state are not touched) and unpacked
//!   into the board's directory; used through the `rustc` of the printed `[[device]]`.
//! - `rootfs`: an arm64 Debian root filesystem with openssh-server (`mmdebstrap`), whose
//!   programs run under qemu-user's binfmt handler.
//! - `sshd`: that root filesystem's sshd on 127.0.0.1, with a key made here and a pinned host
//!   key; `--stop` ends it (and whatever else runs in the chroot) by pid and unmounts.
//!
//! Every step is idempotent: a finished step leaves a mark and is skipped next time.
//! Under qemu-user the board's `/proc/cpuinfo`, core count and memory are the host's, and its
//! speed is the emulator's: a board for checking that melt works there, not for timing.

mod host;
mod rootfs;
mod sshd;
mod toolchain;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The board's name in the `[[device]]` it prints.
pub const NAME: &str = "arm64-board";
pub const TRIPLE: &str = "aarch64-unknown-linux-gnu";
pub const DEFAULT_PORT: u16 = 2222;

/// Where one board lives: `toolchain/`, `rootfs/`, its ssh keys and `device.toml`.
pub struct Board {
    pub dir: PathBuf,
}

impl Board {
    /// The board in `dir`, or in the melt cache (`$MELT_CACHE_DIR/boards/arm64`).
    pub fn at(dir: Option<PathBuf>) -> Result<Board> {
        let dir = match dir {
            Some(d) => d,
            None => melt_bench::model::Cache::default_root().join("boards/arm64"),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("{}", dir.display()))?;
        Ok(Board { dir })
    }

    /// The compiler for the board's triple (a wrapper of Debian's unpacked rustc-web).
    pub fn rustc(&self) -> PathBuf {
        self.dir.join("toolchain").join("rustc")
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("board_key")
    }

    fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// The `[[device]]` entry for melt.toml, also written to `device.toml`.
    pub fn device_toml(&self) -> PathBuf {
        self.dir.join("device.toml")
    }

    /// Makes what is missing and starts the board's sshd on `port`; returns the `[[device]]`
    /// and whether this call started the board (a caller that did may stop it after).
    pub fn set_up(&self, port: u16) -> Result<(String, bool)> {
        let clock = std::time::Instant::now();
        host::ensure_packages()?;
        let rustc = toolchain::ensure(&self.dir.join("toolchain"))?;
        debug_assert_eq!(rustc, self.rustc());
        rootfs::ensure(&self.rootfs())?;
        sshd::ensure_key(&self.key())?;
        let (pid, started) =
            match sshd::start(&self.rootfs(), port, &self.key().with_extension("pub"))? {
                sshd::Sshd::Started(pid) => (pid, true),
                sshd::Sshd::Running(pid) => (pid, false),
            };
        sshd::pin_host_key(&self.rootfs(), port, &self.known_hosts())?;
        let entry = self.device_entry(port, &rustc);
        std::fs::write(self.device_toml(), &entry)
            .with_context(|| format!("{}", self.device_toml().display()))?;
        eprintln!(
            "melt: {NAME} ready in {:.0} s: sshd pid {pid} on 127.0.0.1:{port}; \
             `cargo melt setup arm64-board --stop` stops it",
            clock.elapsed().as_secs_f64()
        );
        Ok((entry, started))
    }

    pub fn stop(&self) -> Result<()> {
        sshd::stop(&self.rootfs())
    }

    fn device_entry(&self, port: u16, rustc: &Path) -> String {
        let s = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
        format!(
            "# An emulated aarch64 board (qemu-user): it checks that melt works on aarch64;\n\
             # its speed is the emulator's, not a performance figure.\n\
             [[device]]\n\
             name = \"{NAME}\"\n\
             transport = \"ssh\"\n\
             host = \"127.0.0.1\"\n\
             port = {port}\n\
             user = \"root\"\n\
             key = {key}\n\
             ssh_options = [\"-o\", {known}]\n\
             triple = \"{TRIPLE}\"\n\
             rustc = {rustc}\n\
             tags = [\"emulated\"]\n",
            key = s(&self.key()),
            known = toml::Value::String(format!(
                "UserKnownHostsFile={}",
                self.known_hosts().display()
            )),
            rustc = s(rustc),
        )
    }
}

/// Whether something is mounted at `path`.
fn mounted(path: &Path) -> bool {
    std::process::Command::new("mountpoint")
        .arg("-q")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `cmd`, failing with `what` and its stderr; returns its stdout.
fn run(cmd: &mut std::process::Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("{what}: cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with its output on this process's stderr (long steps a person watches; stdout
/// carries only the `[[device]]`).
fn run_shown(cmd: &mut std::process::Command, what: &str) -> Result<()> {
    use std::os::fd::AsFd;
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let status = cmd
        .stdin(std::process::Stdio::null())
        .stdout(stderr)
        .stderr(std::process::Stdio::inherit())
        .status()
        .with_context(|| format!("{what}: cannot run {:?}", cmd.get_program()))?;
    if !status.success() {
        anyhow::bail!("{what} failed ({status}; see above)");
    }
    Ok(())
}
