//! `/redis` (admin): the `INFO` summary with its thresholds; the panel the overview shows
//! (the `INFO` summary for admins, the public `PING` for viewers).

use askama::Template;
use axum::response::Response;
use keel::health::{InfoReport, Status};

use crate::console::ctx::Ctx;
use crate::console::page::Layout;
use crate::console::view::{self, esc, time};
use crate::error::ApiError;
use crate::ops;

/// One figure of the panel.
pub struct Metric {
    pub label: String,
    pub value: String,
    pub threshold: String,
    pub level: String,
}

/// The Redis panel.
pub struct RedisPanel {
    /// `ok`, `warn`, `critical`, or empty when unknown.
    pub status: String,
    pub error: String,
    pub backend: String,
    pub metrics: Vec<Metric>,
    pub alerts: Vec<String>,
    /// Only the PING was available (viewer role).
    pub ping_only: bool,
}

fn level(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Warn => "warn",
        Status::Critical => "critical",
    }
}

/// Bytes as `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The panel of an `INFO` summary.
pub fn panel_from_info(i: &InfoReport) -> RedisPanel {
    let pct = |v: Option<f64>| v.map(|p| format!("{p:.1} %"));
    let mem = match pct(i.memory_percent) {
        Some(p) => format!("{} ({p} of maxmemory)", bytes(i.used_memory)),
        None => format!("{} (no maxmemory set)", bytes(i.used_memory)),
    };
    let level_of = |figure: &str| {
        i.alerts
            .iter()
            .find(|a| a.figure == figure)
            .map(|a| level(a.level))
            .unwrap_or("ok")
            .to_string()
    };
    RedisPanel {
        status: level(i.status).into(),
        error: String::new(),
        backend: i.backend.clone(),
        metrics: vec![
            Metric {
                label: "Memory".into(),
                value: mem,
                threshold: "warn > 85 %, critical > 95 % of maxmemory".into(),
                level: level_of("memory"),
            },
            Metric {
                label: "Hit rate".into(),
                value: pct(i.hit_rate_percent).unwrap_or_else(|| "— (under 100 lookups)".into()),
                threshold: "warn < 70 %".into(),
                level: level_of("hit_rate"),
            },
            Metric {
                label: "Latency p99".into(),
                value: format!("{:.2} ms", i.p99_ms),
                threshold: "warn > 100 ms, critical > 1 s".into(),
                level: level_of("latency"),
            },
        ],
        alerts: i.alerts.iter().map(|a| a.message.clone()).collect(),
        ping_only: false,
    }
}

/// The Redis panel: the `INFO` summary for admins, the public PING for viewers.
pub async fn redis_panel(ctx: &Ctx) -> RedisPanel {
    if ctx.can_act() {
        if let Ok(i) = ops::system::redis_info(&ctx.state, &ctx.caller).await {
            return panel_from_info(&i);
        }
    }
    let h = ops::system::redis_health(&ctx.state).await;
    RedisPanel {
        status: level(h.status).into(),
        backend: h.backend.clone(),
        error: h.error.clone().unwrap_or_default(),
        metrics: vec![Metric {
            label: "Latency (PING)".into(),
            value: h
                .latency_ms
                .map(|v| format!("{v:.2} ms"))
                .unwrap_or_else(|| "—".into()),
            threshold: "warn > 100 ms, critical > 1 s".into(),
            level: level(h.status).into(),
        }],
        alerts: Vec::new(),
        ping_only: true,
    }
}

#[derive(Template)]
#[template(path = "console/redis.html")]
struct RedisPage {
    layout: Layout,
    redis: RedisPanel,
    details: Vec<(&'static str, String)>,
    /// A Redis Cluster's masters, one row each (empty on one server).
    nodes: Vec<NodeRow>,
}

/// One master of a cluster, as the page shows it.
struct NodeRow {
    addr: String,
    memory: String,
    level: &'static str,
    keys: u64,
    ops_per_sec: u64,
    clients: u64,
    hit_rate: String,
    cpu: String,
    uptime: String,
}

fn node_rows(nodes: &[keel::NodeInfo]) -> Vec<NodeRow> {
    nodes
        .iter()
        .map(|n| {
            let share = (n.max_memory > 0).then(|| n.used_memory as f64 / n.max_memory as f64);
            let lookups = n.keyspace_hits + n.keyspace_misses;
            NodeRow {
                addr: n.addr.clone(),
                memory: match share {
                    Some(s) => format!("{} ({:.1} %)", bytes(n.used_memory), s * 100.0),
                    None => bytes(n.used_memory),
                },
                level: match share {
                    Some(s) if s > keel::health::MEMORY_CRITICAL => "critical",
                    Some(s) if s > keel::health::MEMORY_WARN => "warn",
                    _ => "ok",
                },
                keys: n.keys,
                ops_per_sec: n.ops_per_sec,
                clients: n.connected_clients,
                hit_rate: match lookups {
                    0 => "—".into(),
                    l => format!("{:.1} %", n.keyspace_hits as f64 / l as f64 * 100.0),
                },
                cpu: format!("{:.1} s", n.cpu_s),
                uptime: view::duration(n.uptime_s as i64 * 1000),
            }
        })
        .collect()
}

/// `GET /redis`.
pub async fn redis(ctx: Ctx) -> Response {
    if !ctx.can_act() {
        return ctx.failed(ApiError::forbidden(
            "Redis metrics need the admin role; this token is a viewer.",
        ));
    }
    let i = match ops::system::redis_info(&ctx.state, &ctx.caller).await {
        Ok(i) => i,
        Err(e) => return ctx.failed(e),
    };
    let details = vec![
        ("Version", esc(&i.version)),
        ("Uptime", view::duration(i.uptime_s as i64 * 1000)),
        ("Used memory", bytes(i.used_memory)),
        (
            "Max memory",
            match i.max_memory {
                0 => "not set".into(),
                m => bytes(m),
            },
        ),
        ("Eviction policy", esc(&i.eviction_policy)),
        ("Keyspace hits", i.keyspace_hits.to_string()),
        ("Keyspace misses", i.keyspace_misses.to_string()),
        ("Operations per second", i.ops_per_sec.to_string()),
        ("Connected clients", i.connected_clients.to_string()),
        ("Keys", i.keys.to_string()),
        ("PING", format!("{:.2} ms", i.ping_ms)),
        ("Persistence", esc(&i.persistence)),
        (
            "Last RDB save",
            match i.rdb_last_save {
                0 => "never".into(),
                s => time(s as i64 * 1000),
            },
        ),
    ];
    ctx.page(RedisPage {
        layout: ctx.layout("Redis", "redis"),
        redis: panel_from_info(&i),
        details,
        nodes: node_rows(&i.nodes),
    })
}
