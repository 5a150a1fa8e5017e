//! `INFO` read into the toolkit's server figures: summed over a cluster's masters, and each
//! master's own.

use keel_core::{Result, ServerInfo};

use crate::RedisBackend;

impl RedisBackend {
    /// The server figures (`KvBackend::info`).
    pub(crate) async fn server_info(&self) -> Result<ServerInfo> {
        let texts = self.info_of_masters().await?;
        // DBSIZE on a cluster is summed over its masters (redis-rs asks each).
        let keys: u64 = self.kv_cmd("DBSIZE", redis::cmd("DBSIZE")).await?;
        // `save` tells whether snapshots are configured; managed Redis may refuse CONFIG, then
        // whether any snapshot was taken since start is the best sign.
        let save: Option<Vec<String>> = self
            .kv_cmd(
                "CONFIG GET save",
                redis::cmd("CONFIG").arg("GET").arg("save").to_owned(),
            )
            .await
            .ok();
        let all: Vec<_> = texts.iter().map(|(_, t)| info_fields(t)).collect();
        let f = all.first().cloned().unwrap_or_default();
        // Amounts are summed over a cluster's masters; the rest is the first master's.
        let n = |k: &str| -> u64 {
            let each = all.iter().map(|f| {
                f.get(k)
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            });
            match k {
                "used_memory"
                | "maxmemory"
                | "keyspace_hits"
                | "keyspace_misses"
                | "instantaneous_ops_per_sec"
                | "connected_clients"
                | "rdb_changes_since_last_save" => each.sum(),
                "uptime_in_seconds" => each.min().unwrap_or(0),
                _ => each.take(1).sum(),
            }
        };
        let server = if f.contains_key("valkey_version") {
            format!("valkey {}", f.get("valkey_version").unwrap_or(&""))
        } else {
            format!("redis {}", f.get("redis_version").unwrap_or(&"?"))
        };
        Ok(ServerInfo {
            version: server,
            uptime_s: n("uptime_in_seconds"),
            used_memory: n("used_memory"),
            max_memory: n("maxmemory"),
            eviction_policy: f.get("maxmemory_policy").unwrap_or(&"").to_string(),
            keyspace_hits: n("keyspace_hits"),
            keyspace_misses: n("keyspace_misses"),
            ops_per_sec: n("instantaneous_ops_per_sec"),
            connected_clients: n("connected_clients"),
            aof_enabled: n("aof_enabled") == 1,
            rdb_enabled: match save {
                Some(v) => v.get(1).is_some_and(|s| !s.trim().is_empty()),
                None => n("rdb_saves") > 0,
            },
            rdb_last_save: n("rdb_last_save_time"),
            rdb_changes_since_save: n("rdb_changes_since_last_save"),
            keys,
            nodes: texts
                .iter()
                .zip(&all)
                .filter_map(|((addr, _), f)| addr.as_ref().map(|a| node_info(a, f)))
                .collect(),
        })
    }
}

/// One master's figures from its `INFO` fields.
fn node_info(
    (host, port): &(String, u16),
    f: &std::collections::HashMap<&str, &str>,
) -> keel_core::NodeInfo {
    let n = |k: &str| {
        f.get(k)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let s = |k: &str| {
        f.get(k)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // `db0:keys=12,expires=0,avg_ttl=0`
    let keys = f
        .get("db0")
        .and_then(|v| v.split(',').find_map(|p| p.strip_prefix("keys=")))
        .and_then(|k| k.parse().ok())
        .unwrap_or(0);
    keel_core::NodeInfo {
        addr: format!("{host}:{port}"),
        version: format!("redis {}", f.get("redis_version").unwrap_or(&"?")),
        uptime_s: n("uptime_in_seconds"),
        used_memory: n("used_memory"),
        max_memory: n("maxmemory"),
        keys,
        ops_per_sec: n("instantaneous_ops_per_sec"),
        connected_clients: n("connected_clients"),
        keyspace_hits: n("keyspace_hits"),
        keyspace_misses: n("keyspace_misses"),
        cpu_s: s("used_cpu_user") + s("used_cpu_sys"),
    }
}

pub(crate) fn info_fields(text: &str) -> std::collections::HashMap<&str, &str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end().split_once(':'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_lines_parse() {
        let f = info_fields("# Server\r\nredis_version:7.2.4\r\nused_memory:1024\r\n\r\n");
        assert_eq!(f.get("redis_version"), Some(&"7.2.4"));
        assert_eq!(f.get("used_memory"), Some(&"1024"));
    }
}
