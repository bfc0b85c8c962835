//! Multiple-choice accuracy by log-likelihood, as lm-evaluation-harness scores it: each choice
//! is the continuation `" " + choice` of the task's prompt; its score is the sum of its
//! tokens' log-probabilities given everything before; the best-scored choice is the answer
//! (`acc`), or the best per byte of the choice (`acc_norm`).
//!
//! Tokenization is lm-eval's too: the continuation's tokens are those of `prompt + " " +
//! choice` past the tokens of the prompt alone, so a space that merges into the choice's
//! first token is scored with it.

use crate::datasets::DataSource;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::{argmax, log_prob, Session, Token};
use crate::datasets::{accuracy, limit, read_questions, Accuracy, McFormat, Question};
use crate::tasks::TaskError;

/// The seed `--limit` subsets are drawn with: the same questions on every run and device.
pub const LIMIT_SEED: u64 = 1234;

/// What to measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChoiceSpec {
    pub data: DataSource,
    /// Score a seeded subset of this many questions.
    pub limit: Option<usize>,
}

/// The result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChoiceResult {
    pub file: String,
    /// lm-evaluation-harness's task name (`openbookqa`, `truthfulqa_mc1`, ...).
    pub task: String,
    /// Questions in the file (`accuracy.n` were scored).
    pub questions_in_file: usize,
    pub accuracy: Accuracy,
    /// Tokens evaluated; a prefix shared with the previous choice is evaluated once.
    pub tokens_evaluated: usize,
    pub seconds: f64,
}

/// One choice's score: summed log-probability of its tokens, and whether greedy decoding
/// would have produced them (lm-eval's `is_greedy`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChoiceScore {
    pub loglik: f64,
    pub greedy: bool,
    pub tokens: usize,
}

/// Scores `continuation` after `context` (token ids; the context non-empty) in a fresh context.
pub fn loglikelihood(
    session: &mut dyn Session,
    context: &[Token],
    continuation: &[Token],
) -> Result<ChoiceScore, TaskError> {
    // A scorer that holds nothing starts from an empty context.
    PrefixScorer::default().score(session, context, continuation)
}

/// Scores continuations like [`loglikelihood`], keeping what the context already holds: the
/// longest common prefix with the previous sequence stays (TruthfulQA's six-shot prompt and
/// each question's context are evaluated once, not once per choice), the rest is dropped
/// with [`Session::truncate`]. An engine that cannot truncate starts from an empty context,
/// as [`loglikelihood`] does.
#[derive(Debug, Default)]
pub struct PrefixScorer {
    /// The tokens in the session's context.
    held: Vec<Token>,
    /// Tokens evaluated (what the reuse saved shows against the sequences' lengths).
    pub evaluated: usize,
}

impl PrefixScorer {
    pub fn score(
        &mut self,
        session: &mut dyn Session,
        context: &[Token],
        continuation: &[Token],
    ) -> Result<ChoiceScore, TaskError> {
        if context.is_empty() || continuation.is_empty() {
            return Err(TaskError::Input(
                "log-likelihood of an empty context or continuation".into(),
            ));
        }
        let whole: Vec<Token> = context.iter().chain(continuation).copied().collect();
        if whole.len() > session.n_ctx() {
            return Err(TaskError::Input(format!(
                "a question of {} tokens does not fit a context of {}",
                whole.len(),
                session.n_ctx()
            )));
        }
        // Logits are needed from the context's last token on, so that one is always evaluated.
        let from = context.len() - 1;
        let common = self
            .held
            .iter()
            .zip(&whole)
            .take_while(|(a, b)| a == b)
            .count()
            .min(from);
        let reuse = common > 0 && session.n_past() == self.held.len();
        let keep = if reuse && session.truncate(common)? {
            common
        } else {
            0
        };
        if keep == 0 {
            session.clear()?;
        }
        self.held.clear();
        let (mut loglik, mut greedy) = (0.0, true);
        let rest = &whole[keep..];
        session.prefill_with_logits(rest, from - keep, &mut |i, logits| {
            if let Some(&next) = rest.get(i + 1) {
                loglik += log_prob(logits, next);
                greedy &= argmax(logits) == next;
            }
        })?;
        self.evaluated += rest.len();
        self.held = whole;
        Ok(ChoiceScore {
            loglik,
            greedy,
            tokens: continuation.len(),
        })
    }
}

/// The context and continuation tokens of one choice, split as lm-eval splits them.
pub fn encode_choice(
    session: &dyn Session,
    prompt: &str,
    choice: &str,
) -> Result<(Vec<Token>, Vec<Token>), TaskError> {
    let context = session.tokenize(prompt, true)?;
    let whole = session.tokenize(&format!("{prompt} {choice}"), true)?;
    let split = context.len().min(whole.len());
    let continuation = whole[split..].to_vec();
    if continuation.is_empty() {
        return Err(TaskError::Input(format!(
            "the choice {choice:?} adds no tokens to its prompt"
        )));
    }
    Ok((whole[..split].to_vec(), continuation))
}

/// Scores every choice of every question (reusing shared prefixes, see [`PrefixScorer`]);
/// `progress` hears `(done, total)` as it goes. Returns the scores and the tokens evaluated.
pub fn score(
    session: &mut dyn Session,
    format: McFormat,
    questions: &[Question],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Vec<Vec<f64>>, usize), TaskError> {
    let mut all = Vec::with_capacity(questions.len());
    let mut scorer = PrefixScorer::default();
    for (n, q) in questions.iter().enumerate() {
        let prompt = format.prompt(q);
        let mut scores = Vec::with_capacity(q.choices.len());
        for choice in &q.choices {
            let named = |e: TaskError| match e {
                TaskError::Input(m) => TaskError::Input(format!("question {}: {m}", q.id)),
                other => other,
            };
            let (context, continuation) = encode_choice(session, &prompt, choice).map_err(named)?;
            let s = scorer
                .score(session, &context, &continuation)
                .map_err(named)?;
            scores.push(s.loglik);
        }
        all.push(scores);
        progress(n + 1, questions.len());
    }
    Ok((all, scorer.evaluated))
}

/// Reads `spec`'s file, draws the subset and scores it.
pub fn run(
    session: &mut dyn Session,
    spec: &ChoiceSpec,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ChoiceResult, TaskError> {
    let format = McFormat::detect(&spec.data)?;
    let all = read_questions(&spec.data, format)?;
    let questions_in_file = all.len();
    let questions = match spec.limit {
        Some(n) => limit(all, n, LIMIT_SEED),
        None => all,
    };
    let start = Instant::now();
    let (loglik, tokens_evaluated) = score(session, format, &questions, progress)?;
    Ok(ChoiceResult {
        file: spec.data.to_string(),
        task: format.task_name().to_string(),
        questions_in_file,
        accuracy: accuracy(&questions, &loglik),
        tokens_evaluated,
        seconds: start.elapsed().as_secs_f64(),
    })
}
