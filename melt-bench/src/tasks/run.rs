//! Planning and running tasks: which model × backend pairs get each task, and the runner's
//! loop that loads the model, opens a session sized for the task, watches it with the probes
//! and streams what it measures.

use std::time::Instant;

use crate::backend::Backend;
use crate::params::Point;
use crate::probe;
use crate::runner::{CaseFailure, ModelRef, RunError, Runner};
use crate::store::Event;
use crate::tasks::chat::ChatTemplate;
use crate::tasks::{
    choice, kl_divergence, perplexity, replay, Task, TaskError, TaskRecord, TaskResult,
};

/// One task of the plan.
#[derive(Debug, Clone)]
pub struct PlannedTask {
    pub model: usize,
    pub backend: usize,
    pub point: usize,
    pub task: Task,
    /// `model/task/backend params[ @device]`.
    pub id: String,
}

/// Every task for every model × backend pair whose backend accepts the model, at the last
/// point of each setting that can change what the model computes ([`Params::numerics`]: a
/// sweep of KV cache types or of `accuracy_level` gets a perplexity per value; a sweep of
/// threads alone, like the shipped suite's, one at all cores).
///
/// [`Params::numerics`]: melt_core::Params::numerics
pub fn plan_tasks(
    models: &[ModelRef],
    backends: &[Box<dyn Backend>],
    points: &[Point],
    tasks: &[Task],
    device: Option<&str>,
) -> Vec<PlannedTask> {
    let at = task_points(points);
    let mut out = Vec::new();
    for (mi, m) in models.iter().enumerate() {
        for (bi, b) in backends.iter().enumerate() {
            if m.format.is_some_and(|f| !b.accepts(f)) {
                continue;
            }
            for &point in &at {
                for task in tasks {
                    let device = device.map(|d| format!(" @{d}")).unwrap_or_default();
                    out.push(PlannedTask {
                        model: mi,
                        backend: bi,
                        point,
                        task: task.clone(),
                        id: format!(
                            "{}/{}/{} {}{device}",
                            m.name,
                            task.label(),
                            b.name(),
                            points[point].label
                        ),
                    });
                }
            }
        }
    }
    out
}

/// The points tasks run at: the last of each distinct [`Params::numerics`], in order of first
/// appearance.
///
/// [`Params::numerics`]: melt_core::Params::numerics
fn task_points(points: &[Point]) -> Vec<usize> {
    let mut at: Vec<usize> = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let same = |&j: &usize| points[j].params.numerics() == p.params.numerics();
        match at.iter().position(same) {
            Some(k) => at[k] = i,
            None => at.push(i),
        }
    }
    at
}

impl Runner<'_> {
    /// Runs `tasks` in plan order; a failing task is recorded and the rest go on.
    pub fn run_tasks(&mut self, tasks: &[PlannedTask]) -> (Vec<TaskRecord>, Vec<CaseFailure>) {
        let mut records = Vec::new();
        let mut failures = Vec::new();
        for t in tasks {
            match self.run_task(t) {
                Ok(r) => {
                    self.emit(Event::TaskEnd {
                        record: Box::new(r.clone()),
                    });
                    records.push(r);
                }
                Err(e) => self.fail(&mut failures, Some(t.id.clone()), e.to_string()),
            }
        }
        (records, failures)
    }

    fn run_task(&mut self, t: &PlannedTask) -> Result<TaskRecord, RunError> {
        let spec = self.models[t.model].resolve(&self.cache)?;
        let backend = &self.backends[t.backend];
        let (backend_name, backend_version) = (backend.name().to_string(), backend.version());
        let mut params = self.points[t.point].params.clone();
        params.session.n_ctx = Some(t.task.n_ctx() as u32);
        eprintln!("melt: {}: loading {}", t.id, spec.path.display());
        let start = Instant::now();
        let loaded = backend.load(&spec, &params.model)?;
        let load_ns = start.elapsed().as_nanos() as u64;
        let per_task = crate::memory::reset_peak();
        let mut session = loaded.session(&params.session)?;
        let epoch = Instant::now();
        let probing = self.sampling.probe_period.map(|period| {
            let log = probe::PhaseLog::new(epoch);
            let probes = probe::Probes::detect(&self.sampling.sysroot);
            (log, probe::Sampler::start(probes, period, epoch))
        });
        let id = t.id.clone();
        let result: Result<TaskResult, TaskError> = match &t.task {
            Task::Perplexity(p) => p.data.text().map_err(TaskError::from).and_then(|text| {
                let mut last = Instant::now();
                perplexity::run(session.as_mut(), p, &text, &mut |done, all, ppl| {
                    if done == all || last.elapsed().as_secs() >= 10 {
                        eprintln!("melt: {id}: chunk {done}/{all}, PPL {ppl:.4}");
                        last = Instant::now();
                    }
                })
                .map(TaskResult::Perplexity)
            }),
            Task::KlDivergence(k) => {
                let mut last = Instant::now();
                kl_divergence::run(session.as_mut(), k, &mut |done, all, kld| {
                    if done == all || last.elapsed().as_secs() >= 10 {
                        eprintln!("melt: {id}: chunk {done}/{all}, mean KLD {kld:.6}");
                        last = Instant::now();
                    }
                })
                .map(TaskResult::KlDivergence)
            }
            Task::MultipleChoice(c) => {
                let mut last = Instant::now();
                choice::run(session.as_mut(), c, &mut |done, all| {
                    if done == all || last.elapsed().as_secs() >= 10 {
                        eprintln!("melt: {id}: {done}/{all} questions");
                        last = Instant::now();
                    }
                })
                .map(TaskResult::MultipleChoice)
            }
            Task::Replay(r) => {
                let conversations = crate::datasets::read_conversations(&r.data);
                let template = ChatTemplate::for_model(&spec.path, r.chat_template.as_deref());
                match (conversations, template) {
                    (Ok(convs), Ok(template)) => {
                        eprintln!("melt: {id}: chat template: {}", template.source);
                        let phases = probing.as_ref().map(|(log, _)| log);
                        replay::run(
                            session.as_mut(),
                            r,
                            &template,
                            &convs,
                            epoch,
                            phases,
                            &mut |turn| {
                                eprintln!(
                                    "melt: {id}: conversation {} turn {}: {} in, {} out ({}), TTFT {:.0} ms, {:.1} tok/s",
                                    turn.conversation,
                                    turn.turn,
                                    turn.input_tokens,
                                    turn.output_tokens,
                                    turn.stop,
                                    turn.ttft_ns as f64 / 1e6,
                                    turn.decode_tok_s
                                );
                                // Streamed now: a lost device keeps every turn measured.
                                self.emit(Event::TaskTurn {
                                    task: id.clone(),
                                    turn: turn.clone(),
                                });
                            },
                        )
                        .map(TaskResult::Replay)
                    }
                    (Err(e), _) => Err(e.into()),
                    (_, Err(e)) => Err(e),
                }
            }
        };
        let summary = probing.map(|(log, sampler)| {
            let end = epoch.elapsed().as_nanos() as u64;
            let (probes, series, cost, period) = sampler.stop();
            probe::summarize(&probes, series, cost, period, &log.marks(), end, (0, 0))
        });
        let mut result = result?;
        let seconds = epoch.elapsed().as_secs_f64();
        let (watts, temp_max_c) = summary
            .as_ref()
            .map_or((None, None), |s| s.window(0.0, seconds));
        if let (TaskResult::Replay(r), Some(s)) = (&mut result, &summary) {
            for turn in &mut r.turns {
                (turn.power_w, turn.temp_c) = s.window(turn.start_s, turn.end_s);
            }
            for c in &mut r.conversations {
                let (w, temp) = s.window(c.start_s, c.end_s);
                c.energy_j = w.map(|w| w * c.wall_s);
                c.temp_max_c = temp;
            }
        }
        Ok(TaskRecord {
            id: t.id.clone(),
            backend: backend_name,
            backend_version,
            model: spec.clone(),
            model_info: loaded.info(),
            params,
            load_ns,
            peak_rss_bytes: crate::memory::peak_rss_bytes(),
            peak_rss_per_task: per_task,
            energy_j: watts.map(|w| w * seconds),
            temp_max_c,
            result,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Sweep;

    #[test]
    fn tasks_run_once_per_setting_that_changes_the_logits() {
        // Threads change only speed: one point, the last (all cores in the shipped suite).
        let threads = Sweep {
            threads: vec![1, 2],
            ..Sweep::default()
        }
        .points();
        assert_eq!(task_points(&threads), [1]);
        // A backend option that changes what is computed: the last point of each value.
        let points = Sweep {
            threads: vec![1, 2],
            options: vec!["", "accuracy_level=1"],
            ..Sweep::default()
        }
        .points();
        let at = task_points(&points);
        assert_eq!(at.len(), 2, "{points:?}");
        let chosen: Vec<_> = at.iter().map(|&i| &points[i].params).collect();
        assert!(chosen.iter().all(|p| p.session.threads == 2));
        assert_eq!(chosen[0].numerics(), Vec::<String>::new());
        assert_eq!(chosen[1].numerics(), ["accuracy_level=1"]);
        // KV cache types too.
        let kv = Sweep {
            type_k: vec!["f16", "q8_0"],
            ..Sweep::default()
        }
        .points();
        assert_eq!(task_points(&kv), [0, 1]);
    }
}
