//! Exports of a run in the shapes other tools consume.
//!
//! | format | shape |
//! | --- | --- |
//! | `csv` | one row per case and metric: run, case, backend, model, sha256, threads, test, metric, unit, estimate, lower, upper, n |
//! | `jsonl` | one [`CaseSummary`] per line |
//! | `bmf` | bencher.dev Benchmark Metric Format: `{case: {"throughput": {value, lower_value, upper_value}}}`, tok/s |
//! | `github` | github-action-benchmark `customBiggerIsBetter`: `[{name, unit, value, range, extra}]`, tok/s |
//! | `llama-bench` | llama-bench's `-o json` rows (the same keys and types), for existing llama-bench dashboards |

use std::collections::BTreeMap;

use serde_json::{json, Value};

use melt_bench::store::{CaseSummary, Event, Summary};
use melt_bench::workload::Measured;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
    Bmf,
    Github,
    LlamaBench,
}

/// An export format melt does not write.
#[derive(Debug, thiserror::Error)]
#[error("unknown export format `{0}` (csv, jsonl, bmf, github, llama-bench)")]
pub struct UnknownFormat(String);

impl std::str::FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Format, UnknownFormat> {
        Ok(match s {
            "csv" => Format::Csv,
            "jsonl" => Format::Jsonl,
            "bmf" => Format::Bmf,
            "github" => Format::Github,
            "llama-bench" => Format::LlamaBench,
            other => return Err(UnknownFormat(other.to_string())),
        })
    }
}

/// The measured (not warm-up) samples of each case, from a run's `samples.jsonl` events.
pub fn samples_by_case(events: &[Event]) -> BTreeMap<String, Vec<Measured>> {
    let mut out: BTreeMap<String, Vec<Measured>> = BTreeMap::new();
    for e in events {
        match e {
            // A case started again (a resumed device run) counts from its last start.
            Event::CaseStart { case, .. } => {
                out.remove(case);
            }
            Event::Sample {
                case,
                warmup: false,
                measured,
                ..
            } => out.entry(case.clone()).or_default().push(measured.clone()),
            _ => {}
        }
    }
    out
}

/// The probes' summary (with its time series) of each case, from the `case_end` events.
pub fn probes_by_case(events: &[Event]) -> BTreeMap<String, melt_bench::probe::ProbeSummary> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::CaseEnd {
                case,
                meta: Some(meta),
                ..
            } => Some((case.clone(), meta.probes.clone()?)),
            _ => None,
        })
        .collect()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt(x: Option<f64>) -> String {
    x.map(|v| v.to_string()).unwrap_or_default()
}

fn tok_s(c: &CaseSummary) -> Option<&melt_bench::store::Metric> {
    c.metrics.get("tokens_per_second")
}

/// Renders `summary` (and, for llama-bench rows, its samples) in `format`.
pub fn render(
    format: Format,
    summary: &Summary,
    samples: &BTreeMap<String, Vec<Measured>>,
) -> String {
    match format {
        Format::Csv => {
            let mut out = String::from(
                "run_id,case,backend,model,model_sha256,threads,test,metric,unit,estimate,lower,upper,n\n",
            );
            for c in &summary.cases {
                for (name, m) in &c.metrics {
                    let row = [
                        summary.run_id.clone(),
                        c.id.clone(),
                        c.backend.clone(),
                        c.model.name.clone(),
                        c.model.sha256.clone(),
                        c.params.session.threads.to_string(),
                        c.function.clone(),
                        name.clone(),
                        m.unit.clone(),
                        m.estimate.to_string(),
                        opt(m.lower),
                        opt(m.upper),
                        m.n.to_string(),
                    ];
                    let fields: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
                    out.push_str(&fields.join(","));
                    out.push('\n');
                }
            }
            out
        }
        Format::Jsonl => summary
            .cases
            .iter()
            .map(|c| serde_json::to_string(c).unwrap_or_default() + "\n")
            .collect(),
        Format::Bmf => {
            let mut map = serde_json::Map::new();
            for c in &summary.cases {
                if let Some(m) = tok_s(c) {
                    map.insert(
                        c.id.clone(),
                        json!({"throughput": {
                            "value": m.estimate,
                            "lower_value": m.lower.unwrap_or(m.estimate),
                            "upper_value": m.upper.unwrap_or(m.estimate),
                        }}),
                    );
                }
            }
            serde_json::to_string_pretty(&Value::Object(map)).unwrap_or_default() + "\n"
        }
        Format::Github => {
            let rows: Vec<Value> = summary
                .cases
                .iter()
                .filter_map(|c| {
                    let m = tok_s(c)?;
                    let half = match (m.lower, m.upper) {
                        (Some(lo), Some(hi)) => (hi - lo) / 2.0,
                        _ => 0.0,
                    };
                    Some(json!({
                        "name": c.id,
                        "unit": "tok/s",
                        "value": m.estimate,
                        "range": format!("± {half:.2}"),
                        "extra": format!("{} samples, 95% CI, {} {}", m.n, c.backend, c.backend_version.split(';').next().unwrap_or("")),
                    }))
                })
                .collect();
            serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n"
        }
        Format::LlamaBench => {
            let rows: Vec<Value> = summary
                .cases
                .iter()
                .map(|c| {
                    llama_bench_row(
                        summary,
                        c,
                        samples.get(&c.id).map(Vec::as_slice).unwrap_or(&[]),
                    )
                })
                .collect();
            serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n"
        }
    }
}

/// `2026-11-24T11-28-35Z-123` (a run id) → `2026-11-24T11:28:35Z` (llama-bench's test_time).
fn iso_time(run_id: &str) -> String {
    let stamp = run_id.get(..20).unwrap_or(run_id);
    match stamp.split_at_checked(10) {
        Some((date, time)) => format!("{date}{}", time.replace('-', ":")),
        None => stamp.to_string(),
    }
}

/// One row in llama-bench's JSON shape. Settings melt has no notion of get llama-bench's
/// defaults for a CPU run, so dashboards keyed on them keep working.
fn llama_bench_row(summary: &Summary, c: &CaseSummary, samples: &[Measured]) -> Value {
    let w = &c.workload;
    let samples_ns: Vec<u64> = samples.iter().map(|m| m.ns).collect();
    let samples_ts: Vec<f64> = samples
        .iter()
        .map(|m| w.tokens() as f64 / (m.ns.max(1) as f64 / 1e9))
        .collect();
    let mean = |xs: &[f64]| {
        if xs.is_empty() {
            0.0
        } else {
            melt_bench::stats::mean(xs)
        }
    };
    let sd = |xs: &[f64]| {
        if xs.len() < 2 {
            0.0
        } else {
            melt_bench::stats::std_dev(xs)
        }
    };
    let ns_f: Vec<f64> = samples_ns.iter().map(|&n| n as f64).collect();
    let s = &c.params.session;
    let fa = match s.flash_attn {
        melt_bench::params::FlashAttn::Auto => -1,
        melt_bench::params::FlashAttn::Off => 0,
        melt_bench::params::FlashAttn::On => 1,
    };
    // Built from pairs: one `json!` with this many keys exceeds the macro recursion limit.
    let fields: Vec<(&str, Value)> = vec![
        ("build_commit", json!("unknown")),
        ("build_number", json!(0)),
        ("cpu_info", json!(summary.host.cpu)),
        ("gpu_info", json!("")),
        ("backends", json!("CPU")),
        ("model_filename", json!(c.model.path.display().to_string())),
        ("model_type", json!(c.model_info.description)),
        ("model_size", json!(c.model_info.size_bytes)),
        ("model_n_params", json!(c.model_info.n_params)),
        ("n_batch", json!(s.n_batch)),
        ("n_ubatch", json!(s.n_ubatch)),
        ("n_threads", json!(s.threads)),
        ("cpu_mask", json!("0x0")),
        ("cpu_strict", json!(false)),
        ("poll", json!(50)),
        ("type_k", json!(s.type_k)),
        ("type_v", json!(s.type_v)),
        ("n_gpu_layers", json!(c.params.model.n_gpu_layers)),
        ("n_cpu_moe", json!(0)),
        ("split_mode", json!("layer")),
        ("main_gpu", json!(0)),
        ("no_kv_offload", json!(false)),
        ("flash_attn", json!(fa)),
        ("devices", json!("auto")),
        ("tensor_split", json!("0.00")),
        ("tensor_buft_overrides", json!("none")),
        ("load_mode", json!("auto")),
        ("lazy_mode", json!("auto")),
        ("embeddings", json!(false)),
        ("no_op_offload", json!(0)),
        ("no_host", json!(false)),
        ("repack", json!(true)),
        ("fit_target", json!(0)),
        ("fit_min_ctx", json!(0)),
        ("n_prompt", json!(w.prefill)),
        ("n_gen", json!(w.decode)),
        ("n_depth", json!(w.depth)),
        ("test_time", json!(iso_time(&summary.run_id))),
        ("avg_ns", json!(mean(&ns_f) as u64)),
        ("stddev_ns", json!(sd(&ns_f) as u64)),
        ("avg_ts", json!(mean(&samples_ts))),
        ("stddev_ts", json!(sd(&samples_ts))),
        ("samples_ns", json!(samples_ns)),
        ("samples_ts", json!(samples_ts)),
    ];
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

#[cfg(test)]
mod tests;
