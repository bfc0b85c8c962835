use super::*;

#[test]
fn criterion_style_arguments() {
    let a = Args::parse([
        "--bench",
        "pp512",
        "--save-baseline",
        "main",
        "--sample-size=12",
        "--warm-up-time",
        "0.5",
    ])
    .unwrap();
    assert_eq!(a.filter.as_deref(), Some("pp512"));
    assert_eq!(a.baseline, BaselineMode::Save("main".into()));
    assert_eq!(a.sampling.fixed_samples, Some(12));
    assert_eq!(a.sampling.warm_up, Duration::from_millis(500));
    let a = Args::parse(["--baseline", "main", "--model", "/m/x.gguf", "--list"]).unwrap();
    assert_eq!(a.baseline, BaselineMode::CompareStrict("main".into()));
    assert_eq!(a.models, vec![PathBuf::from("/m/x.gguf")]);
    assert_eq!(a.mode, Mode::List(ListFormat::Pretty));
    assert_eq!(
        Args::parse(Vec::<String>::new()).unwrap().baseline,
        BaselineMode::default()
    );
}

#[test]
fn output_formats() {
    let a = Args::parse(Vec::<String>::new()).unwrap();
    assert_eq!(a.output_format, OutputFormat::Criterion);
    assert!(!a.events_on_stdout());
    let a = Args::parse(["--message-format", "json"]).unwrap();
    assert!(a.events_on_stdout());
    let a = Args::parse(["--output-format=bencher"]).unwrap();
    assert_eq!(a.output_format, OutputFormat::Bencher);
    // melt's old spelling of the event stream is criterion's flag now, and says so.
    let e = Args::parse(["--output-format", "json-stream"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("json-stream") && e.contains("bencher"), "{e}");
    let a = Args::parse(["--list", "--format", "json"]).unwrap();
    assert_eq!(a.mode, Mode::List(ListFormat::Json));
}

#[test]
fn criterion_flags_mean_what_they_mean_in_criterion() {
    let a = Args::parse(["--bench", "--noplot", "--color", "never", "-v"]).unwrap();
    assert!(a.noplot);
    assert_eq!(a.mode, Mode::Benchmark);
    assert!(
        Args::parse(["--colour=always", "--noplot", "--quiet"])
            .unwrap()
            .quiet
    );
    let e = Args::parse(["--color", "sometimes"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("sometimes") && e.contains("never"), "{e}");
    assert!(Args::parse(["--quiet", "--verbose"]).is_err());
    // Two baselines at once are a mistake, as in criterion.
    let e = Args::parse(["--baseline", "a", "--save-baseline", "b"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--baseline") && e.contains("--save-baseline"),
        "{e}"
    );
    assert_eq!(
        Args::parse(["--discard-baseline"]).unwrap().baseline,
        BaselineMode::Discard
    );
    assert_eq!(
        Args::parse(["--baseline", "main"]).unwrap().baseline,
        BaselineMode::CompareStrict("main".into())
    );
    // -b and -n are llama-bench's (batch size, generated tokens): a baseline's name there is
    // a bad number, named.
    let e = Args::parse(["-b", "main"]).unwrap_err().to_string();
    assert!(e.contains("main") && e.contains("whole numbers"), "{e}");
}

#[test]
fn without_bench_it_tests_as_criterion_does() {
    // `cargo test --benches` passes no --bench; `cargo bench` does.
    assert_eq!(Args::parse(["--nocapture"]).unwrap().mode, Mode::Test);
    assert_eq!(Args::parse(["--bench"]).unwrap().mode, Mode::Benchmark);
    assert_eq!(Args::parse(["--bench", "--test"]).unwrap().mode, Mode::Test);
    assert!(Args::parse(["--help"]).unwrap().help);
    let help = help();
    for flag in [
        "--output-format",
        "--message-format",
        "--noplot",
        "--perplexity",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn device_tag_and_skipped_cases() {
    let a = Args::parse([
        "--device",
        "pixel 7; rm -rf /",
        "--skip",
        "m/pp4/b t=1 @x",
        "--skip=m/tg4/b t=1 @x",
    ])
    .unwrap();
    assert_eq!(a.device.as_deref(), Some("pixel 7; rm -rf /"));
    assert_eq!(a.skip, ["m/pp4/b t=1 @x", "m/tg4/b t=1 @x"]);
    let e = Args::parse(["--skip"]).unwrap_err().to_string();
    assert!(e.contains("--skip"), "{e}");
}

#[test]
fn quick_changes_defaults_but_not_explicit_options() {
    let a = Args::parse(["--quick", "--target-ci", "1"]).unwrap();
    assert_eq!(
        a.sampling.measurement_time,
        Sampling::quick().measurement_time
    );
    assert_ne!(
        a.sampling.measurement_time,
        Sampling::default().measurement_time
    );
    assert!((a.sampling.target_rel_ci - 0.01).abs() < 1e-12);
}

#[test]
fn bad_flags_are_named() {
    let e = Args::parse(["--sample-sise", "3"]).unwrap_err().to_string();
    assert!(
        e.contains("--sample-sise") && e.contains("--sample-size"),
        "{e}"
    );
    let e = Args::parse(["--sample-size", "zero"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--sample-size") && e.contains("zero"), "{e}");
    let e = Args::parse(["--baseline"]).unwrap_err().to_string();
    assert!(e.contains("--baseline") && e.contains("value"), "{e}");
    let e = Args::parse(["--warm-up-time", "-1"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("non-negative"), "{e}");
    let e = Args::parse(["a", "b"]).unwrap_err().to_string();
    assert!(e.contains("'b'"), "{e}");
    let e = Args::parse(["--min-samples", "9", "--max-samples", "3"]).unwrap_err();
    assert!(e.to_string().contains("at most --max-samples"));
    for bad in ["0", "-5m", "10d", "m", "1e400"] {
        let e = Args::parse(["--sustained", bad]).unwrap_err().to_string();
        assert!(
            e.contains("--sustained") && e.contains("90s, 10m"),
            "{bad}: {e}"
        );
    }
    let e = Args::parse(["--cooldown-tolerance", "-1"]).unwrap_err();
    assert!(e.to_string().contains("degrees Celsius"), "{e}");
}

#[test]
fn sustained_and_cooldown() {
    let s = |v: &str| Args::parse(["--sustained", v]).unwrap().sampling.sustained;
    assert_eq!(s("90"), Some(Duration::from_secs(90)));
    assert_eq!(s("90s"), Some(Duration::from_secs(90)));
    assert_eq!(s("1.5m"), Some(Duration::from_secs(90)));
    assert_eq!(s("2h"), Some(Duration::from_secs(7200)));
    let a = Args::parse(["--cooldown"])
        .unwrap()
        .sampling
        .cooldown
        .unwrap();
    assert_eq!(a, crate::probe::thermal::Cooldown::default());
    let a = Args::parse(["--cooldown-tolerance", "0.5", "--cooldown-max=60"])
        .unwrap()
        .sampling
        .cooldown
        .unwrap();
    assert_eq!((a.tolerance_c, a.max_wait), (0.5, Duration::from_secs(60)));
    assert_eq!(Args::parse(["--quick"]).unwrap().sampling.cooldown, None);
}

#[test]
fn llama_bench_flags_sweep_at_run_time() {
    let a = Args::parse([
        "-p", "512", "-n", "128", "-pg", "512,128", "-d", "0,512", "-t", "1-4*2", "-t", "3", "-b",
        "2048", "-ub", "256,512", "-ctk", "q8_0", "-ctv", "f16", "-fa", "0,1", "-ngl", "0", "-r",
        "5",
    ])
    .unwrap();
    let s = &a.sweep;
    assert_eq!(
        (&s.n_prompt[..], &s.n_gen[..], &s.pg[..]),
        (&[512][..], &[128][..], &[(512, 128)][..])
    );
    assert_eq!(s.depth, [0, 512]);
    assert_eq!(s.threads, [1, 2, 4, 3]);
    assert_eq!(
        (&s.n_batch[..], &s.n_ubatch[..]),
        (&[2048][..], &[256, 512][..])
    );
    assert_eq!(
        (&s.type_k[..], &s.type_v[..]),
        (&["q8_0".to_string()][..], &["f16".to_string()][..])
    );
    assert_eq!(s.flash_attn.len(), 2);
    assert_eq!(s.n_gpu_layers, [0]);
    assert_eq!(a.sampling.fixed_samples, Some(5));
    let e = Args::parse(["-t", "0"]).unwrap_err().to_string();
    assert!(e.contains("positive"), "{e}");
    let e = Args::parse(["-pg", "512"]).unwrap_err().to_string();
    assert!(e.contains("pair"), "{e}");
}
