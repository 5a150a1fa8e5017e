//! What the handler tests share: a Redis backend with a unique prefix, a fresh records
//! database, a real SMTP server (aiosmtpd), waiting for a job to settle.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::backend::RedisSettings;
use keel::config::Config;
use keel::{Backend, Job, JobState, Keys, Queue};

pub async fn redis() -> Backend {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let id = uuid::Uuid::new_v4().simple().to_string();
    Backend::redis(RedisSettings {
        url,
        prefix: format!("kh-{id}"),
        command_timeout: Duration::from_secs(5),
        sharded_pubsub: false,
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

#[allow(unused_imports)]
pub use keel_handlers::testing::SmtpServer;
