//! The OpenAPI document against the running server, by schemathesis (PyPI; `.ci/run` installs
//! it): property-based requests from `/api/openapi.json`, valid and invalid, for an owner and a
//! viewer token, failing on any 5xx and any status, content type or body the document does not
//! describe. Bounded: a fixed seed, 20 examples per operation, a few seconds per token here.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use keel::Backend;
use support::{App, Db};

const CONFIG: &str = r#"
[ratelimit.policies.owner-api]
limit = 1000000
window_ms = 60000

[queues.mail]
attempts = 1

[queues.acme-reports]
tenant = "acme"
"#;

/// The schemathesis command (`st`, or its long name).
fn schemathesis() -> PathBuf {
    for name in ["st", "schemathesis"] {
        if let Ok(out) = std::process::Command::new(name).arg("--version").output() {
            if out.status.success() {
                return PathBuf::from(name);
            }
        }
    }
    panic!("schemathesis is not installed: `pip install schemathesis==4.32.5` (.ci/run does)");
}

async fn run(url: &str, token: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(schemathesis())
            .current_dir(scratch.path())
            .args(["run", url, "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--seed",
                "42",
                "--max-examples",
                "20",
                "--no-color",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("schemathesis finished within 5 minutes")
    .expect("schemathesis runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    assert!(
        text.contains(" passed"),
        "schemathesis ran no test:\n{text}"
    );
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("generated") || l.contains("Tested:"))
        .collect();
    eprintln!("schemathesis: {}", summary.join(" | "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_answer() {
    let app = App::start(
        CONFIG,
        Backend::memory().with_keys(support::unique_keys()),
        Db::Sqlite,
    )
    .await;
    let addr = app.serve_socket().await;
    let url = format!("http://{addr}/api/openapi.json");
    run(&url, &app.owner).await;
    run(&url, &app.viewer).await;
    app.stop().await;
}
