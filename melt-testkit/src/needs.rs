//! What a test needs from the machine, and what happens when it is missing: the test fails,
//! naming the thing and how to get it. `cargo xtask test` brings all of it (packages, tools,
//! models, the suite binary), so a missing one is a mistake worth a red test, not a quiet pass.
//!
//! Skipping is an explicit opt-out: `cargo xtask test --allow-skip` sets
//! [`ALLOW_SKIP_ENV`] to a file; a test that cannot run then appends one line saying which
//! test and why, returns, and xtask lists those lines when the run ends.

use std::io::Write;
use std::path::PathBuf;

/// The file skipped tests are recorded in; unset, a missing need fails its test.
pub const ALLOW_SKIP_ENV: &str = "MELT_TEST_ALLOW_SKIP";

/// The bench binary `cargo xtask test` builds before the tests (a test cannot run cargo while
/// cargo holds the build lock).
pub const SUITE_BIN_ENV: &str = "MELT_TEST_SUITE_BIN";

/// A build directory the tests may build into (cargo's `build.build-dir`): `cargo xtask test`
/// names its own target directory, whose lock no cargo holds while it runs the test binaries,
/// so the new-project test's project compiles llama.cpp and the rest no second time. Unset
/// (under a plain `cargo test`, which holds that lock), a project builds on its own.
pub const SHARED_BUILD_DIR_ENV: &str = "MELT_TEST_SHARED_BUILD_DIR";

/// A test cannot run here because `what` is missing (`fix` says how to get it). Fails the
/// test, unless skipping was allowed: then the skip is recorded and the caller returns.
#[track_caller]
pub fn missing(what: &str, fix: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    match std::env::var_os(ALLOW_SKIP_ENV) {
        Some(log) => {
            let line = format!("{test}: {what} ({fix})\n");
            eprintln!("skipped: {line}");
            // One write per line with O_APPEND: tests in parallel threads and processes
            // do not interleave their lines.
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if let Err(e) = written {
                panic!("{what}, and the skip cannot be recorded in {log:?}: {e}");
            }
        }
        None => panic!(
            "{what}: {fix}\n(`cargo xtask test` brings everything the tests need; \
             `cargo xtask test --allow-skip` skips what it cannot bring and lists it)"
        ),
    }
}

/// The suite's bench binary that `cargo xtask test` built; `None` after [`missing`] allowed
/// the skip.
pub fn suite_bin() -> Option<PathBuf> {
    match std::env::var_os(SUITE_BIN_ENV) {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            missing(
                &format!("{SUITE_BIN_ENV} is not set"),
                "run the tests with `cargo xtask test`, which builds the suite binary first",
            );
            None
        }
    }
}

/// The suite's bench binary cross-built for the emulated aarch64 board, and the board's
/// `[[device]]` entry (`device.toml`), which `cargo xtask test` sets up first.
pub const BOARD_BIN_ENV: &str = "MELT_TEST_BOARD_BIN";
pub const BOARD_DEVICE_ENV: &str = "MELT_TEST_BOARD_DEVICE";
/// melt-convert built with libtorch, which makes the board test's TorchScript model.
pub const CONVERT_BIN_ENV: &str = "MELT_TEST_CONVERT_BIN";

/// The aarch64 bench binary, the running board's `[[device]]` text and melt-convert; `None`
/// after [`missing`] allowed the skip.
pub fn board() -> Option<(PathBuf, String, PathBuf)> {
    let (Some(bin), Some(device), Some(convert)) = (
        std::env::var_os(BOARD_BIN_ENV),
        std::env::var_os(BOARD_DEVICE_ENV),
        std::env::var_os(CONVERT_BIN_ENV),
    ) else {
        missing(
            &format!("{BOARD_BIN_ENV}, {BOARD_DEVICE_ENV} or {CONVERT_BIN_ENV} is not set"),
            "run the tests with `cargo xtask test`, which sets up the emulated arm64 board \
             (`cargo melt setup arm64-board`, root) and cross-builds the suite for it",
        );
        return None;
    };
    match std::fs::read_to_string(&device) {
        Ok(entry) => Some((PathBuf::from(bin), entry, PathBuf::from(convert))),
        Err(e) => {
            missing(
                &format!("the board's [[device]] {device:?}: {e}"),
                "`cargo melt setup arm64-board` writes it",
            );
            None
        }
    }
}
