//! `keel bench --scenario ratelimit_check,cache_hit`: toolkit round trips against raw
//! single-command round trips on the same Redis, at the same concurrency, in one run.
//!
//! - `ratelimit_check`: Keel's GCRA check (one `EVALSHA` of a ~15-line script, key building,
//!   decision) vs `EVALSHA` of `return 1` (`engine: "raw-evalsha"`).
//! - `cache_hit`: Keel's typed `Cache::get` of a warm key (one `GET`, envelope parse) vs a raw
//!   `GET` of a value of the same size (`engine: "raw-get"`).
//!
//! Two raw baselines, both on the same Redis at the same concurrency:
//! - `raw-get` / `raw-evalsha`: redis-benchmark style — one connection per concurrent client,
//!   each waiting for its reply before sending the next (the baseline, `ratio`);
//! - `raw-get-pipelined` / `raw-evalsha-pipelined`: every client on one multiplexed connection,
//!   as Keel's toolkit is (`ratio_vs_pipelined`). This one measures Redis's own cost per command,
//!   where a 15-line script costs more than `return 1`.
//!
//! Each round runs the raw engines then Keel; a final `summary` line gives the medians.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::{Backend, BackendKind, Cache, CachePolicy, RateLimiter, RatePolicy, Write};
use serde_json::{json, Value};

/// Toolkit scenario names.
pub const SCENARIOS: &[&str] = &["ratelimit_check", "cache_hit"];

/// Runs `ops` operations with `concurrency` loops; returns (ops/s, sorted latencies ms).
async fn drive<F, Fut>(ops: usize, concurrency: usize, op: F) -> Result<(f64, Vec<f64>), String>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= ops {
                    return Ok::<_, String>(lat);
                }
                let t = Instant::now();
                op(task, i).await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    let mut all = Vec::with_capacity(ops);
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    let elapsed = started.elapsed();
    all.sort_by(|a, b| a.total_cmp(b));
    Ok(((ops as f64 / elapsed.as_secs_f64()).round(), all))
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let x = v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    (x * 1000.0).round() / 1000.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

/// How much work one toolkit scenario does.
pub struct Sizes {
    /// Operations per round and engine.
    pub ops: usize,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Bytes of the cached value's payload string.
    pub payload: usize,
    /// Rounds.
    pub rounds: usize,
}

/// Runs one toolkit scenario for `rounds` rounds, printing JSON lines.
pub async fn run(
    scenario: &str,
    backend: &Backend,
    raw: Option<&redis::aio::MultiplexedConnection>,
    url: Option<&str>,
    sizes: Sizes,
) {
    let Sizes {
        ops,
        concurrency,
        payload,
        rounds,
    } = sizes;
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let backend_name = if backend.kind() == BackendKind::Memory {
        "memory"
    } else {
        "redis"
    };
    let mut medians: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let keel_engine = "keel";
    let raw_engine = if scenario == "cache_hit" {
        "raw-get"
    } else {
        "raw-evalsha"
    };
    let piped_engine = if scenario == "cache_hit" {
        "raw-get-pipelined"
    } else {
        "raw-evalsha-pipelined"
    };
    // redis-benchmark style: one connection per client.
    let mut dedicated = Vec::new();
    if let (Some(url), Some(_)) = (url, raw) {
        let client = match redis::Client::open(url) {
            Ok(c) => c,
            Err(e) => {
                println!("{}", json!({"scenario": scenario, "error": e.to_string()}));
                return;
            }
        };
        for _ in 0..concurrency {
            match client.get_multiplexed_async_connection().await {
                Ok(c) => dedicated.push(c),
                Err(e) => {
                    println!("{}", json!({"scenario": scenario, "error": e.to_string()}));
                    return;
                }
            }
        }
    }
    let dedicated = Arc::new(dedicated);
    let value = json!({"id": 1, "payload": "x".repeat(payload)});
    let cache = Cache::new(backend, &format!("bench-{tag}"))
        .expect("a valid namespace")
        .with_policy(CachePolicy::ttl(Duration::from_secs(600)));
    let raw_key = format!("keelbench:raw:{tag}");
    if scenario == "cache_hit" {
        if let Err(e) = cache.set("warm", &value, Write::default()).await {
            println!("{}", json!({"scenario": scenario, "error": e.to_string()}));
            return;
        }
        if let Some(conn) = raw {
            let bytes = serde_json::to_vec(&value).unwrap_or_default();
            let mut c = conn.clone();
            let _: Result<(), _> = redis::cmd("SET")
                .arg(&raw_key)
                .arg(bytes)
                .arg("EX")
                .arg(600)
                .query_async(&mut c)
                .await;
        }
    }
    let limiter = RateLimiter::new(
        backend,
        [RatePolicy::gcra(
            &format!("bench-{tag}"),
            1_000_000_000,
            Duration::from_secs(3600),
        )],
    )
    .expect("a valid policy");
    let policy = format!("bench-{tag}");
    let trivial = redis::Script::new("return 1");
    for round in 1..=rounds {
        let mut engines = vec![];
        if raw.is_some() {
            engines.push(raw_engine);
            engines.push(piped_engine);
        }
        engines.push(keel_engine);
        for engine in engines {
            let result = match (scenario, engine) {
                ("cache_hit", "keel") => {
                    let cache = cache.clone();
                    drive(ops, concurrency, move |_, _| {
                        let cache = cache.clone();
                        async move {
                            match cache.get::<Value>("warm").await {
                                Ok(Some(_)) => Ok(()),
                                Ok(None) => Err("warm key missed".to_string()),
                                Err(e) => Err(e.to_string()),
                            }
                        }
                    })
                    .await
                }
                ("cache_hit", _) => {
                    let conn = raw.cloned().expect("raw engine needs Redis");
                    let key = raw_key.clone();
                    let own = (engine == raw_engine).then(|| dedicated.clone());
                    drive(ops, concurrency, move |task, _| {
                        let mut conn = match &own {
                            Some(d) => d[task].clone(),
                            None => conn.clone(),
                        };
                        let key = key.clone();
                        async move {
                            let v: Option<Vec<u8>> = redis::cmd("GET")
                                .arg(&key)
                                .query_async(&mut conn)
                                .await
                                .map_err(|e| e.to_string())?;
                            let v = v.ok_or("raw key missing")?;
                            std::hint::black_box(v);
                            Ok(())
                        }
                    })
                    .await
                }
                (_, "keel") => {
                    let (limiter, policy) = (limiter.clone(), policy.clone());
                    drive(ops, concurrency, move |_, i| {
                        let (limiter, policy) = (limiter.clone(), policy.clone());
                        async move {
                            let d = limiter
                                .check(&policy, &format!("user-{}", i % 1000))
                                .await
                                .map_err(|e| e.to_string())?;
                            if d.allowed {
                                Ok(())
                            } else {
                                Err("unexpected rejection".into())
                            }
                        }
                    })
                    .await
                }
                _ => {
                    let conn = raw.cloned().expect("raw engine needs Redis");
                    let script = trivial.clone();
                    let own = (engine == raw_engine).then(|| dedicated.clone());
                    drive(ops, concurrency, move |task, _| {
                        let mut conn = match &own {
                            Some(d) => d[task].clone(),
                            None => conn.clone(),
                        };
                        let script = script.clone();
                        async move {
                            let _: i64 = script
                                .invoke_async(&mut conn)
                                .await
                                .map_err(|e| e.to_string())?;
                            Ok(())
                        }
                    })
                    .await
                }
            };
            let mut line = json!({
                "scenario": scenario, "engine": engine, "backend": backend_name, "round": round,
                "n": ops, "concurrency": concurrency, "payload_bytes": payload,
            });
            match result {
                Ok((rate, lat)) => {
                    line["ops_per_s"] = json!(rate);
                    line["p50_ms"] = json!(pct(&lat, 0.5));
                    line["p99_ms"] = json!(pct(&lat, 0.99));
                    medians.entry(engine).or_default().push(rate);
                }
                Err(e) => line["error"] = json!(e),
            }
            println!("{line}");
        }
    }
    let keel = medians.get_mut(keel_engine).map(|v| median(v));
    let rawm = medians.get_mut(raw_engine).map(|v| median(v));
    let piped = medians.get_mut(piped_engine).map(|v| median(v));
    let mut summary = json!({
        "scenario": scenario, "summary": true, "backend": backend_name, "rounds": rounds,
        "concurrency": concurrency, "keel_ops_per_s": keel, "raw_engine": raw_engine,
        "raw_ops_per_s": rawm, "raw_pipelined_ops_per_s": piped,
    });
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some((a / b * 100.0).round() / 100.0),
        _ => None,
    };
    summary["ratio"] = json!(ratio(keel, rawm));
    summary["ratio_vs_pipelined"] = json!(ratio(keel, piped));
    println!("{summary}");
    let _ = cache.delete("warm").await;
    if let Some(conn) = raw {
        let mut c = conn.clone();
        let _: Result<(), _> = redis::cmd("DEL").arg(&raw_key).query_async(&mut c).await;
    }
}
