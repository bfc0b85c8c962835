//! A synthetic backend with a set cost per token, for tests whose truth must be known: a
//! build whose decode costs 10% more per token *is* 10% slower, on any machine, through the
//! whole real pipeline (bench binary, worker, gate). It works the CPU for its cost (a busy
//! loop, not a sleep), so it competes for cores as an engine does and a busy machine slows it.
//!
//! It loads any GGUF file whose header reads (the weights are not used) and its logits are
//! a fixed ramp, so greedy decoding always picks the same token.

use std::time::{Duration, Instant};

use melt_bench::backend::{Backend, BackendError, LoadedModel, ModelInfo, Session, Token};
use melt_bench::model::{ModelFormat, ModelSpec};
use melt_bench::params::{ModelParams, SessionParams};

const N_VOCAB: usize = 64;

/// The backend: `decode` costs `per_token`, a prompt token `per_token / 8` (prefill batches).
#[derive(Debug, Clone)]
pub struct Synthetic {
    pub per_token: Duration,
}

impl Synthetic {
    pub fn new(per_token: Duration) -> Synthetic {
        Synthetic { per_token }
    }
}

/// Works the CPU for `d`.
fn spin(d: Duration) {
    let start = Instant::now();
    let mut x = 1u64;
    while start.elapsed() < d {
        for _ in 0..64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

impl Backend for Synthetic {
    fn name(&self) -> &str {
        "synthetic"
    }
    fn version(&self) -> String {
        format!("synthetic {} µs/token", self.per_token.as_micros())
    }
    fn accepts(&self, format: ModelFormat) -> bool {
        format == ModelFormat::Gguf
    }
    fn load(
        &self,
        model: &ModelSpec,
        _params: &ModelParams,
    ) -> Result<Box<dyn LoadedModel>, BackendError> {
        melt_formats::gguf::Gguf::open(&model.path).map_err(|e| BackendError::Model {
            path: model.path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Box::new(Loaded {
            per_token: self.per_token,
            logits: (0..N_VOCAB).map(|i| i as f32 / N_VOCAB as f32).collect(),
        }))
    }
}

struct Loaded {
    per_token: Duration,
    logits: Vec<f32>,
}

impl LoadedModel for Loaded {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            description: "synthetic".into(),
            architecture: "synthetic".into(),
            quantization: "none".into(),
            n_vocab: N_VOCAB,
            n_ctx_train: 1 << 16,
            ..ModelInfo::default()
        }
    }
    fn session<'m>(
        &'m self,
        params: &SessionParams,
    ) -> Result<Box<dyn Session + 'm>, BackendError> {
        Ok(Box::new(Ctx {
            model: self,
            n_ctx: params.n_ctx.unwrap_or(4096) as usize,
            n_past: 0,
        }))
    }
}

struct Ctx<'m> {
    model: &'m Loaded,
    n_ctx: usize,
    n_past: usize,
}

impl Ctx<'_> {
    fn advance(&mut self, n: usize) -> Result<(), BackendError> {
        if self.n_past + n > self.n_ctx {
            return Err(BackendError::Runtime {
                backend: "synthetic".into(),
                what: format!("context full ({} + {n} > {})", self.n_past, self.n_ctx),
            });
        }
        self.n_past += n;
        Ok(())
    }
}

impl Session for Ctx<'_> {
    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<Token>, BackendError> {
        let mut t: Vec<Token> = text
            .bytes()
            .map(|b| Token::from(b) % N_VOCAB as Token)
            .collect();
        if add_special {
            t.insert(0, 1);
        }
        Ok(t)
    }
    fn detokenize(&self, tokens: &[Token]) -> Result<String, BackendError> {
        Ok(tokens
            .iter()
            .map(|t| char::from(b'a' + (*t % 26) as u8))
            .collect())
    }
    fn prefill(&mut self, tokens: &[Token]) -> Result<(), BackendError> {
        self.advance(tokens.len())?;
        spin(self.model.per_token * tokens.len() as u32 / 8);
        Ok(())
    }
    fn decode(&mut self, _token: Token) -> Result<(), BackendError> {
        self.advance(1)?;
        spin(self.model.per_token);
        Ok(())
    }
    fn logits(&self) -> Result<&[f32], BackendError> {
        Ok(&self.model.logits)
    }
    fn clear(&mut self) -> Result<(), BackendError> {
        self.n_past = 0;
        Ok(())
    }
    fn n_ctx(&self) -> usize {
        self.n_ctx
    }
    fn n_past(&self) -> usize {
        self.n_past
    }
    fn bos(&self) -> Option<Token> {
        Some(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decode step costs at least what was set; a truncated GGUF is refused, named.
    #[test]
    fn costs_what_it_says() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        crate::TinyLlama::default().write(&path).unwrap();
        let b = Synthetic::new(Duration::from_micros(300));
        let cut = dir.path().join("cut.gguf");
        std::fs::write(&cut, &std::fs::read(&path).unwrap()[..40]).unwrap();
        let bad = ModelSpec::from_path(&cut).unwrap();
        let e = b
            .load(&bad, &ModelParams::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cut.gguf"), "{e}");
        let spec = ModelSpec::from_path(&path).unwrap();
        let m = b.load(&spec, &ModelParams::default()).unwrap();
        let mut s = m.session(&SessionParams::default()).unwrap();
        s.prefill(&[1, 2]).unwrap();
        let start = Instant::now();
        for _ in 0..20 {
            s.decode(3).unwrap();
        }
        assert!(start.elapsed() >= Duration::from_micros(20 * 300));
    }
}
