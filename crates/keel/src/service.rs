//! Background services in one shape (river's maintenance services): each has a config with
//! named default constants and `validate()`, a [`Service::run_once`] that does one pass and
//! returns a report tests assert on, and [`run`], which repeats the pass every interval with
//! jitter (so that many processes do not act in lock step) until shutdown.
//!
//! Keel's: the DLQ reconciler ([`crate::dlq::Reconciler`]); `keel serve` adds its realtime
//! beat. Channel consumers (the server's audit writer and run recorder) keep their batching
//! loops and the same config shape.

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::Result;

/// How far a pass's start may move from its interval, as a fraction (±10 %).
pub const JITTER: f64 = 0.1;

/// A background service: one pass at a time.
#[async_trait]
pub trait Service: Send + Sync + 'static {
    /// What one pass did.
    type Report: std::fmt::Debug + Send;

    /// The service's name in logs.
    fn name(&self) -> String;

    /// How long between passes (before jitter).
    fn interval(&self) -> Duration;

    /// One pass.
    async fn run_once(&self) -> Result<Self::Report>;
}

/// `interval` moved by up to ±[`JITTER`].
pub fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(1.0 - JITTER + rand::random::<f64>() * 2.0 * JITTER)
}

/// Runs `service` until `shutdown`: a pass, then a jittered wait, and again. A failed pass is
/// logged and the next one comes at its time; a pass in progress finishes before it stops.
pub async fn run<S: Service>(service: S, shutdown: CancellationToken) {
    loop {
        match service.run_once().await {
            Ok(report) => tracing::debug!(service = %service.name(), ?report, "pass done"),
            Err(e) => tracing::warn!(service = %service.name(), error = %e, "pass failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(jittered(service.interval())) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Counting(Arc<AtomicUsize>);

    #[async_trait]
    impl Service for Counting {
        type Report = usize;
        fn name(&self) -> String {
            "counting".into()
        }
        fn interval(&self) -> Duration {
            Duration::from_millis(10)
        }
        async fn run_once(&self) -> Result<usize> {
            Ok(self.0.fetch_add(1, Ordering::SeqCst) + 1)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn passes_repeat_until_shutdown() {
        let n = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(Counting(n.clone()), stop.clone()));
        tokio::time::sleep(Duration::from_millis(105)).await;
        stop.cancel();
        task.await.unwrap();
        let passes = n.load(Ordering::SeqCst);
        assert!(
            (9..=12).contains(&passes),
            "{passes} passes of ~10 ms in 105 ms"
        );
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(9) && d <= Duration::from_secs(11),
                "{d:?}"
            );
        }
    }
}
