//! The gate's report: a markdown table for people and for `$GITHUB_STEP_SUMMARY`.

use std::fmt::Write as _;

use melt_bench::probe::noise::DROWNED;

use super::config::*;
use super::judge::*;

pub(super) fn pct(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

/// A markdown summary for people and for `$GITHUB_STEP_SUMMARY`.
pub fn markdown(results: &[CaseGate], baseline: &str, lenient: bool) -> String {
    let code = exit_code(results, lenient);
    let count = |o: Outcome| results.iter().filter(|r| r.outcome == o).count();
    let mut s = String::new();
    let head = match code {
        0 => "passed",
        1 => "FAILED: regressed",
        _ => "could not compare",
    };
    let _ = writeln!(s, "### melt gate against `{baseline}`: {head}\n");
    let _ = writeln!(
        s,
        "{} regressed, {} warning, {} improved, {} passed, {} without baseline\n",
        count(Outcome::Regressed),
        count(Outcome::Warning),
        count(Outcome::Improved),
        count(Outcome::Pass),
        count(Outcome::Missing)
    );
    let _ = writeln!(
        s,
        "| case | metric | baseline | new | change (95% CI) | p | threshold | verdict |"
    );
    let _ = writeln!(s, "| --- | --- | ---: | ---: | --- | ---: | ---: | --- |");
    for r in results {
        let value = |v: f64| match r.unit.as_str() {
            "bytes" => format!("{:.1} MiB", v / 1048576.0),
            unit => format!("{v:.2} {unit}"),
        };
        let base = r.base.map_or("-".into(), value);
        let change = match (r.change, r.change_lower, r.change_upper) {
            (Some(c), Some(lo), Some(hi)) => format!("{} ({} … {})", pct(c), pct(lo), pct(hi)),
            (Some(c), _, _) => pct(c),
            _ => "-".into(),
        };
        let p = r.p_value.map_or("-".into(), |p| format!("{p:.3}"));
        let change = match r.drift {
            Some(d) => format!(
                "{change} incl. drift ±{:.1}%",
                1.96 * std::f64::consts::SQRT_2 * d * 100.0
            ),
            None => change,
        };
        let up = higher_is_better(&r.metric).unwrap_or(true);
        let mut verdict = match r.outcome {
            Outcome::Pass => "pass",
            Outcome::Warning if up => "⚠ slower, but within noise",
            Outcome::Warning => "⚠ worse, but within noise",
            Outcome::Regressed => "❌ regressed",
            Outcome::Improved => "improved",
            Outcome::Missing => "no baseline",
        }
        .to_string();
        if let Some(note) = &r.note {
            verdict = format!("{verdict} ({note})");
        }
        let _ = writeln!(
            s,
            "| {} | {} | {base} | {} | {change} | {p} | {}{:.0}% | {verdict} |",
            r.case,
            r.metric,
            value(r.new),
            if up { "-" } else { "+" },
            r.threshold * 100.0
        );
    }
    s
}

/// The paired comparison's table (`gate --against`, `compare`).
pub fn paired_markdown(s: &super::paired::PairedSummary, lenient: bool) -> String {
    use super::paired::Verdict;
    let mut out = String::new();
    let head = match (s.judged, s.exit_code(lenient)) {
        (false, 2) => "could not compare",
        (false, _) => "compared",
        (true, 0) => "passed",
        (true, 1) => "FAILED: regressed",
        (true, super::paired::INCONCLUSIVE_EXIT) => "inconclusive",
        (true, _) => "could not compare",
    };
    let what = if s.judged { "gate" } else { "compare" };
    let _ = writeln!(
        out,
        "### melt {what}: `{}` against `{}`: {head}\n",
        s.b, s.a
    );
    if let Some(why) = &s.refused {
        let _ = writeln!(out, "No verdict: {why}\n");
    }
    let noise = |n: &Option<melt_bench::probe::noise::Noise>| {
        n.as_ref().map_or("not checked".to_string(), |n| n.line())
    };
    let _ = writeln!(
        out,
        "Measured in alternation on one machine: {:.0} s; {} before, {} after.",
        s.measuring_s,
        noise(&s.noise_before),
        noise(&s.noise_after)
    );
    if let Some(n) = s
        .noise_before
        .as_ref()
        .filter(|n| !s.judged && n.score > DROWNED)
    {
        let _ = writeln!(
            out,
            "The machine was noisy (score {:.2}): a change of a few percent below may be its noise.",
            n.score
        );
    }
    if let Some((a, b)) = s.resident_bytes {
        let _ = writeln!(
            out,
            "Both sides hold their model between turns: {:.0} MiB + {:.0} MiB resident.",
            a as f64 / 1048576.0,
            b as f64 / 1048576.0
        );
    }
    let looks = s.design.looks();
    let _ = writeln!(
        out,
        "Intervals: {:.1}% each, {} looks from {} to {} pairs ({:.0}% over all looks).\n",
        s.design.confidence() * 100.0,
        looks.len(),
        looks.first().copied().unwrap_or(0),
        looks.last().copied().unwrap_or(0),
        (1.0 - s.design.significance_level) * 100.0
    );
    if s.cases.is_empty() && s.failed.is_empty() {
        return out;
    }
    let judged = if s.judged {
        " threshold | verdict |"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "| case | metric | {} | {} | change (CI) | pairs |{judged}",
        s.a, s.b
    );
    let _ = writeln!(
        out,
        "| --- | --- | ---: | ---: | --- | ---: |{}",
        if s.judged { " ---: | --- |" } else { "" }
    );
    for c in &s.cases {
        for m in &c.metrics {
            let value = |v: f64| {
                if !v.is_finite() {
                    "-".to_string()
                } else if m.rule.unit == "bytes" {
                    format!("{:.1} MiB", v / 1048576.0)
                } else {
                    format!("{v:.2} {}", m.rule.unit)
                }
            };
            let ch = &m.change;
            let change = if m.pairs == 0 {
                "-".to_string()
            } else {
                format!(
                    "{} ({} … {})",
                    pct(ch.estimate),
                    pct(ch.lower),
                    pct(ch.upper)
                )
            };
            let mut row = format!(
                "| {} | {} | {} | {} | {change} | {} |",
                c.case,
                m.rule.metric,
                value(m.a),
                value(m.b),
                m.pairs
            );
            if s.judged {
                let verdict = match m.verdict {
                    Verdict::Pass => "pass",
                    Verdict::Improved => "improved",
                    Verdict::Regressed => "❌ regressed",
                    Verdict::Inconclusive => "⚠ inconclusive",
                };
                let verdict = match &c.stopped {
                    Some(why) if m.verdict == Verdict::Inconclusive => format!("{verdict} ({why})"),
                    _ => verdict.to_string(),
                };
                let sign = if m.rule.higher_is_better { "-" } else { "+" };
                let _ = write!(row, " {sign}{:.0}% | {verdict} |", m.rule.threshold * 100.0);
            }
            let _ = writeln!(out, "{row}");
        }
    }
    for (case, why) in &s.failed {
        let _ = writeln!(out, "\nCould not measure {case}: {why}");
    }
    for (side, cases) in [(&s.a, &s.only_a), (&s.b, &s.only_b)] {
        if !cases.is_empty() {
            let _ = writeln!(out, "\nOnly in {side} (not compared): {}", cases.join(", "));
        }
    }
    out
}
