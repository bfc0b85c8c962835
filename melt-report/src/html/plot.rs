//! The page's plotting kit: SVG written by hand (axes, ticks, lines, bands, violins), and
//! `data:` images of it. plotters' SVG backend needs a font backend to lay out text, which would
//! pull system font libraries onto devices and CI for a few axis labels.

use std::fmt::Write as _;

use melt_bench::store::CaseSummary;

pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Standard base64, for `data:` URIs.
pub(super) fn base64(bytes: &[u8]) -> String {
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
pub(super) fn ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
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

pub(super) fn fmt_num(x: f64) -> String {
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
pub(super) struct Plot {
    svg: String,
    w: f64,
    h: f64,
    left: f64,
    bottom: f64,
    x: (f64, f64),
    y: (f64, f64),
}

pub(super) const TOP: f64 = 24.0;
pub(super) const RIGHT: f64 = 12.0;

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
        let ticks: Vec<(f64, String)> = ticks(self.x.0, self.x.1, 6)
            .into_iter()
            .map(|t| (t, fmt_num(t)))
            .collect();
        self.axes_ticked(&ticks, x_label, y_label);
    }

    /// Axes whose x ticks are `x_ticks` (position, label), e.g. commits.
    fn axes_ticked(&mut self, x_ticks: &[(f64, String)], x_label: &str, y_label: Option<&str>) {
        let (x0, x1, y0, y1) = (self.left, self.w - RIGHT, TOP, self.h - self.bottom);
        let mut s =
            format!("<line x1=\"{x0}\" y1=\"{y1}\" x2=\"{x1}\" y2=\"{y1}\" stroke=\"#333\"/>");
        for (t, label) in x_ticks {
            let x = self.px(*t);
            let _ = write!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{y1}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#333\"/>\
                 <line x1=\"{x:.1}\" y1=\"{y0}\" x2=\"{x:.1}\" y2=\"{y1}\" stroke=\"#eee\"/>\
                 <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                y1 + 4.0,
                y1 + 15.0,
                esc(label)
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
pub(super) fn violin(xs: &[f64], mean: f64, ci: Option<(f64, f64)>) -> String {
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
pub(super) fn latency(per_sample: &[&[u64]]) -> Option<String> {
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
pub(super) fn comparison(cases: &[&CaseSummary]) -> String {
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

pub(super) fn img(svg: &str, alt: &str) -> String {
    format!(
        "<img alt=\"{}\" src=\"data:image/svg+xml;base64,{}\">",
        esc(alt),
        base64(svg.as_bytes())
    )
}

/// One line of a time-series plot: name, colour, `(seconds, value)` points.
pub(super) type Line<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// Lines over the measured runs' time (s) on one plot.
pub(super) fn series_plot(title: &str, unit: &str, lines: &[Line]) -> Option<String> {
    series_plot_x(title, "s", unit, lines)
}

/// Lines on one plot, over `x_unit` (seconds, pairs).
pub(super) fn series_plot_x(
    title: &str,
    x_unit: &str,
    unit: &str,
    lines: &[Line],
) -> Option<String> {
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
    p.axes(x_unit, Some(unit));
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
pub(super) fn accuracy_memory_plot(
    task: &str,
    points: &[(String, f64, f64, f64)],
) -> Option<String> {
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

/// Which points no other point beats on both axes: lower x (KL-divergence) and better y
/// (`higher_is_better`: tok/s; otherwise lower, as memory). KL-divergences within `x_tie` of
/// each other count as equal: a difference inside their noise ranks nothing.
pub(super) fn pareto_front(points: &[(f64, f64)], x_tie: f64, higher_is_better: bool) -> Vec<bool> {
    let better = |a: f64, b: f64| if higher_is_better { a > b } else { a < b };
    let at_least = |a: f64, b: f64| a == b || better(a, b);
    points
        .iter()
        .map(|&(x, y)| {
            !points.iter().any(|&(ox, oy)| {
                ox <= x + x_tie && at_least(oy, y) && (ox < x - x_tie || better(oy, y))
            })
        })
        .collect()
}

/// One point of a Pareto plot: its name, mean KL-divergence, that mean's standard error, and
/// the other axis's value.
pub(super) type ParetoPoint = (String, f64, f64, f64);

/// A metric against KL-divergence, one point per engine × quantization; the Pareto front is
/// joined and filled, the points it dominates are hollow. KL-divergences closer than twice
/// the largest standard error are ties.
pub(super) fn pareto_plot(
    title: &str,
    y_label: &str,
    points: &[ParetoPoint],
    higher_is_better: bool,
) -> Option<String> {
    if points.len() < 2 {
        return None;
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(_, x, _, y) in points {
        (x0, x1) = (x0.min(x), x1.max(x));
        (y0, y1) = (y0.min(y), y1.max(y));
    }
    let (xpad, ypad) = (((x1 - x0) * 0.15).max(1e-6), ((y1 - y0) * 0.15).max(1.0));
    let mut p = Plot::new(
        560.0,
        240.0,
        title,
        ((x0 - xpad).max(0.0), x1 + xpad),
        ((y0 - ypad).max(0.0), y1 + ypad),
    );
    p.axes(
        "mean KL-divergence from the reference (nats/token)",
        Some(y_label),
    );
    let xy: Vec<(f64, f64)> = points.iter().map(|&(_, x, _, y)| (x, y)).collect();
    let tie = 2.0 * points.iter().map(|p| p.2).fold(0.0, f64::max);
    let front = pareto_front(&xy, tie, higher_is_better);
    let mut line: Vec<(f64, f64)> = xy
        .iter()
        .zip(&front)
        .filter(|(_, &f)| f)
        .map(|(&q, _)| q)
        .collect();
    line.sort_by(|a, b| a.0.total_cmp(&b.0));
    let path: Vec<String> = line
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", p.px(x), p.py(y)))
        .collect();
    let _ = write!(
        p.svg,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#e6550d\" stroke-dasharray=\"4 3\"/>",
        path.join(" ")
    );
    for ((name, x, _, y), on_front) in points.iter().zip(front) {
        let (cx, cy) = (p.px(*x), p.py(*y));
        let fill = if on_front { "#e6550d" } else { "white" };
        // Labels of points near the right edge go to their left.
        let (tx, anchor) = if cx > p.w * 0.7 {
            (cx - 6.0, "end")
        } else {
            (cx + 6.0, "start")
        };
        let _ = write!(
            p.svg,
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"4\" fill=\"{fill}\" stroke=\"#e6550d\"/>\
             <text x=\"{tx:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"{anchor}\">{}</text>",
            cy - 6.0,
            esc(name)
        );
    }
    Some(p.finish())
}

/// One device's line on a trend plot: `(x, estimate, lower, upper)` per run.
pub(super) struct TrendLine {
    pub name: String,
    pub colour: &'static str,
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// Lines over runs with each point's interval as a bar. The y axis spans the data (with a
/// margin), not zero: a trend is read for changes of a few percent.
pub(super) fn trend_plot(
    title: &str,
    unit: &str,
    lines: &[TrendLine],
    x_labels: &[String],
) -> Option<String> {
    let pts: Vec<&(f64, f64, f64, f64)> = lines.iter().flat_map(|l| l.points.iter()).collect();
    if pts.is_empty() {
        return None;
    }
    let x1 = pts.iter().map(|p| p.0).fold(1.0, f64::max);
    let lo = pts.iter().map(|p| p.2.min(p.1)).fold(f64::MAX, f64::min);
    let hi = pts.iter().map(|p| p.3.max(p.1)).fold(f64::MIN, f64::max);
    let pad = ((hi - lo) * 0.15).max(hi.abs() * 0.01).max(1e-9);
    let mut p = Plot::new(
        560.0,
        220.0,
        title,
        (0.5, x1 + 0.5),
        ((lo - pad).max(0.0), hi + pad),
    );
    // A label per run while they fit (about 9 across), else every k-th.
    let every = x_labels.len().div_ceil(9).max(1);
    let x_ticks: Vec<(f64, String)> = x_labels
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0)
        .map(|(i, l)| ((i + 1) as f64, l.clone()))
        .collect();
    p.axes_ticked(&x_ticks, "commit of each run, oldest first", Some(unit));
    for (i, l) in lines.iter().enumerate() {
        let c = l.colour;
        let line: Vec<String> = l
            .points
            .iter()
            .map(|&(x, y, ..)| format!("{:.1},{:.1}", p.px(x), p.py(y)))
            .collect();
        let _ = write!(
            p.svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\"/>",
            line.join(" ")
        );
        for &(x, y, lo, hi) in &l.points {
            let cx = p.px(x);
            let _ = write!(
                p.svg,
                "<line x1=\"{cx:.1}\" y1=\"{:.1}\" x2=\"{cx:.1}\" y2=\"{:.1}\" stroke=\"{c}\"/>\
                 <circle cx=\"{cx:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>",
                p.py(lo),
                p.py(hi),
                p.py(y)
            );
        }
        let _ = write!(
            p.svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"{c}\">{}</text>",
            p.px(0.5) + 8.0 + 110.0 * i as f64,
            TOP + 12.0,
            esc(&l.name)
        );
    }
    Some(p.finish())
}
