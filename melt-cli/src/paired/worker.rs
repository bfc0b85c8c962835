//! The gate's side of a bench binary in `--worker` mode: start it, ask, read the answer.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use melt_bench::probe::noise::Noise;
use melt_bench::worker::{Reply, Request, Sample};

/// A running worker: one side of the comparison.
pub struct Worker {
    pub label: String,
    /// The cases it can measure, as it announced them.
    pub cases: Vec<String>,
    child: Child,
    stdin: Option<ChildStdin>,
    replies: Receiver<String>,
    /// How long one request may take before the worker counts as hung.
    timeout: Duration,
}

impl Worker {
    /// Starts `cmd` (a bench binary with `--bench --worker`) and waits for its list of cases.
    pub fn start(label: &str, mut cmd: Command, timeout: Duration) -> Result<Worker> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the worker of {label} ({cmd:?})"))?;
        let stdout = child.stdout.take().expect("piped");
        // A thread reads the lines, so a hung worker is a timeout here rather than a hang.
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut w = Worker {
            label: label.to_string(),
            cases: Vec::new(),
            stdin: child.stdin.take(),
            child,
            replies,
            timeout,
        };
        match w.read()? {
            Reply::Ready { cases } => w.cases = cases,
            other => bail!("the worker of {label} began with {other:?}, not its case list"),
        }
        Ok(w)
    }

    /// The next reply; lines that are not one (an engine printing to stdout) go to stderr.
    fn read(&mut self) -> Result<Reply> {
        loop {
            let line = match self.replies.recv_timeout(self.timeout) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => bail!(
                    "the worker of {} gave no answer in {} s",
                    self.label,
                    self.timeout.as_secs()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    bail!(
                        "the worker of {} ended ({}) before it answered",
                        self.label,
                        status.map_or("unknown status".into(), |s| s.to_string())
                    )
                }
            };
            match serde_json::from_str(&line) {
                Ok(reply) => return Ok(reply),
                Err(_) => eprintln!("{}: {line}", self.label),
            }
        }
    }

    fn ask(&mut self, request: &Request) -> Result<Reply> {
        let line = serde_json::to_string(request)?;
        let stdin = self
            .stdin
            .as_mut()
            .context("the worker's input is closed")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("the worker of {} is gone", self.label))?;
        match self.read()? {
            Reply::Error { case, message } => bail!(
                "{}{}: {message}",
                self.label,
                case.map(|c| format!(", {c}")).unwrap_or_default()
            ),
            reply => Ok(reply),
        }
    }

    /// One measured run of `case`.
    pub fn measure(&mut self, case: &str) -> Result<Sample> {
        match self.ask(&Request::Measure { case: case.into() })? {
            Reply::Sample(s) if s.case == case => Ok(s),
            other => bail!("{} answered a measurement with {other:?}", self.label),
        }
    }

    /// The noise check, run by the worker on its machine.
    pub fn noise(&mut self, seconds: f64) -> Result<Noise> {
        match self.ask(&Request::Noise { seconds })? {
            Reply::Noise(n) => Ok(*n),
            other => bail!("{} answered the noise check with {other:?}", self.label),
        }
    }

    /// Drops the worker's model (reload-per-turn mode).
    pub fn release(&mut self) -> Result<()> {
        match self.ask(&Request::Release)? {
            Reply::Released => Ok(()),
            other => bail!("{} answered release with {other:?}", self.label),
        }
    }
}

impl Drop for Worker {
    /// Closing its input ends a worker; one that does not end soon is killed.
    fn drop(&mut self) {
        self.stdin = None;
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
