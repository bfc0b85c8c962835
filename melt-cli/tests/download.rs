//! Models from a URL and from Hugging Face, served by a real HTTP server this test starts on
//! loopback (`HF_ENDPOINT` points the hub there, as it points users at a mirror): a plain
//! download, an interrupted one resumed with a Range request, a gated file without and with
//! `HF_TOKEN`, a file whose bytes are not what the registry's sha256 says, and a URL that
//! would leave this machine over plain http.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use melt_bench::model::{Cache, Registry};

/// What the server was asked: each request's path and its Range header, if any.
type Log = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Serves `body` at every path; `/gated/…` only with `Authorization: Bearer secret`; the
/// first request for `/flaky/…` gets the full length announced but only half the bytes.
fn serve(body: Vec<u8>) -> (u16, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: Log = Arc::default();
    let seen = log.clone();
    std::thread::spawn(move || {
        let mut flaky_once = true;
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (path, range, auth) = read_request(&stream);
            seen.lock().unwrap().push((path.clone(), range.clone()));
            let mut out = stream;
            if path.starts_with("/gated/") && auth.as_deref() != Some("Bearer secret") {
                let _ = out.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let start = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|r| r.parse::<usize>().ok())
                .unwrap_or(0);
            let rest = &body[start.min(body.len())..];
            let head = if start > 0 {
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
                    rest.len(),
                    body.len() - 1,
                    body.len()
                )
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    rest.len()
                )
            };
            let _ = out.write_all(head.as_bytes());
            let cut = path.starts_with("/flaky/") && std::mem::take(&mut flaky_once);
            let send = if cut { &rest[..rest.len() / 2] } else { rest };
            let _ = out.write_all(send);
            let _ = out.flush();
        }
    });
    (port, log)
}

fn read_request(stream: &TcpStream) -> (String, Option<String>, Option<String>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let (mut range, mut auth) = (None, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_string()),
                "authorization" => auth = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    (path, range, auth)
}

fn sha256(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    std::fs::write(&p, bytes).unwrap();
    melt_bench::model::sha256_file(&p).unwrap()
}

fn registry(dir: &Path, body: &str) -> Registry {
    let path = dir.join("melt.toml");
    std::fs::write(&path, body).unwrap();
    Registry::load(&path).unwrap()
}

fn entry(name: &str, sha: &str, source: &str) -> String {
    format!("[models.{name}]\nfile = \"m.gguf\"\nformat = \"gguf\"\nsha256 = \"{sha}\"\nsource = {source}\n")
}

/// Held by every test here: one of them sets the hub's variables, and `setenv` while another
/// thread reads the environment is a data race in glibc (and would change that test's input).
static ENVIRONMENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn models_download_resume_and_are_verified() {
    let _env = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
    // Bytes of a model (any bytes: only the hash is checked here).
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sha = sha256(&body);
    let (port, log) = serve(body.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path().join("cache"));
    let base = format!("http://127.0.0.1:{port}");
    // The hub's settings come from the environment, as for users; this test alone sets them.
    std::env::set_var("HF_ENDPOINT", &base);
    std::env::remove_var("HF_TOKEN");
    let wrong = "0".repeat(64);
    let reg = registry(
        dir.path(),
        &[
            entry(
                "plain",
                &sha,
                &format!("{{ url = \"{base}/files/m.gguf\" }}"),
            ),
            entry(
                "flaky",
                &sha,
                &format!("{{ url = \"{base}/flaky/m.gguf\" }}"),
            ),
            entry(
                "hub",
                &sha,
                "{ hf = { repo = \"org/tiny\", file = \"m.gguf\", revision = \"v2\" } }",
            ),
            entry(
                "gated",
                &sha,
                "{ hf = { repo = \"gated/tiny\", file = \"m.gguf\" } }",
            ),
            entry(
                "wrong",
                &wrong,
                &format!("{{ url = \"{base}/files/w.gguf\" }}"),
            ),
            entry("outside", &sha, "{ url = \"http://example.com/m.gguf\" }"),
        ]
        .concat(),
    );

    // A plain download lands in the cache under its hash.
    let path = melt_cli::models::fetch(&reg, &cache, "plain").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert!(path.starts_with(cache.root.join("models").join(&sha)));

    // Cut halfway: the error says to run again, and the second run asks only for the rest.
    let cache2 = Cache::new(dir.path().join("cache2"));
    let e = format!(
        "{:#}",
        melt_cli::models::fetch(&reg, &cache2, "flaky").unwrap_err()
    );
    assert!(e.contains("run the same command again to resume"), "{e}");
    let path = melt_cli::models::fetch(&reg, &cache2, "flaky").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    let asked: Vec<_> = log.lock().unwrap().clone();
    let resumed = asked
        .iter()
        .filter(|(p, _)| p == "/flaky/m.gguf")
        .map(|(_, r)| r.clone())
        .collect::<Vec<_>>();
    assert_eq!(
        resumed,
        [None, Some(format!("bytes={}-", body.len() / 2))],
        "{asked:?}"
    );

    // Hugging Face: the resolve URL at HF_ENDPOINT, with its revision.
    melt_cli::models::fetch(&reg, &Cache::new(dir.path().join("c3")), "hub").unwrap();
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|(p, _)| p == "/org/tiny/resolve/v2/m.gguf"),
        "{:?}",
        log.lock().unwrap()
    );

    // A gated model: refused without HF_TOKEN (the error says what to set), fetched with it.
    let c4 = Cache::new(dir.path().join("c4"));
    let e = format!(
        "{:#}",
        melt_cli::models::fetch(&reg, &c4, "gated").unwrap_err()
    );
    assert!(e.contains("401") && e.contains("HF_TOKEN"), "{e}");
    std::env::set_var("HF_TOKEN", "secret");
    melt_cli::models::fetch(&reg, &c4, "gated").unwrap();
    std::env::remove_var("HF_TOKEN");

    // Bytes that are not what the registry says: refused, nothing cached, nothing kept.
    let c5 = Cache::new(dir.path().join("c5"));
    let e = format!(
        "{:#}",
        melt_cli::models::fetch(&reg, &c5, "wrong").unwrap_err()
    );
    assert!(e.contains("sha256 mismatch"), "{e}");
    assert!(!c5.root.join("models").join(&wrong).join("m.gguf").exists());
    assert!(!c5.root.join("downloads").join(&wrong).exists());

    // Plain http to another machine is refused before anything is sent.
    let before = log.lock().unwrap().len();
    let e = format!(
        "{:#}",
        melt_cli::models::fetch(&reg, &Cache::new(dir.path().join("c6")), "outside").unwrap_err()
    );
    assert!(e.contains("plain http is refused"), "{e}");
    assert_eq!(log.lock().unwrap().len(), before);
    std::env::remove_var("HF_ENDPOINT");
}

#[test]
fn a_hub_file_that_is_not_there_is_named() {
    let _env = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
    // Its own server: nothing but 404s.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let mut s = s;
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let sha = "1".repeat(64);
    let reg = registry(
        dir.path(),
        &entry(
            "missing",
            &sha,
            &format!("{{ url = \"http://127.0.0.1:{port}/org/x/resolve/main/m.gguf\" }}"),
        ),
    );
    let e = format!(
        "{:#}",
        melt_cli::models::fetch(&reg, &Cache::new(dir.path().join("c")), "missing").unwrap_err()
    );
    assert!(
        e.contains("404") && e.contains("/org/x/resolve/main/m.gguf"),
        "{e}"
    );
}
