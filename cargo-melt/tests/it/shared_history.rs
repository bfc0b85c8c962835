//! Two machines, one PostgreSQL history, through the command line: each pushes its runs,
//! one listing shows both, and a machine gates against a ref only the other one ran — through
//! the shared history, and offline after a pull.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use melt_report::history::{GitState, History};
use melt_testkit::postgres::Postgres;
use melt_testkit::summaries::summary;

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `cargo melt ARGS` in `repo` with `target` as the machine's target directory.
fn melt(repo: &Path, target: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cargo-melt"))
        .arg("melt")
        .args(args)
        .current_dir(repo)
        .env("CARGO_TARGET_DIR", target)
        .env_remove("MELT_HISTORY_URL")
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        melt_testkit::squeezed(&String::from_utf8_lossy(&out.stdout)),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A run of tg128 and pp512 recorded in `target`'s history: `slowdown` stretches every sample.
fn record(target: &Path, run_id: &str, commit: &str, device: &str, slowdown: f64) {
    let mut h = History::open(&target.join("melt/history.sqlite")).unwrap();
    let ids = ["m/tg128/llama.cpp t=2", "m/pp512/llama.cpp t=2"];
    let samples: BTreeMap<String, Vec<f64>> = ids
        .iter()
        .map(|id| {
            let times = (0..12)
                .map(|k| (1.0e9 + 4.0e6 * (k % 4) as f64) * slowdown)
                .collect();
            (id.to_string(), times)
        })
        .collect();
    let git = GitState {
        commit: Some(commit.into()),
        dirty: Some(false),
    };
    h.record(&summary(run_id, &ids, 70.0), &samples, &git, device)
        .unwrap();
}

#[test]
fn two_machines_share_one_history_and_gate_against_a_ref_only_one_ran() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = Postgres::create(&dir.path().join("pg")) else {
        return;
    };
    let url = server.url();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "one"]);
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "two"]);
    let (c1, c2) = (
        git(&repo, &["rev-parse", "HEAD~1"]),
        git(&repo, &["rev-parse", "HEAD"]),
    );
    // Machine A ran HEAD~1 on its pixel and its jetson; machine B ran HEAD, 12% slower, on
    // its own pixel — in the same second as A's pixel run, under the same run id.
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    record(&a, "2026-11-25T10-00-00Z-suite", &c1, "pixel", 1.0);
    record(&a, "2026-11-25T10-00-01Z-suite", &c1, "jetson", 1.0);
    record(&b, "2026-11-25T10-00-00Z-suite", &c2, "pixel-b", 1.12);
    record(&b, "2026-11-25T11-00-00Z-suite", &c2, "pixel", 1.12);

    let out = melt(&repo, &a, &["history", "push", "--to", &url]);
    let (_, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("2 run(s) copied"), "{err}");
    assert!(!err.contains(server_password()), "{err}");
    let out = melt(&repo, &a, &["history", "push", "--to", &url]);
    assert!(
        text(&out).1.contains("0 run(s) copied") && text(&out).1.contains("2 already there"),
        "pushing twice adds nothing: {}",
        text(&out).1
    );
    let out = melt(&repo, &b, &["history", "push", "--to", &url]);
    assert!(text(&out).1.contains("2 run(s) copied"), "{}", text(&out).1);

    // One listing: both machines' runs, the same run id on two devices.
    let out = melt(&repo, &b, &["history", "--history", &url]);
    let (list, err) = text(&out);
    assert!(out.status.success(), "{err}");
    for row in [
        "| 2026-11-25T10-00-00Z-suite | pixel |",
        "| 2026-11-25T10-00-01Z-suite | jetson |",
        "| 2026-11-25T10-00-00Z-suite | pixel-b |",
        "| 2026-11-25T11-00-00Z-suite | pixel |",
    ] {
        assert!(list.contains(row), "{row} in:\n{list}");
    }

    // One trend report over both machines: per device, the runs in recorded order.
    let out = melt(
        &repo,
        &b,
        &["report", "--history", &url, "--case", "tg128", "--html"],
    );
    let (trend, err) = text(&out);
    assert!(out.status.success(), "{err}");
    for row in [
        "| jetson | m/tg128/llama.cpp t=2 | tokens_per_second | 2026-11-25T10-00-01Z |",
        "| pixel | m/tg128/llama.cpp t=2 | tokens_per_second | 2026-11-25T10-00-00Z |",
        "| pixel | m/tg128/llama.cpp t=2 | tokens_per_second | 2026-11-25T11-00-00Z |",
        "| pixel-b | m/tg128/llama.cpp t=2 | tokens_per_second | 2026-11-25T10-00-00Z |",
    ] {
        assert!(trend.contains(row), "{row} in:\n{trend}");
    }
    assert!(!trend.contains("pp512"), "{trend}");
    let page = std::fs::read_to_string(b.join("melt/report/trends.html")).unwrap();
    assert_eq!(page.matches("<img").count(), 1, "one case, one metric");
    let out = melt(
        &repo,
        &b,
        &[
            "report",
            "--history",
            &url,
            "--since",
            "2026-11-25T10:30:00Z",
        ],
    );
    let (recent, _) = text(&out);
    assert!(recent.contains("2026-11-25T11-00-00Z") && !recent.contains("2026-11-25T10-00-0"));

    // B never ran HEAD~1: its own history cannot answer...
    let b_str = b.to_str().unwrap();
    let gate = ["gate", "--baseline-ref", "HEAD~1", "--target-dir", b_str];
    let out = melt(&repo, &b, &gate);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    assert!(
        text(&out).1.contains("no run of HEAD~1"),
        "{}",
        text(&out).1
    );
    // ... the shared one can: B's pixel run against A's pixel run of HEAD~1.
    let mut shared = gate.to_vec();
    shared.extend(["--history", &url]);
    let out = melt(&repo, &b, &shared);
    let (table, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{table}{err}");
    assert!(
        err.contains("against run 2026-11-25T10-00-00Z-suite on pixel of HEAD~1"),
        "{err}"
    );
    assert!(
        table.contains("FAILED") && table.contains("m/tg128/llama.cpp t=2"),
        "{table}"
    );

    // Pulled, the same gate runs offline.
    let out = melt(
        &repo,
        &b,
        &[
            "history", "pull", "--from", &url, "--ref", "HEAD~1", "--device", "pixel",
        ],
    );
    assert!(text(&out).1.contains("1 run(s) copied"), "{}", text(&out).1);
    let out = melt(&repo, &b, &gate);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));

    // A wrong password: a clear error, without the password.
    let wrong = server.url_with("wrong-pw");
    let out = melt(&repo, &a, &["history", "--history", &wrong]);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("password authentication failed") && !err.contains("wrong-pw"),
        "{err}"
    );
}

fn server_password() -> &'static str {
    melt_testkit::postgres::PASSWORD
}
