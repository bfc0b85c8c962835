//! Probes end to end: power by phase, throttling, sustained runs and cooldown on fixture sysfs
//! trees, an external meter's CSV, and the memory probe against `/usr/bin/time -v`.

use std::path::Path;
use std::process::Command;

use melt::cli::Args;
use melt::store::{read_events, Summary};
use melt_testkit::needs;

use crate::common::*;

#[test]
fn probes_attribute_power_to_prefill_and_decode_and_flag_throttling() {
    // A fixture sysfs: a 5 W hwmon power meter, a zone already past its passive trip point.
    let dir = tempfile::tempdir().unwrap();
    let (root, put) = meter_and_zone(dir.path(), "91000");
    put("sys/class/thermal/thermal_zone0/trip_point_0_temp", "90000");
    put(
        "sys/class/thermal/thermal_zone0/trip_point_0_type",
        "passive",
    );
    let model = tiny_model(dir.path());
    let root_arg = root.display().to_string();
    let out = run(
        &model,
        dir.path(),
        &[
            "--sysroot",
            &root_arg,
            "--probe-period",
            "1",
            "--sample-size",
            "3",
            "t=2$",
        ],
    );
    assert!(!out.failed(), "{:?}", out.summary.errors);
    assert!(out.table.contains("J/token pp / tg"), "{}", out.table);
    for c in &out.summary.cases {
        let m = |k: &str| c.metrics.get(k).map(|m| m.estimate);
        if c.workload.prefill > 0 {
            let w = m("prefill_power_w").unwrap_or_else(|| panic!("{} lacks prefill power", c.id));
            assert!((w - 5.0).abs() < 1e-6, "{}: {w} W", c.id);
        }
        if c.workload.decode > 0 {
            assert!((m("decode_power_w").unwrap() - 5.0).abs() < 1e-6);
            // 5 W over the decode windows, per token: 5 × decode seconds / decode tokens.
            let per_token = decode_seconds_per_token(
                &read_events(&out.run_dir.join("samples.jsonl")).unwrap(),
                &c.id,
            );
            let expect = 5.0 * per_token;
            let got = m("decode_j_per_token").unwrap();
            assert!(
                (got / expect - 1.0).abs() < 0.05,
                "{}: {got} vs {expect}",
                c.id
            );
        }
        assert_eq!(m("temp_max_c"), Some(91.0));
        let note = c.metrics["throttled"].note.clone().unwrap_or_default();
        assert!(note.contains("soc reached 91.0 °C"), "{note}");
    }
    // --probe-period 0 turns them off; nonsense is refused by name.
    let out = run(
        &model,
        dir.path(),
        &["--probe-period", "0", "--sample-size", "2", "pp32.*t=2$"],
    );
    assert!(!out.summary.cases[0].metrics.contains_key("prefill_power_w"));
    let err = Args::parse(["--probe-period", "soon"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--probe-period"), "{err}");
    let err = Args::parse(["--sysroot", "/no/such/dir"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("/no/such/dir"), "{err}");
}

#[test]
fn sustained_mode_gives_a_time_series_with_memory_by_phase_and_cooldown() {
    // A fixture sysfs: a 5 W meter, a zone at 50 °C (so the cooldown has nothing to wait for).
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = meter_and_zone(dir.path(), "50000");
    // This process's own memory, under the fixture root.
    std::os::unix::fs::symlink("/proc", root.join("proc")).unwrap();
    let model = tiny_model(dir.path());
    let root_arg = root.display().to_string();
    let out = run(
        &model,
        dir.path(),
        &[
            "--sysroot",
            &root_arg,
            "--probe-period",
            "5",
            "--sustained",
            "1.5s",
            "--cooldown",
            "^[^/]+/(tg16|pp32)/.*t=1$",
        ],
    );
    assert!(!out.failed(), "{:?}", out.summary.errors);
    assert_eq!(out.summary.cases.len(), 2);
    for c in &out.summary.cases {
        assert_eq!(c.stop_reason.as_str(), "sustained");
        let s = c
            .sustained
            .as_ref()
            .expect("a sustained case has its series");
        // The runs span the duration (to the nanosecond, then added up in f64).
        assert!(s.duration_s >= 1.5 - 1e-9 && s.duration_s < 3.0, "{s:?}");
        assert_eq!(s.runs, c.samples);
        assert!(s.windows.len() >= 2 && s.windows.len() <= melt::sustained::MAX_WINDOWS);
        for w in &s.windows {
            assert!((w.watts.unwrap() - 5.0).abs() < 1e-6, "{w:?}");
            assert_eq!(w.temp_c, Some(50.0));
        }
        // Memory by phase: the load, and the phase this workload has.
        let m = |k: &str| c.metrics.get(k).map(|m| m.estimate);
        assert!(m("load_rss_peak_bytes").unwrap() > 1e6, "{}", c.id);
        let phase = if c.workload.prefill > 0 {
            "prefill"
        } else {
            "decode"
        };
        assert!(m(&format!("{phase}_rss_peak_bytes")).unwrap() > 1e6);
        let load_w = m("load_energy_j").unwrap() / (m("load_ms").unwrap() / 1e3);
        assert!((load_w - 5.0).abs() < 1e-6, "{load_w} W while loading");
    }
    // The first case runs as it finds the device; the second waited (not at all: 50 °C
    // is the run's start) and says so.
    let waits: Vec<Option<f64>> = out
        .summary
        .cases
        .iter()
        .map(|c| c.metrics.get("cooldown_wait_s").map(|m| m.estimate))
        .collect();
    assert_eq!(waits[0], None);
    assert!(waits[1].unwrap() < 0.5, "{waits:?}");
    for want in [
        "Probes (sampled every 5 ms)",
        "- energy: hwmon:meter:power1",
        "- unavailable: RAPL",
        "Memory by phase",
        "Sustained tg16",
        "| t (s) | tok/s | W | °C |",
    ] {
        assert!(out.table.contains(want), "{want} missing:\n{}", out.table);
    }
    // summary.json carries the series; samples.jsonl the start time of every run.
    let v = json(&out.run_dir.join("summary.json"));
    assert!(
        v["cases"][0]["sustained"]["windows"][0]["tok_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(v["probes"]["unavailable"].as_array().unwrap().len() >= 2);
}

#[test]
fn an_external_meters_csv_is_aligned_with_the_run_by_wall_clock() {
    use melt::meter;
    use std::time::{SystemTime, UNIX_EPOCH};
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let unix = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let before = unix();
    // Sustained, so that the meter's power over time is checked too.
    let out = run(&model, dir.path(), &["--sustained", "0.6", "t=2$"]);
    let after = unix();
    assert!(!out.failed(), "{:?}", out.summary.errors);
    // A USB meter's log: 4 W every 20 ms, from a second before the run to a second after.
    let mut csv = String::from("timestamp,power_w\n");
    let mut t = before - 1.0;
    while t < after + 1.0 {
        csv.push_str(&format!("{t:.3},4.0\n"));
        t += 0.02;
    }
    let path = dir.path().join("usb-meter.csv");
    std::fs::write(&path, csv).unwrap();
    let events = read_events(&out.run_dir.join("samples.jsonl")).unwrap();
    let probes = melt::export::probes_by_case(&events);
    let series = meter::read_csv(&path, meter::Alignment::default()).unwrap();
    let mut summary = out.summary.clone();
    let (covered, skipped) = meter::import(&mut summary, &probes, &series);
    assert_eq!(
        (covered, skipped.len()),
        (summary.cases.len(), 0),
        "{skipped:?}"
    );
    for c in &summary.cases {
        let m = |k: &str| c.metrics.get(k).map(|m| m.estimate);
        if c.workload.decode > 0 {
            assert!(
                (m("decode_power_w").unwrap() - 4.0).abs() < 1e-6,
                "{}",
                c.id
            );
            // 4 W over the decode windows, per token, against the samples' own decode time.
            let per_token = decode_seconds_per_token(&events, &c.id);
            let expect = 4.0 * per_token;
            let got = m("decode_j_per_token").unwrap();
            assert!(
                (got / expect - 1.0).abs() < 0.05,
                "{}: {got} vs {expect}",
                c.id
            );
            let note = c.metrics["decode_j_per_token"].note.clone().unwrap();
            assert!(note.contains("meter:usb-meter.csv"), "{note}");
        }
        if c.workload.prefill > 0 {
            assert!(
                (m("prefill_power_w").unwrap() - 4.0).abs() < 1e-6,
                "{}",
                c.id
            );
        }
        let windows = &c.sustained.as_ref().unwrap().windows;
        assert!(windows
            .iter()
            .all(|w| (w.watts.unwrap() - 4.0).abs() < 1e-6));
    }
    assert!(summary
        .probes
        .unwrap()
        .energy_sources
        .contains(&"meter:usb-meter.csv".to_string()));
    // The same file read with its clock an hour off covers nothing, and says which case.
    let off = meter::Alignment {
        offset_s: 3600.0,
        ..meter::Alignment::default()
    };
    let mut untouched = out.summary.clone();
    let (covered, skipped) = meter::import(
        &mut untouched,
        &probes,
        &meter::read_csv(&path, off).unwrap(),
    );
    assert_eq!(covered, 0);
    assert_eq!(
        untouched, out.summary,
        "nothing changes when nothing is covered"
    );
    let e = skipped[0].to_string();
    assert!(
        e.contains(&out.summary.cases[0].id) && e.contains("--meter-offset"),
        "{e}"
    );
}

/// The memory probe against `/usr/bin/time -v` for the same run: the suite binary that
/// `cargo xtask test` builds, one case of the real model (so the process's peak is the case's;
/// on the tiny model the report's own bookkeeping would outweigh it).
#[test]
fn peak_memory_agrees_with_usr_bin_time() {
    let Some(bin) = needs::suite_bin() else {
        return;
    };
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(model) = melt_testkit::cached_model(here, "gemma-3-270m-q4_k_m").map(|m| m.path)
    else {
        return;
    };
    if !Path::new("/usr/bin/time").is_file() {
        return needs::missing("GNU time (/usr/bin/time)", "`apt-get install time`");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(&bin)
        .arg("--bench")
        .arg("--model")
        .arg(&model)
        .args(["--sample-size", "3", "--discard-baseline", "--target-dir"])
        .arg(dir.path())
        .arg("pp512/llama.cpp t=1$")
        .output()
        .expect("/usr/bin/time (Debian package `time`)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kib: f64 = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .unwrap_or_else(|| panic!("no max RSS in:\n{stderr}"))
        .parse()
        .unwrap();
    let run = std::fs::read_dir(dir.path().join("melt/runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let s: Summary = serde_json::from_value(json(&run.join("summary.json"))).unwrap();
    let peak = s.cases[0].metrics["peak_rss_bytes"].estimate / 1024.0;
    assert!(
        (peak / kib - 1.0).abs() < 0.05,
        "melt {peak} KiB vs /usr/bin/time {kib} KiB"
    );
    // The sampled peaks cannot exceed the kernel's high-water mark.
    let pss = s.cases[0].metrics["pss_peak_bytes"].estimate / 1024.0;
    assert!(
        pss > 0.0 && pss <= peak * 1.01,
        "PSS {pss} KiB, peak {peak} KiB"
    );
}
