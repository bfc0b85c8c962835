//! The board's sshd: run in a chroot of the arm64 root filesystem (so every program it starts
//! is an aarch64 one, run by qemu-user), listening on 127.0.0.1 only, with a key made here and
//! its host key pinned in a known_hosts file of the board's own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The pid file, inside the root filesystem.
const PID_FILE: &str = "run/board-sshd.pid";
const LOG: &str = "var/log/board-sshd.log";

pub fn ensure_key(key: &Path) -> Result<()> {
    if key.is_file() && key.with_extension("pub").is_file() {
        return Ok(());
    }
    super::run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", super::NAME, "-f"])
            .arg(key),
        "ssh-keygen of the board's key",
    )?;
    Ok(())
}

/// The pid of the board's sshd if it runs: the pid file's, and a process whose root is the
/// board's (a recycled pid is someone else's).
fn running(root: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(root.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (process_root(pid)? == root).then_some(pid)
}

fn process_root(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/root")).ok()
}

/// Whether the board's sshd was started now or found running, and its pid.
pub enum Sshd {
    Started(u32),
    Running(u32),
}

/// Starts sshd on `port` (or finds it running) with `public_key` authorized.
pub fn start(root: &Path, port: u16, public_key: &Path) -> Result<Sshd> {
    super::host::require_root()?;
    if let Some(pid) = running(root) {
        eprintln!("melt: the board's sshd already runs (pid {pid})");
        return Ok(Sshd::Running(pid));
    }
    let (proc_dir, pts) = (root.join("proc"), root.join("dev/pts"));
    if !super::mounted(&proc_dir) {
        super::run(
            Command::new("mount")
                .args(["-t", "proc", "proc"])
                .arg(&proc_dir),
            "mounting /proc in the board",
        )?;
    }
    if !super::mounted(&pts) {
        // A private devpts instance: ptys for ssh sessions without sharing the host's.
        super::run(
            Command::new("mount")
                .args(["-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620"])
                .arg("devpts")
                .arg(&pts),
            "mounting /dev/pts in the board",
        )?;
    }
    let ssh_dir = root.join("root/.ssh");
    std::fs::create_dir_all(&ssh_dir)?;
    std::fs::create_dir_all(root.join("run/sshd"))?; // sshd's privilege separation directory
    let key =
        std::fs::read_to_string(public_key).with_context(|| format!("{}", public_key.display()))?;
    let authorized = ssh_dir.join("authorized_keys");
    let have = std::fs::read_to_string(&authorized).unwrap_or_default();
    if !have.lines().any(|l| l.trim() == key.trim()) {
        std::fs::write(&authorized, format!("{have}{}\n", key.trim()))?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ssh_dir, std::fs::Permissions::from_mode(0o700))?;
    std::fs::set_permissions(&authorized, std::fs::Permissions::from_mode(0o600))?;
    let _ = std::fs::remove_file(root.join(PID_FILE));
    std::fs::write(root.join(LOG), "")?;

    // -D: sshd itself is the child, so a failed bind shows at once; its own process group, so
    // it outlives this command. It writes the pid file once it listens (emulated: a moment).
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("chroot")
        .arg(root)
        .args(["/usr/sbin/sshd", "-D", "-p", &port.to_string()])
        .args(["-o", "ListenAddress=127.0.0.1"])
        .arg("-o")
        .arg(format!("PidFile=/{PID_FILE}"))
        .args(["-E", &format!("/{LOG}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start chroot … /usr/sbin/sshd")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(pid) = running(root) {
            eprintln!("melt: the board's sshd listens on 127.0.0.1:{port} (pid {pid})");
            return Ok(Sshd::Started(pid));
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "the board's sshd exited ({status}) instead of listening on 127.0.0.1:{port} \
                 (the port taken?): {}",
                log_tail(root)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = child.kill();
    bail!(
        "the board's sshd did not listen on 127.0.0.1:{port} within 60 s: {}",
        log_tail(root)
    )
}

fn log_tail(root: &Path) -> String {
    let log = std::fs::read_to_string(root.join(LOG)).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

/// Writes `known_hosts` with the board's ed25519 host key for `[127.0.0.1]:port`, so melt's
/// ssh (which never asks) trusts this board and only it.
pub fn pin_host_key(root: &Path, port: u16, known_hosts: &Path) -> Result<()> {
    let host_key = root.join("etc/ssh/ssh_host_ed25519_key.pub");
    let text =
        std::fs::read_to_string(&host_key).with_context(|| format!("{}", host_key.display()))?;
    let key: Vec<&str> = text.split_whitespace().take(2).collect();
    if key.len() != 2 {
        bail!("{}: not an ssh public key", host_key.display());
    }
    std::fs::write(
        known_hosts,
        format!("[127.0.0.1]:{port} {} {}\n", key[0], key[1]),
    )
    .with_context(|| format!("{}", known_hosts.display()))
}

/// The pids of processes whose root is the board's.
fn in_chroot(root: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| process_root(pid).as_deref() == Some(root))
        .collect()
}

/// Stops the sshd and whatever else still runs in the board (each by its pid), then unmounts.
pub fn stop(root: &Path) -> Result<()> {
    let kill = |pid: u32| {
        Command::new("kill")
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success())
    };
    let sshd = running(root);
    if let Some(pid) = sshd {
        if kill(pid) {
            eprintln!("melt: stopped the board's sshd (pid {pid})");
        }
    }
    // Sessions still running there would keep its mounts busy.
    for pid in in_chroot(root).into_iter().filter(|&p| Some(p) != sshd) {
        if kill(pid) {
            eprintln!("melt: stopped pid {pid}, left running in the board");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !in_chroot(root).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250)); // emulated exits take a moment
    }
    let _ = std::fs::remove_file(root.join(PID_FILE));
    for dir in ["dev/pts", "proc"] {
        let path = root.join(dir);
        if super::mounted(&path) {
            super::run(
                Command::new("umount").arg(&path),
                &format!("unmounting {} (still in use?)", path.display()),
            )?;
        }
    }
    eprintln!("melt: the board in {} is stopped", root.display());
    Ok(())
}
