//! Probes on fixture trees in the real sysfs/procfs formats, built here.

use super::energy::{Battery, EnergySource, Hwmon, Jetson, Rapl, Reading};
use super::*;

struct Tree(tempfile::TempDir);

impl Tree {
    fn new() -> Tree {
        Tree(tempfile::tempdir().unwrap())
    }
    fn root(&self) -> &Path {
        self.0.path()
    }
    fn put(&self, rel: &str, content: &str) {
        put_atomically(&self.0.path().join(rel), content);
    }
}

/// Writes `content` to `p` as one change (a write to a temporary file, then a rename): a
/// reader polling `p` meanwhile never sees it empty, as it could mid-`fs::write`.
fn put_atomically(p: &Path, content: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    let tmp = p.with_extension("tmp-write");
    fs::write(&tmp, format!("{content}\n")).unwrap();
    fs::rename(tmp, p).unwrap();
}

fn joules(r: Reading) -> f64 {
    match r {
        Reading::Joules(j) => j,
        other => panic!("{other:?}"),
    }
}

fn watts(r: Reading) -> f64 {
    match r {
        Reading::Watts(w) => w,
        other => panic!("{other:?}"),
    }
}

#[test]
fn rapl_sums_packages_and_undoes_wraparound() {
    let t = Tree::new();
    let z = "sys/class/powercap/intel-rapl:0";
    t.put(&format!("{z}/name"), "package-0");
    t.put(&format!("{z}/max_energy_range_uj"), "1000000");
    t.put(&format!("{z}/energy_uj"), "900000");
    // A subzone (cores) is part of the package: never added.
    t.put("sys/class/powercap/intel-rapl:0:0/name", "core");
    t.put("sys/class/powercap/intel-rapl:0:0/energy_uj", "5");
    let mut zones = Rapl::detect(t.root()).unwrap();
    assert_eq!(zones.len(), 1);
    assert_eq!(zones[0].name(), "rapl:package-0");
    assert_eq!(joules(zones[0].read().unwrap()), 0.0);
    t.put(&format!("{z}/energy_uj"), "950000");
    assert!((joules(zones[0].read().unwrap()) - 0.05).abs() < 1e-12);
    // Past the range: 950000 → 1000000 → 0 → 100000 is 0.15 J more, not a negative jump.
    t.put(&format!("{z}/energy_uj"), "100000");
    assert!((joules(zones[0].read().unwrap()) - 0.2).abs() < 1e-12);
}

#[test]
fn rapl_without_permission_or_with_garbage_is_unavailable() {
    let t = Tree::new();
    let z = "sys/class/powercap/intel-rapl:0";
    t.put(&format!("{z}/name"), "package-0");
    t.put(&format!("{z}/max_energy_range_uj"), "1000000");
    // Tests run as root here, where modes do not stop a read: a directory stands in for the
    // file the kernel refuses.
    fs::create_dir_all(t.root().join(format!("{z}/energy_uj"))).unwrap();
    let err = Rapl::detect(t.root()).err().unwrap().to_string();
    assert!(
        err.starts_with("unavailable:") && err.contains("root-only"),
        "{err}"
    );
    fs::remove_dir(t.root().join(format!("{z}/energy_uj"))).unwrap();
    t.put(&format!("{z}/energy_uj"), "12ab");
    let err = Rapl::detect(t.root()).err().unwrap().to_string();
    assert!(err.contains("`12ab` is not a number"), "{err}");
    let err = Rapl::detect(Tree::new().root()).err().unwrap().to_string();
    assert!(err.contains("powercap"), "{err}");
}

#[test]
fn jetson_board_total_is_never_added_to_its_sub_rails() {
    // Newer L4T, hwmon driver, volts × amps.
    let t = Tree::new();
    let h = "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3";
    t.put(&format!("{h}/in1_label"), "VDD_IN");
    t.put(&format!("{h}/in1_input"), "5000"); // mV
    t.put(&format!("{h}/curr1_input"), "1200"); // mA
    t.put(&format!("{h}/in2_label"), "VDD_CPU_GPU_CV");
    t.put(&format!("{h}/in2_input"), "5000");
    t.put(&format!("{h}/curr2_input"), "400");
    let mut j = Jetson::detect(t.root()).unwrap();
    assert_eq!(j.name(), "jetson:VDD_IN");
    assert!((watts(j.read().unwrap()) - 6.0).abs() < 1e-9);
    assert!(j.assumptions().unwrap().contains("VDD_IN alone"));
    // The same driver with power inputs (µW).
    t.put(&format!("{h}/power1_input"), "7250000");
    let mut j = Jetson::detect(t.root()).unwrap();
    assert!((watts(j.read().unwrap()) - 7.25).abs() < 1e-9);

    // Older L4T, iio driver (mW), POM_5V_IN as the total.
    let t = Tree::new();
    let d = "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0";
    t.put(&format!("{d}/rail_name_0"), "POM_5V_IN");
    t.put(&format!("{d}/in_power0_input"), "4500");
    t.put(&format!("{d}/rail_name_1"), "POM_5V_GPU");
    t.put(&format!("{d}/in_power1_input"), "1000");
    let mut j = Jetson::detect(t.root()).unwrap();
    assert_eq!(j.name(), "jetson:POM_5V_IN");
    assert!((watts(j.read().unwrap()) - 4.5).abs() < 1e-9);

    // No total rail: the sum, and the report says so.
    let t = Tree::new();
    t.put(&format!("{d}/rail_name_0"), "VDD_GPU");
    t.put(&format!("{d}/in_power0_input"), "1500");
    t.put(&format!("{d}/rail_name_1"), "VDD_CPU");
    t.put(&format!("{d}/in_power1_input"), "500");
    let mut j = Jetson::detect(t.root()).unwrap();
    assert!((watts(j.read().unwrap()) - 2.0).abs() < 1e-9);
    assert!(j.assumptions().unwrap().contains("VDD_GPU + VDD_CPU"));
    // Garbage in a rail file is an error, not a number.
    t.put(&format!("{d}/in_power1_input"), "n/a");
    assert!(j.read().is_err());
}

#[test]
fn android_battery_sign_and_scale_are_calibrated_and_charging_refused() {
    let t = Tree::new();
    let b = "sys/class/power_supply/battery";
    t.put(&format!("{b}/status"), "Discharging");
    t.put(&format!("{b}/voltage_now"), "3900000");
    // Vendor A: µA, discharge negative.
    t.put(&format!("{b}/current_now"), "-350000");
    let mut bat = Battery::detect(t.root()).unwrap();
    assert!((watts(bat.read().unwrap()) - 1.365).abs() < 1e-9);
    assert!(bat.assumptions().unwrap().contains("negative in µA"));
    // Vendor B: mA, discharge positive.
    t.put(&format!("{b}/current_now"), "420");
    let mut bat = Battery::detect(t.root()).unwrap();
    assert!((watts(bat.read().unwrap()) - 1.638).abs() < 1e-9);
    assert!(bat.assumptions().unwrap().contains("positive in mA"));
    t.put(&format!("{b}/status"), "Charging");
    let err = Battery::detect(t.root()).err().unwrap().to_string();
    assert!(err.contains("Charging") && err.contains("unplug"), "{err}");
}

#[test]
fn hwmon_prefers_an_energy_counter_and_takes_one_channel() {
    let t = Tree::new();
    t.put("sys/class/hwmon/hwmon0/name", "acpitz");
    t.put("sys/class/hwmon/hwmon0/temp1_input", "40000");
    t.put("sys/class/hwmon/hwmon1/name", "ina2xx");
    t.put("sys/class/hwmon/hwmon1/power1_input", "2500000");
    let mut h = Hwmon::detect(t.root()).unwrap();
    assert_eq!(h.len(), 1);
    assert!((watts(h[0].read().unwrap()) - 2.5).abs() < 1e-9);
    t.put("sys/class/hwmon/hwmon2/name", "amd_energy");
    t.put("sys/class/hwmon/hwmon2/energy1_input", "1000000");
    t.put("sys/class/hwmon/hwmon2/energy1_label", "Esocket0");
    t.put("sys/class/hwmon/hwmon2/energy2_input", "300");
    let mut h = Hwmon::detect(t.root()).unwrap();
    assert_eq!(h.len(), 1, "a socket and its cores overlap");
    assert_eq!(h[0].name(), "hwmon:amd_energy:Esocket0");
    t.put("sys/class/hwmon/hwmon2/energy1_input", "3500000");
    assert!((joules(h[0].read().unwrap()) - 2.5).abs() < 1e-9);
}

#[test]
fn nothing_to_read_says_why_for_every_source() {
    let t = Tree::new();
    let p = Probes::detect(t.root());
    assert!(p.energy.is_empty());
    let all = p.unavailable.join("\n");
    for what in [
        "Jetson",
        "RAPL",
        "hwmon",
        "battery",
        "thermal",
        "cpufreq",
        "smaps_rollup",
    ] {
        assert!(all.contains(what), "{what} missing from:\n{all}");
    }
}

fn snap(t_ms: u64, energy: Vec<Option<Reading>>) -> Snapshot {
    Snapshot {
        t_ns: t_ms * 1_000_000,
        energy,
        thermal: ThermalReading::default(),
        mem: MemReading::default(),
    }
}

#[test]
fn energy_is_attributed_to_exactly_the_marked_windows() {
    // A 2 W power source sampled every 100 ms and a counter rising 3 J/s, together 5 W.
    let t = Tree::new();
    t.put("sys/class/hwmon/hwmon0/name", "meter");
    t.put("sys/class/hwmon/hwmon0/power1_input", "2000000");
    let mut probes = Probes::detect(t.root());
    let z = "sys/class/powercap/intel-rapl:0";
    t.put(&format!("{z}/name"), "package-0");
    t.put(&format!("{z}/max_energy_range_uj"), "1000000000");
    t.put(&format!("{z}/energy_uj"), "0");
    probes.energy.extend(
        Rapl::detect(t.root())
            .unwrap()
            .into_iter()
            .map(|r| Box::new(r) as Box<dyn EnergySource>),
    );
    let series: Vec<Snapshot> = (0..=10)
        .map(|i| {
            snap(
                i * 100,
                vec![
                    Some(Reading::Watts(2.0)),
                    Some(Reading::Joules(0.3 * i as f64)),
                ],
            )
        })
        .collect();
    // Prefill 150–450 ms, decode 450–950 ms, idle after.
    let marks = [
        (150_000_000, Phase::Prefill),
        (450_000_000, Phase::Decode),
        (950_000_000, Phase::Idle),
    ];
    let s = summarize(
        &probes,
        series,
        Duration::from_millis(1),
        Duration::from_millis(100),
        &marks,
        1_000_000_000,
        (300, 50),
    );
    let p = s.prefill.unwrap();
    let d = s.decode.unwrap();
    assert!(
        (p.seconds - 0.3).abs() < 1e-9 && (p.joules - 1.5).abs() < 1e-9,
        "{p:?}"
    );
    assert!((p.watts - 5.0).abs() < 1e-9 && (p.joules_per_token - 0.005).abs() < 1e-12);
    assert!((d.joules - 2.5).abs() < 1e-9 && (d.joules_per_token - 0.05).abs() < 1e-12);
    assert!((s.tokens_per_joule.unwrap() - 350.0 / 4.0).abs() < 1e-9);
    assert_eq!(s.energy_sources, ["hwmon:meter:power1", "rapl:package-0"]);
    assert!((s.sampler_overhead - 0.001).abs() < 1e-9);

    // A source that stops answering mid-case gives no energy at all, and says so.
    let series = vec![
        snap(
            0,
            vec![Some(Reading::Watts(2.0)), Some(Reading::Joules(0.0))],
        ),
        snap(100, vec![None, Some(Reading::Joules(0.3))]),
    ];
    let s = summarize(
        &probes,
        series,
        Duration::ZERO,
        Duration::from_millis(100),
        &marks,
        100_000_000,
        (1, 1),
    );
    assert_eq!((s.prefill, s.tokens_per_joule), (None, None));
    assert!(s
        .unavailable
        .iter()
        .any(|u| u.contains("stopped answering")));
}

#[test]
fn throttling_is_flagged_from_trip_points_and_frequency_drops() {
    let t = Tree::new();
    let z = "sys/class/thermal/thermal_zone0";
    t.put(&format!("{z}/type"), "cpu-thermal");
    t.put(&format!("{z}/temp"), "45000");
    t.put(&format!("{z}/trip_point_0_temp"), "85000");
    t.put(&format!("{z}/trip_point_0_type"), "passive");
    t.put(&format!("{z}/trip_point_1_temp"), "105000");
    t.put(&format!("{z}/trip_point_1_type"), "critical");
    t.put("sys/class/thermal/thermal_zone1/type", "battery");
    t.put("sys/class/thermal/thermal_zone1/temp", "garbage");
    t.put(
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq",
        "2400000",
    );
    t.put("sys/class/thermal/cooling_device0/type", "cpufreq-cpu0");
    t.put("sys/class/thermal/cooling_device0/cur_state", "0");
    let probes = Probes::detect(t.root());
    assert_eq!(probes.thermal.zones[0].throttle_trip(), Some(85.0));
    let r0 = probes.thermal.read();
    assert_eq!(r0.temps_c, [Some(45.0), None], "garbage reads as no value");
    assert_eq!(r0.freqs_mhz, [Some(2400.0)]);
    let mut hot = r0.clone();
    hot.temps_c[0] = Some(86.5);
    hot.freqs_mhz[0] = Some(1800.0);
    hot.cooling[0] = Some(3.0);
    let series = vec![
        Snapshot {
            thermal: r0,
            ..snap(0, vec![])
        },
        Snapshot {
            thermal: hot,
            ..snap(50, vec![])
        },
    ];
    let s = summarize(
        &probes,
        series,
        Duration::ZERO,
        Duration::from_millis(50),
        &[],
        50_000_000,
        (0, 0),
    );
    assert_eq!((s.temp_start_c, s.temp_max_c), (Some(45.0), Some(86.5)));
    let why = s.throttling.join("; ");
    assert!(why.contains("past its 85.0 °C trip point"), "{why}");
    assert!(why.contains("cpu0 fell from 2400 to 1800 MHz"), "{why}");
    assert!(why.contains("cpufreq-cpu0 rose from state 0 to 3"), "{why}");
}

#[test]
fn memory_from_status_smaps_rollup_and_the_model_mapping() {
    let t = Tree::new();
    t.put(
        "proc/self/status",
        "Name:\tsuite\nVmHWM:\t  400000 kB\nVmRSS:\t  350000 kB\nRssAnon:\t  100000 kB\nRssFile:\t  250000 kB\n",
    );
    t.put(
        "proc/self/smaps_rollup",
        "00400000-7fff rw-p 00000000 00:00 0 [rollup]\nRss:  350000 kB\nPss:  300000 kB\n",
    );
    let model = t.root().join("m.gguf");
    fs::write(&model, b"GGUF").unwrap();
    let m = model.display();
    t.put(
        "proc/self/smaps",
        &format!(
            "7f0000000000-7f0010000000 r--s 00000000 08:01 1234 {m}\nSize:  262144 kB\nRss:   100000 kB\nPss:   100000 kB\n\
             7f0010000000-7f0011000000 rw-p 00000000 00:00 0 \nSize:  16384 kB\nRss:  16384 kB\n"
        ),
    );
    let r = read_memory(t.root(), true);
    assert_eq!(
        (r.rss, r.rss_anon, r.rss_file, r.pss),
        (
            Some(350000 * 1024),
            Some(100000 * 1024),
            Some(250000 * 1024),
            Some(300000 * 1024)
        )
    );
    assert_eq!(
        model_mapping(t.root(), &model),
        Some((262144 * 1024, 100000 * 1024))
    );
    assert_eq!(model_mapping(t.root(), Path::new("/not/mapped")), None);
}

#[test]
fn this_process_has_memory_and_the_sampler_runs() {
    let probes = Probes::detect(Path::new("/"));
    let epoch = Instant::now();
    let sampler = Sampler::start(probes, Duration::from_millis(5), epoch);
    let ballast = std::hint::black_box(vec![1u8; 64 << 20]);
    // 50 periods: on a machine whose cores other tests keep busy the sampler thread gets
    // far fewer turns than that, but not fewer than five.
    std::thread::sleep(Duration::from_millis(250));
    let (probes, series, cost, period) = sampler.stop();
    assert!(series.len() >= 5, "{}", series.len());
    assert!(series.windows(2).all(|w| w[0].t_ns < w[1].t_ns));
    let s = summarize(&probes, series, cost, period, &[], 250_000_000, (0, 0));
    assert!(s.rss_anon_peak_bytes.unwrap() >= 64 << 20, "{s:?}");
    assert!(s.pss_peak_bytes.unwrap() > 0);
    // A share of the sampler's wall time (how large depends on how busy the machine is: no
    // bound on it here, only that it is one).
    assert!(
        s.sampler_overhead > 0.0 && s.sampler_overhead <= 1.0,
        "{}",
        s.sampler_overhead
    );
    drop(std::hint::black_box(ballast));
}

#[test]
fn memory_is_split_by_phase_and_the_load_summarized() {
    let t = Tree::new();
    t.put("sys/class/hwmon/hwmon0/name", "meter");
    t.put("sys/class/hwmon/hwmon0/power1_input", "3000000");
    let probes = Probes::detect(t.root());
    // RSS grows 1 MiB per 100 ms snapshot; PSS is read on the first and the sixth only.
    let series: Vec<Snapshot> = (0..10u64)
        .map(|i| Snapshot {
            mem: MemReading {
                rss: Some((i + 1) << 20),
                pss: (i % 5 == 0).then_some(i << 20),
                ..MemReading::default()
            },
            ..snap(i * 100, vec![Some(Reading::Watts(3.0))])
        })
        .collect();
    // Idle before 150 ms, prefill 150–450 ms (snapshots 2, 3, 4), decode 450–750 ms (5, 6, 7).
    let marks = [
        (150_000_000, Phase::Prefill),
        (450_000_000, Phase::Decode),
        (750_000_000, Phase::Idle),
    ];
    assert_eq!(phase_at(&marks, 0), Phase::Idle);
    assert_eq!(phase_at(&marks, 150_000_000), Phase::Prefill);
    assert_eq!(phase_at(&marks, 800_000_000), Phase::Idle);
    let s = summarize(
        &probes,
        series.clone(),
        Duration::ZERO,
        Duration::from_millis(100),
        &marks,
        900_000_000,
        (3, 3),
    );
    let (p, d) = (s.memory.prefill.unwrap(), s.memory.decode.unwrap());
    assert_eq!((p.snapshots, p.rss_peak_bytes), (3, Some(5 << 20)));
    assert_eq!(p.pss_peak_bytes, None, "no PSS was read in prefill");
    assert_eq!((d.snapshots, d.rss_peak_bytes), (3, Some(8 << 20)));
    assert_eq!(d.pss_peak_bytes, Some(5 << 20));
    assert_eq!((s.marks.len(), s.end_ns), (3, 900_000_000));

    // A load of 1.2 s sampled over 0.9 s: its peak, what stayed resident, and 3 W × 1.2 s.
    let l = summarize_load(&probes, &series, 1.2);
    assert_eq!(l.memory.unwrap().rss_peak_bytes, Some(10 << 20));
    assert_eq!(l.rss_after_bytes, Some(10 << 20));
    assert!((l.joules.unwrap() - 3.6).abs() < 1e-9 && (l.watts.unwrap() - 3.0).abs() < 1e-9);

    // A window of the series: its power and hottest reading.
    let (w, temp) = s.window(0.2, 0.6);
    assert!((w.unwrap() - 3.0).abs() < 1e-9);
    assert_eq!(temp, None, "no thermal zone, no temperature");
}

#[test]
fn cooldown_waits_for_the_hottest_zone_and_gives_up_after_its_limit() {
    let t = Tree::new();
    t.put("sys/class/thermal/thermal_zone0/type", "soc");
    t.put("sys/class/thermal/thermal_zone0/temp", "61500");
    t.put("sys/class/thermal/thermal_zone1/type", "battery");
    t.put("sys/class/thermal/thermal_zone1/temp", "35000");
    let (thermal, _) = thermal::Thermal::detect(t.root());
    assert_eq!(thermal.detected_hottest_c(), Some(61.5));
    // The SoC cools to 45 °C 200 ms from now.
    let path = t.root().join("sys/class/thermal/thermal_zone0/temp");
    let cooler = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        put_atomically(&path, "45000");
    });
    let poll = Duration::from_millis(10);
    let c = thermal
        .cool_down(46.0, Duration::from_secs(10), poll)
        .unwrap();
    cooler.join().unwrap();
    assert!(c.reached && c.from_c == 61.5 && c.to_c == 45.0, "{c:?}");
    // It polled until the write (whose moment is only known to within a poll, hence 0.15).
    assert!(c.waited_s >= 0.15 && c.waited_s < 5.0, "{c:?}");
    // Never cool enough: it stops at its limit and says so.
    let c = thermal
        .cool_down(30.0, Duration::from_millis(100), poll)
        .unwrap();
    assert!(!c.reached && c.to_c == 45.0 && c.waited_s >= 0.1, "{c:?}");
    assert_eq!(c.unreadable_zone, None);
    // Nothing to read: no cooldown at all, rather than a made-up temperature.
    let (none, _) = thermal::Thermal::detect(Tree::new().root());
    assert_eq!(none.cool_down(30.0, Duration::from_secs(1), poll), None);
}

/// A hot zone that stops answering must not make the device look cool: the cooldown does not
/// trust the cool battery alone, waits, and says which zone it could not read.
#[test]
fn cooldown_does_not_trust_the_other_zones_when_one_stays_unreadable() {
    let t = Tree::new();
    t.put("sys/class/thermal/thermal_zone0/type", "soc");
    t.put("sys/class/thermal/thermal_zone0/temp", "61500");
    t.put("sys/class/thermal/thermal_zone1/type", "battery");
    t.put("sys/class/thermal/thermal_zone1/temp", "35000");
    // Some zones are never readable; they are left out, not waited for.
    t.put("sys/class/thermal/thermal_zone2/type", "modem");
    t.put("sys/class/thermal/thermal_zone2/temp", "EINVAL");
    let (thermal, _) = thermal::Thermal::detect(t.root());
    assert_eq!(thermal.zones[2].detected_c, None);
    let soc = t.root().join("sys/class/thermal/thermal_zone0/temp");
    // The SoC's file stays unreadable (removed) for the whole wait.
    fs::remove_file(&soc).unwrap();
    let poll = Duration::from_millis(10);
    let c = thermal
        .cool_down(46.0, Duration::from_millis(150), poll)
        .unwrap();
    assert!(!c.reached, "the 35 °C battery alone must not count: {c:?}");
    assert_eq!(c.unreadable_zone.as_deref(), Some("soc"));
    assert_eq!((c.from_c, c.to_c), (61.5, 61.5), "its last reading stands");
    assert!(c.waited_s >= 0.15, "{c:?}");
    // Back, and cool: the cooldown ends as soon as every zone says so.
    put_atomically(&soc, "40000");
    let c = thermal
        .cool_down(46.0, Duration::from_secs(10), poll)
        .unwrap();
    assert!(
        c.reached && c.to_c == 40.0 && c.unreadable_zone.is_none(),
        "{c:?}"
    );
    // Unreadable during a case: the sampled reading has no value for it, not a stale one.
    fs::remove_file(&soc).unwrap();
    assert_eq!(thermal.read().temps_c, [None, Some(35.0), None]);
}
