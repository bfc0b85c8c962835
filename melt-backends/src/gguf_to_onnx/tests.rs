//! The exporter checked against llama.cpp itself: the same GGUF run by llama.cpp and, exported,
//! by ONNX Runtime must give the same logits and the same tokens.

use super::*;
use crate::{LlamaCpp, OnnxRuntime};
use melt_bench::backend::{argmax, Backend};
use melt_bench::params::{ModelParams, SessionParams};
use melt_bench::{ModelSpec, Params};
use melt_testkit::conformance;
use melt_testkit::{cached_model, write_gguf, GgufTensor, GgufValue, TinyLlama};
use std::path::Path;

fn params() -> SessionParams {
    SessionParams {
        threads: 2,
        // An f32 cache on the llama.cpp side too: the comparison is of the graphs.
        type_k: "f32".into(),
        type_v: "f32".into(),
        n_ctx: Some(256),
        ..SessionParams::default()
    }
}

/// Feeds `prompt`, then `steps` tokens chosen by llama.cpp's greedy argmax, to both engines;
/// returns the worst relative logit difference and how many argmaxes agreed.
fn compare(
    gguf: &ModelSpec,
    onnx: &ModelSpec,
    sp: &SessionParams,
    prompt: &str,
    steps: usize,
) -> (f32, usize, usize) {
    // `options` are ONNX Runtime's; llama.cpp takes none.
    let llama_sp = SessionParams {
        options: Default::default(),
        ..sp.clone()
    };
    compare_on(
        (&LlamaCpp, gguf, &llama_sp),
        (&OnnxRuntime, onnx, sp),
        prompt,
        steps,
    )
}

/// [`compare`] between any two models, the first one choosing the tokens.
fn compare_on(
    (lb, gguf, llama_sp): (&dyn Backend, &ModelSpec, &SessionParams),
    (ob, onnx, sp): (&dyn Backend, &ModelSpec, &SessionParams),
    prompt: &str,
    steps: usize,
) -> (f32, usize, usize) {
    let lm = lb.load(gguf, &ModelParams::default()).unwrap();
    let om = ob.load(onnx, &ModelParams::default()).unwrap();
    let mut ls = lm.session(llama_sp).unwrap();
    let mut os = om.session(sp).unwrap();
    let ids = ls.tokenize(prompt, true).unwrap();
    assert_eq!(
        os.tokenize(prompt, true).unwrap(),
        ids,
        "tokenizer.json tokenizes {prompt:?} like llama.cpp"
    );
    ls.prefill(&ids).unwrap();
    os.prefill(&ids).unwrap();
    let (mut worst, mut agree) = (0f32, 0);
    for step in 0..=steps {
        let (l, o) = (ls.logits().unwrap(), os.logits().unwrap());
        assert_eq!(l.len(), o.len());
        worst = worst.max(conformance::relative_max_diff(l, o));
        let next = argmax(l);
        agree += usize::from(argmax(o) == next);
        if step < steps {
            ls.decode(next).unwrap();
            os.decode(next).unwrap();
        }
    }
    (worst, agree, steps + 1)
}

fn write(path: &Path, metadata: &[(String, GgufValue)], tensors: &[GgufTensor]) {
    write_gguf(&mut std::fs::File::create(path).unwrap(), metadata, tensors).unwrap();
}

fn tiny(dir: &Path) -> (ModelSpec, ModelSpec) {
    let gguf = dir.join("tiny.gguf");
    TinyLlama::default().write(&gguf).unwrap();
    let out = export(&gguf, &dir.join("onnx")).unwrap();
    assert_eq!(out.architecture, "llama");
    (
        ModelSpec::from_path(&gguf).unwrap(),
        ModelSpec::from_path(&out.model).unwrap(),
    )
}

#[test]
fn tiny_llama_gives_llama_cpps_logits_on_onnx_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, onnx) = tiny(dir.path());
    let (worst, agree, n) = compare(&gguf, &onnx, &params(), "Hello world, the weather", 20);
    assert!(worst < 1e-3, "relative logit difference {worst}");
    assert_eq!(agree, n, "greedy tokens");
    // And the exported model is a melt ONNX model like any other.
    let kit_params = Params {
        session: params(),
        ..Params::default()
    };
    let checks = conformance::run(&OnnxRuntime, &onnx, &kit_params, 1e-4, dir.path());
    conformance::assert_conforms(&checks);
}

/// The tiny model with every block of 32 made `d · (q − 8)` over all 16 levels, then
/// quantized by llama.cpp to Q4_0 (which keeps such blocks exactly; the output matrix becomes
/// Q8_0): weights ONNX Runtime's 4- and 8-bit blocks hold exactly,
/// so only the export's layout and the engines' 8-bit activations stand between their logits.
fn snapped_q4_0(dir: &Path) -> ModelSpec {
    let (metadata, mut tensors) = TinyLlama::default().build();
    for t in tensors.iter_mut().filter(|t| t.dims.len() == 2) {
        for block in t.data.chunks_mut(nbits::BLOCK) {
            let d = block.iter().fold(0f32, |m, x| m.max(x.abs())) / 8.0;
            for (i, x) in block.iter_mut().enumerate() {
                let q = match i {
                    0 => 0.0,
                    1 => 15.0,
                    _ => (*x / d + 8.0).round().clamp(0.0, 15.0),
                };
                *x = d * (q - 8.0);
            }
        }
    }
    let f32_path = dir.join("snapped.gguf");
    write(&f32_path, &metadata, &tensors);
    let path = dir.join("snapped-q4_0.gguf");
    crate::llama_cpp::quantize(&f32_path, &path, "Q4_0", 2).unwrap();
    ModelSpec::from_path(&path).unwrap()
}

#[test]
fn int4_export_runs_the_gguf_weights_on_onnx_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = snapped_q4_0(dir.path());
    let int4 = export_as(
        &gguf.path,
        &dir.path().join("int4"),
        Quant::Int4,
        Layout::Plain,
    )
    .unwrap();
    let f32 = export_as(
        &gguf.path,
        &dir.path().join("f32"),
        Quant::F32,
        Layout::Plain,
    )
    .unwrap();
    // The Q4_0 matrices and embedding became 4-bit blocks, the Q8_0 output matrix 8-bit ones.
    let bytes = std::fs::read(&int4.model).unwrap();
    let has = |s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(has("layers.0.attn_q.q4") && has("layers.1.ffn_down.q4"));
    assert!(has("token_embd.q4") && has("output.q8"));
    let int4 = ModelSpec::from_path(&int4.model).unwrap();
    let (worst, agree, n) = compare(&gguf, &int4, &params(), "Hello world, the weather", 20);
    assert!(worst < 2e-2, "relative logit difference {worst}");
    assert_eq!(agree, n, "greedy tokens");
    let f32_size = ModelSpec::from_path(&f32.model).unwrap().size_bytes;
    assert!(
        int4.size_bytes < f32_size / 2,
        "{} vs {f32_size}",
        int4.size_bytes
    );
    let loaded = OnnxRuntime.load(&int4, &ModelParams::default()).unwrap();
    assert_eq!(loaded.info().quantization, "INT4");
    let kit_params = Params {
        session: params(),
        ..Params::default()
    };
    let checks = conformance::run(&OnnxRuntime, &int4, &kit_params, 1e-4, dir.path());
    conformance::assert_conforms(&checks);

    // `accuracy_level` is a session option: at 1 (f32 activations) the exact 4-bit blocks give
    // the f32 export's logits; at the export's 4 (8-bit activations) they do not.
    let f32 = ModelSpec::from_path(&f32.model).unwrap();
    let with = |options: &str| SessionParams {
        options: melt_bench::params::parse_options(options),
        ..params()
    };
    let (plain, level1, level4) = (params(), with("accuracy_level=1"), with("accuracy_level=4"));
    let prompt = "Hello world, the weather";
    let on = |sp| (&OnnxRuntime as &dyn Backend, &f32, sp);
    let (exact, ..) = compare_on(on(&plain), (&OnnxRuntime, &int4, &level1), prompt, 8);
    let (int8, ..) = compare_on(on(&plain), (&OnnxRuntime, &int4, &level4), prompt, 8);
    eprintln!("accuracy_level 1: {exact:.1e} from the f32 export; 4: {int8:.1e}");
    assert!(
        exact < 1e-4 && int8 > 1e-3,
        "level 1: {exact}, level 4: {int8}"
    );
    // Where it cannot apply, or out of range, it is refused by name.
    let om = OnnxRuntime.load(&f32, &ModelParams::default()).unwrap();
    let err = om.session(&level1).err().unwrap().to_string();
    assert!(err.contains("no MatMulNBits"), "{err}");
    let err = om
        .session(&with("accuracy_level=9"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("accuracy_level=9"), "{err}");
}

/// The genai layout of a tiny model with `n_head` query heads over `n_head_kv`, exported in
/// `quant` into `dir`: llama.cpp's logits and tokens, through prefill in chunks and decode.
fn genai_agrees_with_llama_cpp(
    dir: &Path,
    n_head: usize,
    n_head_kv: usize,
    quant: Quant,
) -> ModelSpec {
    let gguf = dir.join("tiny.gguf");
    TinyLlama {
        // Head size 16: GroupQueryAttention's RoPE wants a multiple of 16.
        n_embd: 16 * n_head,
        n_head,
        n_head_kv,
        seed: 5,
        ..TinyLlama::default()
    }
    .write(&gguf)
    .unwrap();
    let out = export_as(&gguf, &dir.join("genai"), quant, Layout::Genai).unwrap();
    let bytes = std::fs::read(&out.model).unwrap();
    let has = |s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(has("GroupQueryAttention") && !has("position_ids") && !has("logits_to_keep"));
    let onnx = ModelSpec::from_path(&out.model).unwrap();
    let gguf = ModelSpec::from_path(&gguf).unwrap();
    // Prefill in chunks of 3 (a later chunk attends to the cache and to itself), then decode:
    // with the cache bound in place (the default) and with a growing past.
    for share_kv in ["on", "off"] {
        let mut sp = SessionParams {
            n_batch: 3,
            ..params()
        };
        sp.options.insert("share_kv".into(), share_kv.into());
        let (worst, agree, n) = compare(&gguf, &onnx, &sp, "Hello world, the weather", 20);
        let tolerance = if quant == Quant::F32 { 1e-3 } else { 2e-2 };
        assert!(
            worst < tolerance,
            "share_kv={share_kv}: logit difference {worst}"
        );
        assert_eq!(agree, n, "share_kv={share_kv}: greedy tokens");
        // Only a cache in place can be truncated by saying how much of it is valid.
        let model = OnnxRuntime.load(&onnx, &ModelParams::default()).unwrap();
        let mut s = model.session(&sp).unwrap();
        s.prefill(&[1, 2, 3, 4]).unwrap();
        assert_eq!(s.truncate(2).unwrap(), share_kv == "on");
    }
    onnx
}

#[test]
fn genai_layout_runs_llama_cpps_weights_through_group_query_attention() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let onnx = genai_agrees_with_llama_cpp(dirs[0].path(), 4, 2, Quant::F32);
    // 8 query heads over 2 KV heads: a wrong grouping still runs but gives other logits.
    genai_agrees_with_llama_cpp(dirs[1].path(), 8, 2, Quant::F32);
    let int4 = genai_agrees_with_llama_cpp(dirs[2].path(), 4, 1, Quant::Int4);
    let kit_params = Params {
        session: params(),
        ..Params::default()
    };
    for (model, dir) in [(&onnx, &dirs[0]), (&int4, &dirs[2])] {
        let checks = conformance::run(&OnnxRuntime, model, &kit_params, 1e-4, dir.path());
        conformance::assert_conforms(&checks);
    }
}

#[test]
fn grouped_query_heads_share_the_right_kv_head() {
    // 8 query heads over 2 KV heads: a wrong grouping still runs but gives other logits.
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("gqa.gguf");
    TinyLlama {
        n_head: 8,
        n_head_kv: 2,
        seed: 3,
        ..TinyLlama::default()
    }
    .write(&gguf)
    .unwrap();
    let out = export(&gguf, &dir.path().join("onnx")).unwrap();
    let (worst, agree, n) = compare(
        &ModelSpec::from_path(&gguf).unwrap(),
        &ModelSpec::from_path(&out.model).unwrap(),
        &params(),
        "the other",
        8,
    );
    assert!(worst < 1e-3, "relative logit difference {worst}");
    assert_eq!(agree, n);
}

#[test]
fn unknown_architectures_and_broken_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (mut metadata, tensors) = TinyLlama::default().build();
    metadata[0].1 = GgufValue::Str("mamba".into());
    let path = dir.path().join("mamba.gguf");
    write(&path, &metadata, &tensors);
    let err = export(&path, dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("`mamba`") && err.contains("mamba.gguf"),
        "{err}"
    );

    let (metadata, mut tensors) = TinyLlama::default().build();
    tensors.retain(|t| t.name != "blk.1.ffn_up.weight");
    let path = dir.path().join("holes.gguf");
    write(&path, &metadata, &tensors);
    let err = export(&path, dir.path()).unwrap_err().to_string();
    assert!(err.contains("blk.1.ffn_up.weight"), "{err}");

    // A directory that promises more weights than one ONNX file can hold is refused before
    // any dequantizing (the data itself need not exist for that).
    let (metadata, mut tensors) = TinyLlama::default().build();
    tensors.last_mut().unwrap().dims = vec![128, 5_000_000];
    let path = dir.path().join("huge.gguf");
    write(&path, &metadata, &tensors);
    let err = export(&path, dir.path()).unwrap_err().to_string();
    assert!(err.contains("2 GiB limit"), "{err}");

    let full = dir.path().join("full.gguf");
    TinyLlama::default().write(&full).unwrap();
    let bytes = std::fs::read(&full).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() * 3 / 4]).unwrap();
    let err = export(&cut, &dir.path().join("cut"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cut.gguf") && err.contains("truncated"),
        "{err}"
    );
    assert!(
        !dir.path().join("cut/model.onnx").exists(),
        "nothing is written from a broken file"
    );
}

/// Gemma 3 270M Q4_K_M from the cache, exported (or the registry's export, when cached) and
/// run on both engines; its prompt is the shipped tinyshakespeare's first 2400 characters.
#[test]
fn gemma_3_270m_exported_agrees_with_llama_cpp() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let Some(gguf) = cached_model(&root, "gemma-3-270m-q4_k_m") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let onnx = match melt_testkit::lookup_cached(&root, "gemma-3-270m-f32-onnx") {
        Ok(m) => m,
        Err(_) => {
            let out = export(&gguf.path, dir.path()).unwrap();
            ModelSpec::from_path(&out.model).unwrap()
        }
    };
    // llama.cpp multiplies Q4_K/Q5_0/Q6_K/Q8_0 weights by 8-bit-quantized activations; the
    // ONNX model multiplies the same weights, dequantized, in f32. The sliding window (512)
    // is crossed: the prompt plus decode runs past it.
    let prompt: String = melt_bench::datasets::Shipped::TinyShakespeare
        .text()
        .chars()
        .take(2400)
        .collect();
    let mut sp = params();
    sp.n_ctx = Some(1024);
    let (worst, agree, n) = compare(&gguf, &onnx, &sp, &prompt, 16);
    eprintln!("gemma-3-270m: worst relative logit difference {worst:.4}, greedy {agree}/{n}");
    assert!(worst < 0.1, "relative logit difference {worst}");
    assert!(agree * 10 >= n * 8, "greedy tokens agree {agree}/{n}");
    // The shipped ONNX model passes the kit like the GGUF does (f32 throughout: batched and
    // one-token passes differ only by summation order).
    let kit_params = Params {
        session: params(),
        ..Params::default()
    };
    let checks = conformance::run(&OnnxRuntime, &onnx, &kit_params, 1e-3, dir.path());
    conformance::assert_conforms(&checks);

    // The 4-bit export: its Q4_K matrices re-quantized to ONNX Runtime's 4-bit blocks (the
    // rest at 8 bits) move the logits further, yet the greedy continuation mostly agrees.
    let int4 = match melt_testkit::lookup_cached(&root, "gemma-3-270m-int4-onnx") {
        Ok(m) => m,
        Err(_) => {
            let out = export_as(
                &gguf.path,
                &dir.path().join("int4"),
                Quant::Int4,
                Layout::Plain,
            )
            .unwrap();
            ModelSpec::from_path(&out.model).unwrap()
        }
    };
    let (worst, agree, n) = compare(&gguf, &int4, &sp, &prompt, 16);
    eprintln!("gemma-3-270m int4: worst relative logit difference {worst:.4}, greedy {agree}/{n}");
    assert!(worst < 0.3, "relative logit difference {worst}");
    assert!(agree * 10 >= n * 6, "greedy tokens agree {agree}/{n}");
    // The kit checks the cache's mechanics, so it runs with f32 activations: at the export's
    // accuracy_level 4 a batch and a single row quantize their activations to int8 apart, by
    // an amount that depends on the CPU's kernels (measured 1.56e-2 of the logits' range on an
    // AVX2 EPYC, under 1e-2 on an AVX-512 one). At level 1 they differ by summation order.
    let mut f32_activations = kit_params.clone();
    f32_activations
        .session
        .options
        .insert("accuracy_level".into(), "1".into());
    let checks = conformance::run(&OnnxRuntime, &int4, &f32_activations, 1e-3, dir.path());
    conformance::assert_conforms(&checks);

    // The genai layout computes what the plain one does — sliding window, both RoPE bases
    // and the per-head norms included — with its cache bound in place, past the window.
    let genai = export_as(
        &gguf.path,
        &dir.path().join("genai"),
        Quant::F32,
        Layout::Genai,
    )
    .unwrap();
    let genai = ModelSpec::from_path(&genai.model).unwrap();
    let ort = (&OnnxRuntime as &dyn Backend, &onnx, &sp);
    let (worst, agree, n) = compare_on(ort, (&OnnxRuntime, &genai, &sp), &prompt, 16);
    eprintln!("gemma-3-270m genai vs plain: worst relative logit difference {worst:.2e}");
    // A window one key narrower gives 4e-3.
    assert!(worst < 1e-4, "relative logit difference {worst}");
    assert_eq!(agree, n, "greedy tokens");
}

#[test]
fn onnx_runtime_scores_perplexity_as_llama_cpp_does() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, onnx) = tiny(dir.path());
    let ppl = |b: &dyn Backend, m: &ModelSpec| melt_testkit::tiny_perplexity(b, m, &params());
    let (a, b) = (ppl(&LlamaCpp, &gguf), ppl(&OnnxRuntime, &onnx));
    assert!(
        (a - b).abs() / a < 1e-4,
        "llama.cpp {a} vs ONNX Runtime {b}"
    );
}

#[test]
fn prefill_reads_the_last_position_alone_and_scoring_reads_every_one() {
    let dir = tempfile::tempdir().unwrap();
    let (_, onnx) = tiny(dir.path());
    // The graph lets its caller choose how many positions' logits it computes.
    let env = crate::onnxruntime::environment().unwrap();
    let graph = ort::session::Session::builder(env)
        .unwrap()
        .commit_from_file(&onnx.path)
        .unwrap();
    let inputs: Vec<&str> = graph.inputs().iter().map(|i| i.name()).collect();
    assert!(inputs.contains(&"logits_to_keep"), "{inputs:?}");
    let om = OnnxRuntime.load(&onnx, &ModelParams::default()).unwrap();
    let mut timed = om.session(&params()).unwrap();
    let ids = timed
        .tokenize("Hello world, the other weather", true)
        .unwrap();
    timed.prefill(&ids).unwrap();
    let last = timed.logits().unwrap().to_vec();
    let mut scoring = om.session(&params()).unwrap();
    let mut rows: Vec<Vec<f32>> = Vec::new();
    scoring
        .prefill_with_logits(&ids, 0, &mut |_, l| rows.push(l.to_vec()))
        .unwrap();
    assert_eq!(rows.len(), ids.len(), "every position scored");
    let diff = conformance::relative_max_diff(&last, rows.last().unwrap());
    assert!(
        diff < 1e-5,
        "the two heads disagree on the last row: {diff}"
    );
    // Decoding on from either gives the same next logits.
    let next = argmax(&last);
    timed.decode(next).unwrap();
    scoring.decode(next).unwrap();
    let diff = conformance::relative_max_diff(timed.logits().unwrap(), scoring.logits().unwrap());
    assert!(diff < 1e-5, "{diff}");
}

/// Saves llama.cpp's log-probabilities over a text as the reference, then scores models
/// against it: the same weights on ONNX Runtime diverge by rounding only; another model by
/// what the definition, computed here from full logits, says.
#[test]
fn kl_divergence_from_a_saved_reference_on_either_engine() {
    use melt_bench::tasks::{kl_divergence, log_probs, perplexity};
    let dir = tempfile::tempdir().unwrap();
    let (gguf, onnx) = tiny(dir.path());
    let other = dir.path().join("other.gguf");
    TinyLlama {
        seed: 7,
        ..TinyLlama::default()
    }
    .write(&other)
    .unwrap();
    let other = ModelSpec::from_path(&other).unwrap();
    let base = dir.path().join("ref").join("tiny.kld");
    let text = "the hello world and the other world, a lot of words in the shell; ".repeat(8);
    let lm = LlamaCpp.load(&gguf, &ModelParams::default()).unwrap();
    let mut s = lm.session(&params()).unwrap();
    let spec = perplexity::PerplexitySpec {
        data: std::path::PathBuf::from("text.txt").into(),
        n_ctx: 32,
        max_chunks: Some(3),
        save_log_probs: Some(base.clone()),
    };
    let ppl = perplexity::run(s.as_mut(), &spec, &text, &mut |_, _, _| {}).unwrap();
    let header = log_probs::Reader::open(&base).unwrap().header;
    assert_eq!((header.n_ctx, header.n_chunk), (32, 3));

    let kld_of = |b: &dyn Backend, m: &ModelSpec| {
        let loaded = b.load(m, &ModelParams::default()).unwrap();
        let mut s = loaded.session(&params()).unwrap();
        let spec = kl_divergence::KlDivergenceSpec::open(base.clone()).unwrap();
        kl_divergence::run(s.as_mut(), &spec, &mut |_, _, _| {}).unwrap()
    };
    let same = kld_of(&LlamaCpp, &gguf);
    assert_eq!(same.tokens_scored, ppl.tokens_scored);
    assert!(
        same.kld.mean.abs() < 1e-5,
        "llama.cpp against itself: {:?}",
        same.kld
    );
    assert_eq!(same.same_top.mean, 1.0);
    assert!((same.ppl_base.mean - ppl.ppl).abs() / ppl.ppl < 1e-3);
    let exported = kld_of(&OnnxRuntime, &onnx);
    assert!(
        exported.kld.mean.abs() < 1e-5,
        "the export: {:?}",
        exported.kld
    );
    assert!(exported.same_top.mean > 0.97, "{:?}", exported.same_top);

    // Another model, by the definition: KL(reference ‖ model) per position from each
    // engine's full logits in f64, every position from its own prefill.
    let got = kld_of(&LlamaCpp, &other);
    let om = LlamaCpp.load(&other, &ModelParams::default()).unwrap();
    let mut o = om.session(&params()).unwrap();
    let log_softmax = |l: &[f32]| {
        let m = l.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
        let z = l.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln() + m;
        l.iter().map(|&x| x as f64 - z).collect::<Vec<f64>>()
    };
    let mut klds = Vec::new();
    for c in 0..3 {
        let mut chunk = header.tokens[c * 32..(c + 1) * 32].to_vec();
        chunk[0] = s.bos().unwrap();
        for i in 16..31 {
            let at = |sess: &mut Box<dyn melt_bench::Session + '_>| {
                sess.clear().unwrap();
                sess.prefill(&chunk[..=i]).unwrap();
                log_softmax(sess.logits().unwrap())
            };
            let (p, q) = (at(&mut s), at(&mut o));
            klds.push(
                p.iter()
                    .zip(&q)
                    .map(|(a, b)| a.exp() * (a - b))
                    .sum::<f64>(),
            );
        }
    }
    let by_hand = klds.iter().sum::<f64>() / klds.len() as f64;
    assert!(by_hand > 1e-3, "the two models must differ: {by_hand}");
    assert!(
        (got.kld.mean - by_hand).abs() / by_hand < 0.01,
        "task {} vs the definition {by_hand}",
        got.kld.mean
    );
    assert!(got.kld.mean > 100.0 * exported.kld.mean);
    assert!(got.kld_max >= got.kld_p99 && got.kld_p99 >= got.kld_median);

    // A reference from another vocabulary is refused, naming both sizes.
    let foreign = dir.path().join("foreign.kld");
    let mut w = log_probs::Writer::create(&foreign, 8, 10, &[1; 16]).unwrap();
    for _ in 0..2 * log_probs::scored_per_chunk(8) {
        w.row(&[0.0; 10]).unwrap();
    }
    w.finish().unwrap();
    let spec = kl_divergence::KlDivergenceSpec::open(foreign).unwrap();
    let e = kl_divergence::run(s.as_mut(), &spec, &mut |_, _, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("foreign.kld") && e.contains("vocabulary of 10 tokens"),
        "{e}"
    );
}
