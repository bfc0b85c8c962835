//! melt's device tests, one binary: the shipped suite on local, ssh and adb devices, and
//! cross-built on the emulated arm64 board.

mod common;

mod board;
mod devices;
