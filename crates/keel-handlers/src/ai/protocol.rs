//! The chat-completions protocol as the `ai` handler speaks it (the request it sends, the
//! part of the answer it reads) and the details of the events it records.

use serde::{Deserialize, Serialize};
use serde_json::Value;

// The events' details, serialized as they are borrowed (their keys in order, as a JSON
// object's are printed).

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Requested<'a> {
    pub(super) model: &'a str,
    pub(super) prompt_chars: usize,
    pub(super) url: &'a str,
}

#[derive(Serialize)]
pub(super) struct Answered {
    pub(super) bytes: usize,
    pub(super) status: u16,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Retried {
    pub(super) retry_after_ms: u64,
}

/// An event's detail: its JSON (plain structs: serializing cannot fail).
pub(super) fn detail(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A chat-completions request, serialized as it is borrowed.
#[derive(Serialize)]
pub(super) struct Request<'a> {
    pub(super) model: &'a str,
    pub(super) messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) response_format: Option<Value>,
}

#[derive(Serialize)]
pub(super) struct Message<'a> {
    pub(super) role: &'a str,
    pub(super) content: &'a str,
}

/// What a chat-completions answer is read for (the rest is skipped, not built).
#[derive(Deserialize)]
pub(super) struct Answer {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<AnswerMessage>,
}

#[derive(Deserialize)]
struct AnswerMessage {
    #[serde(default)]
    content: Option<String>,
}

impl Answer {
    /// Prompt and completion tokens (0 where the provider gives none).
    pub(super) fn tokens(&self) -> (i64, i64) {
        let count = |v: &Option<Value>| v.as_ref().and_then(Value::as_i64).unwrap_or(0);
        self.usage
            .as_ref()
            .map(|u| (count(&u.prompt_tokens), count(&u.completion_tokens)))
            .unwrap_or((0, 0))
    }

    /// `choices[0].message.content`.
    pub(super) fn into_content(self) -> Option<String> {
        self.choices.into_iter().next()?.message?.content
    }
}

/// Token counts, read leniently (a provider's odd value counts as none).
#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<Value>,
    #[serde(default)]
    completion_tokens: Option<Value>,
}

/// The JSON inside a Markdown code fence, which models often add.
pub(super) fn strip_fence(s: &str) -> &str {
    let t = s.trim();
    t.strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|r| r.strip_suffix("```"))
        .map(str::trim)
        .unwrap_or(t)
}
