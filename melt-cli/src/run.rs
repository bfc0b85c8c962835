//! `run --model PATH|NAME [llama-bench flags]`: a model benched without writing a bench target.
//!
//! melt's generic bench — a bench target that declares every enabled engine and nothing else —
//! is written into the melt cache as a small cargo project, built once per melt source and
//! feature set (its own target directory, `$MELT_RUN_TARGET_DIR` to choose another), and run
//! here or on devices exactly as `bench` runs a project's own: the same measurement, and the
//! results in the current workspace's `target/` (the history and reports included).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use melt_bench::model::Registry;
use sha2::{Digest, Sha256};

use crate::cli;
use crate::workspace::{BenchTarget, Workspace};

/// Where melt's own sources are when this binary was built from a checkout (`cargo install
/// --path cargo-melt`): the generic bench depends on them by path, else on this version.
fn melt_dependency(features: &[String]) -> String {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf);
    let is_melt = |d: &Path| {
        std::fs::read_to_string(d.join("Cargo.toml")).is_ok_and(|t| t.contains("name = \"melt\""))
    };
    let features = features
        .iter()
        .map(|f| format!("{f:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    match checkout.filter(|d| is_melt(d)) {
        Some(dir) => format!(
            "melt = {{ path = {:?}, features = [{features}] }}",
            dir.display().to_string()
        ),
        None => format!(
            "melt = {{ version = \"={}\", features = [{features}] }}",
            env!("CARGO_PKG_VERSION")
        ),
    }
}

/// The generic bench's project: `<cache>/run/<hash of its manifest>/`, written if missing.
fn generic_bench(cache: &Path, features: &[String]) -> Result<BenchTarget> {
    let manifest = format!(
        "# melt's generic bench, written by `cargo melt run`.\n\
         [package]\nname = \"melt-run\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dev-dependencies]\n{}\n\n[[bench]]\nname = \"run\"\nharness = false\n\n[workspace]\n",
        melt_dependency(features)
    );
    let key = hex(&Sha256::digest(manifest.as_bytes()))[..16].to_string();
    let dir = cache.join("run").join(key);
    std::fs::create_dir_all(dir.join("benches"))
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("Cargo.toml"), &manifest)?;
    std::fs::write(
        dir.join("benches/run.rs"),
        "//! melt's generic bench: `cargo melt run` gives it the models and the sweep.\n\
         melt::melt_bench! { models: [], backends: [melt::backends::enabled()] }\n",
    )?;
    // The versions melt is tested with, when built from a checkout.
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    if !dir.join("Cargo.lock").is_file() && lock.is_file() {
        std::fs::copy(&lock, dir.join("Cargo.lock"))?;
    }
    Ok(BenchTarget {
        package: "melt-run".into(),
        name: "run".into(),
        package_dir: dir,
        features: Vec::new(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `--model` values as files: a path as given, a registry name fetched into the cache
/// (hash-verified) and its file named.
fn model_files(models: &[String]) -> Result<Vec<PathBuf>> {
    let mut registry = None;
    models
        .iter()
        .map(|m| {
            let path = Path::new(m);
            if path.is_file() {
                return Ok(path.to_path_buf());
            }
            let registry = match &mut registry {
                Some(r) => r,
                None => registry.insert(Registry::discover(&std::env::current_dir()?)?),
            };
            if registry.get(m).is_err() {
                bail!(
                    "--model {m}: no such file, and no registry model of that name (known: {})",
                    registry
                        .models
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            crate::models::fetch(registry, &crate::models::cache(), m)
        })
        .collect()
}

/// Options of `run` written among the bench arguments (after a flag clap passed through)
/// are taken out and used, so their order does not matter.
fn take_own_options(r: &mut cli::Run) -> Result<()> {
    let mut rest = Vec::new();
    let mut args = std::mem::take(&mut r.args).into_iter();
    while let Some(a) = args.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        if !["--model", "--target", "--device", "--features"].contains(&flag.as_str()) {
            rest.push(a);
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .with_context(|| format!("{flag} needs a value"))?,
        };
        match flag.as_str() {
            "--model" => r.models.push(value),
            "--features" => r.features.extend(value.split(',').map(str::to_string)),
            _ => r.target = value,
        }
    }
    r.args = rest;
    Ok(())
}

pub fn run(mut r: cli::Run) -> Result<ExitCode> {
    take_own_options(&mut r)?;
    if r.models.is_empty() {
        bail!("run needs --model PATH|NAME (a model file, or a registry name: `cargo melt models list`)");
    }
    // The current workspace's target/ receives the results; the generic bench builds in its
    // own directory. (Read before CARGO_TARGET_DIR is pointed at the build's.)
    let results = crate::target_dir();
    let cache = crate::models::cache().root.clone();
    let bench = generic_bench(&cache, &r.features)?;
    let build_dir = std::env::var_os("MELT_RUN_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("run/target"));
    // Every cargo this process runs from here on builds the generic bench there; the run is
    // recorded against the current directory's commit, not the cache's.
    std::env::set_var("CARGO_TARGET_DIR", &build_dir);
    std::env::set_var("MELT_GIT_DIR", std::env::current_dir()?);
    let mut args: Vec<String> = Vec::new();
    for file in model_files(&r.models)? {
        args.extend(["--model".into(), file.display().to_string()]);
    }
    args.extend(r.args.iter().cloned());
    let host = r.target == "host";
    if host {
        args.extend(["--target-dir".into(), results.display().to_string()]);
    }
    let b = cli::Bench {
        benches: Vec::new(),
        packages: Vec::new(),
        target: r.target.clone(),
        rounds: 1,
        resume: false,
        case_timeout: std::time::Duration::from_secs(300),
        cross: false,
        bench_bin: None,
        features: Vec::new(),
        // MELT_HISTORY_URL, when set, reaches the history sink by the environment.
        history: None,
        args,
    };
    if host {
        let ws = Workspace {
            root: bench.package_dir.clone(),
            // The generic bench is run, never gated: nothing reads its build directory.
            build_dir: build_dir.clone(),
            target_dir: build_dir,
            benches: vec![bench.clone()],
            members: vec![bench.package.clone()],
        };
        crate::bench::bench_here(&b, &ws, &[bench])
    } else {
        crate::bench::bench_on_devices(&b, Some(bench), &results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> cli::Run {
        let cli = cli::Cli::<cli::Command>::try_parse_from(
            ["cargo-melt", "run"].iter().chain(args.iter()),
        )
        .unwrap();
        match cli.command {
            cli::Command::Run(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn llama_bench_flags_pass_through_and_own_options_are_found_anywhere() {
        let mut r = parse(&["--model", "a.gguf", "-t", "1,2", "-p", "512", "-n", "128"]);
        take_own_options(&mut r).unwrap();
        assert_eq!(r.models, ["a.gguf"]);
        assert_eq!(r.args, ["-t", "1,2", "-p", "512", "-n", "128"]);
        let mut r = parse(&[
            "-pg",
            "512,128",
            "--model=b.gguf",
            "--target",
            "pixel",
            "-r",
            "3",
        ]);
        take_own_options(&mut r).unwrap();
        assert_eq!(
            (r.models.as_slice(), r.target.as_str()),
            (&["b.gguf".to_string()][..], "pixel")
        );
        assert_eq!(r.args, ["-pg", "512,128", "-r", "3"]);
        let mut r = parse(&["-t", "1", "--model"]);
        assert!(take_own_options(&mut r).is_err());
    }

    #[test]
    fn the_generic_bench_is_one_project_per_feature_set() {
        let cache = tempfile::tempdir().unwrap();
        let a = generic_bench(cache.path(), &[]).unwrap();
        let again = generic_bench(cache.path(), &[]).unwrap();
        let torch = generic_bench(cache.path(), &["libtorch".into()]).unwrap();
        assert_eq!(a, again);
        assert_ne!(a.package_dir, torch.package_dir);
        let manifest = std::fs::read_to_string(torch.package_dir.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("features = [\"libtorch\"]"), "{manifest}");
        // Built from this checkout: melt by path.
        assert!(manifest.contains("path = "), "{manifest}");
        let bench = std::fs::read_to_string(a.package_dir.join("benches/run.rs")).unwrap();
        assert!(bench.contains("melt_bench!"));
    }

    #[test]
    fn a_model_that_is_neither_file_nor_registry_name_is_named() {
        let e = model_files(&["no-such-model".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no-such-model") && e.contains("gemma-3-270m-q4_k_m"),
            "{e}"
        );
    }
}
