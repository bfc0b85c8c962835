//! Where a test run's time went: each phase (installs, downloads, exports, builds, the board,
//! each test binary) is timed as it runs, and the table is printed at the end — also when a
//! phase fails — so that a closing note can quote it and CI's growth shows before it fails.

use std::time::{Duration, Instant};

/// The phases run so far, in order, with their wall time.
pub struct Phases {
    start: Instant,
    done: Vec<(String, Duration, Status)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Failed,
}

impl Phases {
    pub fn new() -> Phases {
        Phases {
            start: Instant::now(),
            done: Vec::new(),
        }
    }

    /// Runs `f` as the phase `name`, announcing it on stderr; an `Err` marks it failed.
    pub fn time<T, E>(&mut self, name: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        eprintln!("xtask: == {name}");
        let start = Instant::now();
        let r = f();
        let status = if r.is_ok() {
            Status::Ok
        } else {
            Status::Failed
        };
        self.record(name, start.elapsed(), status);
        r
    }

    /// A phase timed by its caller.
    pub fn record(&mut self, name: &str, took: Duration, status: Status) {
        self.done.push((name.to_string(), took, status));
    }

    /// The table: one row a phase, seconds, and the total since the run began.
    pub fn table(&self) -> String {
        let width = self
            .done
            .iter()
            .map(|(n, ..)| n.chars().count())
            .chain(["total".len()])
            .max()
            .unwrap_or(0);
        let mut out = format!("{:<width$}  {:>7}\n", "phase", "seconds");
        for (name, took, status) in &self.done {
            let mark = match status {
                Status::Ok => "",
                Status::Failed => "  FAILED",
            };
            out += &format!("{name:<width$}  {:>7.1}{mark}\n", took.as_secs_f64());
        }
        out += &format!(
            "{:<width$}  {:>7.1}\n",
            "total",
            self.start.elapsed().as_secs_f64()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_is_a_row_with_its_seconds_and_a_failure_is_marked() {
        let mut p = Phases::new();
        let ok: Result<u8, ()> = p.time("downloads", || Ok(1));
        assert_eq!(ok, Ok(1));
        p.record(
            "test binary melt-report it",
            Duration::from_millis(2500),
            Status::Failed,
        );
        let t = p.table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("phase") && lines[0].ends_with("seconds"));
        assert!(
            lines[1].starts_with("downloads ") && lines[1].ends_with("0.0"),
            "{t}"
        );
        assert!(lines[2].ends_with("2.5  FAILED"), "{t}");
        assert!(lines[3].starts_with("total"), "{t}");
        // The columns line up.
        assert_eq!(lines[1].len(), lines[3].len(), "{t}");
    }
}
