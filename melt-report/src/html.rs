//! The HTML report, `target/melt/report/index.html`: one self-contained page (inline CSS,
//! plots as SVG `data:` images, no script or font from anywhere else) that opens offline on a
//! laptop or a phone.
//!
//! Per model: a comparison chart of every case's tok/s with its 95% CI, and the table with the
//! change against the baseline. Per case: the distribution of tok/s over samples (a violin —
//! a mirrored kernel density — with each sample, the mean and its CI) and, for decode
//! workloads, the per-token latency over the decode (median over samples, min–max band).
//!
//! The SVG is written by hand: plotters' SVG backend needs a font backend to lay out text,
//! which would pull system font libraries onto devices and CI for a few axis labels.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use melt_bench::store::{CaseSummary, Summary};
use melt_bench::workload::Measured;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Standard base64, for `data:` URIs.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// "Nice" tick values (1, 2, 5 × 10^k) covering [lo, hi].
fn ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let span = (hi - lo).max(f64::EPSILON);
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= target as f64)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(t);
        t += step;
    }
    out
}

fn fmt_num(x: f64) -> String {
    // Tick arithmetic leaves -1e-17 where 0 was meant.
    let x = if x.abs() < 1e-9 { 0.0 } else { x };
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A plot area with linear scales.
struct Plot {
    svg: String,
    w: f64,
    h: f64,
    left: f64,
    bottom: f64,
    x: (f64, f64),
    y: (f64, f64),
}

const TOP: f64 = 24.0;
const RIGHT: f64 = 12.0;

impl Plot {
    fn new(w: f64, h: f64, title: &str, x: (f64, f64), y: (f64, f64)) -> Plot {
        let svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">\
             <rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\
             <text x=\"{}\" y=\"15\" text-anchor=\"middle\" font-size=\"12\" font-weight=\"bold\">{}</text>",
            w / 2.0,
            esc(title)
        );
        Plot {
            svg,
            w,
            h,
            left: 52.0,
            bottom: 34.0,
            x,
            y,
        }
    }
    fn px(&self, v: f64) -> f64 {
        let (a, b) = self.x;
        self.left + (v - a) / (b - a).max(f64::EPSILON) * (self.w - self.left - RIGHT)
    }
    fn py(&self, v: f64) -> f64 {
        let (a, b) = self.y;
        self.h - self.bottom - (v - a) / (b - a).max(f64::EPSILON) * (self.h - self.bottom - TOP)
    }
    fn axes(&mut self, x_label: &str, y_label: Option<&str>) {
        let (x0, x1, y0, y1) = (self.left, self.w - RIGHT, TOP, self.h - self.bottom);
        let mut s =
            format!("<line x1=\"{x0}\" y1=\"{y1}\" x2=\"{x1}\" y2=\"{y1}\" stroke=\"#333\"/>");
        for t in ticks(self.x.0, self.x.1, 6) {
            let x = self.px(t);
            let _ = write!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{y1}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#333\"/>\
                 <line x1=\"{x:.1}\" y1=\"{y0}\" x2=\"{x:.1}\" y2=\"{y1}\" stroke=\"#eee\"/>\
                 <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                y1 + 4.0,
                y1 + 15.0,
                fmt_num(t)
            );
        }
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            (x0 + x1) / 2.0,
            self.h - 4.0,
            esc(x_label)
        );
        if let Some(label) = y_label {
            let _ = write!(
                s,
                "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"#333\"/>"
            );
            for t in ticks(self.y.0, self.y.1, 4) {
                let y = self.py(t);
                let _ = write!(
                    s,
                    "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
                     <line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>",
                    x0 - 4.0,
                    y + 4.0,
                    fmt_num(t)
                );
            }
            let _ = write!(
                s,
                "<text transform=\"translate(12 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
                (y0 + y1) / 2.0,
                esc(label)
            );
        }
        // Called before any data is drawn, so the grid lies underneath.
        self.svg.push_str(&s);
    }
    fn finish(mut self) -> String {
        self.svg.push_str("</svg>");
        self.svg
    }
}

/// Violin of `xs` (tok/s per sample) with each sample, the mean and its CI band.
fn violin(xs: &[f64], mean: f64, ci: Option<(f64, f64)>) -> String {
    let (mut lo, mut hi) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    if let Some((l, h)) = ci {
        lo = lo.min(l);
        hi = hi.max(h);
    }
    let sd = melt_bench::stats::std_dev(xs)
        .max((hi - lo) / 20.0)
        .max(hi.abs() * 1e-3);
    // Silverman's rule for the kernel bandwidth.
    let bw = 1.06 * sd * (xs.len() as f64).powf(-0.2);
    // Throughput is never negative: the density's tail is cut at 0.
    let (lo, hi) = ((lo - 3.0 * bw).max(0.0), hi + 3.0 * bw);
    let mut p = Plot::new(560.0, 170.0, "tok/s over samples", (lo, hi), (-1.0, 1.0));
    p.axes("tok/s", None);
    let n = 120;
    let dens: Vec<(f64, f64)> = (0..=n)
        .map(|i| {
            let x = lo + (hi - lo) * i as f64 / n as f64;
            let d: f64 = xs
                .iter()
                .map(|&s| (-0.5 * ((x - s) / bw).powi(2)).exp())
                .sum();
            (x, d)
        })
        .collect();
    let max = dens.iter().fold(f64::MIN_POSITIVE, |m, &(_, d)| m.max(d));
    let mut path = String::new();
    for (i, &(x, d)) in dens.iter().enumerate() {
        let _ = write!(
            path,
            "{}{:.1},{:.1} ",
            if i == 0 { "M" } else { "L" },
            p.px(x),
            p.py(0.9 * d / max)
        );
    }
    for &(x, d) in dens.iter().rev() {
        let _ = write!(path, "L{:.1},{:.1} ", p.px(x), p.py(-0.9 * d / max));
    }
    let _ = write!(
        p.svg,
        "<path d=\"{path}Z\" fill=\"#9ecae1\" stroke=\"#3182bd\"/>"
    );
    if let Some((l, h)) = ci {
        let _ = write!(
            p.svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#e6550d\" fill-opacity=\"0.25\"/>",
            p.px(l),
            p.py(0.95),
            (p.px(h) - p.px(l)).max(1.0),
            p.py(-0.95) - p.py(0.95)
        );
    }
    for (i, &x) in xs.iter().enumerate() {
        // Deterministic vertical jitter so equal values stay visible.
        let j = ((i * 37) % 11) as f64 / 11.0 - 0.5;
        let _ = write!(
            p.svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#08519c\"/>",
            p.px(x),
            p.py(0.5 * j)
        );
    }
    let _ = write!(
        p.svg,
        "<line x1=\"{m:.1}\" y1=\"{:.1}\" x2=\"{m:.1}\" y2=\"{:.1}\" stroke=\"#e6550d\" stroke-width=\"2\"/>",
        p.py(0.95),
        p.py(-0.95),
        m = p.px(mean)
    );
    p.finish()
}

/// Per-token decode latency: median over samples at each token, min–max band.
fn latency(per_sample: &[&[u64]]) -> Option<String> {
    let n = per_sample.iter().map(|s| s.len()).min()?;
    if n == 0 {
        return None;
    }
    let rows: Vec<(f64, f64, f64)> = (0..n)
        .map(|i| {
            let v: Vec<f64> = per_sample.iter().map(|s| s[i] as f64 / 1e6).collect();
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            (melt_bench::stats::median(&v), lo, hi)
        })
        .collect();
    let ymax = rows.iter().fold(0.0f64, |m, r| m.max(r.2)) * 1.05;
    let mut p = Plot::new(
        560.0,
        200.0,
        "latency per decoded token",
        (0.0, (n - 1).max(1) as f64),
        (0.0, ymax.max(1e-3)),
    );
    p.axes("token", Some("ms"));
    let mut band = String::new();
    for (i, r) in rows.iter().enumerate() {
        let _ = write!(
            band,
            "{}{:.1},{:.1} ",
            if i == 0 { "M" } else { "L" },
            p.px(i as f64),
            p.py(r.2)
        );
    }
    for (i, r) in rows.iter().enumerate().rev() {
        let _ = write!(band, "L{:.1},{:.1} ", p.px(i as f64), p.py(r.1));
    }
    let line: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{:.1},{:.1}", p.px(i as f64), p.py(r.0)))
        .collect();
    let _ = write!(
        p.svg,
        "<path d=\"{band}Z\" fill=\"#c6dbef\"/><polyline points=\"{}\" fill=\"none\" stroke=\"#08519c\" stroke-width=\"1.5\"/>",
        line.join(" ")
    );
    Some(p.finish())
}

/// Every case of a model: tok/s with its CI, one bar per case.
fn comparison(cases: &[&CaseSummary]) -> String {
    let rows: Vec<(String, f64, f64, f64)> = cases
        .iter()
        .filter_map(|c| {
            let m = c.metrics.get("tokens_per_second")?;
            Some((
                format!("{} · {}", c.function, c.value),
                m.estimate,
                m.lower.unwrap_or(m.estimate),
                m.upper.unwrap_or(m.estimate),
            ))
        })
        .collect();
    let max = rows.iter().fold(0.0f64, |m, r| m.max(r.3)) * 1.05;
    let row_h = 22.0;
    let h = TOP + 34.0 + row_h * rows.len() as f64;
    let mut p = Plot::new(
        760.0,
        h,
        "tok/s by case (95% CI)",
        (0.0, max.max(1e-3)),
        (0.0, rows.len() as f64),
    );
    p.left = 260.0;
    p.axes("tok/s", None);
    for (i, (label, est, lo, hi)) in rows.iter().enumerate() {
        let y = TOP + row_h * i as f64 + 4.0;
        let _ = write!(
            p.svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#6baed6\"/>\
             <line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#222\" stroke-width=\"1.5\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            p.left - 6.0,
            y + 12.0,
            esc(label),
            p.px(0.0),
            (p.px(*est) - p.px(0.0)).max(1.0),
            row_h - 8.0,
            p.px(*lo),
            y + (row_h - 8.0) / 2.0,
            p.px(*hi),
            y + (row_h - 8.0) / 2.0,
            p.px(*hi) + 4.0,
            y + 12.0,
            fmt_num(*est)
        );
    }
    p.finish()
}

fn img(svg: &str, alt: &str) -> String {
    format!(
        "<img alt=\"{}\" src=\"data:image/svg+xml;base64,{}\">",
        esc(alt),
        base64(svg.as_bytes())
    )
}

/// The whole page for `summaries` (one or more runs) and their samples by case id.
pub fn render(summaries: &[Summary], samples: &BTreeMap<String, Vec<Measured>>) -> String {
    render_with_probes(summaries, samples, &BTreeMap::new())
}

/// One line of a time-series plot: name, colour, `(seconds, value)` points.
type Line<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// Lines over the measured runs' time (s) on one plot.
fn series_plot(title: &str, unit: &str, lines: &[Line]) -> Option<String> {
    let pts = lines.iter().flat_map(|l| l.2.iter());
    let (mut x1, mut y1) = (0.0f64, 0.0f64);
    let mut any = false;
    for &(x, y) in pts {
        x1 = x1.max(x);
        y1 = y1.max(y);
        any = true;
    }
    if !any {
        return None;
    }
    let mut p = Plot::new(
        560.0,
        200.0,
        title,
        (0.0, x1.max(1e-3)),
        (0.0, (y1 * 1.1).max(1e-3)),
    );
    p.axes("s", Some(unit));
    for (i, (name, colour, points)) in lines.iter().enumerate() {
        let line: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", p.px(x), p.py(y)))
            .collect();
        let _ = write!(
            p.svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"{colour}\">{}</text>",
            line.join(" "),
            p.px(0.0) + 8.0 + 90.0 * i as f64,
            p.py(y1 * 1.1) + 12.0,
            esc(name)
        );
    }
    Some(p.finish())
}

/// Accuracy against peak memory, one point per model (with its ±1 standard error): the
/// quantization trade-off at a glance.
fn accuracy_memory_plot(task: &str, points: &[(String, f64, f64, f64)]) -> Option<String> {
    if points.len() < 2 {
        return None;
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(_, x, y, e) in points {
        (x0, x1) = (x0.min(x), x1.max(x));
        (y0, y1) = (y0.min(y - e), y1.max(y + e));
    }
    let pad = ((x1 - x0) * 0.15).max(1.0);
    let mut p = Plot::new(
        560.0,
        240.0,
        &format!("{task}: accuracy against peak memory"),
        (x0 - pad, x1 + pad),
        ((y0 - 0.02).max(0.0), (y1 + 0.02).min(1.0)),
    );
    p.axes("peak memory (MiB)", Some("accuracy"));
    for (name, x, y, e) in points {
        let (cx, cy) = (p.px(*x), p.py(*y));
        let _ = write!(
            p.svg,
            "<line x1=\"{cx:.1}\" y1=\"{:.1}\" x2=\"{cx:.1}\" y2=\"{:.1}\" stroke=\"#3182bd\"/>\
             <circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"4\" fill=\"#3182bd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
            p.py(y - e),
            p.py(y + e),
            cx + 6.0,
            cy - 6.0,
            esc(name)
        );
    }
    Some(p.finish())
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
                    esc(&t.model.name),
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
                    esc(&t.model.name),
                    esc(&t.backend),
                    p.ppl,
                    p.ppl_stderr,
                    p.chunks,
                    p.n_ctx,
                    p.tokens_scored,
                    p.eval_tokens_per_s
                );
            }
            TaskResult::MultipleChoice(c) => {
                let a = &c.accuracy;
                let _ = write!(
                    html,
                    "<p>{} — {} ({}): acc <b>{:.4} ± {:.4}</b>, acc_norm {:.4} ± {:.4}, n = {} of {}.</p>",
                    esc(&c.task),
                    esc(&t.model.name),
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
        html.push_str("<h3>What does quantization cost?</h3><table><tr><th>model</th><th>backend</th><th>quant</th><th>size MiB</th><th>peak MiB</th><th>pp tok/s</th><th>tg tok/s</th><th>J/token</th><th>PPL</th><th>accuracy</th></tr>");
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
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{:.0}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                esc(&r.model),
                esc(&r.backend),
                esc(&r.quantization),
                mib(r.size_bytes),
                opt(r.peak_rss_bytes.map(mib), 0),
                opt(r.pp_tok_s, 1),
                opt(r.tg_tok_s, 1),
                opt(r.decode_j_per_token, 4),
                r.ppl.map_or("-".into(), |(p, e)| format!("{p:.3} ± {e:.3}")),
                esc(&acc.join("; "))
            );
        }
        html.push_str("</table>");
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
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>melt report</title><style>\
         body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1100px}\
         table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px}\
         td.n{text-align:right}.case{border-top:1px solid #ddd;margin-top:1.2em;padding-top:.4em}\
         .regressed{color:#b30000;font-weight:bold}.improved{color:#006d2c;font-weight:bold}\
         img{max-width:100%;display:block;margin:.3em 0}</style></head><body>\
         <h1>melt report</h1>",
    );
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
        let mut s = melt_bench::testkit::summaries::summary("r1", &["m/tg128/<b>x</b>"], 80.0);
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
