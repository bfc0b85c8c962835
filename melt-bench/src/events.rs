//! A run rebuilt from its event stream (`samples.jsonl`): how a host turns what a device sent,
//! possibly over several attempts (`--resume`), back into finished cases and tasks.

use std::collections::{BTreeMap, BTreeSet};

use crate::host::HostInfo;
use crate::params::Params;
use crate::runner::CaseRecord;
use crate::store::{CaseError, Event};
use crate::tasks::TaskRecord;
use crate::workload::{Measured, Workload};

/// A run rebuilt from its events (a device's stream, possibly over several attempts).
#[derive(Debug, Default)]
pub struct Replayed {
    /// The machine that measured, from the last `run_start`.
    pub host: Option<HostInfo>,
    /// Finished cases, in the order they finished.
    pub records: Vec<CaseRecord>,
    /// Errors of cases that never finished, and cases cut off mid-way.
    pub errors: Vec<CaseError>,
    /// Finished tasks, in the order they finished.
    pub tasks: Vec<TaskRecord>,
}

impl Replayed {
    pub fn completed(&self) -> BTreeSet<String> {
        self.records
            .iter()
            .map(|r| r.id.full_id.clone())
            .chain(self.tasks.iter().map(|t| t.id.clone()))
            .collect()
    }
}

/// Rebuilds the finished cases from `samples.jsonl` events. A case that was started again
/// (`--resume` after a lost connection) counts from its last start; a case started but never
/// finished becomes an error that says how many samples it had — those stay in the log.
pub fn replay(events: &[Event]) -> Replayed {
    let mut out = Replayed::default();
    // Case id → (backend, params, workload, measured samples) of its latest start.
    let mut open: BTreeMap<String, (String, Params, Workload, Vec<Measured>)> = BTreeMap::new();
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    let mut run_errors = Vec::new();
    for e in events {
        match e {
            Event::RunStart { host, .. } => out.host = Some(host.clone()),
            Event::CaseStart {
                case,
                backend,
                params,
                workload,
                ..
            } => {
                out.records.retain(|r| &r.id.full_id != case);
                errors.remove(case);
                open.insert(
                    case.clone(),
                    (backend.clone(), params.clone(), *workload, Vec::new()),
                );
            }
            Event::Sample {
                case,
                warmup,
                measured,
                ..
            } => {
                if let (false, Some(c)) = (*warmup, open.get_mut(case)) {
                    c.3.push(measured.clone());
                }
            }
            Event::CaseEnd {
                case,
                stop_reason,
                meta,
                ..
            } => {
                let Some((backend, params, workload, samples)) = open.remove(case) else {
                    continue;
                };
                let Some(meta) = meta else {
                    errors.insert(
                        case.clone(),
                        "case_end without its metadata (a log older than device runs)".into(),
                    );
                    continue;
                };
                out.records.push(CaseRecord::from_events(
                    (**meta).clone(),
                    backend,
                    params,
                    workload,
                    samples,
                    *stop_reason,
                ));
            }
            Event::Error {
                case: Some(case),
                message,
            } => {
                open.remove(case);
                errors.insert(case.clone(), message.clone());
            }
            Event::Error {
                case: None,
                message,
            } => run_errors.push(message.clone()),
            Event::TaskTurn { .. } | Event::RunEnd { .. } => {}
            Event::TaskEnd { record } => {
                out.tasks.retain(|t| t.id != record.id);
                errors.remove(&record.id);
                out.tasks.push((**record).clone());
            }
        }
    }
    for (case, (_, _, _, samples)) in open {
        errors.insert(
            case,
            format!(
                "interrupted after {} samples (kept in samples.jsonl; --resume runs the case again)",
                samples.len()
            ),
        );
    }
    out.errors = errors
        .into_iter()
        .map(|(case, message)| CaseError {
            case: Some(case),
            message,
        })
        .chain(run_errors.into_iter().map(|message| CaseError {
            case: None,
            message,
        }))
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::criterion_format::BenchmarkId;
    use std::time::Duration;

    use crate::backend::ModelInfo;
    use crate::store::CaseMeta;
    use crate::workload::tg;

    fn start(case: &str) -> Event {
        Event::CaseStart {
            case: case.into(),
            backend: "llama.cpp".into(),
            model: "m".into(),
            params: Params::default(),
            workload: tg(4),
        }
    }

    fn sample(case: &str, ns: u64, warmup: bool) -> Event {
        Event::Sample {
            case: case.into(),
            index: 0,
            warmup,
            measured: Measured {
                ns,
                prefill_ns: 0,
                decode_ns: ns,
                ttft_ns: None,
                token_ns: vec![],
                at_ns: None,
            },
        }
    }

    fn end(case: &str, n: usize) -> Event {
        let value = case.rsplit('/').next().unwrap();
        Event::CaseEnd {
            case: case.into(),
            samples: n,
            stop_reason: crate::sampling::StopReason::SampleSize,
            meta: Some(Box::new(CaseMeta {
                id: BenchmarkId::new("m", "tg4", value, 4),
                backend_version: "v".into(),
                model: crate::model::ModelSpec {
                    name: "m".into(),
                    path: "/m.gguf".into(),
                    format: crate::model::ModelFormat::Gguf,
                    sha256: "ab".repeat(32),
                    size_bytes: 1,
                },
                model_info: ModelInfo::default(),
                load_ns: 5,
                context_ns: 6,
                peak_rss_bytes: Some(7),
                peak_rss_per_case: true,
                probes: None,
            })),
        }
    }

    #[test]
    fn replay_rebuilds_finished_cases_across_a_resume() {
        let (a, b) = ("m/tg4/x @d", "m/tg4/y @d");
        let events = vec![
            Event::RunStart {
                run_id: "1".into(),
                schema_version: 1,
                host: HostInfo::default(),
            },
            start(a),
            sample(a, 99, true),
            sample(a, 10, false),
            sample(a, 11, false),
            end(a, 2),
            start(b),
            sample(b, 20, false),
            // The connection dies here: b is cut off.
        ];
        let cut = replay(&events);
        assert_eq!(cut.completed(), [a.to_string()].into());
        assert_eq!(cut.records[0].samples.len(), 2, "warm-up left out");
        assert_eq!(cut.records[0].load, Duration::from_nanos(5));
        assert_eq!(cut.records[0].backend, "llama.cpp");
        assert_eq!(cut.errors.len(), 1);
        assert!(
            cut.errors[0]
                .message
                .contains("interrupted after 1 samples"),
            "{:?}",
            cut.errors
        );

        // --resume: b starts over and finishes; its cut-off sample does not count.
        let mut resumed = events.clone();
        resumed.extend([
            start(b),
            sample(b, 30, false),
            sample(b, 31, false),
            end(b, 2),
        ]);
        let r = replay(&resumed);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.records.len(), 2);
        let ns: Vec<u64> = r.records[1].samples.iter().map(|m| m.ns).collect();
        assert_eq!(ns, [30, 31]);

        // An error for a case that then succeeds on resume is gone; one that stays, stays.
        let mut failed = vec![
            start(b),
            Event::Error {
                case: Some(b.into()),
                message: "boom".into(),
            },
        ];
        assert_eq!(replay(&failed).errors[0].message, "boom");
        failed.extend([start(b), sample(b, 1, false), end(b, 1)]);
        assert!(replay(&failed).errors.is_empty());
    }
}
