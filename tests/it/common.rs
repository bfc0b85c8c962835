//! What the end-to-end tests share: a tiny GGUF, the suite they run, its arguments, and
//! readers of what a run leaves behind. Each test file uses some of it, hence the allowance.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use melt::cli::Args;
use melt::driver::{run_suite, Outcome};
use melt::store::Event;
use melt::{pp, pp_tg, tg, Suite, Sweep};
use melt_testkit::TinyLlama;
use serde_json::Value;

pub fn tiny_model(dir: &Path) -> PathBuf {
    let path = dir.join("tiny-llama.gguf");
    TinyLlama::default().write(&path).unwrap();
    path
}

pub fn suite() -> Suite {
    Suite {
        models: vec!["unused: --model replaces it".into()],
        backends: melt::backends::enabled(),
        sweep: Sweep {
            threads: vec![1, 2],
            ..Sweep::default()
        },
        workloads: vec![pp(32), tg(16), pp_tg(32, 8), tg(8).at_depth(24)],
        manifest_dir: None,
        reports: melt::host_reports(),
    }
}

pub fn args(model: &Path, target: &Path, extra: &[&str]) -> Args {
    let mut v: Vec<String> = vec![
        "--bench".into(),
        "--model".into(),
        model.display().to_string(),
        "--target-dir".into(),
        target.display().to_string(),
        "--warm-up-time".into(),
        "0".into(),
        "--nresamples".into(),
        "2000".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    Args::parse(v).unwrap()
}

pub fn run(model: &Path, target: &Path, extra: &[&str]) -> Outcome {
    run_suite(&suite(), &args(model, target, extra))
        .unwrap()
        .measured()
        .unwrap()
}

/// The "shape" of a JSON value: object keys and value kinds, recursively.
pub fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::Number(_) => Value::String("number".into()),
        Value::String(_) => Value::String("string".into()),
        Value::Bool(_) => Value::String("bool".into()),
        Value::Null => Value::Null,
    }
}

/// The backends a run's cases ran on, sorted, each once.
pub fn backends_of(out: &Outcome) -> Vec<&str> {
    let set: std::collections::BTreeSet<&str> = out
        .summary
        .cases
        .iter()
        .map(|c| c.backend.as_str())
        .collect();
    set.into_iter().collect()
}

pub fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Seconds of decode per decoded token over a case's measured samples, from its events.
pub fn decode_seconds_per_token(events: &[Event], case: &str) -> f64 {
    let (mut ns, mut n) = (0u64, 0usize);
    for e in events {
        if let Event::Sample {
            case: c,
            warmup: false,
            measured,
            ..
        } = e
        {
            if c == case {
                ns += measured.decode_ns;
                n += measured.token_ns.len();
            }
        }
    }
    ns as f64 / 1e9 / n as f64
}

/// A fixture tree under `dir/sysroot`: a 5 W hwmon meter and a `soc` zone at `temp` m°C; the
/// writer it returns adds more files.
pub fn meter_and_zone(dir: &Path, temp: &str) -> (PathBuf, impl Fn(&str, &str)) {
    let root = dir.join("sysroot");
    let at = root.clone();
    let put = move |rel: &str, v: &str| {
        let p = at.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{v}\n")).unwrap();
    };
    put("sys/class/hwmon/hwmon0/name", "meter");
    put("sys/class/hwmon/hwmon0/power1_input", "5000000");
    put("sys/class/thermal/thermal_zone0/type", "soc");
    put("sys/class/thermal/thermal_zone0/temp", temp);
    (root, put)
}
