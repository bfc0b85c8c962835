//! melt-core: what an inference engine implements to be measured by melt, and nothing more —
//! the only melt crate an engine depends on (as ripgrep's `grep-pcre2` depends on
//! `grep-matcher` alone), so an engine never compiles the harness, its reports or SQLite.
//!
//! - [`backend`]: the [`Backend`] → [`LoadedModel`] → [`Session`] traits, [`ModelInfo`] and
//!   [`BackendError`]; the harness owns the clock around `prefill` and each `decode`.
//! - [`params`]: model and session parameters, and the sweep over them.
//! - [`model`]: a model file ([`ModelSpec`]) and its format, recognised from its bytes.

pub mod backend;
pub mod model;
pub mod params;

pub use backend::{Backend, BackendError, KvShape, LoadedModel, ModelInfo, Session, Token};
pub use model::{ModelFileError, ModelFormat, ModelSpec};
pub use params::{all_cores, FlashAttn, ModelParams, Params, SessionParams, Sweep};

/// Where melt keeps what it fetches and makes (models, runtime libraries, measured device
/// facts): `MELT_CACHE_DIR`, else `$XDG_CACHE_HOME/melt`, else `~/.cache/melt`.
pub fn cache_root() -> std::path::PathBuf {
    use std::path::PathBuf;
    if let Some(p) = std::env::var_os("MELT_CACHE_DIR") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("melt");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| ".".into());
    home.join(".cache").join("melt")
}
