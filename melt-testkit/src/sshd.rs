//! A real sshd on loopback, for the tests that run melt on an `ssh` device: host and user
//! keys made for the test, no password, no PAM, its own config and pid file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::needs;

/// A TOML basic string (a JSON string is one).
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A real sshd on 127.0.0.1, with a host key and user keys made for this test.
pub struct Sshd {
    child: Child,
    pub port: u16,
    /// The key `authorized_keys` lets in (`stranger_key` beside it is not).
    pub key: PathBuf,
    pub known_hosts: PathBuf,
}

impl Sshd {
    /// Starts it with its files in `dir`; `None` (recorded by [`needs::missing`]) without sshd.
    pub fn start(dir: &Path) -> Option<Sshd> {
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file());
        let Some(sshd) = sshd else {
            needs::missing(
                "no sshd on this machine",
                "`apt-get install openssh-server openssh-client`",
            );
            return None;
        };
        let keygen = |name: &str| {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(name))
                .status()
                .unwrap();
            assert!(st.success());
        };
        keygen("host_key");
        keygen("user_key");
        keygen("stranger_key");
        std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).unwrap();
        // The privilege separation directory sshd insists on when run as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = crate::free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 UsePAM no\nStrictModes no\nPidFile {d}/sshd.pid\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sshd did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Sshd {
            child,
            port,
            key: dir.join("user_key"),
            known_hosts: dir.join("known_hosts"),
        })
    }

    /// Its `[[device]]` for melt.toml (an `env` value full of shell syntax rides along).
    pub fn device(&self, name: &str, key: &Path, workdir: &Path) -> String {
        let user = Command::new("id").arg("-un").output().unwrap().stdout;
        let user = String::from_utf8(user).unwrap();
        format!(
            "[[device]]\nname = {}\ntransport = \"ssh\"\nhost = \"127.0.0.1\"\nuser = {}\n\
             port = {}\nkey = {}\n\
             ssh_options = [\"-o\", {}, \"-o\", \"StrictHostKeyChecking=accept-new\"]\n\
             workdir = {}\nenv = {{ MELT_TEST_ENV = \"a b; $(touch /tmp/melt-pwned-ssh)\" }}\n",
            toml_str(name),
            toml_str(user.trim()),
            self.port,
            toml_str(&key.display().to_string()),
            toml_str(&format!(
                "UserKnownHostsFile={}",
                self.known_hosts.display()
            )),
            toml_str(&workdir.display().to_string()),
        )
    }

    /// Drops every open connection (the per-session sshd processes); the listener stays.
    pub fn cut_connections(&self) {
        let _ = Command::new("pkill")
            .arg("-P")
            .arg(self.child.id().to_string())
            .status();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.cut_connections();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
