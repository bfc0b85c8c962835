//! melt: benchmark language models on the devices people carry.
//!
//! This facade re-exports the framework ([`melt_bench`]: the `melt_bench!` macro, traits,
//! runner, statistics, reports) and the engines ([`backends`]), so a bench target needs one
//! dependency. The shipped suite is `benches/suite.rs`.

pub use melt_bench::*;

/// The inference engines compiled into this build (see `melt-backends`' features).
pub mod backends {
    pub use melt_backends::*;
}
