//! The two builds a paired comparison measures: a git revision's and the working tree's.
//!
//! A revision is checked out in one git worktree under `target/melt/against/worktree` (moved
//! from commit to commit, so cargo sees the same paths and rebuilds only what changed) and
//! built into the workspace's own target directory: the dependencies — llama.cpp above all,
//! minutes of C++ — are shared with the working tree's build, and only the workspace's crates
//! are compiled again. The bench binary is then kept under `target/melt/against/builds/`,
//! keyed by commit, bench target, features and build environment; a second comparison against
//! the same commit builds nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

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
    /// Shared libraries the binary needs beside it on a device (a fresh build says; a cached
    /// one leaves it to the other side's).
    pub libs: Vec<PathBuf>,
}

/// Builds a bench target for the machine the comparison runs on: its bench binary and the
/// libraries it needs there. The directory, when given, is the cargo target directory.
pub type Builder<'a> = dyn Fn(&BenchTarget, Option<&Path>) -> Result<(PathBuf, Vec<PathBuf>)> + 'a;

/// The working tree's build, copied beside the revisions' builds.
///
/// Both sides then run from paths of the same length: a process's start (its stack, the
/// strings above it) shifts with the length of its path and environment, and that alone can
/// move a hot loop's speed by a few percent.
pub fn working_tree(
    ws: &Workspace,
    target: &BenchTarget,
    setting: &str,
    build: &Builder,
) -> Result<Side> {
    let (exe, libs) = build(target, None)?;
    let dir = format!(
        "{WORKING_TREE}-{}",
        build_key(WORKING_TREE, target, setting)
    );
    let copy = ws
        .target_dir
        .join("melt/against/builds")
        .join(dir)
        .join(&target.name);
    copy_atomically(&exe, &copy)?;
    Ok(Side {
        label: "working tree".into(),
        exe: copy,
        target: target.clone(),
        libs,
    })
}

/// The working tree's build directory name: as long as a commit's ten hex digits.
const WORKING_TREE: &str = "work-tree.";

/// `from` copied to `to` (whose directory is made), never seen half-written.
fn copy_atomically(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to.parent().expect("has a parent"))?;
    let partial = to.with_extension("partial");
    std::fs::copy(from, &partial)
        .with_context(|| format!("copying {} to {}", from.display(), partial.display()))?;
    std::fs::rename(&partial, to).with_context(|| format!("renaming to {}", to.display()))?;
    Ok(())
}

pub(crate) fn git(dir: &Path, args: &[&str]) -> Result<String> {
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

/// What a cached build depends on besides the commit: the bench target, and `setting` (the
/// triple, features and build environment).
fn build_key(commit: &str, target: &BenchTarget, setting: &str) -> String {
    let mut h = Sha256::new();
    for part in [commit, &target.package, &target.name, setting] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    hex[..16].to_string()
}

/// `rev`'s build of `target`: from the cache, or checked out and built. `setting` names
/// everything besides the commit that makes two builds differ.
pub fn at_rev(
    ws: &Workspace,
    target: &BenchTarget,
    rev: &str,
    setting: &str,
    build: &Builder,
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
        .join(format!("{short}-{}", build_key(&commit, target, setting)))
        .join(&target.name);
    let mut libs = Vec::new();
    if cached.is_file() {
        eprintln!(
            "melt: gate: {label}: the bench binary built before ({})",
            cached.display()
        );
    } else {
        eprintln!("melt: gate: building `{}` at {label}", target.name);
        forget_workspace_crates(&ws.build_dir, &ws.members)?;
        // Into the working tree's target directory: its dependencies are built already.
        let built = build(&there, Some(&ws.target_dir));
        // Whatever came of it, the working tree's next build must not take the worktree's
        // crates for its own.
        forget_workspace_crates(&ws.build_dir, &ws.members)?;
        let (exe, l) = built.with_context(|| format!("building `{}` at {label}", target.name))?;
        libs = l;
        copy_atomically(&exe, &cached)?;
    }
    Ok(Side {
        label,
        exe: cached,
        target: there,
        libs,
    })
}

/// Makes cargo compile the workspace's own crates again on their next build.
///
/// Cargo names a workspace crate's artifacts by a hash of its path *relative to the workspace
/// root*, so the worktree's crates and the working tree's get the same names in one target
/// directory, and each build would take the other's artifacts for its own, fresh (the
/// fingerprint's files are the other checkout's, unchanged). Forgetting the fingerprints of
/// the workspace's packages before and after a revision's build makes cargo compile them again
/// — seconds to a minute — while every dependency stays built.
///
/// The fingerprints are in the build directory, which is the target directory unless cargo's
/// `build.build-dir` puts them apart.
fn forget_workspace_crates(build_dir: &Path, members: &[String]) -> Result<()> {
    // The host's `release/`, and each cross target's `<triple>/release/`.
    let mut dirs = vec![build_dir.join("release")];
    dirs.extend(
        std::fs::read_dir(build_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("release"))
            .filter(|d| d.join(".fingerprint").is_dir()),
    );
    for profile in dirs {
        let dir = profile.join(".fingerprint");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name.rsplit_once('-').is_some_and(|(package, hash)| {
                hash.len() == 16
                    && hash.bytes().all(|b| b.is_ascii_hexdigit())
                    && members.iter().any(|m| m == package)
            });
            if ours {
                std::fs::remove_dir_all(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
    }
    Ok(())
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
