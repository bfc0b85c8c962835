//! Trends: each case's metrics over the runs a history holds, oldest first, one series per
//! device — "did tok/s on the Pixel drop this week, and at which commit?". The table is
//! [`markdown`]; the page with a plot per case and metric is [`crate::html::trends_page`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::history::{History, HistoryError, MetricQuery, MetricRow};

/// What a trend follows, in the order a table lists them: throughput, latency, memory and
/// energy. A metric no run recorded is left out.
pub const METRICS: [&str; 4] = [
    "tokens_per_second",
    "ttft_ms",
    "peak_rss_bytes",
    "decode_j_per_token",
];

/// One case's metric on one device over runs, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub device: String,
    pub case_id: String,
    pub metric: String,
    pub unit: String,
    pub points: Vec<MetricRow>,
}

/// Which rows a trend takes (the metric of `q` is ignored: every one of [`METRICS`]).
pub fn collect(h: &mut History, q: &MetricQuery) -> Result<Vec<Series>, HistoryError> {
    let mut out = Vec::new();
    for metric in METRICS {
        let rows = h.metric_rows(&MetricQuery {
            metric: metric.to_string(),
            ..q.clone()
        })?;
        let mut by: BTreeMap<(String, String), Vec<MetricRow>> = BTreeMap::new();
        for r in rows {
            by.entry((r.case_id.clone(), r.key.device.clone()))
                .or_default()
                .push(r);
        }
        out.extend(by.into_iter().map(|((case_id, device), points)| Series {
            device,
            case_id,
            metric: metric.to_string(),
            unit: points[0].unit.clone(),
            points,
        }));
    }
    Ok(out)
}

/// A commit as a table shows it: 10 characters, `+` when the tree was dirty.
pub fn short_commit(r: &MetricRow) -> String {
    let c: String = r
        .git_commit
        .as_deref()
        .map_or("-".into(), |c| c.chars().take(10).collect());
    if r.git_dirty == Some(true) {
        format!("{c}+")
    } else {
        c
    }
}

/// A value in its unit as tables show it (bytes in MiB).
pub fn shown(v: f64, unit: &str) -> String {
    if unit == "bytes" {
        format!("{:.1} MiB", v / (1024.0 * 1024.0))
    } else {
        format!("{v:.2} {unit}")
    }
}

/// A run's 95% interval as tables show it (`-` when it has none).
pub fn shown_interval(p: &MetricRow, unit: &str) -> String {
    match (p.lower, p.upper) {
        (Some(lo), Some(hi)) => format!("{} … {}", shown(lo, unit), shown(hi, unit)),
        _ => "-".into(),
    }
}

/// The table: per series, every run with its commit, value, interval and the change from the
/// run before.
pub fn markdown(series: &[Series]) -> String {
    let mut out = String::from(
        "| device | case | metric | recorded | commit | value | 95% CI | change |\n\
         | --- | --- | --- | --- | --- | ---: | --- | ---: |\n",
    );
    for s in series {
        let mut before: Option<f64> = None;
        for p in &s.points {
            let ci = shown_interval(p, &s.unit);
            let change = before.filter(|b| *b != 0.0).map_or("-".into(), |b| {
                format!("{:+.1}%", (p.estimate / b - 1.0) * 100.0)
            });
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {ci} | {change} |",
                s.device,
                s.case_id,
                s.metric,
                p.recorded_at,
                short_commit(p),
                shown(p.estimate, &s.unit)
            );
            before = Some(p.estimate);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::GitState;
    use melt_testkit::summaries::summary;

    #[test]
    fn series_per_case_and_device_oldest_first_with_their_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(&dir.path().join("h.sqlite")).unwrap();
        let ids = ["m/tg128/a", "m/pp512/<b>"];
        let runs = [
            ("2026-11-20T10-00-00Z-s", "c1", "pixel", 70.0),
            ("2026-11-21T10-00-00Z-s", "c2", "jetson", 40.0),
            ("2026-11-22T10-00-00Z-s", "c3", "pixel", 63.0),
        ];
        for (id, commit, device, tps) in runs {
            let git = GitState {
                commit: Some(commit.into()),
                dirty: Some(commit == "c3"),
            };
            let s = summary(id, &ids, tps);
            h.record(&s, &BTreeMap::new(), &git, device).unwrap();
        }
        let all = collect(&mut h, &MetricQuery::default()).unwrap();
        // tok/s only (the hand-made summaries have no TTFT, memory or energy): two cases on
        // two devices.
        assert_eq!(all.len(), 4);
        let pixel_tg = all
            .iter()
            .find(|s| s.device == "pixel" && s.case_id == "m/tg128/a")
            .unwrap();
        let tps: Vec<f64> = pixel_tg.points.iter().map(|p| p.estimate).collect();
        assert_eq!(tps, [70.0, 63.0]);
        let table = markdown(&all);
        assert!(
            table.contains("| pixel | m/tg128/a | tokens_per_second | 2026-11-22T10-00-00Z | c3+ | 63.00 tok/s | 62.00 tok/s … 64.00 tok/s | -10.0% |"),
            "{table}"
        );
        let since = collect(
            &mut h,
            &MetricQuery {
                since: Some("2026-11-21".into()),
                device: Some("pixel".into()),
                case: Some("tg128".into()),
                ..MetricQuery::default()
            },
        )
        .unwrap();
        assert_eq!(since.len(), 1);
        assert_eq!(since[0].points.len(), 1);
        // The page: one plot per case and metric, names escaped.
        let page = crate::html::trends_page(&all, "h.sqlite");
        assert_eq!(page.matches("<img").count(), 2, "{page}");
        // Device runs tag their case ids ` @DEVICE`: the same case still shares a plot.
        let tagged: Vec<Series> = all
            .iter()
            .cloned()
            .map(|mut s| {
                s.case_id = format!("{} @{}", s.case_id, s.device);
                s
            })
            .collect();
        let page = crate::html::trends_page(&tagged, "h.sqlite");
        assert_eq!(page.matches("<img").count(), 2, "{page}");
        assert!(page.contains("m/pp512/&lt;b&gt;") && !page.contains("<b>"));
    }
}
