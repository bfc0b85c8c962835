//! Markdown tables padded so their columns line up on a terminal, as llama-bench prints
//! them: the same table either way for a Markdown renderer, readable as plain text too.

/// `text` with every table in it (a run of lines starting with `|`) padded: each column as
/// wide as its widest cell, right-aligned where its separator says `---:`.
pub fn aligned(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut i = 0;
    while i < lines.len() {
        if !is_row(lines[i]) {
            out.push_str(lines[i]);
            i += 1;
            continue;
        }
        let end = (i..lines.len())
            .find(|&j| !is_row(lines[j]))
            .unwrap_or(lines.len());
        out.push_str(&table(&lines[i..end]));
        i = end;
    }
    out
}

fn is_row(line: &str) -> bool {
    line.trim_end().starts_with('|') && line.trim_end().ends_with('|')
}

fn cells(line: &str) -> Vec<String> {
    let t = line.trim_end();
    t[1..t.len() - 1]
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

fn is_separator(cells: &[String]) -> bool {
    cells.iter().all(|c| {
        let c = c.trim_matches(':');
        !c.is_empty() && c.bytes().all(|b| b == b'-')
    })
}

fn table(lines: &[&str]) -> String {
    let rows: Vec<Vec<String>> = lines.iter().map(|l| cells(l)).collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let right: Vec<bool> = (0..columns)
        .map(|c| {
            rows.iter()
                .find(|r| is_separator(r))
                .and_then(|r| r.get(c))
                .is_some_and(|s| s.ends_with(':'))
        })
        .collect();
    let width = |c: usize| {
        rows.iter()
            .filter(|r| !is_separator(r))
            .filter_map(|r| r.get(c))
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(0)
            .max(3)
    };
    let widths: Vec<usize> = (0..columns).map(width).collect();
    let mut out = String::new();
    for (row, line) in rows.iter().zip(lines) {
        let sep = is_separator(row);
        out.push('|');
        for (c, w) in widths.iter().enumerate() {
            let cell = row.get(c).map_or("", String::as_str);
            if sep {
                let dashes = "-".repeat(if right[c] { w - 1 } else { *w });
                out.push_str(&format!(" {dashes}{} |", if right[c] { ":" } else { "" }));
            } else if right[c] {
                out.push_str(&format!(" {cell:>w$} |"));
            } else {
                out.push_str(&format!(" {cell:<w$} |"));
            }
        }
        if line.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_keep_their_alignment() {
        let text = "Results:\n\n| model | t/s |\n| --- | ---: |\n| gemma-3-270m | 7.5 |\n| q | 123.25 |\n\nmelt: done\n";
        let want = "Results:\n\n\
                    | model        |    t/s |\n\
                    | ------------ | -----: |\n\
                    | gemma-3-270m |    7.5 |\n\
                    | q            | 123.25 |\n\
                    \nmelt: done\n";
        assert_eq!(aligned(text), want);
        // Aligned twice is aligned once; text without tables is untouched.
        assert_eq!(aligned(want), want);
        assert_eq!(aligned("no | table\n"), "no | table\n");
        // Wide characters count as one (±, …), a ragged row is padded out.
        let t = aligned("| a | b |\n| --- | --- |\n| ± | x |\n| c |\n");
        assert_eq!(
            t,
            "| a   | b   |\n| --- | --- |\n| ±   | x   |\n| c   |     |\n"
        );
    }
}
