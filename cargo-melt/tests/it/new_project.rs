//! melt in a stranger's project, as the README's quick start has it: `cargo new`, melt as a
//! dependency, a bench of a few lines, then `cargo melt bench` here, the same through the
//! project's own three-line xtask, `cargo melt bench --target` to an ssh device (a real sshd
//! on loopback), and `cargo melt run --model` on the shipped model with no bench target at
//! all. The results must land in that project's `target/`.
//!
//! The project has its own target directory, where its binaries and results land. Under
//! `cargo xtask test` its intermediate build files go to the build directory xtask names
//! (`CARGO_BUILD_BUILD_DIR`, cargo's `build.build-dir`, from
//! `melt_testkit::needs::SHARED_BUILD_DIR_ENV`: melt's own, already built with the same
//! flags), so llama.cpp and the rest compile once per CI run; under a plain `cargo test` it is
//! built from scratch, as a new user's would be, and takes minutes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use melt_bench::store::Summary;
use melt_testkit::sshd::{toml_str, Sshd};

/// melt's checkout (this crate's parent).
fn melt_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// A command run in the project as its user would: none of this test run's cargo or melt
/// settings leak in (its target directory least of all), and models go to `cache`.
fn in_project(mut cmd: Command, project: &Path, cache: &Path) -> Command {
    cmd.current_dir(project)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("MELT_CONFIG")
        .env_remove("MELT_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env("MELT_CACHE_DIR", cache);
    shared_build(cmd)
}

/// Under `cargo xtask test`, every cargo the command runs (the project's builds, the gate's
/// revisions, `cargo melt run`'s generic bench, wherever they run from) keeps its
/// intermediate files in the build directory xtask shares.
fn shared_build(mut cmd: Command) -> Command {
    match std::env::var_os(melt_testkit::needs::SHARED_BUILD_DIR_ENV) {
        Some(dir) => cmd.env("CARGO_BUILD_BUILD_DIR", dir),
        None => cmd.env_remove("CARGO_BUILD_BUILD_DIR"),
    };
    cmd
}

fn ok(out: Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &stderr
}

/// The runs under the project's target/, oldest first.
fn summaries(project: &Path) -> Vec<Summary> {
    let runs = project.join("target/melt/runs");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&runs)
        .unwrap_or_else(|e| panic!("{}: {e}", runs.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("summary.json").is_file())
        .collect();
    dirs.sort();
    dirs.iter()
        .map(|d| {
            serde_json::from_str(&std::fs::read_to_string(d.join("summary.json")).unwrap()).unwrap()
        })
        .collect()
}

fn case_ids(s: &Summary) -> Vec<String> {
    s.cases.iter().map(|c| c.id.clone()).collect()
}

#[test]
fn a_new_project_benches_with_cargo_melt_its_own_xtask_and_on_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let project = dir.path().join("app");
    let st = cargo()
        .args(["new", "--vcs", "none", "--quiet", "app"])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(st.success(), "cargo new");

    // The model: a tiny Llama-architecture GGUF, registered in the project's melt.toml.
    let model = dir.path().join("tiny.gguf");
    melt_testkit::TinyLlama::default().write(&model).unwrap();
    let sha = melt_bench::model::sha256_file(&model).unwrap();
    let keys = dir.path().join("ssh");
    std::fs::create_dir(&keys).unwrap();
    let Some(sshd) = Sshd::start(&keys) else {
        return;
    };
    std::fs::write(
        project.join("melt.toml"),
        format!(
            "[models.tiny]\nfile = \"tiny.gguf\"\nformat = \"gguf\"\nsha256 = \"{sha}\"\n\
             source = {{ path = {} }}\n\n{}",
            toml_str(&model.display().to_string()),
            sshd.device("loopback", &sshd.key, &dir.path().join("device")),
        ),
    )
    .unwrap();

    // The README's quick start: the dependency, the bench target, the bench.
    let melt = melt_root();
    let manifest = project.join("Cargo.toml");
    let mut toml = std::fs::read_to_string(&manifest).unwrap();
    toml.push_str(&format!(
        "\n[dev-dependencies]\nmelt = {{ path = {} }}\n\n[[bench]]\nname = \"llm\"\nharness = false\n\n\
         [workspace]\nmembers = [\".\", \"xtask\"]\n",
        toml_str(&melt.display().to_string())
    ));
    std::fs::write(&manifest, toml).unwrap();
    std::fs::create_dir(project.join("benches")).unwrap();
    std::fs::write(
        project.join("benches/llm.rs"),
        "melt::melt_bench! {\n    models: [\"tiny\"],\n    backends: [melt::backends::enabled()],\n    \
         workloads: [pp(16), tg(8)],\n}\n",
    )
    .unwrap();
    // The project's own xtask: three lines, and the alias cargo's xtask convention uses.
    std::fs::create_dir_all(project.join("xtask/src")).unwrap();
    std::fs::write(
        project.join("xtask/Cargo.toml"),
        format!(
            "[package]\nname = \"xtask\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
             [dependencies]\nmelt-cli = {{ path = {} }}\n",
            toml_str(&melt.join("melt-cli").display().to_string())
        ),
    )
    .unwrap();
    std::fs::write(
        project.join("xtask/src/main.rs"),
        "fn main() -> std::process::ExitCode {\n    melt_cli::main()\n}\n",
    )
    .unwrap();
    std::fs::create_dir(project.join(".cargo")).unwrap();
    std::fs::write(
        project.join(".cargo/config.toml"),
        "[alias]\nxtask = \"run --quiet --release --package xtask --\"\n",
    )
    .unwrap();
    // melt's lock file: the versions melt is tested with, and no resolution to wait for.
    std::fs::copy(melt.join("Cargo.lock"), project.join("Cargo.lock")).unwrap();

    let quick = ["--quick", "--warm-up-time", "0", "--nresamples", "1000"];
    let cargo_melt = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cargo-melt"));
        c.arg("melt");
        in_project(c, &project, &cache)
    };

    // 1. `cargo melt bench`: builds the project's bench, fetches its model, runs it.
    let out = cargo_melt()
        .args(["bench", "--"])
        .args(quick)
        .output()
        .unwrap();
    let log = ok(out, "cargo melt bench");
    let runs = summaries(&project);
    assert_eq!(runs.len(), 1, "{log}");
    let ids = case_ids(&runs[0]);
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(
        ids.iter()
            .all(|i| i.starts_with("tiny/") && i.contains("llama.cpp")),
        "{ids:?}"
    );
    assert!(runs[0].errors.is_empty(), "{:?}", runs[0].errors);
    assert!(project.join("target/criterion").is_dir());
    // The model came from the project's registry, into the cache, verified.
    assert!(cache.join("models").join(&sha).join("tiny.gguf").is_file());

    // 2. The same through the project's own xtask.
    let mut xtask = in_project(cargo(), &project, &cache);
    xtask
        .args(["xtask", "bench", "--bench", "llm", "--"])
        .args(quick);
    ok(xtask.output().unwrap(), "cargo xtask bench");
    assert_eq!(summaries(&project).len(), 2);

    // 3. On a device: built for it (here the host's triple), pushed, run over ssh, streamed
    //    back into the project's target/ with the device's name.
    let out = cargo_melt()
        .args(["bench", "--target", "loopback", "--"])
        .args(quick)
        .output()
        .unwrap();
    let log = ok(out, "cargo melt bench --target loopback");
    let runs = summaries(&project);
    let device = runs
        .iter()
        .find(|s| s.device.as_deref() == Some("loopback"))
        .unwrap_or_else(|| panic!("no loopback run in the project's target/:\n{log}"));
    assert_eq!(device.cases.len(), 2, "{:?}", case_ids(device));
    assert!(device.errors.is_empty(), "{:?}", device.errors);

    // 4. A one-off run of the shipped model, no bench target: melt's generic bench (built
    //    beside the project's, so nothing compiles twice), results in the project's target/.
    let mut run = shared_build(Command::new(env!("CARGO_BIN_EXE_cargo-melt")));
    run.current_dir(&project)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("MELT_CONFIG")
        .env("MELT_RUN_TARGET_DIR", project.join("target"))
        .args(["melt", "run", "--model", "gemma-3-270m-q4_k_m"])
        .args([
            "-t",
            "1,2",
            "-p",
            "16",
            "-n",
            "8",
            "-r",
            "1",
            "--warm-up-time",
            "0",
        ]);
    let out = melt_testkit::squeezed(&ok(run.output().unwrap(), "cargo melt run"));
    for test in ["| pp16 |", "| tg8 |", "llama.cpp"] {
        assert!(out.contains(test), "{test} not in the table:\n{out}");
    }
    let runs = summaries(&project);
    let one_off = runs.last().unwrap();
    let ids = case_ids(one_off);
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert!(
        ids.iter().all(|i| i.starts_with("gemma-3-270m-q4_k_m/")),
        "{ids:?}"
    );

    // 5. The paired gate: the project in git, a bench over the synthetic backend (a set cost
    //    per token: a known truth), a commit that makes decoding 10% slower — caught against
    //    HEAD~1 — and a commit that changes nothing — passed. Each revision is built in a
    //    worktree under the project's target/, its dependencies shared with the working tree.
    gate_against_earlier_commits(&project, &cache, &melt);

    // A command that names what is not there says so.
    let out = cargo_melt()
        .args(["bench", "--bench", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`nope`") && err.contains("llm in app"),
        "{err}"
    );
}

/// The synthetic bench at `per_token_us` microseconds a decoded token.
fn write_synthetic_bench(project: &Path, per_token_us: u64, comment: &str) {
    std::fs::write(
        project.join("benches/gate.rs"),
        format!(
            "// {comment}\nmelt::melt_bench! {{\n    models: [\"tiny\"],\n    backends: [melt_testkit::synthetic::Synthetic::new(\
             std::time::Duration::from_micros({per_token_us}))],\n    workloads: [tg(32)],\n}}\n"
        ),
    )
    .unwrap();
}

fn git(project: &Path, args: &[&str]) {
    let st = Command::new("git")
        .current_dir(project)
        .args([
            "-c",
            "user.name=melt test",
            "-c",
            "user.email=test@melt.invalid",
        ])
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "git {args:?}");
}

/// `gate --against` and `compare` in the project (`loopback` is its ssh device).
fn gate_against_earlier_commits(project: &Path, cache: &Path, melt: &Path) {
    let manifest = project.join("Cargo.toml");
    let mut toml = std::fs::read_to_string(&manifest).unwrap();
    toml = toml.replace(
        "[dev-dependencies]\n",
        &format!(
            "[dev-dependencies]\nmelt-testkit = {{ path = {} }}\n",
            toml_str(&melt.join("melt-testkit").display().to_string())
        ),
    );
    toml.push_str("\n[[bench]]\nname = \"gate\"\nharness = false\n");
    std::fs::write(&manifest, toml).unwrap();
    std::fs::write(project.join(".gitignore"), "/target\n").unwrap();
    write_synthetic_bench(project, 300, "300 µs a token");
    git(project, &["init", "--quiet"]);
    git(project, &["add", "-A"]);
    git(project, &["commit", "--quiet", "-m", "bench"]);
    write_synthetic_bench(project, 330, "330 µs a token: 10% slower");
    git(project, &["commit", "--quiet", "-am", "slower"]);

    let gate = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cargo-melt"));
        c.arg("melt").args(args);
        let out = in_project(c, project, cache).output().unwrap();
        let text = melt_testkit::squeezed(&String::from_utf8_lossy(&out.stdout));
        (
            out.status.code(),
            text,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The synthetic backend's truth is known, so these gates need a verdict however busy CI
    // keeps the machine: the noise check still runs and is shown, but refuses nothing.
    let worker_args = ["--noise-limit", "100", "--", "--warm-up-time", "0.2"];
    let args = |first: &[&'static str]| -> Vec<&'static str> {
        first.iter().copied().chain(worker_args).collect()
    };

    let (code, out, err) = gate(&args(&["gate", "--against", "HEAD~1", "--bench", "gate"]));
    assert_eq!(
        code,
        Some(1),
        "a 10% slower decode must fail the gate:\n{out}\n{err}"
    );
    assert!(
        out.contains("FAILED: regressed")
            && out.contains("tiny/tg32/synthetic")
            && out.contains("❌ regressed"),
        "{out}"
    );
    assert!(
        out.contains("noise"),
        "the table shows the noise check: {out}"
    );
    // The builds: HEAD~1's, cached by commit, and the working tree's copy beside it (both
    // sides run from paths of the same length).
    let mut built: Vec<String> = std::fs::read_dir(project.join("target/melt/against/builds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    built.sort();
    assert_eq!(built.len(), 2, "{built:?}");
    assert!(built[1].starts_with("work-tree.-"), "{built:?}");
    assert_eq!(built[0].len(), built[1].len(), "{built:?}");
    let gates = project.join("target/melt/gate");
    let summary = std::fs::read_dir(&gates)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("summary.json");
    let s: melt_report::gate::paired::PairedSummary =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let m = &s.cases[0].metrics[0];
    // Known truth: 300 → 330 µs a token is 1/1.1 − 1 = −9.1% tok/s; the interval holds it.
    assert!(m.change.lower < -0.091 && -0.091 < m.change.upper, "{m:?}");
    assert!(
        s.noise_before.is_some() && s.resident_bytes.is_some(),
        "{s:?}"
    );
    assert!(
        summary.with_file_name("index.html").is_file(),
        "no page beside {}",
        summary.display()
    );

    // Nothing changed but a comment: passes.
    write_synthetic_bench(project, 330, "330 µs a token, a comment changed");
    git(project, &["commit", "--quiet", "-am", "comment"]);
    let (code, out, err) = gate(&args(&["gate", "--against", "HEAD~1", "--bench", "gate"]));
    assert_eq!(
        code,
        Some(0),
        "an unchanged decode must pass:\n{out}\n{err}"
    );
    assert!(out.contains("passed"), "{out}");

    // The same on the ssh device: both sides built for it, pushed, run there as workers
    //    whose requests travel over ssh; the noise check runs there too.
    let (code, out, err) = gate(&args(&[
        "gate",
        "--against",
        "HEAD~1",
        "--bench",
        "gate",
        "--target",
        "loopback",
    ]));
    assert_eq!(
        code,
        Some(0),
        "an unchanged decode must pass on the device:\n{out}\n{err}"
    );
    assert!(
        out.contains("on loopback") && out.contains("@loopback"),
        "{out}"
    );

    // compare prints without judging, from the cached build of the first commit.
    let (code, out, err) = gate(&args(&["compare", "HEAD~2", "--bench", "gate"]));
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains("compared") && !out.contains("verdict"),
        "{out}"
    );
    assert!(
        err.contains("built before"),
        "HEAD~2 was built by the first gate: {err}"
    );

    // A revision that is not there: could not compare, named.
    let (code, _, err) = gate(&["gate", "--against", "no-such-rev", "--bench", "gate"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("`no-such-rev` is not a git revision"), "{err}");
}
