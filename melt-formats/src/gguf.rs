//! A reader of GGUF files' metadata and tensor directory (ggml's `docs/gguf.md`, versions 2
//! and 3): what the exporter and model reports need without loading an engine. Tensor data is
//! located (absolute offset in the file), not decoded: decoding quantized blocks is ggml's job.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
}

impl Value {
    /// Any integer type that fits, as u64.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(xs) => Some(xs),
            _ => None,
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` varies fastest (a row of a matrix).
    pub dims: Vec<u64>,
    /// `ggml_type` value (0 F32, 1 F16, 8 Q8_0, 12 Q4_K, ...).
    pub ggml_type: u32,
    /// Absolute byte offset of the tensor's data in the file.
    pub offset: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a GGUF file ({reason})")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: metadata key `{key}` is {reason}")]
    Key {
        path: PathBuf,
        key: String,
        reason: &'static str,
    },
}

/// A GGUF file's header, metadata and tensor directory.
#[derive(Debug, Clone)]
pub struct Gguf {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
}

/// Longest string or array the reader accepts: far beyond any real vocabulary, small enough
/// that a corrupt length cannot make it allocate the machine away.
const MAX_LEN: u64 = 1 << 28;

struct Reader<R> {
    r: R,
    pos: u64,
}

impl<R: Read> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b)?;
        self.pos += N as u64;
        Ok(b)
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn len(&mut self) -> io::Result<u64> {
        let n = self.u64()?;
        if n > MAX_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("length {n} at byte {} is implausible", self.pos - 8),
            ));
        }
        Ok(n)
    }
    fn string(&mut self) -> io::Result<String> {
        let n = self.len()? as usize;
        let mut b = vec![0u8; n];
        self.r.read_exact(&mut b)?;
        self.pos += n as u64;
        String::from_utf8(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
    fn value(&mut self, ty: u32) -> io::Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.bytes::<1>()?[0]),
            1 => Value::I8(self.bytes::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.bytes()?)),
            3 => Value::I16(i16::from_le_bytes(self.bytes()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.bytes()?)),
            6 => Value::F32(f32::from_le_bytes(self.bytes()?)),
            7 => Value::Bool(self.bytes::<1>()?[0] != 0),
            8 => Value::Str(self.string()?),
            9 => {
                let inner = self.u32()?;
                let n = self.len()?;
                let mut xs = Vec::with_capacity(n.min(1 << 20) as usize);
                for _ in 0..n {
                    xs.push(self.value(inner)?);
                }
                Value::Array(xs)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.bytes()?)),
            12 => Value::F64(f64::from_le_bytes(self.bytes()?)),
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown value type {other} at byte {}", self.pos - 4),
                ))
            }
        })
    }
}

impl Gguf {
    /// Reads the header, metadata and tensor directory of `path`.
    pub fn open(path: &Path) -> Result<Gguf, GgufError> {
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let format = |reason: String| GgufError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(io_err)?;
        let file_len = file.metadata().map_err(io_err)?.len();
        let mut r = Reader {
            r: BufReader::new(file),
            pos: 0,
        };
        let bad = |e: io::Error| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                format("truncated header".into())
            } else {
                format(e.to_string())
            }
        };
        let magic = r.bytes::<4>().map_err(bad)?;
        if &magic != b"GGUF" {
            return Err(format(format!("starts with {magic:?}, not \"GGUF\"")));
        }
        let version = r.u32().map_err(bad)?;
        if !(2..=3).contains(&version) {
            return Err(format(format!("version {version} (2 and 3 are known)")));
        }
        let n_tensors = r.u64().map_err(bad)?;
        let n_kv = r.u64().map_err(bad)?;
        if n_tensors > MAX_LEN || n_kv > MAX_LEN {
            return Err(format(format!(
                "{n_tensors} tensors and {n_kv} keys is implausible"
            )));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string().map_err(bad)?;
            let ty = r.u32().map_err(bad)?;
            let value = r.value(ty).map_err(bad)?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = r.string().map_err(bad)?;
            let n_dims = r.u32().map_err(bad)?;
            if n_dims > 4 {
                return Err(format(format!("tensor {name} has {n_dims} dimensions")));
            }
            let dims = (0..n_dims)
                .map(|_| r.u64())
                .collect::<io::Result<Vec<_>>>()
                .map_err(bad)?;
            let ggml_type = r.u32().map_err(bad)?;
            let offset = r.u64().map_err(bad)?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(Value::as_u64)
            .unwrap_or(32)
            .max(1);
        let data_start = r.pos.div_ceil(alignment) * alignment;
        for t in &mut tensors {
            t.offset += data_start;
            if t.offset > file_len {
                return Err(format(format!(
                    "tensor {} starts at byte {} of a {file_len}-byte file (truncated?)",
                    t.name, t.offset
                )));
            }
        }
        Ok(Gguf {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }

    fn key_error(&self, key: &str, reason: &'static str) -> GgufError {
        GgufError::Key {
            path: self.path.clone(),
            key: key.to_string(),
            reason,
        }
    }

    /// A required unsigned integer.
    pub fn u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self
            .get(key)
            .ok_or_else(|| self.key_error(key, "missing"))?;
        v.as_u64()
            .ok_or_else(|| self.key_error(key, "not an unsigned integer"))
    }

    /// A required number.
    pub fn f64(&self, key: &str) -> Result<f64, GgufError> {
        let v = self
            .get(key)
            .ok_or_else(|| self.key_error(key, "missing"))?;
        v.as_f64()
            .ok_or_else(|| self.key_error(key, "not a number"))
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// `len` bytes of a tensor's data.
    pub fn read_tensor_bytes(&self, t: &TensorInfo, len: usize) -> Result<Vec<u8>, GgufError> {
        let io_err = |source| GgufError::Io {
            path: self.path.clone(),
            source,
        };
        let mut f = File::open(&self.path).map_err(io_err)?;
        f.seek(SeekFrom::Start(t.offset)).map_err(io_err)?;
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                GgufError::Format {
                    path: self.path.clone(),
                    reason: format!("tensor {} is cut short (truncated file)", t.name),
                }
            } else {
                io_err(e)
            }
        })?;
        Ok(buf)
    }
}
