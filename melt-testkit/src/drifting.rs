//! A simulated machine whose speed drifts, for tests of a gate with a known truth.
//!
//! Real CI machines and phones do not hold still: this one's speed wanders slowly (a
//! mean-reverting random walk of its log slowdown), now and then drops into or out of a
//! sudden ±20% phase for a few seconds (another tenant, a frequency step, thermal throttling),
//! and each run has a little jitter of its own. Time is simulated, so a hundred trials of a
//! hundred samples take milliseconds, and both builds of a paired comparison run on the same
//! machine, one after the other, as they do on a real one.

use melt_bench::stats::Rng;

/// How the machine drifts.
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    /// Standard deviation of the slow wander of the log slowdown (0.07 ≈ ±7%).
    pub wander_sd: f64,
    /// How long the wander takes to forget where it was, seconds.
    pub wander_time_s: f64,
    /// Mean time between the starts of sudden phases, seconds.
    pub phase_every_s: f64,
    /// A phase makes the machine this much slower or faster (0.2 = ±20%).
    pub phase_size: f64,
    /// Mean length of a phase, seconds.
    pub phase_mean_s: f64,
    /// Each run's own relative jitter (standard deviation).
    pub jitter: f64,
}

impl Default for Drift {
    /// A noisy 2-core CI VM: run-to-run drift near ±10%, a ±20% phase every half minute.
    fn default() -> Self {
        Drift {
            wander_sd: 0.07,
            wander_time_s: 60.0,
            phase_every_s: 30.0,
            phase_size: 0.2,
            phase_mean_s: 5.0,
            jitter: 0.015,
        }
    }
}

/// The machine, with its own clock.
#[derive(Debug, Clone)]
pub struct DriftingMachine {
    rng: Rng,
    drift: Drift,
    now_s: f64,
    /// Log slowdown of the wander.
    wander: f64,
    /// Slowdown factor of the current phase (1 outside one) and the seconds it has left.
    phase: f64,
    phase_left_s: f64,
}

impl DriftingMachine {
    pub fn new(seed: u64, drift: Drift) -> DriftingMachine {
        let mut rng = Rng::new(seed);
        let wander = drift.wander_sd * rng.normal();
        DriftingMachine {
            rng,
            drift,
            now_s: 0.0,
            wander,
            phase: 1.0,
            phase_left_s: 0.0,
        }
    }

    /// Seconds since the machine started.
    pub fn now_s(&self) -> f64 {
        self.now_s
    }

    /// Runs `work_s` seconds of nominal work (what it takes on the machine at rest) and
    /// returns the wall seconds it took; the clock moves on by that much.
    pub fn run(&mut self, work_s: f64) -> f64 {
        let slowdown =
            self.wander.exp() * self.phase * (self.drift.jitter * self.rng.normal()).exp();
        let wall = work_s * slowdown;
        self.idle(wall);
        wall
    }

    /// Lets `seconds` pass (another job, the time between two CI runs).
    pub fn idle(&mut self, seconds: f64) {
        // In steps, so phases start and end inside long idle times too.
        let mut left = seconds;
        while left > 0.0 {
            let dt = left.min(0.5);
            self.step(dt);
            left -= dt;
        }
    }

    fn step(&mut self, dt: f64) {
        let d = &self.drift;
        let keep = (-dt / d.wander_time_s).exp();
        self.wander =
            self.wander * keep + d.wander_sd * (1.0 - keep * keep).sqrt() * self.rng.normal();
        if self.phase_left_s > 0.0 {
            self.phase_left_s -= dt;
            if self.phase_left_s <= 0.0 {
                self.phase = 1.0;
            }
        } else if self.rng.unit() < 1.0 - (-dt / d.phase_every_s).exp() {
            self.phase = if self.rng.unit() < 0.5 {
                1.0 + d.phase_size
            } else {
                1.0 / (1.0 + d.phase_size)
            };
            self.phase_left_s = -d.phase_mean_s * (1.0 - self.rng.unit()).ln();
        }
        self.now_s += dt;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The machine drifts the way it says: the same work takes visibly different times across
    /// minutes (spread of one-minute means near the wander), and the clock counts wall time.
    #[test]
    fn drifts_and_keeps_time() {
        let mut m = DriftingMachine::new(1, Drift::default());
        let mut means = Vec::new();
        for _ in 0..40 {
            let xs: Vec<f64> = (0..5).map(|_| m.run(1.0)).collect();
            means.push(melt_bench::stats::mean(&xs));
            m.idle(60.0);
        }
        let logs: Vec<f64> = means.iter().map(|x| x.ln()).collect();
        let sd = melt_bench::stats::std_dev(&logs);
        assert!(sd > 0.04 && sd < 0.2, "run-to-run spread {sd}");
        assert!(m.now_s() > 40.0 * 60.0 + 40.0 * 5.0 * 0.5);
        // Same seed, same machine.
        let (mut a, mut b) = (
            DriftingMachine::new(9, Drift::default()),
            DriftingMachine::new(9, Drift::default()),
        );
        assert_eq!(a.run(2.0), b.run(2.0));
    }
}
