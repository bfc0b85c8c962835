//! The file of a reference model's token log-probabilities that KL-divergence is measured
//! against, in llama-perplexity's `--kl-divergence-base` layout, so either tool reads the
//! other's:
//!
//! ```text
//! "_logits_"  u32 n_ctx  i32 n_vocab  i32 n_chunk  i32 tokens[n_chunk × n_ctx]
//! then for each chunk, for each scored position (n_ctx − 1 − n_ctx/2 of them):
//!   f32 scale  f32 min_log_prob  u16 q[n_vocab rounded up to even]
//! ```
//!
//! A row keeps the log-probabilities within 16 nats of the top one as 16-bit steps above the
//! row's floor: `log p[i] = scale · q[i] + min_log_prob` (a 262k vocabulary is 0.5 MB a row
//! instead of 1 MB of f32). Numbers are little-endian, as every machine llama.cpp runs on
//! writes them.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::backend::Token;

const MAGIC: &[u8; 8] = b"_logits_";

/// How far below the top log-probability a row still resolves (llama-perplexity's 16 nats).
pub const RANGE_NATS: f32 = 16.0;

/// Why a log-probability file could not be written or read; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum LogProbsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a file of log-probabilities (llama-perplexity's `--kl-divergence-base` or melt's); it does not start with `_logits_`", path.display())]
    NotLogProbs { path: PathBuf },
    #[error("{}: {what}", path.display())]
    Corrupt { path: PathBuf, what: String },
}

/// u16 values in a row: the two f32 of its header, then the vocabulary rounded up to even.
pub fn row_len(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// Scored positions of a chunk of `n_ctx` tokens (its second half, less the last position,
/// which predicts nothing).
pub fn scored_per_chunk(n_ctx: usize) -> usize {
    n_ctx - 1 - n_ctx / 2
}

/// What the file says before its rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub n_chunk: usize,
    /// The evaluated text's tokens, `n_chunk × n_ctx` (before each chunk's first is made BOS).
    pub tokens: Vec<Token>,
}

/// llama.cpp's round-to-nearest (ties to even), which the encoding must share for a file
/// to be byte-identical.
fn nearest_int(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// Encodes one position's logits into `out` (`row_len(logits.len())` values).
pub fn encode_row(logits: &[f32], out: &mut [u16]) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let min = logits.iter().fold(f32::INFINITY, |m, &x| m.min(x));
    let min = min.max(max - RANGE_NATS);
    let sum_exp: f64 = logits.iter().map(|&x| (x - max).exp() as f64).sum();
    let log_sum_exp = sum_exp.ln() as f32;
    let min_log_prob = min - max - log_sum_exp;
    let scale = (max - min) / 65535.0;
    let (head, q) = out.split_at_mut(4);
    for (i, f) in [scale, min_log_prob].into_iter().enumerate() {
        let b = f.to_le_bytes();
        head[2 * i] = u16::from_le_bytes([b[0], b[1]]);
        head[2 * i + 1] = u16::from_le_bytes([b[2], b[3]]);
    }
    q.fill(0);
    if scale > 0.0 {
        let inv = 1.0 / scale;
        for (q, &x) in q.iter_mut().zip(logits) {
            if x > min {
                *q = nearest_int(inv * (x - min)) as u16;
            }
        }
    }
}

/// One stored position: its log-probabilities, decoded on demand.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub scale: f32,
    pub min_log_prob: f32,
    q: &'a [u16],
}

impl<'a> Row<'a> {
    pub fn new(raw: &'a [u16], n_vocab: usize) -> Row<'a> {
        let f = |i: usize| {
            let (a, b) = (raw[i].to_le_bytes(), raw[i + 1].to_le_bytes());
            f32::from_le_bytes([a[0], a[1], b[0], b[1]])
        };
        Row {
            scale: f(0),
            min_log_prob: f(2),
            q: &raw[4..4 + n_vocab],
        }
    }

    /// The stored log-probability of token `i`.
    pub fn log_prob(&self, i: usize) -> f32 {
        self.scale * self.q[i] as f32 + self.min_log_prob
    }
}

fn u16s_as_bytes(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes a file as a perplexity run goes, one scored position at a time.
pub struct Writer {
    out: BufWriter<File>,
    path: PathBuf,
    row: Vec<u16>,
}

impl Writer {
    /// Creates `path` and writes the header; `tokens` are the chunks' tokens, in order.
    pub fn create(
        path: &Path,
        n_ctx: usize,
        n_vocab: usize,
        tokens: &[Token],
    ) -> Result<Writer, LogProbsError> {
        let io = |source| LogProbsError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut out = BufWriter::new(File::create(path).map_err(io)?);
        let n_chunk = tokens.len() / n_ctx;
        let mut head = Vec::with_capacity(20 + 4 * tokens.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&(n_ctx as u32).to_le_bytes());
        head.extend_from_slice(&(n_vocab as i32).to_le_bytes());
        head.extend_from_slice(&(n_chunk as i32).to_le_bytes());
        for t in tokens {
            head.extend_from_slice(&t.to_le_bytes());
        }
        out.write_all(&head).map_err(io)?;
        Ok(Writer {
            out,
            path: path.to_path_buf(),
            row: vec![0; row_len(n_vocab)],
        })
    }

    /// Appends one scored position.
    pub fn row(&mut self, logits: &[f32]) -> Result<(), LogProbsError> {
        encode_row(logits, &mut self.row);
        self.out
            .write_all(&u16s_as_bytes(&self.row))
            .map_err(|source| LogProbsError::Io {
                path: self.path.clone(),
                source,
            })
    }

    pub fn finish(mut self) -> Result<(), LogProbsError> {
        self.out.flush().map_err(|source| LogProbsError::Io {
            path: self.path,
            source,
        })
    }
}

/// Reads a file chunk by chunk (a chunk of a 262k vocabulary at n_ctx 512 is 134 MB).
pub struct Reader {
    input: BufReader<File>,
    path: PathBuf,
    pub header: Header,
    bytes: Vec<u8>,
}

impl Reader {
    /// Opens `path` and reads its header, checking that its sizes are sane and that the file
    /// holds every row they promise.
    pub fn open(path: &Path) -> Result<Reader, LogProbsError> {
        let io = |source| LogProbsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let corrupt = |what: String| LogProbsError::Corrupt {
            path: path.to_path_buf(),
            what,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut input = BufReader::new(file);
        let mut head = [0u8; 20];
        if input.read_exact(&mut head).is_err() || &head[..8] != MAGIC {
            return Err(LogProbsError::NotLogProbs {
                path: path.to_path_buf(),
            });
        }
        let word = |i: usize| [head[i], head[i + 1], head[i + 2], head[i + 3]];
        let n_ctx = u32::from_le_bytes(word(8)) as usize;
        let n_vocab = i32::from_le_bytes(word(12));
        let n_chunk = i32::from_le_bytes(word(16));
        if n_ctx < 4 || n_vocab < 1 || n_chunk < 1 {
            return Err(corrupt(format!(
                "impossible header: n_ctx {n_ctx}, n_vocab {n_vocab}, {n_chunk} chunks"
            )));
        }
        let (n_vocab, n_chunk) = (n_vocab as usize, n_chunk as usize);
        let rows = (n_chunk * scored_per_chunk(n_ctx)) as u64;
        let expected = 20 + 4 * (n_chunk * n_ctx) as u64 + rows * 2 * row_len(n_vocab) as u64;
        if len != expected {
            return Err(corrupt(format!(
                "{len} bytes, but {n_chunk} chunks of {n_ctx} tokens over a vocabulary of \
                 {n_vocab} take {expected}; the file is truncated or was written differently"
            )));
        }
        let mut raw = vec![0u8; 4 * n_chunk * n_ctx];
        input.read_exact(&mut raw).map_err(io)?;
        let tokens: Vec<Token> = raw
            .chunks_exact(4)
            .map(|b| Token::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some((i, t)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t < 0 || t as usize >= n_vocab)
        {
            return Err(corrupt(format!(
                "token {i} is {t}, outside the vocabulary of {n_vocab}"
            )));
        }
        Ok(Reader {
            input,
            path: path.to_path_buf(),
            header: Header {
                n_ctx,
                n_vocab,
                n_chunk,
                tokens,
            },
            bytes: Vec::new(),
        })
    }

    /// The next chunk's rows, into `rows` (`scored_per_chunk(n_ctx) × row_len(n_vocab)`).
    pub fn next_chunk(&mut self, rows: &mut Vec<u16>) -> Result<(), LogProbsError> {
        let n = scored_per_chunk(self.header.n_ctx) * row_len(self.header.n_vocab);
        self.bytes.resize(2 * n, 0);
        self.input
            .read_exact(&mut self.bytes)
            .map_err(|source| LogProbsError::Io {
                path: self.path.clone(),
                source,
            })?;
        rows.clear();
        rows.extend(
            self.bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]])),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_softmax(logits: &[f32]) -> Vec<f64> {
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
        let lse = logits
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
        logits.iter().map(|&x| x as f64 - max - lse).collect()
    }

    #[test]
    fn a_row_keeps_log_probabilities_within_its_step_and_floors_the_rest() {
        let logits: Vec<f32> = (0..1001)
            .map(|i| ((i * 37) % 101) as f32 * 0.3 - 9.0)
            .collect();
        let mut raw = vec![0; row_len(logits.len())];
        encode_row(&logits, &mut raw);
        let row = Row::new(&raw, logits.len());
        let exact = log_softmax(&logits);
        let top = exact.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        for (i, &e) in exact.iter().enumerate() {
            let got = row.log_prob(i) as f64;
            if e > top - RANGE_NATS as f64 {
                assert!((got - e).abs() < 1e-3, "token {i}: {got} vs {e}");
            } else {
                assert!(
                    got >= e && got <= top - RANGE_NATS as f64 + 1e-3,
                    "{got} {e}"
                );
            }
        }
    }

    #[test]
    fn a_file_reads_back_and_a_cut_or_foreign_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.kld");
        let (n_ctx, n_vocab) = (8, 5);
        let tokens: Vec<Token> = (0..16).map(|i| i % 5).collect();
        let mut w = Writer::create(&path, n_ctx, n_vocab, &tokens).unwrap();
        let rows: Vec<Vec<f32>> = (0..2 * scored_per_chunk(n_ctx))
            .map(|r| (0..n_vocab).map(|v| (r * v) as f32 * 0.1).collect())
            .collect();
        for r in &rows {
            w.row(r).unwrap();
        }
        w.finish().unwrap();
        let mut reader = Reader::open(&path).unwrap();
        assert_eq!(
            reader.header,
            Header {
                n_ctx,
                n_vocab,
                n_chunk: 2,
                tokens: tokens.clone()
            }
        );
        let mut buf = Vec::new();
        for chunk in 0..2 {
            reader.next_chunk(&mut buf).unwrap();
            for (k, raw) in buf.chunks_exact(row_len(n_vocab)).enumerate() {
                let row = Row::new(raw, n_vocab);
                let want = log_softmax(&rows[chunk * scored_per_chunk(n_ctx) + k]);
                for (i, w) in want.iter().enumerate() {
                    assert!((row.log_prob(i) as f64 - w).abs() < 1e-3);
                }
            }
        }

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        let e = Reader::open(&path).err().unwrap().to_string();
        assert!(e.contains("truncated") && e.contains("base.kld"), "{e}");
        std::fs::write(&path, b"GGUF and then some").unwrap();
        let e = Reader::open(&path).err().unwrap().to_string();
        assert!(e.contains("not a file of log-probabilities"), "{e}");
        let mut bad = bytes.clone();
        bad[20..24].copy_from_slice(&9i32.to_le_bytes());
        std::fs::write(&path, &bad).unwrap();
        let e = Reader::open(&path).err().unwrap().to_string();
        assert!(e.contains("token 0 is 9"), "{e}");
    }
}
