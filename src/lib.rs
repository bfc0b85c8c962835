pub use melt_bench::*;
