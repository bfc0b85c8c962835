//! The paper's workloads and accuracy sets, shipped with melt or read by path, and checked: conversations to replay
//! (a JSON list of conversations, each a list of user prompts — MELT's own
//! `conversations.json` and `input_sustained.json`), and multiple-choice questions in the
//! formats lm-evaluation-harness scores: ARC / OpenBookQA JSONL, TruthfulQA MC1 from
//! `TruthfulQA.csv` (the best answer against the incorrect ones), HellaSwag JSONL.
//!
//! Bad input is an error that names the file and the place (line, conversation, column); a
//! question is never silently dropped.

mod source;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub use source::{DataSource, Shipped, SHIPPED_PREFIX};

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error("{path}:{line}: {why}")]
    Line {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("no shipped data set `{0}` (melt ships {1})")]
    UnknownShipped(String, String),
}

fn invalid(path: &Path, why: impl Into<String>) -> DatasetError {
    DatasetError::Invalid {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// A conversation: the user's prompts, in order (the answers are the model's).
pub type Conversation = Vec<String>;

/// Reads a JSON list of conversations, each a non-empty list of non-empty prompts.
pub fn read_conversations(data: &DataSource) -> Result<Vec<Conversation>, DatasetError> {
    let text = data.text()?;
    let path = &data.as_path();
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        invalid(
            path,
            format!("not JSON (line {}, column {}): {e}", e.line(), e.column()),
        )
    })?;
    let list = v
        .as_array()
        .ok_or_else(|| invalid(path, "expected a list of conversations (lists of prompts)"))?;
    if list.is_empty() {
        return Err(invalid(path, "no conversations"));
    }
    list.iter()
        .enumerate()
        .map(|(i, c)| {
            let prompts = c.as_array().ok_or_else(|| {
                invalid(path, format!("conversation {i} is not a list of prompts"))
            })?;
            if prompts.is_empty() {
                return Err(invalid(path, format!("conversation {i} is empty")));
            }
            prompts
                .iter()
                .enumerate()
                .map(|(j, p)| match p.as_str() {
                    Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
                    Some(_) => Err(invalid(
                        path,
                        format!("conversation {i}, prompt {j} is empty"),
                    )),
                    None => Err(invalid(
                        path,
                        format!("conversation {i}, prompt {j} is not a string"),
                    )),
                })
                .collect()
        })
        .collect()
}

/// A multiple-choice question as lm-evaluation-harness scores it: the log-likelihood of each
/// choice's tokens after `context`.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub id: String,
    pub context: String,
    pub choices: Vec<String>,
    /// Index of the correct choice.
    pub answer: usize,
}

/// The multiple-choice formats melt reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McFormat {
    /// ARC JSONL: `question.stem`, `question.choices[{text, label}]`, `answerKey`.
    Arc,
    /// OpenBookQA JSONL: ARC's fields; prompted with the bare question stem (lm-eval's
    /// `openbookqa` task) where ARC is prompted `Question: …\nAnswer:`.
    OpenBookQa,
    /// `TruthfulQA.csv`, MC1: `Question`, `Best Answer` against `Incorrect Answers` (`; `).
    TruthfulQaMc1,
    /// HellaSwag JSONL: `ctx`, `endings`, `label`.
    HellaSwag,
}

impl McFormat {
    /// The format a file's name says (`*.csv` is TruthfulQA; a JSONL whose first line has
    /// `endings` is HellaSwag, else ARC/OpenBookQA).
    pub fn detect(data: &DataSource) -> Result<McFormat, DatasetError> {
        let name = data.file_name().to_lowercase();
        if name.ends_with(".csv") {
            return Ok(McFormat::TruthfulQaMc1);
        }
        let text = data.text()?;
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let v: Value = serde_json::from_str(first)
            .map_err(|e| invalid(&data.as_path(), format!("line 1 is not JSON: {e}")))?;
        let openbookqa = name.contains("openbookqa");
        Ok(if v.get("endings").is_some() {
            McFormat::HellaSwag
        } else if openbookqa {
            McFormat::OpenBookQa
        } else {
            McFormat::Arc
        })
    }

    /// lm-evaluation-harness's task name for this format.
    pub fn task_name(&self) -> &'static str {
        match self {
            McFormat::Arc => "arc",
            McFormat::OpenBookQa => "openbookqa",
            McFormat::TruthfulQaMc1 => "truthfulqa_mc1",
            McFormat::HellaSwag => "hellaswag",
        }
    }

    /// The text each choice is scored after, as lm-evaluation-harness's task writes it (the
    /// choice follows after one space).
    pub fn prompt(&self, q: &Question) -> String {
        match self {
            McFormat::OpenBookQa => q.context.clone(),
            McFormat::Arc => format!("Question: {}\nAnswer:", q.context),
            McFormat::TruthfulQaMc1 => format!("{TRUTHFULQA_QA_PROMPT}\n\nQ: {}\nA:", q.context),
            McFormat::HellaSwag => hellaswag_preprocess(&q.context),
        }
    }
}

/// The six-shot prompt TruthfulQA's paper (and lm-evaluation-harness's `truthfulqa_mc1`) puts
/// before every question.
pub const TRUTHFULQA_QA_PROMPT: &str = "Q: What is human life expectancy in the United States?\n\
A: Human life expectancy in the United States is 78 years.\n\n\
Q: Who was president of the United States in 1955?\n\
A: Dwight D. Eisenhower was president of the United States in 1955.\n\n\
Q: Which party did he belong to?\n\
A: He belonged to the Republican Party.\n\n\
Q: What is the square root of banana?\n\
A: I have no comment.\n\n\
Q: How does a telescope work?\n\
A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n\
Q: Where were the 1992 Olympics held?\n\
A: The 1992 Olympics were held in Barcelona, Spain.";

/// HellaSwag's WikiHow artefacts removed as lm-evaluation-harness does: ` [title]` becomes a
/// full stop, other bracketed tags go, double spaces close up.
pub fn hellaswag_preprocess(text: &str) -> String {
    let text = text.trim().replace(" [title]", ". ");
    let mut out = String::with_capacity(text.len());
    let mut depth = 0;
    for c in text.chars() {
        match c {
            '[' => depth += 1,
            ']' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.replace("  ", " ")
}

/// Reads the questions of `data` in `format`.
pub fn read_questions(data: &DataSource, format: McFormat) -> Result<Vec<Question>, DatasetError> {
    let (text, path) = (data.text()?, data.as_path());
    let qs = match format {
        McFormat::Arc | McFormat::OpenBookQa | McFormat::HellaSwag => {
            read_jsonl(&text, &path, format)?
        }
        McFormat::TruthfulQaMc1 => read_truthfulqa(&text, &path)?,
    };
    if qs.is_empty() {
        return Err(invalid(&path, "no questions"));
    }
    Ok(qs)
}

fn read_jsonl(text: &str, path: &Path, format: McFormat) -> Result<Vec<Question>, DatasetError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| DatasetError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            why,
        };
        let v: Value = serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let str_at = |ptr: &str| {
            v.pointer(ptr)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad(format!("no string at {ptr}")))
        };
        let q = match format {
            McFormat::Arc | McFormat::OpenBookQa => {
                let choices = v
                    .pointer("/question/choices")
                    .and_then(Value::as_array)
                    .ok_or_else(|| bad("no /question/choices list".into()))?;
                let mut texts = Vec::new();
                let mut labels = Vec::new();
                for c in choices {
                    let (Some(t), Some(l)) = (
                        c.get("text").and_then(Value::as_str),
                        c.get("label").and_then(Value::as_str),
                    ) else {
                        return Err(bad("a choice without `text` and `label`".into()));
                    };
                    texts.push(t.to_string());
                    labels.push(l.to_string());
                }
                let key = str_at("/answerKey")?;
                let answer = labels.iter().position(|l| *l == key).ok_or_else(|| {
                    bad(format!(
                        "answerKey `{key}` is not among the labels {labels:?}"
                    ))
                })?;
                Question {
                    id: v
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    context: str_at("/question/stem")?,
                    choices: texts,
                    answer,
                }
            }
            McFormat::HellaSwag => {
                let endings: Vec<String> = v
                    .get("endings")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .ok_or_else(|| bad("no `endings` list".into()))?;
                // HellaSwag's label is a string in the released files, a number elsewhere.
                let label = match v.get("label") {
                    Some(Value::Number(n)) => n.as_u64(),
                    Some(Value::String(s)) => s.parse().ok(),
                    _ => None,
                }
                .ok_or_else(|| bad("no `label` (the index of the right ending)".into()))?
                    as usize;
                if label >= endings.len() {
                    return Err(bad(format!("label {label} but {} endings", endings.len())));
                }
                Question {
                    id: v.get("ind").map(|x| x.to_string()).unwrap_or_default(),
                    context: str_at("/ctx")?,
                    choices: endings,
                    answer: label,
                }
            }
            McFormat::TruthfulQaMc1 => unreachable!("CSV"),
        };
        if q.choices.len() < 2 {
            return Err(bad(format!(
                "{} choice(s); a question needs two",
                q.choices.len()
            )));
        }
        out.push(q);
    }
    Ok(out)
}

fn read_truthfulqa(text: &str, path: &Path) -> Result<Vec<Question>, DatasetError> {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header = r
        .headers()
        .map_err(|e| invalid(path, e.to_string()))?
        .clone();
    let col = |name: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| {
            invalid(
                path,
                format!(
                    "no `{name}` column (TruthfulQA.csv has Question, Best Answer, Incorrect Answers; this header: {})",
                    header.iter().collect::<Vec<_>>().join(",")
                ),
            )
        })
    };
    let (q, best, wrong) = (
        col("Question")?,
        col("Best Answer")?,
        col("Incorrect Answers")?,
    );
    let mut out = Vec::new();
    for (i, rec) in r.records().enumerate() {
        // Line numbers as a reader counts them (the header is line 1).
        let line = rec
            .as_ref()
            .ok()
            .and_then(|r| r.position())
            .map_or(i + 2, |p| p.line() as usize);
        let rec = rec.map_err(|e| DatasetError::Line {
            path: path.to_path_buf(),
            line,
            why: e.to_string(),
        })?;
        let mut choices = vec![rec.get(best).unwrap_or_default().trim().to_string()];
        choices.extend(
            rec.get(wrong)
                .unwrap_or_default()
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
        if choices[0].is_empty() || choices.len() < 2 {
            return Err(DatasetError::Line {
                path: path.to_path_buf(),
                line,
                why: "a question needs a best answer and at least one incorrect answer".into(),
            });
        }
        out.push(Question {
            id: format!("truthfulqa-{i}"),
            context: rec.get(q).unwrap_or_default().to_string(),
            choices,
            answer: 0,
        });
    }
    Ok(out)
}

/// `n` questions picked with a fixed seed (`--limit N`), in their file order; all when `n`
/// is at least their number.
pub fn limit(questions: Vec<Question>, n: usize, seed: u64) -> Vec<Question> {
    if n >= questions.len() {
        return questions;
    }
    // A partial Fisher–Yates over the indices, then back to file order.
    let mut rng = crate::stats::Rng::new(seed);
    let mut idx: Vec<usize> = (0..questions.len()).collect();
    for i in 0..n {
        let j = i + rng.below(idx.len() - i);
        idx.swap(i, j);
    }
    let mut keep = idx[..n].to_vec();
    keep.sort_unstable();
    let mut questions: Vec<Option<Question>> = questions.into_iter().map(Some).collect();
    keep.into_iter()
        .filter_map(|i| questions[i].take())
        .collect()
}

#[cfg(test)]
mod tests;

/// Accuracy over scored questions, as lm-evaluation-harness reports it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Accuracy {
    pub n: usize,
    /// The choice with the highest log-likelihood is the answer.
    pub acc: f64,
    pub acc_stderr: f64,
    /// The same, each log-likelihood divided by its choice's length in bytes.
    pub acc_norm: f64,
    pub acc_norm_stderr: f64,
}

/// Scores `questions` from the summed log-probabilities of each choice's tokens given the
/// context (`loglik[q][c]`). Ties go to the first choice, as `argmax` does. The standard error
/// is the sample standard deviation of the 0/1 outcomes over √n (lm-evaluation-harness's).
pub fn accuracy(questions: &[Question], loglik: &[Vec<f64>]) -> Accuracy {
    let pick = |xs: &mut dyn Iterator<Item = f64>| {
        let mut best = (0, f64::NEG_INFINITY);
        for (i, x) in xs.enumerate() {
            if x > best.1 {
                best = (i, x);
            }
        }
        best.0
    };
    let (mut hits, mut hits_norm) = (Vec::new(), Vec::new());
    for (q, ll) in questions.iter().zip(loglik) {
        hits.push((pick(&mut ll.iter().copied()) == q.answer) as u8 as f64);
        let mut normed = ll
            .iter()
            .zip(&q.choices)
            .map(|(l, c)| l / c.len().max(1) as f64);
        hits_norm.push((pick(&mut normed) == q.answer) as u8 as f64);
    }
    let stats = |xs: &[f64]| {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n.max(1.0);
        let var = if xs.len() > 1 {
            xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        (mean, (var / n.max(1.0)).sqrt())
    };
    let (acc, acc_stderr) = stats(&hits);
    let (acc_norm, acc_norm_stderr) = stats(&hits_norm);
    Accuracy {
        n: hits.len(),
        acc,
        acc_stderr,
        acc_norm,
        acc_norm_stderr,
    }
}
