//! The `keel` command line, run as a process against Redis with a unique prefix: output shapes,
//! exit codes, bad input that changes nothing, memory-backend refusal, invalid configuration.

use std::collections::BTreeSet;
use std::process::{Command, Output};

use serde_json::{json, Value};

#[path = "../../keel/tests/support/redis_cluster.rs"]
mod redis_cluster;
use redis_cluster::LocalCluster;

struct Cli {
    prefix: String,
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        Cli {
            prefix: format!("kcli-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            // An empty working directory: no keel.toml is picked up by accident.
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn raw(&self, args: &[&str], redis: bool) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
        c.current_dir(self.dir.path())
            .env_remove("REDIS_URL")
            .env_remove("REDIS_KEY_PREFIX")
            .env("RUST_LOG", "warn");
        if redis {
            c.args([
                "--redis",
                "redis://127.0.0.1:6379",
                "--prefix",
                &self.prefix,
            ]);
        }
        c.args(args).output().expect("keel runs")
    }

    fn ok(&self, args: &[&str]) -> Value {
        let out = self.raw(args, true);
        assert!(
            out.status.success(),
            "keel {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Runs a command that must fail with exit 2 and a JSON error naming `field`.
    fn bad(&self, args: &[&str], field: &str) {
        let out = self.raw(args, true);
        assert_eq!(
            out.status.code(),
            Some(2),
            "keel {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON error");
        assert_eq!(v["error"]["field"], json!(field), "keel {args:?}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{v}"
        );
    }

    fn counts(&self, queue: &str) -> Value {
        let all = self.ok(&["--json", "queues"]);
        all.as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == json!(queue))
            .cloned()
            .unwrap_or(Value::Null)
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn enqueue_list_show_pause_and_dlq() {
    let cli = Cli::new();
    let id = cli.ok(&[
        "--json",
        "enqueue",
        "mail",
        "send",
        "--data",
        r#"{"to":"a"}"#,
        "--attempts",
        "2",
        "--backoff",
        "fixed:10",
        "--priority",
        "3",
    ])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let custom = cli.ok(&[
        "--json", "enqueue", "mail", "send", "--job-id", "order-1", "--delay", "60000",
    ]);
    assert_eq!(custom, json!({"id": "order-1"}));
    let again = cli.ok(&["--json", "enqueue", "mail", "other", "--job-id", "order-1"]);
    assert_eq!(
        again,
        json!({"id": "order-1"}),
        "an existing id returns the existing job"
    );

    let row = cli.counts("mail");
    assert_eq!(
        keys(&row),
        [
            "active",
            "completed",
            "delayed",
            "dlq",
            "failed",
            "name",
            "paused",
            "prioritized",
            "waiting"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(
        (
            row["prioritized"].clone(),
            row["delayed"].clone(),
            row["paused"].clone()
        ),
        (json!(1), json!(1), json!(false))
    );

    let jobs = cli.ok(&[
        "--json",
        "jobs",
        "mail",
        "--state",
        "prioritized",
        "--limit",
        "10",
    ]);
    assert_eq!(jobs.as_array().unwrap().len(), 1);
    assert_eq!(jobs[0]["id"], json!(id));

    let job = cli.ok(&["--json", "job", "mail", &id]);
    assert_eq!(
        keys(&job),
        [
            "attemptsMade",
            "data",
            "failedReason",
            "finishedOn",
            "id",
            "logs",
            "name",
            "opts",
            "processedOn",
            "progress",
            "returnvalue",
            "stacktrace",
            "state",
            "timestamp"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(job["data"], json!({"to": "a"}));
    assert_eq!(job["opts"]["attempts"], json!(2));
    assert_eq!(
        job["opts"]["backoff"],
        json!({"type": "fixed", "delay": 10})
    );
    assert_eq!(job["state"], json!("prioritized"));

    cli.ok(&["--json", "pause", "mail"]);
    assert_eq!(cli.counts("mail")["paused"], json!(true));
    cli.ok(&["--json", "resume", "mail"]);
    assert_eq!(cli.counts("mail")["paused"], json!(false));

    assert_eq!(cli.ok(&["--json", "dlq", "mail", "list"]), json!([]));
    assert_eq!(
        cli.ok(&["--json", "dlq", "mail", "replay", "--all", "--dry-run"]),
        json!({"replayed": 0, "would_replay": 0, "dry_run": true})
    );
    let out = cli.raw(&["--json", "dlq", "mail", "remove", "failed-nope"], true);
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], json!("not-found"));
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let cli = Cli::new();
    cli.ok(&["--json", "enqueue", "mail", "seed"]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["--json", "enqueue", "mail", "x", "--data", "{not json"],
            "--data",
        ),
        (
            &["--json", "enqueue", "mail", "x", "--delay", "-5"],
            "--delay",
        ),
        (
            &["--json", "enqueue", "mail", "x", "--backoff", "linear:5"],
            "--backoff",
        ),
        (
            &["--json", "enqueue", "mail", "x", "--attempts", "0"],
            "--attempts",
        ),
        (
            &["--json", "enqueue", "mail", "x", "--job-id", "a:b"],
            "--job-id",
        ),
        (&["--json", "enqueue", "dlq:mail", "x"], "QUEUE"),
        (&["--json", "jobs", "mail", "--state", "done"], "--state"),
        (&["--json", "jobs", "mail", "--limit", "0"], "--limit"),
        (&["--json", "pause", "bad:name"], "QUEUE"),
        (&["--json", "resume", "bad:name"], "QUEUE"),
        (&["--json", "dlq", "nosuch", "list"], "QUEUE"),
    ];
    for (args, field) in cases {
        cli.bad(args, field);
    }
    let row = cli.counts("mail");
    assert_eq!(
        row["waiting"],
        json!(1),
        "nothing was added by the refused commands"
    );
    assert!(
        cli.counts("nosuch").is_null(),
        "no queue was created by the refused commands"
    );
}

/// `keel pause` takes every queue `keel enqueue` takes, a queue without jobs yet included;
/// `keel token create --tenant` refuses a tenant no queue names (the API does too).
#[test]
fn pause_takes_what_enqueue_takes_and_tenants_must_exist() {
    let cli = Cli::new();
    cli.ok(&["--json", "pause", "fresh"]);
    cli.ok(&["--json", "enqueue", "fresh", "x"]);
    let row = cli.counts("fresh");
    assert_eq!(
        (&row["paused"], &row["waiting"]),
        (&json!(true), &json!(1)),
        "{row}"
    );
    cli.ok(&["--json", "resume", "fresh"]);
    assert_eq!(cli.counts("fresh")["paused"], json!(false));
    cli.bad(
        &[
            "--json", "token", "create", "--role", "admin", "--tenant", "nobody",
        ],
        "--tenant",
    );
}

#[test]
fn memory_backend_refuses_cross_process_commands() {
    let cli = Cli::new();
    for args in [
        vec!["--json", "queues"],
        vec!["--json", "enqueue", "mail", "x"],
        vec!["--json", "pause", "mail"],
        vec!["--json", "dlq", "mail", "list"],
    ] {
        let out = cli.raw(&args, false);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v["error"]["code"],
            json!("needs-shared-backend"),
            "{args:?}"
        );
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("REDIS_URL"));
    }
}

#[test]
fn invalid_config_exits_2_naming_the_key() {
    let cli = Cli::new();
    let path = cli.dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[queues.web]\nbackoff = { type = \"fixed\", delay_ms = \"soon\" }\n",
    )
    .unwrap();
    let out = cli.raw(&["--config", path.to_str().unwrap(), "worker"], false);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("queues.web.backoff.delay_ms"), "{err}");
}

#[test]
fn unreachable_redis_exits_3() {
    let cli = Cli::new();
    let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
    let out = c
        .current_dir(cli.dir.path())
        .args(["--json", "--redis", "redis://127.0.0.1:1", "queues"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], json!("backend-unavailable"));
}

/// Keel on a real local Redis Cluster (3 masters, 3 replicas): through a `redis+cluster://`
/// URL of its seeds and through a plain URL of any one node, a queue on Keel's engine is added
/// to and listed; several hosts in a plain URL end Keel with exit 2 and a message saying how to
/// name a cluster, never a raw `MOVED`.
#[test]
fn keel_runs_on_a_redis_cluster() {
    let cli = Cli::new();
    let cluster = LocalCluster::start();
    std::fs::write(
        cli.dir.path().join("keel.toml"),
        "[defaults]\nengine = \"keel\"\n",
    )
    .unwrap();
    let one_node = format!("redis://127.0.0.1:{}", cluster.ports[4]);
    for (i, url) in [cluster.url(), one_node].iter().enumerate() {
        let queue = format!("orders-{i}");
        let run = |args: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_keel"))
                .current_dir(cli.dir.path())
                .env("REDIS_KEY_PREFIX", format!("kcli{i}"))
                .args(["--json", "--redis", url])
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{url} {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        };
        run(&["enqueue", &queue, "job", "--data", "{\"n\":1}"]);
        let listed = run(&["queues"]).to_string();
        assert!(listed.contains(&queue), "{url}: {listed}");
        // The toolkit too (it answered MOVED before): a miss, and a pattern delete over every
        // master.
        run(&["cache", "get", "pages", "no-such-key"]);
        run(&["cache", "del-pattern", "pages", "*"]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(cli.dir.path())
        .args([
            "--json",
            "--redis",
            "redis://127.0.0.1:1,127.0.0.1:2",
            "queues",
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(2), "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("redis+cluster://"), "{message}");
}

/// Start-up errors name the URL they could not reach, never its password, also when it is a
/// query parameter.
#[test]
fn startup_errors_never_show_passwords() {
    let cli = Cli::new();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "REDIS_URL",
            "redis://127.0.0.1:1/?password=hunter2",
            &["--json", "queues"],
        ),
        (
            "REDIS_URL",
            "redis://:hunter2@127.0.0.1:1",
            &["--json", "queues"],
        ),
        (
            "DATABASE_URL",
            "postgres://app@127.0.0.1:1/x?password=hunter2",
            &["--json", "token", "list"],
        ),
        (
            "DATABASE_URL",
            "postgres://app:hunter2@127.0.0.1:1/x",
            &["--json", "token", "list"],
        ),
    ];
    for (var, url, args) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_keel"))
            .current_dir(cli.dir.path())
            .env_remove("REDIS_URL")
            .env(var, url)
            .args(*args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(3), "{var}={url}: {text}");
        assert!(!text.contains("hunter2"), "{var}={url} leaked: {text}");
        assert!(
            text.contains("127.0.0.1:1"),
            "the error names the address: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_and_remove_real_entries() {
    let cli = Cli::new();
    let backend = keel::Backend::redis(keel::backend::RedisSettings {
        url: "redis://127.0.0.1:6379".into(),
        prefix: cli.prefix.clone(),
        command_timeout: std::time::Duration::from_secs(5),
        sharded_pubsub: false,
    })
    .await
    .unwrap();
    let q = keel::Queue::new(&backend, "hooks").unwrap();
    let mut entry_ids = Vec::new();
    for i in 0..3 {
        let job = q
            .add("deliver", json!({"n": i}), keel::JobOptions::default())
            .await
            .unwrap();
        entry_ids.push(
            q.dlq()
                .record(&job, "receiver down", vec![])
                .await
                .unwrap()
                .id,
        );
    }
    let list = cli.ok(&["--json", "dlq", "hooks", "list"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(
        keys(&list[0]),
        [
            "attempts",
            "data",
            "failedAt",
            "id",
            "lastError",
            "name",
            "opts",
            "originalJobId",
            "originalQueue",
            "stacktrace"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(list[0]["lastError"], json!("receiver down"));
    let replayed = cli.ok(&["--json", "dlq", "hooks", "replay", &entry_ids[0]]);
    assert_eq!(replayed["replayed"], json!(entry_ids[0]));
    assert_eq!(
        cli.ok(&["--json", "dlq", "hooks", "remove", &entry_ids[1]]),
        json!({"removed": entry_ids[1]})
    );
    assert_eq!(
        cli.ok(&["--json", "dlq", "hooks", "replay", "--all", "--dry-run"])["would_replay"],
        json!(1)
    );
    assert_eq!(
        cli.ok(&["--json", "dlq", "hooks", "replay", "--all"])["replayed"],
        json!(1)
    );
    assert_eq!(cli.counts("hooks")["dlq"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_finishes_in_flight_jobs_on_sigterm() {
    use axum::routing::post;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let started = Arc::new(AtomicUsize::new(0));
    let s2 = started.clone();
    let app = axum::Router::new().route(
        "/slow",
        post(move || {
            let s = s2.clone();
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1500)).await;
                "done"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let cli = Cli::new();
    let config = cli.dir.path().join("keel.toml");
    std::fs::write(
        &config,
        format!(
            "[redis]\nurl = \"redis://127.0.0.1:6379\"\nprefix = \"{}\"\n\n[queues.slow]\nhandler = {{ kind = \"http\", url = \"http://{addr}/slow\" }}\n",
            cli.prefix
        ),
    )
    .unwrap();
    let id = cli.ok(&["--json", "enqueue", "slow", "work"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(cli.dir.path())
        .args(["worker"])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(15);
    while started.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < until,
            "the worker never called the handler"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SIGTERM mid-job: the worker stops taking jobs, finishes this one, exits 0.
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < until + Duration::from_secs(15),
            "worker did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let job = cli.ok(&["--json", "job", "slow", &id]);
    assert_eq!(job["state"], json!("completed"));
    assert_eq!(job["returnvalue"], json!("done"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toolkit_commands_cache_ratelimit_redis() {
    let cli = Cli::new();
    // The toolkit key space comes from the configuration: a unique one per test.
    std::fs::write(
        cli.dir.path().join("keel.toml"),
        format!(
            "[toolkit]\nprefix = \"{}\"\n[ratelimit.policies.tiny]\nalgorithm = \"sliding_log\"\nlimit = 2\nwindow_ms = 3600000\n",
            cli.prefix
        ),
    )
    .unwrap();
    let backend = keel::Backend::redis(keel::backend::RedisSettings {
        url: "redis://127.0.0.1:6379".into(),
        prefix: cli.prefix.clone(),
        command_timeout: std::time::Duration::from_secs(5),
        sharded_pubsub: false,
    })
    .await
    .unwrap()
    .with_keys(keel::Keys::new(&cli.prefix, "dev").unwrap());
    let cache = keel::Cache::new(&backend, "users").unwrap();
    let w = || keel::Write::default();
    cache.set("u1", &json!({"name": "Ada"}), w()).await.unwrap();
    for k in ["u:1", "u:2", "team:1"] {
        cache.set(k, &1, w()).await.unwrap();
    }

    let got = cli.ok(&["--json", "cache", "get", "users", "u1"]);
    assert_eq!(got["hit"], json!(true));
    assert_eq!(got["value"], json!({"name": "Ada"}));
    assert_eq!(
        cli.ok(&["--json", "cache", "del", "users", "u1"])["deleted"],
        json!(true)
    );
    assert_eq!(
        cli.ok(&["--json", "cache", "get", "users", "u1"])["hit"],
        json!(false)
    );
    assert_eq!(
        cli.ok(&["--json", "cache", "del-pattern", "users", "u:*"])["deleted"],
        json!(2)
    );
    assert_eq!(cache.get::<u32>("team:1").await.unwrap(), Some(1));

    for remaining in [1, 0] {
        let d = cli.ok(&["--json", "ratelimit", "check", "tiny", "alice"]);
        assert_eq!(
            (d["allowed"].clone(), d["remaining"].clone()),
            (json!(true), json!(remaining))
        );
        assert_eq!(d["headers"]["X-RateLimit-Limit"], json!("2"));
    }
    let out = cli.raw(&["--json", "ratelimit", "check", "tiny", "alice"], true);
    assert_eq!(out.status.code(), Some(4), "a rejection exits 4");
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["allowed"], json!(false));
    assert!(
        d["headers"]["Retry-After"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 3000
    );
    assert_eq!(
        d["headers"]["RateLimit-Policy"],
        json!("\"tiny\";q=2;w=3600")
    );
    // A built-in seed policy is there too.
    assert_eq!(
        cli.ok(&["--json", "ratelimit", "check", "login", "a@b.c"])["limit"],
        json!(5)
    );

    let h = cli.ok(&["--json", "redis", "health"]);
    assert_ne!(h["status"], json!("critical"));
    assert!(h["latency_ms"].as_f64().unwrap() >= 0.0);
    let info = cli.ok(&["--json", "redis", "info"]);
    assert!(
        info["version"].as_str().unwrap().starts_with("redis")
            || info["version"].as_str().unwrap().starts_with("valkey")
    );
    assert!(info["used_memory"].as_u64().unwrap() > 0);
    for f in [
        "hit_rate_percent",
        "ops_per_sec",
        "connected_clients",
        "uptime_s",
        "persistence",
        "alerts",
        "status",
    ] {
        assert!(info.get(f).is_some(), "{f} missing: {info}");
    }

    cli.bad(&["--json", "cache", "get", "bad ns", "k"], "NAMESPACE");
    cli.bad(&["--json", "cache", "get", "users", "a{b"], "KEY");
    cli.bad(&["--json", "cache", "del-pattern", "users", ""], "PATTERN");
    cli.bad(&["--json", "ratelimit", "check", "nope", "k"], "POLICY");
    cli.bad(
        &["--json", "ratelimit", "check", "tiny", "k", "--cost", "0"],
        "--cost",
    );
    // Nothing was counted by the refused calls.
    let d = cli.ok(&["--json", "ratelimit", "check", "tiny", "k"]);
    assert_eq!(d["remaining"], json!(1));
    // Without Redis the toolkit commands refuse: the memory backend lives in one process.
    let out = cli.raw(&["--json", "cache", "get", "users", "u1"], false);
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], json!("needs-shared-backend"));
}

/// `keel user create|list|disable`: the password comes from stdin when it is not a terminal,
/// is checked (12 characters at least) and never printed; accounts are listed and disabled.
#[test]
fn users_are_created_listed_and_disabled() {
    use std::io::Write as _;
    let cli = Cli::new();
    let create = |email: &str, role: &str, password: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
        c.current_dir(cli.dir.path())
            .env_remove("REDIS_URL")
            .env("RUST_LOG", "warn")
            .args(["--json", "user", "create", "--email", email, "--role", role])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = create("Ops@Example.com", "admin", "a long enough password");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !text.contains("a long enough password"),
        "the password is never printed"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["user"]["email"], "ops@example.com");
    let short = create("b@example.com", "viewer", "short");
    assert_eq!(short.status.code(), Some(2));
    let e: Value = serde_json::from_slice(&short.stdout).unwrap();
    assert_eq!(e["error"]["field"], "password", "{e}");
    let again = create("ops@example.com", "viewer", "another long password");
    assert_eq!(again.status.code(), Some(2));
    let e: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(e["error"]["code"], "conflict", "{e}");
    let bad_role = create("c@example.com", "boss", "a long enough password");
    let e: Value = serde_json::from_slice(&bad_role.stdout).unwrap();
    assert_eq!(e["error"]["field"], "--role", "{e}");
    let listed = |cli: &Cli| -> Vec<Value> {
        let out = cli.raw(&["--json", "user", "list"], false);
        assert!(out.status.success());
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let users = listed(&cli);
    assert_eq!(users.len(), 1, "refused creations left nothing: {users:?}");
    assert!(users[0]["disabled_at"].is_null());
    let out = cli.raw(&["--json", "user", "disable", "ops@example.com"], false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(listed(&cli)[0]["disabled_at"].is_i64());
    let out = cli.raw(&["--json", "user", "disable", "ops@example.com"], false);
    assert_eq!(out.status.code(), Some(2), "already disabled");
}

/// `keel workflow`: definitions from keel.toml, a run on Redis, the instance and its steps,
/// cancel and re-run, listings with filters; bad input exits 2 naming the argument; a bad
/// definition exits 2 naming its key; runs refuse the memory backend.
#[test]
fn workflow_commands_run_list_cancel_and_rerun() {
    let cli = Cli::new();
    std::fs::write(
        cli.dir.path().join("keel.toml"),
        r#"
[queues.wf-cli]
handler = { kind = "log" }

[workflows.nightly]
description = "two steps"
[[workflows.nightly.steps]]
name = "collect"
queue = "wf-cli"
[[workflows.nightly.steps]]
name = "report"
queue = "wf-cli"
needs = ["collect"]
"#,
    )
    .unwrap();
    let defs = cli.ok(&["--json", "workflow", "list"]);
    assert_eq!(defs["definitions"][0]["name"], "nightly");
    assert_eq!(defs["definitions"][0]["version"], 1);
    let st = cli.ok(&[
        "--json",
        "workflow",
        "run",
        "nightly",
        "--input",
        r#"{"day": "mon"}"#,
    ]);
    let id = st["instance"]["id"].as_str().unwrap().to_string();
    assert_eq!(st["instance"]["trigger"]["kind"], "cli");
    assert_eq!(st["instance"]["input"], json!({"day": "mon"}));
    assert!(st["instance"]["actor"]
        .as_str()
        .unwrap()
        .starts_with("cli:"));
    // No worker runs here: the first step's job waits on the queue.
    let waiting = cli.ok(&["--json", "jobs", "wf-cli"]);
    assert!(
        waiting
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == format!("wf-{id}-collect").as_str()),
        "{waiting}"
    );
    let one = cli.ok(&["--json", "workflow", "instance", &id]);
    assert_eq!(one["steps"][0]["step"], "collect");
    let listed = cli.ok(&["--json", "workflow", "instances", "--workflow", "nightly"]);
    assert_eq!(listed["total"], 1);
    let cancelled = cli.ok(&["--json", "workflow", "cancel", &id]);
    assert_eq!(cancelled["instance"]["status"], "cancelled");
    let gone = cli.ok(&["--json", "jobs", "wf-cli"]);
    assert!(
        !gone
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == format!("wf-{id}-collect").as_str()),
        "the cancelled step's waiting job is removed: {gone}"
    );
    let out = cli.raw(&["--json", "workflow", "cancel", &id], true);
    assert_eq!(out.status.code(), Some(2), "a second cancel conflicts");
    let rerun = cli.ok(&["--json", "workflow", "rerun", &id]);
    assert_eq!(rerun["instance"]["status"], "running");
    assert_eq!(rerun["instance"]["reruns"], 1);
    cli.bad(
        &["--json", "workflow", "run", "nightly", "--input", "{nope"],
        "--input",
    );
    cli.bad(
        &["--json", "workflow", "instances", "--status", "bogus"],
        "--status",
    );
    cli.bad(
        &["--json", "workflow", "instances", "--limit", "0"],
        "--limit",
    );
    let out = cli.raw(&["--json", "workflow", "run", "nightly"], false);
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "needs-shared-backend");
    // A cycle is refused before anything runs, naming the key.
    let bad = cli.dir.path().join("cycle.toml");
    std::fs::write(
        &bad,
        "[queues.q]\n[[workflows.w.steps]]\nname = \"a\"\nqueue = \"q\"\nneeds = [\"b\"]\n[[workflows.w.steps]]\nname = \"b\"\nqueue = \"q\"\nneeds = [\"a\"]\n",
    )
    .unwrap();
    let out = cli.raw(
        &[
            "--config",
            bad.to_str().unwrap(),
            "--json",
            "workflow",
            "list",
        ],
        false,
    );
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["field"], "workflows.w.steps[0].needs", "{v}");
}
