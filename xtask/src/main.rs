//! `cargo xtask`: melt's own project commands are melt's command line ([`melt_cli`]), as any
//! project's xtask is, plus `test`, which brings what melt's own tests need and runs them.

mod testing;

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
enum Command {
    #[command(flatten)]
    Melt(Box<melt_cli::cli::Command>),
    /// Bring what melt's tests need, then run every test of the workspace
    Test(testing::Options),
}

fn main() -> ExitCode {
    let (program, args) = melt_cli::args();
    melt_cli::exit(match melt_cli::parse::<Command>(&program, args) {
        Command::Melt(command) => melt_cli::run_command(*command),
        Command::Test(t) => testing::run(&t, &melt_cli::target_dir()),
    })
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::Command;

    /// Every `cargo xtask` line of melt's committed workflow parses, with the workflow's
    /// expressions filled in as GitHub would.
    #[test]
    fn the_bench_workflow_runs_commands_that_exist() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../.github/workflows/bench.yml"
        );
        let workflow = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = workflow
            .lines()
            .filter_map(|l| l.trim().strip_prefix("run: cargo xtask "))
            .collect();
        assert_eq!(lines.len(), 3, "{workflow}");
        for line in lines {
            let filled = line
                .replace("${{ matrix.device }}", "pixel7")
                .replace("${{ github.base_ref }}", "main")
                .replace("\"$MELT_HISTORY_URL\"", "postgres://melt@db/melt");
            let args = std::iter::once("xtask").chain(filled.split_whitespace());
            let cmd = melt_cli::cli::Cli::<Command>::command();
            let parsed = cmd
                .try_get_matches_from(args)
                .and_then(|m| melt_cli::cli::Cli::<Command>::from_arg_matches(&m));
            assert!(
                parsed.is_ok(),
                "`cargo xtask {filled}`: {}",
                parsed.err().unwrap()
            );
        }
    }
}
