//! A model file as an engine receives it: its format, recognised from its first bytes, and its
//! sha256 (what results are keyed by).

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why a model file cannot be described: missing, unreadable, or of no format melt knows.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("model file {0} does not exist")]
    Missing(PathBuf),
    #[error("cannot read model file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a model melt knows: {reason}")]
    UnknownFormat { path: PathBuf, reason: String },
}

/// A failed file operation on `path`: [`ModelFileError::Missing`] when it is not there.
pub fn io_error(path: &Path, source: io::Error) -> ModelFileError {
    if source.kind() == io::ErrorKind::NotFound {
        ModelFileError::Missing(path.to_path_buf())
    } else {
        ModelFileError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// On-disk format of a model, recognised from the file's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    Gguf,
    Onnx,
    TorchScript,
}

impl std::fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelFormat::Gguf => "gguf",
            ModelFormat::Onnx => "onnx",
            ModelFormat::TorchScript => "torchscript",
        })
    }
}

/// A model file ready to hand to a backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Registry name, or the file stem for a model given by path.
    pub name: String,
    pub path: PathBuf,
    pub format: ModelFormat,
    pub sha256: String,
    pub size_bytes: u64,
}

impl ModelSpec {
    /// Describes a local file: checks it exists, recognises its format and hashes it.
    pub fn from_path(path: &Path) -> Result<ModelSpec, ModelFileError> {
        let format = detect_format(path)?;
        let size_bytes = fs::metadata(path)
            .map_err(|source| io_error(path, source))?
            .len();
        let sha256 = sha256_file(path)?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Ok(ModelSpec {
            name,
            path: path.to_path_buf(),
            format,
            sha256,
            size_bytes,
        })
    }
}

/// Recognises GGUF by its magic, TorchScript by its zip header and ONNX by extension (a
/// protobuf has no magic). A text file named `.gguf` is rejected here, before any engine.
pub fn detect_format(path: &Path) -> Result<ModelFormat, ModelFileError> {
    let mut file = fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut magic = [0u8; 4];
    let mut read = 0;
    while read < 4 {
        match file.read(&mut magic[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(io_error(path, e)),
        }
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let unknown = |reason: String| ModelFileError::UnknownFormat {
        path: path.to_path_buf(),
        reason,
    };
    if read == 4 && &magic == b"GGUF" {
        return Ok(ModelFormat::Gguf);
    }
    if read == 4 && &magic[..2] == b"PK" && matches!(ext.as_str(), "pt" | "pts" | "ptl" | "zip") {
        return Ok(ModelFormat::TorchScript);
    }
    if ext == "onnx" && read > 0 {
        return Ok(ModelFormat::Onnx);
    }
    if ext == "gguf" {
        return Err(unknown(format!(
            "named .gguf but starts with {:?} instead of the GGUF magic \"GGUF\"",
            String::from_utf8_lossy(&magic[..read])
        )));
    }
    Err(unknown(format!(
        "first bytes {:02x?} are neither GGUF nor a TorchScript archive, and the extension `{ext}` is not .onnx",
        &magic[..read]
    )))
}

/// Hex sha256 of a file, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> Result<String, ModelFileError> {
    let mut file = fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| io_error(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
