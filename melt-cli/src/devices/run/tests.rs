use super::*;
use crate::devices::transport::Transport;
use crate::devices::Kind;

fn device(workdir: &str, kind: Kind) -> Device {
    Device {
        name: "dev 1; $(touch /tmp/melt-pwned-name)".into(),
        kind,
        transport: Transport::Local,
        triple: "t".into(),
        workdir: workdir.into(),
        env: [(
            "MELT_TEST_VALUE".to_string(),
            "v '$(touch /tmp/melt-pwned-env)' ;|".to_string(),
        )]
        .into(),
        tags: vec![],
        api_level: 28,
        libs: vec![],
        rustc: None,
    }
}

/// The run script, executed by a real `sh`, hands hostile names, paths and values to the
/// program verbatim and forwards its exit status as the last line.
#[test]
fn run_script_quotes_everything_and_forwards_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().join("work dir $(touch /tmp/melt-pwned-dir)");
    std::fs::create_dir_all(workdir.join("run")).unwrap();
    let prog = workdir.join("bin 'x'");
    std::fs::write(
        &prog,
        "#!/bin/sh\nfor a in \"$@\"; do printf 'arg=%s\\n' \"$a\"; done\nprintf 'env=%s\\n' \"$MELT_TEST_VALUE\"\nprintf 'ld=%s\\n' \"$LD_LIBRARY_PATH\"\nexit 7\n",
    )
    .unwrap();
    std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let w = workdir.display().to_string();
    let d = device(&w, Kind::Local);
    let args = vec![
        "--device".to_string(),
        d.name.clone(),
        "a b".into(),
        "`id`".into(),
    ];
    let script = run_script(
        &d,
        &prog.display().to_string(),
        &args,
        &format!("{w}/run/x.pid"),
    );
    let out = Transport::Local.shell(&script).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "arg=--device",
            "arg=dev 1; $(touch /tmp/melt-pwned-name)",
            "arg=a b",
            "arg=`id`"
        ]
    );
    assert_eq!(lines[4], "env=v '$(touch /tmp/melt-pwned-env)' ;|");
    assert!(lines[5].starts_with(&format!("ld={w}/lib")), "{}", lines[5]);
    assert_eq!(*lines.last().unwrap(), "__MELT_EXIT__=7");
    for f in [
        "/tmp/melt-pwned-name",
        "/tmp/melt-pwned-env",
        "/tmp/melt-pwned-dir",
    ] {
        assert!(!Path::new(f).exists(), "{f} was created: injection");
    }
    assert!(
        !workdir.join("run/x.pid").exists(),
        "pid file removed at the end"
    );
}

#[test]
fn android_script_keeps_the_device_awake_and_restores() {
    let d = device("/data/local/tmp/melt", Kind::Adb);
    let s = run_script(
        &d,
        "/data/local/tmp/melt/bin/x/suite",
        &[],
        "/data/local/tmp/melt/run/r.pid",
    );
    assert!(s.contains("svc power stayon true"), "{s}");
    assert!(
        s.contains("settings put global stay_on_while_plugged_in \"$melt_stay\""),
        "{s}"
    );
    assert!(
        s.starts_with("cd '/data/local/tmp/melt' || exit 97\n"),
        "{s}"
    );
}

#[test]
fn device_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.gguf");
    std::fs::write(&model, b"GGUF").unwrap();
    let args: Vec<String> = [
        "--quick",
        "--model",
        model.to_str().unwrap(),
        "--target-dir",
        "/x",
        "pp512",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let a = DeviceArgs::parse(&args).unwrap();
    assert_eq!(a.models.len(), 1);
    let d = device("/w", Kind::Ssh);
    let skip: BTreeSet<String> = ["m/pp512/llama.cpp t=1 @d".to_string()].into();
    let v = a.for_device(&d, RUN_MODE, &skip);
    let sha = &a.models[0].sha256;
    assert_eq!(
        v,
        [
            "--quick",
            "pp512",
            "--model",
            &format!("/w/cache/models/{sha}/m.gguf"),
            "--bench",
            "--message-format",
            "json",
            "--device",
            &d.name,
            "--skip",
            "m/pp512/llama.cpp t=1 @d"
        ]
    );
    // Task data files travel by hash under their own names; a built-in template name
    // is passed on as it is.
    let text = dir.path().join("corpus.txt");
    std::fs::write(&text, b"some text").unwrap();
    let args: Vec<String> = [
        "--replay",
        text.to_str().unwrap(),
        "--chat-template",
        "gemma",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let a = DeviceArgs::parse(&args).unwrap();
    let sha = melt_bench::model::sha256_file(&text).unwrap();
    assert_eq!(
        a.for_device(&d, &[], &BTreeSet::new())[..4],
        [
            "--chat-template".to_string(),
            "gemma".into(),
            "--replay".into(),
            format!("/w/cache/data/{sha}/corpus.txt"),
        ]
    );
    // A shipped set is inside the binary: nothing to push, its name goes as `melt:NAME`.
    let a = DeviceArgs::parse(&["--choices".into(), "openbookqa".into()]).unwrap();
    assert!(a.data.is_empty());
    assert_eq!(
        a.for_device(&d, &[], &BTreeSet::new())[..2],
        ["--choices".to_string(), "melt:openbookqa".into()]
    );
    let e = DeviceArgs::parse(&["--choices".into(), "melt:nope".into()]).unwrap_err();
    assert!(
        format!("{e:#}").contains("no shipped data set `nope`"),
        "{e:#}"
    );
    let e = DeviceArgs::parse(&["--choices".into(), "/no/such.jsonl".into()]).unwrap_err();
    assert!(
        format!("{e:#}").contains("--choices /no/such.jsonl"),
        "{e:#}"
    );
    // A KL-divergence reference is pushed like data; writing one on a device is refused.
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("f32.kld");
    let mut w = melt_bench::tasks::log_probs::Writer::create(&reference, 8, 4, &[1; 16]).unwrap();
    for _ in 0..2 * melt_bench::tasks::log_probs::scored_per_chunk(8) {
        w.row(&[0.5, 0.0, -1.0, 2.0]).unwrap();
    }
    w.finish().unwrap();
    let a =
        DeviceArgs::parse(&["--kl-divergence".into(), reference.display().to_string()]).unwrap();
    let sha = melt_bench::model::sha256_file(&reference).unwrap();
    assert_eq!(
        a.for_device(&d, &[], &BTreeSet::new())[..2],
        [
            "--kl-divergence".to_string(),
            format!("/w/cache/data/{sha}/f32.kld")
        ]
    );
    let e = DeviceArgs::parse(&["--kl-divergence-base".into(), "x.kld".into()]).unwrap_err();
    assert!(e.to_string().contains("write it on the host"), "{e}");
    for bad in ["--message-format", "--device", "--skip"] {
        let e = DeviceArgs::parse(&[bad.to_string(), "x".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("set by `cargo melt bench --target`"), "{e}");
    }
    let e = format!(
        "{:#}",
        DeviceArgs::parse(&["--sample-size".into(), "zero".into()]).unwrap_err()
    );
    assert!(e.contains("--sample-size"), "{e}");
    let e = format!(
        "{:#}",
        DeviceArgs::parse(&["--model".into(), "/no/such.gguf".into()]).unwrap_err()
    );
    assert!(e.contains("/no/such.gguf"), "{e}");
}

#[test]
fn device_builds_leave_the_host_reports_out() {
    let mut bench = crate::workspace::BenchTarget {
        package: "melt".into(),
        name: "suite".into(),
        package_dir: "/w".into(),
        features: vec!["host-reports".into(), "libtorch".into()],
    };
    assert_eq!(
        device_features(&bench, &["libtorch".into(), "llama-cpp".into()]),
        [
            "--no-default-features",
            "--features",
            "llama-cpp,onnxruntime,libtorch"
        ]
    );
    // A user's package: its own features, as asked.
    bench.features = vec!["fast".into()];
    assert!(device_features(&bench, &[]).is_empty());
    assert_eq!(
        device_features(&bench, &["fast".into()]),
        ["--features", "fast"]
    );
}

#[test]
fn the_case_list_is_read_as_json() {
    // Other lines may come first (a host run's notes on stderr, a transport's banner).
    let out = "melt: note\n[{\"id\":\"m/pp4/llama.cpp t=1 @d\",\"kind\":\"case\",\"model\":\"m\"},\
               {\"id\":\"ppl:x\",\"kind\":\"task\",\"model\":\"n\"}]\r\n__MELT_EXIT__=0\n";
    let l = listed(out).unwrap();
    assert_eq!(
        l.ids,
        ["m/pp4/llama.cpp t=1 @d".to_string(), "ppl:x".into()].into()
    );
    assert_eq!(l.models, ["m".to_string(), "n".into()].into());
    let e = format!("{:#}", listed("m/pp4: benchmark\n").unwrap_err());
    assert!(e.contains("no JSON list"), "{e}");
}
