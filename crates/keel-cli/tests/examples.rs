//! Each `examples/*.toml` (one per seed project) starts `keel serve`: it becomes ready, lists
//! the example's queues through the owner API with the printed owner token, and stops cleanly
//! on SIGTERM. Memory backend, a SQLite file in a temporary directory, a spare port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn get(port: u16, path: &str, token: Option<&str>) -> Option<(u16, Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status: u16 = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n")?.1;
    // Small bodies are sent whole or as one chunk; take the JSON between the outer braces.
    let json = &body[body.find('{')?..=body.rfind('}')?];
    Some((status, serde_json::from_str(json).ok()?))
}

/// A `keel serve` child on a spare port, with the owner token it printed.
struct Serving {
    child: std::process::Child,
    port: u16,
    token: String,
    /// Its stdout, kept open: the server's prints must not break under it.
    _out: BufReader<std::process::ChildStdout>,
}

/// Starts `keel serve` on `config` in `dir` (memory backend, SQLite under `dir`) and reads the
/// owner token it prints.
fn serve(config: &std::path::Path, dir: &std::path::Path) -> Serving {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "serve",
            "--shutdown-timeout-ms",
            "5000",
        ])
        .current_dir(dir)
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        if let Some(t) = line.split_whitespace().find(|w| w.starts_with("keel_")) {
            return Serving {
                child,
                port,
                token: t.to_string(),
                _out: out,
            };
        }
        line.clear();
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{}: no owner token printed", config.display());
}

fn serve_example(name: &str, expected: &[&str]) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let config = root.join("examples").join(name);
    let dir = tempfile::tempdir().unwrap();
    let Serving {
        mut child,
        port,
        token,
        _out,
    } = serve(&config, dir.path());
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, _)) = get(port, "/api/health/ready", None) {
            break;
        }
        assert!(Instant::now() < until, "{name}: not ready in 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, v) = get(port, "/api/owner/queues", Some(&token)).expect("queues answer");
    assert_eq!(status, 200, "{name}: {v}");
    let mut names: Vec<&str> = v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    names.sort();
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(names, expected, "{name}");
    assert!(
        dir.path().join("data/keel.db").exists(),
        "{name}: SQLite file under ./data"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{name}: exit {status}");
            break;
        }
        assert!(Instant::now() < until, "{name}: did not stop in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn teknav_example_serves() {
    serve_example(
        "teknav.toml",
        &[
            "ai-content",
            "ai-seo",
            "analytics",
            "email-otp",
            "plugin",
            "workflow",
        ],
    );
}

#[test]
fn rabbit_example_serves() {
    serve_example(
        "24rabbit.toml",
        &[
            "analytics",
            "content-analyze",
            "embedding-generate",
            "publish",
            "schedule",
            "token-refresh",
        ],
    );
}

#[test]
fn yesgoddess_example_serves() {
    serve_example(
        "yesgoddess.toml",
        &["email", "file-processing", "royalty-calculation"],
    );
}

#[test]
fn haystack_example_serves() {
    serve_example(
        "haystack.toml",
        &["acme-ingest", "globex-ingest", "search-index"],
    );
}

/// The teknav example's `publish_article` workflow, end to end under `keel serve`: its
/// handlers pointed at a local receiver (the example's URLs with the receiver's address), a
/// run through the owner API, each step a job POSTed to its queue's consumer in order, the
/// outputs flowing, the instance completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teknav_workflow_runs_end_to_end() {
    use axum::routing::post;
    use std::sync::{Arc, Mutex};
    let posts: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = posts.clone();
    let receiver = axum::Router::new().route(
        "/internal/jobs/{queue}",
        post(move |axum::extract::Path(queue): axum::extract::Path<String>, axum::Json(body): axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                let answer = serde_json::json!({"queue": queue, "job": body["name"], "articleId": body["data"]["articleId"]});
                seen.lock().unwrap().push(body);
                axum::Json(answer)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("examples/teknav.toml"))
        .unwrap()
        .replace("http://127.0.0.1:3000", &format!("http://{addr}"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("teknav.toml");
    std::fs::write(&config, text).unwrap();
    let Serving {
        mut child,
        port,
        token,
        _out,
    } = tokio::task::block_in_place(|| serve(&config, dir.path()));
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http.get(format!("{base}/api/health/ready")).send().await;
        if r.as_ref().map(|r| r.status().as_u16()).ok() == Some(200) {
            break;
        }
        assert!(Instant::now() < until, "not ready in 30 s: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started: Value = http
        .post(format!("{base}/api/owner/workflows/publish_article/run"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"input": {"articleId": "a-42", "topic": "Rust queues"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["instance"]["id"]
        .as_str()
        .expect("an instance")
        .to_string();
    let until = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let v: Value = http
            .get(format!("{base}/api/owner/workflows/instances/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["instance"]["status"] == "completed" {
            break v;
        }
        assert!(Instant::now() < until, "not completed in 30 s: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names: Vec<String> = posts
        .lock()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        vec![
            "generate_article_draft",
            "seo_optimize_article",
            "article_ready"
        ],
        "each step's job reached its queue's consumer, in order"
    );
    let notify = &done["steps"][2];
    assert_eq!(notify["input"]["articleId"], "a-42");
    assert_eq!(notify["input"]["seo"]["job"], "seo_optimize_article");
    assert_eq!(notify["input"]["draft"]["queue"], "ai-content");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit {status}");
            break;
        }
        assert!(Instant::now() < until, "did not stop in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
