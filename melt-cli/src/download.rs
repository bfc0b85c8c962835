//! Models from a URL or from Hugging Face: one resumable download with a progress bar.
//!
//! A download goes to `<file>.part` beside where the cache wants it; an interrupted one is
//! resumed with a `Range` request (a server that ignores it sends the whole file again).
//! Nothing is trusted until the cache has hashed it against the registry's sha256. https is
//! required, except from this machine itself (a mirror or a test server on loopback).

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use melt_bench::model::HfSource;

/// Where Hugging Face files come from: `$HF_ENDPOINT` (a mirror) or huggingface.co, with
/// `$HF_TOKEN` for gated and private repositories.
#[derive(Debug, Clone)]
pub struct Hub {
    pub endpoint: String,
    pub token: Option<String>,
}

impl Hub {
    pub fn from_env() -> Hub {
        Hub {
            endpoint: std::env::var("HF_ENDPOINT")
                .ok()
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "https://huggingface.co".into()),
            token: std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()),
        }
    }

    /// The file's resolve URL, as huggingface_hub builds it.
    pub fn url(&self, hf: &HfSource) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint.trim_end_matches('/'),
            hf.repo,
            hf.revision,
            hf.file
        )
    }
}

/// Whether `url` may be fetched: https anywhere, http only from this machine.
fn check_scheme(url: &str) -> Result<()> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("{url}: only https:// URLs are downloaded");
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    if ["localhost", "127.0.0.1", "[::1]"].contains(&host) {
        return Ok(());
    }
    bail!("{url}: plain http is refused (a model must come over https, or from this machine)")
}

/// Downloads `url` into `part`, resuming what is there; `what` names it in messages.
pub fn fetch(url: &str, token: Option<&str>, part: &Path, what: &str) -> Result<()> {
    check_scheme(url)?;
    let have = fs::metadata(part).map_or(0, |m| m.len());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    if have > 0 {
        req = req.header("Range", &format!("bytes={have}-"));
    }
    let resp = req
        .call()
        .with_context(|| format!("downloading {what} from {url}"))?;
    let status = resp.status().as_u16();
    let length = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (offset, append) = match status {
        206 => (have, true),
        200 => (0, false),
        // The part already holds everything the server has.
        416 if have > 0 => return Ok(()),
        401 | 403 => bail!(
            "{what}: {url} answered {status}: a gated or private model needs a token — set \
             HF_TOKEN (and accept the model's licence on its page)"
        ),
        404 => bail!("{what}: {url} was not found (404): check the repository, file and revision"),
        _ => bail!("{what}: {url} answered HTTP {status}"),
    };
    let mut out = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .with_context(|| format!("writing {}", part.display()))?;
    let bar = match length {
        Some(n) => ProgressBar::new(offset + n),
        None => ProgressBar::no_length(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("melt: {what}"));
    bar.set_position(offset);
    if offset > 0 {
        eprintln!("melt: {what}: resuming at byte {offset}");
    }
    let mut body = resp.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                bar.abandon();
                bail!(
                    "{what}: the download was interrupted after {} bytes ({e}); run the same \
                     command again to resume",
                    offset + got
                );
            }
        };
        out.write_all(&buf[..n])?;
        got += n as u64;
        bar.inc(n as u64);
    }
    out.flush()?;
    bar.finish_and_clear();
    if let Some(n) = length.filter(|&n| got < n) {
        bail!(
            "{what}: the download stopped after {} of {} bytes; run the same command again to \
             resume",
            offset + got,
            offset + n
        );
    }
    eprintln!("melt: {what}: {} bytes from {url}", offset + got);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_only_from_this_machine() {
        for ok in [
            "https://huggingface.co/a/b/resolve/main/m.gguf",
            "http://127.0.0.1:8080/m.gguf",
            "http://localhost/m.gguf",
            "http://[::1]:9/m",
        ] {
            assert!(check_scheme(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/m.gguf",
            "http://127.0.0.1.evil.com/m",
            "ftp://x/m",
        ] {
            assert!(check_scheme(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolve_urls_as_the_hub_builds_them() {
        let hub = Hub {
            endpoint: "http://127.0.0.1:1/".into(),
            token: None,
        };
        let hf = HfSource {
            repo: "org/name".into(),
            file: "dir/m.gguf".into(),
            revision: "v1".into(),
        };
        assert_eq!(
            hub.url(&hf),
            "http://127.0.0.1:1/org/name/resolve/v1/dir/m.gguf"
        );
    }
}
