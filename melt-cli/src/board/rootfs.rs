//! The board's arm64 Debian root filesystem: minbase with openssh-server, by `mmdebstrap`
//! (dpkg runs under emulation: minutes), from this machine's archive.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use super::host::Archive;

const DONE: &str = ".board-ok";

pub fn ensure(root: &Path) -> Result<()> {
    if root.join(DONE).is_file() {
        eprintln!("melt: reusing the arm64 root filesystem {}", root.display());
        return Ok(());
    }
    // mmdebstrap wants an empty directory; a half-made one is a person's to look at.
    if std::fs::read_dir(root).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{} is not empty and not a finished board root filesystem (no {DONE}): \
             stop the board (`cargo melt setup arm64-board --stop`) and remove it",
            root.display()
        );
    }
    let a = Archive::of_this_machine()?;
    eprintln!(
        "melt: making the arm64 {} root filesystem in {} (minutes: dpkg runs emulated)",
        a.suite,
        root.display()
    );
    let s = &a.suite;
    super::run_shown(
        Command::new("mmdebstrap")
            .args(["--mode=root", "--arch=arm64", "--variant=minbase"])
            .arg("--include=openssh-server,iproute2")
            .arg(s)
            .arg(root)
            .arg(format!("deb {} {s} main", a.main))
            .arg(format!("deb {} {s}-updates main", a.main))
            .arg(format!("deb {} {s}-security main", a.security)),
        "mmdebstrap of the arm64 root filesystem",
    )?;
    std::fs::write(root.join(DONE), "")?;
    Ok(())
}
