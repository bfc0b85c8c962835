//! Stand-in for the libtorch backend when the `libtorch` feature is off.

use melt_core::{Backend, BackendError, LoadedModel, ModelFormat, ModelParams, ModelSpec};

/// libtorch, not compiled into this build.
#[derive(Debug, Default, Clone, Copy)]
pub struct LibTorch;

impl LibTorch {
    pub fn new() -> LibTorch {
        LibTorch
    }
}

impl Backend for LibTorch {
    fn name(&self) -> &str {
        "libtorch"
    }
    fn version(&self) -> String {
        "not built".into()
    }
    fn accepts(&self, format: ModelFormat) -> bool {
        format == ModelFormat::TorchScript
    }
    fn load(
        &self,
        model: &ModelSpec,
        _: &ModelParams,
    ) -> Result<Box<dyn LoadedModel>, BackendError> {
        Err(BackendError::Unsupported {
            backend: "libtorch".into(),
            what: format!(
                "{}: the libtorch backend is not enabled in this build (`cargo melt setup libtorch`, then build with the `libtorch` feature)",
                model.path.display()
            ),
        })
    }
}
