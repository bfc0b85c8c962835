//! The tasks' part of the stdout report: replays (per conversation, and the drift of a long
//! one), perplexities, multiple-choice accuracies, and — when a run covers the same model at
//! several quantizations — what each costs: size, memory, speed, energy, perplexity and
//! accuracy side by side.

use std::collections::BTreeMap;

use crate::store::Summary;
use crate::tasks::replay::Replay;
use crate::tasks::{TaskRecord, TaskResult};

fn median(xs: &mut [f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("-".into(), |x| format!("{x:.digits$}"))
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| {
        format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
    })
}

/// Median TTFT (ms), prefill and decode tok/s over `turns`.
fn turn_medians(turns: &[&crate::tasks::replay::Turn]) -> (Option<f64>, Option<f64>, Option<f64>) {
    let mut ttft: Vec<f64> = turns.iter().map(|t| t.ttft_ns as f64 / 1e6).collect();
    let mut pp: Vec<f64> = turns.iter().map(|t| t.prefill_tok_s).collect();
    let mut tg: Vec<f64> = turns
        .iter()
        .filter(|t| t.output_tokens > 0)
        .map(|t| t.decode_tok_s)
        .collect();
    (median(&mut ttft), median(&mut pp), median(&mut tg))
}

/// The model as the task tables name it: with the settings that change what it computes
/// (`gemma (accuracy_level=1)`), so the rows of a swept setting tell apart.
pub fn model_label(t: &TaskRecord) -> String {
    let numerics = t.params.numerics();
    match numerics.is_empty() {
        true => t.model.name.clone(),
        false => format!("{} ({})", t.model.name, numerics.join(", ")),
    }
}

fn replay_section(t: &TaskRecord, r: &Replay) -> String {
    let all: Vec<_> = r.turns.iter().collect();
    let (ttft, pp, tg) = turn_medians(&all);
    let mut out = format!(
        "\nReplay {} — {} ({}): {} conversations, {} turns; template: {}; n_ctx {}, {}; think {} s, gap {} s\n\
         median TTFT {} ms, prefill {} tok/s, decode {} tok/s\n\n\
         | conv | turns | in tok | out tok | TTFT p50 ms | decode tok/s p50 | busy s | wall s | peak mem | J | max °C |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        r.file,
        model_label(t),
        t.backend,
        r.conversations.len(),
        r.turns.len(),
        r.template,
        r.n_ctx,
        match r.fixed_output {
            Some(n) => format!("answers of exactly {n} tokens"),
            None => format!("answers up to {} tokens", r.max_output),
        },
        r.think_time_s,
        r.conversation_gap_s,
        opt(ttft, 0),
        opt(pp, 1),
        opt(tg, 1),
    );
    // A long replay prints a thinned table; summary.json has every row.
    let step = r.conversations.len().div_ceil(20).max(1);
    for c in r.conversations.iter().step_by(step) {
        let turns: Vec<_> = r
            .turns
            .iter()
            .filter(|x| x.conversation == c.conversation)
            .collect();
        let (ttft, _, tg) = turn_medians(&turns);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {} | {} | {} |\n",
            c.conversation,
            c.turns,
            c.input_tokens,
            c.output_tokens,
            opt(ttft, 0),
            opt(tg, 1),
            c.busy_s,
            c.wall_s,
            mib(c.peak_rss_bytes),
            opt(c.energy_j, 1),
            opt(c.temp_max_c, 1)
        ));
    }
    // One long conversation (the sustained run): how the turns drift.
    if r.conversations.len() == 1 && r.turns.len() >= 8 {
        let q = r.turns.len() / 4;
        let (first, last): (Vec<_>, Vec<_>) = (
            r.turns[..q].iter().collect(),
            r.turns[r.turns.len() - q..].iter().collect(),
        );
        let (_, _, tg0) = turn_medians(&first);
        let (_, _, tg1) = turn_medians(&last);
        let mean = |xs: &[&crate::tasks::replay::Turn],
                    f: fn(&crate::tasks::replay::Turn) -> Option<f64>| {
            let v: Vec<f64> = xs.iter().filter_map(|t| f(t)).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        out.push_str(&format!(
            "\nDrift over the conversation (first quarter → last quarter of turns): decode {} → {} tok/s, power {} → {} W, temperature {} → {} °C\n",
            opt(tg0, 1),
            opt(tg1, 1),
            opt(mean(&first, |t| t.power_w), 2),
            opt(mean(&last, |t| t.power_w), 2),
            opt(mean(&first, |t| t.temp_c), 1),
            opt(mean(&last, |t| t.temp_c), 1),
        ));
    }
    out
}

/// The tasks' sections, empty when the run had none.
pub fn section(summary: &Summary) -> String {
    let mut out = String::new();
    for t in &summary.tasks {
        if let TaskResult::Replay(r) = &t.result {
            out.push_str(&replay_section(t, r));
        }
    }
    let ppl: Vec<_> = summary
        .tasks
        .iter()
        .filter_map(|t| match &t.result {
            TaskResult::Perplexity(p) => Some((t, p)),
            _ => None,
        })
        .collect();
    if !ppl.is_empty() {
        out.push_str(
            "\nPerplexity (llama-perplexity's method: chunks of n_ctx, second halves scored)\n\n\
             | model | backend | file | n_ctx | chunks | tokens scored | PPL | ± | eval tok/s |\n\
             | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for (t, p) in ppl {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {:.4} | {:.5} | {:.1} |\n",
                model_label(t),
                t.backend,
                crate::tasks::file_name(std::path::Path::new(&p.file)),
                p.n_ctx,
                p.chunks,
                p.tokens_scored,
                p.ppl,
                p.ppl_stderr,
                p.eval_tokens_per_s
            ));
        }
    }
    out.push_str(&kl_divergence_section(summary));
    let mc: Vec<_> = summary
        .tasks
        .iter()
        .filter_map(|t| match &t.result {
            TaskResult::MultipleChoice(c) => Some((t, c)),
            _ => None,
        })
        .collect();
    if !mc.is_empty() {
        out.push_str(
            "\nMultiple choice (log-likelihood, as lm-evaluation-harness)\n\n\
             | model | backend | task | n | acc | ± | acc_norm | ± | s |\n\
             | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for (t, c) in mc {
            let a = &c.accuracy;
            out.push_str(&format!(
                "| {} | {} | {} | {}{} | {:.4} | {:.4} | {:.4} | {:.4} | {:.0} |\n",
                model_label(t),
                t.backend,
                c.task,
                a.n,
                if a.n < c.questions_in_file {
                    format!(" of {}", c.questions_in_file)
                } else {
                    String::new()
                },
                a.acc,
                a.acc_stderr,
                a.acc_norm,
                a.acc_norm_stderr,
                c.seconds
            ));
        }
    }
    out.push_str(&quantization_section(summary));
    out
}

fn kl_divergence_section(summary: &Summary) -> String {
    let kld: Vec<_> = summary
        .tasks
        .iter()
        .filter_map(|t| match &t.result {
            TaskResult::KlDivergence(k) => Some((t, k)),
            _ => None,
        })
        .collect();
    if kld.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\nKL-divergence from the reference (llama-perplexity's method; nats per token)\n\n\
         | model | backend | reference | chunks × n_ctx | mean KLD | ± | median | p90 | p99 | max | same top % | Δp mean % | Δp RMS % | PPL / PPL(ref) |\n\
         | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (t, k) in kld {
        out.push_str(&format!(
            "| {} | {} | {} | {} × {} | {:.6} | {:.6} | {:.6} | {:.6} | {:.6} | {:.4} | {:.2} ± {:.2} | {:.3} ± {:.3} | {:.3} ± {:.3} | {:.4} ± {:.4} |\n",
            model_label(t),
            t.backend,
            k.base,
            k.chunks,
            k.n_ctx,
            k.kld.mean,
            k.kld.stderr,
            k.kld_median,
            k.kld_p90,
            k.kld_p99,
            k.kld_max,
            100.0 * k.same_top.mean,
            100.0 * k.same_top.stderr,
            100.0 * k.delta_p.mean,
            100.0 * k.delta_p.stderr,
            100.0 * k.delta_p_rms.mean,
            100.0 * k.delta_p_rms.stderr,
            k.ln_ppl_ratio.mean.exp(),
            k.ln_ppl_ratio.mean.exp() * k.ln_ppl_ratio.stderr,
        ));
    }
    out
}

/// One row of the quantization comparison: a model file on one backend.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantRow {
    pub model: String,
    pub backend: String,
    pub quantization: String,
    pub size_bytes: u64,
    /// Peak resident memory while decoding (the tg case); the tasks' peak when there is none.
    pub peak_rss_bytes: Option<u64>,
    /// The tasks' own peak: scoring holds logits for every position (perplexity's 512 rows
    /// of a 262k vocabulary are 0.5 GiB), so it says little about the model's footprint.
    pub task_peak_rss_bytes: Option<u64>,
    pub pp_tok_s: Option<f64>,
    pub tg_tok_s: Option<f64>,
    pub decode_j_per_token: Option<f64>,
    pub ppl: Option<(f64, f64)>,
    /// Mean KL-divergence from the reference, ± its standard error.
    pub kld: Option<(f64, f64)>,
    /// Fraction of positions whose top token is the reference's.
    pub same_top: Option<f64>,
    /// Task name → (acc, stderr).
    pub acc: BTreeMap<String, (f64, f64)>,
}

/// The rows for "what does quantization cost?": every model × backend of the run with a
/// task result, with the case metrics of the same model and backend (prefill-only and
/// decode-only workloads without depth, at the tasks' point — the sweep's last with the same
/// [`numerics`](melt_core::Params::numerics); peak memory is the decode case's).
pub fn quantization_rows(summary: &Summary) -> Vec<QuantRow> {
    let mut rows: BTreeMap<(String, String, Vec<String>), QuantRow> = BTreeMap::new();
    for t in &summary.tasks {
        // One row per setting that changes what is computed (`accuracy_level=1`, ...).
        let numerics = t.params.numerics();
        let row = rows
            .entry((t.model.name.clone(), t.backend.clone(), numerics.clone()))
            .or_insert_with(|| QuantRow {
                model: model_label(t),
                backend: t.backend.clone(),
                quantization: t.model_info.quantization.clone(),
                size_bytes: t.model.size_bytes,
                ..QuantRow::default()
            });
        row.task_peak_rss_bytes = row.task_peak_rss_bytes.max(t.peak_rss_bytes);
        match &t.result {
            TaskResult::Perplexity(p) => row.ppl = Some((p.ppl, p.ppl_stderr)),
            TaskResult::MultipleChoice(c) => {
                row.acc
                    .insert(c.task.clone(), (c.accuracy.acc, c.accuracy.acc_stderr));
            }
            TaskResult::KlDivergence(k) => {
                row.kld = Some((k.kld.mean, k.kld.stderr));
                row.same_top = Some(k.same_top.mean);
            }
            TaskResult::Replay(_) => {}
        }
        let point = &t.params.session;
        for c in &summary.cases {
            if c.model.name != t.model.name
                || c.backend != t.backend
                || c.workload.depth > 0
                || c.params.session.threads != point.threads
                || c.params.numerics() != numerics
            {
                continue;
            }
            let m = |k: &str| c.metrics.get(k).map(|m| m.estimate);
            let w = c.workload;
            if w.decode == 0 && w.prefill > 0 {
                row.pp_tok_s = m("tokens_per_second");
            }
            if w.prefill == 0 && w.decode > 0 {
                row.tg_tok_s = m("tokens_per_second");
                row.decode_j_per_token = m("decode_j_per_token");
                row.peak_rss_bytes = c.metrics.get("peak_rss_bytes").map(|m| m.estimate as u64);
            }
        }
    }
    // Without a decode case, the tasks' peak (which includes their logits buffers).
    for row in rows.values_mut() {
        row.peak_rss_bytes = row.peak_rss_bytes.or(row.task_peak_rss_bytes);
    }
    rows.into_values().collect()
}

fn quantization_section(summary: &Summary) -> String {
    let rows = quantization_rows(summary);
    // Only a comparison when there is something to compare.
    let models: std::collections::BTreeSet<_> = rows.iter().map(|r| &r.model).collect();
    if models.len() < 2 {
        return String::new();
    }
    let tasks: std::collections::BTreeSet<String> =
        rows.iter().flat_map(|r| r.acc.keys().cloned()).collect();
    let mut out = String::from("\nWhat does quantization cost? (same run, side by side)\n\n| model | backend | quant | size | peak mem (tg) | pp tok/s | tg tok/s | J/token | PPL | KLD | same top % |");
    for t in &tasks {
        out.push_str(&format!(" {t} acc |"));
    }
    out.push_str("\n| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for _ in &tasks {
        out.push_str(" ---: |");
    }
    out.push('\n');
    for r in &rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.model,
            r.backend,
            r.quantization,
            mib(Some(r.size_bytes)),
            mib(r.peak_rss_bytes),
            opt(r.pp_tok_s, 1),
            opt(r.tg_tok_s, 1),
            opt(r.decode_j_per_token, 4),
            r.ppl
                .map_or("-".into(), |(p, e)| format!("{p:.3} ± {e:.3}")),
            r.kld
                .map_or("-".into(), |(k, e)| format!("{k:.5} ± {e:.5}")),
            opt(r.same_top.map(|s| 100.0 * s), 2),
        ));
        for t in &tasks {
            out.push_str(&match r.acc.get(t) {
                Some((a, e)) => format!(" {a:.3} ± {e:.3} |"),
                None => " - |".into(),
            });
        }
        out.push('\n');
    }
    out
}
