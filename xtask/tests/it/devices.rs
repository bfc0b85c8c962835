//! Device runs end to end, for real: the shipped bench binary goes through `cargo xtask bench
//! --target` to a `local` device, to an `ssh` device (a real `sshd` this test starts on
//! loopback with keys it generates), and to an `adb` device (a recording `adb` first on PATH
//! that runs the device's shell commands here) — and the results come back tagged.
//!
//! The bench binary comes from `MELT_TEST_SUITE_BIN`, which `cargo xtask test` sets after
//! building it (a test cannot run cargo itself while cargo holds the build lock). Without it,
//! or without sshd, these tests fail naming what is missing (`--allow-skip` skips them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use melt_bench::store::{read_events, Event, Summary};

use melt_testkit::needs::suite_bin;
use melt_testkit::sshd::{toml_str, Sshd};

use crate::common::text;

struct Fixture {
    dir: tempfile::TempDir,
    bin: PathBuf,
    model: PathBuf,
}

impl Fixture {
    fn new(devices_toml: &str) -> Option<Fixture> {
        let bin = suite_bin()?;
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("tiny-llama.gguf");
        melt_testkit::TinyLlama::default().write(&model).unwrap();
        std::fs::write(dir.path().join("melt.toml"), devices_toml).unwrap();
        Some(Fixture { dir, bin, model })
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn target(&self) -> PathBuf {
        self.path("target")
    }

    fn xtask(&self, target: &str, extra: &[&str], bench_args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.current_dir(self.dir.path())
            .env("MELT_CONFIG", self.path("melt.toml"))
            .env("CARGO_TARGET_DIR", self.target())
            .env_remove("MELT_TARGET_DIR")
            .args(["bench", "--target", target, "--bench-bin"])
            .arg(&self.bin)
            .args(extra)
            .arg("--")
            .arg("--model")
            .arg(&self.model)
            .args(["--warm-up-time", "0", "--nresamples", "1000"])
            .args(bench_args);
        c
    }

    fn bench(&self, target: &str, extra: &[&str], bench_args: &[&str]) -> Output {
        self.xtask(target, extra, bench_args).output().unwrap()
    }

    /// The finished runs, oldest first.
    fn summaries(&self) -> Vec<Summary> {
        crate::common::summaries(&self.target())
    }
}

/// Every case of the shipped suite, measured, tagged with the device.
fn assert_complete(s: &Summary, device: &str) {
    assert_eq!(s.device.as_deref(), Some(device));
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.cases.len(), 8, "2 thread counts x 4 workloads");
    for c in &s.cases {
        assert!(c.id.ends_with(&format!(" @{device}")), "{}", c.id);
        assert!(c.metrics["tokens_per_second"].estimate > 0.0);
        assert!(
            c.criterion_dir.join("new/estimates.json").is_file(),
            "{}",
            c.criterion_dir.display()
        );
    }
}

#[test]
fn local_device_end_to_end() {
    let Some(f) = Fixture::new(
        r#"
[[device]]
name = "here"
transport = "local"
workdir = "dev dir"
tags = ["mine"]

[[device]]
name = "there"
transport = "local"
workdir = "other dev"
tags = ["mine"]
"#,
    ) else {
        return;
    };
    // Two devices by their tag: one process each, at the same time.
    let out = f.bench("mine", &[], &["--sample-size", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut runs = f.summaries();
    assert_eq!(runs.len(), 2);
    runs.sort_by(|a, b| a.device.cmp(&b.device));
    assert_complete(&runs[0], "here");
    assert_complete(&runs[1], "there");
    assert_eq!(runs[0].device_props["arch"], std::env::consts::ARCH);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("## there"), "{stdout}");
    // The model sits in the device's cache by hash.
    let sha = melt_bench::model::sha256_file(&f.model).unwrap();
    assert!(f
        .path("dev dir/cache/models")
        .join(&sha)
        .join("tiny-llama.gguf")
        .is_file());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pushed"), "{err}");
    // The device's table is printed, the merged report written.
    let stdout = melt_testkit::squeezed(&String::from_utf8_lossy(&out.stdout));
    assert!(
        stdout.contains("## here") && stdout.contains("| here | llama"),
        "{stdout}"
    );
    assert!(f.target().join("melt/report/index.html").is_file());

    // Again: nothing is pushed twice.
    let again = f.bench("here", &[], &["--sample-size", "3", "tg128"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        !String::from_utf8_lossy(&again.stderr).contains("pushed"),
        "{}",
        text(&again)
    );
    assert_eq!(f.summaries().len(), 3);
}

#[test]
fn ssh_device_end_to_end_with_lost_connection_and_resume() {
    let Some(f) = Fixture::new("") else {
        return;
    };
    let keys = f.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let Some(sshd) = Sshd::start(&keys) else {
        return;
    };
    let workdir = f.path("remote home/melt $(touch /tmp/melt-pwned-workdir)");
    let inventory = format!(
        "{}\n{}",
        sshd.device("jetson", &sshd.key, &workdir),
        sshd.device("stranger", &keys.join("stranger_key"), &workdir)
    );
    std::fs::write(f.path("melt.toml"), inventory).unwrap();

    // A host run first: the merged report must show the device beside it.
    let host = Command::new(&f.bin)
        .arg("--bench")
        .arg("--model")
        .arg(&f.model)
        .args(["--warm-up-time", "0", "--sample-size", "3"])
        .args(["--nresamples", "1000", "--target-dir"])
        .arg(f.target())
        .output()
        .unwrap();
    assert!(host.status.success(), "{}", text(&host));

    let out = f.bench("jetson", &[], &["--sample-size", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    let runs = f.summaries();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].device, None);
    assert_complete(&runs[1], "jetson");
    for p in ["/tmp/melt-pwned-ssh", "/tmp/melt-pwned-workdir"] {
        assert!(!Path::new(p).exists(), "{p}: injection");
    }
    let report = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(f.dir.path())
        .env("CARGO_TARGET_DIR", f.target())
        .args(["report", "--html"])
        .output()
        .unwrap();
    let table = melt_testkit::squeezed(&String::from_utf8_lossy(&report.stdout));
    assert!(report.status.success(), "{}", text(&report));
    assert!(
        table.contains("| jetson | llama") && table.contains("| host | llama"),
        "{table}"
    );
    let page = std::fs::read_to_string(f.target().join("melt/report/index.html")).unwrap();
    assert!(page.contains("@jetson"));

    // A wrong key: a clear error, nothing run.
    let out = f.bench("stranger", &[], &["--sample-size", "3"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`stranger` is not reachable") && err.contains("Permission denied"),
        "{err}"
    );

    // The connection dies mid-run: what was streamed stays, --resume finishes the rest.
    let mut run = f
        .xtask("jetson", &[], &["--sample-size", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = crate::common::first_case_finished(&f.target().join("melt/runs"), &mut run);
    sshd.cut_connections();
    let lost = run.wait_with_output().unwrap();
    assert_eq!(lost.status.code(), Some(2), "{}", text(&lost));
    let err = String::from_utf8_lossy(&lost.stderr);
    assert!(
        err.contains("lost `jetson` mid-run") && err.contains("--resume"),
        "{err}"
    );
    let kept = read_events(&log).unwrap();
    let finished: Vec<String> = kept
        .iter()
        .filter_map(|e| match e {
            Event::CaseEnd { case, .. } => Some(case.clone()),
            _ => None,
        })
        .collect();
    assert!(!finished.is_empty() && finished.len() < 8, "{finished:?}");
    let state = std::fs::read_to_string(log.with_file_name("device.json")).unwrap();
    assert!(state.contains("\"interrupted\""), "{state}");

    // Other bench arguments would resume a different run under this one's name: refused.
    let other = f.bench("jetson", &["--resume"], &["--sample-size", "3"]);
    assert_eq!(other.status.code(), Some(2), "{}", text(&other));
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(
        err.contains("--resume continues the run of `jetson` started with")
            && err.contains(r#"new: ["3"], left out: ["60"]"#),
        "{err}"
    );
    // As the hint says it: `--resume` alone, and the run's own arguments are replayed.
    let resumed = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(f.dir.path())
        .env("MELT_CONFIG", f.path("melt.toml"))
        .env("CARGO_TARGET_DIR", f.target())
        .env_remove("MELT_TARGET_DIR")
        .args(["bench", "--target", "jetson", "--resume", "--bench-bin"])
        .arg(&f.bin)
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed));
    let all = read_events(&log).unwrap();
    for case in &finished {
        let starts = all
            .iter()
            .filter(|e| matches!(e, Event::CaseStart { case: c, .. } if c == case))
            .count();
        assert_eq!(starts, 1, "{case} finished before the cut: not run again");
    }
    let last = f.summaries().pop().unwrap();
    assert_complete(&last, "jetson");
    for c in &last.cases {
        assert_eq!(
            c.samples, 60,
            "{}: resumed with the run's --sample-size",
            c.id
        );
    }
    let nothing = f.bench("jetson", &["--resume"], &[]);
    assert_eq!(nothing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&nothing.stderr).contains("nothing to resume"),
        "{}",
        text(&nothing)
    );
}

/// A recording `adb`: logs its arguments (unit separator between, record separator after), then does to this machine what adb would do to a
/// phone. Like adb without shell protocol v2, `adb shell` exits 0 whatever the command did.
/// Its shell is Android's: mksh, with toybox's applets, awk and getprop alone on PATH
/// (`$MELT_ANDROID_PATH`), so a bashism or a GNU-only option fails here first.
const FAKE_ADB: &str = r#"#!/bin/sh
{ for a in "$@"; do printf '%s\037' "$a"; done; printf '\036'; } >> "$MELT_ADB_LOG"
if [ "$1" = "-s" ]; then shift 2; fi
cmd=$1; shift
case "$cmd" in
  shell) env -i PATH="$MELT_ANDROID_PATH" HOME=/ /usr/bin/mksh -c "$*"; exit 0 ;;
  push) cp "$1" "$2" && echo "$1: 1 file pushed" ;;
  pull) cp "$1" "$2" && echo "$1: 1 file pulled" ;;
  connect) echo "connected to $1" ;;
  *) echo "fake adb: $cmd?" >&2; exit 1 ;;
esac
"#;

/// A `/system/bin` as Android's: toybox's applets, `sh` = mksh, and the one true awk
/// (Android ships BWK awk beside toybox).
fn android_bin(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let link = |target: &str, name: &str| {
        std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
    };
    let applets = Command::new("toybox")
        .output()
        .expect("toybox (Android's applets; `cargo xtask test` installs Debian's toybox package)");
    for applet in String::from_utf8_lossy(&applets.stdout).split_whitespace() {
        link("/usr/bin/toybox", applet);
    }
    for (target, name) in [("/usr/bin/mksh", "sh"), ("/usr/bin/original-awk", "awk")] {
        assert!(
            Path::new(target).is_file(),
            "{target}: `cargo xtask test` installs it"
        );
        let _ = std::fs::remove_file(dir.join(name));
        link(target, name);
    }
    dir.to_path_buf()
}

const FAKE_GETPROP: &str = r#"#!/bin/sh
case "$1" in
  ro.product.model) echo "Pixel 7" ;;
  ro.soc.model) echo "Tensor G2" ;;
  ro.build.version.release) echo 14 ;;
  ro.build.version.sdk) echo 34 ;;
  *) echo "" ;;
esac
"#;

#[test]
fn adb_device_command_lines() {
    let Some(f) = Fixture::new("") else {
        return;
    };
    let tools = f.path("tools");
    let android = android_bin(&f.path("system bin"));
    std::fs::create_dir_all(&tools).unwrap();
    for (dir, name, body) in [
        (&tools, "adb", FAKE_ADB),
        (&android, "getprop", FAKE_GETPROP),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let workdir = f.path("data local tmp/melt '$(touch /tmp/melt-pwned-adb)'");
    let vv = Command::new("rustc").arg("-vV").output().unwrap().stdout;
    let host_triple = String::from_utf8(vv)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .unwrap();
    std::fs::write(
        f.path("melt.toml"),
        format!(
            "[[device]]\nname = \"pixel 7; reboot\"\ntransport = \"adb\"\n\
             serial = \"emulator-5554\"\ntriple = {}\nworkdir = {}\n",
            toml_str(&host_triple),
            toml_str(&workdir.display().to_string())
        ),
    )
    .unwrap();
    let adb_log = f.path("adb.log");
    let path = format!("{}:{}", tools.display(), std::env::var("PATH").unwrap());
    let run = |bench_args: &[&str]| {
        f.xtask("android", &[], bench_args)
            .env("PATH", &path)
            .env("MELT_ANDROID_PATH", &android)
            .env("MELT_ADB_LOG", &adb_log)
            .output()
            .unwrap()
    };
    let out = run(&["--sample-size", "3", "/pp512/"]);
    assert!(out.status.success(), "{}", text(&out));
    let s = f.summaries().pop().unwrap();
    assert_eq!(s.device.as_deref(), Some("pixel 7; reboot"));
    assert_eq!(s.cases.len(), 2, "pp512 at two thread counts");
    assert_eq!(s.device_props["android_model"], "Pixel 7");
    assert_eq!(s.device_props["android_api"], "34");
    assert!(!Path::new("/tmp/melt-pwned-adb").exists());

    let calls: Vec<Vec<String>> = std::fs::read_to_string(&adb_log)
        .unwrap()
        .split('\u{1e}')
        .filter(|call| !call.is_empty())
        .map(|l| {
            l.split('\u{1f}')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect();
    assert!(
        calls.iter().all(|c| c[..2] == ["-s", "emulator-5554"]),
        "{calls:?}"
    );
    let w = workdir.display().to_string();
    let sha = melt_bench::model::sha256_file(&f.model).unwrap();
    let bin_sha = melt_bench::model::sha256_file(&f.bin).unwrap();
    let bin_name = f.bin.file_name().unwrap().to_string_lossy().to_string();
    let has = |want: &[&str]| calls.iter().any(|c| c[2..] == *want);
    let model_part = format!("{w}/cache/models/{sha}/tiny-llama.gguf.part");
    assert!(
        has(&["push", &f.model.display().to_string(), &model_part]),
        "{calls:#?}"
    );
    let bin_part = format!("{w}/bin/{}/{bin_name}.part", &bin_sha[..16]);
    assert!(
        has(&["push", &f.bin.display().to_string(), &bin_part]),
        "{calls:#?}"
    );
    let shells: Vec<&String> = calls
        .iter()
        .filter(|c| c[2] == "shell")
        .map(|c| &c[3])
        .collect();
    assert!(
        shells
            .iter()
            .any(|s| s.contains("getprop ro.product.model")),
        "probe"
    );
    let run_line = shells
        .iter()
        .find(|s| s.contains("'--message-format' 'json'"))
        .expect("the run");
    assert!(
        run_line.contains("echo \"__MELT_EXIT__=$melt_code\""),
        "{run_line}"
    );
    assert!(
        run_line.contains("'--device' 'pixel 7; reboot'"),
        "{run_line}"
    );
    assert!(run_line.contains("svc power stayon true"), "{run_line}");
    assert!(
        calls
            .iter()
            .any(|c| c[2] == "pull" && c[3].ends_with("/samples.jsonl")),
        "{calls:#?}"
    );

    // The device's exit status comes back although `adb shell` exits 0: a bad backend is exit
    // 2 on the device, and named here.
    let out = run(&["--backend", "nosuch"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown backend `nosuch`"), "{err}");
}

/// A bench binary that lists one case and then hangs without a word: what a wedged model
/// load looks like from the host.
const HANGING_BENCH: &str = r#"#!/bin/sh
for a in "$@"; do
  if [ "$a" = "--list" ]; then echo '[{"id":"m/tg1/b t=1 @here","kind":"case"}]'; exit 0; fi
done
echo $$ > "$MELT_TEST_HANG_PID"
exec sleep 600
"#;

#[test]
fn a_silent_device_is_killed_after_the_case_timeout() {
    let Some(mut f) = Fixture::new(
        "[[device]]\nname = \"here\"\ntransport = \"local\"\nworkdir = \"dev\"\n\
         env = { MELT_TEST_HANG_PID = \"hang.pid\" }\n",
    ) else {
        return;
    };
    f.bin = f.path("hanging-bench");
    std::fs::write(&f.bin, HANGING_BENCH).unwrap();
    std::fs::set_permissions(&f.bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let start = Instant::now();
    let out = f.bench("here", &["--case-timeout", "2"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(start.elapsed() < Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sent nothing for 2 s"), "{err}");
    // The process on the device is gone, not left running.
    let pid = std::fs::read_to_string(f.path("dev/hang.pid")).unwrap();
    let alive = Path::new("/proc").join(pid.trim()).join("cmdline");
    let still = std::fs::read_to_string(&alive).unwrap_or_default();
    assert!(
        !still.contains("sleep"),
        "pid {} still runs: {still}",
        pid.trim()
    );
}

#[test]
fn tasks_run_on_a_device_with_their_data_files_pushed_by_hash() {
    let Some(f) =
        Fixture::new("[[device]]\nname = \"here\"\ntransport = \"local\"\nworkdir = \"dev dir\"\n")
    else {
        return;
    };
    let conv = f.path("conversations.json");
    std::fs::write(&conv, r#"[["Hello world", "the other"], ["what a lot"]]"#).unwrap();
    let corpus = f.path("text.txt");
    std::fs::write(&corpus, "the hello world and the other world. ".repeat(12)).unwrap();
    let (c, t) = (conv.display().to_string(), corpus.display().to_string());
    let out = f.bench(
        "here",
        &[],
        &[
            "--tasks-only",
            "--replay",
            &c,
            "--think-time",
            "0",
            "--conversation-gap",
            "0",
            "--fixed-output",
            "2",
            "--chat-template",
            "chatml",
            "--perplexity",
            &t,
            "--ppl-ctx",
            "32",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let runs = f.summaries();
    let s = runs.last().unwrap();
    assert_eq!(s.device.as_deref(), Some("here"));
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    // At the sweep's last point (all cores), tagged with the device like every case.
    let t = format!("t={} @here", melt_bench::all_cores());
    let ids: Vec<&str> = s.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            format!("tiny-llama/replay:conversations.json/llama.cpp {t}"),
            format!("tiny-llama/perplexity:text.txt@32/llama.cpp {t}"),
        ],
        "{}",
        text(&out)
    );
    let melt_bench::tasks::TaskResult::Replay(r) = &s.tasks[0].result else {
        panic!("{:?}", s.tasks[0].result)
    };
    assert_eq!(r.turns.len(), 3);
    assert!(r.template.contains("built-in chatml"));
    // The data files sit in the device's cache by hash, under their own names.
    for p in [&conv, &corpus] {
        let sha = melt_bench::model::sha256_file(p).unwrap();
        let name = p.file_name().unwrap();
        assert!(f.path("dev dir/cache/data").join(&sha).join(name).is_file());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Perplexity (llama-perplexity's method"),
        "{stdout}"
    );
}

/// A run that selects llama.cpp's cases pushes the GGUF and not the suite's 1 GB ONNX export.
#[test]
fn a_device_gets_only_the_suite_models_its_cases_use() {
    // No [models] in this melt.toml: the suite's models are melt's built-in ones.
    let Some(f) =
        Fixture::new("[[device]]\nname = \"here\"\ntransport = \"local\"\nworkdir = \"dev\"\n")
    else {
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(f.dir.path())
        .env("MELT_CONFIG", f.path("melt.toml"))
        .env("CARGO_TARGET_DIR", f.target())
        .env_remove("MELT_TARGET_DIR")
        .args(["bench", "--target", "here", "--bench-bin"])
        .arg(&f.bin)
        .args([
            "--",
            "gemma-3-270m-q4_k_m/tg128/llama.cpp t=1$",
            "--sample-size",
            "1",
        ])
        .args(["--warm-up-time", "0", "--nresamples", "1000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(f.summaries().pop().unwrap().cases.len(), 1);
    let pushed: Vec<String> = std::fs::read_dir(f.path("dev/cache/models"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        pushed,
        ["a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"],
        "{}",
        text(&out)
    );
}
