//! The two builds a paired comparison measures: a git revision's and the working tree's.
//!
//! A revision is checked out in one git worktree under `target/melt/against/worktree` (moved
//! from commit to commit, so cargo sees the same paths and rebuilds only what changed) and
//! built into the workspace's own target directory: the dependencies — llama.cpp above all,
//! minutes of C++ — are shared with the working tree's build, and only the workspace's crates
//! are compiled again. The bench binary is then kept under `target/melt/against/builds/`,
//! keyed by commit, bench target, features and build environment; a second comparison against
//! the same commit builds nothing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::bench::build_bench;
use crate::workspace::{BenchTarget, Workspace};

/// One side of the comparison, built.
#[derive(Debug, Clone)]
pub struct Side {
    /// How tables name it: `HEAD~1 (1a2b3c4d5e)` or `working tree`.
    pub label: String,
    pub exe: PathBuf,
    /// The bench target as this side's sources have it (the worktree's package directory for
    /// a revision): where the binary runs and its melt.toml is found.
    pub target: BenchTarget,
}

/// The working tree's build.
pub fn working_tree(
    target: &BenchTarget,
    env: &[(String, OsString)],
    features: &[String],
) -> Result<Side> {
    Ok(Side {
        label: "working tree".into(),
        exe: build_bench(&target.package_dir, target, env, features)?,
        target: target.clone(),
    })
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The commit `rev` names in the repository at `dir`.
pub fn commit_of(dir: &Path, rev: &str) -> Result<String> {
    git(
        dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
    )
    .map_err(|_| {
        anyhow::anyhow!(
            "`{rev}` is not a git revision of the repository at {}",
            dir.display()
        )
    })
}

/// What a cached build depends on besides the commit.
fn build_key(
    commit: &str,
    target: &BenchTarget,
    features: &[String],
    env: &[(String, OsString)],
) -> String {
    let mut h = Sha256::new();
    for part in [commit, &target.package, &target.name, &features.join(",")] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for (k, v) in env {
        h.update(k.as_bytes());
        h.update(v.as_encoded_bytes());
        h.update([0]);
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    hex[..16].to_string()
}

/// `rev`'s build of `target`: from the cache, or checked out and built.
pub fn at_rev(
    ws: &Workspace,
    target: &BenchTarget,
    rev: &str,
    env: &[(String, OsString)],
    features: &[String],
) -> Result<Side> {
    let repo = git(&ws.root, &["rev-parse", "--show-toplevel"])
        .map(PathBuf::from)
        .with_context(|| {
            format!(
                "--against needs a git repository around {}",
                ws.root.display()
            )
        })?;
    let commit = commit_of(&repo, rev)?;
    let short = &commit[..10.min(commit.len())];
    let label = format!("{rev} ({short})");
    let against = ws.target_dir.join("melt/against");
    let worktree = against.join("worktree");
    checkout(&repo, &worktree, &commit)?;
    let rel = target.package_dir.strip_prefix(&repo).with_context(|| {
        format!(
            "{} is outside the repository {}",
            target.package_dir.display(),
            repo.display()
        )
    })?;
    let package_dir = worktree.join(rel);
    if !package_dir.join("Cargo.toml").is_file() {
        bail!(
            "the package `{}` is not in {rev} ({short}): no {}",
            target.package,
            package_dir.join("Cargo.toml").display()
        );
    }
    let there = BenchTarget {
        package_dir,
        ..target.clone()
    };
    let cached = against
        .join("builds")
        .join(format!(
            "{short}-{}",
            build_key(&commit, target, features, env)
        ))
        .join(&target.name);
    if cached.is_file() {
        eprintln!(
            "melt: gate: {label}: the bench binary built before ({})",
            cached.display()
        );
    } else {
        eprintln!("melt: gate: building `{}` at {label}", target.name);
        let mut env = env.to_vec();
        // The working tree's target directory: its dependencies are built already.
        env.push(("CARGO_TARGET_DIR".into(), ws.target_dir.clone().into()));
        // From the working tree's package directory: the same cargo configuration files
        // apply (from inside the worktree, which sits in the repository, a config of the
        // repository would be read twice and its rustflags doubled — a rebuild of everything).
        let exe = build_bench(&target.package_dir, &there, &env, features)
            .with_context(|| format!("building `{}` at {label}", target.name))?;
        std::fs::create_dir_all(cached.parent().expect("has a parent"))?;
        let partial = cached.with_extension("partial");
        std::fs::copy(&exe, &partial)
            .with_context(|| format!("copying {} to {}", exe.display(), partial.display()))?;
        std::fs::rename(&partial, &cached)?;
    }
    Ok(Side {
        label,
        exe: cached,
        target: there,
    })
}

/// `worktree` at `commit`: added the first time, moved (and cleaned) after.
fn checkout(repo: &Path, worktree: &Path, commit: &str) -> Result<()> {
    let path = worktree.to_string_lossy();
    if worktree.join(".git").exists() {
        git(
            worktree,
            &["checkout", "--quiet", "--detach", "--force", commit],
        )?;
        git(worktree, &["clean", "-fdq"])?;
    } else {
        // A worktree whose directory went with `cargo clean` is still registered.
        git(repo, &["worktree", "prune"])?;
        if let Some(parent) = worktree.parent() {
            std::fs::create_dir_all(parent)?;
        }
        git(
            repo,
            &[
                "worktree", "add", "--quiet", "--detach", "--force", &path, commit,
            ],
        )?;
    }
    Ok(())
}
