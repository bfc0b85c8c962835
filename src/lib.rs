//! melt: benchmark language models on the devices people carry.
//!
//! This facade re-exports the framework ([`melt_bench`](mod@melt_bench): the `melt_bench!` macro, traits,
//! runner, statistics, the run store), the host's reports (`melt-report`: history, HTML,
//! exports, the gate, under the `host-reports` feature) and the engines ([`backends`]), so a
//! bench target needs one dependency. The shipped suite is `benches/suite.rs`.

pub use melt_bench::*;

#[cfg(feature = "host-reports")]
pub use melt_report::{export, gate, history, html, meter};

/// The inference engines compiled into this build (see `melt-backends`' features).
pub mod backends {
    pub use melt_backends::*;
}

/// The report sinks a bench binary of this build registers: the history and the HTML page
/// with `host-reports` (the default), none without (a device build: its host reports).
pub fn host_reports() -> melt_bench::report::Reports {
    #[cfg(feature = "host-reports")]
    return melt_report::host_reports();
    #[cfg(not(feature = "host-reports"))]
    return melt_bench::report::Reports::default();
}

/// Declares a bench target as [`melt_bench::melt_bench!`] does, registering this build's
/// report sinks ([`host_reports`]).
#[macro_export]
macro_rules! melt_bench {
    ($($body:tt)*) => {
        $crate::__private_melt::melt_bench! { @reports ($crate::host_reports()) $($body)* }
    };
}

#[doc(hidden)]
pub mod __private_melt {
    pub use melt_bench::melt_bench;
}
