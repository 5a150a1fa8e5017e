//! The system: Redis health (`PING`, public) and its `INFO` summary (admin), and readiness of
//! the backend and the records database.

use keel::health::{self, Health, InfoReport, Status};
use keel_records::{PoolHealth, Role};
use serde::Serialize;

use crate::error::ApiResult;
use crate::extract::Caller;
use crate::runs::RunStats;
use crate::state::AppState;

/// Redis `PING` latency with ok/warn/critical (no authentication: a health check).
pub async fn redis_health(state: &AppState) -> Health {
    health::ping(&state.backend).await
}

/// The Redis `INFO` summary with alerts (admin).
pub async fn redis_info(state: &AppState, caller: &Caller) -> ApiResult<InfoReport> {
    caller.require(Role::Admin)?;
    Ok(health::info(&state.backend).await?)
}

/// The records database's check.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseCheck {
    /// `ok` or `critical`.
    pub status: &'static str,
    /// Pool figures, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolHealth>,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What readiness looks at.
#[derive(Debug, Clone, Serialize)]
pub struct Checks {
    /// The queue backend.
    pub backend: Health,
    /// The records database.
    pub database: DatabaseCheck,
    /// The run recorder's buffer.
    pub run_records: RunStats,
}

impl Checks {
    /// Whether the backend and the database both answer.
    pub fn ready(&self) -> bool {
        self.backend.status != Status::Critical && self.database.status == "ok"
    }
}

/// Checks the backend and the records database.
pub async fn readiness(state: &AppState) -> Checks {
    let (backend, db) = tokio::join!(health::ping(&state.backend), state.store.health());
    let database = match db {
        Ok(h) => DatabaseCheck {
            status: "ok",
            pool: Some(h),
            error: None,
        },
        Err(e) => DatabaseCheck {
            status: "critical",
            pool: None,
            error: Some(e.to_string()),
        },
    };
    Checks {
        backend,
        database,
        run_records: state.runs.stats(),
    }
}
