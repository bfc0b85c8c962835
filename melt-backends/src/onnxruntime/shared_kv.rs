//! A KV cache written in place, for graphs whose every layer is ONNX Runtime's
//! `GroupQueryAttention` (onnxruntime-genai's convention).
//!
//! One buffer per layer and kind, `[1, kv_heads, n_ctx, head_dim]`, is bound (I/O binding)
//! both as `past_key_values.*` and as `present.*`. The operator sees the same pointer, takes
//! the valid length from `seqlens_k` (the attention mask's sum − 1) and writes only the new
//! positions: a step copies no cache. Without it each step's `present` is a fresh tensor of the
//! whole context, copied from the past, and its cost grows with the context.

use ort::memory::Allocator;
use ort::session::{IoBinding, Session};
use ort::value::{DynValue, Tensor};

use super::convention::{Convention, KvType};
use super::runtime;
use melt_core::BackendError;

pub(super) struct SharedKv {
    binding: IoBinding,
    /// ONNX Runtime's CPU allocator, where the logits go.
    cpu: Allocator,
}

impl SharedKv {
    /// Buffers for `n_ctx` positions, zeroed, bound to every layer's past and present.
    pub(super) fn new(
        session: &Session,
        c: &Convention,
        n_ctx: usize,
    ) -> Result<SharedKv, BackendError> {
        let err = |what: &'static str| move |e: ort::Error| runtime(format!("{what}: {e}"));
        let mut binding = session.create_binding().map_err(err("I/O binding"))?;
        let allocator = Allocator::default();
        let shape = [1usize, c.kv_heads, n_ctx, c.head_dim];
        for i in 0..c.n_layer {
            for kv in ["key", "value"] {
                let mut buffer: DynValue = match c.kv {
                    KvType::F32 => {
                        let mut t = Tensor::<f32>::new(&allocator, shape)
                            .map_err(err("allocating the KV cache"))?;
                        t.extract_tensor_mut().1.fill(0.0);
                        t.into_dyn()
                    }
                    KvType::F16 => {
                        let mut t = Tensor::<half::f16>::new(&allocator, shape)
                            .map_err(err("allocating the KV cache"))?;
                        t.extract_tensor_mut().1.fill(half::f16::ZERO);
                        t.into_dyn()
                    }
                };
                binding
                    .bind_input(format!("past_key_values.{i}.{kv}"), &buffer)
                    .map_err(err("binding the past"))?;
                binding
                    .bind_output(format!("present.{i}.{kv}"), &mut buffer)
                    .map_err(err("binding the present"))?;
            }
        }
        Ok(SharedKv {
            binding,
            cpu: allocator,
        })
    }

    /// Runs `session` on `inputs` (every input but the cache); returns the logits.
    pub(super) fn run(
        &mut self,
        session: &mut Session,
        inputs: &[(String, DynValue)],
    ) -> Result<DynValue, BackendError> {
        for (name, value) in inputs {
            self.binding
                .bind_input(name, value)
                .map_err(|e| runtime(format!("binding `{name}`: {e}")))?;
        }
        // Bound afresh each run: a bound output keeps its first shape, and the logits' rows
        // change with the step's length.
        self.binding
            .bind_output_to_device("logits", self.cpu.memory_info())
            .map_err(|e| runtime(format!("binding the logits: {e}")))?;
        let mut outputs = session
            .run_binding(&self.binding)
            .map_err(|e| runtime(format!("running the graph: {e}")))?;
        outputs
            .remove("logits")
            .ok_or_else(|| runtime("the run returned no `logits`"))
    }
}
