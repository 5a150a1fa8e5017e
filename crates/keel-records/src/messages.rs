//! What the `email` and `ai` handlers did: email logs (one per send attempt), AI runs (one
//! per call attempt) with their messages and events, and AI tasks (an AI job, over its runs).
//! Recipients and message contents arrive masked: the handlers mask before writing.

use serde::{Deserialize, Serialize};

/// An email send attempt to record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewEmail {
    /// The queue's tenant, if bound.
    pub tenant_id: Option<String>,
    /// Queue.
    pub queue: String,
    /// Job id.
    pub job_id: String,
    /// Job name.
    pub job_name: String,
    /// Attempt, from 1.
    pub attempt: i64,
    /// Template name.
    pub template: String,
    /// Recipient(s), masked per the handler's setting.
    pub recipient: String,
    /// Rendered subject.
    pub subject: String,
    /// `sent`, `deferred` (a temporary failure, retried) or `failed` (permanent, or no attempt
    /// left).
    pub status: String,
    /// The SMTP reply code, when the server answered.
    pub smtp_code: Option<i64>,
    /// The SMTP reply text.
    pub smtp_reply: Option<String>,
    /// The Message-ID header sent.
    pub message_id: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Who asked for it, when an owner sent it through the API.
    pub actor: Option<String>,
    /// The job's trace id.
    pub trace_id: String,
    /// When the attempt started, ms.
    pub created_at: i64,
    /// How long it took.
    pub duration_ms: i64,
}

/// A recorded email send attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailLog {
    /// Id.
    pub id: i64,
    /// The rest, as recorded.
    #[serde(flatten)]
    pub email: NewEmail,
}

/// Filters of email logs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmailFilter {
    /// Status.
    pub status: Option<String>,
    /// Template.
    pub template: Option<String>,
    /// Queue.
    pub queue: Option<String>,
    /// Job id.
    pub job_id: Option<String>,
    /// Created from, ms.
    pub from: Option<i64>,
    /// Created until, ms.
    pub to: Option<i64>,
}

/// One message of an AI call: the prompt's (`system`, `user`) and the answer (`assistant`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAiMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The content, masked and bounded.
    pub content: String,
    /// Whether the content was cut to the bound (stored only when it was: the readers take
    /// a missing one as false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One event of an AI call's trace (`request`, `response`, `retry`, ...). Its last,
/// `completed` or `failed` with the call's tokens, cost and time, is the recorded call itself:
/// the events listing makes it from the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAiEvent {
    /// When, ms.
    pub at: i64,
    /// What happened.
    pub kind: String,
    /// Its detail (model, tokens, cost, duration, status, error).
    pub message: String,
}

/// An AI call attempt to record, with its messages and events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewAiRun {
    /// The queue's tenant, if bound.
    pub tenant_id: Option<String>,
    /// Queue.
    pub queue: String,
    /// Job id.
    pub job_id: String,
    /// Job name (the task kind: `generate_article_draft`, ...).
    pub job_name: String,
    /// Attempt, from 1.
    pub attempt: i64,
    /// Provider (`openrouter`, `openai`, ...).
    pub provider: String,
    /// Model asked for.
    pub model: String,
    /// `completed`, `retrying` (a temporary failure) or `failed`.
    pub status: String,
    /// Prompt tokens (the provider's `usage`).
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Cost from the configured price table, US dollars.
    pub cost_usd: f64,
    /// Time to the answer.
    pub latency_ms: i64,
    /// The provider's HTTP status, when it answered.
    pub http_status: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// The job's trace id.
    pub trace_id: String,
    /// Started, ms.
    pub started_at: i64,
    /// Finished, ms.
    pub finished_at: i64,
    /// The prompt's messages and the answer.
    #[serde(skip)]
    pub messages: Vec<NewAiMessage>,
    /// The trace, up to the call's end (which is this record).
    #[serde(skip)]
    pub events: Vec<NewAiEvent>,
}

/// A recorded AI call attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AiRun {
    /// Id.
    pub id: i64,
    /// The rest, as recorded (without messages and events: see the messages and event-log
    /// listings).
    #[serde(flatten)]
    pub run: NewAiRun,
    /// Prompt and completion tokens.
    pub total_tokens: i64,
}

/// A recorded AI message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AiMessage {
    /// Id.
    pub id: i64,
    /// Its run.
    pub run_id: i64,
    /// Order within the run, from 0.
    pub position: i64,
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The content, masked and bounded.
    pub content: String,
    /// Whether the content was cut.
    pub truncated: bool,
    /// When, ms.
    pub created_at: i64,
}

/// A recorded AI event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AiEvent {
    /// Id.
    pub id: i64,
    /// Its run.
    pub run_id: i64,
    /// The run's trace id.
    pub trace_id: String,
    /// When, ms.
    pub at: i64,
    /// What happened.
    pub kind: String,
    /// Its detail.
    pub message: String,
}

/// An AI task: one AI job over all its attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AiTask {
    /// Queue.
    pub queue: String,
    /// Job id.
    pub job_id: String,
    /// Job name (the task kind).
    pub job_name: String,
    /// The latest attempt's status.
    pub status: String,
    /// The latest attempt's model.
    pub model: String,
    /// Attempts recorded.
    pub runs: i64,
    /// The latest run's id.
    pub last_run_id: i64,
    /// Tokens over all attempts.
    pub total_tokens: i64,
    /// Cost over all attempts, US dollars.
    pub cost_usd: f64,
    /// The first attempt's start, ms.
    pub started_at: i64,
    /// The latest attempt's end, ms.
    pub finished_at: i64,
}

/// Filters of AI runs, events and tasks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AiFilter {
    /// Status.
    pub status: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Queue.
    pub queue: Option<String>,
    /// Job name (task kind).
    pub job_name: Option<String>,
    /// Job id (the task).
    pub job_id: Option<String>,
    /// Run id (events and messages of one run).
    pub run_id: Option<i64>,
    /// From, ms.
    pub from: Option<i64>,
    /// Until, ms.
    pub to: Option<i64>,
}

/// AI usage of one model in one hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AiUsage {
    /// Start of the hour, ms.
    pub hour: i64,
    /// Model.
    pub model: String,
    /// Calls.
    pub runs: i64,
    /// Calls that failed.
    pub failed: i64,
    /// Tokens.
    pub total_tokens: i64,
    /// Cost, US dollars.
    pub cost_usd: f64,
    /// Mean latency.
    pub avg_latency_ms: f64,
}
