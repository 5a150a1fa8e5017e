//! What the browser tests share: chromedriver and a headless Chromium with a private profile,
//! screenshots, waiting on the page, signing in.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free loopback port, killed on drop.
pub struct Driver {
    child: Child,
    url: String,
    _profile: Profile,
}

struct Profile(PathBuf);

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A test that fails never reaches `close()`: chromium would outlive its driver. Its
        // processes are the ones with this test's unique profile directory on their command line.
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self._profile.0.display().to_string())
            .status();
    }
}

pub async fn browser() -> (Driver, Client) {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: the browser tests need Debian's chromium and chromium-driver \
             (apt-get install -y chromium chromium-driver; .ci/run does this)"
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = Profile(
        std::env::temp_dir().join(format!("keel-chromium-{}", uuid::Uuid::new_v4().simple())),
    );
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: profile,
    };
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--disable-background-networking",
                "--disable-component-update", "--disable-default-apps", "--disable-extensions",
                "--disable-sync", "--no-first-run", "--metrics-recording-only",
                "--hide-scrollbars", "--force-device-scale-factor=1",
                format!("--user-data-dir={}", driver._profile.0.display()),
            ]
        }),
    );
    let until = Instant::now() + Duration::from_secs(20);
    let client = loop {
        let mut b = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        b.capabilities(caps.clone());
        match b.connect(&driver.url).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < until, "chromedriver did not start: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    (driver, client)
}

/// Where screenshots go.
pub fn shot_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")];
    if let Ok(d) = std::env::var("KEEL_SCREENSHOTS_DIR") {
        dirs.push(PathBuf::from(d));
    }
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    dirs
}

pub async fn shot(c: &Client, name: &str) {
    // Let fonts and the live socket settle so the picture shows the page as a user sees it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: a PNG");
    for d in shot_dirs() {
        std::fs::write(d.join(format!("{name}.png")), &png).unwrap();
    }
}

/// Waits (15 s at most) until the JavaScript expression is truthy; returns its value.
pub async fn until(c: &Client, what: &str, expr: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = c
            .execute(&format!("return ({expr});"), vec![])
            .await
            .unwrap_or(Value::Null);
        let truthy = match &v {
            Value::Null | Value::Bool(false) => false,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            _ => true,
        };
        if truthy {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} ({expr}); page: {}",
            c.source()
                .await
                .unwrap_or_default()
                .chars()
                .take(2000)
                .collect::<String>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

pub async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/")).await.unwrap();
    let field = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#token"))
        .await
        .unwrap();
    field.send_keys(token).await.unwrap();
    click(c, "form button[type=submit].primary").await;
    until(
        c,
        "the overview",
        "document.querySelector('h1') && document.querySelector('h1').textContent === 'Overview'",
    )
    .await;
}
