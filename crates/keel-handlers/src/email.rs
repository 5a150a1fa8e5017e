//! The `email` handler: renders a template over the job's data and sends it over SMTP.
//!
//! ```toml
//! [queues.email-otp.handlers.send_email_template]
//! kind = "email"
//! smtp_url_env = "SMTP_URL"      # smtp://user:pass@host:587?tls=required (STARTTLS),
//!                                # smtps://user:pass@host:465 (TLS), smtp://host:25 (plain)
//! from = "Teknav <no-reply@teknav.example>"
//! to = "{{ email }}"             # a template over the data; default "{{ to }}"
//! templates_dir = "templates/email"   # NAME.subject.txt, NAME.txt, NAME.html
//! template = "welcome"           # fixed; else the job's data `template` or `templateKey`
//! timeout_ms = 10000
//! pool_size = 10                 # SMTP connections kept open and reused
//! mask_recipient = "partial"     # partial (a***@example.com) | full | none, in the records
//! otp = { purpose = "login", length = 6, ttl_s = 600 }   # send_otp: a code in {{ code }}
//! [queues.email-otp.handlers.send_email_template.templates.welcome]
//! subject = "Welcome, {{ name }}"
//! text = "Hello {{ name }}"
//! html = "<p>Hello {{ name }}</p>"
//! ```
//! Outcomes: 2xx sent; a permanent refusal (5xx), a template error (the variable named) or
//! an invalid address is unrecoverable; a temporary refusal (4xx), a refused connection or a
//! timeout retries with the job's backoff. Every attempt is an email log record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::otp::{Otp, OtpPolicy};
use keel_core::{Error, JobContext, JobError, Processor, Result};
use keel_records::messages::NewEmail;
use lettre::message::{Mailbox, Mailboxes, MultiPart, SinglePart};
use lettre::Message;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::template::Templates;
use crate::{settings, trace_id, Shared};

/// The SMTP connections of one server (pooled, reused).
pub type Smtp = std::sync::Arc<crate::smtp::SmtpPool>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_url_env")]
    smtp_url_env: String,
    from: String,
    #[serde(default = "default_to")]
    to: String,
    template: Option<String>,
    templates_dir: Option<PathBuf>,
    #[serde(default)]
    templates: BTreeMap<String, Inline>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_pool")]
    pool_size: u32,
    #[serde(default)]
    mask_recipient: Mask,
    otp: Option<OtpSettings>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Inline {
    subject: String,
    text: Option<String>,
    html: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OtpSettings {
    #[serde(default = "default_purpose")]
    purpose: String,
    #[serde(flatten)]
    policy: OtpPolicy,
}

/// How recipients are written into the email log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mask {
    /// `a***@example.com`.
    #[default]
    Partial,
    /// `***`.
    Full,
    /// As sent.
    None,
}

fn default_url_env() -> String {
    "SMTP_URL".into()
}
fn default_to() -> String {
    "{{ to }}".into()
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_pool() -> u32 {
    10
}
fn default_purpose() -> String {
    "login".into()
}

/// Masks each address of a recipient list per `mask`.
pub fn mask_recipients(to: &str, mask: Mask) -> String {
    match mask {
        Mask::None => to.to_string(),
        Mask::Full => "***".into(),
        Mask::Partial => to
            .split(',')
            .map(|a| {
                let a = a.trim();
                let addr = a
                    .rsplit_once('<')
                    .map(|(_, r)| r.trim_end_matches('>'))
                    .unwrap_or(a);
                match addr.split_once('@') {
                    Some((local, domain)) => {
                        let first: String = local.chars().take(1).collect();
                        format!("{first}***@{domain}")
                    }
                    None => "***".into(),
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

const TO: &str = "__to.txt";

struct EmailHandler {
    queue: String,
    tenant_id: Option<String>,
    smtp: Smtp,
    from: Mailbox,
    domain: String,
    fixed: Option<String>,
    templates: Templates,
    timeout: Duration,
    mask: Mask,
    otp: Option<(String, Otp)>,
    shared: Arc<Shared>,
}

/// Builds the handler configured at `key`.
pub(crate) fn build(
    shared: &Arc<Shared>,
    queue: &str,
    key: &str,
    table: &toml::Table,
) -> Result<Processor> {
    let s: Settings = settings(key, table)?;
    let k = |f: &str| format!("{key}.{f}");
    let url = (shared.env)(&s.smtp_url_env).ok_or_else(|| {
        Error::invalid(
            k("smtp_url_env"),
            format!("environment variable {} is not set", s.smtp_url_env),
        )
    })?;
    let from: Mailbox = s
        .from
        .parse()
        .map_err(|e| Error::invalid(k("from"), format!("not an address: {e}")))?;
    let domain = from.email.domain().to_string();
    if s.timeout_ms == 0 {
        return Err(Error::invalid(k("timeout_ms"), "must be at least 1"));
    }
    if s.pool_size == 0 {
        return Err(Error::invalid(k("pool_size"), "must be at least 1"));
    }
    let timeout = Duration::from_millis(s.timeout_ms);
    let smtp = shared.smtp(&url, timeout, s.pool_size).map_err(|e| {
        Error::invalid(
            k("smtp_url_env"),
            format!("{} is not an SMTP URL: {e}", s.smtp_url_env),
        )
    })?;
    let mut templates = Templates::new();
    templates
        .add(TO, &s.to)
        .map_err(|e| Error::invalid(k("to"), e))?;
    if let Some(dir) = &s.templates_dir {
        let dir = if dir.is_relative() {
            shared.base_dir.join(dir)
        } else {
            dir.clone()
        };
        load_dir(&mut templates, &dir).map_err(|e| Error::invalid(k("templates_dir"), e))?;
    }
    for (name, t) in &s.templates {
        let tk = k(&format!("templates.{name}"));
        if t.text.is_none() && t.html.is_none() {
            return Err(Error::invalid(tk, "needs text, html or both"));
        }
        let parts = [
            ("subject", Some(&t.subject)),
            ("text", t.text.as_ref()),
            ("html", t.html.as_ref()),
        ];
        for (part, source) in parts {
            if let Some(source) = source {
                templates
                    .add(&part_name(name, part), source)
                    .map_err(|e| Error::invalid(format!("{tk}.{part}"), e))?;
            }
        }
    }
    if let Some(name) = &s.template {
        if !templates.has(&part_name(name, "subject")) {
            return Err(Error::invalid(
                k("template"),
                format!("no template {name:?} (in templates or templates_dir)"),
            ));
        }
    }
    let otp = match s.otp {
        Some(o) => {
            o.policy.validate().map_err(|e| match e {
                Error::InvalidInput { field, message } => Error::invalid(k(&field), message),
                other => other,
            })?;
            keel::keys::validate_name("purpose", &o.purpose)
                .map_err(|e| Error::invalid(k("otp.purpose"), e.to_string()))?;
            let mut otp = Otp::new(&shared.backend, o.policy);
            if let Some(l) = &shared.limiter {
                otp = otp.with_limiter(l.clone());
            }
            Some((o.purpose, otp))
        }
        None => None,
    };
    let handler = Arc::new(EmailHandler {
        queue: queue.to_string(),
        tenant_id: shared.tenants.get(queue).cloned(),
        smtp,
        from,
        domain,
        fixed: s.template,
        templates,
        timeout,
        mask: s.mask_recipient,
        otp,
        shared: shared.clone(),
    });
    Ok(Arc::new(move |ctx| {
        let h = handler.clone();
        Box::pin(async move { h.run(ctx).await })
    }))
}

fn part_name(template: &str, part: &str) -> String {
    match part {
        "subject" => format!("{template}.subject.txt"),
        "text" => format!("{template}.txt"),
        _ => format!("{template}.html"),
    }
}

/// Loads `NAME.subject.txt`, `NAME.txt` and `NAME.html` files.
fn load_dir(templates: &mut Templates, dir: &Path) -> std::result::Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    for path in files {
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        if !(file.ends_with(".txt") || file.ends_with(".html")) {
            continue;
        }
        let source =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        templates
            .add(file, &source)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// What one attempt produced, for the record.
struct Attempt {
    template: String,
    recipient: String,
    subject: String,
    message_id: Option<String>,
    code: Option<i64>,
    reply: Option<String>,
}

impl EmailHandler {
    async fn run(&self, ctx: JobContext) -> std::result::Result<Value, JobError> {
        let started = Instant::now();
        let created_at = keel::now_ms() as i64;
        let mut attempt = Attempt {
            template: String::new(),
            recipient: String::new(),
            subject: String::new(),
            message_id: None,
            code: None,
            reply: None,
        };
        let result = self.send(&ctx, &mut attempt).await;
        if !self.shared.observed() {
            return result;
        }
        let job = &ctx.job;
        let (status, error) = match &result {
            Ok(_) => ("sent", None),
            Err(e) if e.is_final_for(job) => ("failed", Some(e.message().to_string())),
            Err(e) => ("deferred", Some(e.message().to_string())),
        };
        let record = NewEmail {
            tenant_id: self.tenant_id.clone(),
            queue: self.queue.clone(),
            job_id: job.id.clone(),
            job_name: job.name.clone(),
            attempt: job.attempts_made as i64 + 1,
            template: attempt.template,
            recipient: mask_recipients(&attempt.recipient, self.mask),
            subject: attempt.subject,
            status: status.into(),
            smtp_code: attempt.code,
            smtp_reply: attempt.reply,
            message_id: attempt.message_id,
            error,
            actor: None,
            trace_id: trace_id(&job.data),
            created_at,
            duration_ms: started.elapsed().as_millis() as i64,
        };
        self.shared.email_sent(record);
        result
    }

    async fn send(
        &self,
        ctx: &JobContext,
        out: &mut Attempt,
    ) -> std::result::Result<Value, JobError> {
        let job = &ctx.job;
        let mut data = crate::template_context("email", &self.queue, job)?;
        let template = match &self.fixed {
            Some(t) => t.clone(),
            None => ["template", "templateKey"]
                .iter()
                .find_map(|k| data.get(*k).and_then(Value::as_str).map(str::to_string))
                .ok_or_else(|| {
                    JobError::unrecoverable(
                        "no template: the handler sets none and the job's data has no template (or templateKey)",
                    )
                })?,
        };
        out.template = template.clone();
        if !self.templates.has(&part_name(&template, "subject")) {
            return Err(JobError::unrecoverable(format!(
                "no email template {template:?}"
            )));
        }
        let to = self
            .templates
            .render(TO, &data)
            .map_err(|e| JobError::unrecoverable(format!("recipient: {e}")))?;
        out.recipient = to.trim().to_string();
        let mailboxes: Mailboxes = out.recipient.parse().map_err(|e| {
            JobError::unrecoverable(format!(
                "invalid recipient address {:?}: {e}",
                out.recipient
            ))
        })?;
        if mailboxes.iter().next().is_none() {
            return Err(JobError::unrecoverable("no recipient address"));
        }
        if let Some((purpose, otp)) = &self.otp {
            let issued = otp
                .issue(purpose, &out.recipient)
                .await
                .map_err(|e| JobError::retry(format!("storing the one-time code: {e}")))?;
            data["code"] = json!(issued.code);
            data["expires_in_minutes"] = json!(issued.ttl.as_secs().div_ceil(60));
        }
        let value = crate::template::prepare(&data);
        let render = |part: &str| -> std::result::Result<Option<String>, JobError> {
            let name = part_name(&template, part);
            if !self.templates.has(&name) {
                return Ok(None);
            }
            self.templates
                .render_prepared(&name, &data, &value)
                .map(Some)
                .map_err(JobError::unrecoverable)
        };
        let subject = render("subject")?.unwrap_or_default();
        out.subject = subject.trim().to_string();
        let (text, html) = (render("text")?, render("html")?);
        let message_id = format!(
            "<{}.{}.{}@{}>",
            safe(&self.queue),
            safe(&job.id),
            job.attempts_made + 1,
            self.domain
        );
        out.message_id = Some(message_id.clone());
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(out.subject.clone())
            .message_id(Some(message_id));
        for m in mailboxes {
            builder = builder.to(m);
        }
        let message = match (text, html) {
            (Some(t), Some(h)) => builder.multipart(MultiPart::alternative_plain_html(t, h)),
            (Some(t), None) => builder.singlepart(SinglePart::plain(t)),
            (None, Some(h)) => builder.singlepart(SinglePart::html(h)),
            (None, None) => {
                return Err(JobError::unrecoverable(format!(
                    "email template {template:?} has no text or html body"
                )))
            }
        }
        .map_err(|e| JobError::unrecoverable(format!("building the message: {e}")))?;
        let envelope = message.envelope().clone();
        let bytes = message.formatted();
        let sent = tokio::time::timeout(self.timeout, self.smtp.send(&envelope, &bytes)).await;
        match sent {
            Err(_) => Err(JobError::retry(format!(
                "SMTP send timed out after {} ms",
                self.timeout.as_millis()
            ))),
            Ok(Ok(resp)) => {
                out.code = Some(u16::from(resp.code()) as i64);
                out.reply = Some(resp.message().collect::<Vec<_>>().join(" "));
                Ok(json!({
                    "messageId": out.message_id,
                    "smtp": {"code": out.code, "reply": out.reply},
                }))
            }
            Ok(Err(e)) => {
                out.code = e.code().map(|c| c as i64);
                out.reply = Some(e.to_string());
                let message = format!("SMTP: {e}");
                Err(if e.is_permanent() {
                    JobError::unrecoverable(message)
                } else {
                    JobError::retry(message)
                })
            }
        }
    }
}

/// A Message-ID part: letters, digits, `.`, `-` and `_` only.
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A pool of connections to `url`.
pub(crate) fn transport(
    url: &str,
    timeout: Duration,
    pool: u32,
) -> std::result::Result<Smtp, String> {
    Ok(std::sync::Arc::new(crate::smtp::SmtpPool::new(
        url, timeout, pool,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_masked() {
        assert_eq!(
            mask_recipients("ana@example.com, Bo <bo@x.io>", Mask::Partial),
            "a***@example.com, b***@x.io"
        );
        assert_eq!(mask_recipients("ana@example.com", Mask::Full), "***");
        assert_eq!(
            mask_recipients("ana@example.com", Mask::None),
            "ana@example.com"
        );
    }
}

/// Whether `s` is one plain address (`local@domain`), as SMTP takes it.
pub fn is_address(s: &str) -> bool {
    s.parse::<lettre::Address>().is_ok()
}

/// An `email` handler that mails one-time codes: where `POST /api/otp/send` enqueues for its
/// purpose, and the policy checks use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpRoute {
    /// The queue.
    pub queue: String,
    /// The job name (the handler's key under `handlers`, or `send_otp` for a queue's fallback).
    pub job: String,
    /// The purpose (`login`, ...).
    pub purpose: String,
    /// Length, alphabet, lifetime, attempts, resend window, verify policy.
    pub policy: OtpPolicy,
}

/// The one-time-code handlers of `config`, by purpose (settings errors name their key).
pub fn otp_routes(config: &keel::config::Config) -> Result<Vec<OtpRoute>> {
    use keel::config::HandlerConfig;
    #[derive(Deserialize)]
    struct OnlyOtp {
        otp: Option<OtpSettings>,
    }
    let mut out: Vec<OtpRoute> = Vec::new();
    for (name, qc) in &config.queues {
        let fallback = qc
            .handler
            .iter()
            .map(|h| ("send_otp".to_string(), format!("queues.{name}.handler"), h));
        let named = qc
            .handlers
            .iter()
            .map(|(job, h)| (job.clone(), format!("queues.{name}.handlers.{job}"), h));
        for (job, key, h) in named.chain(fallback) {
            let HandlerConfig::External { kind, settings } = h else {
                continue;
            };
            if kind != "email" {
                continue;
            }
            let mut only = toml::Table::new();
            if let Some(o) = settings.get("otp") {
                only.insert("otp".into(), o.clone());
            }
            let Some(o) = crate::settings::<OnlyOtp>(&key, &only)?.otp else {
                continue;
            };
            if let Some(other) = out.iter().find(|r| r.purpose == o.purpose) {
                return Err(Error::invalid(
                    format!("{key}.otp.purpose"),
                    format!(
                        "purpose {:?} is also mailed by queues.{}.handlers.{}",
                        o.purpose, other.queue, other.job
                    ),
                ));
            }
            out.push(OtpRoute {
                queue: name.clone(),
                job,
                purpose: o.purpose,
                policy: o.policy,
            });
        }
    }
    Ok(out)
}
