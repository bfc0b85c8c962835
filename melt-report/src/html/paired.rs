//! The paired gate's page, `target/melt/gate/<time>/index.html`: the verdicts, the noise
//! readings before and after, and per case every pair's values on both sides, so a reader
//! sees whether the two sides moved together (the machine) or apart (the change).

use std::fmt::Write as _;

use melt_bench::probe::noise::Noise;

use super::plot::*;
use crate::gate::paired::{PairedSummary, Verdict};

/// The whole page.
pub fn paired_page(s: &PairedSummary, lenient: bool) -> String {
    let mut html = super::page_head("melt gate", ".inconclusive{color:#a65e00;font-weight:bold}");
    let code = s.exit_code(lenient);
    let _ = write!(
        html,
        "<h1>melt {}: {} against {}</h1><p>Exit code {code}. Measured in alternation on one machine for {:.0} s; \
         intervals at {:.1}% each over {} looks ({:.0}% over all).</p>",
        if s.judged { "gate" } else { "compare" },
        esc(&s.b),
        esc(&s.a),
        s.measuring_s,
        s.design.confidence() * 100.0,
        s.design.looks().len(),
        (1.0 - s.design.significance_level) * 100.0
    );
    if let Some(why) = &s.refused {
        let _ = write!(html, "<p class=\"regressed\">No verdict: {}</p>", esc(why));
    }
    html.push_str(&noise_table(
        s.noise_before.as_ref(),
        s.noise_after.as_ref(),
    ));
    html.push_str(
        "<table><tr><th>case</th><th>metric</th><th>A</th><th>B</th><th>change</th>\
         <th>interval</th><th>pairs</th><th>verdict</th></tr>",
    );
    for c in &s.cases {
        for m in &c.metrics {
            let (class, word) = match m.verdict {
                Verdict::Pass => ("", "pass"),
                Verdict::Improved => ("improved", "improved"),
                Verdict::Regressed => ("regressed", "regressed"),
                Verdict::Inconclusive => ("inconclusive", "inconclusive"),
            };
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{:+.2}%</td><td class=\"n\">{:+.2}% … {:+.2}%</td><td class=\"n\">{}</td>\
                 <td class=\"{class}\">{}</td></tr>",
                esc(&c.case),
                esc(&m.rule.metric),
                fmt_num(m.a),
                fmt_num(m.b),
                m.change.estimate * 100.0,
                m.change.lower * 100.0,
                m.change.upper * 100.0,
                m.pairs,
                if s.judged { word } else { "-" }
            );
        }
    }
    html.push_str("</table>");
    for c in &s.cases {
        let Some(m) = c.metrics.first() else { continue };
        let side = |pick: fn(&crate::gate::paired::Pair) -> &Vec<Option<f64>>| -> Vec<(f64, f64)> {
            c.pairs
                .iter()
                .enumerate()
                .filter_map(|(i, p)| Some(((i + 1) as f64, pick(p).first().copied()??)))
                .collect()
        };
        let lines = [
            ("A", "#1f77b4", side(|p| &p.a)),
            ("B", "#d62728", side(|p| &p.b)),
        ];
        if let Some(svg) = series_plot_x(
            &format!("{} per pair", m.rule.metric),
            "pair",
            &m.rule.unit,
            &lines,
        ) {
            let _ = write!(html, "<h3>{}</h3>", esc(&c.case));
            html.push_str(&img(
                &svg,
                &format!("{} of both sides per pair, {}", m.rule.metric, c.case),
            ));
        }
    }
    html.push_str("</body></html>\n");
    html
}

/// A row of the noise table: its name and how a reading shows in it.
type Row = (&'static str, fn(&Noise) -> String);

fn noise_table(before: Option<&Noise>, after: Option<&Noise>) -> String {
    let mut t = String::from("<table><tr><th>noise</th><th>before</th><th>after</th></tr>");
    let rows: [Row; 9] = [
        ("score (0 quiet … 1)", |n| format!("{:.2}", n.score)),
        ("others' CPU", |n| pct_of(n.others_cpu)),
        ("stolen", |n| pct_of(n.steal)),
        ("load (1 min)", |n| {
            n.load_1m
                .map_or("-".into(), |l| format!("{l:.2} on {} CPUs", n.cpus))
        }),
        ("free memory", |n| {
            n.mem_available_bytes
                .map_or("-".into(), |b| format!("{} MiB", b >> 20))
        }),
        ("thermal headroom", |n| {
            n.thermal_headroom_c
                .as_ref()
                .map_or("-".into(), |(z, h)| format!("{h:.1} °C ({z})"))
        }),
        ("battery", |n| match (n.battery_percent, n.charging) {
            (Some(p), Some(c)) => format!("{p:.0}%{}", if c { ", charging" } else { "" }),
            _ => "-".into(),
        }),
        ("governor", |n| {
            n.governor.clone().unwrap_or_else(|| "-".into())
        }),
        ("fixed loop spread", |n| {
            format!("{:.2}%", n.loop_spread * 100.0)
        }),
    ];
    for (name, f) in rows {
        let cell = |n: Option<&Noise>| n.map_or("-".into(), |n| esc(&f(n)));
        let _ = write!(
            t,
            "<tr><td>{name}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            cell(before),
            cell(after)
        );
    }
    let why: Vec<String> = before
        .iter()
        .chain(after.iter())
        .flat_map(|n| n.reasons.iter().cloned())
        .collect();
    if !why.is_empty() {
        let _ = write!(
            t,
            "<tr><td>why</td><td colspan=\"2\">{}</td></tr>",
            esc(&why.join("; "))
        );
    }
    t.push_str("</table>");
    t
}

fn pct_of(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::paired::*;
    use melt_bench::probe::noise::DROWNED;

    /// One regressed case, 60 → 54 tok/s, measured while others took `others_cpu` of it.
    fn one_case(judged: bool, others_cpu: f64) -> PairedSummary {
        let rule = Rule {
            metric: "tokens_per_second".into(),
            unit: "tok/s".into(),
            higher_is_better: true,
            threshold: 0.05,
        };
        let mut noise = melt_bench::probe::noise::check(
            std::path::Path::new("/nonexistent"),
            std::time::Duration::from_millis(1),
        );
        noise.others_cpu = Some(others_cpu);
        noise.score_it();
        PairedSummary {
            a: "HEAD~1 (abc)".into(),
            b: "working tree".into(),
            judged,
            design: Design::default(),
            noise_before: Some(noise),
            noise_after: None,
            cases: vec![CaseOutcome {
                case: "m/tg128/llama.cpp t=2".into(),
                metrics: vec![MetricOutcome {
                    rule,
                    verdict: Verdict::Regressed,
                    change: Change {
                        estimate: -0.1,
                        lower: -0.12,
                        upper: -0.08,
                    },
                    pairs: 3,
                    a: 60.0,
                    b: 54.0,
                }],
                pairs: (0..3)
                    .map(|i| Pair {
                        a: vec![Some(60.0 + i as f64)],
                        b: vec![Some(54.0 + i as f64)],
                    })
                    .collect(),
                stopped: None,
            }],
            only_a: vec![],
            only_b: vec![],
            failed: vec![],
            measuring_s: 12.0,
            resident_bytes: None,
            refused: None,
        }
    }

    /// A judged summary: the page names the sides, shows the verdict with its class, the noise
    /// readings and why, and plots each case's pairs as an SVG image.
    #[test]
    fn page_shows_verdicts_noise_and_pairs() {
        let s = one_case(true, 0.3);
        let html = paired_page(&s, false);
        for needle in [
            "working tree against HEAD~1 (abc)",
            "Exit code 1",
            "class=\"regressed\">regressed",
            "other processes used 30%",
            "m/tg128/llama.cpp t=2",
            "data:image/svg+xml;base64,",
        ] {
            assert!(html.contains(needle), "{needle} not in the page");
        }
    }

    /// `compare` on a noisy machine: the change is printed, with the noise beside it, and
    /// nothing is refused (only a verdict would be).
    #[test]
    fn compare_on_a_noisy_machine_prints_the_change_with_its_noise() {
        let s = one_case(false, 0.8);
        assert!(s.noise_before.as_ref().unwrap().score > DROWNED);
        assert_eq!(s.exit_code(false), 0);
        let table = crate::gate::paired_markdown(&s, false);
        for needle in [
            "compared",
            "The machine was noisy (score 0.80)",
            "other processes used 80%",
            "m/tg128/llama.cpp t=2",
        ] {
            assert!(table.contains(needle), "{needle} not in:\n{table}");
        }
        assert!(!table.contains("No verdict"), "{table}");
    }
}
