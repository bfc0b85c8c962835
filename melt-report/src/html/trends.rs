//! The trends page, `target/melt/report/trends.html`: per case and metric, every device's
//! series over the runs (oldest left) with each run's 95% interval, then the table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::plot::*;
use crate::trends::{short_commit, shown, shown_interval, Series, METRICS};

/// Colours of the devices' lines, in turn.
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// The whole page.
pub fn trends_page(series: &[Series], source: &str) -> String {
    let mut html = super::page_head("melt trends", "");
    let _ = write!(
        html,
        "<h1>melt trends</h1><p>From {}: {} series. Each point is one run; its bar is the \
         run's 95% interval. Runs are placed in the order they were recorded, across \
         devices.</p>",
        esc(source),
        series.len()
    );
    // One plot per case and metric, a line per device. A device run's case id ends in
    // ` @DEVICE`; without it, the same case on several devices shares a plot.
    // Per case, its metrics in the order of [`METRICS`] (tok/s first).
    let mut plots: BTreeMap<(&str, usize), Vec<&Series>> = BTreeMap::new();
    for s in series {
        let case = s
            .case_id
            .strip_suffix(&format!(" @{}", s.device))
            .unwrap_or(&s.case_id);
        let order = METRICS
            .iter()
            .position(|m| *m == s.metric)
            .unwrap_or(METRICS.len());
        plots.entry((case, order)).or_default().push(s);
    }
    let mut last_case = "";
    for ((case, _), group) in &plots {
        let metric = &group[0].metric;
        // The runs of the plot in recorded order: their position is the x, their commit the
        // label.
        let mut when: Vec<(&str, &str, &str, String)> = group
            .iter()
            .flat_map(|s| {
                s.points.iter().map(|p| {
                    (
                        p.recorded_at.as_str(),
                        p.key.run_id.as_str(),
                        p.key.device.as_str(),
                        short_commit(p).chars().take(7).collect::<String>(),
                    )
                })
            })
            .collect();
        when.sort();
        when.dedup();
        let labels: Vec<String> = when.iter().map(|w| w.3.clone()).collect();
        let x_of = |p: &crate::history::MetricRow| {
            let k = (
                p.recorded_at.as_str(),
                p.key.run_id.as_str(),
                p.key.device.as_str(),
            );
            when.iter()
                .position(|w| (w.0, w.1, w.2) == k)
                .map_or(0.0, |i| (i + 1) as f64)
        };
        let unit = &group[0].unit;
        let scale = if unit == "bytes" {
            1.0 / (1024.0 * 1024.0)
        } else {
            1.0
        };
        let lines: Vec<TrendLine> = group
            .iter()
            .enumerate()
            .map(|(i, s)| TrendLine {
                name: s.device.clone(),
                colour: COLOURS[i % COLOURS.len()],
                points: s
                    .points
                    .iter()
                    .map(|p| {
                        let v = |x: Option<f64>| x.unwrap_or(p.estimate) * scale;
                        (x_of(p), p.estimate * scale, v(p.lower), v(p.upper))
                    })
                    .collect(),
            })
            .collect();
        let y_unit = if unit == "bytes" {
            "MiB"
        } else {
            unit.as_str()
        };
        if let Some(svg) = trend_plot(&format!("{metric}: {case}"), y_unit, &lines, &labels) {
            if *case != last_case {
                let _ = write!(html, "<h3 class=\"case\">{}</h3>", esc(case));
                last_case = case;
            }
            html.push_str(&img(&svg, &format!("{metric} of {case} over runs")));
        }
    }
    html.push_str(
        "<h2>Runs</h2><table><tr><th>device</th><th>case</th><th>metric</th><th>recorded</th>\
         <th>commit</th><th>value</th><th>95% CI</th></tr>",
    );
    for s in series {
        for p in &s.points {
            let ci = shown_interval(p, &s.unit);
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&s.device),
                esc(&s.case_id),
                esc(&s.metric),
                esc(&p.recorded_at),
                esc(&short_commit(p)),
                esc(&shown(p.estimate, &s.unit)),
                esc(&ci)
            );
        }
    }
    html.push_str("</table></body></html>\n");
    html
}
