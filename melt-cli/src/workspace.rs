//! The cargo workspace melt runs in, as `cargo metadata` describes it: its root, its target
//! directory, and the bench targets written with `melt_bench!`.
//!
//! melt works in any workspace: nothing here knows melt's own suite. A bench target is melt's
//! when its source calls `melt_bench!` (a `harness = false` bench that criterion or divan own
//! is left alone).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// A bench target that uses `melt_bench!`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchTarget {
    pub package: String,
    pub name: String,
    /// The package's directory (cargo runs a bench there; its melt.toml is found from there).
    pub package_dir: PathBuf,
    /// The package's features (a device build leaves out `host-reports` where there is one).
    pub features: Vec<String>,
}

impl BenchTarget {
    /// Cargo's arguments that select this target from any directory:
    /// `--manifest-path M --package P --bench B`.
    pub fn cargo_args(&self) -> [String; 6] {
        [
            "--manifest-path".into(),
            self.package_dir.join("Cargo.toml").display().to_string(),
            "--package".into(),
            self.package.clone(),
            "--bench".into(),
            self.name.clone(),
        ]
    }
}

#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    pub target_dir: PathBuf,
    /// Where cargo keeps the intermediate files (`build.build-dir`): the target directory
    /// unless configured apart.
    pub build_dir: PathBuf,
    /// Every melt bench target of the workspace's members, in cargo's order.
    pub benches: Vec<BenchTarget>,
    /// The names of the workspace's member packages.
    pub members: Vec<String>,
}

#[derive(Deserialize)]
struct Metadata {
    workspace_root: PathBuf,
    target_directory: PathBuf,
    /// Since cargo 1.91 (`build.build-dir`).
    #[serde(default)]
    build_directory: Option<PathBuf>,
    packages: Vec<Package>,
    workspace_members: Vec<String>,
}

#[derive(Deserialize)]
struct Package {
    id: String,
    name: String,
    manifest_path: PathBuf,
    targets: Vec<Target>,
    #[serde(default)]
    features: std::collections::BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
    src_path: PathBuf,
}

/// Whether a bench's source is melt's: it calls the `melt_bench!` macro.
fn uses_melt_bench(src: &Path) -> bool {
    std::fs::read_to_string(src).is_ok_and(|s| s.contains("melt_bench!"))
}

impl Workspace {
    /// The workspace around the current directory (`cargo metadata --no-deps`: no network,
    /// no resolution, tens of milliseconds).
    pub fn discover() -> Result<Workspace> {
        let out = crate::cargo()
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .output()
            .context("running cargo metadata")?;
        if !out.status.success() {
            bail!(
                "not in a cargo workspace (cargo metadata: {})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Workspace::from_metadata(&out.stdout)
    }

    fn from_metadata(json: &[u8]) -> Result<Workspace> {
        let m: Metadata = serde_json::from_slice(json).context("reading cargo metadata")?;
        let benches = m
            .packages
            .iter()
            .filter(|p| m.workspace_members.contains(&p.id))
            .flat_map(|p| {
                let dir = p
                    .manifest_path
                    .parent()
                    .unwrap_or(Path::new("."))
                    .to_path_buf();
                p.targets
                    .iter()
                    .filter(|t| t.kind.iter().any(|k| k == "bench") && uses_melt_bench(&t.src_path))
                    .map(move |t| BenchTarget {
                        package: p.name.clone(),
                        name: t.name.clone(),
                        package_dir: dir.clone(),
                        features: p.features.keys().cloned().collect(),
                    })
            })
            .collect();
        let members = m
            .packages
            .iter()
            .filter(|p| m.workspace_members.contains(&p.id))
            .map(|p| p.name.clone())
            .collect();
        Ok(Workspace {
            root: m.workspace_root,
            build_dir: m
                .build_directory
                .unwrap_or_else(|| m.target_directory.clone()),
            target_dir: m.target_directory,
            benches,
            members,
        })
    }

    /// The one bench target `--bench` and `--package` leave, for a job that builds one
    /// (`job`: "a device run", "--against").
    pub fn select_one(
        &self,
        packages: &[String],
        benches: &[String],
        job: &str,
    ) -> Result<BenchTarget> {
        match &self.select(packages, benches)?[..] {
            [one] => Ok(one.clone()),
            several => bail!(
                "{job} builds one bench target, and this workspace has {}: name one with --bench",
                several
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// The bench targets `--bench` and `--package` name (each repeatable; none: all).
    pub fn select(&self, packages: &[String], benches: &[String]) -> Result<Vec<BenchTarget>> {
        if self.benches.is_empty() {
            bail!(
                "no bench target in the workspace at {} uses melt_bench! — add one \
                 (benches/NAME.rs with `melt::melt_bench! {{ .. }}`, and `[[bench]] name = \"NAME\"` \
                 `harness = false` in its Cargo.toml)",
                self.root.display()
            );
        }
        let known = |what: &str, name: &str, list: Vec<&str>| -> Result<()> {
            if list.contains(&name) {
                return Ok(());
            }
            bail!(
                "no melt bench {what} `{name}` in this workspace (melt benches: {})",
                self.describe()
            )
        };
        for p in packages {
            known(
                "package",
                p,
                self.benches.iter().map(|b| b.package.as_str()).collect(),
            )?;
        }
        for b in benches {
            known(
                "target",
                b,
                self.benches.iter().map(|b| b.name.as_str()).collect(),
            )?;
        }
        let chosen: Vec<BenchTarget> = self
            .benches
            .iter()
            .filter(|b| packages.is_empty() || packages.contains(&b.package))
            .filter(|b| benches.is_empty() || benches.contains(&b.name))
            .cloned()
            .collect();
        if chosen.is_empty() {
            bail!(
                "no melt bench is both in --package {} and named --bench {} (melt benches: {})",
                packages.join(","),
                benches.join(","),
                self.describe()
            );
        }
        Ok(chosen)
    }

    fn describe(&self) -> String {
        self.benches
            .iter()
            .map(|b| format!("{} in {}", b.name, b.package))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cargo metadata of a workspace with two members, in files the test writes.
    fn workspace(dir: &Path) -> Workspace {
        let src = |name: &str, body: &str| {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            p
        };
        let melt = src(
            "llm.rs",
            "melt::melt_bench! { models: [\"m\"], backends: [] }",
        );
        let other = src("crit.rs", "criterion_main!(benches);");
        let json = serde_json::json!({
            "workspace_root": dir,
            "target_directory": dir.join("target"),
            "workspace_members": ["a 0.1.0", "b 0.1.0"],
            "packages": [
                {"id": "a 0.1.0", "name": "app", "manifest_path": dir.join("Cargo.toml"),
                 "features": {"host-reports": []},
                 "targets": [
                    {"name": "llm", "kind": ["bench"], "src_path": melt},
                    {"name": "crit", "kind": ["bench"], "src_path": other},
                    {"name": "app", "kind": ["lib"], "src_path": dir.join("lib.rs")}]},
                {"id": "b 0.1.0", "name": "tools", "manifest_path": dir.join("tools/Cargo.toml"),
                 "targets": [{"name": "llm2", "kind": ["bench"], "src_path": melt}]},
                {"id": "dep 1.0.0", "name": "dep", "manifest_path": "/reg/dep/Cargo.toml",
                 "targets": [{"name": "d", "kind": ["bench"], "src_path": melt}]}
            ]
        });
        Workspace::from_metadata(json.to_string().as_bytes()).unwrap()
    }

    /// cargo's `build.build-dir` apart from the target directory: the gate forgets the
    /// workspace's fingerprints there, where they are.
    #[test]
    fn the_build_directory_is_read_when_cargo_names_one() {
        let json = serde_json::json!({
            "workspace_root": "/w",
            "target_directory": "/w/target",
            "build_directory": "/shared/build",
            "workspace_members": [],
            "packages": []
        });
        let ws = Workspace::from_metadata(json.to_string().as_bytes()).unwrap();
        assert_eq!(
            (ws.target_dir.as_path(), ws.build_dir.as_path()),
            (Path::new("/w/target"), Path::new("/shared/build"))
        );
    }

    #[test]
    fn finds_the_members_melt_benches_only() {
        let dir = tempfile::tempdir().unwrap();
        let ws = workspace(dir.path());
        let names: Vec<(&str, &str)> = ws
            .benches
            .iter()
            .map(|b| (b.package.as_str(), b.name.as_str()))
            .collect();
        assert_eq!(names, [("app", "llm"), ("tools", "llm2")]);
        assert_eq!(ws.benches[0].package_dir, dir.path());
        assert_eq!(ws.benches[0].features, ["host-reports"]);
        assert_eq!(ws.target_dir, dir.path().join("target"));
        // An older cargo names no build directory: the target directory is it.
        assert_eq!(ws.build_dir, ws.target_dir);
        let tools = dir.path().join("tools/Cargo.toml").display().to_string();
        assert_eq!(
            ws.benches[1].cargo_args(),
            [
                "--manifest-path",
                &tools,
                "--package",
                "tools",
                "--bench",
                "llm2"
            ]
        );
    }

    #[test]
    fn selection_by_package_and_name_and_what_it_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let ws = workspace(dir.path());
        assert_eq!(ws.select(&[], &[]).unwrap().len(), 2);
        let one = ws.select(&["tools".into()], &[]).unwrap();
        assert_eq!(one[0].name, "llm2");
        let one = ws.select(&[], &["llm".into()]).unwrap();
        assert_eq!(one[0].package, "app");
        let e = ws.select(&[], &["crit".into()]).unwrap_err().to_string();
        assert!(
            e.contains("`crit`") && e.contains("llm in app, llm2 in tools"),
            "{e}"
        );
        let e = ws.select(&["nope".into()], &[]).unwrap_err().to_string();
        assert!(e.contains("package `nope`"), "{e}");
        let e = ws
            .select(&["tools".into()], &["llm".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("both"), "{e}");
        let empty = Workspace {
            benches: Vec::new(),
            ..ws
        };
        let e = empty.select(&[], &[]).unwrap_err().to_string();
        assert!(
            e.contains("uses melt_bench!") && e.contains("harness = false"),
            "{e}"
        );
    }
}
