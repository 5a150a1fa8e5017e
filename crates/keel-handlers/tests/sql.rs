//! The `sql` handler on a fresh PostgreSQL database: a rollup with named parameters in a
//! transaction, RETURNING rows, constraint and syntax errors unrecoverable, a statement
//! timeout and an unreachable database retried.

mod support;

use std::time::Duration;

use keel::JobOptions;
use keel_handlers::Handlers;
use serde_json::json;
use support::*;

const CONFIG: &str = r#"
[queues.analytics]
attempts = 2
backoff = { type = "fixed", delay_ms = 20 }

[queues.analytics.handlers.rollup_daily_stats]
kind = "sql"
database_url_env = "ANALYTICS_DATABASE_URL"
statement = """
INSERT INTO analytics_aggregate (bucket, period, event_type, count)
SELECT :day::date, 'day', event_type, count(*) FROM analytics_event
 WHERE created_at >= :day::date AND created_at < :day::date + 1 -- one day: ':day' is quoted
 GROUP BY event_type
ON CONFLICT (bucket, period, event_type) DO UPDATE SET count = EXCLUDED.count
RETURNING event_type, count
"""
max_rows = 1

[queues.analytics.handlers.purge]
kind = "sql"
database_url_env = "ANALYTICS_DATABASE_URL"
statement = "DELETE FROM analytics_event WHERE event_type = :kind"
connect_timeout_ms = 300

[queues.analytics.handlers.strict]
kind = "sql"
database_url_env = "ANALYTICS_DATABASE_URL"
statement = "INSERT INTO analytics_aggregate (bucket, period, event_type, count) VALUES (:day::date, 'day', :kind, -1)"

[queues.analytics.handlers.broken]
kind = "sql"
database_url_env = "ANALYTICS_DATABASE_URL"
statement = "SELEC 1"

[queues.analytics.handlers.sleepy]
kind = "sql"
database_url_env = "ANALYTICS_DATABASE_URL"
statement = "SELECT pg_sleep(:s)"
timeout_ms = 200
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_run_with_parameters_and_errors_are_classified() {
    let db = keel_records::testing::postgres().await;
    let url = db.url();
    for stmt in [
        "CREATE TABLE analytics_event (id serial, event_type text NOT NULL, created_at timestamptz NOT NULL)",
        "CREATE TABLE analytics_aggregate (bucket date, period text, event_type text, count bigint CHECK (count >= 0), PRIMARY KEY (bucket, period, event_type))",
        "INSERT INTO analytics_event (event_type, created_at) VALUES ('view', '2026-11-30 10:00Z'), ('view', '2026-11-30 11:00Z'), ('click', '2026-11-30 12:00Z'), ('view', '2026-11-29 12:00Z')",
    ] {
        sqlx::query(stmt).execute(db.store.pool()).await.unwrap();
    }
    let config = config(CONFIG);
    let backend = redis().await;
    let handlers = Handlers::new(&backend).env(env(&[("ANALYTICS_DATABASE_URL", url.clone())]));
    let workers =
        keel::runner::start_workers(&config, &backend, &["analytics".into()], &handlers, None)
            .await
            .unwrap();
    let q = config.queue(&backend, "analytics").unwrap();
    let add = |name: &'static str, data: serde_json::Value| {
        let q = q.clone();
        async move { q.add(name, data, JobOptions::default()).await.unwrap() }
    };
    let rollup = add("rollup_daily_stats", json!({"day": "2026-11-30"})).await;
    let done = settled(&q, &rollup.id).await;
    let rv = done.returnvalue.unwrap();
    assert_eq!(rv["truncated"], true, "two rows, max_rows 1: {rv}");
    assert_eq!(rv["rows"].as_array().unwrap().len(), 1);
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_type, count FROM analytics_aggregate ORDER BY event_type")
            .fetch_all(&sqlx::PgPool::connect(&url).await.unwrap())
            .await
            .unwrap();
    assert_eq!(counts, [("click".into(), 1), ("view".into(), 2)]);

    let purge = add("purge", json!({"kind": "click"})).await;
    assert_eq!(
        settled(&q, &purge.id).await.returnvalue,
        Some(json!({"rowsAffected": 1}))
    );

    let strict = add("strict", json!({"day": "2026-11-30", "kind": "x"})).await;
    let s = settled(&q, &strict.id).await;
    assert_eq!(
        s.attempts_made, 1,
        "a constraint violation is unrecoverable"
    );
    assert!(s.failed_reason.unwrap().contains("23514"));
    let broken = add("broken", json!({})).await;
    let b = settled(&q, &broken.id).await;
    assert_eq!(b.attempts_made, 1);
    assert!(b.failed_reason.unwrap().contains("42601"), "a syntax error");
    let missing = add("purge", json!({})).await;
    let m = settled(&q, &missing.id).await;
    assert_eq!(m.attempts_made, 1);
    assert!(m
        .failed_reason
        .unwrap()
        .contains(":kind is not in the job's data"));
    let sleepy = add("sleepy", json!({"s": 2})).await;
    let sl = settled(&q, &sleepy.id).await;
    assert_eq!(sl.attempts_made, 2, "a statement timeout retries");
    assert!(sl.failed_reason.unwrap().contains("57014"));
    keel::runner::close_all(workers, Duration::from_secs(5))
        .await
        .unwrap();

    // An unreachable database retries; a missing URL variable is named at start.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let handlers = Handlers::new(&backend).env(env(&[(
        "ANALYTICS_DATABASE_URL",
        format!("postgres://u@127.0.0.1:{port}/x"),
    )]));
    let workers =
        keel::runner::start_workers(&config, &backend, &["analytics".into()], &handlers, None)
            .await
            .unwrap();
    let down = add("purge", json!({"kind": "view"})).await;
    assert_eq!(settled(&q, &down.id).await.attempts_made, 2);
    keel::runner::close_all(workers, Duration::from_secs(5))
        .await
        .unwrap();
    let err = keel::runner::start_workers(
        &config,
        &backend,
        &["analytics".into()],
        &Handlers::new(&backend).env(env(&[])),
        None,
    )
    .await
    .err()
    .unwrap();
    assert!(err.field().unwrap().ends_with(".database_url_env"), "{err}");
    db.close().await;
}
