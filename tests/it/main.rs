//! melt's end-to-end tests: one binary, so llama.cpp and libtorch are linked once for all of
//! them, with a module per topic.

mod common;

mod bad_input;
mod command_line;
mod engines;
mod gate;
mod html_report;
mod probes;
mod run_files;
mod tasks;
mod two_at_once;
