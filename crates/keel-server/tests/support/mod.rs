//! Shared by the server's test binaries: fresh databases, a running app, HTTP helpers.
#![allow(dead_code)]

/// One test per database: `both!(a, b)` runs `async fn a(db: Db)` as `sqlite::a` and
/// `postgres::a` (a test file declares `#[macro_use] mod support;`).
#[allow(unused_macros)]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { crate::$name(crate::Db::Sqlite).await; }
        )* }
        mod postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { crate::$name(crate::Db::Postgres).await; }
        )* }
    };
}

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use keel::config::Config;
use keel::Backend;
use keel_records::{RecordStore, Role};
use keel_server::serve::Server;
use keel_server::state::AppState;
use serde_json::Value;
use tower::ServiceExt;

pub use keel_records::testing::{postgres, sqlite, TestDb};

/// Which records database an app uses.
pub enum Db {
    /// A fresh SQLite file.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

/// A toolkit key space no other test uses.
pub fn unique_keys() -> keel::Keys {
    keel::Keys::new(&format!("ks-{}", uuid::Uuid::new_v4().simple()), "test").unwrap()
}

/// A Redis backend with unique queue and toolkit prefixes.
pub async fn redis() -> Backend {
    redis_with_prefix().await.0
}

/// A Redis backend with unique prefixes, and its queue key prefix.
pub async fn redis_with_prefix() -> (Backend, String) {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("ks-{}", uuid::Uuid::new_v4().simple());
    let backend = Backend::redis(keel::backend::RedisSettings {
        url,
        prefix: prefix.clone(),
        command_timeout: Duration::from_secs(5),
        sharded_pubsub: false,
    })
    .await
    .expect("Redis must be running (see README)")
    .with_keys(unique_keys());
    (backend, prefix)
}

/// Keel's own Redis engine for every queue, with unique prefixes.
pub async fn native() -> Backend {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    Backend::native(keel::backend::RedisSettings {
        url,
        prefix: format!("ks-{}", uuid::Uuid::new_v4().simple()),
        command_timeout: Duration::from_secs(5),
        sharded_pubsub: false,
    })
    .await
    .expect("Redis must be running (see README)")
    .with_keys(unique_keys())
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private `redis-server` on `port` (never the shared one), with `extra` arguments; waits
/// until it accepts connections.
pub fn start_redis(port: u16, extra: &[&str]) -> std::process::Child {
    use std::process::{Command, Stdio};
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (see README)");
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "private redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// An app on `config` and a private Redis (command timeout `timeout`) that took one job into
/// `mail`: the Redis process, its port, the app.
pub async fn app_on_private_redis(
    config: &str,
    timeout: Duration,
) -> (std::process::Child, u16, App) {
    let port = free_port();
    let redis = start_redis(port, &[]);
    let backend = Backend::redis(keel::backend::RedisSettings {
        url: format!("redis://127.0.0.1:{port}"),
        prefix: "ko".into(),
        command_timeout: timeout,
        sharded_pubsub: false,
    })
    .await
    .unwrap()
    .with_keys(unique_keys());
    let app = App::start(config, backend, Db::Sqlite).await;
    let (s, _) = app
        .call(
            Method::POST,
            "/api/owner/queues/mail/jobs",
            Some(&app.admin),
            Some(serde_json::json!({"name": "a"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    (redis, port, app)
}

/// Polls until `check` gives a value (10 s at most).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A prepared server (no workers of its own) with tokens of every role.
pub struct App {
    server: Option<Server>,
    router: Router,
    db: Option<TestDb>,
    /// Owner token.
    pub owner: String,
    /// Admin token.
    pub admin: String,
    /// Viewer token.
    pub viewer: String,
    /// Admin token of tenant `acme`.
    pub acme: String,
}

impl App {
    /// Starts an app on `config` (TOML), `backend` and a fresh database, without workers.
    pub async fn start(config: &str, backend: Backend, db: Db) -> App {
        App::start_with(config, backend, db, false).await
    }

    /// Starts an app; with `workers`, the configured queues' workers run (recording runs).
    pub async fn start_with(config: &str, backend: Backend, db: Db, workers: bool) -> App {
        let config = Config::parse_with(config, &|_| None, keel_server::config::SECTIONS).unwrap();
        let test_db = match db {
            Db::Sqlite => sqlite().await,
            Db::Postgres => postgres().await,
        };
        let store: Arc<dyn RecordStore> = test_db.store.clone();
        let mut app = App::on_store(&config, backend, store, workers).await;
        app.db = Some(test_db);
        app
    }

    /// Starts an app on `config` over `store` (which the caller keeps and cleans up).
    pub async fn on_store(
        config: &Config,
        backend: Backend,
        store: Arc<dyn RecordStore>,
        workers: bool,
    ) -> App {
        let settings = keel_server::config::ServerConfig::from_config(config, &|_| None).unwrap();
        let server =
            keel_server::serve::prepare(config, &settings, backend, store.clone(), workers)
                .await
                .unwrap();
        let token = |role| {
            let store = store.clone();
            async move { store.create_token("test", role, None).await.unwrap().1 }
        };
        let (owner, admin, viewer) = (
            token(Role::Owner).await,
            token(Role::Admin).await,
            token(Role::Viewer).await,
        );
        let acme_id = store.tenant_by_name("acme").await.unwrap().map(|t| t.id);
        let acme = store
            .create_token("acme", Role::Admin, acme_id.as_deref())
            .await
            .unwrap()
            .1;
        let router = keel_server::router::router(server.state.clone());
        App {
            server: Some(server),
            router,
            db: None,
            owner,
            admin,
            viewer,
            acme,
        }
    }

    /// The state.
    pub fn state(&self) -> &AppState {
        &self.server.as_ref().unwrap().state
    }

    /// One request, the whole response.
    pub async fn respond(&self, req: Request<Body>) -> axum::response::Response {
        self.router.clone().oneshot(req).await.unwrap()
    }

    /// One request: status, headers, body bytes.
    pub async fn send(&self, req: Request<Body>) -> (StatusCode, HashMap<String, String>, Vec<u8>) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, headers, body)
    }

    /// A request with an optional JSON body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, HashMap<String, String>, Value) {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        }
        .unwrap();
        let (s, h, bytes) = self.send(req).await;
        (s, h, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// A request: status and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (s, _, v) = self.raw(method, path, token, body).await;
        (s, v)
    }

    /// A request with a literal body and content type.
    pub async fn raw_body(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: &str,
        content_type: &str,
    ) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", content_type)
            .body(Body::from(body.to_string()))
            .unwrap();
        let (s, _, bytes) = self.send(req).await;
        (s, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// GET as JSON.
    pub async fn get_json(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    /// GET with its headers.
    pub async fn get_with_headers(
        &self,
        path: &str,
        token: &str,
    ) -> (HashMap<String, String>, Value) {
        let (_, h, v) = self.raw(Method::GET, path, Some(token), None).await;
        (h, v)
    }

    /// GET as text.
    pub async fn raw_text(&self, path: &str) -> (StatusCode, HashMap<String, String>, String) {
        let req = Request::builder().uri(path).body(Body::empty()).unwrap();
        let (s, h, b) = self.send(req).await;
        (s, h, String::from_utf8(b).unwrap())
    }

    /// Serves the app on a loopback socket; returns its address.
    pub async fn serve_socket(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = self.router.clone();
        let limits = keel_server::listener::ConnectionLimits {
            header_read_timeout: self.state().server.header_read_timeout,
            ..Default::default()
        };
        tokio::spawn(keel_server::listener::serve(
            listener,
            app,
            limits,
            std::future::pending(),
        ));
        addr
    }

    /// Shuts the server down and drops the database.
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(5)).await.unwrap();
        }
        if let Some(db) = self.db.take() {
            db.close().await;
        }
    }
}

/// A local webhook for `http` handlers: `POST /hook` answers 500 "smtp refused" when the job's
/// data has `"fail": true`, 200 otherwise. Returns its URL.
pub async fn webhook() -> String {
    use axum::routing::post;
    async fn hook(axum::Json(v): axum::Json<Value>) -> (StatusCode, String) {
        if v["data"]["fail"] == Value::Bool(true) {
            (StatusCode::INTERNAL_SERVER_ERROR, "smtp refused".into())
        } else {
            (
                StatusCode::OK,
                format!("{{\"sent\":\"{}\"}}", v["id"].as_str().unwrap_or("")),
            )
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, Router::new().route("/hook", post(hook)))
            .await
            .ok();
    });
    format!("http://{addr}/hook")
}

/// A browser-like client of the console over the in-process router: keeps cookies.
pub struct Web<'a> {
    app: &'a App,
    /// Cookies by name.
    pub cookies: HashMap<String, String>,
    /// Sent as `X-Forwarded-For` (the client address when the server trusts its proxy).
    pub forwarded_for: Option<String>,
}

/// A console response: status, `Location`, `Set-Cookie` values, body.
pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub body: String,
}

impl Page {
    /// The value of the first hidden `csrf` field.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in: {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl<'a> Web<'a> {
    pub fn new(app: &'a App) -> Web<'a> {
        Web {
            app,
            cookies: HashMap::new(),
            forwarded_for: None,
        }
    }

    /// Signs in with `token` through the login form.
    pub async fn signed_in(app: &'a App, token: &str) -> Web<'a> {
        let mut web = Web::new(app);
        let form = web.get("/login").await;
        assert_eq!(form.status, StatusCode::OK);
        let csrf = form.csrf();
        let done = web
            .post(
                "/login",
                &[("csrf", &csrf), ("token", token), ("next", "/")],
                None,
            )
            .await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        assert!(web.cookies.contains_key("keel_session"));
        web
    }

    /// Whether the browser holds a console session cookie.
    pub fn cookies_has_session(&self) -> bool {
        self.cookies.contains_key("keel_session")
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn run(&mut self, req: Request<Body>) -> Page {
        let resp = self.app.respond(req).await;
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let set_cookies: Vec<String> = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        for c in &set_cookies {
            let pair = c.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() || c.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Page {
            status,
            location,
            set_cookies,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// GET as a browser (Accept: text/html).
    pub async fn get(&mut self, path: &str) -> Page {
        let req = Request::builder()
            .uri(path)
            .header("accept", "text/html")
            .header("cookie", self.cookie_header())
            .body(Body::empty())
            .unwrap();
        self.run(req).await
    }

    /// POSTs a form; `origin` sets an `Origin` header (with `Host: console.test`).
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> Page {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("accept", "text/html")
            .header("host", "console.test")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", self.cookie_header());
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        if let Some(ip) = &self.forwarded_for {
            b = b.header("x-forwarded-for", ip);
        }
        self.run(b.body(Body::from(body)).unwrap()).await
    }
}

/// Percent-encodes a form value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The next JSON message of a realtime socket for which `pred` holds (others skipped), within
/// 15 s; `what` names it in the failure.
pub async fn ws_next_matching<S>(ws: &mut S, what: &str, pred: impl Fn(&Value) -> bool) -> Value
where
    S: futures::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let m = tokio::time::timeout_at(until, futures::StreamExt::next(ws))
            .await
            .unwrap_or_else(|_| panic!("no {what} within 15 s"))
            .expect("the socket is open")
            .expect("a frame");
        let Ok(text) = m.to_text() else { continue };
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        if pred(&v) {
            return v;
        }
    }
}
