//! Conversation replay, the paper's macro experiment: each user prompt wrapped with the
//! model's chat template, the answer generated greedily and kept in the context, think time
//! between prompts and a longer gap between conversations, the context emptied between
//! conversations. A replay of one long conversation without gaps is the sustained run.
//!
//! **Context policy.** A turn needs room for its prompt and its whole output budget (the cap,
//! or `--fixed-output`). When the conversation so far leaves too little, the oldest turns are
//! dropped — the conversation is rendered again from the most recent turns that fit, the
//! context emptied and that text prefilled (the turn says how many turns it dropped; its
//! prefill is the whole window). A prompt that does not fit on its own is an error naming it.
//!
//! **Tokens.** The first turn's text is the template's rendering (its BOS text replaced by the
//! BOS token); a later turn's is what the template prints after the previous answer — found
//! by rendering the history with that answer replaced by a marker — so the generated tokens
//! stay in the context exactly as generated, and only the template's own text is added.

use crate::datasets::DataSource;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::{argmax, Session, Token};
use crate::probe::{Phase, PhaseLog};
use crate::tasks::chat::{ChatTemplate, Message};
use crate::tasks::TaskError;

/// What to replay, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplaySpec {
    /// A JSON list of conversations, each a list of user prompts.
    pub data: DataSource,
    /// Seconds between a turn's answer and the next prompt (the user reading and typing).
    pub think_time_s: f64,
    /// Seconds between conversations.
    pub conversation_gap_s: f64,
    /// Most tokens an answer may have; generation stops earlier at end of turn.
    pub max_output: usize,
    /// Every answer exactly this long, end of turn suppressed (like-for-like comparisons).
    pub fixed_output: Option<usize>,
    /// Context positions the chat has (the session's n_ctx).
    pub n_ctx: usize,
    /// `--chat-template`: a built-in name or a file.
    pub chat_template: Option<String>,
    /// Replay only the first this many conversations.
    pub max_conversations: Option<usize>,
}

impl ReplaySpec {
    /// The paper's settings: 5 s think time, 60 s between conversations, answers of at most
    /// 256 tokens, a 4096-token context.
    pub fn new(data: impl Into<DataSource>) -> ReplaySpec {
        ReplaySpec {
            data: data.into(),
            think_time_s: 5.0,
            conversation_gap_s: 60.0,
            max_output: 256,
            fixed_output: None,
            n_ctx: 4096,
            chat_template: None,
            max_conversations: None,
        }
    }

    fn budget(&self) -> usize {
        self.fixed_output.unwrap_or(self.max_output)
    }
}

/// One turn as measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub conversation: usize,
    pub turn: usize,
    /// Tokens prefilled for this turn (the template's text around the prompt; the whole
    /// window after a drop).
    pub input_tokens: usize,
    /// Tokens in the context before the turn's prefill.
    pub context_before: usize,
    pub output_tokens: usize,
    /// `end` (end of turn), `cap` (the output cap) or `fixed` (`--fixed-output`).
    pub stop: String,
    /// Oldest turns dropped to make room (the context policy).
    #[serde(default)]
    pub dropped_turns: usize,
    /// Prefill, and choosing the first token.
    pub ttft_ns: u64,
    pub prefill_ns: u64,
    pub decode_ns: u64,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    /// When the turn began and ended, seconds since the replay's epoch.
    pub start_s: f64,
    pub end_s: f64,
    /// Filled from the probes when they ran: average power and the hottest zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_w: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_c: Option<f64>,
    /// The answer's first characters, to see what was generated.
    #[serde(default)]
    pub answer_head: String,
}

/// One conversation's totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationTotals {
    pub conversation: usize,
    pub turns: usize,
    pub input_tokens: usize,
    pub output_tokens: usize,
    /// Time computing (prefill and decode), without think time.
    pub busy_s: f64,
    /// From the first prompt to the last answer, think time included.
    pub wall_s: f64,
    pub start_s: f64,
    pub end_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// Whether the peak is this conversation's own (VmHWM reset) or the process's.
    #[serde(default)]
    pub peak_rss_per_conversation: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_j: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_max_c: Option<f64>,
}

/// A replay's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Replay {
    pub file: String,
    pub template: String,
    pub n_ctx: usize,
    pub max_output: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_output: Option<usize>,
    pub think_time_s: f64,
    pub conversation_gap_s: f64,
    pub turns: Vec<Turn>,
    pub conversations: Vec<ConversationTotals>,
}

/// Marks the answer in a rendering, to find what the template prints after it.
const ANSWER_MARKER: &str = "\u{1}melt-answer\u{1}";

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// The greedy choice; with `suppress_end`, never an end-of-generation token (llama.cpp's
/// `--ignore-eos`).
fn choose(session: &dyn Session, suppress_end: bool) -> Result<Token, TaskError> {
    let logits = session.logits()?;
    let t = argmax(logits);
    if !suppress_end || !session.is_end_of_generation(t) {
        return Ok(t);
    }
    let mut masked = logits.to_vec();
    let mut t = t;
    while session.is_end_of_generation(t) {
        masked[t as usize] = f32::NEG_INFINITY;
        t = argmax(&masked);
    }
    Ok(t)
}

/// The tokens of a rendering that starts a context: its BOS text (if it prints one) replaced
/// by the model's BOS token.
fn context_tokens(
    session: &dyn Session,
    template: &ChatTemplate,
    text: &str,
) -> Result<Vec<Token>, TaskError> {
    let rest = match template.bos_token.as_str() {
        "" => text,
        bos => text.strip_prefix(bos).unwrap_or(text),
    };
    let mut tokens: Vec<Token> = session.bos().into_iter().collect();
    tokens.extend(session.tokenize_special(rest)?);
    Ok(tokens)
}

/// Replays `conversations` on `session`. `epoch` is what `start_s`/`end_s` count from;
/// `phases` gets prefill/decode/idle marks for the probes; `progress` hears every turn.
pub fn run(
    session: &mut dyn Session,
    spec: &ReplaySpec,
    template: &ChatTemplate,
    conversations: &[Vec<String>],
    epoch: Instant,
    phases: Option<&PhaseLog>,
    progress: &mut dyn FnMut(&Turn),
) -> Result<Replay, TaskError> {
    let mark = |p: Phase| {
        if let Some(log) = phases {
            log.mark(p)
        }
    };
    let n_ctx = spec.n_ctx.min(session.n_ctx());
    let budget = spec.budget();
    let fixed = spec.fixed_output.is_some();
    let mut out = Replay {
        file: spec.data.to_string(),
        template: template.source.clone(),
        n_ctx,
        max_output: spec.max_output,
        fixed_output: spec.fixed_output,
        think_time_s: spec.think_time_s,
        conversation_gap_s: spec.conversation_gap_s,
        ..Replay::default()
    };
    let take = spec.max_conversations.unwrap_or(usize::MAX);
    for (ci, prompts) in conversations.iter().take(take).enumerate() {
        if ci > 0 && spec.conversation_gap_s > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(spec.conversation_gap_s));
        }
        session.clear()?;
        let per_conversation_peak = crate::memory::reset_peak();
        let mut totals = ConversationTotals {
            conversation: ci,
            start_s: epoch.elapsed().as_secs_f64(),
            ..ConversationTotals::default()
        };
        let mut history: Vec<Message> = Vec::new();
        for (ti, prompt) in prompts.iter().enumerate() {
            if ti > 0 && spec.think_time_s > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(spec.think_time_s));
            }
            let here = |why: String| {
                TaskError::Input(format!(
                    "{}: conversation {ci}, prompt {ti}: {why}",
                    spec.data
                ))
            };
            let user = Message::user(prompt);
            // What this turn prefills, and whether the context starts over.
            let mut fresh = ti == 0;
            let mut tokens = if ti == 0 {
                let text = template.render(std::slice::from_ref(&user), true)?;
                context_tokens(session, template, &text)?
            } else {
                let mut marked = history.clone();
                if let Some(last) = marked.last_mut() {
                    last.content = ANSWER_MARKER.to_string();
                }
                marked.push(user.clone());
                let text = template.render(&marked, true)?;
                let after = text
                    .split_once(ANSWER_MARKER)
                    .map(|(_, a)| a)
                    .ok_or_else(|| {
                        here("the chat template does not print the previous answer".into())
                    })?;
                session.tokenize_special(after)?
            };
            let mut dropped = 0;
            if session.n_past() * (!fresh as usize) + tokens.len() + budget > n_ctx {
                // Drop the oldest turns until the rest, and this prompt, fit.
                let mut fitted = None;
                for k in (if fresh { 0 } else { 1 })..=history.len() / 2 {
                    let mut window: Vec<Message> = history[2 * k..].to_vec();
                    window.push(user.clone());
                    let text = template.render(&window, true)?;
                    let t = context_tokens(session, template, &text)?;
                    if t.len() + budget <= n_ctx {
                        fitted = Some((k, t));
                        break;
                    }
                }
                let Some((k, t)) = fitted else {
                    return Err(here(format!(
                        "the prompt is {} tokens with its template; with an output budget of \
                         {budget} it does not fit a context of {n_ctx}",
                        context_tokens(
                            session,
                            template,
                            &template.render(std::slice::from_ref(&user), true)?
                        )?
                        .len()
                    )));
                };
                history.drain(..2 * k);
                dropped = k;
                tokens = t;
                fresh = true;
            }
            if fresh {
                session.clear()?;
            }
            let mut turn = Turn {
                conversation: ci,
                turn: ti,
                input_tokens: tokens.len(),
                context_before: session.n_past(),
                dropped_turns: dropped,
                start_s: epoch.elapsed().as_secs_f64(),
                ..Turn::default()
            };
            mark(Phase::Prefill);
            let start = Instant::now();
            session.prefill(&tokens)?;
            turn.prefill_ns = nanos(start.elapsed());
            let mut next = choose(session, fixed)?;
            turn.ttft_ns = nanos(start.elapsed());
            mark(Phase::Decode);
            let mut answer = Vec::with_capacity(budget);
            turn.stop = loop {
                if !fixed && session.is_end_of_generation(next) {
                    break "end";
                }
                answer.push(next);
                let step = Instant::now();
                session.decode(next)?;
                let full = answer.len() == budget;
                if !full {
                    next = choose(session, fixed)?;
                }
                turn.decode_ns += nanos(step.elapsed());
                if full {
                    break if fixed { "fixed" } else { "cap" };
                }
            }
            .to_string();
            mark(Phase::Idle);
            turn.end_s = epoch.elapsed().as_secs_f64();
            turn.output_tokens = answer.len();
            turn.prefill_tok_s = tokens.len() as f64 / (turn.prefill_ns.max(1) as f64 / 1e9);
            turn.decode_tok_s = if answer.is_empty() {
                0.0
            } else {
                answer.len() as f64 / (turn.decode_ns.max(1) as f64 / 1e9)
            };
            let text = session.detokenize(&answer)?;
            turn.answer_head = text.chars().take(80).collect();
            history.push(user);
            history.push(Message::assistant(&text));
            totals.turns += 1;
            totals.input_tokens += turn.input_tokens;
            totals.output_tokens += turn.output_tokens;
            totals.busy_s += (turn.ttft_ns + turn.decode_ns) as f64 / 1e9;
            progress(&turn);
            out.turns.push(turn);
        }
        totals.end_s = epoch.elapsed().as_secs_f64();
        totals.wall_s = totals.end_s - totals.start_s;
        totals.peak_rss_bytes = crate::memory::peak_rss_bytes();
        totals.peak_rss_per_conversation = per_conversation_peak;
        out.conversations.push(totals);
    }
    Ok(out)
}
