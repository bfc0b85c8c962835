//! One launch on a device: the stream read into the host's log, with the watchdog that kills a
//! case silent too long, and what is pulled back after.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use melt_bench::criterion_format::make_filename_safe;
use melt_bench::store::{read_events, Event, EventLog, Layout};

use super::progress::Progress;
use super::script::EXIT_MARK;
use crate::devices::Device;

/// How one launch on a device ended.
#[derive(Debug)]
pub(super) enum Ended {
    Exited(i32),
    TimedOut { case: Option<String> },
    Lost { why: String },
}

/// Runs one launch: streams events into `log` until the device's exit line, a silence longer
/// than `timeout`, or the end of the connection.
pub(super) fn launch(
    d: &Device,
    script: &str,
    log: &mut EventLog,
    stderr_log: &Path,
    timeout: Duration,
    progress: &mut Progress,
) -> Result<Launched> {
    let mut cmd = d.transport.shell(script);
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", d.transport.describe()))?;
    let (tx, rx) = mpsc::channel::<Option<String>>();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) => {
                    if tx.send(Some(l)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = tx.send(None);
    });
    // The device's stderr goes to a file beside the run; its tail goes into error messages.
    let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
    let stderr = child.stderr.take().expect("piped");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr_log)
        .with_context(|| format!("{}", stderr_log.display()))?;
    let tail2 = tail.clone();
    let err_thread = std::thread::spawn(move || {
        let mut r = BufReader::new(stderr);
        let mut buf = Vec::new();
        while r
            .read_until(b'\n', &mut buf)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            let _ = file.write_all(&buf);
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            // Live progress lines of the device's own terminal mode are not news.
            if !line.is_empty() {
                let mut t = tail2.lock().expect("tail");
                t.push_back(line);
                if t.len() > 20 {
                    t.pop_front();
                }
            }
            buf.clear();
        }
    });
    let mut code = None;
    let mut device_run = None;
    let mut forwarded = 0;
    let ended = loop {
        match rx.recv_timeout(timeout) {
            Ok(Some(line)) => {
                let line = line.trim_end_matches('\r');
                if let Some(c) = line.strip_prefix(EXIT_MARK) {
                    code = c.trim().parse::<i32>().ok();
                    continue;
                }
                match serde_json::from_str::<Event>(line) {
                    // The device's own paths mean nothing here; the host writes its own end.
                    Ok(Event::RunEnd { .. }) => {}
                    Ok(e) => {
                        if let Event::RunStart { run_id, .. } = &e {
                            device_run = Some(run_id.clone());
                        }
                        forwarded += 1;
                        log.write(&e)
                            .with_context(|| format!("appending to {}", log.path().display()))?;
                        progress.event(&e);
                    }
                    Err(_) if !line.trim().is_empty() => {
                        let _ = std::fs::OpenOptions::new()
                            .append(true)
                            .open(stderr_log)
                            .and_then(|mut f| writeln!(f, "[stdout] {line}"));
                    }
                    Err(_) => {}
                }
            }
            Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                let _ = err_thread.join();
                break match code {
                    Some(c) => Ended::Exited(c),
                    None => Ended::Lost {
                        why: format!(
                            "{} ended ({status}) before the run did",
                            d.transport.describe()
                        ),
                    },
                };
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                break Ended::TimedOut {
                    case: progress.case.clone(),
                };
            }
        }
    };
    let tail: Vec<String> = tail.lock().expect("tail").iter().cloned().collect();
    Ok(Launched {
        ended,
        tail,
        device_run,
        forwarded,
    })
}

pub(super) struct Launched {
    pub(super) ended: Ended,
    /// The last lines of the device's stderr.
    pub(super) tail: Vec<String>,
    /// The run id the device gave itself (its own `target/melt/runs/<id>`).
    pub(super) device_run: Option<String>,
    /// Events streamed, `run_end` excepted.
    pub(super) forwarded: usize,
}

/// Pulls the device's own `samples.jsonl` of a finished launch beside the host's, and checks
/// that the stream carried every event of it (the device writes each line to its file first).
pub(super) fn pull_and_check(d: &Device, l: &Launched, run_dir: &Path) -> Result<Option<String>> {
    let Some(id) = &l.device_run else {
        return Ok(None);
    };
    let remote = Layout::at(Path::new(&d.workdir).join("target"))
        .run(id)
        .samples_path()
        .display()
        .to_string();
    let local = run_dir.join(format!("device-{}.samples.jsonl", make_filename_safe(id)));
    d.transport.pull(&remote, &local)?;
    let on_device = read_events(&local)?
        .iter()
        .filter(|e| !matches!(e, Event::RunEnd { .. }))
        .count();
    Ok((on_device != l.forwarded).then(|| {
        format!(
            "the device logged {on_device} events but the stream carried {}; its own log is {}",
            l.forwarded,
            local.display()
        )
    }))
}
