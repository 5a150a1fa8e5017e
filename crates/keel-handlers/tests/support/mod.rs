//! What the handler tests share: a Redis backend with a unique prefix, a fresh records
//! database, a real SMTP server (aiosmtpd), waiting for a job to settle.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::backend::RedisSettings;
use keel::config::Config;
use keel::{Backend, Job, JobState, Keys, Queue};
use serde_json::Value;

pub async fn redis() -> Backend {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let id = uuid::Uuid::new_v4().simple().to_string();
    Backend::redis(RedisSettings {
        url,
        prefix: format!("kh-{id}"),
        command_timeout: Duration::from_secs(5),
    })
    .await
    .expect("Redis must be running (see README)")
    .with_keys(Keys::new(&format!("kh-{id}"), "test").unwrap())
}

/// An environment of these variables only.
pub fn env(vars: &[(&str, String)]) -> keel_handlers::Env {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Arc::new(move |k| map.get(k).cloned())
}

pub fn config(text: &str) -> Config {
    Config::parse(text, &|_| None).unwrap()
}

/// Waits until the job is completed or failed.
pub async fn settled(q: &Queue, id: &str) -> Job {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(state) = q.job_state(id).await.unwrap() {
            if matches!(state, JobState::Completed | JobState::Failed) {
                return q.get_job(id).await.unwrap().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "job {id} did not settle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A real SMTP server (aiosmtpd) on a free loopback port, stopped (by its pid) when dropped.
pub struct SmtpServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl SmtpServer {
    pub fn start(require_auth: bool) -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(dir.path());
        if require_auth {
            cmd.arg("--auth");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with aiosmtpd (pip install aiosmtpd; .ci/run installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("the SMTP server did not start (is aiosmtpd installed?): {line:?}")
        });
        SmtpServer { port, dir, child }
    }

    /// The messages received so far, in order, once at least `n` arrived.
    pub async fn messages(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            if files.len() >= n {
                files.sort();
                return files
                    .iter()
                    .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "{n} messages did not arrive (got {})",
                files.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn count(&self) -> usize {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
            })
            .count()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
