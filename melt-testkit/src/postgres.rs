//! A real PostgreSQL server on loopback, for the shared-history tests: Debian's `postgresql`
//! binaries, a cluster made by `initdb` in the test's directory with a password-protected
//! user, listening on a free port of 127.0.0.1. The server refuses to run as root, so under
//! root it runs as the `postgres` user (or `nobody`).
//!
//! The test owns the process: [`Postgres::stop`] shuts it down the way `pg_ctl stop` does
//! (fast: clients are cut off and their transactions rolled back), and [`Postgres::start`]
//! brings the same cluster back on the same port.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::needs;

/// The role the tests connect as, and its password.
pub const USER: &str = "melt";
pub const PASSWORD: &str = "melt-test-pw";
pub const DATABASE: &str = "melt";

/// A PostgreSQL cluster of a test, running or stopped.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// Who the server runs as, when this process is root.
    run_as: Option<(u32, u32)>,
    pub port: u16,
    child: Option<Child>,
}

/// Debian's server binaries (`/usr/lib/postgresql/<major>/bin`), the newest major.
pub fn server_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, b)| b)
}

/// A user's uid and gid from /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.first() != Some(&name) {
            return None;
        }
        Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl Postgres {
    /// Makes a cluster in `dir` and starts it; `None` (recorded by [`needs::missing`]) when
    /// this machine has no PostgreSQL server.
    pub fn create(dir: &Path) -> Option<Postgres> {
        let Some(bin) = server_bin_dir() else {
            needs::missing(
                "no PostgreSQL server (/usr/lib/postgresql/*/bin/initdb)",
                "`apt-get install postgresql`",
            );
            return None;
        };
        let run_as = is_root().then(|| {
            user_ids("postgres")
                .or_else(|| user_ids("nobody"))
                .expect("running as root, and neither `postgres` nor `nobody` is a user here")
        });
        let home = dir.join("postgres");
        std::fs::create_dir_all(&home).unwrap();
        // The server's user must reach its files through the test's (private) directory.
        for d in [dir, &home] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let pwfile = home.join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        let chown = |p: &Path| {
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
            }
        };
        chown(&home);
        chown(&pwfile);
        let data = home.join("data");
        let mut pg = Postgres {
            bin,
            data,
            log: home.join("server.log"),
            run_as,
            port: crate::free_port(),
            child: None,
        };
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&pg.data)
            .args([
                "-U",
                USER,
                "--auth=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.start();
        let out = pg
            .command("createdb")
            .args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", USER])
            .arg(DATABASE)
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("running createdb");
        assert!(
            out.status.success(),
            "createdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(pg)
    }

    /// One of the server's programs, run as the server's user.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid).env("HOME", self.data.parent().unwrap());
        }
        // Messages in English, whatever the machine's locale.
        c.env("LC_ALL", "C");
        c
    }

    /// Starts the server (again) and waits until it takes connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            // The socket directory: the cluster's own, not /run/postgresql.
            .args([
                "-c",
                &format!("unix_socket_directories={}", self.data.display()),
            ])
            .args(["-c", "fsync=off", "-c", "max_connections=50"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting postgres");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            let ready = self
                .command("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("postgres exited ({status}): {}", self.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "postgres did not start: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server as `pg_ctl stop` does (fast shutdown: open transactions are rolled
    /// back, clients cut off) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// The URL of the test database, with `password`.
    pub fn url_with(&self, password: &str) -> String {
        format!(
            "postgres://{USER}:{password}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    /// The URL of the test database.
    pub fn url(&self) -> String {
        self.url_with(PASSWORD)
    }

    /// The server's log, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Immediate: nothing to keep.
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}
