//! `keel redis …`, `keel cache …`, `keel ratelimit …`: the toolkit from the shell. They work on
//! a shared Redis (another process's memory backend is out of reach).

use keel::config::Config;
use keel::health::{self, Status};
use keel::{Cache, Error};
use serde_json::{json, Value};

use crate::{CacheAction, Failure, RateLimitAction, RedisAction};

async fn backend(config: &Config, command: &str) -> Result<keel::Backend, Failure> {
    if config.redis_url.is_none() {
        return Err(Error::NeedsSharedBackend(command.to_string()).into());
    }
    Ok(config.backend().await?)
}

fn print(json_out: bool, value: &Value, human: impl FnOnce() -> String) {
    if json_out {
        println!("{value}");
    } else {
        println!("{}", human());
    }
}

/// `keel redis health|info`.
pub async fn redis(config: &Config, action: RedisAction, json_out: bool) -> Result<(), Failure> {
    let b = backend(config, "keel redis").await?;
    match action {
        RedisAction::Health => {
            let h = health::ping(&b).await;
            if let (Status::Critical, Some(e)) = (h.status, &h.error) {
                return Err(Error::BackendUnavailable(e.clone()).into());
            }
            let v = serde_json::to_value(&h).unwrap_or(Value::Null);
            print(json_out, &v, || {
                format!(
                    "{:?}: PING {:.2} ms",
                    h.status,
                    h.latency_ms.unwrap_or_default()
                )
                .to_lowercase()
            });
        }
        RedisAction::Info => {
            let r = health::info(&b).await?;
            let v = serde_json::to_value(&r).unwrap_or(Value::Null);
            print(json_out, &v, || {
                let pct = |p: Option<f64>| {
                    p.map(|p| format!("{p:.1} %"))
                        .unwrap_or_else(|| "n/a".into())
                };
                let mut out = format!(
                    "status        {:?}\nversion       {}\nuptime        {} s\nmemory        {} bytes used, max {} ({}), policy {}\nhit rate      {} ({} hits, {} misses)\nops/sec       {}\nclients       {}\nkeys          {}\nlatency       ping {:.2} ms, p99 {:.2} ms\npersistence   {}",
                    r.status, r.version, r.uptime_s, r.used_memory,
                    if r.max_memory == 0 { "unlimited".to_string() } else { r.max_memory.to_string() },
                    pct(r.memory_percent), r.eviction_policy, pct(r.hit_rate_percent),
                    r.keyspace_hits, r.keyspace_misses, r.ops_per_sec, r.connected_clients, r.keys,
                    r.ping_ms, r.p99_ms, r.persistence,
                );
                for a in &r.alerts {
                    out.push_str(&format!("\nalert         {:?}: {}", a.level, a.message));
                }
                out
            });
        }
    }
    Ok(())
}

/// `keel cache get|del|del-pattern`.
pub async fn cache(config: &Config, action: CacheAction, json_out: bool) -> Result<(), Failure> {
    let (ns, rest) = match &action {
        CacheAction::Get { namespace, key } | CacheAction::Del { namespace, key } => {
            (namespace.clone(), key.clone())
        }
        CacheAction::DelPattern { namespace, pattern } => (namespace.clone(), pattern.clone()),
    };
    let ns = ns.as_str();
    // Validate before connecting: bad input changes nothing.
    keel::keys::validate_name("NAMESPACE", ns)?;
    if matches!(action, CacheAction::DelPattern { .. }) {
        if rest.is_empty() || rest.contains(['{', '}']) {
            return Err(
                Error::invalid("PATTERN", "must be a non-empty glob without braces").into(),
            );
        }
    } else {
        keel::keys::validate_part("KEY", &rest)?;
    }
    let b = backend(config, "keel cache").await?;
    let c = Cache::new(&b, ns)?;
    match action {
        CacheAction::Get { key, .. } => {
            let v: Option<Value> = c.get(&key).await?;
            let out = json!({"namespace": ns, "key": key, "hit": v.is_some(), "value": v});
            print(json_out, &out, || match &v {
                Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
                None => "(miss)".into(),
            });
        }
        CacheAction::Del { key, .. } => {
            let deleted = c.delete(&key).await?;
            print(json_out, &json!({"deleted": deleted}), || {
                if deleted {
                    "deleted".into()
                } else {
                    "not cached".into()
                }
            });
        }
        CacheAction::DelPattern { pattern, .. } => {
            let n = c.delete_pattern(&pattern).await?;
            print(json_out, &json!({"deleted": n}), || format!("deleted {n}"));
        }
    }
    Ok(())
}

/// `keel ratelimit check POLICY KEY`. Exit 4 when the request would be rejected.
pub async fn ratelimit(
    config: &Config,
    action: RateLimitAction,
    json_out: bool,
) -> Result<(), Failure> {
    let RateLimitAction::Check { policy, key, cost } = action;
    let cost: u64 =
        cost.parse().ok().filter(|c| *c > 0).ok_or_else(|| {
            Error::invalid("--cost", format!("{cost:?} is not a positive integer"))
        })?;
    if !config.rate_policies.iter().any(|p| p.name == policy) {
        let names: Vec<&str> = config
            .rate_policies
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        return Err(Error::invalid(
            "POLICY",
            format!("unknown policy {policy:?}; known: {}", names.join(", ")),
        )
        .into());
    }
    keel::keys::validate_part("KEY", &key)?;
    let b = backend(config, "keel ratelimit").await?;
    let rl = config.rate_limiter(&b)?;
    let d = rl.check_n(&policy, &key, cost).await?;
    let mut v = serde_json::to_value(&d).unwrap_or(Value::Null);
    let headers: serde_json::Map<String, Value> = d
        .headers()
        .into_iter()
        .chain(d.ietf_headers())
        .map(|(k, v)| (k.to_string(), Value::String(v)))
        .collect();
    v["headers"] = Value::Object(headers);
    print(json_out, &v, || {
        let verdict = if d.allowed { "allowed" } else { "rejected" };
        let mut s = format!(
            "{verdict}: {} of {} left, resets in {} ms",
            d.remaining,
            d.limit,
            d.reset_after.as_millis()
        );
        if let Some(r) = d.retry_after {
            s.push_str(&format!(", retry after {} ms", r.as_millis()));
        }
        s
    });
    if d.allowed {
        Ok(())
    } else {
        Err(Failure {
            code: "rate-limited",
            message: format!("rate limit {policy} rejected {key}"),
            field: None,
            exit: 4,
        })
    }
}
