//! What the host shows while a device runs: a bar per device on a terminal, a line per case
//! in a log.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use melt_bench::store::Event;

/// Progress of one device: a bar on a terminal, a line per case in a log.
pub(super) struct Progress {
    pub(super) bar: ProgressBar,
    pub(super) mp: MultiProgress,
    pub(super) name: String,
    pub(super) tty: bool,
    pub(super) case: Option<String>,
    pub(super) tokens: usize,
    pub(super) samples: usize,
    pub(super) cases_done: usize,
    pub(super) cases_total: usize,
}

/// A line for the user: above the progress bars on a terminal, plain stderr in a log.
pub(super) fn say(mp: &MultiProgress, line: &str) {
    if std::io::stderr().is_terminal() {
        let _ = mp.println(line);
    } else {
        eprintln!("{line}");
    }
}

impl Progress {
    pub(super) fn new(mp: &MultiProgress, name: &str, total: usize) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = if tty {
            let b = mp.add(ProgressBar::new(total as u64));
            b.set_style(
                ProgressStyle::with_template("{prefix:.bold} [{bar:20}] {pos}/{len} {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            b.set_prefix(name.to_string());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        } else {
            ProgressBar::hidden()
        };
        Progress {
            bar,
            mp: mp.clone(),
            name: name.into(),
            tty,
            case: None,
            tokens: 0,
            samples: 0,
            cases_done: 0,
            cases_total: total,
        }
    }

    pub(super) fn say(&self, line: &str) {
        say(&self.mp, line);
    }

    pub(super) fn event(&mut self, e: &Event) {
        match e {
            Event::CaseStart { case, workload, .. } => {
                self.case = Some(case.clone());
                self.tokens = workload.tokens();
                self.samples = 0;
                self.bar.set_message(case.clone());
            }
            Event::Sample {
                warmup: false,
                measured,
                ..
            } => {
                self.samples += 1;
                let tok_s = self.tokens as f64 / (measured.ns.max(1) as f64 / 1e9);
                self.bar.set_message(format!(
                    "{} · {} samples · {tok_s:.1} tok/s",
                    self.case.as_deref().unwrap_or(""),
                    self.samples
                ));
            }
            Event::CaseEnd { case, samples, .. } => {
                self.cases_done += 1;
                self.bar.set_position(self.cases_done as u64);
                if !self.tty {
                    eprintln!(
                        "melt: [{}] {}/{} {case}: {samples} samples",
                        self.name, self.cases_done, self.cases_total
                    );
                }
            }
            Event::Error { case, message } => self.say(&format!(
                "melt: [{}] error{}: {message}",
                self.name,
                case.as_deref()
                    .map(|c| format!(" in {c}"))
                    .unwrap_or_default()
            )),
            _ => {}
        }
    }
}
