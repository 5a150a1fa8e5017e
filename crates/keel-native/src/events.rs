//! A queue's live events: the `events` stream read from its end on a connection of its own.
//! Each entry is one kind (`e`) and the id → detail pairs of every job a script call touched,
//! so a batch of a hundred completions is one entry, not a hundred.

use std::time::Duration;

use futures::StreamExt;
use keel_core::{EventStream, QueueEvent, Result};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{redis_err, NativeEngine};

/// Entries read at most a call.
const READ_COUNT: usize = 200;

pub(crate) async fn stream(engine: &NativeEngine, queue: &str) -> Result<EventStream> {
    let key = engine.keys(queue).k("events");
    let mut conn = engine.dedicated().await?;
    // From the stream's current end: only events after this call.
    let last: redis::Value = engine
        .bounded(
            "reading the events stream",
            redis::cmd("XREVRANGE")
                .arg(&key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn),
        )
        .await?;
    let mut from = parse_entries(&last)?
        .into_iter()
        .next()
        .map(|(id, _)| id)
        .unwrap_or_else(|| "0-0".into());
    let (tx, rx) = mpsc::channel::<QueueEvent>(1024);
    let engine = engine.clone();
    tokio::spawn(async move {
        loop {
            let reply: redis::RedisResult<redis::Value> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(1000)
                .arg("STREAMS")
                .arg(&key)
                .arg(&from)
                .query_async(&mut conn)
                .await;
            let entries = match reply.map_err(redis_err).and_then(|v| match v {
                redis::Value::Nil => Ok(Vec::new()),
                redis::Value::Array(mut streams) if !streams.is_empty() => {
                    match streams.swap_remove(0) {
                        redis::Value::Array(mut pair) if pair.len() == 2 => {
                            parse_entries(&pair.swap_remove(1))
                        }
                        _ => Ok(Vec::new()),
                    }
                }
                redis::Value::Map(mut m) if !m.is_empty() => parse_entries(&m.swap_remove(0).1),
                _ => Ok(Vec::new()),
            }) {
                Ok(e) => e,
                Err(_) => {
                    if tx.is_closed() {
                        return;
                    }
                    // Redis away or restarted: a new connection once it answers.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if let Ok(fresh) = engine.dedicated().await {
                        conn = fresh;
                    }
                    continue;
                }
            };
            if entries.is_empty() && tx.is_closed() {
                return;
            }
            for (id, fields) in entries {
                from = id;
                for e in decode(&fields) {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(tokio_stream(rx))
}

fn tokio_stream(mut rx: mpsc::Receiver<QueueEvent>) -> EventStream {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// Stream entries: id and field/value pairs.
type Entries = Vec<(String, Vec<(String, String)>)>;

fn parse_entries(v: &redis::Value) -> Result<Entries> {
    let redis::Value::Array(items) = v else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let redis::Value::Array(pair) = item else {
            continue;
        };
        if pair.len() != 2 {
            continue;
        }
        let id: String = crate::parse(&pair[0])?;
        let flat: Vec<String> = crate::parse(&pair[1])?;
        let fields = flat
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect();
        out.push((id, fields));
    }
    Ok(out)
}

/// The events of one entry: `e` = kind first, then one pair a job.
fn decode(fields: &[(String, String)]) -> Vec<QueueEvent> {
    let Some((_, kind)) = fields.first().filter(|(k, _)| k == "e") else {
        return Vec::new();
    };
    let jobs = &fields[1..];
    match kind.as_str() {
        "paused" => vec![QueueEvent::Paused],
        "resumed" => vec![QueueEvent::Resumed],
        _ => jobs
            .iter()
            .filter_map(|(id, detail)| {
                let job_id = id.clone();
                Some(match kind.as_str() {
                    "added" => QueueEvent::Added {
                        job_id,
                        name: detail.clone(),
                    },
                    "waiting" => QueueEvent::Waiting { job_id },
                    "delayed" => QueueEvent::Delayed {
                        job_id,
                        until_ms: detail.parse().unwrap_or(0),
                    },
                    "active" => QueueEvent::Active { job_id },
                    "progress" => QueueEvent::Progress {
                        job_id,
                        data: serde_json::from_str(detail).unwrap_or(Value::Null),
                    },
                    "completed" => QueueEvent::Completed {
                        job_id,
                        returnvalue: serde_json::from_str::<Value>(detail)
                            .map(|v| v["r"].clone())
                            .unwrap_or(Value::Null),
                    },
                    "failed" => QueueEvent::Failed {
                        job_id,
                        reason: serde_json::from_str::<Value>(detail)
                            .ok()
                            .and_then(|e| e["reason"].as_str().map(str::to_string))
                            .unwrap_or_else(|| detail.clone()),
                    },
                    "stalled" => QueueEvent::Stalled { job_id },
                    "removed" => QueueEvent::Removed { job_id },
                    _ => return None,
                })
            })
            .collect(),
    }
}
