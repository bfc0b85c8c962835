//! Chat templates: how a conversation becomes the text a chat model was trained on.
//!
//! The template is Jinja, as Hugging Face and llama.cpp keep it, found in this order: the one
//! asked for by `--chat-template` (a built-in name or a file); the GGUF's
//! `tokenizer.chat_template`; `chat_template.jinja` or `tokenizer_config.json`'s
//! `chat_template` beside the model; else melt's built-in for the architecture (Gemma's turn
//! format for `gemma*`, ChatML otherwise). The report says which was used: many GGUFs (the
//! shipped Gemma 3 270M among them) carry none.
//!
//! Rendering follows transformers' environment: blocks trimmed and left-stripped,
//! `raise_exception`, Python string methods (`.strip()`, `.startswith()`...).

use std::path::Path;

use serde::Serialize;

use crate::tasks::TaskError;

/// Gemma's turns: `<start_of_turn>user|model\n…<end_of_turn>\n`, BOS first.
const GEMMA: &str = "{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\\n' + (message['content'] | trim) + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}";
/// ChatML (Qwen, SmolLM, many fine-tunes).
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
/// Llama 3's header format.
const LLAMA3: &str = "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim) + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

/// The built-in templates by name.
pub const BUILT_IN: [(&str, &str); 3] = [("gemma", GEMMA), ("chatml", CHATML), ("llama3", LLAMA3)];

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn user(content: &str) -> Message {
        Message {
            role: "user".into(),
            content: content.into(),
        }
    }

    pub fn assistant(content: &str) -> Message {
        Message {
            role: "assistant".into(),
            content: content.into(),
        }
    }
}

/// A template and the special-token texts it may print.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    /// Where it came from, for the report (`GGUF tokenizer.chat_template`, a path,
    /// `built-in gemma (the model has none)`).
    pub source: String,
    pub template: String,
    pub bos_token: String,
    pub eos_token: String,
}

impl ChatTemplate {
    /// The template for the model at `model` (see the module's order); `chosen` is
    /// `--chat-template`'s value, a built-in name or a file.
    pub fn for_model(model: &Path, chosen: Option<&str>) -> Result<ChatTemplate, TaskError> {
        let (bos_token, eos_token, from_model, arch) = model_side(model);
        let built_in = |name: &str, why: &str| {
            BUILT_IN
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(n, t)| ChatTemplate {
                    source: format!("built-in {n}{why}"),
                    template: t.to_string(),
                    bos_token: bos_token.clone(),
                    eos_token: eos_token.clone(),
                })
        };
        if let Some(c) = chosen {
            if let Some(t) = built_in(c, "") {
                return Ok(t);
            }
            let path = Path::new(c);
            let template = std::fs::read_to_string(path).map_err(|e| {
                TaskError::Input(format!(
                    "--chat-template {c}: neither a built-in ({}) nor a readable file: {e}",
                    BUILT_IN.map(|(n, _)| n).join(", ")
                ))
            })?;
            return Ok(ChatTemplate {
                source: path.display().to_string(),
                template,
                bos_token,
                eos_token,
            });
        }
        if let Some((source, template)) = from_model {
            return Ok(ChatTemplate {
                source,
                template,
                bos_token,
                eos_token,
            });
        }
        let name = if arch.starts_with("gemma") {
            "gemma"
        } else {
            "chatml"
        };
        let why = format!(
            " (the model has no chat template; architecture `{}`)",
            if arch.is_empty() { "unknown" } else { &arch }
        );
        Ok(built_in(name, &why).expect("a built-in name"))
    }

    /// The conversation as text; with `add_generation_prompt`, ending where the model's
    /// answer begins.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TaskError> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, _> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        });
        // Llama 3.x templates print today's date; transformers passes strftime_now.
        env.add_function("strftime_now", |_format: String| today());
        let bad = |e: minijinja::Error| {
            TaskError::Input(format!("chat template ({}): {e:#}", self.source))
        };
        env.add_template("chat", &self.template).map_err(bad)?;
        env.get_template("chat")
            .map_err(bad)?
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(bad)
    }
}

/// Today as `26 Nov 2026` (the `%d %b %Y` templates ask `strftime_now` for), from the
/// run's own timestamp.
fn today() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let stamp = crate::timestamp::timestamp_id();
    let (y, m, d) = (&stamp[..4], &stamp[5..7], &stamp[8..10]);
    let month = m
        .parse::<usize>()
        .map_or("Jan", |m| MONTHS[(m.max(1) - 1) % 12]);
    format!("{d} {month} {y}")
}

/// What the model file says: BOS and EOS texts, a template with its source, the architecture.
fn model_side(model: &Path) -> (String, String, Option<(String, String)>, String) {
    if let Ok(g) = crate::gguf::Gguf::open(model) {
        let token = |key: &str| -> String {
            let id = g.get(key).and_then(|v| v.as_u64());
            let tokens = g.get("tokenizer.ggml.tokens").and_then(|v| v.as_array());
            id.zip(tokens)
                .and_then(|(id, t)| t.get(id as usize))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let template = g
            .get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .map(|t| ("GGUF tokenizer.chat_template".to_string(), t.to_string()));
        return (
            token("tokenizer.ggml.bos_token_id"),
            token("tokenizer.ggml.eos_token_id"),
            template,
            g.architecture().unwrap_or_default().to_string(),
        );
    }
    // Hugging Face's layout beside an ONNX or TorchScript file.
    let json = |name: &str| -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(model.with_file_name(name)).ok()?).ok()
    };
    let config = json("tokenizer_config.json").unwrap_or_default();
    let text = |key: &str| -> String {
        match config.get(key) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        }
    };
    let jinja = model.with_file_name("chat_template.jinja");
    let template = match std::fs::read_to_string(&jinja) {
        Ok(t) => Some((jinja.display().to_string(), t)),
        Err(_) => match config.get("chat_template") {
            Some(serde_json::Value::String(t)) => Some((
                format!(
                    "{} chat_template",
                    model.with_file_name("tokenizer_config.json").display()
                ),
                t.clone(),
            )),
            // A list of named templates: the default one.
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template").and_then(|t| t.as_str()))
                .map(|t| {
                    (
                        "tokenizer_config.json chat_template (default)".to_string(),
                        t.to_string(),
                    )
                }),
            _ => None,
        },
    };
    let arch = json("config.json")
        .and_then(|c| {
            c.get("model_type")
                .and_then(|m| m.as_str())
                .map(String::from)
        })
        .unwrap_or_default();
    (text("bos_token"), text("eos_token"), template, arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(name: &str) -> ChatTemplate {
        let t = BUILT_IN.iter().find(|(n, _)| *n == name).unwrap().1;
        ChatTemplate {
            source: name.into(),
            template: t.into(),
            bos_token: "<bos>".into(),
            eos_token: "<eos>".into(),
        }
    }

    #[test]
    fn gemma_turns_render_as_gemma_writes_them() {
        let t = template("gemma");
        let one = t.render(&[Message::user(" Hi there \n")], true).unwrap();
        assert_eq!(
            one,
            "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n"
        );
        let two = t
            .render(
                &[
                    Message::user("Hi"),
                    Message::assistant("Hello!"),
                    Message::user("Bye"),
                ],
                false,
            )
            .unwrap();
        assert_eq!(
            two,
            "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n"
        );
    }

    #[test]
    fn hugging_face_style_templates_render() {
        // The shape of real templates: a namespace, raise_exception, Python string methods,
        // trimmed blocks.
        let t = ChatTemplate {
            source: "test".into(),
            template: "{% for m in messages %}\n{% if m['role'] not in ['user', 'assistant'] %}{{ raise_exception('bad role ' + m['role']) }}{% endif %}\n{{ '[' + m['role'].upper() + '] ' + m['content'].strip() }}\n{% endfor %}".into(),
            bos_token: String::new(),
            eos_token: String::new(),
        };
        assert_eq!(
            t.render(&[Message::user("  a "), Message::assistant("b")], false)
                .unwrap(),
            "[USER] a\n[ASSISTANT] b\n"
        );
        let e = t
            .render(
                &[Message {
                    role: "tool".into(),
                    content: "x".into(),
                }],
                false,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad role tool") && e.contains("test"), "{e}");
        let broken = ChatTemplate {
            template: "{% for m in messages %}".into(),
            ..t
        };
        let e = broken.render(&[], false).unwrap_err().to_string();
        assert!(e.contains("chat template (test)"), "{e}");
        // Llama 3.x's date line: today, from the clock.
        let dated = ChatTemplate {
            template: "{{ strftime_now('%d %b %Y') }}".into(),
            ..broken
        };
        let today = dated.render(&[], false).unwrap();
        let year = &crate::timestamp::timestamp_id()[..4];
        assert!(
            regex::Regex::new(r"^\d\d [A-Z][a-z]{2} \d{4}$")
                .unwrap()
                .is_match(&today)
                && today.ends_with(year),
            "{today}"
        );
    }

    #[test]
    fn a_template_is_found_or_chosen_and_says_where_from() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.onnx");
        std::fs::write(&model, b"not read").unwrap();
        let t = ChatTemplate::for_model(&model, None).unwrap();
        assert!(
            t.source
                .starts_with("built-in chatml (the model has no chat template"),
            "{}",
            t.source
        );
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"model_type": "gemma3"}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"bos_token": {"content": "<s>"}, "eos_token": "</s>", "chat_template": "{{ bos_token }}{{ messages[0]['content'] }}"}"#,
        )
        .unwrap();
        let t = ChatTemplate::for_model(&model, None).unwrap();
        assert!(
            t.source.ends_with("tokenizer_config.json chat_template"),
            "{}",
            t.source
        );
        assert_eq!(t.render(&[Message::user("x")], true).unwrap(), "<s>x");
        std::fs::write(dir.path().join("chat_template.jinja"), "J{{ eos_token }}").unwrap();
        let t = ChatTemplate::for_model(&model, None).unwrap();
        assert_eq!(t.render(&[], true).unwrap(), "J</s>");
        let t = ChatTemplate::for_model(&model, Some("llama3")).unwrap();
        assert_eq!(t.source, "built-in llama3");
        let e = ChatTemplate::for_model(&model, Some("/no/such.jinja"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/no/such.jinja") && e.contains("gemma, chatml, llama3"),
            "{e}"
        );
        std::fs::remove_file(dir.path().join("chat_template.jinja")).unwrap();
        std::fs::remove_file(dir.path().join("tokenizer_config.json")).unwrap();
        let t = ChatTemplate::for_model(&model, None).unwrap();
        assert!(t.source.starts_with("built-in gemma"), "{}", t.source);
    }
}
