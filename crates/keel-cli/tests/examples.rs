//! Each `examples/*.toml` (one per seed project) starts `keel serve`: it becomes ready, lists
//! the example's queues through the owner API with the printed owner token, and stops cleanly
//! on SIGTERM. Memory backend, a SQLite file in a temporary directory, a spare port. (The
//! examples' jobs end to end: `examples_e2e.rs`.)

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{get, placeholder_env, serve, stop, Serving};

fn serve_example(name: &str, expected: &[&str]) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let config = root.join("examples").join(name);
    let dir = tempfile::tempdir().unwrap();
    let Serving {
        child,
        port,
        token,
        _out,
    } = serve(&config, dir.path(), &placeholder_env());
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
    stop(child);
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
