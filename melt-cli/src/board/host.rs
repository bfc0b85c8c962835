//! What this machine needs for a board: qemu-user's aarch64 handler, the GNU cross compilers,
//! mmdebstrap and an ssh client — and the Debian archive it was set up with.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

const PACKAGES: &[&str] = &[
    "qemu-user-static",
    "binfmt-support",
    "gcc-aarch64-linux-gnu",
    "g++-aarch64-linux-gnu",
    "mmdebstrap",
    // mmdebstrap only recommends it (and melt installs without recommends), but refuses a
    // foreign architecture without it: "install arch-test for foreign architecture support".
    "arch-test",
    "openssh-client",
];

const BINFMT: &str = "/proc/sys/fs/binfmt_misc";

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("ok installed"))
}

/// Installs what is missing and registers the aarch64 handler.
pub fn ensure_packages() -> Result<()> {
    // binfmt_misc must be mounted before qemu-user-static is installed: its install registers
    // the handlers, and registers none when it is not.
    if !super::mounted(Path::new(BINFMT)) {
        super::run(
            Command::new("mount").args(["-t", "binfmt_misc", "binfmt_misc", BINFMT]),
            "mounting binfmt_misc (needs root)",
        )?;
    }
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if !missing.is_empty() {
        crate::prereq::apt_install(&missing)
            .context("an emulated arm64 board needs these Debian packages")?;
    }
    if !Path::new(BINFMT).join("qemu-aarch64").exists() {
        super::run(
            Command::new("update-binfmts").args(["--enable", "qemu-aarch64"]),
            "registering qemu-aarch64 with binfmt_misc",
        )?;
    }
    Ok(())
}

/// The archive this machine's apt uses, read from its deb822 sources (never written): the
/// board's packages come from the same mirror.
#[derive(Debug, PartialEq)]
pub struct Archive {
    /// e.g. `bookworm`.
    pub suite: String,
    pub main: String,
    pub security: String,
    /// The keyring of the main entry (`Signed-By`), if it names one.
    pub keyring: Option<String>,
}

pub const SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";

impl Archive {
    pub fn of_this_machine() -> Result<Archive> {
        let os = std::fs::read_to_string("/etc/os-release").context("/etc/os-release")?;
        let suite = os
            .lines()
            .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
            .map(|v| v.trim_matches('"').to_string())
            .filter(|v| !v.is_empty())
            .context("/etc/os-release has no VERSION_CODENAME: is this Debian?")?;
        let sources = std::fs::read_to_string(SOURCES)
            .with_context(|| format!("{SOURCES}: cannot tell which archive mirror to use"))?;
        Archive::parse(&suite, &sources)
    }

    /// From deb822 paragraphs: the entry whose `Suites` has `suite`, and the one with
    /// `suite-security`.
    pub fn parse(suite: &str, sources: &str) -> Result<Archive> {
        let security = format!("{suite}-security");
        let (mut main, mut sec, mut keyring) = (None, None, None);
        for paragraph in sources.split("\n\n") {
            let field = |name: &str| {
                paragraph.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == name).then(|| v.trim().to_string())
                })
            };
            let (Some(uris), Some(suites)) = (field("URIs"), field("Suites")) else {
                continue;
            };
            let uri = uris
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            let suites: Vec<&str> = suites.split_whitespace().collect();
            if suites.contains(&security.as_str()) && sec.is_none() {
                sec = Some(uri);
            } else if suites.contains(&suite) && main.is_none() {
                main = Some(uri);
                keyring = field("Signed-By");
            }
        }
        Ok(Archive {
            main: main.with_context(|| {
                format!("{SOURCES} has no entry with `Suites: {suite}` and a `URIs:` line")
            })?,
            security: sec.with_context(|| {
                format!("{SOURCES} has no entry with `Suites: {security}` and a `URIs:` line")
            })?,
            suite: suite.to_string(),
            keyring,
        })
    }
}

/// Fails naming the problem unless this process may mount and chroot.
pub fn require_root() -> Result<()> {
    if !crate::prereq::is_root() {
        bail!("an emulated board needs root (apt-get, mount, chroot): run as root");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_comes_from_the_deb822_sources() {
        let sources = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
                       Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                       Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\
                       Components: main\n";
        let a = Archive::parse("bookworm", sources).unwrap();
        assert_eq!(a.main, "http://mirror.example/debian");
        assert_eq!(a.security, "http://mirror.example/debian-security");
        assert_eq!(
            a.keyring.as_deref(),
            Some("/usr/share/keyrings/debian-archive-keyring.gpg")
        );
        let e = Archive::parse("trixie", sources).unwrap_err().to_string();
        assert!(e.contains("Suites: trixie"), "{e}");
    }
}
