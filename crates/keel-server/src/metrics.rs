//! The process's Prometheus metrics (served by `GET /metrics`, [`crate::api::metrics`]). Queue
//! depths are read at scrape time; the rest are counted as things happen in this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The process's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    queue_jobs: Family<Labels, Gauge>,
    dlq_jobs: Family<Labels, Gauge>,
    completed: Family<Labels, Counter>,
    failed: Family<Labels, Counter>,
    stalled: Family<Labels, Counter>,
    delayed: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    http: Family<Labels, Counter>,
    rate_limited: Family<Labels, Counter>,
    cache: Family<Labels, Counter>,
    toolkit_cache: Family<Labels, Counter>,
    toolkit_seen: Mutex<HashMap<(String, &'static str), u64>>,
    runs_buffered: Gauge,
    runs_dropped: Counter,
    runs_written: Counter,
}

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("keel");
        let queue_jobs = Family::<Labels, Gauge>::default();
        let dlq_jobs = Family::<Labels, Gauge>::default();
        let completed = Family::<Labels, Counter>::default();
        let failed = Family::<Labels, Counter>::default();
        let stalled = Family::<Labels, Counter>::default();
        let delayed = Family::<Labels, Counter>::default();
        let duration = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        let http = Family::<Labels, Counter>::default();
        let rate_limited = Family::<Labels, Counter>::default();
        let cache = Family::<Labels, Counter>::default();
        let toolkit_cache = Family::<Labels, Counter>::default();
        let runs_buffered = Gauge::default();
        let runs_dropped = Counter::default();
        let runs_written = Counter::default();
        registry.register("queue_jobs", "Jobs per queue and state", queue_jobs.clone());
        registry.register("queue_dlq_jobs", "Dead letters per queue", dlq_jobs.clone());
        registry.register(
            "jobs_completed",
            "Jobs completed by this process's workers",
            completed.clone(),
        );
        registry.register(
            "jobs_failed",
            "Job attempts failed in this process's workers",
            failed.clone(),
        );
        registry.register(
            "jobs_stalled",
            "Job attempts lost to a dead worker or an expired lock and recovered, seen by this process's workers",
            stalled.clone(),
        );
        registry.register(
            "jobs_delayed",
            "Jobs postponed (back to delayed, no attempt counted) by a per-key rate limit in this process's workers",
            delayed.clone(),
        );
        registry.register(
            "job_duration_seconds",
            "Job attempt duration",
            duration.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            http.clone(),
        );
        registry.register(
            "rate_limit_rejections",
            "Requests rejected by a rate limit",
            rate_limited.clone(),
        );
        registry.register(
            "owner_cache_requests",
            "Owner API response cache lookups",
            cache.clone(),
        );
        registry.register(
            "cache_events",
            "Toolkit cache events by namespace and kind",
            toolkit_cache.clone(),
        );
        registry.register(
            "run_records_buffered",
            "Run records waiting to be written",
            runs_buffered.clone(),
        );
        registry.register(
            "run_records_dropped",
            "Run records dropped because the buffer was full",
            runs_dropped.clone(),
        );
        registry.register(
            "run_records_written",
            "Run records written",
            runs_written.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                queue_jobs,
                dlq_jobs,
                completed,
                failed,
                stalled,
                delayed,
                duration,
                http,
                rate_limited,
                cache,
                toolkit_cache,
                toolkit_seen: Mutex::new(HashMap::new()),
                runs_buffered,
                runs_dropped,
                runs_written,
            }),
        }
    }

    /// One HTTP request answered.
    pub fn http_request(&self, route: &str, method: &str, status: u16) {
        self.inner
            .http
            .get_or_create(&labels(&[
                ("route", route),
                ("method", method),
                ("status", &status.to_string()),
            ]))
            .inc();
    }

    /// One rejection by `policy`.
    pub fn rate_limited(&self, policy: &str) {
        self.inner
            .rate_limited
            .get_or_create(&labels(&[("policy", policy)]))
            .inc();
    }

    /// One owner-cache lookup.
    pub fn cache(&self, namespace: &str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.inner
            .cache
            .get_or_create(&labels(&[("namespace", namespace), ("result", result)]))
            .inc();
    }

    /// The label set of a queue, built once by the caller for hot paths.
    pub fn queue_labels(queue: &str) -> Vec<(String, String)> {
        labels(&[("queue", queue)])
    }

    /// One finished attempt of this process's workers.
    pub fn job_finished(&self, queue_labels: &Vec<(String, String)>, ok: bool, seconds: f64) {
        if ok {
            self.inner.completed.get_or_create(queue_labels).inc();
        } else {
            self.inner.failed.get_or_create(queue_labels).inc();
        }
        self.inner
            .duration
            .get_or_create(queue_labels)
            .observe(seconds);
    }

    /// `n` stalls of a job of this queue were recovered.
    pub fn jobs_stalled(&self, queue_labels: &Vec<(String, String)>, n: u32) {
        self.inner
            .stalled
            .get_or_create(queue_labels)
            .inc_by(n as u64);
    }

    /// A job of this queue was postponed by its per-key rate limit (not an attempt).
    pub fn job_delayed(&self, queue_labels: &Vec<(String, String)>) {
        self.inner.delayed.get_or_create(queue_labels).inc();
    }

    /// Run-record buffer figures.
    pub fn runs(&self, buffered: i64, dropped: u64, written: u64) {
        self.inner.runs_buffered.set(buffered);
        let d = dropped.saturating_sub(self.inner.runs_dropped.get());
        self.inner.runs_dropped.inc_by(d);
        let w = written.saturating_sub(self.inner.runs_written.get());
        self.inner.runs_written.inc_by(w);
    }

    fn toolkit_cache(&self) {
        let mut seen = self
            .inner
            .toolkit_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (ns, s) in keel::cache::cache_stats() {
            for (kind, value) in [
                ("hit", s.hits),
                ("stale_hit", s.stale_hits),
                ("miss", s.misses),
                ("compute", s.computes),
                ("error", s.errors),
                ("oversize", s.oversize),
            ] {
                let last = seen.entry((ns.clone(), kind)).or_insert(0);
                let delta = value.saturating_sub(*last);
                *last = value;
                self.inner
                    .toolkit_cache
                    .get_or_create(&labels(&[("namespace", &ns), ("kind", kind)]))
                    .inc_by(delta);
            }
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        self.toolkit_cache();
        let mut out = String::new();
        if encode(&mut out, &self.inner.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Metrics {
    /// Sets one queue's depth gauges (read at scrape time) and, when read, its DLQ size.
    pub fn queue_depths(&self, queue: &str, c: &keel::QueueCounts, dlq: Option<u64>) {
        for (s, n) in [
            ("waiting", c.waiting),
            ("active", c.active),
            ("delayed", c.delayed),
            ("prioritized", c.prioritized),
            ("completed", c.completed),
            ("failed", c.failed),
        ] {
            self.inner
                .queue_jobs
                .get_or_create(&labels(&[("queue", queue), ("state", s)]))
                .set(n as i64);
        }
        if let Some(n) = dlq {
            self.inner
                .dlq_jobs
                .get_or_create(&labels(&[("queue", queue)]))
                .set(n as i64);
        }
    }
}
