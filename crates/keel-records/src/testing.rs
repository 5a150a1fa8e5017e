//! Fresh databases for tests: a PostgreSQL database (dropped after) or a SQLite file (deleted
//! after) that no other test sees, so tests run in parallel on one server.
//!
//! PostgreSQL is `KEEL_TEST_POSTGRES_URL`, by default `postgres://postgres@127.0.0.1:5432/postgres`.

use std::sync::Arc;

use crate::sql::{PoolSettings, SqlStore};

/// A store on a database no other test uses.
pub struct TestDb {
    /// The store.
    pub store: Arc<SqlStore>,
    cleanup: Option<(String, String)>,
    dir: Option<std::path::PathBuf>,
}

/// The PostgreSQL server's maintenance database.
pub fn admin_url() -> String {
    std::env::var("KEEL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A new PostgreSQL database.
///
/// # Panics
/// When PostgreSQL is not running: the tests need it (see README).
pub async fn postgres() -> TestDb {
    let name = format!("keel_t_{}", uuid::Uuid::new_v4().simple());
    let admin = SqlStore::connect(&admin_url(), &PoolSettings::default())
        .await
        .expect("PostgreSQL must be running (see README)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(admin.pool())
        .await
        .expect("creating a test database");
    admin.pool().close().await;
    let base = admin_url();
    let url = format!("{}/{name}", &base[..base.rfind('/').unwrap_or(base.len())]);
    let store = SqlStore::connect(&url, &PoolSettings::default())
        .await
        .expect("connecting to the test database");
    TestDb {
        store: Arc::new(store),
        cleanup: Some((base, name)),
        dir: None,
    }
}

/// A new SQLite file in its own directory.
///
/// # Panics
/// When the temporary directory is not writable.
pub async fn sqlite() -> TestDb {
    let dir = std::env::temp_dir().join(format!("keel-t-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("creating a test directory");
    let url = format!("sqlite:{}", dir.join("records.db").display());
    let store = SqlStore::connect(&url, &PoolSettings::default())
        .await
        .expect("opening the test database");
    TestDb {
        store: Arc::new(store),
        cleanup: None,
        dir: Some(dir),
    }
}

impl TestDb {
    /// The URL the store was opened with.
    pub fn url(&self) -> String {
        match (&self.cleanup, &self.dir) {
            (Some((base, name)), _) => {
                format!("{}/{name}", &base[..base.rfind('/').unwrap_or(base.len())])
            }
            (None, Some(dir)) => format!("sqlite:{}", dir.join("records.db").display()),
            (None, None) => String::new(),
        }
    }

    /// Closes the pool and drops the database (or deletes the file).
    pub async fn close(mut self) {
        self.store.pool().close().await;
        if let Some((base, name)) = self.cleanup.take() {
            if let Ok(admin) = SqlStore::connect(&base, &PoolSettings::default()).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(admin.pool())
                    .await;
                admin.pool().close().await;
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
