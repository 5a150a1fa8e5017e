//! What the example tests share: `keel serve` on an example, a plain HTTP GET, a graceful stop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn get(port: u16, path: &str, token: Option<&str>) -> Option<(u16, Value)> {
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
pub struct Serving {
    pub child: std::process::Child,
    pub port: u16,
    pub token: String,
    /// Its stdout, kept open: the server's prints must not break under it.
    pub _out: BufReader<std::process::ChildStdout>,
}

/// Starts `keel serve` on `config` in `dir` (memory backend, SQLite under `dir`) and reads the
/// owner token it prints.
pub fn serve(config: &std::path::Path, dir: &std::path::Path, envs: &[(&str, String)]) -> Serving {
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
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
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

/// What the examples' email, AI and SQL handlers need at start (nothing is sent to them here).
pub fn placeholder_env() -> Vec<(&'static str, String)> {
    vec![
        ("SMTP_URL", "smtp://127.0.0.1:1".into()),
        ("OPENROUTER_API_KEY", "sk-or-placeholder".into()),
        (
            "ANALYTICS_DATABASE_URL",
            "postgres://keel@127.0.0.1:1/none".into(),
        ),
    ]
}

/// SIGTERM, then the exit must be clean within 30 s.
pub fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit {status}");
            return;
        }
        assert!(Instant::now() < until, "did not stop in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}
