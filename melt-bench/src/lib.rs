//! melt-bench: the framework behind melt, with no ML dependency.
//!
//! Data flows one way: a bench target ([`melt_bench!`]) → [`runner`] (load, warm up, sample
//! adaptively, log every sample) → [`analysis`] ([`stats`] with criterion's semantics) →
//! reports ([`criterion_format`] for criterion's tools, [`store`] for melt's own run files,
//! a markdown table on stdout, and the [`report`] sinks). Engines implement
//! [`backend::Backend`] (from `melt-core`, the one melt crate they depend on) in
//! `melt-backends` and prove themselves with `melt-testkit`'s conformance kit.

pub mod analysis;
pub mod bencher_format;
pub mod cli;
pub mod criterion_format;
pub mod datasets;
pub mod driver;
pub mod events;
pub mod fs;
pub mod host;
pub mod markdown;
pub mod memory;
pub mod metric;
pub mod model;
pub mod probe;
pub mod progress;
pub mod report;
pub mod runner;
pub mod sampling;
pub mod stats;
pub mod store;
pub mod suite;
pub mod sustained;
pub mod tasks;
pub mod timestamp;
pub mod worker;
pub mod workload;

// What engines implement (melt-core) and the file formats (melt-formats), under the paths bench
// authors and the harness have always used.
pub use melt_core::{backend, params};
pub use melt_formats::{gguf, onnx_proto};

pub use backend::{Backend, BackendError, KvShape, LoadedModel, ModelInfo, Session, Token};
pub use model::{ModelFormat, ModelSpec};
pub use params::{all_cores, FlashAttn, ModelParams, Params, SessionParams, Sweep};
pub use suite::Suite;
pub use workload::{pp, pp_tg, tg, Workload};

/// What `melt_bench!` expands to calls; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::driver::main;
    pub use crate::params::Sweep;
    pub use crate::report::Reports;
    pub use crate::suite::Suite;
    pub use crate::workload;
    pub use melt_core::backend::IntoBackends;
}

/// Declares a bench target: models × backends × parameter sweep × workloads, and a `main`
/// that parses criterion-compatible arguments and runs them.
///
/// ```no_run
/// use melt_bench::{melt_bench, Backend};
/// # fn my_backend() -> impl Backend { unimplemented!() as melt_testkit::NoBackend }
/// melt_bench! {
///     models: ["gemma-3-270m-q4_k_m"],
///     backends: [my_backend()],
///     sweep: { threads: [1, melt_bench::all_cores()] },
///     workloads: [pp(512), tg(128), pp_tg(512, 128), tg(128).at_depth(512)],
/// }
/// ```
///
/// ## `models`
/// Names from the `melt.toml` registry (fetched into the cache by `cargo melt models fetch`),
/// or paths to local files. `--model PATH` on the command line replaces them.
///
/// ## `backends`
/// Expressions producing a [`Backend`] or a `Vec<Box<dyn Backend>>` (such as
/// `melt::backends::enabled()`); a model is only paired with backends that accept its format.
///
/// ## `sweep`
/// Lists of values per parameter — `threads`, `threads_batch`, `n_batch`, `n_ubatch`,
/// `n_ctx`, `flash_attn`, `type_k`, `type_v`, `mmap`, `n_gpu_layers` — expanded as a
/// cartesian product, weights reloaded only when `mmap` or `n_gpu_layers` change. Optional;
/// llama-bench's flags on the command line (`-t 1,2,4`, `-ub 256,512`, …) replace an axis.
///
/// A misspelt parameter does not compile:
/// ```compile_fail
/// # use melt_bench::{melt_bench, Backend};
/// # fn b() -> melt_testkit::NoBackend { melt_testkit::NoBackend }
/// melt_bench! { models: ["m"], backends: [b()], sweep: { thread: [1] }, workloads: [pp(8)] }
/// ```
///
/// ## `workloads`
/// `pp(n)`, `tg(n)`, `pp_tg(p, t)`, each optionally `.at_depth(d)`. Optional: llama-bench's
/// `pp(512)` and `tg(128)` by default; `-p`, `-n`, `-pg` and `-d` on the command line
/// replace them. A bench target may declare only its models and backends:
/// ```no_run
/// # use melt_bench::{melt_bench, Backend};
/// # fn b() -> melt_testkit::NoBackend { melt_testkit::NoBackend }
/// melt_bench! { models: ["gemma-3-270m-q4_k_m"], backends: [b()] }
/// ```
#[macro_export]
macro_rules! melt_bench {
    (
        @reports ($reports:expr)
        models: [$($model:expr),* $(,)?],
        backends: [$($backend:expr),* $(,)?] $(,)?
        $(sweep: { $($axis:ident: [$($value:expr),* $(,)?]),* $(,)? } $(,)?)?
        $(workloads: [$($workload:expr),* $(,)?] $(,)?)?
    ) => {
        fn main() {
            #[allow(unused_mut)]
            let mut sweep = $crate::__private::Sweep::default();
            $($( sweep.$axis = vec![$($value),*]; )*)?
            let workloads = {
                #[allow(unused_imports)]
                use $crate::__private::workload::{pp, pp_tg, tg};
                let declared: ::std::vec::Vec<$crate::__private::workload::Workload> =
                    vec![$($($workload),*)?];
                // None declared: llama-bench's defaults (its -p 512 -n 128).
                if declared.is_empty() { vec![pp(512), tg(128)] } else { declared }
            };
            let suite = $crate::__private::Suite {
                models: vec![$(::std::string::String::from($model)),*],
                backends: {
                    let mut all = ::std::vec::Vec::new();
                    $( all.extend($crate::__private::IntoBackends::into_backends($backend)); )*
                    all
                },
                sweep,
                workloads,
                manifest_dir: ::core::option::Option::Some(::std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
                reports: $reports,
            };
            ::std::process::exit($crate::__private::main(suite));
        }
    };
    // Without `@reports` (a bench target on melt-bench alone): the run store's files only.
    ($($body:tt)*) => {
        $crate::melt_bench! { @reports ($crate::__private::Reports::default()) $($body)* }
    };
}
