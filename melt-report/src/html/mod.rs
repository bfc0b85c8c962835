//! The HTML report, `target/melt/report/index.html`: one self-contained page (inline CSS,
//! plots as SVG `data:` images, no script or font from anywhere else) that opens offline on a
//! laptop or a phone.
//!
//! Per model: a comparison chart of every case's tok/s with its 95% CI, and the table with the
//! change against the baseline. Per case: the distribution of tok/s over samples (a violin —
//! a mirrored kernel density — with each sample, the mean and its CI) and, for decode
//! workloads, the per-token latency over the decode (median over samples, min–max band).
//!
//! The plots come from `plot`, melt's own small SVG kit.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use melt_bench::store::{CaseSummary, Summary};
use melt_bench::tasks::report::QuantRow;
use melt_bench::workload::Measured;

mod paired;
mod plot;
mod trends;

pub use paired::paired_page;
pub use trends::trends_page;

use plot::*;

/// A page's head and the opening of its body: inline CSS (`extra_css` after melt's own),
/// nothing loaded from elsewhere.
pub(crate) fn page_head(title: &str, extra_css: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>\
         body{{font-family:sans-serif;margin:1.5em;color:#222;max-width:1100px}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 7px;font-size:13px}}\
         td.n{{text-align:right}}.case{{border-top:1px solid #ddd;margin-top:1.2em;padding-top:.4em}}\
         .regressed{{color:#b30000;font-weight:bold}}.improved{{color:#006d2c;font-weight:bold}}\
         img{{max-width:100%;display:block;margin:.3em 0}}{extra_css}</style></head><body>",
        esc(title)
    )
}

/// The whole page for `summaries` (one or more runs) and their samples by case id.
pub fn render(summaries: &[Summary], samples: &BTreeMap<String, Vec<Measured>>) -> String {
    render_with_probes(summaries, samples, &BTreeMap::new())
}

/// The run's tasks: each replay's turns over time, the perplexity and accuracy tables, and
/// the quantization comparison with its accuracy-against-memory plots.
fn tasks_html(s: &Summary) -> String {
    use melt_bench::tasks::TaskResult;
    let mut html = String::new();
    if s.tasks.is_empty() {
        return html;
    }
    html.push_str("<h2>Tasks</h2>");
    for t in &s.tasks {
        match &t.result {
            TaskResult::Replay(r) => {
                let _ = write!(
                    html,
                    "<div class=\"case\"><h3>replay {} — {} ({})</h3><p>{} conversations, {} turns; template {}.</p>",
                    esc(&r.file),
                    esc(&melt_bench::tasks::report::model_label(t)),
                    esc(&t.backend),
                    r.conversations.len(),
                    r.turns.len(),
                    esc(&r.template)
                );
                let at =
                    |f: &dyn Fn(&melt_bench::tasks::replay::Turn) -> Option<f64>| -> Vec<(f64, f64)> {
                        r.turns
                            .iter()
                            .filter_map(|x| Some((x.start_s, f(x)?)))
                            .collect()
                    };
                let plots = [
                    (
                        "time to first token",
                        "ms",
                        at(&|x| Some(x.ttft_ns as f64 / 1e6)),
                    ),
                    (
                        "decode",
                        "tok/s",
                        at(&|x| (x.output_tokens > 0).then_some(x.decode_tok_s)),
                    ),
                    ("power", "W", at(&|x| x.power_w)),
                    ("hottest zone", "°C", at(&|x| x.temp_c)),
                ];
                for (title, unit, points) in plots {
                    if let Some(svg) = series_plot(title, unit, &[(title, "#3182bd", points)]) {
                        html.push_str(&img(&svg, &format!("{title} per turn of {}", t.id)));
                    }
                }
                html.push_str("</div>");
            }
            TaskResult::Perplexity(p) => {
                let _ = write!(
                    html,
                    "<p>Perplexity of <code>{}</code> — {} ({}): <b>{:.4} ± {:.5}</b> over {} chunks of {} ({} tokens scored), {:.1} tok/s.</p>",
                    esc(&p.file),
                    esc(&melt_bench::tasks::report::model_label(t)),
                    esc(&t.backend),
                    p.ppl,
                    p.ppl_stderr,
                    p.chunks,
                    p.n_ctx,
                    p.tokens_scored,
                    p.eval_tokens_per_s
                );
            }
            TaskResult::KlDivergence(k) => {
                let _ = write!(
                    html,
                    "<p>KL-divergence of {} ({}) from <code>{}</code>: <b>{:.6} ± {:.6}</b> nats per token (median {:.6}, p99 {:.6}, max {:.4}), same top token {:.2}%, Δp RMS {:.3}%, over {} chunks of {} ({} tokens scored).</p>",
                    esc(&melt_bench::tasks::report::model_label(t)),
                    esc(&t.backend),
                    esc(&k.base),
                    k.kld.mean,
                    k.kld.stderr,
                    k.kld_median,
                    k.kld_p99,
                    k.kld_max,
                    100.0 * k.same_top.mean,
                    100.0 * k.delta_p_rms.mean,
                    k.chunks,
                    k.n_ctx,
                    k.tokens_scored
                );
            }
            TaskResult::MultipleChoice(c) => {
                let a = &c.accuracy;
                let _ = write!(
                    html,
                    "<p>{} — {} ({}): acc <b>{:.4} ± {:.4}</b>, acc_norm {:.4} ± {:.4}, n = {} of {}.</p>",
                    esc(&c.task),
                    esc(&melt_bench::tasks::report::model_label(t)),
                    esc(&t.backend),
                    a.acc,
                    a.acc_stderr,
                    a.acc_norm,
                    a.acc_norm_stderr,
                    a.n,
                    c.questions_in_file
                );
            }
        }
    }
    let rows = melt_bench::tasks::report::quantization_rows(s);
    if rows.len() >= 2 {
        html.push_str("<h3>What does quantization cost?</h3><table><tr><th>model</th><th>backend</th><th>quant</th><th>size MiB</th><th>peak MiB</th><th>pp tok/s</th><th>tg tok/s</th><th>J/token</th><th>PPL</th><th>KLD</th><th>same top %</th><th>accuracy</th></tr>");
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        let opt = |x: Option<f64>, d: usize| x.map_or("-".to_string(), |x| format!("{x:.d$}"));
        for r in &rows {
            let acc: Vec<String> = r
                .acc
                .iter()
                .map(|(k, (a, e))| format!("{k} {a:.3} ± {e:.3}"))
                .collect();
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{:.0}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                esc(&r.model),
                esc(&r.backend),
                esc(&r.quantization),
                mib(r.size_bytes),
                opt(r.peak_rss_bytes.map(mib), 0),
                opt(r.pp_tok_s, 1),
                opt(r.tg_tok_s, 1),
                opt(r.decode_j_per_token, 4),
                r.ppl.map_or("-".into(), |(p, e)| format!("{p:.3} ± {e:.3}")),
                r.kld.map_or("-".into(), |(k, e)| format!("{k:.5} ± {e:.5}")),
                opt(r.same_top.map(|s| 100.0 * s), 2),
                esc(&acc.join("; "))
            );
        }
        html.push_str("</table>");
        html.push_str(&pareto_plots(&rows));
        let tasks: std::collections::BTreeSet<&String> =
            rows.iter().flat_map(|r| r.acc.keys()).collect();
        for task in tasks {
            let points: Vec<(String, f64, f64, f64)> = rows
                .iter()
                .filter_map(|r| {
                    let (a, e) = r.acc.get(task)?;
                    Some((
                        format!("{} {}", r.quantization, r.backend),
                        mib(r.peak_rss_bytes?),
                        *a,
                        *e,
                    ))
                })
                .collect();
            if let Some(svg) = accuracy_memory_plot(task, &points) {
                html.push_str(&img(&svg, &format!("{task} accuracy against peak memory")));
            }
        }
    }
    html
}

/// One of a comparison row's numbers, when it has it.
type RowMetric<'a> = &'a dyn Fn(&QuantRow) -> Option<f64>;

/// Speed and memory against KL-divergence, one point per engine × quantization that was
/// scored against the reference: which choices no other beats on both.
fn pareto_plots(rows: &[QuantRow]) -> String {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let name = |r: &QuantRow| format!("{} {}", r.quantization, r.backend);
    let axes: [(&str, &str, bool, RowMetric); 3] = [
        (
            "decode speed against KL-divergence",
            "tg tok/s",
            true,
            &|r| r.tg_tok_s,
        ),
        (
            "prefill speed against KL-divergence",
            "pp tok/s",
            true,
            &|r| r.pp_tok_s,
        ),
        (
            "peak memory against KL-divergence",
            "peak MiB",
            false,
            &|r| r.peak_rss_bytes.map(mib),
        ),
    ];
    let mut html = String::new();
    for (title, unit, higher, y) in axes {
        let points: Vec<ParetoPoint> = rows
            .iter()
            .filter_map(|r| {
                let (kld, err) = r.kld?;
                Some((name(r), kld, err, y(r)?))
            })
            .collect();
        if let Some(svg) = pareto_plot(title, unit, &points, higher) {
            html.push_str(&img(&svg, title));
        }
    }
    html
}

/// Memory, power and temperature over a case, from its probes' time series.
fn probe_plots(p: &melt_bench::probe::ProbeSummary) -> Vec<(String, &'static str)> {
    use melt_bench::probe::energy::Reading;
    let t = |s: &melt_bench::probe::Snapshot| s.t_ns as f64 / 1e9;
    let mib = |b: Option<u64>| b.map(|b| b as f64 / 1048576.0);
    let mem = |f: fn(&melt_bench::probe::MemReading) -> Option<u64>| -> Vec<(f64, f64)> {
        p.series
            .iter()
            .filter_map(|s| Some((t(s), mib(f(&s.mem))?)))
            .collect()
    };
    let mut out = Vec::new();
    if let Some(svg) = series_plot(
        "memory",
        "MiB",
        &[
            ("RSS", "#08519c", mem(|m| m.rss)),
            ("PSS", "#e6550d", mem(|m| m.pss)),
            ("RSS anon", "#31a354", mem(|m| m.rss_anon)),
        ],
    ) {
        out.push((svg, "memory over the measured runs"));
    }
    // Power: a meter's watts as read; a counter's as its rate between snapshots.
    let mut watts = Vec::new();
    for w in p.series.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let dt = (b.t_ns.saturating_sub(a.t_ns)) as f64 / 1e9;
        let mut total = 0.0;
        let mut ok = !b.energy.is_empty();
        for (ra, rb) in a.energy.iter().zip(&b.energy) {
            match (ra, rb) {
                (_, Some(Reading::Watts(x))) => total += x,
                (Some(Reading::Joules(x)), Some(Reading::Joules(y))) if dt > 0.0 => {
                    total += (y - x) / dt
                }
                _ => ok = false,
            }
        }
        if ok {
            watts.push((t(b), total));
        }
    }
    if let Some(svg) = series_plot("power", "W", &[("power", "#756bb1", watts)]) {
        out.push((svg, "power over the measured runs"));
    }
    let temps: Vec<(f64, f64)> = p
        .series
        .iter()
        .filter_map(|s| {
            Some((
                t(s),
                s.thermal
                    .temps_c
                    .iter()
                    .flatten()
                    .copied()
                    .reduce(f64::max)?,
            ))
        })
        .collect();
    if let Some(svg) = series_plot("hottest zone", "°C", &[("temperature", "#de2d26", temps)]) {
        out.push((svg, "temperature over the measured runs"));
    }
    out
}

/// [`render`], with memory/power/temperature plots for the cases whose probes ran.
pub fn render_with_probes(
    summaries: &[Summary],
    samples: &BTreeMap<String, Vec<Measured>>,
    probes: &BTreeMap<String, melt_bench::probe::ProbeSummary>,
) -> String {
    let mut html = page_head("melt report", "");
    html.push_str("<h1>melt report</h1>");
    for s in summaries {
        let _ = write!(
            html,
            "<p>Run <code>{}</code> on {} ({}, {} cores, {}). {} cases{}.</p>",
            esc(&s.run_id),
            esc(&s.host.hostname),
            esc(&s.host.cpu),
            s.host.logical_cores,
            esc(&s.host.os),
            s.cases.len(),
            if s.errors.is_empty() {
                String::new()
            } else {
                format!(", <b>{} errors</b>", s.errors.len())
            }
        );
    }
    let mut by_model: BTreeMap<&str, Vec<&CaseSummary>> = BTreeMap::new();
    for c in summaries.iter().flat_map(|s| &s.cases) {
        by_model.entry(c.group.as_str()).or_default().push(c);
    }
    for (model, cases) in by_model {
        let _ = write!(html, "<h2>{}</h2>", esc(model));
        html.push_str(&img(
            &comparison(&cases),
            &format!("tok/s by case for {model}"),
        ));
        html.push_str(
            "<table><tr><th>test</th><th>backend / params</th><th>tok/s</th><th>95% CI</th>\
             <th>n</th><th>TTFT ms</th><th>ITL p50 / p99 ms</th><th>peak RSS MiB</th><th>change</th></tr>",
        );
        for c in &cases {
            let m = |k: &str| c.metrics.get(k);
            let tps = m("tokens_per_second");
            let ci = tps
                .and_then(|t| Some(format!("{:.2} … {:.2}", t.lower?, t.upper?)))
                .unwrap_or_default();
            let change = c.comparison.as_ref().map_or(String::new(), |cmp| {
                let thrpt = 1.0 / (1.0 + cmp.result.change.mean.point_estimate) - 1.0;
                let class = format!("{:?}", cmp.result.verdict).to_lowercase();
                format!(
                    "<span class=\"{class}\">{:+.2}% {} vs {}</span>",
                    thrpt * 100.0,
                    esc(&cmp.result.verdict.to_string()),
                    esc(&cmp.baseline)
                )
            });
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{ci}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{change}</td></tr>",
                esc(&c.function),
                esc(&c.value),
                tps.map_or(String::new(), |t| format!("{:.2}", t.estimate)),
                c.samples,
                m("ttft_ms").map_or("-".into(), |t| format!("{:.1}", t.estimate)),
                match (m("itl_p50_ms"), m("itl_p99_ms")) {
                    (Some(a), Some(b)) => format!("{:.2} / {:.2}", a.estimate, b.estimate),
                    _ => "-".into(),
                },
                m("peak_rss_bytes").map_or("-".into(), |r| format!("{:.1}", r.estimate / 1048576.0)),
            );
        }
        html.push_str("</table>");
        for c in &cases {
            let _ = write!(
                html,
                "<div class=\"case\"><h3>{}</h3><p>{} · {} samples ({}) · {}</p>",
                esc(&c.id),
                esc(&c.model_info.description),
                c.samples,
                esc(c.stop_reason.as_str()),
                esc(c.backend_version.split(';').next().unwrap_or(""))
            );
            let ms = samples.get(&c.id).map(Vec::as_slice).unwrap_or(&[]);
            let tok = c.workload.tokens() as f64;
            let xs: Vec<f64> = ms
                .iter()
                .map(|m| tok / (m.ns.max(1) as f64 / 1e9))
                .collect();
            if let (false, Some(t)) = (xs.is_empty(), c.metrics.get("tokens_per_second")) {
                let ci = t.lower.zip(t.upper);
                html.push_str(&img(
                    &violin(&xs, t.estimate, ci),
                    &format!("tok/s distribution of {}", c.id),
                ));
            }
            let tokens: Vec<&[u64]> = ms.iter().map(|m| m.token_ns.as_slice()).collect();
            if let Some(svg) = latency(&tokens) {
                html.push_str(&img(&svg, &format!("per-token latency of {}", c.id)));
            }
            if let Some(s) = &c.sustained {
                let tok: Vec<(f64, f64)> = s.windows.iter().map(|w| (w.t_s, w.tok_s)).collect();
                let floor = s.initial_tok_s * (1.0 - melt_bench::sustained::DROP);
                let end = s.duration_s;
                if let Some(svg) = series_plot(
                    "throughput over time",
                    "tok/s",
                    &[
                        ("tok/s", "#08519c", tok),
                        ("start −10%", "#999999", vec![(0.0, floor), (end, floor)]),
                    ],
                ) {
                    html.push_str(&img(&svg, &format!("sustained throughput of {}", c.id)));
                }
                let _ = write!(html, "<p>sustained: {}</p>", esc(&s.line()));
            }
            if let Some(p) = probes.get(&c.id) {
                for (svg, what) in probe_plots(p) {
                    html.push_str(&img(&svg, &format!("{what} of {}", c.id)));
                }
                if !p.throttling.is_empty() {
                    let _ = write!(
                        html,
                        "<p class=\"throttled\">⚠ throttled: {}</p>",
                        esc(&p.throttling.join("; "))
                    );
                }
            }
            html.push_str("</div>");
        }
    }
    for s in summaries {
        html.push_str(&tasks_html(s));
    }
    // Lets a headless browser (the tests) confirm every plot decoded.
    html.push_str(
        "<script>window.addEventListener('load',()=>{const i=[...document.images];\
         document.body.dataset.images=i.length;\
         document.body.dataset.brokenImages=i.filter(x=>!x.complete||x.naturalWidth===0).length;});</script>\
         </body></html>",
    );
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn the_pareto_front_is_what_nothing_beats_on_both_axes() {
        // (KLD, tok/s): the f32 reference, Q4_K_M, an int4 that is slower and worse, a fast
        // lossy one, and a tie with Q4_K_M that adds nothing.
        let pts = [
            (0.0, 30.0),
            (0.004, 80.0),
            (0.01, 70.0),
            (0.05, 95.0),
            (0.004, 80.0),
        ];
        assert_eq!(
            pareto_front(&pts, 0.0, true),
            [true, true, false, true, true]
        );
        // Memory: lower is better.
        let mem = [(0.0, 1000.0), (0.004, 300.0), (0.01, 350.0)];
        assert_eq!(pareto_front(&mem, 0.0, false), [true, true, false]);
        // Two references whose KL-divergences differ by noise: the slower one is dominated,
        // however its noise happens to fall.
        let refs = [(6.1e-8, 29.7), (5.9e-8, 10.4), (0.0043, 75.7)];
        assert_eq!(pareto_front(&refs, 5e-7, true), [true, false, true]);
        assert_eq!(pareto_front(&refs, 0.0, true), [true, true, true]);
        let svg = pareto_plot(
            "speed",
            "tok/s",
            &[
                ("a".into(), 0.0, 0.0, 30.0),
                ("b".into(), 0.01, 0.001, 70.0),
            ],
            true,
        )
        .unwrap();
        assert!(svg.contains("<polyline") && svg.matches("<circle").count() == 2);
    }

    #[test]
    fn ticks_are_nice_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(61.3, 77.9, 6);
        assert!(
            t.iter().all(|&x| (61.3..=77.9).contains(&x)) && t.len() >= 3,
            "{t:?}"
        );
    }

    #[test]
    fn page_has_a_plot_per_case_and_escapes_text() {
        let mut s = melt_testkit::summaries::summary("r1", &["m/tg128/<b>x</b>"], 80.0);
        s.cases[0].group = "m".into();
        let m = Measured {
            ns: 1_600_000_000,
            decode_ns: 1_600_000_000,
            token_ns: vec![12_500_000; 128],
            ..Measured::default()
        };
        let samples: BTreeMap<_, _> = [(s.cases[0].id.clone(), vec![m.clone(), m])].into();
        let html = render(std::slice::from_ref(&s), &samples);
        // comparison + violin + latency
        assert_eq!(html.matches("<img ").count(), 3);
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;") && !html.contains("<b>x</b>"));
        assert!(html.contains("80.00"));
        // Self-contained: nothing loaded from elsewhere.
        assert!(!html.contains("src=\"http") && !html.contains("<link"));

        // Probes add memory, power and temperature plots, and a throttling warning.
        use melt_bench::probe::{energy::Reading, MemReading, ProbeSummary, Snapshot};
        let snap = |i: u64| Snapshot {
            t_ns: i * 20_000_000,
            energy: vec![Some(Reading::Joules(0.1 * i as f64))],
            thermal: melt_bench::probe::thermal::ThermalReading {
                temps_c: vec![Some(50.0 + i as f64)],
                ..Default::default()
            },
            mem: MemReading {
                rss: Some(300 << 20),
                pss: Some(280 << 20),
                ..MemReading::default()
            },
        };
        let p = ProbeSummary {
            series: (0..10).map(snap).collect(),
            throttling: vec!["cpu0 fell from 2400 to 1800 MHz".into()],
            ..ProbeSummary::default()
        };
        let probes: BTreeMap<_, _> = [(s.cases[0].id.clone(), p)].into();
        let html = render_with_probes(&[s], &samples, &probes);
        assert_eq!(
            html.matches("<img ").count(),
            6,
            "+ memory, power, temperature"
        );
        assert!(html.contains("power over the measured runs"));
        assert!(html.contains("throttled: cpu0 fell from 2400 to 1800 MHz"));
    }
}
