//! melt's tasks (perplexity, multiple choice, conversation replay) on the tiny llama through
//! llama.cpp, each checked against what can be computed independently of the task's code.

use std::time::Instant;

use super::*;
use melt_bench::backend::log_prob;
use melt_bench::tasks::chat::{ChatTemplate, Message};
use melt_bench::tasks::{choice, perplexity, replay};
use melt_testkit::TinyLlama;

const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

fn tiny(dir: &std::path::Path, template: Option<&str>) -> ModelSpec {
    let path = dir.join("tiny-llama.gguf");
    TinyLlama {
        chat_template: template.map(String::from),
        ..TinyLlama::default()
    }
    .write(&path)
    .unwrap();
    ModelSpec::from_path(&path).unwrap()
}

fn session_params(n_ctx: u32) -> SessionParams {
    let mut sp = melt_testkit::with_threads(2).session;
    sp.n_ctx = Some(n_ctx);
    sp
}

const TEXT: &str = "the hello world and the other world, a lot of words in the shell; \
    hello there, what a world. the tide and the wind were all in the west, and the sea was wild.";

#[test]
fn perplexity_matches_one_computed_prefix_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), None);
    let loaded = LlamaCpp.load(&model, &ModelParams::default()).unwrap();
    let mut s = loaded.session(&session_params(64)).unwrap();
    let text = TEXT.repeat(4);
    let spec = perplexity::PerplexitySpec {
        data: std::path::PathBuf::from("text.txt").into(),
        n_ctx: 32,
        max_chunks: Some(3),
        save_log_probs: None,
    };
    let got = perplexity::run(s.as_mut(), &spec, &text, &mut |_, _, _| {}).unwrap();
    assert_eq!(got.chunks, 3);
    assert_eq!(got.tokens_scored, 3 * (32 - 1 - 16));

    // Independently: every scored position from its own prefill, log-softmax by hand.
    let tokens = s.tokenize(&text, true).unwrap();
    let mut nll = Vec::new();
    for c in 0..3 {
        let mut chunk = tokens[c * 32..(c + 1) * 32].to_vec();
        chunk[0] = s.bos().unwrap();
        for i in 16..31 {
            s.clear().unwrap();
            s.prefill(&chunk[..=i]).unwrap();
            let l = s.logits().unwrap();
            let max = l.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let z: f64 = l.iter().map(|&x| (x as f64 - max).exp()).sum();
            nll.push(-(l[chunk[i + 1] as usize] as f64 - max - z.ln()));
        }
    }
    let mean = nll.iter().sum::<f64>() / nll.len() as f64;
    let expected = mean.exp();
    assert!(
        (got.ppl - expected).abs() / expected < 1e-3,
        "task {} vs by hand {expected}",
        got.ppl
    );
    let var = nll.iter().map(|x| x * x).sum::<f64>() / nll.len() as f64 - mean * mean;
    let err = (var / (nll.len() - 1) as f64).sqrt() * expected;
    assert!(
        (got.ppl_stderr - err).abs() / err < 1e-2,
        "{} vs {err}",
        got.ppl_stderr
    );
    assert_eq!(got.running.len(), 3);

    // Too short a text for two chunks, and a chunk larger than the session: errors that say so.
    let e = perplexity::run(s.as_mut(), &spec, "the world", &mut |_, _, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("text.txt") && e.contains("at least 64"), "{e}");
    let holds = s.n_ctx();
    let big = perplexity::PerplexitySpec {
        n_ctx: holds + 1,
        ..spec
    };
    let e = perplexity::run(s.as_mut(), &big, &text, &mut |_, _, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("the session holds {holds}")), "{e}");
}

#[test]
fn multiple_choice_finds_answers_known_by_construction() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), None);
    let loaded = LlamaCpp.load(&model, &ModelParams::default()).unwrap();
    let mut s = loaded.session(&session_params(256)).unwrap();
    // Each choice is one vocabulary piece that starts a word ("▁the", "▁a", ...), so after
    // "Answer:" and a space it is exactly one token: the right answer is, by construction,
    // the piece the model itself ranks first among the choices.
    let words = ["the", "a", "t", "w", "s", "o", "h", "W"];
    let stems = ["Hello world", "the other shell", "what a lot"];
    let mut lines = Vec::new();
    let mut expected = Vec::new();
    for (q, stem) in stems.iter().enumerate() {
        let prompt = format!("Question: {stem}\nAnswer:");
        let context = s.tokenize(&prompt, true).unwrap();
        s.clear().unwrap();
        s.prefill(&context).unwrap();
        let logits = s.logits().unwrap().to_vec();
        let piece = |w: &str| {
            let (c, cont) = choice::encode_choice(s.as_ref(), &prompt, w).unwrap();
            assert_eq!(c, context);
            assert_eq!(cont.len(), 1, "{w:?} is one token after a space");
            cont[0]
        };
        let mut ranked: Vec<(&str, f32)> = words
            .iter()
            .map(|w| (*w, logits[piece(w) as usize]))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        // The best, the worst and a middle one; the best placed at a different index each time.
        let mut choices = vec![ranked[7].0, ranked[4].0];
        choices.insert(q % 3, ranked[0].0);
        expected.push((q % 3, log_prob(&logits, piece(ranked[0].0))));
        let labels = ["A", "B", "C"];
        let list: Vec<String> = choices
            .iter()
            .zip(labels)
            .map(|(t, l)| format!("{{\"text\": \"{t}\", \"label\": \"{l}\"}}"))
            .collect();
        lines.push(format!(
            "{{\"id\": \"q{q}\", \"question\": {{\"stem\": \"{stem}\", \"choices\": [{}]}}, \"answerKey\": \"{}\"}}",
            list.join(", "),
            labels[q % 3]
        ));
    }
    let path = dir.path().join("three.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let spec = choice::ChoiceSpec {
        data: path.clone().into(),
        limit: None,
    };
    let got = choice::run(s.as_mut(), &spec, &mut |_, _| {}).unwrap();
    assert_eq!(got.task, "arc");
    assert_eq!(got.accuracy.n, 3);
    assert_eq!(got.accuracy.acc, 1.0, "{got:?}");
    assert_eq!(got.accuracy.acc_stderr, 0.0);
    // The score of the right choice is its log-probability, computed by hand above.
    let q = melt_bench::datasets::read_questions(
        &path.clone().into(),
        melt_bench::datasets::McFormat::Arc,
    )
    .unwrap();
    for (qi, (answer, lp)) in expected.iter().enumerate() {
        assert_eq!(q[qi].answer, *answer);
        let prompt = melt_bench::datasets::McFormat::Arc.prompt(&q[qi]);
        let (c, cont) =
            choice::encode_choice(s.as_ref(), &prompt, &q[qi].choices[*answer]).unwrap();
        let score = choice::loglikelihood(s.as_mut(), &c, &cont).unwrap();
        assert!((score.loglik - lp).abs() < 1e-3, "{} vs {lp}", score.loglik);
        assert!(score.greedy || cont.len() == 1);
    }
    // Reusing the shared prefix gives each choice the score of a fresh context, for fewer
    // tokens evaluated.
    let mut scorer = choice::PrefixScorer::default();
    let mut total = 0;
    for question in &q {
        let prompt = melt_bench::datasets::McFormat::Arc.prompt(question);
        for c in &question.choices {
            let (ctx, cont) = choice::encode_choice(s.as_ref(), &prompt, c).unwrap();
            total += ctx.len() + cont.len();
            let fresh = choice::loglikelihood(s.as_mut(), &ctx, &cont)
                .unwrap()
                .loglik;
            // The fresh score emptied the context; score twice so the second reuses it.
            scorer.score(s.as_mut(), &ctx, &cont).unwrap();
            let reused = scorer.score(s.as_mut(), &ctx, &cont).unwrap().loglik;
            assert!((fresh - reused).abs() < 1e-3, "{fresh} vs {reused}");
        }
    }
    assert!(
        scorer.evaluated < 2 * total,
        "{} of {}",
        scorer.evaluated,
        2 * total
    );
    // A seeded subset is the same subset every time.
    let two = choice::ChoiceSpec {
        data: path.into(),
        limit: Some(2),
    };
    let a = choice::run(s.as_mut(), &two, &mut |_, _| {}).unwrap();
    let b = choice::run(s.as_mut(), &two, &mut |_, _| {}).unwrap();
    assert_eq!((a.accuracy.n, a.questions_in_file), (2, 3));
    assert_eq!(
        (a.accuracy, a.tokens_evaluated),
        (b.accuracy, b.tokens_evaluated)
    );
}

fn replay_spec(path: std::path::PathBuf, n_ctx: usize) -> replay::ReplaySpec {
    replay::ReplaySpec {
        think_time_s: 0.0,
        conversation_gap_s: 0.0,
        fixed_output: Some(4),
        n_ctx,
        ..replay::ReplaySpec::new(path)
    }
}

#[test]
fn replay_keeps_the_context_across_turns_and_resets_it_between_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Some(CHATML));
    let template = ChatTemplate::for_model(&model.path, None).unwrap();
    assert_eq!(template.source, "GGUF tokenizer.chat_template");
    let loaded = LlamaCpp.load(&model, &ModelParams::default()).unwrap();
    let mut s = loaded.session(&session_params(512)).unwrap();
    let convs = vec![
        vec![
            "Hello world".to_string(),
            "the other one".to_string(),
            "and now?".to_string(),
        ],
        vec!["what a lot".to_string()],
    ];
    let spec = replay_spec("c.json".into(), 512);
    let mut heard = 0;
    let r = replay::run(
        s.as_mut(),
        &spec,
        &template,
        &convs,
        Instant::now(),
        None,
        &mut |_| heard += 1,
    )
    .unwrap();
    assert_eq!((r.turns.len(), heard, r.conversations.len()), (4, 4, 2));
    let t = &r.turns;
    // Turn 0: the template's text for one message, BOS first, into an empty context.
    let first = template
        .render(&[Message::user("Hello world")], true)
        .unwrap();
    let mut expect0 = vec![s.bos().unwrap()];
    expect0.extend(s.tokenize_special(&first).unwrap());
    assert_eq!((t[0].context_before, t[0].input_tokens), (0, expect0.len()));
    // Later turns: the context holds every earlier prompt and answer (4 tokens each)...
    assert_eq!(t[1].context_before, t[0].input_tokens + 4);
    assert_eq!(
        t[2].context_before,
        t[1].context_before + t[1].input_tokens + 4
    );
    // ...and only what ChatML prints after an answer is added.
    let after = "<|im_end|>\n<|im_start|>user\nthe other one<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(t[1].input_tokens, s.tokenize_special(after).unwrap().len());
    assert!(t.iter().all(|t| t.output_tokens == 4 && t.stop == "fixed"));
    // A new conversation starts from an empty context.
    assert_eq!(
        (t[3].conversation, t[3].turn, t[3].context_before),
        (1, 0, 0)
    );
    assert_eq!(r.conversations[0].turns, 3);
    assert_eq!(
        r.conversations[0].input_tokens,
        t[0].input_tokens + t[1].input_tokens + t[2].input_tokens
    );
    assert!(t
        .iter()
        .all(|t| t.ttft_ns > 0 && t.decode_tok_s > 0.0 && t.end_s >= t.start_s));

    // Without --fixed-output answers end at end of turn or at the cap, whichever first.
    let free = replay::ReplaySpec {
        fixed_output: None,
        max_output: 6,
        ..spec.clone()
    };
    let r = replay::run(
        s.as_mut(),
        &free,
        &template,
        &convs,
        Instant::now(),
        None,
        &mut |_| {},
    )
    .unwrap();
    for t in &r.turns {
        match t.stop.as_str() {
            "cap" => assert_eq!(t.output_tokens, 6),
            "end" => assert!(t.output_tokens < 6),
            other => panic!("stop {other}"),
        }
    }
}

#[test]
fn replay_drops_the_oldest_turns_when_the_context_is_full_and_names_a_prompt_that_cannot_fit() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), None);
    let template = ChatTemplate::for_model(&model.path, Some("chatml")).unwrap();
    let loaded = LlamaCpp.load(&model, &ModelParams::default()).unwrap();
    let mut s = loaded.session(&session_params(512)).unwrap();
    let prompt = "hello world ".repeat(3);
    let convs = vec![vec![prompt.clone(); 6]];
    // Room for about two turns.
    let one = template.render(&[Message::user(&prompt)], true).unwrap();
    let per_turn = s.tokenize_special(&one).unwrap().len() + 4;
    let n_ctx = per_turn * 2 + per_turn / 2;
    let spec = replay_spec("c.json".into(), n_ctx);
    let r = replay::run(
        s.as_mut(),
        &spec,
        &template,
        &convs,
        Instant::now(),
        None,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(r.turns.len(), 6);
    let dropped: Vec<usize> = r.turns.iter().map(|t| t.dropped_turns).collect();
    assert!(dropped.iter().any(|&d| d > 0), "{dropped:?}");
    for t in &r.turns {
        assert!(t.context_before + t.input_tokens + 4 <= n_ctx, "{t:?}");
        if t.dropped_turns > 0 {
            assert_eq!(t.context_before, 0, "a drop starts the context over");
        }
    }

    // A prompt that cannot fit even alone.
    let long = vec![vec!["hello world ".repeat(200)]];
    let e = replay::run(
        s.as_mut(),
        &spec,
        &template,
        &long,
        Instant::now(),
        None,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("c.json: conversation 0, prompt 0") && e.contains("does not fit a context"),
        "{e}"
    );
}
