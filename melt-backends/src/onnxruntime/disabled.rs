//! Stand-in for the ONNX Runtime backend when the `onnxruntime` feature is off.

use melt_core::{Backend, BackendError, LoadedModel, ModelFormat, ModelParams, ModelSpec};

/// ONNX Runtime, not compiled into this build.
#[derive(Debug, Default, Clone, Copy)]
pub struct OnnxRuntime;

impl OnnxRuntime {
    pub fn new() -> OnnxRuntime {
        OnnxRuntime
    }
}

impl Backend for OnnxRuntime {
    fn name(&self) -> &str {
        "onnxruntime"
    }
    fn version(&self) -> String {
        "not built".into()
    }
    fn accepts(&self, format: ModelFormat) -> bool {
        format == ModelFormat::Onnx
    }
    fn load(
        &self,
        model: &ModelSpec,
        _: &ModelParams,
    ) -> Result<Box<dyn LoadedModel>, BackendError> {
        Err(BackendError::Unsupported {
            backend: "onnxruntime".into(),
            what: format!(
                "{}: the ONNX Runtime backend is not enabled in this build (enable the `onnxruntime` feature of melt-backends, then `cargo melt setup onnxruntime`)",
                model.path.display()
            ),
        })
    }
}
