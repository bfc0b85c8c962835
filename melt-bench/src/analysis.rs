//! From a case's raw samples to its metrics with confidence intervals, its criterion files,
//! and its comparison with the baseline.

use std::collections::BTreeMap;
use std::path::Path;

use crate::criterion_format::{self, BaselineMode, ReportError};
use crate::runner::CaseRecord;
use crate::sampling::StopReason;
use crate::stats::{self, AnalysisConfig, Rng};
use crate::store::{BaselineComparison, CaseSummary, Metric, Summary};

fn metric(unit: &str, xs: &[f64], config: &AnalysisConfig) -> Metric {
    let (lower, upper) = if xs.len() >= 2 {
        // Criterion's method, fewer resamples: these metrics are secondary and many.
        let (lo, hi) = stats::mean_confidence_interval(
            xs,
            config.nresamples.min(20_000),
            config.confidence_level,
        );
        (Some(lo), Some(hi))
    } else {
        (None, None)
    };
    Metric {
        unit: unit.into(),
        estimate: stats::mean(xs),
        lower,
        upper,
        n: xs.len(),
        note: None,
    }
}

/// Decode against the device's memory bandwidth: the weights (the model file) and the KV
/// cache at the decode's mean context, streamed once per decoded token at the decode rate,
/// as a share of the triad bandwidth melt measured.
fn roofline_metrics(
    p: &crate::probe::ProbeSummary,
    record: &CaseRecord,
    metrics: &mut BTreeMap<String, Metric>,
) {
    let Some(roof) = p.memory_bandwidth else {
        return;
    };
    metrics.insert(
        "memory_bandwidth_gbs".into(),
        single(
            "GB/s",
            roof.triad_gbs,
            Some(format!(
                "triad on {} threads, measured by melt {}",
                roof.threads,
                match (roof.measured_unix_s, p.epoch_unix_ns / 1_000_000_000) {
                    (0, _) => "once per run".to_string(),
                    (at, now) if now > at + 3600 => {
                        format!(
                            "{:.1} h before this case (cached)",
                            (now - at) as f64 / 3600.0
                        )
                    }
                    (at, now) if now > at + 60 => {
                        format!("{} min before this case", (now - at) / 60)
                    }
                    _ => "for this run".to_string(),
                }
            )),
        ),
    );
    let Some(decode) = metrics.get("decode_tokens_per_second").map(|m| m.estimate) else {
        return;
    };
    let w = &record.workload;
    // Decode step i (from 0) attends depth + prefill + i + 1 positions.
    let ctx = (w.depth + w.prefill) as u64 + (w.decode as u64).div_ceil(2);
    let (kv_bytes, note) = match &record.model_info.kv {
        Some(kv) => {
            let s = &record.params.session;
            let elem = |t: &str| {
                if kv.elem_from_session {
                    crate::backend::ggml_type_bytes(t).unwrap_or(kv.elem_bytes)
                } else {
                    kv.elem_bytes
                }
            };
            let b = kv.bytes_per_token(ctx, elem(&s.type_k), elem(&s.type_v));
            metrics.insert(
                "decode_kv_bytes_per_token".into(),
                single(
                    "bytes",
                    b,
                    Some(format!("K and V read per token at mean context {ctx}")),
                ),
            );
            (b, format!("weights + KV cache ({:.2} MiB/token at mean context {ctx}) read once per token", b / 1048576.0))
        }
        None => (
            0.0,
            "weights read once per token; the KV cache's shape is unknown".to_string(),
        ),
    };
    let bytes = record.model.size_bytes as f64 + kv_bytes;
    let (gbs, share) = crate::probe::bandwidth::decode_share(bytes, decode, &roof);
    metrics.insert(
        "decode_bandwidth_gbs".into(),
        single("GB/s", gbs, Some(note.clone())),
    );
    metrics.insert(
        "decode_bandwidth_share".into(),
        single("fraction", share, Some(note)),
    );
}

/// The probes' summary as metrics: memory peaks (sampled), the model's mapped and resident
/// bytes, energy per phase and per token, temperature. Only what was measured appears.
fn probe_metrics(p: &crate::probe::ProbeSummary, metrics: &mut BTreeMap<String, Metric>) {
    let sampled = Some(format!("sampled every {} ms", p.period_ms));
    let mut put = |name: &str, unit: &str, x: Option<f64>, note: Option<String>| {
        if let Some(x) = x {
            metrics.insert(name.into(), single(unit, x, note));
        }
    };
    let bytes = |b: Option<u64>| b.map(|b| b as f64);
    put(
        "pss_peak_bytes",
        "bytes",
        bytes(p.pss_peak_bytes),
        sampled.clone(),
    );
    put(
        "rss_anon_peak_bytes",
        "bytes",
        bytes(p.rss_anon_peak_bytes),
        sampled.clone(),
    );
    put(
        "rss_file_peak_bytes",
        "bytes",
        bytes(p.rss_file_peak_bytes),
        sampled,
    );
    // Per phase: the load (shared by the cases of one load), prefill, decode.
    for (phase, m) in [
        ("load", p.memory.load),
        ("prefill", p.memory.prefill),
        ("decode", p.memory.decode),
    ] {
        let Some(m) = m else { continue };
        let note = Some(format!(
            "{} snapshots, every {} ms",
            m.snapshots, p.period_ms
        ));
        put(
            &format!("{phase}_rss_peak_bytes"),
            "bytes",
            bytes(m.rss_peak_bytes),
            note.clone(),
        );
        put(
            &format!("{phase}_pss_peak_bytes"),
            "bytes",
            bytes(m.pss_peak_bytes),
            note,
        );
    }
    if let Some(l) = &p.load {
        put(
            "load_energy_j",
            "J",
            l.joules,
            Some(p.energy_sources.join(" + ")),
        );
    }
    put(
        "model_mapped_bytes",
        "bytes",
        bytes(p.model_mapped_bytes),
        None,
    );
    put(
        "model_resident_bytes",
        "bytes",
        bytes(p.model_resident_bytes),
        Some("pages of the mapped model file resident at the end of the case".into()),
    );
    let source = Some(p.energy_sources.join(" + "));
    if let Some(e) = &p.prefill {
        put("prefill_power_w", "W", Some(e.watts), source.clone());
        put(
            "prefill_j_per_token",
            "J",
            Some(e.joules_per_token),
            source.clone(),
        );
    }
    if let Some(e) = &p.decode {
        put("decode_power_w", "W", Some(e.watts), source.clone());
        put(
            "decode_j_per_token",
            "J",
            Some(e.joules_per_token),
            source.clone(),
        );
    }
    put("tokens_per_joule", "tok/J", p.tokens_per_joule, source);
    put("temp_max_c", "°C", p.temp_max_c, None);
    if let Some(c) = &p.cooldown {
        let note = format!(
            "--cooldown: {:.1} → {:.1} °C, target {:.1} °C{}",
            c.from_c,
            c.to_c,
            c.target_c,
            match (&c.unreadable_zone, c.reached) {
                (Some(z), _) => format!(" (zone `{z}` unreadable: not known to be reached)"),
                (None, false) => " (not reached: measured warm)".into(),
                (None, true) => String::new(),
            }
        );
        put("cooldown_wait_s", "s", Some(c.waited_s), Some(note));
    }
    if !p.throttling.is_empty() {
        put(
            "throttled",
            "flag",
            Some(1.0),
            Some(p.throttling.join("; ")),
        );
    }
}

fn single(unit: &str, x: f64, note: Option<String>) -> Metric {
    Metric {
        unit: unit.into(),
        estimate: x,
        lower: None,
        upper: None,
        n: 1,
        note,
    }
}

/// Percentile `p` of the per-token latencies pooled over samples, with a CI from resampling
/// whole samples (tokens of one sample are not independent).
fn pooled_percentile(per_sample: &[Vec<f64>], p: f64, config: &AnalysisConfig) -> Metric {
    let pooled: Vec<f64> = per_sample.iter().flatten().copied().collect();
    let point = stats::percentile(&pooled, p);
    let (mut lower, mut upper) = (None, None);
    if per_sample.len() >= 2 {
        let n_res = config.nresamples.min(1_000);
        let mut rng = Rng::new(0x0069_746c);
        let mut dist = Vec::with_capacity(n_res);
        let mut buf = Vec::with_capacity(pooled.len());
        for _ in 0..n_res {
            buf.clear();
            for _ in 0..per_sample.len() {
                buf.extend_from_slice(&per_sample[rng.below(per_sample.len())]);
            }
            dist.push(stats::percentile(&buf, p));
        }
        dist.sort_unstable_by(|a, b| a.total_cmp(b));
        let cl = config.confidence_level;
        lower = Some(stats::percentile_sorted(&dist, 50.0 * (1.0 - cl)));
        upper = Some(stats::percentile_sorted(&dist, 50.0 * (1.0 + cl)));
    }
    Metric {
        unit: "ms".into(),
        estimate: point,
        lower,
        upper,
        n: pooled.len(),
        note: Some(format!(
            "p{p} of per-token decode latency, pooled over samples"
        )),
    }
}

/// Analyses one case and writes its criterion files. A baseline problem is returned beside
/// the summary: the case's own results are complete either way.
pub fn analyze(
    record: &CaseRecord,
    config: &AnalysisConfig,
    criterion_dir: &Path,
    mode: &BaselineMode,
) -> (CaseSummary, Option<ReportError>) {
    let w = &record.workload;
    let times: Vec<f64> = record.samples.iter().map(|m| m.ns as f64).collect();
    let rate = |tokens: usize, ns: u64| tokens as f64 / (ns.max(1) as f64 / 1e9);
    let mut metrics = BTreeMap::new();
    let tok_s: Vec<f64> = record
        .samples
        .iter()
        .map(|m| rate(w.tokens(), m.ns))
        .collect();
    metrics.insert("tokens_per_second".into(), metric("tok/s", &tok_s, config));
    if w.prefill > 0 {
        let xs: Vec<f64> = record
            .samples
            .iter()
            .map(|m| rate(w.prefill, m.prefill_ns))
            .collect();
        metrics.insert(
            "prefill_tokens_per_second".into(),
            metric("tok/s", &xs, config),
        );
    }
    if w.decode > 0 {
        let xs: Vec<f64> = record
            .samples
            .iter()
            .map(|m| rate(w.decode, m.decode_ns))
            .collect();
        metrics.insert(
            "decode_tokens_per_second".into(),
            metric("tok/s", &xs, config),
        );
        let per_sample: Vec<Vec<f64>> = record
            .samples
            .iter()
            .map(|m| m.token_ns.iter().map(|&ns| ns as f64 / 1e6).collect())
            .collect();
        for p in [50.0, 90.0, 99.0] {
            metrics.insert(
                format!("itl_p{p}_ms"),
                pooled_percentile(&per_sample, p, config),
            );
        }
    }
    let ttft: Vec<f64> = record
        .samples
        .iter()
        .filter_map(|m| m.ttft_ns.map(|ns| ns as f64 / 1e6))
        .collect();
    if !ttft.is_empty() {
        metrics.insert("ttft_ms".into(), metric("ms", &ttft, config));
    }
    metrics.insert(
        "load_ms".into(),
        single(
            "ms",
            record.load.as_secs_f64() * 1e3,
            Some("model load, shared by the cases that use the same weights".into()),
        ),
    );
    metrics.insert(
        "context_ms".into(),
        single("ms", record.context.as_secs_f64() * 1e3, None),
    );
    if let Some(peak) = record.peak_rss_bytes {
        let note = (!record.peak_rss_per_case).then(|| {
            "process-wide peak: /proc/self/clear_refs could not reset VmHWM per case".to_string()
        });
        metrics.insert("peak_rss_bytes".into(), single("bytes", peak as f64, note));
    }
    if let Some(p) = &record.probes {
        probe_metrics(p, &mut metrics);
        roofline_metrics(p, record, &mut metrics);
    }

    let estimates = stats::estimates(&times, config);
    let (comparison, problem) = match criterion_format::write_benchmark(
        criterion_dir,
        &record.id,
        &times,
        &estimates,
        mode,
        config,
    ) {
        Ok(c) => (c, None),
        Err(e) => (None, Some(e)),
    };
    let problem = problem.or_else(|| {
        criterion_format::write_metrics(criterion_dir, &record.id, &metrics, mode).err()
    });
    let summary = CaseSummary {
        id: record.id.full_id.clone(),
        group: record.id.group_id.clone(),
        function: record.id.function_id.clone().unwrap_or_default(),
        value: record.id.value_str.clone().unwrap_or_default(),
        backend: record.backend.clone(),
        backend_version: record.backend_version.clone(),
        model: record.model.clone(),
        model_info: record.model_info.clone(),
        params: record.params.clone(),
        workload: record.workload,
        samples: record.samples.len(),
        stop_reason: record.stop_reason,
        metrics,
        outliers: stats::classify_outliers(&times),
        sustained: (record.stop_reason == StopReason::Sustained)
            .then(|| crate::sustained::summarize(w, &record.samples, record.probes.as_ref()))
            .flatten(),
        comparison: comparison.map(|result| BaselineComparison {
            baseline: mode.compare_with().unwrap_or_default().to_string(),
            result,
        }),
        criterion_dir: criterion_format::case_dir(criterion_dir, &record.id),
    };
    (summary, problem)
}

fn human_bytes(b: f64) -> String {
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.2} MiB", b / (1u64 << 20) as f64)
    }
}

fn human_count(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else {
        format!("{:.2} K", n / 1e3)
    }
}

fn plus_minus(m: &Metric) -> String {
    match (m.lower, m.upper) {
        (Some(lo), Some(hi)) => format!("{:.2} ± {:.2}", m.estimate, (hi - lo) / 2.0),
        _ => format!("{:.2}", m.estimate),
    }
}

/// The llama-bench-like markdown table, with melt's extra columns. `t/s` is the mean over
/// samples ± the half-width of its 95% CI (llama-bench prints ± one standard deviation).
/// The device a case ran on, from the ` @DEVICE` its id ends with.
pub fn device_of(c: &CaseSummary) -> Option<&str> {
    c.value.rsplit_once(" @").map(|(_, d)| d)
}

pub fn table(cases: &[CaseSummary]) -> String {
    // Cases from devices carry ` @DEVICE` in their value; then a first column says where each
    // case ran ("host" for the rest).
    let with_device = cases.iter().any(|c| device_of(c).is_some());
    let mut out = String::new();
    if with_device {
        out.push_str("| device ");
    }
    // J/token only where an energy source was read: most machines have none, and a column
    // of dashes says nothing.
    let energy = cases.iter().any(|c| {
        c.metrics.contains_key("prefill_j_per_token")
            || c.metrics.contains_key("decode_j_per_token")
    });
    out.push_str(
        "| model | size | params | backend | threads | test | t/s | n | TTFT ms | ITL p50/p99 ms | peak RSS |",
    );
    out.push_str(if energy {
        " J/token pp / tg | change |\n"
    } else {
        " change |\n"
    });
    if with_device {
        out.push_str("| --- ");
    }
    out.push_str("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    out.push_str(if energy {
        " ---: | --- |\n"
    } else {
        " --- |\n"
    });
    for c in cases {
        if with_device {
            out.push_str(&format!("| {} ", device_of(c).unwrap_or("host")));
        }
        let get = |k: &str| c.metrics.get(k);
        let tps = get("tokens_per_second").map(plus_minus).unwrap_or_default();
        let ttft = get("ttft_ms")
            .map(|m| format!("{:.1}", m.estimate))
            .unwrap_or("-".into());
        let itl = match (get("itl_p50_ms"), get("itl_p99_ms")) {
            (Some(a), Some(b)) => format!("{:.2} / {:.2}", a.estimate, b.estimate),
            _ => "-".into(),
        };
        let rss = get("peak_rss_bytes")
            .map(|m| human_bytes(m.estimate))
            .unwrap_or("-".into());
        let change = match &c.comparison {
            Some(cmp) => {
                // Criterion compares times; show the change in throughput, as criterion does.
                let thrpt = 1.0 / (1.0 + cmp.result.change.mean.point_estimate) - 1.0;
                let word = match cmp.result.verdict {
                    stats::Verdict::Improved => "improved",
                    stats::Verdict::Regressed => "regressed",
                    stats::Verdict::WithinNoise => "within noise",
                    stats::Verdict::NoChange => "no change",
                };
                format!(
                    "{:+.2}% {word} (p={:.2})",
                    thrpt * 100.0,
                    cmp.result.p_value
                )
            }
            None => "-".into(),
        };
        let joules = |k: &str| get(k).map_or("-".into(), |m| format!("{:.3}", m.estimate));
        let energy_cell = if energy {
            format!(
                " {} / {} |",
                joules("prefill_j_per_token"),
                joules("decode_j_per_token")
            )
        } else {
            String::new()
        };
        let desc = if c.model_info.description.is_empty() {
            c.model.name.clone()
        } else {
            c.model_info.description.clone()
        };
        out.push_str(&format!(
            "| {desc} | {} | {} | {} | {} | {} | {tps} | {} | {ttft} | {itl} | {rss} |{energy_cell} {change} |\n",
            human_bytes(c.model_info.size_bytes as f64),
            human_count(c.model_info.n_params),
            c.backend,
            c.params.session.threads,
            c.function,
            c.samples,
        ));
    }
    out
}

/// What the probes found, under the table: the sources read and, plainly, the ones missing
/// and why; then memory by phase for every case that has it.
pub fn probes_section(summary: &Summary) -> String {
    let Some(o) = &summary.probes else {
        return String::new();
    };
    let mut out = format!("\nProbes (sampled every {} ms):\n", o.period_ms);
    if o.energy_sources.is_empty() {
        out.push_str("- energy: none readable here\n");
    } else {
        out.push_str(&format!("- energy: {}\n", o.energy_sources.join(" + ")));
    }
    for a in &o.assumptions {
        out.push_str(&format!("- assumed: {a}\n"));
    }
    for u in &o.unavailable {
        out.push_str(&format!("- unavailable: {u}\n"));
    }
    let rows: Vec<&CaseSummary> = summary
        .cases
        .iter()
        .filter(|c| {
            c.metrics.contains_key("load_rss_peak_bytes")
                || c.metrics.contains_key("decode_rss_peak_bytes")
                || c.metrics.contains_key("prefill_rss_peak_bytes")
        })
        .collect();
    if rows.is_empty() {
        return out;
    }
    out.push_str("\nMemory by phase (peak RSS sampled; PSS at most once a second):\n\n");
    out.push_str("| model | backend | test | load | prefill | decode | PSS peak | model file mapped / resident |\n");
    out.push_str("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
    for c in rows {
        let bytes = |k: &str| {
            c.metrics
                .get(k)
                .map_or("-".to_string(), |m| human_bytes(m.estimate))
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} |\n",
            c.model.name,
            c.backend,
            c.function,
            bytes("load_rss_peak_bytes"),
            bytes("prefill_rss_peak_bytes"),
            bytes("decode_rss_peak_bytes"),
            bytes("pss_peak_bytes"),
            bytes("model_mapped_bytes"),
            bytes("model_resident_bytes"),
        ));
    }
    out
}

/// Sustained cases over time: one line each, then their windows (throughput, power,
/// temperature), thinned to a dozen rows for the terminal (`summary.json` has them all).
pub fn sustained_section(cases: &[CaseSummary]) -> String {
    let mut out = String::new();
    for c in cases {
        let Some(s) = &c.sustained else { continue };
        out.push_str(&format!(
            "\nSustained {} ({}): {}\n\n| t (s) | tok/s | W | °C |\n| ---: | ---: | ---: | ---: |\n",
            c.function,
            c.value,
            s.line()
        ));
        let step = s.windows.len().div_ceil(12).max(1);
        for w in s.windows.iter().step_by(step) {
            let opt = |x: Option<f64>, d: usize| x.map_or("-".into(), |x| format!("{x:.d$}"));
            out.push_str(&format!(
                "| {:.0} | {:.2} | {} | {} |\n",
                w.t_s,
                w.tok_s,
                opt(w.watts, 2),
                opt(w.temp_c, 1)
            ));
        }
    }
    out
}
