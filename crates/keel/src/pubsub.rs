//! JSON events over pub/sub: publish to channels, subscribe to channels and patterns. On Redis
//! each subscription has its own connection that reconnects with backoff and resubscribes by
//! itself; messages published while it is away are lost (that is pub/sub: use a queue for
//! anything that must arrive).
//!
//! Channel names are the seeds' and are not prefixed, so Node services subscribed to them keep
//! working: see [`channels`].

use std::sync::Arc;

use futures::{Stream, StreamExt};
use keel_core::{Error, KvBackend, Result};
use serde::Serialize;

use crate::Backend;

/// The seeds' channel names.
pub mod channels {
    /// `jobs:completed:{userId}`: a user's job finished.
    pub fn jobs_completed(user_id: &str) -> String {
        format!("jobs:completed:{user_id}")
    }

    /// `jobs:failed:{userId}`: a user's job failed for good.
    pub fn jobs_failed(user_id: &str) -> String {
        format!("jobs:failed:{user_id}")
    }

    /// `<prefix>:terminal:events`: everything terminal (completed or failed) under a prefix.
    pub fn terminal_events(prefix: &str) -> String {
        format!("{prefix}:terminal:events")
    }

    /// `posts:published:{brandProfileId}` (24Rabbit).
    pub fn posts_published(brand_profile_id: &str) -> String {
        format!("posts:published:{brand_profile_id}")
    }

    /// `system:maintenance`: maintenance announcements.
    pub const SYSTEM_MAINTENANCE: &str = "system:maintenance";
}

/// One received event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The channel it was published on.
    pub channel: String,
    /// The pattern that matched, for pattern subscriptions.
    pub pattern: Option<String>,
    /// The payload; a payload that is not JSON arrives as a JSON string.
    pub data: serde_json::Value,
}

/// Publishes and subscribes. Cheap to clone.
#[derive(Clone)]
pub struct Events {
    kv: Arc<dyn KvBackend>,
}

fn check_channel(field: &str, c: &str) -> Result<()> {
    if c.is_empty() || c.len() > 1024 || c.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            format!("{c:?}: must be 1 to 1024 characters without control characters"),
        ));
    }
    Ok(())
}

impl Events {
    /// Events on `backend`.
    pub fn new(backend: &Backend) -> Events {
        Events {
            kv: backend.kv().clone(),
        }
    }

    /// Publishes `event` as JSON on `channel`; returns how many subscribers got it.
    pub async fn publish<T: Serialize>(&self, channel: &str, event: &T) -> Result<u64> {
        check_channel("channel", channel)?;
        let payload = serde_json::to_vec(event)
            .map_err(|e| Error::invalid("event", format!("cannot be serialized: {e}")))?;
        self.kv.publish(channel, &payload).await
    }

    /// Subscribes to `channels` and glob `patterns` (`jobs:completed:*`). The stream lives
    /// until dropped.
    pub async fn subscribe(
        &self,
        channels: &[&str],
        patterns: &[&str],
    ) -> Result<impl Stream<Item = Event> + Send + Unpin + use<>> {
        if channels.is_empty() && patterns.is_empty() {
            return Err(Error::invalid(
                "channels",
                "subscribe to at least one channel or pattern",
            ));
        }
        for c in channels {
            check_channel("channels", c)?;
        }
        for p in patterns {
            check_channel("patterns", p)?;
        }
        let channels: Vec<String> = channels.iter().map(|s| s.to_string()).collect();
        let patterns: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        let sub = self.kv.subscribe(&channels, &patterns).await?;
        Ok(sub.map(|m| Event {
            data: serde_json::from_slice(&m.payload).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&m.payload).into_owned())
            }),
            channel: m.channel,
            pattern: m.pattern,
        }))
    }
}
