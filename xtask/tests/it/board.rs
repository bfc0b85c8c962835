//! melt on a foreign architecture, for real: the suite cross-built for aarch64 (llama.cpp's
//! ARM kernels; ONNX Runtime's and libtorch's aarch64 libraries from PyPI beside it) runs on
//! the emulated arm64 board over ssh, and its rows come back beside the host's; a connection
//! cut mid-run keeps what was streamed and `--resume` finishes it.
//!
//! `cargo xtask test` sets the board up (`cargo xtask setup arm64-board`) and cross-builds
//! the binary first: `MELT_TEST_BOARD_BIN` and `MELT_TEST_BOARD_DEVICE` name them. Emulated
//! speed is qemu's, so nothing here looks at how fast.

use std::path::Path;
use std::process::{Command, Stdio};

use melt_bench::store::{read_events, Event};

use melt_testkit::needs;
use melt_testkit::onnx::TinyOnnxLm;

use crate::common::{first_case_finished, summaries, text};

fn xtask(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.current_dir(dir)
        .env("MELT_CONFIG", dir.join("melt.toml"))
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env_remove("MELT_TARGET_DIR")
        .args(args);
    c
}

#[test]
fn the_board_runs_the_cross_built_suite_beside_the_host() {
    let Some((bin, device, convert)) = needs::board() else {
        return;
    };
    let Some(host_bin) = needs::suite_bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gguf = d.join("tiny-llama.gguf");
    melt_testkit::TinyLlama::default().write(&gguf).unwrap();
    let onnx = TinyOnnxLm::default().write(&d.join("tiny-onnx")).unwrap();
    let made = Command::new(&convert)
        .arg("gguf-to-torchscript")
        .arg(&gguf)
        .arg(d.join("tiny-ts"))
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    let torchscript = d.join("tiny-ts/model.pt");
    // The board as `setup arm64-board` printed it, and the same board under another name
    // whose known_hosts has no key for it: melt's ssh never asks, so it must say what to do.
    let stranger = device
        .replace("name = \"arm64-board\"", "name = \"stranger\"")
        .lines()
        .map(|l| match l.starts_with("ssh_options") {
            true => "ssh_options = [\"-o\", \"UserKnownHostsFile=/dev/null\"]",
            false => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(d.join("melt.toml"), format!("{device}\n{stranger}\n")).unwrap();

    let devices = xtask(d, &["devices"]).output().unwrap();
    let table = melt_testkit::squeezed(&String::from_utf8_lossy(&devices.stdout));
    assert!(devices.status.success(), "{}", text(&devices));
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no row for {name}: {table}"))
            .to_string()
    };
    assert!(row("arm64-board").contains("| yes | aarch64 |"), "{table}");
    let stranger = row("stranger");
    assert!(
        stranger.contains("Host key verification failed")
            && stranger.contains("StrictHostKeyChecking=accept-new"),
        "{stranger}"
    );

    // One case per engine, chosen by a filter written for the host (the board's ids gain
    // ` @arm64-board`).
    let bench_args = [
        "--model",
        gguf.to_str().unwrap(),
        "--model",
        onnx.to_str().unwrap(),
        "--model",
        torchscript.to_str().unwrap(),
        "--warm-up-time",
        "0",
        "--nresamples",
        "1000",
        "^[^/]+/tg128/.* t=1$",
    ];
    let host = Command::new(&host_bin)
        .arg("--bench")
        .args(bench_args)
        .args(["--sample-size", "3"])
        .arg("--target-dir")
        .arg(d.join("target"))
        .output()
        .unwrap();
    assert!(host.status.success(), "{}", text(&host));

    let board = xtask(
        d,
        &["bench", "--target", "arm64-board", "--features", "libtorch"],
    )
    .arg("--bench-bin")
    .arg(&bin)
    .arg("--")
    .args(bench_args)
    .args(["--sample-size", "3"])
    .output()
    .unwrap();
    assert!(board.status.success(), "{}", text(&board));
    // As a user sees it: the board's rows, then beside the host's.
    let printed = melt_testkit::squeezed(&String::from_utf8_lossy(&board.stdout));
    assert!(
        printed.contains("## arm64-board")
            && printed.contains("## Beside the latest run of every other device")
            && printed.lines().any(|l| l.starts_with("| host |")),
        "{printed}"
    );
    let runs = summaries(&d.join("target"));
    assert_eq!(runs.len(), 2);
    let on_board = &runs[1];
    assert_eq!(on_board.device.as_deref(), Some("arm64-board"));
    assert!(on_board.errors.is_empty(), "{:?}", on_board.errors);
    assert_eq!(on_board.device_props["arch"], "aarch64");
    // Honest about what ran there: an aarch64 binary with NEON, on qemu-user.
    assert_eq!(on_board.host.arch, "aarch64");
    assert!(
        on_board.host.compiled_features.iter().any(|f| f == "neon"),
        "{:?}",
        on_board.host
    );
    assert!(on_board.host.emulated.is_some(), "{:?}", on_board.host);
    assert!(
        String::from_utf8_lossy(&board.stderr).contains("[arm64-board] emulated:"),
        "{}",
        text(&board)
    );
    let mut ids: Vec<&str> = on_board.cases.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [
            "model/tg128/libtorch t=1 @arm64-board",
            "model/tg128/onnxruntime t=1 @arm64-board",
            "tiny-llama/tg128/llama.cpp t=1 @arm64-board",
        ],
        "all three engines ran there"
    );

    let report = xtask(d, &["report"]).output().unwrap();
    let table = melt_testkit::squeezed(&String::from_utf8_lossy(&report.stdout));
    assert!(report.status.success(), "{}", text(&report));
    for device in ["arm64-board", "host"] {
        for engine in ["llama.cpp", "onnxruntime", "libtorch"] {
            assert!(
                table
                    .lines()
                    .any(|l| l.starts_with(&format!("| {device} |"))
                        && l.contains(&format!("| {engine} |"))),
                "{device} {engine}: {table}"
            );
        }
    }

    // The connection dies mid-run: every streamed sample stays, `--resume` finishes the rest
    // with the run's own arguments and does not run a finished case again.
    let long = ["--sample-size", "20"];
    let mut run = xtask(
        d,
        &["bench", "--target", "arm64-board", "--features", "libtorch"],
    )
    .arg("--bench-bin")
    .arg(&bin)
    .arg("--")
    .args(bench_args)
    .args(long)
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let log = first_case_finished(&d.join("target/melt/runs"), &mut run);
    cut_board_sessions(&device);
    let lost = run.wait_with_output().unwrap();
    assert_eq!(lost.status.code(), Some(2), "{}", text(&lost));
    let finished: Vec<String> = read_events(&log)
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::CaseEnd { case, .. } => Some(case.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 1, "{finished:?}");
    let resumed = xtask(
        d,
        &[
            "bench",
            "--target",
            "arm64-board",
            "--features",
            "libtorch",
            "--resume",
            "--bench-bin",
        ],
    )
    .arg(&bin)
    .output()
    .unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed));
    let events = read_events(&log).unwrap();
    let starts = |case: &str| {
        events
            .iter()
            .filter(|e| matches!(e, Event::CaseStart { case: c, .. } if c == case))
            .count()
    };
    assert_eq!(
        starts(&finished[0]),
        1,
        "finished before the cut: not run again"
    );
    let last = summaries(&d.join("target")).pop().unwrap();
    assert_eq!(last.device.as_deref(), Some("arm64-board"));
    assert_eq!(last.cases.len(), 3, "{:?}", last.errors);
    assert!(
        last.cases.iter().all(|c| c.samples == 20),
        "the run's --sample-size"
    );
}

/// Ends every process in the board but its sshd: the ssh sessions, and the bench binary.
/// The board lives beside its key (`setup arm64-board` made both).
fn cut_board_sessions(device: &str) {
    let key = device
        .lines()
        .find_map(|l| l.strip_prefix("key = "))
        .expect("the board's [[device]] names its key");
    let key: String = serde_json::from_str(key).unwrap();
    let root = Path::new(&key).parent().unwrap().join("rootfs");
    let sshd = std::fs::read_to_string(root.join("run/board-sshd.pid")).unwrap();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        let in_board = std::fs::read_link(entry.path().join("root")).is_ok_and(|r| r == root);
        if in_board && pid.parse::<u32>().is_ok() && pid != sshd.trim() {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
    }
}
