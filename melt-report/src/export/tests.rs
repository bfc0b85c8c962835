use super::*;
use melt_testkit::summaries::summary;

fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::Number(n) if n.is_f64() => json!("float"),
        Value::Number(_) => json!("integer"),
        Value::String(_) => json!("string"),
        Value::Bool(_) => json!("bool"),
        Value::Null => Value::Null,
    }
}

fn run() -> (Summary, BTreeMap<String, Vec<Measured>>) {
    let s = summary(
        "2026-11-24T11-28-35Z-7",
        &["m/tg128/llama.cpp t=2", "m/tg128/x, \"odd\""],
        80.0,
    );
    let m = |ns| Measured {
        ns,
        decode_ns: ns,
        ..Measured::default()
    };
    let samples = s
        .cases
        .iter()
        .map(|c| (c.id.clone(), vec![m(1_600_000_000), m(1_560_000_000)]))
        .collect();
    (s, samples)
}

#[test]
fn llama_bench_rows_have_the_keys_and_types_of_real_llama_bench_output() {
    // A row llama-bench (built from the same llama.cpp tree) wrote with `-o json`.
    let real: Value = serde_json::from_str(include_str!("llama-bench-row.json")).unwrap();
    let (s, samples) = run();
    let ours: Vec<Value> = serde_json::from_str(&render(Format::LlamaBench, &s, &samples)).unwrap();
    assert_eq!(ours.len(), 2);
    assert_eq!(shape(&ours[0]), shape(&real));
    assert_eq!(ours[0]["n_gen"], 128);
    assert_eq!(ours[0]["n_threads"], real["n_threads"]);
    assert_eq!(ours[0]["test_time"], "2026-11-24T11:28:35Z");
    assert_eq!(
        ours[0]["samples_ns"],
        json!([1_600_000_000u64, 1_560_000_000u64])
    );
    assert!((ours[0]["avg_ts"].as_f64().unwrap() - 81.0).abs() < 0.1);
}

#[test]
fn bmf_github_csv_and_jsonl_shapes() {
    let (s, samples) = run();
    let bmf: Value = serde_json::from_str(&render(Format::Bmf, &s, &samples)).unwrap();
    let t = &bmf["m/tg128/llama.cpp t=2"]["throughput"];
    assert_eq!(
        (
            t["value"].as_f64(),
            t["lower_value"].as_f64(),
            t["upper_value"].as_f64()
        ),
        (Some(80.0), Some(79.0), Some(81.0))
    );

    let gh: Value = serde_json::from_str(&render(Format::Github, &s, &samples)).unwrap();
    let row = &gh[0];
    assert_eq!(row["unit"], "tok/s");
    assert_eq!(row["value"], 80.0);
    assert_eq!(row["range"], "± 1.00");
    for k in ["name", "unit", "value", "range", "extra"] {
        assert!(row.get(k).is_some(), "github-action-benchmark needs `{k}`");
    }

    let csv = render(Format::Csv, &s, &samples);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + 2, "header + one metric per case");
    assert_eq!(lines[0].split(',').count(), 13);
    assert!(
        lines[2].contains("\"m/tg128/x, \"\"odd\"\"\""),
        "quoted: {}",
        lines[2]
    );

    let jsonl = render(Format::Jsonl, &s, &samples);
    let back: Vec<melt_bench::store::CaseSummary> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(back, s.cases);
}

#[test]
fn formats_parse_and_unknown_ones_are_named() {
    assert_eq!("llama-bench".parse::<Format>().unwrap(), Format::LlamaBench);
    let e = "xlsx".parse::<Format>().unwrap_err().to_string();
    assert!(e.contains("xlsx") && e.contains("bmf"), "{e}");
}
