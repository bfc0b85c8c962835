//! `cargo melt`: melt's command line, installed (`cargo install --path cargo-melt`).

fn main() -> std::process::ExitCode {
    melt_cli::main()
}
