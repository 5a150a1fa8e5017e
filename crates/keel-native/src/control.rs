//! What a running job's handler can do to its job: progress (stored and sent as an event)
//! and log lines.

use async_trait::async_trait;
use keel_core::backend::JobControl;
use keel_core::Result;
use serde_json::Value;

use crate::worker::Shared;
use crate::{Keys, NativeEngine};

/// Appends `line` to job `id`'s log.
pub(crate) async fn control_log(s: &Shared, id: &str, line: &str) -> Result<()> {
    Control {
        engine: s.engine.clone(),
        keys: s.keys.clone(),
        id: id.to_string(),
    }
    .log(line)
    .await
}

/// Progress and log lines of a running job.
pub(crate) struct Control {
    pub(crate) engine: NativeEngine,
    pub(crate) keys: Keys,
    pub(crate) id: String,
}

#[async_trait]
impl JobControl for Control {
    async fn update_progress(&self, progress: Value) -> Result<()> {
        let value = progress.to_string();
        let mut pipe = redis::pipe();
        pipe.hset(self.keys.k("progress"), &self.id, &value)
            .cmd("XADD")
            .arg(self.keys.k("events"))
            .arg("MAXLEN")
            .arg("~")
            .arg(1000)
            .arg("*")
            .arg("e")
            .arg("progress")
            .arg(&self.id)
            .arg(&value);
        let mut conn = self.engine.conn.clone();
        self.engine
            .bounded(
                "reporting progress",
                pipe.query_async::<redis::Value>(&mut conn),
            )
            .await
            .map(|_| ())
    }

    async fn log(&self, line: &str) -> Result<()> {
        let mut conn = self.engine.conn.clone();
        self.engine
            .bounded(
                "writing a job's log",
                redis::cmd("RPUSH")
                    .arg(self.keys.k(&format!("log:{}", self.id)))
                    .arg(line)
                    .query_async::<()>(&mut conn),
            )
            .await
    }
}
