//! Health and monitoring of the toolkit backend: `PING` latency, and an `INFO` summary evaluated
//! against the seeds' alert thresholds.
//!
//! | figure            | warn            | critical        |
//! |-------------------|-----------------|-----------------|
//! | memory used / max | > 85 %          | > 95 %          |
//! | keyspace hit rate | < 70 %          | —               |
//! | p99 latency       | > 100 ms        | > 1 s           |
//! | reachable         | —               | no              |
//!
//! The hit rate is judged only after 100 lookups; memory only when `maxmemory` is set. The p99
//! is of this process's recent toolkit calls (the last 1024) plus a fresh `PING`.

use std::time::Duration;

use keel_core::{Result, ServerInfo};
use serde::{Deserialize, Serialize};

use crate::Backend;

/// Memory use above this fraction of `maxmemory` warns (seed: 85 %).
pub const MEMORY_WARN: f64 = 0.85;
/// Memory use above this fraction is critical.
pub const MEMORY_CRITICAL: f64 = 0.95;
/// Hit rate below this warns (seed: 70 %).
pub const HIT_RATE_WARN: f64 = 0.70;
/// p99 latency above this warns (seed: 100 ms).
pub const P99_WARN: Duration = Duration::from_millis(100);
/// p99 latency above this is critical.
pub const P99_CRITICAL: Duration = Duration::from_secs(1);

/// An overall judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Within every threshold.
    Ok,
    /// Past a warning threshold.
    Warn,
    /// Past a critical threshold, or unreachable.
    Critical,
}

/// The answer of [`ping`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` when it answered within the p99 warning threshold.
    pub status: Status,
    /// Round trip, ms (fractional).
    pub latency_ms: Option<f64>,
    /// Which backend.
    pub backend: String,
    /// Why it is not ok.
    pub error: Option<String>,
}

/// One threshold that was crossed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `memory`, `hit_rate`, `latency`.
    pub figure: String,
    /// `warn` or `critical`.
    pub level: Status,
    /// What was seen against what threshold.
    pub message: String,
}

/// The summary of [`info`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfoReport {
    /// The worst level of the alerts.
    pub status: Status,
    /// Which backend.
    pub backend: String,
    /// Server version.
    pub version: String,
    /// Seconds up.
    pub uptime_s: u64,
    /// Memory used, bytes.
    pub used_memory: u64,
    /// `maxmemory`, bytes (0: unlimited).
    pub max_memory: u64,
    /// Used / max, percent (when max is set).
    pub memory_percent: Option<f64>,
    /// Eviction policy.
    pub eviction_policy: String,
    /// hits / (hits + misses), percent (when there were lookups).
    pub hit_rate_percent: Option<f64>,
    /// Keyspace hits.
    pub keyspace_hits: u64,
    /// Keyspace misses.
    pub keyspace_misses: u64,
    /// Operations per second.
    pub ops_per_sec: u64,
    /// Connected clients.
    pub connected_clients: u64,
    /// Keys in the database.
    pub keys: u64,
    /// `PING` round trip now, ms.
    pub ping_ms: f64,
    /// p99 of recent calls, ms.
    pub p99_ms: f64,
    /// Persistence: `aof`, `rdb`, `aof+rdb` or `none`.
    pub persistence: String,
    /// Unix time of the last RDB save (0: never).
    pub rdb_last_save: u64,
    /// Thresholds crossed.
    pub alerts: Vec<Alert>,
    /// On a Redis Cluster, each master's own figures (the ones above are summed over them);
    /// empty on one server. A master's memory over the thresholds is an alert of its own.
    #[serde(default)]
    pub nodes: Vec<keel_core::NodeInfo>,
}

/// `PING` with latency; never an error — an unreachable backend is `critical`.
pub async fn ping(backend: &Backend) -> Health {
    let name = format!("{:?}", backend.kind()).to_lowercase();
    match backend.kv().ping().await {
        Ok(d) => Health {
            status: if d > P99_CRITICAL {
                Status::Critical
            } else if d > P99_WARN {
                Status::Warn
            } else {
                Status::Ok
            },
            latency_ms: Some(d.as_secs_f64() * 1000.0),
            backend: name,
            error: None,
        },
        Err(e) => Health {
            status: Status::Critical,
            latency_ms: None,
            backend: name,
            error: Some(e.to_string()),
        },
    }
}

/// The p99 of `samples` (µs), in ms.
pub fn p99_ms(samples: &[u32]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut s = samples.to_vec();
    s.sort_unstable();
    let idx = ((s.len() as f64) * 0.99).ceil() as usize - 1;
    s[idx.min(s.len() - 1)] as f64 / 1000.0
}

/// Evaluates the figures into alerts and a status.
pub fn evaluate(info: &ServerInfo, p99: f64) -> (Status, Vec<Alert>, Option<f64>, Option<f64>) {
    let mut alerts = Vec::new();
    let memory = (info.max_memory > 0).then(|| info.used_memory as f64 / info.max_memory as f64);
    if let Some(m) = memory {
        let level = if m > MEMORY_CRITICAL {
            Some(Status::Critical)
        } else if m > MEMORY_WARN {
            Some(Status::Warn)
        } else {
            None
        };
        if let Some(level) = level {
            alerts.push(Alert {
                figure: "memory".into(),
                level,
                message: format!(
                    "memory at {:.1} % of maxmemory (warn above 85 %)",
                    m * 100.0
                ),
            });
        }
    }
    // One full master is trouble even when the cluster's total is not.
    for node in &info.nodes {
        let Some(m) =
            (node.max_memory > 0).then(|| node.used_memory as f64 / node.max_memory as f64)
        else {
            continue;
        };
        let level = match m {
            m if m > MEMORY_CRITICAL => Status::Critical,
            m if m > MEMORY_WARN => Status::Warn,
            _ => continue,
        };
        alerts.push(Alert {
            figure: "memory".into(),
            level,
            message: format!(
                "master {} memory at {:.1} % of its maxmemory (warn above 85 %)",
                node.addr,
                m * 100.0
            ),
        });
    }
    let lookups = info.keyspace_hits + info.keyspace_misses;
    let hit_rate = (lookups > 0).then(|| info.keyspace_hits as f64 / lookups as f64);
    if let Some(h) = hit_rate.filter(|_| lookups >= 100) {
        if h < HIT_RATE_WARN {
            alerts.push(Alert {
                figure: "hit_rate".into(),
                level: Status::Warn,
                message: format!("keyspace hit rate {:.1} % (warn below 70 %)", h * 100.0),
            });
        }
    }
    let p99_d = Duration::from_secs_f64(p99 / 1000.0);
    if p99_d > P99_WARN {
        alerts.push(Alert {
            figure: "latency".into(),
            level: if p99_d > P99_CRITICAL {
                Status::Critical
            } else {
                Status::Warn
            },
            message: format!("p99 latency {p99:.1} ms (warn above 100 ms)"),
        });
    }
    let status = alerts.iter().map(|a| a.level).max().unwrap_or(Status::Ok);
    (
        status,
        alerts,
        memory.map(|m| m * 100.0),
        hit_rate.map(|h| h * 100.0),
    )
}

/// The monitoring summary. Errors (`backend-unavailable`) when the backend cannot be reached.
pub async fn info(backend: &Backend) -> Result<InfoReport> {
    let kv = backend.kv();
    let ping = kv.ping().await?;
    let info = kv.info().await?;
    let mut samples = kv.latency_samples();
    samples.push(ping.as_micros().min(u32::MAX as u128) as u32);
    let p99 = p99_ms(&samples);
    let (status, alerts, memory_percent, hit_rate_percent) = evaluate(&info, p99);
    let persistence = match (info.aof_enabled, info.rdb_enabled) {
        (true, true) => "aof+rdb",
        (true, false) => "aof",
        (false, true) => "rdb",
        (false, false) => "none",
    };
    Ok(InfoReport {
        status,
        backend: format!("{:?}", backend.kind()).to_lowercase(),
        version: info.version.clone(),
        uptime_s: info.uptime_s,
        used_memory: info.used_memory,
        max_memory: info.max_memory,
        memory_percent,
        eviction_policy: info.eviction_policy.clone(),
        hit_rate_percent,
        keyspace_hits: info.keyspace_hits,
        keyspace_misses: info.keyspace_misses,
        ops_per_sec: info.ops_per_sec,
        connected_clients: info.connected_clients,
        keys: info.keys,
        ping_ms: ping.as_secs_f64() * 1000.0,
        p99_ms: p99,
        persistence: persistence.into(),
        rdb_last_save: info.rdb_last_save,
        alerts,
        nodes: info.nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(used: u64, max: u64, hits: u64, misses: u64) -> ServerInfo {
        ServerInfo {
            used_memory: used,
            max_memory: max,
            keyspace_hits: hits,
            keyspace_misses: misses,
            ..ServerInfo::default()
        }
    }

    #[test]
    fn thresholds_of_the_seeds() {
        let (s, a, m, h) = evaluate(&info(50, 100, 90, 10), 1.0);
        assert_eq!((s, a.len()), (Status::Ok, 0));
        assert_eq!(m, Some(50.0));
        assert_eq!(h, Some(90.0));
        let (s, a, _, _) = evaluate(&info(86, 100, 90, 10), 1.0);
        assert_eq!(s, Status::Warn);
        assert_eq!(a[0].figure, "memory");
        assert_eq!(evaluate(&info(96, 100, 90, 10), 1.0).0, Status::Critical);
        // A cluster whose total is fine but one master is nearly full.
        let node = |addr: &str, used| keel_core::NodeInfo {
            addr: addr.into(),
            used_memory: used,
            max_memory: 100,
            ..Default::default()
        };
        let cluster = ServerInfo {
            nodes: vec![node("10.0.0.1:7000", 20), node("10.0.0.2:7000", 97)],
            ..info(117, 200, 90, 10)
        };
        let (s, a, _, _) = evaluate(&cluster, 1.0);
        assert_eq!(s, Status::Critical);
        assert!(a[0].message.contains("10.0.0.2:7000"), "{a:?}");
        let (s, a, _, _) = evaluate(&info(1, 0, 69, 31), 1.0);
        assert_eq!((s, a[0].figure.as_str()), (Status::Warn, "hit_rate"));
        // Too few lookups to judge.
        assert_eq!(evaluate(&info(1, 0, 1, 9), 1.0).0, Status::Ok);
        assert_eq!(evaluate(&info(1, 0, 0, 0), 101.0).0, Status::Warn);
        assert_eq!(evaluate(&info(1, 0, 0, 0), 1001.0).0, Status::Critical);
        assert_eq!(evaluate(&info(1, 0, 0, 0), 100.0).0, Status::Ok);
    }

    #[test]
    fn p99_of_samples() {
        let s: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(p99_ms(&s), 99.0);
        assert_eq!(p99_ms(&[]), 0.0);
        assert_eq!(p99_ms(&[5000]), 5.0);
    }
}
