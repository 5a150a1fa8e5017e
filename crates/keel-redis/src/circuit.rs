//! The circuit breaker in front of every producer, admin and toolkit call: after a call finds
//! Redis unreachable (connection refused or dropped, or no answer within the command
//! timeout), calls fail `backend-unavailable` at once instead of each waiting out its own
//! timeout (waits that stack: a page making four calls took 20 s). One background probe
//! PINGs every [`PROBE_INTERVAL`]; its first answer closes the circuit again.
//!
//! Only unreachability opens it: an answer that refuses work (`OOM`, `LOADING`, a script
//! error) comes from a Redis that is there, and every caller should see that answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bullmq::redis_connection::RedisConnection;
use keel_core::Error;

/// How often the probe PINGs an unreachable Redis.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How long one probe waits for its PONG.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Open or closed, shared by the clones of one backend.
#[derive(Default)]
pub(crate) struct Circuit {
    open: AtomicBool,
    probing: AtomicBool,
}

impl Circuit {
    /// Fails fast while the circuit is open.
    pub(crate) fn check(&self, what: &str) -> Result<(), Error> {
        if self.open.load(Ordering::Acquire) {
            return Err(Error::BackendUnavailable(format!(
                "{what}: Redis is unreachable (failing fast while a background probe waits for it)"
            )));
        }
        Ok(())
    }

    /// Whether calls are failing fast.
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// A call found Redis unreachable: open the circuit and start the probe (once).
    pub(crate) fn trip(self: &Arc<Self>, conn: &RedisConnection) {
        self.open.store(true, Ordering::Release);
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.probing.store(false, Ordering::Release);
            return;
        };
        let circuit = self.clone();
        let conn = conn.clone();
        rt.spawn(async move {
            let since = Instant::now();
            loop {
                tokio::time::sleep(PROBE_INTERVAL).await;
                let mut c = conn.connection();
                let pong = tokio::time::timeout(
                    PROBE_TIMEOUT,
                    redis::cmd("PING").query_async::<String>(&mut c),
                )
                .await;
                if matches!(pong, Ok(Ok(_))) {
                    circuit.open.store(false, Ordering::Release);
                    circuit.probing.store(false, Ordering::Release);
                    tracing::info!(down_for = ?since.elapsed(), "Redis is reachable again");
                    return;
                }
            }
        });
    }
}

/// Whether a Redis client error means Redis could not be reached (as opposed to an answer).
pub(crate) fn unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

/// The same for bullmq's errors.
pub(crate) fn bull_unreachable(e: &bullmq::Error) -> bool {
    match e {
        bullmq::Error::Redis(r) => unreachable(r),
        bullmq::Error::ConnectionClosed => true,
        _ => false,
    }
}
