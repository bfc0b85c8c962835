//! Stand-in for the llama.cpp backend when the `llama-cpp` feature is off.

use melt_core::{Backend, BackendError, LoadedModel, ModelFormat, ModelParams, ModelSpec};

/// llama.cpp, not compiled into this build.
#[derive(Debug, Default, Clone, Copy)]
pub struct LlamaCpp;

impl LlamaCpp {
    pub fn new() -> LlamaCpp {
        LlamaCpp
    }
}

impl Backend for LlamaCpp {
    fn name(&self) -> &str {
        "llama.cpp"
    }
    fn version(&self) -> String {
        "not built".into()
    }
    fn accepts(&self, format: ModelFormat) -> bool {
        format == ModelFormat::Gguf
    }
    fn load(
        &self,
        model: &ModelSpec,
        _: &ModelParams,
    ) -> Result<Box<dyn LoadedModel>, BackendError> {
        Err(BackendError::Unsupported {
            backend: "llama.cpp".into(),
            what: format!(
                "{}: the llama.cpp backend is not enabled in this build (enable the `llama-cpp` feature of melt-backends)",
                model.path.display()
            ),
        })
    }
}

/// llama.cpp's quantizer, not compiled into this build.
pub fn quantize(
    input: &std::path::Path,
    _: &std::path::Path,
    _: &str,
    _: usize,
) -> Result<(), BackendError> {
    Err(BackendError::Unsupported {
        backend: "llama.cpp".into(),
        what: format!(
            "quantizing {}: the llama.cpp backend is not enabled in this build",
            input.display()
        ),
    })
}
