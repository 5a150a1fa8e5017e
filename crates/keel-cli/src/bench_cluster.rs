//! `keel bench --cluster`: one queue on Keel's engine spread over the cluster's masters
//! (`partitions` = the number of masters, one partition a master) against the same queue on
//! one master, alternated round by round in one run on the same cluster.
//!
//! Each round and layout: a bulk preload of `--jobs` jobs (timed: enqueue jobs/s), then one
//! worker of `--concurrency` processing them all (timed: process jobs/s), with each master's CPU
//! (`INFO cpu`, user + sys) read before and after. A line a round and layout gives the rates,
//! each master's CPU percent and µs per job, and how far the busiest and idlest master are from
//! the mean; the `summary` line gives the medians and the spread layout's rate over one master's.
//!
//! On a machine whose client cores are the bottleneck the total rate barely moves with more
//! masters; what the spread shows is Redis's work divided among them (each master near the
//! mean), which is the headroom a bigger client fleet uses.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::config::Config;
use keel::{handler_fn, Backend, JobOptions, KeepJobs, NewJob, Queue};
use serde_json::{json, Value};

use crate::Failure;

/// Jobs per `add_bulk` call.
const CHUNK: usize = 1000;

/// What the scenario needs from `keel bench`'s arguments.
pub struct Sizes {
    pub jobs: usize,
    pub concurrency: usize,
    pub payload: usize,
    pub rounds: usize,
    pub timeout: Duration,
}

/// Runs the scenario on the cluster `config` names; one JSON line a round and layout, then a
/// summary.
pub async fn run(config: &Config, sizes: Sizes) -> Result<(), Failure> {
    let url = config.redis_url.clone().ok_or_else(|| {
        keel::Error::invalid(
            "--cluster",
            "needs a Redis Cluster ([redis] cluster, REDIS_CLUSTER_NODES or a cluster node's URL)",
        )
    })?;
    let settings = keel::backend::RedisSettings {
        url: url.clone(),
        prefix: "keelbench".into(),
        command_timeout: config.command_timeout,
        sharded_pubsub: false,
    };
    let base = Backend::native(settings).await?;
    // The masters, as the toolkit's INFO sees them (one entry each on a cluster, none on one
    // server).
    let masters: Vec<String> = base
        .kv()
        .info()
        .await?
        .nodes
        .into_iter()
        .map(|n| n.addr)
        .collect();
    if masters.len() < 2 {
        return Err(keel::Error::invalid(
            "--cluster",
            format!(
                "{} is not a Redis Cluster of two masters or more",
                keel::secrets::redact_url(&url)
            ),
        )
        .into());
    }
    let n = masters.len() as u32;
    if sizes.concurrency < n as usize {
        return Err(keel::Error::invalid(
            "--concurrency",
            format!("must be at least the {n} partitions (it is split among them)"),
        )
        .into());
    }
    let mut lines: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for round in 0..sizes.rounds {
        for (layout, parts) in [("one_master", 1), ("spread", n)] {
            let line = round_of(&base, &masters, layout, parts, round, &sizes).await;
            println!("{line}");
            lines.entry(layout).or_default().push(line);
        }
    }
    println!("{}", summary(&lines, n));
    Ok(())
}

/// Each master's CPU seconds (user + sys) now, in the order of `masters`.
async fn cpu(backend: &Backend, masters: &[String]) -> Vec<f64> {
    let nodes = backend
        .kv()
        .info()
        .await
        .map(|i| i.nodes)
        .unwrap_or_default();
    masters
        .iter()
        .map(|m| nodes.iter().find(|n| &n.addr == m).map_or(0.0, |n| n.cpu_s))
        .collect()
}

async fn round_of(
    base: &Backend,
    masters: &[String],
    layout: &str,
    parts: u32,
    round: usize,
    sizes: &Sizes,
) -> Value {
    let name = format!(
        "cluster-{layout}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let backend = base
        .clone()
        .with_partitions(BTreeMap::from([(name.clone(), parts)]));
    let mut out = json!({
        "scenario": "cluster", "engine": "keel", "layout": layout, "round": round,
        "partitions": parts, "masters": masters.len(), "n": sizes.jobs,
        "concurrency": sizes.concurrency, "payload_bytes": sizes.payload, "queue": name,
    });
    let measured =
        tokio::time::timeout(sizes.timeout, measure(&backend, masters, &name, sizes)).await;
    match measured {
        Ok(Ok(fields)) => merge(&mut out, fields),
        Ok(Err(e)) => merge(&mut out, json!({"error": e})),
        Err(_) => merge(&mut out, json!({"timed_out": true})),
    }
    if let Ok(q) = Queue::new(&backend, &name) {
        if let Err(e) = q.obliterate(true).await {
            merge(&mut out, json!({"cleanup_error": e.to_string()}));
        }
    }
    out
}

async fn measure(
    backend: &Backend,
    masters: &[String],
    name: &str,
    sizes: &Sizes,
) -> Result<Value, String> {
    let q = Queue::new(backend, name)
        .and_then(|q| {
            q.with_defaults(JobOptions {
                remove_on_complete: Some(KeepJobs::remove_all()),
                ..Default::default()
            })
        })
        .map_err(|e| e.to_string())?;
    let payload = json!({"p": "x".repeat(sizes.payload)});
    let cpu0 = cpu(backend, masters).await;
    let t0 = Instant::now();
    let mut left = sizes.jobs;
    while left > 0 {
        let k = left.min(CHUNK);
        let jobs = (0..k)
            .map(|_| NewJob::new("bench", payload.clone()))
            .collect();
        q.add_bulk(jobs).await.map_err(|e| e.to_string())?;
        left -= k;
    }
    let enqueue = t0.elapsed();
    let done = Arc::new(AtomicUsize::new(0));
    let counted = done.clone();
    let t1 = Instant::now();
    let worker = q
        .worker()
        .concurrency(sizes.concurrency)
        .dead_letter(false)
        .fallback(handler_fn(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
            async { Ok(Value::Null) }
        }))
        .start()
        .await
        .map_err(|e| e.to_string())?;
    while done.load(Ordering::Relaxed) < sizes.jobs {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let process = t1.elapsed();
    let cpu1 = cpu(backend, masters).await;
    let _ = worker.close(Duration::from_secs(10)).await;
    let wall = t0.elapsed().as_secs_f64();
    let used: Vec<f64> = cpu0
        .iter()
        .zip(&cpu1)
        .map(|(a, b)| (b - a).max(0.0))
        .collect();
    let mean = used.iter().sum::<f64>() / used.len() as f64;
    let off = |x: f64| {
        if mean > 0.0 {
            (x - mean) / mean * 100.0
        } else {
            0.0
        }
    };
    let per_master: Vec<Value> = masters
        .iter()
        .zip(&used)
        .map(|(node, s)| {
            json!({
                "node": node,
                "cpu_pct": round1(s / wall * 100.0),
                "cpu_us_per_job": round1(s * 1e6 / sizes.jobs as f64),
                "off_mean_pct": round1(off(*s)),
            })
        })
        .collect();
    let max_off = used.iter().map(|s| off(*s).abs()).fold(0.0, f64::max);
    Ok(json!({
        "enqueue_jobs_per_s": (sizes.jobs as f64 / enqueue.as_secs_f64()).round(),
        "process_jobs_per_s": (sizes.jobs as f64 / process.as_secs_f64()).round(),
        "redis_cpu_us_per_job": round1(used.iter().sum::<f64>() * 1e6 / sizes.jobs as f64),
        "per_master": per_master,
        "max_off_mean_pct": round1(max_off),
    }))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

/// Medians by layout, the spread layout's rates over one master's, and its evenness.
fn summary(lines: &BTreeMap<&str, Vec<Value>>, masters: u32) -> Value {
    let med = |layout: &str, field: &str| {
        median(
            lines
                .get(layout)
                .map(|v| v.iter().filter_map(|l| l[field].as_f64()).collect())
                .unwrap_or_default(),
        )
    };
    let ratio = |field: &str| match (med("spread", field), med("one_master", field)) {
        (Some(a), Some(b)) if b > 0.0 => json!(((a / b) * 100.0).round() / 100.0),
        _ => Value::Null,
    };
    let mut out = json!({"scenario": "cluster", "summary": true, "masters": masters});
    for layout in ["one_master", "spread"] {
        merge(
            &mut out,
            json!({ layout: {
                "enqueue_jobs_per_s": med(layout, "enqueue_jobs_per_s"),
                "process_jobs_per_s": med(layout, "process_jobs_per_s"),
                "redis_cpu_us_per_job": med(layout, "redis_cpu_us_per_job"),
                "max_off_mean_pct": med(layout, "max_off_mean_pct"),
            }}),
        );
    }
    let even = med("spread", "max_off_mean_pct").map(|m| m <= 20.0);
    merge(
        &mut out,
        json!({
            "enqueue_ratio": ratio("enqueue_jobs_per_s"),
            "process_ratio": ratio("process_jobs_per_s"),
            "spread_within_20pct": even,
        }),
    );
    out
}
