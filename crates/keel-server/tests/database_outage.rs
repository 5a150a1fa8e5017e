//! The records database going away under a running server: routes that need it answer 503
//! `database-unavailable` (never the queue backend's `backend-unavailable`), the routes that
//! need only the queue backend keep answering, readiness says which one is down, and the
//! console names the database. The database is reached through a TCP relay this test stops
//! (the real PostgreSQL behind it is never touched), so the outage is a real network one.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use keel::config::Config;
use keel::Backend;
use keel_records::{PoolSettings, SqlStore};
use support::{App, Web};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Forwards connections on a spare loopback port to PostgreSQL until stopped.
struct Relay {
    port: u16,
    tasks: Arc<std::sync::Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tasks = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let t = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                t.lock().unwrap().spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Relay {
            port,
            tasks,
            accept,
        }
    }

    /// Stops accepting and cuts every relayed connection.
    fn stop(&self) {
        self.accept.abort();
        self.tasks.lock().unwrap().abort_all();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_database_unavailable_and_the_queues_keep_answering() {
    let db = keel_records::testing::postgres().await;
    let url = db.url();
    let pg_port: u16 = url
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("a loopback PostgreSQL URL");
    let relay = Relay::start(pg_port).await;
    let relayed = url.replace(
        &format!("127.0.0.1:{pg_port}"),
        &format!("127.0.0.1:{}", relay.port),
    );
    let settings = PoolSettings {
        acquire_timeout: Duration::from_millis(800),
        ..PoolSettings::default()
    };
    let store = Arc::new(SqlStore::connect(&relayed, &settings).await.unwrap());
    let config = Config::parse("[queues.mail]\nattempts = 1\n", &|_| None).unwrap();
    let backend = Backend::memory().with_keys(support::unique_keys());
    let app = App::on_store(&config, backend, store.clone(), false).await;
    // Before: the token is read once (and cached), a run listing and readiness work.
    let (s, _) = app.get_json("/api/owner/runs", Some(&app.admin)).await;
    assert_eq!(s, StatusCode::OK);
    let mut web = Web::signed_in(&app, &app.admin).await;
    assert_eq!(web.get("/runs").await.status, StatusCode::OK);
    relay.stop();
    // The database is gone: a route that reads it says so, with Retry-After.
    let (s, headers, v) = app
        .raw(
            Method::GET,
            "/api/owner/runs?queue=mail",
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "database-unavailable", "{v}");
    assert!(headers.contains_key("retry-after"));
    // The queues live in the backend: they keep answering.
    let (s, v) = app.get_json("/api/owner/queues", Some(&app.admin)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Readiness names the database, not the backend.
    let (s, v) = app.get_json("/api/health/ready", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["checks"]["database"]["status"], "critical", "{v}");
    assert_ne!(v["checks"]["backend"]["status"], "critical", "{v}");
    // The console: its session is re-read from the database, and the page says which is down.
    let page = web.get("/runs").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.body.contains("Database unreachable"), "{}", page.body);
    assert!(!page.body.contains("Redis unreachable"));
    drop(app);
    store.pool().close().await;
    db.close().await;
}
