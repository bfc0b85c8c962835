//! Where a run is, for the line a host run prints per case: case k of n, and roughly how long
//! the rest will take at the pace of the cases so far.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Progress {
    pub total: usize,
    started: Instant,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        Progress {
            total,
            started: Instant::now(),
        }
    }

    /// `[k/n]` for case `k` (1-based), with the time left once a case has finished.
    pub fn label(&self, k: usize) -> String {
        let done = k.saturating_sub(1);
        match left(self.started.elapsed(), done, self.total) {
            Some(left) => format!("[{k}/{}, ~{} left]", self.total, human(left)),
            None => format!("[{k}/{}]", self.total),
        }
    }
}

/// The time the `total - done` cases left take at the pace of the `done` ones.
fn left(elapsed: Duration, done: usize, total: usize) -> Option<Duration> {
    (done > 0 && total > done).then(|| elapsed.mul_f64((total - done) as f64 / done as f64))
}

fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 90.0 * 60.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_is_the_pace_so_far() {
        let s = Duration::from_secs;
        assert_eq!(left(s(60), 0, 4), None);
        assert_eq!(left(s(60), 2, 4), Some(s(60)));
        assert_eq!(left(s(30), 1, 5), Some(s(120)));
        assert_eq!(left(s(30), 4, 4), None);
        assert_eq!(human(s(42)), "42 s");
        assert_eq!(human(s(600)), "10 min");
        assert_eq!(human(s(3 * 3600)), "3.0 h");
        assert_eq!(Progress::new(16).label(1), "[1/16]");
    }
}
