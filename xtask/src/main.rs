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
