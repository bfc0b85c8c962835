//! Building the bench binary for a device's target triple.
//!
//! - The host's own triple: plain `cargo bench --no-run`, the very build `cargo melt bench`
//!   and `cargo xtask test` use (no second llama.cpp build).
//! - `*-linux-android`: plain cargo with the NDK's clang as linker, C and C++ compiler, and
//!   `ANDROID_NDK` / `ANDROID_API_LEVEL` for llama-cpp-sys-2's cmake build (its Android
//!   toolchain file, ABI and platform), as cargo-ndk does; `libc++_shared.so` ships beside the
//!   binary because the NDK build links the shared C++ runtime.
//! - Other Linux triples: plain cargo with the GNU cross toolchain named in
//!   `.cargo/config.toml` (e.g. `aarch64-linux-gnu-gcc` from Debian's `gcc-aarch64-linux-gnu`).
//! - `--cross`: the `cross` tool, when a docker engine answers.
//!
//! Everything missing is named with the command that installs it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::workspace::BenchTarget;

/// A build to run: program, arguments, extra environment, and libraries to ship.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildPlan {
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Shared libraries the binary needs on the device that the device does not have.
    pub libs: Vec<PathBuf>,
    /// The GNU cross compiler whose runtime libraries ship with the binary: llama.cpp is built
    /// with OpenMP for GNU triples, and a board need not have `libgomp.so.1`.
    pub gnu_runtime_of: Option<String>,
}

/// What a build needs to know about this machine (read from the real one in [`Toolchain::detect`],
/// made up in tests).
pub struct Toolchain {
    /// The compiler chosen for a device (`[[device]] rustc`), if not cargo's own.
    pub rustc: Option<PathBuf>,
    pub host_triple: String,
    /// `rustc --print sysroot`.
    pub sysroot: PathBuf,
    pub env: BTreeMap<String, String>,
    /// Whether a program is on PATH.
    pub has_program: Box<dyn Fn(&str) -> bool>,
}

pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

impl Toolchain {
    /// Cargo's compiler (`RUSTC`, or `rustc` on PATH).
    pub fn detect() -> Result<Toolchain> {
        Toolchain::detect_with(None)
    }

    /// `rustc`, or cargo's compiler when `None`.
    pub fn detect_with(chosen: Option<&Path>) -> Result<Toolchain> {
        let rustc = match chosen {
            Some(r) => r.as_os_str().to_owned(),
            None => std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()),
        };
        let vv = Command::new(&rustc)
            .arg("-vV")
            .output()
            .with_context(|| format!("cannot run {}", rustc.to_string_lossy()))?;
        let vv = String::from_utf8_lossy(&vv.stdout);
        let host_triple = vv
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .context("rustc -vV printed no host triple")?
            .to_string();
        let sysroot = Command::new(&rustc)
            .args(["--print", "sysroot"])
            .output()
            .context("cannot run rustc")?;
        Ok(Toolchain {
            rustc: chosen.map(Path::to_path_buf),
            host_triple,
            sysroot: PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim()),
            env: std::env::vars().collect(),
            has_program: Box::new(on_path),
        })
    }

    fn has_rust_std(&self, triple: &str) -> bool {
        self.sysroot
            .join("lib/rustlib")
            .join(triple)
            .join("lib")
            .is_dir()
    }
}

/// NDK clang's target prefix for a Rust Android triple.
fn ndk_clang_target(triple: &str) -> Option<&'static str> {
    match triple {
        "aarch64-linux-android" => Some("aarch64-linux-android"),
        "armv7-linux-androideabi" => Some("armv7a-linux-androideabi"),
        "x86_64-linux-android" => Some("x86_64-linux-android"),
        "i686-linux-android" => Some("i686-linux-android"),
        _ => None,
    }
}

/// The NDK sysroot's library directory name for a Rust Android triple.
fn ndk_lib_dir(triple: &str) -> &str {
    match triple {
        "armv7-linux-androideabi" => "arm-linux-androideabi",
        t => t,
    }
}

/// The GNU cross compiler prefix `.cargo/config.toml` names as linker for a Linux triple.
fn gnu_prefix(triple: &str) -> Option<&'static str> {
    match triple {
        "aarch64-unknown-linux-gnu" => Some("aarch64-linux-gnu"),
        "armv7-unknown-linux-gnueabihf" => Some("arm-linux-gnueabihf"),
        "riscv64gc-unknown-linux-gnu" => Some("riscv64-linux-gnu"),
        "x86_64-unknown-linux-gnu" => Some("x86_64-linux-gnu"),
        _ => None,
    }
}

/// `CC_aarch64_linux_android`-style variable names (cc and cmake crates read these).
fn target_var(prefix: &str, triple: &str) -> String {
    format!("{prefix}_{}", triple.replace('-', "_"))
}

fn cargo_linker_var(triple: &str) -> String {
    format!(
        "CARGO_TARGET_{}_LINKER",
        triple.replace(['-', '.'], "_").to_uppercase()
    )
}

/// The build of the bench target `bench` for `triple`.
pub fn plan(
    tc: &Toolchain,
    triple: &str,
    bench: &BenchTarget,
    api_level: u32,
    cross: bool,
) -> Result<BuildPlan> {
    let mut p = BuildPlan {
        program: tc
            .env
            .get("CARGO")
            .cloned()
            .unwrap_or_else(|| "cargo".into()),
        args: ["bench".into(), "--no-run".into()]
            .into_iter()
            .chain(bench.cargo_args())
            .chain(["--message-format".into(), "json-render-diagnostics".into()])
            .collect(),
        env: BTreeMap::new(),
        libs: Vec::new(),
        gnu_runtime_of: None,
    };
    if let Some(rustc) = &tc.rustc {
        p.env.insert("RUSTC".into(), rustc.display().to_string());
    }
    if triple == tc.host_triple && !cross {
        // No `--target` and the host build's flags: the host build's own artifacts, so
        // nothing is compiled twice.
        p.env
            .extend(native_rustflags(&std::env::current_dir()?, &tc.host_triple));
        return Ok(p);
    }
    p.args.extend(["--target".into(), triple.into()]);
    if cross {
        if !(tc.has_program)("cross") {
            bail!("--cross needs the `cross` tool: cargo install cross --locked");
        }
        let engine = Command::new("docker")
            .arg("info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        match engine {
            Ok(o) if o.status.success() => {}
            Ok(o) => bail!(
                "--cross needs a running docker engine, and `docker info` failed: {}\n\
                 (without --cross, melt builds with the target's own toolchain)",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => bail!("--cross needs docker (or podman), which cannot run here: {e}"),
        }
        p.program = "cross".into();
        return Ok(p);
    }
    if !tc.has_rust_std(triple) {
        bail!(
            "the Rust standard library for {triple} is not installed: rustup target add {triple} \
             (or name a compiler that has it: `rustc = ...` in the [[device]]; \
             `cargo melt setup arm64-board` makes one for aarch64 from Debian's archive)"
        );
    }
    if let Some(clang_target) = ndk_clang_target(triple) {
        let ndk = ["ANDROID_NDK_HOME", "ANDROID_NDK_ROOT", "ANDROID_NDK"]
            .iter()
            .find_map(|v| tc.env.get(*v))
            .with_context(|| {
                format!(
                    "building for {triple} needs the Android NDK: install it (Android Studio's SDK \
                     manager, or `sdkmanager \"ndk;27.2.12479018\"`) and set ANDROID_NDK_HOME to it"
                )
            })?;
        let ndk = PathBuf::from(ndk);
        let bin = ndk.join("toolchains/llvm/prebuilt/linux-x86_64/bin");
        let clang = bin.join(format!("{clang_target}{api_level}-clang"));
        if !clang.is_file() {
            bail!(
                "the NDK at {} has no {} (is ANDROID_NDK_HOME an NDK, and does it support API level {api_level}? set api_level in the [[device]])",
                ndk.display(),
                clang.display()
            );
        }
        let toolchain_file = ndk.join("build/cmake/android.toolchain.cmake");
        if !toolchain_file.is_file() {
            bail!(
                "the NDK at {} has no {}",
                ndk.display(),
                toolchain_file.display()
            );
        }
        let clangxx = bin.join(format!("{clang_target}{api_level}-clang++"));
        let s = |p: &Path| p.display().to_string();
        p.env.insert(cargo_linker_var(triple), s(&clang));
        p.env.insert(target_var("CC", triple), s(&clang));
        p.env.insert(target_var("CXX", triple), s(&clangxx));
        p.env
            .insert(target_var("AR", triple), s(&bin.join("llvm-ar")));
        // llama-cpp-sys-2 reads these to configure llama.cpp's cmake for Android.
        p.env.insert("ANDROID_NDK".into(), s(&ndk));
        p.env
            .insert("ANDROID_API_LEVEL".into(), api_level.to_string());
        p.env
            .insert("ANDROID_PLATFORM".into(), format!("android-{api_level}"));
        let cxx_shared = ndk
            .join("toolchains/llvm/prebuilt/linux-x86_64/sysroot/usr/lib")
            .join(ndk_lib_dir(triple))
            .join("libc++_shared.so");
        if !cxx_shared.is_file() {
            bail!(
                "the NDK at {} has no {}",
                ndk.display(),
                cxx_shared.display()
            );
        }
        p.libs.push(cxx_shared);
        return Ok(p);
    }
    if let Some(prefix) = gnu_prefix(triple) {
        let gcc = format!("{prefix}-gcc");
        let gxx = format!("{prefix}-g++");
        for prog in [&gcc, &gxx] {
            if !(tc.has_program)(prog) {
                bail!(
                    "building for {triple} needs the {prefix} cross compilers: \
                     apt-get install gcc-{prefix} g++-{prefix}"
                );
            }
        }
        p.env.insert(cargo_linker_var(triple), gcc.clone());
        p.env.insert(target_var("CC", triple), gcc.clone());
        p.env.insert(target_var("CXX", triple), gxx);
        p.gnu_runtime_of = Some(gcc);
        return Ok(p);
    }
    bail!(
        "melt does not know how to build for {triple} without --cross \
         (known: the host, *-linux-android, aarch64/armv7/riscv64 Linux GNU)"
    )
}

/// The bench executable a cargo JSON message stream names.
pub fn executable_from_messages(stdout: &str, bench: &str) -> Option<PathBuf> {
    stdout.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["reason"] == "compiler-artifact" && v["target"]["name"] == bench)
            .then(|| v["executable"].as_str().map(PathBuf::from))
            .flatten()
    })
}

/// Runs the build; the bench executable and the libraries to ship.
pub fn run(plan: &BuildPlan, bench: &str) -> Result<(PathBuf, Vec<PathBuf>)> {
    eprintln!(
        "melt: {}{} {}",
        plan.env
            .iter()
            .map(|(k, v)| format!("{k}={v} "))
            .collect::<String>(),
        plan.program,
        plan.args.join(" ")
    );
    let out = Command::new(&plan.program)
        .args(&plan.args)
        .envs(&plan.env)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", plan.program))?;
    if !out.status.success() {
        bail!("the build for the device failed (see the compiler output above)");
    }
    let exe = executable_from_messages(&String::from_utf8_lossy(&out.stdout), bench)
        .with_context(|| format!("cargo built no executable for the bench target `{bench}`"))?;
    let mut libs = plan.libs.clone();
    if let Some(gcc) = &plan.gnu_runtime_of {
        libs.push(gnu_runtime_library(gcc, "libgomp.so.1")?);
    }
    Ok((exe, libs))
}

/// The GNU runtime libraries a binary cross-built for `triple` needs on its device (none for
/// the host's own triple, Android or a triple melt has no GNU compiler name for).
pub fn gnu_runtime(triple: &str, host_triple: &str) -> Result<Vec<PathBuf>> {
    match gnu_prefix(triple) {
        Some(prefix) if triple != host_triple => Ok(vec![gnu_runtime_library(
            &format!("{prefix}-gcc"),
            "libgomp.so.1",
        )?]),
        _ => Ok(Vec::new()),
    }
}

/// Where the cross compiler `gcc` keeps one of its runtime libraries.
fn gnu_runtime_library(gcc: &str, name: &str) -> Result<PathBuf> {
    let out = Command::new(gcc)
        .arg(format!("-print-file-name={name}"))
        .output()
        .with_context(|| format!("cannot run {gcc}"))?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // gcc prints the bare name back when it has no such library.
    if !(out.status.success() && path.is_absolute() && path.is_file()) {
        bail!(
            "the binary needs {name} on the device and {gcc} has none to ship \
             (`{gcc} -print-file-name={name}`); install its runtime, e.g. the libgomp1 \
             package for that architecture, or list the library in the [[device]]'s `libs`"
        );
    }
    Ok(path)
}

/// A host build for the CPU it runs on, as llama.cpp's own llama-bench is built (llama-cpp-sys-2
/// leaves AVX2/FMA out unless rustc targets `native`) — unless the user's environment or cargo
/// configuration sets rustflags already, which are then theirs to choose. The variable to set,
/// if any (only for the host's triple: a cross build must not take this CPU's features).
pub fn native_rustflags(root: &Path, host: &str) -> Option<(String, String)> {
    let target_var = format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        host.to_uppercase().replace(['-', '.'], "_")
    );
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    let env_sets = |v: &str| std::env::var_os(v).is_some();
    (!rustflags_configured(root, cargo_home.as_deref(), &target_var, env_sets))
        .then(|| (target_var, "-C target-cpu=native".to_string()))
}

/// Whether rustflags come from the environment or from a cargo config that applies in `root`.
fn rustflags_configured(
    root: &Path,
    cargo_home: Option<&Path>,
    target_var: &str,
    env_sets: impl Fn(&str) -> bool,
) -> bool {
    let from_env = [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        target_var,
    ]
    .into_iter()
    .any(env_sets);
    from_env
        || root
            .ancestors()
            .map(|d| d.join(".cargo"))
            .chain(cargo_home.map(Path::to_path_buf))
            .flat_map(|d| [d.join("config.toml"), d.join("config")])
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .any(|text| text.contains("rustflags"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toolchain(
        sysroot: &Path,
        env: &[(&str, &Path)],
        programs: &'static [&'static str],
    ) -> Toolchain {
        Toolchain {
            rustc: None,
            host_triple: "x86_64-unknown-linux-gnu".into(),
            sysroot: sysroot.to_path_buf(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.display().to_string()))
                .collect(),
            has_program: Box::new(move |p| programs.contains(&p)),
        }
    }

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "").unwrap();
    }

    fn suite() -> BenchTarget {
        BenchTarget {
            package: "melt".into(),
            name: "suite".into(),
            package_dir: "/w".into(),
            features: Vec::new(),
        }
    }

    #[test]
    fn host_triple_reuses_the_host_build() {
        let tc = toolchain(Path::new("/nowhere"), &[], &[]);
        let p = plan(&tc, "x86_64-unknown-linux-gnu", &suite(), 28, false).unwrap();
        assert_eq!(
            p.args,
            [
                "bench",
                "--no-run",
                "--manifest-path",
                "/w/Cargo.toml",
                "--package",
                "melt",
                "--bench",
                "suite",
                "--message-format",
                "json-render-diagnostics"
            ]
        );
        assert!(p.env.is_empty() && p.libs.is_empty());
    }

    #[test]
    fn android_build_from_the_ndk() {
        let dir = tempfile::tempdir().unwrap();
        let sysroot = dir.path().join("rust");
        let ndk = dir.path().join("ndk r27");
        let tc = toolchain(&sysroot, &[("ANDROID_NDK_HOME", &ndk)], &[]);
        let e = plan(&tc, "aarch64-linux-android", &suite(), 30, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the Rust standard library for aarch64-linux-android is not installed: rustup target add aarch64-linux-android")
                && e.contains("`rustc = ...` in the [[device]]"),
            "{e}"
        );
        std::fs::create_dir_all(sysroot.join("lib/rustlib/aarch64-linux-android/lib")).unwrap();
        let e = plan(&tc, "aarch64-linux-android", &suite(), 30, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("aarch64-linux-android30-clang"), "{e}");
        let bin = ndk.join("toolchains/llvm/prebuilt/linux-x86_64/bin");
        touch(&bin.join("aarch64-linux-android30-clang"));
        touch(&ndk.join("build/cmake/android.toolchain.cmake"));
        let libcxx = ndk.join(
            "toolchains/llvm/prebuilt/linux-x86_64/sysroot/usr/lib/aarch64-linux-android/libc++_shared.so",
        );
        touch(&libcxx);
        let p = plan(&tc, "aarch64-linux-android", &suite(), 30, false).unwrap();
        assert_eq!(p.program, "cargo");
        assert_eq!(
            p.args[p.args.len() - 2..],
            ["--target", "aarch64-linux-android"]
        );
        let clang = bin
            .join("aarch64-linux-android30-clang")
            .display()
            .to_string();
        assert_eq!(p.env["CARGO_TARGET_AARCH64_LINUX_ANDROID_LINKER"], clang);
        assert_eq!(p.env["CC_aarch64_linux_android"], clang);
        assert_eq!(p.env["CXX_aarch64_linux_android"], format!("{clang}++"));
        assert_eq!(
            p.env["AR_aarch64_linux_android"],
            bin.join("llvm-ar").display().to_string()
        );
        assert_eq!(p.env["ANDROID_NDK"], ndk.display().to_string());
        assert_eq!(p.env["ANDROID_API_LEVEL"], "30");
        assert_eq!(p.env["ANDROID_PLATFORM"], "android-30");
        assert_eq!(p.libs, [libcxx]);
    }

    #[test]
    fn missing_toolchains_say_how_to_install_them() {
        let dir = tempfile::tempdir().unwrap();
        for t in [
            "aarch64-linux-android",
            "aarch64-unknown-linux-gnu",
            "mips-unknown-linux-gnu",
        ] {
            std::fs::create_dir_all(dir.path().join("lib/rustlib").join(t).join("lib")).unwrap();
        }
        let tc = toolchain(dir.path(), &[], &[]);
        let e = plan(&tc, "aarch64-linux-android", &suite(), 28, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs the Android NDK") && e.contains("ANDROID_NDK_HOME"),
            "{e}"
        );
        let e = plan(&tc, "aarch64-unknown-linux-gnu", &suite(), 28, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("apt-get install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu"),
            "{e}"
        );
        let e = plan(&tc, "mips-unknown-linux-gnu", &suite(), 28, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--cross"), "{e}");
        let e = plan(&tc, "aarch64-unknown-linux-gnu", &suite(), 28, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cargo install cross"), "{e}");

        let gnu = toolchain(
            dir.path(),
            &[],
            &["aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++"],
        );
        let p = plan(&gnu, "aarch64-unknown-linux-gnu", &suite(), 28, false).unwrap();
        assert_eq!(
            p.env["CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER"],
            "aarch64-linux-gnu-gcc"
        );
        assert_eq!(
            p.env["CXX_aarch64_unknown_linux_gnu"],
            "aarch64-linux-gnu-g++"
        );
        // llama.cpp's OpenMP runtime ships from that compiler; no compiler named, cargo's.
        assert_eq!(p.gnu_runtime_of.as_deref(), Some("aarch64-linux-gnu-gcc"));
        assert!(!p.env.contains_key("RUSTC"));
        let chosen = Toolchain {
            rustc: Some("/opt/rust-aarch64/rustc".into()),
            ..gnu
        };
        let p = plan(&chosen, "aarch64-unknown-linux-gnu", &suite(), 28, false).unwrap();
        assert_eq!(p.env["RUSTC"], "/opt/rust-aarch64/rustc");
    }

    #[test]
    fn cross_needs_a_docker_engine() {
        // Without docker, or with a client but no engine (this machine), the error says so.
        let tc = toolchain(Path::new("/"), &[], &["cross"]);
        match plan(&tc, "aarch64-unknown-linux-gnu", &suite(), 28, true) {
            Ok(p) => assert_eq!(p.program, "cross"), // an engine answers here after all
            Err(e) => assert!(e.to_string().contains("docker"), "{e}"),
        }
    }

    #[test]
    fn executable_is_found_in_cargo_messages() {
        let msgs = r#"{"reason":"compiler-artifact","target":{"name":"melt_bench","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","target":{"name":"suite","kind":["bench"]},"executable":"/t/release/deps/suite-abc"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executable_from_messages(msgs, "suite"),
            Some(PathBuf::from("/t/release/deps/suite-abc"))
        );
        assert_eq!(executable_from_messages(msgs, "other"), None);
    }

    #[test]
    fn rustflags_are_left_to_a_project_that_sets_them() {
        let dir = tempfile::tempdir().unwrap();
        let (root, home) = (dir.path().join("p"), dir.path().join("home"));
        std::fs::create_dir_all(root.join(".cargo")).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        let var = "CARGO_TARGET_X_RUSTFLAGS";
        let none = |_: &str| false;
        // /tmp and / have no cargo config of their own here.
        assert!(!rustflags_configured(&root, Some(&home), var, none));
        assert!(rustflags_configured(&root, Some(&home), var, |v| v == "RUSTFLAGS"));
        assert!(rustflags_configured(&root, Some(&home), var, |v| v == var));
        std::fs::write(home.join("config.toml"), "[build]\nrustflags = []\n").unwrap();
        assert!(rustflags_configured(&root, Some(&home), var, none));
        std::fs::remove_file(home.join("config.toml")).unwrap();
        std::fs::write(root.join(".cargo/config.toml"), "[alias]\nx = \"run\"\n").unwrap();
        assert!(!rustflags_configured(&root, Some(&home), var, none));
        std::fs::write(
            root.join(".cargo/config.toml"),
            "[target.x]\nrustflags = [\"-C\", \"target-cpu=native\"]\n",
        )
        .unwrap();
        assert!(rustflags_configured(
            &root.join("sub"),
            Some(&home),
            var,
            none
        ));
    }
}
