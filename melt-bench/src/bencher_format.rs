//! criterion's `--output-format bencher`: libtest's benchmark lines,
//! `test ID ... bench:       1,234 ns/iter (+/- 56)`, which github-action-benchmark, bencher
//! and other tools parse. One "iteration" is one sample: one run of the case's workload.

/// The lines for `cases` (id, the wall time of each sample in ns): the median and the
/// standard deviation, as criterion prints them.
pub fn lines<'a>(cases: impl IntoIterator<Item = (&'a str, &'a [f64])>) -> String {
    let mut out = String::new();
    for (id, ns) in cases {
        if ns.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "test {id} ... bench: {:>11} ns/iter (+/- {})\n",
            integer(median(ns)),
            integer(std_dev(ns))
        ));
    }
    out
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The sample standard deviation (0 for one sample).
fn std_dev(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    if xs.len() < 2 {
        return 0.0;
    }
    let mean = xs.iter().sum::<f64>() / n;
    (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}

/// A whole number with thousands separators, as libtest writes it.
fn integer(x: f64) -> String {
    let digits = (x.round().max(0.0) as u64).to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_lines_that_bencher_tools_parse() {
        let a = [1_000_000.0, 1_200_000.0, 1_100_000.0];
        let b = [999.0];
        let text = lines([
            ("m/tg4/llama.cpp t=1", &a[..]),
            ("x", &b[..]),
            ("none", &[][..]),
        ]);
        assert_eq!(
            text,
            "test m/tg4/llama.cpp t=1 ... bench:   1,100,000 ns/iter (+/- 100,000)\n\
             test x ... bench:         999 ns/iter (+/- 0)\n"
        );
        // github-action-benchmark's `cargo` extractor.
        let re = regex::Regex::new(
            r"^test (.+)\s+\.\.\. bench:\s+([0-9,.]+) (\w+/\w+) \(\+/- ([0-9,.]+)\)$",
        )
        .unwrap();
        for line in text.lines() {
            assert!(re.is_match(line), "{line}");
        }
        assert_eq!(integer(1234567.4), "1,234,567");
        assert_eq!(integer(12.0), "12");
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    }
}
