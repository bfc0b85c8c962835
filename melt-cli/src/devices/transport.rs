//! How melt reaches a device: `local` (a directory on this machine), `ssh`, or `adb`. Each
//! transport only needs to do two things — run a shell script on the device, and put a file
//! there — and everything else (probing, pushing models by hash, running, killing) is built
//! from those in terms of plain POSIX shell, so the device needs nothing but a shell.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::shell::quote;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// This machine, in a work directory: the whole device path without a device.
    Local,
    Ssh {
        /// `user@host` or `host`.
        destination: String,
        port: Option<u16>,
        key: Option<PathBuf>,
        /// Extra `ssh` arguments from melt.toml (`-o` options, a jump host...).
        options: Vec<String>,
    },
    Adb {
        /// `adb -s SERIAL`; a `host:port` serial is adb over TCP (`adb connect` first).
        serial: Option<String>,
    },
}

/// The adb client: `$MELT_ADB`, else `adb` on PATH.
fn adb_program() -> String {
    std::env::var("MELT_ADB").unwrap_or_else(|_| "adb".into())
}

impl Transport {
    fn ssh_base(&self) -> Command {
        let Transport::Ssh {
            destination,
            port,
            key,
            options,
        } = self
        else {
            unreachable!("ssh_base on a non-ssh transport")
        };
        let mut c = Command::new("ssh");
        // BatchMode: never prompt (a password prompt would hang a headless run); the keep-alive
        // options turn a vanished device into an error within ~15 s instead of a hang.
        c.args([
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
        ]);
        if let Some(p) = port {
            c.arg("-p").arg(p.to_string());
        }
        if let Some(k) = key {
            c.arg("-i").arg(k).args(["-o", "IdentitiesOnly=yes"]);
        }
        c.args(options);
        // `--` ends ssh's options, so a destination cannot be taken for one.
        c.arg("--").arg(destination);
        c
    }

    fn adb_base(&self) -> Command {
        let Transport::Adb { serial } = self else {
            unreachable!("adb_base on a non-adb transport")
        };
        let mut c = Command::new(adb_program());
        if let Some(s) = serial {
            c.arg("-s").arg(s);
        }
        c
    }

    /// A command running `script` with `sh` on the device. The script must quote every
    /// value it embeds ([`quote`]); `ssh` and `adb shell` pass it to the remote shell as is.
    pub fn shell(&self, script: &str) -> Command {
        match self {
            Transport::Local => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(script);
                c
            }
            Transport::Ssh { .. } => {
                let mut c = self.ssh_base();
                c.arg(script);
                c
            }
            Transport::Adb { .. } => {
                let mut c = self.adb_base();
                c.arg("shell").arg(script);
                c
            }
        }
    }

    /// Runs `script`, returning its stdout; a failure carries its stderr.
    pub fn output(&self, script: &str) -> Result<String> {
        let mut cmd = self.shell(script);
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            bail!(
                "{} (exit {}): {}{}",
                self.describe(),
                out.status
                    .code()
                    .map_or_else(|| "signal".to_string(), |c| c.to_string()),
                stderr.trim(),
                ssh_hint(&stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn describe(&self) -> String {
        match self {
            Transport::Local => "local shell".into(),
            Transport::Ssh { destination, .. } => format!("ssh {destination}"),
            Transport::Adb { serial: Some(s) } => format!("adb -s {s}"),
            Transport::Adb { serial: None } => "adb".into(),
        }
    }

    /// `adb push|pull FROM TO`, its stderr in the error.
    fn adb_copy(&self, verb: &str, from: &std::ffi::OsStr, to: &std::ffi::OsStr) -> Result<()> {
        let out = self
            .adb_base()
            .arg(verb)
            .arg(from)
            .arg(to)
            .output()
            .context("cannot run adb (install the Android platform tools)")?;
        if !out.status.success() {
            bail!(
                "adb {verb} {} {}: {}",
                from.to_string_lossy(),
                to.to_string_lossy(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// For adb over TCP: `adb connect host:port` (idempotent).
    pub fn connect(&self) -> Result<()> {
        if let Transport::Adb {
            serial: Some(serial),
        } = self
        {
            if serial.contains(':') {
                let out = Command::new(adb_program())
                    .arg("connect")
                    .arg(serial)
                    .output()
                    .context("cannot run adb (install the Android platform tools)")?;
                let text = String::from_utf8_lossy(&out.stdout);
                if !out.status.success() || text.contains("failed") || text.contains("cannot") {
                    bail!("adb connect {serial}: {}", text.trim());
                }
            }
        }
        Ok(())
    }

    /// Size of `remote` on the device, 0 if it does not exist.
    pub fn remote_size(&self, remote: &str) -> Result<u64> {
        let q = quote(remote);
        let out = self.output(&format!("if [ -f {q} ]; then wc -c < {q}; else echo 0; fi"))?;
        out.trim().parse().with_context(|| {
            format!(
                "size of {remote} on the device: unexpected `{}`",
                out.trim()
            )
        })
    }

    /// Copies `local` to `remote` (whose directory exists), resuming a partial copy: bytes
    /// already in `remote` are kept and only the rest is sent. The caller renames the file
    /// into place once it is whole, so a partial file is never used.
    pub fn push_resumable(&self, local: &Path, remote: &str) -> Result<()> {
        let size = std::fs::metadata(local)
            .with_context(|| format!("{}", local.display()))?
            .len();
        if let Transport::Adb { .. } = self {
            // `adb push` cannot append: an interrupted push starts over (into the same
            // `.part` name, which is only renamed once whole).
            self.adb_copy("push", local.as_os_str(), remote.as_ref())?;
            return Ok(());
        }
        let mut have = self.remote_size(remote)?;
        if have > size {
            // Not a prefix of this file: start over.
            self.output(&format!("rm -f {}", quote(remote)))?;
            have = 0;
        }
        if have == size {
            return Ok(());
        }
        let mut file = File::open(local).with_context(|| format!("{}", local.display()))?;
        file.seek(SeekFrom::Start(have))?;
        let mut cmd = self.shell(&format!("cat >> {}", quote(remote)));
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", self.describe()))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let copied = std::io::copy(&mut file.take(size - have), &mut stdin);
        drop(stdin);
        let out = child.wait_with_output()?;
        if let Err(e) = copied {
            bail!("pushing {} to {remote}: {e}", local.display());
        }
        if !out.status.success() {
            bail!(
                "pushing {} to {remote}: {}",
                local.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let now = self.remote_size(remote)?;
        if now != size {
            bail!(
                "pushing {} to {remote}: {now} of {size} bytes arrived (run again to resume)",
                local.display()
            );
        }
        Ok(())
    }

    /// Copies the device's `remote` file to `local`.
    pub fn pull(&self, remote: &str, local: &Path) -> Result<()> {
        if let Transport::Adb { .. } = self {
            self.adb_copy("pull", remote.as_ref(), local.as_os_str())?;
            return Ok(());
        }
        let mut cmd = self.shell(&format!("cat {}", quote(remote)));
        let out = cmd.stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!(
                "pulling {remote} from {}: {}",
                self.describe(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut f = File::create(local).with_context(|| format!("{}", local.display()))?;
        f.write_all(&out.stdout)?;
        Ok(())
    }

    /// `(program, args)` of [`shell`](Self::shell), for tests.
    #[cfg(test)]
    pub fn shell_argv(&self, script: &str) -> Vec<String> {
        let c = self.shell(script);
        std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }
}

/// What to do about an ssh failure a person cannot answer in a headless run (melt's ssh
/// never prompts): an unknown or changed host key.
pub fn ssh_hint(stderr: &str) -> &'static str {
    if stderr.contains("Host key verification failed") {
        "\n(the device's host key is not in known_hosts, or changed, and melt's ssh never asks: \
         connect once by hand with `ssh` to accept it, or add to its [[device]] \
         `ssh_options = [\"-o\", \"StrictHostKeyChecking=accept-new\"]` to accept a new \
         device's key on first use; book/src/devices.md)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_command_line() {
        let t = Transport::Ssh {
            destination: "melt@jetson.local".into(),
            port: Some(2222),
            key: Some("/k/id".into()),
            options: vec!["-o".into(), "UserKnownHostsFile=/k/known".into()],
        };
        assert_eq!(
            t.shell_argv("echo 'a b'"),
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "ServerAliveInterval=5",
                "-o",
                "ServerAliveCountMax=3",
                "-p",
                "2222",
                "-i",
                "/k/id",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "UserKnownHostsFile=/k/known",
                "--",
                "melt@jetson.local",
                "echo 'a b'"
            ]
        );
    }

    #[test]
    fn adb_command_line() {
        let t = Transport::Adb {
            serial: Some("192.168.1.7:5555".into()),
        };
        let argv = t.shell_argv("getprop ro.product.model");
        assert_eq!(
            argv[1..],
            [
                "-s",
                "192.168.1.7:5555",
                "shell",
                "getprop ro.product.model"
            ]
        );
    }

    #[test]
    fn local_push_resumes_a_partial_copy() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("model.bin");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let dst = dir.path().join("dev dir $(x)").join("model.bin.part");
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        // An interrupted earlier push left the first 30 000 bytes.
        std::fs::write(&dst, &data[..30_000]).unwrap();
        let t = Transport::Local;
        let remote = dst.to_str().unwrap();
        assert_eq!(t.remote_size(remote).unwrap(), 30_000);
        t.push_resumable(&src, remote).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), data);
        // Whole already: nothing sent, nothing changed.
        t.push_resumable(&src, remote).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), data);
        // A longer file there is not a prefix: replaced.
        std::fs::write(&dst, vec![0u8; 200_000]).unwrap();
        t.push_resumable(&src, remote).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), data);
        let back = dir.path().join("back.bin");
        t.pull(remote, &back).unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), data);
    }
}
