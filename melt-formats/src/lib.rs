//! melt-formats: the model file formats melt reads and writes, with no melt types — so the
//! engines' exporters and the harness share them without depending on each other.
//!
//! - [`gguf`]: a GGUF v2/v3 reader (metadata, tensor directory, tensor bytes).
//! - [`onnx_proto`]: a minimal ONNX protobuf writer, and a scanner that summarizes a model
//!   without reading its weights.
//! - [`onnx_rewrite`]: changes an integer attribute of a model's nodes in its bytes.

pub mod gguf;
pub mod onnx_proto;
pub mod onnx_rewrite;
