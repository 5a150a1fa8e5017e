//! The `email` handler against a real SMTP server (aiosmtpd), on Redis, with email logs in a
//! fresh database: MIME as received (headers, both bodies, encodings), permanent and
//! temporary refusals, template and address errors, one-time codes, connection reuse.

mod support;

use std::sync::Arc;
use std::time::Duration;

use keel::otp::{Otp, OtpPolicy, Verdict};
use keel::{JobOptions, JobState};
use keel_handlers::Handlers;
use keel_records::messages::EmailFilter;
use keel_records::prelude::*;
use keel_records::Scope;
use serde_json::json;
use support::*;

const CONFIG: &str = r#"
[queues.email-otp]
attempts = 2
backoff = { type = "fixed", delay_ms = 50 }

[queues.email-otp.handlers.send_email_template]
kind = "email"
from = "Teknav <no-reply@teknav.example>"
to = "{{ email }}"

[queues.email-otp.handlers.send_email_template.templates.welcome]
subject = "Welcome, {{ name }}"
text = "Hello {{ name }}, grüße from {{ site }}."
html = "<p>Hello <b>{{ name }}</b> from {{ site }}</p>"

[queues.email-otp.handlers.send_otp]
kind = "email"
from = "no-reply@teknav.example"
to = "{{ email }}"
template = "otp"
templates_dir = "TEMPLATES"
otp = { purpose = "login", length = 6, ttl_s = 600, max_attempts = 3 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_are_sent_over_smtp_and_recorded() {
    let smtp = SmtpServer::start(true);
    let templates = tempfile::tempdir().unwrap();
    std::fs::write(templates.path().join("otp.subject.txt"), "Your code").unwrap();
    std::fs::write(
        templates.path().join("otp.txt"),
        "Code: {{ code }} (valid {{ expires_in_minutes }} minutes)",
    )
    .unwrap();
    let config = config(&CONFIG.replace("TEMPLATES", templates.path().to_str().unwrap()));
    let backend = redis().await;
    let db = keel_records::testing::sqlite().await;
    db.store.migrate_up().await.unwrap();
    let store: Arc<dyn keel_records::MessageStore> = db.store.clone();
    let handlers = Handlers::new(&backend).records(store).env(env(&[(
        "SMTP_URL",
        format!("smtp://keel:s3cret@127.0.0.1:{}", smtp.port),
    )]));
    let names = keel::runner::select(&config, &[], "queues").unwrap();
    let workers = keel::runner::start_workers(&config, &backend, &names, &handlers, None)
        .await
        .unwrap();
    let q = config.queue(&backend, "email-otp").unwrap();
    let add = |name: &'static str, data: serde_json::Value| {
        let q = q.clone();
        async move { q.add(name, data, JobOptions::default()).await.unwrap() }
    };

    // A multipart message with a non-ASCII text body, as the server's MIME parser reads it.
    let welcome = add(
        "send_email_template",
        json!({"template": "welcome", "email": "ana@example.com", "name": "Ana <3", "site": "Teknav"}),
    )
    .await;
    let done = settled(&q, &welcome.id).await;
    assert_eq!(
        q.job_state(&welcome.id).await.unwrap(),
        Some(JobState::Completed)
    );
    let m = &smtp.messages(1).await[0];
    assert_eq!(m["subject"], "Welcome, Ana <3");
    assert_eq!(m["from"], "Teknav <no-reply@teknav.example>");
    assert_eq!(m["rcpt_tos"], json!(["ana@example.com"]));
    assert_eq!(m["content_type"], "multipart/alternative");
    assert_eq!(
        m["text"].as_str().unwrap().trim_end(),
        "Hello Ana <3, grüße from Teknav."
    );
    assert_ne!(
        m["text_encoding"], "7bit",
        "non-ASCII text is transfer-encoded"
    );
    assert_eq!(
        m["html"].as_str().unwrap().trim_end(),
        "<p>Hello <b>Ana &lt;3</b> from Teknav</p>",
        "HTML templates escape the data"
    );
    assert_eq!(m["authenticated"], true, "AUTH with the URL's credentials");
    let message_id = done.returnvalue.as_ref().unwrap()["messageId"]
        .as_str()
        .unwrap();
    assert_eq!(m["message_id"], message_id);
    assert_eq!(done.returnvalue.as_ref().unwrap()["smtp"]["code"], 250);

    // A template variable the data lacks: unrecoverable, named, nothing sent.
    let missing = add(
        "send_email_template",
        json!({"template": "welcome", "email": "bo@example.com", "name": "Bo"}),
    )
    .await;
    let failed = settled(&q, &missing.id).await;
    let reason = failed.failed_reason.unwrap();
    assert!(reason.contains("variable site is undefined"), "{reason}");
    assert_eq!(failed.attempts_made, 1);
    // A permanent refusal (550): unrecoverable; a temporary one (451): retried, then failed.
    let rejected = add(
        "send_email_template",
        json!({"template": "welcome", "email": "reject@example.com", "name": "R", "site": "s"}),
    )
    .await;
    let busy = add(
        "send_email_template",
        json!({"template": "welcome", "email": "busy@example.com", "name": "B", "site": "s"}),
    )
    .await;
    let invalid = add(
        "send_email_template",
        json!({"template": "welcome", "email": "not an address", "name": "I", "site": "s"}),
    )
    .await;
    let unknown = add(
        "send_email_template",
        json!({"template": "nope", "email": "a@example.com"}),
    )
    .await;
    let r = settled(&q, &rejected.id).await;
    assert_eq!(r.attempts_made, 1, "550 is not retried");
    assert!(r.failed_reason.unwrap().contains("550"));
    let b = settled(&q, &busy.id).await;
    assert_eq!(b.attempts_made, 2, "451 is retried");
    assert!(b.failed_reason.unwrap().contains("451"));
    let i = settled(&q, &invalid.id).await;
    assert_eq!(i.attempts_made, 1);
    assert!(i
        .failed_reason
        .unwrap()
        .contains("invalid recipient address"));
    let u = settled(&q, &unknown.id).await;
    assert!(u
        .failed_reason
        .unwrap()
        .contains("no email template \"nope\""));

    // send_otp: a code mailed from a template file, checked by the library.
    let otp_job = add("send_otp", json!({"email": "Otp.User@example.com"})).await;
    settled(&q, &otp_job.id).await;
    assert_eq!(
        q.job_state(&otp_job.id).await.unwrap(),
        Some(JobState::Completed)
    );
    let messages = smtp.messages(2).await;
    let text = messages.last().unwrap()["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains("valid 10 minutes"), "{text}");
    let code: String = text
        .trim_start_matches("Code: ")
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    assert_eq!(code.len(), 6, "{text}");
    let otp = Otp::new(
        &backend,
        OtpPolicy {
            verify_policy: None,
            ..OtpPolicy::default()
        },
    );
    assert_eq!(
        otp.verify("login", "otp.user@example.com", &code)
            .await
            .unwrap(),
        Verdict::Valid
    );
    assert_eq!(smtp.count(), 2, "only the two good messages were accepted");

    // Every attempt is an email log (written off the hot path: flushed here).
    keel::runner::close_all(workers, Duration::from_secs(5))
        .await
        .unwrap();
    handlers.close().await;
    let logs = db
        .store
        .list_emails(&Scope::All, &EmailFilter::default(), 1, 100)
        .await
        .unwrap();
    let of = |id: &str| {
        logs.items
            .iter()
            .filter(|l| l.email.job_id == id)
            .map(|l| l.email.clone())
            .collect::<Vec<_>>()
    };
    let w = &of(&welcome.id)[0];
    assert_eq!(
        (w.status.as_str(), w.smtp_code, w.recipient.as_str()),
        ("sent", Some(250), "a***@example.com")
    );
    assert_eq!(w.template, "welcome");
    assert_eq!(w.subject, "Welcome, Ana <3");
    assert_eq!(w.message_id.as_deref(), Some(message_id));
    assert!(w.smtp_reply.as_deref().unwrap().contains("queued as KEEL"));
    let rj = &of(&rejected.id)[0];
    assert_eq!((rj.status.as_str(), rj.smtp_code), ("failed", Some(550)));
    let bs: Vec<_> = of(&busy.id).iter().map(|l| l.status.clone()).collect();
    assert_eq!(bs.len(), 2);
    assert!(
        bs.contains(&"deferred".to_string()) && bs.contains(&"failed".to_string()),
        "{bs:?}"
    );
    assert_eq!(of(&missing.id)[0].status, "failed");
    assert!(of(&missing.id)[0]
        .error
        .as_deref()
        .unwrap()
        .contains("site"));
    assert_eq!(of(&otp_job.id)[0].template, "otp");
    assert!(
        !logs
            .items
            .iter()
            .any(|l| l.email.recipient.contains("otp.user")),
        "recipients are masked"
    );
    assert_eq!(handlers.record_counts(), (logs.total as u64, 0, 0));
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_smtp_retries_and_bad_settings_name_their_key() {
    let config = config(CONFIG);
    let backend = redis().await;
    // Nothing listens on this port: a refused connection is temporary.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let handlers =
        Handlers::new(&backend).env(env(&[("SMTP_URL", format!("smtp://127.0.0.1:{port}"))]));
    let only = ["email-otp".to_string()];
    let mut config_one = config.clone();
    config_one
        .queues
        .get_mut("email-otp")
        .unwrap()
        .handlers
        .remove("send_otp");
    let workers = keel::runner::start_workers(&config_one, &backend, &only, &handlers, None)
        .await
        .unwrap();
    let q = config.queue(&backend, "email-otp").unwrap();
    let job = q
        .add(
            "send_email_template",
            json!({"template": "welcome", "email": "a@example.com", "name": "A", "site": "s"}),
            JobOptions::default(),
        )
        .await
        .unwrap();
    let failed = settled(&q, &job.id).await;
    assert_eq!(
        failed.attempts_made, 2,
        "retried: {:?}",
        failed.failed_reason
    );
    keel::runner::close_all(workers, Duration::from_secs(5))
        .await
        .unwrap();

    // tls=required against a server that offers no STARTTLS: refused (and retried), never
    // sent in clear.
    let plain = SmtpServer::start(false);
    let handlers = Handlers::new(&backend).env(env(&[(
        "SMTP_URL",
        format!("smtp://127.0.0.1:{}?tls=required", plain.port),
    )]));
    let workers = keel::runner::start_workers(&config_one, &backend, &only, &handlers, None)
        .await
        .unwrap();
    let job = q
        .add(
            "send_email_template",
            json!({"template": "welcome", "email": "a@example.com", "name": "A", "site": "s"}),
            JobOptions::default(),
        )
        .await
        .unwrap();
    let failed = settled(&q, &job.id).await;
    assert_eq!(failed.attempts_made, 2);
    assert!(
        failed
            .failed_reason
            .as_deref()
            .unwrap_or_default()
            .contains("STARTTLS"),
        "{:?}",
        failed.failed_reason
    );
    assert_eq!(plain.count(), 0, "nothing sent in clear");
    keel::runner::close_all(workers, Duration::from_secs(5))
        .await
        .unwrap();

    // At start: a missing variable, a bad address, a bad template, each naming its key.
    let cases = [
        (
            "",
            "queues.email-otp.handlers.send_email_template.smtp_url_env",
        ),
        (
            "from = \"nobody\"\n",
            "queues.email-otp.handlers.send_email_template.from",
        ),
        (
            "templates.x = { subject = \"{{ a \", text = \"t\" }\n",
            "queues.email-otp.handlers.send_email_template.templates.x.subject",
        ),
        (
            "template = \"absent\"\n",
            "queues.email-otp.handlers.send_email_template.template",
        ),
        (
            "otp = { length = 2 }\n",
            "queues.email-otp.handlers.send_email_template.otp.length",
        ),
        (
            "timeout_ms = \"x\"\n",
            "queues.email-otp.handlers.send_email_template.timeout_ms",
        ),
    ];
    for (extra, key) in cases {
        let text = format!(
            "[queues.email-otp.handlers.send_email_template]\nkind = \"email\"\n{}{extra}",
            if extra.starts_with("from") {
                ""
            } else {
                "from = \"a@b.example\"\n"
            }
        );
        let c = config_text(&text);
        let vars = if key.ends_with("smtp_url_env") {
            env(&[])
        } else {
            env(&[("SMTP_URL", "smtp://127.0.0.1:25".to_string())])
        };
        let h = Handlers::new(&backend).env(vars);
        let err = keel::runner::start_workers(&c, &backend, &only, &h, None)
            .await
            .err()
            .unwrap_or_else(|| panic!("{text} started"));
        assert_eq!(err.field(), Some(key), "{text}: {err}");
    }
}

fn config_text(text: &str) -> keel::config::Config {
    support::config(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_reused_across_sends() {
    let smtp = SmtpServer::start(false);
    let config = config(
        "[queues.mail]\nconcurrency = 1\n[queues.mail.handler]\nkind = \"email\"\nfrom = \"a@keel.example\"\ntemplate = \"t\"\ntemplates.t = { subject = \"s {{ n }}\", text = \"b\" }\n",
    );
    let backend = redis().await;
    let handlers = Handlers::new(&backend).env(env(&[(
        "SMTP_URL",
        format!("smtp://127.0.0.1:{}", smtp.port),
    )]));
    let workers = keel::runner::start_workers(&config, &backend, &["mail".into()], &handlers, None)
        .await
        .unwrap();
    let q = config.queue(&backend, "mail").unwrap();
    for n in 0..5 {
        let j = q
            .add(
                "x",
                json!({"to": format!("u{n}@example.com"), "n": n}),
                JobOptions::default(),
            )
            .await
            .unwrap();
        settled(&q, &j.id).await;
    }
    let messages = smtp.messages(5).await;
    let ports: std::collections::BTreeSet<_> =
        messages.iter().map(|m| m["peer_port"].as_u64()).collect();
    assert_eq!(ports.len(), 1, "one connection carried the five: {ports:?}");
    keel::runner::close_all(workers, Duration::from_secs(5))
        .await
        .unwrap();
}
