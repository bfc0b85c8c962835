//! The workspace's tests, built by cargo and run by xtask one binary at a time, as
//! cargo-nextest runs them: each binary's seconds are measured, and no cargo holds the build
//! directory's lock while the tests run, so a test may build into it (the new-project test
//! shares it, and llama.cpp compiles once per run).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// One test executable cargo built: a crate's unit tests, or an integration-test target.
#[derive(Debug, Clone, PartialEq)]
pub struct TestBinary {
    pub package: String,
    /// `lib`, `bin`, `test`...
    pub kind: String,
    pub name: String,
    pub path: PathBuf,
    pub manifest_path: PathBuf,
}

impl TestBinary {
    /// How the phase table names it: `melt-backends lib`, `melt test it`.
    pub fn label(&self) -> String {
        if self.kind == "lib" || self.name == self.package.replace('-', "_") {
            format!("{} {}", self.package, self.kind)
        } else {
            format!("{} {} {}", self.package, self.kind, self.name)
        }
    }

    /// Whether the binary drives whole projects, devices or the board, which
    /// `cargo xtask test --quick` leaves to CI.
    pub fn builds_projects_or_drives_devices(&self) -> bool {
        self.kind == "test" && matches!(self.package.as_str(), "xtask" | "cargo-melt")
    }
}

/// The options of `cargo test` that take a value (so the word after one is not a filter).
const TAKES_VALUE: &[&str] = &[
    "-p",
    "--package",
    "--exclude",
    "-F",
    "--features",
    "--test",
    "--bench",
    "--bin",
    "--example",
    "-j",
    "--jobs",
    "--target",
    "--target-dir",
    "--manifest-path",
    "--profile",
    "--color",
    "-Z",
    "--config",
];

/// The options that choose targets: `cargo test --doc` cannot be mixed with them.
const SELECTS_TARGETS: &[&str] = &[
    "--lib",
    "--bins",
    "--bin",
    "--tests",
    "--test",
    "--benches",
    "--bench",
    "--examples",
    "--example",
    "--all-targets",
    "--doc",
];

/// `cargo test`'s arguments split as cargo does: cargo's own options, and what reaches every
/// test binary (a bare filter, and whatever follows `--`).
#[derive(Debug, Default, PartialEq)]
pub struct Split {
    pub cargo: Vec<String>,
    pub tests: Vec<String>,
}

impl Split {
    pub fn of(args: &[String]) -> Split {
        let mut s = Split::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--" {
                s.tests.extend(it.by_ref().cloned());
            } else if a.starts_with('-') {
                s.cargo.push(a.clone());
                if TAKES_VALUE.contains(&a.as_str()) {
                    s.cargo.extend(it.next().cloned());
                }
            } else {
                s.tests.push(a.clone());
            }
        }
        s
    }

    /// Whether doc tests run too (as `cargo test` runs them unless targets are chosen).
    pub fn with_doc_tests(&self) -> bool {
        !self.cargo.iter().any(|a| {
            let flag = a.split('=').next().unwrap_or(a);
            SELECTS_TARGETS.contains(&flag)
        })
    }
}

/// The test binaries of one JSON message stream of `cargo test --no-run`.
pub fn from_messages(json: &str) -> Result<Vec<TestBinary>> {
    let mut out: Vec<TestBinary> = Vec::new();
    for line in json.lines().filter(|l| l.starts_with('{')) {
        let m: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("cargo's message `{line}`"))?;
        if m["reason"] != "compiler-artifact" || m["profile"]["test"] != true {
            continue;
        }
        let Some(path) = m["executable"].as_str() else {
            continue;
        };
        let text = |v: &serde_json::Value, what: &str| {
            v.as_str()
                .map(str::to_string)
                .with_context(|| format!("cargo's artifact message has no {what}: {line}"))
        };
        let manifest_path = PathBuf::from(text(&m["manifest_path"], "manifest_path")?);
        let package = package_name(&m["package_id"], &manifest_path)?;
        let bin = TestBinary {
            package,
            kind: text(&m["target"]["kind"][0], "target kind")?,
            name: text(&m["target"]["name"], "target name")?,
            path: PathBuf::from(path),
            manifest_path,
        };
        if !out.iter().any(|b| b.path == bin.path) {
            out.push(bin);
        }
    }
    Ok(out)
}

/// The package's name: cargo's package id is `path+file:///…/melt-cli#0.1.0` for a workspace
/// member whose directory is its name, `path+file:///…/x#name@0.1.0` otherwise.
fn package_name(id: &serde_json::Value, manifest: &Path) -> Result<String> {
    let id = id
        .as_str()
        .context("cargo's artifact message has no package_id")?;
    let fragment = id.rsplit_once('#').map(|(_, f)| f).unwrap_or(id);
    Ok(match fragment.split_once('@') {
        Some((name, _)) => name.to_string(),
        None => manifest
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .with_context(|| format!("no package name in `{id}`"))?,
    })
}

/// Builds every test binary `cargo test ARGS` would run, without running them.
pub fn build(cargo: Command) -> Result<Vec<TestBinary>> {
    let mut cargo = cargo;
    cargo
        .args(["--no-run", "--message-format=json-render-diagnostics"])
        .stdout(Stdio::piped());
    let out = cargo
        .output()
        .with_context(|| format!("running {cargo:?}"))?;
    if !out.status.success() {
        bail!("building the tests failed ({})", out.status);
    }
    from_messages(&String::from_utf8_lossy(&out.stdout))
}

/// Runs one test binary as `cargo test` would: in its package's directory, with cargo's
/// variables, the target's `deps/` on the library path. Returns its wall time and whether
/// every test passed.
pub fn run(bin: &TestBinary, args: &[String], profile_dir: &Path) -> Result<(Duration, bool)> {
    let dir = bin.manifest_path.parent().unwrap_or(Path::new("."));
    let mut library_path: Vec<PathBuf> = vec![profile_dir.join("deps"), profile_dir.to_path_buf()];
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
        library_path.extend(std::env::split_paths(&old));
    }
    let start = Instant::now();
    let status = Command::new(&bin.path)
        .args(args)
        .current_dir(dir)
        .env("CARGO_MANIFEST_DIR", dir)
        .env("CARGO_MANIFEST_PATH", &bin.manifest_path)
        .env("CARGO_PKG_NAME", &bin.package)
        .env(
            "LD_LIBRARY_PATH",
            std::env::join_paths(library_path).unwrap_or_else(|_| OsString::new()),
        )
        .status()
        .with_context(|| format!("running {}", bin.path.display()))?;
    Ok((start.elapsed(), status.success()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_split_into_cargos_and_the_binaries() {
        let s = Split::of(&strings(&[
            "-p",
            "melt-bench",
            "tasks",
            "--",
            "--test-threads=1",
        ]));
        assert_eq!(s.cargo, ["-p", "melt-bench"]);
        assert_eq!(s.tests, ["tasks", "--test-threads=1"]);
        assert!(s.with_doc_tests());
        let s = Split::of(&strings(&["--test", "it", "--features=x"]));
        assert_eq!(s.cargo, ["--test", "it", "--features=x"]);
        assert!(s.tests.is_empty());
        assert!(!s.with_doc_tests());
        assert!(!Split::of(&strings(&["--lib"])).with_doc_tests());
        assert_eq!(Split::of(&[]), Split::default());
    }

    #[test]
    fn test_binaries_are_read_from_cargos_messages() {
        let json = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/melt-backends#0.1.0","manifest_path":"/w/melt-backends/Cargo.toml","target":{"kind":["lib"],"name":"melt_backends"},"profile":{"test":true},"executable":"/w/target/release/deps/melt_backends-1"}
{"reason":"compiler-artifact","package_id":"path+file:///w#melt@0.1.0","manifest_path":"/w/Cargo.toml","target":{"kind":["test"],"name":"it"},"profile":{"test":true},"executable":"/w/target/release/deps/it-2"}
{"reason":"compiler-artifact","package_id":"registry+https://github.com/rust-lang/crates.io-index#serde@1.0.0","manifest_path":"/r/serde/Cargo.toml","target":{"kind":["lib"],"name":"serde"},"profile":{"test":false},"executable":null}
{"reason":"compiler-artifact","package_id":"path+file:///w/xtask#0.1.0","manifest_path":"/w/xtask/Cargo.toml","target":{"kind":["test"],"name":"it"},"profile":{"test":true},"executable":"/w/target/release/deps/it-3"}
{"reason":"build-finished","success":true}"#;
        let bins = from_messages(json).unwrap();
        let labels: Vec<String> = bins.iter().map(TestBinary::label).collect();
        assert_eq!(
            labels,
            ["melt-backends lib", "melt test it", "xtask test it"]
        );
        assert_eq!(bins[1].manifest_path, Path::new("/w/Cargo.toml"));
        assert_eq!(
            bins.iter()
                .map(TestBinary::builds_projects_or_drives_devices)
                .collect::<Vec<_>>(),
            [false, false, true]
        );
        let bad = from_messages(
            r#"{"reason":"compiler-artifact","profile":{"test":true},"executable":"/x"}"#,
        );
        assert!(bad.unwrap_err().to_string().contains("manifest_path"));
    }
}
