//! The paper's workloads beside the timed pp/tg cases: conversation replay (the sustained run
//! is a replay of one long conversation), perplexity of a text file, KL-divergence from a
//! reference model, and multiple-choice accuracy. A task runs once per model × backend, at the sweep's last point (the shipped
//! suite's all-cores), on a session of its own; its result goes into `summary.json`'s
//! `tasks`, the stdout report and the HTML page. Replay turns are streamed as they are
//! measured (`task_turn` events), so a lost device loses none of them.

pub mod chat;
pub mod choice;
pub mod kl_divergence;
pub mod log_probs;
pub mod perplexity;
pub mod replay;
pub mod report;
pub mod run;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::backend::{BackendError, ModelInfo};
use crate::model::ModelSpec;
use crate::params::Params;

/// Why a task could not run or finish; every message names the file or the place.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Dataset(#[from] crate::datasets::DatasetError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// A task as asked for on the command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    Replay(replay::ReplaySpec),
    Perplexity(perplexity::PerplexitySpec),
    KlDivergence(kl_divergence::KlDivergenceSpec),
    MultipleChoice(choice::ChoiceSpec),
}

/// A path's file name (the whole path when it has none): how reports name files.
pub(crate) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

impl Task {
    /// The task's part of a case id: `replay:conversations.json`,
    /// `perplexity:tinyshakespeare.txt@512`, `kl-divergence:f32.kld@512`,
    /// `choice:openbookqa.jsonl`.
    pub fn label(&self) -> String {
        match self {
            Task::Replay(s) => format!("replay:{}", s.data.file_name()),
            Task::Perplexity(s) => format!("perplexity:{}@{}", s.data.file_name(), s.n_ctx),
            Task::KlDivergence(s) => format!("kl-divergence:{}@{}", s.file_name(), s.n_ctx),
            Task::MultipleChoice(s) => format!("choice:{}", s.data.file_name()),
        }
    }

    /// Context positions the task's session needs.
    pub fn n_ctx(&self) -> usize {
        match self {
            Task::Replay(s) => s.n_ctx,
            Task::Perplexity(s) => s.n_ctx,
            Task::KlDivergence(s) => s.n_ctx,
            // Questions are short; TruthfulQA's six-shot prompt and a long choice fit in 1024.
            Task::MultipleChoice(_) => 1024,
        }
    }
}

/// What a task measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskResult {
    Replay(replay::Replay),
    Perplexity(perplexity::Perplexity),
    KlDivergence(kl_divergence::KlDivergence),
    MultipleChoice(choice::ChoiceResult),
}

/// One task's record in `summary.json` and in the `task_end` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// `model/task/backend params`, like a case id.
    pub id: String,
    pub backend: String,
    pub backend_version: String,
    pub model: ModelSpec,
    pub model_info: ModelInfo,
    pub params: Params,
    pub load_ns: u64,
    /// The process's peak resident memory when the task ended (its own when the kernel let
    /// melt reset the peak before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    #[serde(default)]
    pub peak_rss_per_task: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_j: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_max_c: Option<f64>,
    pub result: TaskResult,
}
