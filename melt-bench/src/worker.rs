//! `--worker`: a bench binary that measures one sample of a case when asked, for the paired
//! gate (`cargo melt gate --against REV`), which runs two of them — the baseline's and the
//! working tree's — and alternates between them.
//!
//! The worker loads a case's model on its first request and keeps it (and the case's session)
//! until a request needs another model or the gate says `release`, so taking turns costs no
//! reload: while one side measures, the other holds its model idle. A case is warmed up once,
//! on its first request after a load, as the runner warms up a case. Requests and replies are
//! JSON lines ([`Request`], [`Reply`]); the first reply, unasked, is [`Reply::Ready`] with the
//! cases this binary can measure. End of input ends the worker.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, LoadedModel, Session};
use crate::memory;
use crate::model::{Cache, ModelSpec};
use crate::params::{ModelParams, Point};
use crate::probe::noise::{self, Noise};
use crate::runner::{ModelRef, PlannedCase};
use crate::sampling::Sampling;
use crate::workload::run_once;

/// What the gate asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// One measured run of the case (warmed up first if it is the case's first since a load).
    Measure { case: String },
    /// The noise check, over a window of this many seconds.
    Noise { seconds: f64 },
    /// Drop the loaded model (the gate's reload-per-turn mode, for models too big to hold
    /// twice).
    Release,
}

/// What the worker answers, one line per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ready {
        cases: Vec<String>,
    },
    Sample(Sample),
    Noise(Box<Noise>),
    Released,
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        case: Option<String>,
        message: String,
    },
}

/// One measured run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub case: String,
    /// Tokens the workload processes (prompt and generated).
    pub tokens: u64,
    pub ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ns: Option<u64>,
    /// The process's peak resident memory during the run (the model included), where the
    /// peak can be reset (Linux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
}

impl Sample {
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / (self.ns.max(1) as f64 / 1e9)
    }
}

/// What a worker serves from: the planned cases and what they index.
pub struct Plan<'a> {
    pub models: &'a [ModelRef],
    pub backends: &'a [Box<dyn Backend>],
    pub points: &'a [Point],
    pub cases: &'a [PlannedCase],
    pub sampling: &'a Sampling,
    pub cache: Cache,
}

/// Requests, one per line; a line that is not a request is answered with an error and skipped.
struct Requests<'r, W: Write> {
    input: Box<dyn BufRead + 'r>,
    out: W,
}

impl<W: Write> Requests<'_, W> {
    fn next(&mut self) -> Option<Request> {
        loop {
            let mut line = String::new();
            match self.input.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) if line.trim().is_empty() => continue,
                Ok(_) => match serde_json::from_str(&line) {
                    Ok(r) => return Some(r),
                    Err(e) => self.reply(&Reply::Error {
                        case: None,
                        message: format!("not a worker request: {e}: {}", line.trim()),
                    }),
                },
            }
        }
    }

    /// The planned case `case` names, or an error answered for it.
    fn case_in<'p>(&mut self, plan: &'p Plan, case: String) -> Option<&'p PlannedCase> {
        let found = plan.cases.iter().find(|c| c.id.full_id == case);
        if found.is_none() {
            self.reply(&Reply::Error {
                message: format!("no case `{case}` in this bench"),
                case: Some(case),
            });
        }
        found
    }

    fn reply(&mut self, reply: &Reply) {
        let line = serde_json::to_string(reply).expect("replies serialize");
        // The gate gone means nothing more to do; the next read sees the end of input.
        let _ = writeln!(self.out, "{line}").and_then(|()| self.out.flush());
    }
}

/// The load a case needs: its model, backend and model parameters.
fn load_key<'p>(plan: &'p Plan, c: &PlannedCase) -> (usize, usize, &'p ModelParams) {
    (c.model, c.backend, &plan.points[c.point].params.model)
}

/// Serves requests from `input` until it ends; returns the exit code (0).
pub fn serve(plan: &Plan, input: impl BufRead, out: impl Write) -> i32 {
    let mut requests = Requests {
        input: Box::new(input),
        out,
    };
    requests.reply(&Reply::Ready {
        cases: plan.cases.iter().map(|c| c.id.full_id.clone()).collect(),
    });
    let mut pending = requests.next();
    while let Some(request) = pending.take() {
        match request {
            Request::Noise { seconds } => {
                requests.reply(&noise_reply(plan, seconds));
                pending = requests.next();
            }
            Request::Release => {
                requests.reply(&Reply::Released);
                pending = requests.next();
            }
            Request::Measure { case } => {
                let Some(c) = requests.case_in(plan, case.clone()) else {
                    pending = requests.next();
                    continue;
                };
                match load(plan, c) {
                    Ok((spec, loaded)) => {
                        pending = serve_loaded(plan, &spec, loaded.as_ref(), c, &mut requests);
                    }
                    Err(message) => {
                        requests.reply(&Reply::Error {
                            case: Some(case),
                            message,
                        });
                        pending = requests.next();
                    }
                }
            }
        }
    }
    0
}

fn noise_reply(plan: &Plan, seconds: f64) -> Reply {
    let window = Duration::from_secs_f64(seconds.clamp(0.1, 60.0));
    Reply::Noise(Box::new(noise::check(&plan.sampling.sysroot, window)))
}

fn load(plan: &Plan, c: &PlannedCase) -> Result<(ModelSpec, Box<dyn LoadedModel>), String> {
    let spec = plan.models[c.model]
        .resolve(&plan.cache)
        .map_err(|e| e.to_string())?;
    let backend = &plan.backends[c.backend];
    eprintln!(
        "melt: worker: loading {} with {}",
        spec.path.display(),
        backend.name()
    );
    let loaded = backend
        .load(&spec, &plan.points[c.point].params.model)
        .map_err(|e| e.to_string())?;
    Ok((spec, loaded))
}

/// Serves requests while they need the model `first` loaded; returns the first request that
/// needs another (or `None` at the end of input, or the request after a release).
fn serve_loaded<W: Write>(
    plan: &Plan,
    spec: &ModelSpec,
    loaded: &dyn LoadedModel,
    first: &PlannedCase,
    requests: &mut Requests<W>,
) -> Option<Request> {
    let key = load_key(plan, first);
    let mut current: Option<(String, Box<dyn Session + '_>)> = None;
    let mut next = Some(Request::Measure {
        case: first.id.full_id.clone(),
    });
    while let Some(request) = next.take() {
        match request {
            Request::Measure { case } => {
                let Some(c) = requests.case_in(plan, case.clone()) else {
                    next = requests.next();
                    continue;
                };
                if load_key(plan, c) != key {
                    return Some(Request::Measure { case });
                }
                let reply = match measure(plan, spec, loaded, c, &mut current) {
                    Ok(sample) => Reply::Sample(sample),
                    Err(message) => {
                        current = None;
                        Reply::Error {
                            case: Some(case),
                            message,
                        }
                    }
                };
                requests.reply(&reply);
            }
            Request::Noise { seconds } => requests.reply(&noise_reply(plan, seconds)),
            Request::Release => {
                requests.reply(&Reply::Released);
                return requests.next();
            }
        }
        next = requests.next();
    }
    None
}

/// One measured run of `c`, on the current session if it is `c`'s (else a new one, warmed up).
fn measure<'m>(
    plan: &Plan,
    spec: &ModelSpec,
    loaded: &'m dyn LoadedModel,
    c: &PlannedCase,
    current: &mut Option<(String, Box<dyn Session + 'm>)>,
) -> Result<Sample, String> {
    let w = c.workload;
    let n_vocab = loaded.info().n_vocab;
    if current.as_ref().is_none_or(|(id, _)| *id != c.id.full_id) {
        // The old session goes first: two contexts of a large model may not fit.
        *current = None;
        let mut params = plan.points[c.point].params.session.clone();
        let (needed, n_ctx) = (w.n_ctx_needed(), c.n_ctx(plan.points));
        if (n_ctx as usize) < needed {
            return Err(format!(
                "{} needs a context of {needed} tokens, the case has {n_ctx}",
                w.name()
            ));
        }
        params.n_ctx = Some(n_ctx);
        let mut session = loaded.session(&params).map_err(|e| e.to_string())?;
        let start = Instant::now();
        let mut runs = 0;
        while runs < plan.sampling.min_warm_up_runs.max(1)
            || start.elapsed() < plan.sampling.warm_up
        {
            run_once(&w, session.as_mut(), n_vocab, crate::runner::PROMPT_SEED)
                .map_err(|e| e.to_string())?;
            runs += 1;
        }
        eprintln!(
            "melt: worker: {} warmed up ({runs} runs, {})",
            c.id.full_id,
            spec.path.display()
        );
        *current = Some((c.id.full_id.clone(), session));
    }
    let (_, session) = current.as_mut().expect("made above");
    let resettable = memory::reset_peak();
    let m = run_once(&w, session.as_mut(), n_vocab, crate::runner::PROMPT_SEED)
        .map_err(|e| e.to_string())?;
    Ok(Sample {
        case: c.id.full_id.clone(),
        tokens: w.tokens() as u64,
        ns: m.ns,
        ttft_ns: m.ttft_ns,
        peak_rss_bytes: resettable.then(memory::peak_rss_bytes).flatten(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Sweep;
    use crate::workload::{pp, tg};
    use melt_testkit::synthetic::Synthetic;

    /// A worker over the synthetic backend (200 µs a decoded token), fed a script of
    /// requests: it announces its cases, measures each asked case once (warming up only on a
    /// case's first request), checks the machine, releases its model, and answers a bad line
    /// and an unknown case with errors that say so, going on after each.
    #[test]
    fn serves_a_script_of_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        melt_testkit::TinyLlama::default().write(&path).unwrap();
        let models = vec![ModelRef::path(path)];
        let backends: Vec<Box<dyn Backend>> =
            vec![Box::new(Synthetic::new(Duration::from_micros(200)))];
        let points = Sweep::default().points();
        let cases = crate::runner::plan(&models, &backends, &points, &[tg(16), pp(32)]);
        let sampling = Sampling {
            warm_up: Duration::ZERO,
            ..Sampling::default()
        };
        let plan = Plan {
            models: &models,
            backends: &backends,
            points: &points,
            cases: &cases,
            sampling: &sampling,
            cache: Cache::new(dir.path().join("cache")),
        };
        let (tg_id, pp_id) = (cases[0].id.full_id.clone(), cases[1].id.full_id.clone());
        let measure =
            |id: &str| serde_json::to_string(&Request::Measure { case: id.into() }).unwrap();
        let script = [
            measure(&tg_id),
            measure(&tg_id),
            serde_json::to_string(&Request::Noise { seconds: 0.1 }).unwrap(),
            measure(&pp_id),
            "\"release\"".into(),
            "{\"measure\": 3}".into(),
            measure("nope/tg16/synthetic"),
            measure(&tg_id),
        ]
        .join("\n");
        let mut out = Vec::new();
        assert_eq!(serve(&plan, script.as_bytes(), &mut out), 0);
        let replies: Vec<Reply> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(replies.len(), 9, "{replies:#?}");
        assert_eq!(
            replies[0],
            Reply::Ready {
                cases: vec![tg_id.clone(), pp_id.clone()]
            }
        );
        let sample = |r: &Reply| match r {
            Reply::Sample(s) => s.clone(),
            other => panic!("not a sample: {other:?}"),
        };
        for i in [1, 2, 8] {
            let s = sample(&replies[i]);
            assert_eq!((s.case.as_str(), s.tokens), (tg_id.as_str(), 16));
            assert!(s.ns >= 16 * 200_000, "{s:?}");
            assert!(s.tokens_per_second() <= 5_000.0);
        }
        assert!(matches!(&replies[3], Reply::Noise(n) if n.window_s >= 0.1));
        let s = sample(&replies[4]);
        assert_eq!((s.case.as_str(), s.tokens), (pp_id.as_str(), 32));
        assert_eq!(replies[5], Reply::Released);
        assert!(
            matches!(&replies[6], Reply::Error { case: None, message } if message.contains("not a worker request"))
        );
        assert!(
            matches!(&replies[7], Reply::Error { case: Some(c), message } if c == "nope/tg16/synthetic" && message.contains("no case"))
        );
    }
}
