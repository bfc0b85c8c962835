//! The gate's report: a markdown table for people and for `$GITHUB_STEP_SUMMARY`.

use std::fmt::Write as _;

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
