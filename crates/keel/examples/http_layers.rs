//! Keel's rate limit and cache as tower layers on a plain axum app — what haystack's
//! `@RateLimit()`, `@Cache()` and `@CacheInvalidate()` did on NestJS controllers.
//!
//! ```sh
//! cargo run -p keel --example http_layers            # memory backend, port 3000
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p keel --example http_layers   # shared by every instance
//! curl -i localhost:3000/notes/inbox                 # x-cache: miss, then hit; X-RateLimit-*
//! curl -i -X POST localhost:3000/notes/inbox -d 'hello'   # invalidates notes-inbox
//! ```
//!
//! Routes: `GET /notes/{list}` (cached 30 s under `notes-{list}`, the default policy),
//! `POST /notes/{list}` (invalidates `notes-{list}`; the stricter `writes` policy),
//! `POST /login` (its own `login` policy), `GET /health` (exempt).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use keel::http::{CacheLayer, CacheRules, RateLimitLayer, RateRules};
use keel::{Backend, Cache, RateLimiter, RatePolicy};
use serde_json::{json, Value};

/// The notes, in this process (a database in a real service).
pub type Notes = Arc<Mutex<HashMap<String, Vec<String>>>>;

async fn list(State(notes): State<Notes>, Path(list): Path<String>) -> Json<Value> {
    let items = notes
        .lock()
        .unwrap()
        .get(&list)
        .cloned()
        .unwrap_or_default();
    Json(json!({ "list": list, "notes": items }))
}

async fn add(
    State(notes): State<Notes>,
    Path(list): Path<String>,
    body: String,
) -> (StatusCode, Json<Value>) {
    let mut n = notes.lock().unwrap();
    let items = n.entry(list.clone()).or_default();
    items.push(body);
    (
        StatusCode::CREATED,
        Json(json!({ "list": list, "count": items.len() })),
    )
}

async fn login() -> Json<Value> {
    Json(json!({ "ok": true }))
}

/// The app: its routes, then the two layers (as route layers, so they see the matched route).
pub fn app(backend: &Backend, limits: (u64, u64, u64)) -> keel::Result<Router> {
    let (reads, writes, logins) = limits;
    let minute = Duration::from_secs(60);
    let limiter = RateLimiter::new(
        backend,
        vec![
            RatePolicy::gcra("default", reads, minute),
            RatePolicy::gcra("writes", writes, minute),
            RatePolicy::gcra("login", logins, minute),
        ],
    )?;
    let rate = RateRules::new()
        .default_policy("default")
        .route(Some(Method::POST), "/notes/{list}", "writes")
        .route(None, "/login", "login")
        .exempt(None, "/health");
    let cache = CacheRules::new()
        .get("/notes/{list}", Duration::from_secs(30), &["notes-{list}"])
        .invalidate(None, "/notes/{list}", &["notes-{list}"]);
    Ok(Router::new()
        .route("/notes/{list}", get(list).post(add))
        .route("/login", post(login))
        .route("/health", get(|| async { "ok" }))
        .route_layer(CacheLayer::new(Cache::new(backend, "notes")?, cache))
        .route_layer(RateLimitLayer::new(limiter, rate))
        .with_state(Notes::default()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let backend = match std::env::var("REDIS_URL") {
        Ok(url) => {
            Backend::redis(keel::backend::RedisSettings {
                url,
                prefix: "bull".into(),
                command_timeout: Duration::from_secs(5),
                sharded_pubsub: false,
            })
            .await?
        }
        Err(_) => Backend::memory(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("http://{}", listener.local_addr()?);
    let app = app(&backend, (100, 10, 5))?;
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .await?;
    Ok(())
}
