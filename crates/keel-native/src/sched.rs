//! Schedulers on the native engine: a scheduler keeps one delayed job for its next run; the
//! worker that takes a run adds the next one (`sched_fire.lua`, once across workers).

use keel_core::schedule::Timetable;
use keel_core::{Error, NewJob, Result, Schedule, SchedulerInfo};
use serde::{Deserialize, Serialize};

use crate::NativeEngine;

/// A scheduler as stored in `scheds`.
#[derive(Serialize, Deserialize)]
struct Spec {
    schedule: Schedule,
    template: NewJob,
}

impl NativeEngine {
    /// Adds the job of a scheduler's next run after the run `run_ms` was taken (once across
    /// workers). Called by the worker that took the run, before it runs.
    pub(crate) async fn fire_next(&self, queue: &str, id: &str, run_ms: u64) -> Result<()> {
        let keys = self.keys(queue);
        let spec: Option<String> = self
            .query(
                "reading a scheduler",
                redis::pipe().hget(keys.k("scheds"), id),
            )
            .await
            .map(|(s,): (Option<String>,)| s)?;
        let Some(spec) = spec else {
            return Ok(());
        };
        let spec: Spec = serde_json::from_str(&spec)
            .map_err(|e| Error::Backend(format!("scheduler {id} is not readable: {e}")))?;
        let now = keel_core::now_ms();
        let Some(next) = Timetable::new(&spec.schedule)?.next_after(run_ms.max(now)) else {
            return Ok(());
        };
        let job = Self::encode(&spec.template, now, Some((id.to_string(), next)))?;
        let mut inv = keys.invoke(&self.scripts.sched_fire);
        inv.arg(id).arg(run_ms).arg(next).arg(job);
        self.script::<i64>("firing a scheduler", inv).await?;
        Ok(())
    }

    /// Creates or replaces scheduler `id` and adds the job of its next run.
    pub(crate) async fn save_scheduler(
        &self,
        queue: &str,
        id: &str,
        schedule: Schedule,
        template: NewJob,
    ) -> Result<SchedulerInfo> {
        let now = keel_core::now_ms();
        let next = Timetable::new(&schedule)?
            .next_after(now)
            .ok_or_else(|| Error::invalid("pattern", "the schedule never fires again"))?;
        let job = Self::encode(&template, now, Some((id.to_string(), next)))?;
        let name = template.name.clone();
        let spec = serde_json::to_string(&Spec {
            schedule: schedule.clone(),
            template,
        })
        .map_err(|e| Error::invalid("data", format!("not serializable: {e}")))?;
        let mut inv = self.keys(queue).invoke(&self.scripts.sched_upsert);
        inv.arg(id).arg(spec).arg(next).arg(job);
        let iterations: u64 = self.script("saving a scheduler", inv).await?;
        Ok(SchedulerInfo {
            id: id.to_string(),
            name,
            schedule,
            next_run_ms: Some(next),
            iteration_count: iterations,
        })
    }

    /// The queue's schedulers, by id.
    pub(crate) async fn schedulers(&self, queue: &str) -> Result<Vec<SchedulerInfo>> {
        let keys = self.keys(queue);
        #[allow(clippy::type_complexity)]
        let (specs, next, counts): (
            Vec<(String, String)>,
            Vec<(String, f64)>,
            Vec<(String, u64)>,
        ) = self
            .query(
                "listing schedulers",
                redis::pipe()
                    .hgetall(keys.k("scheds"))
                    .zrange_withscores(keys.k("schedz"), 0, -1)
                    .hgetall(keys.k("schedi")),
            )
            .await?;
        let next: std::collections::HashMap<String, f64> = next.into_iter().collect();
        let counts: std::collections::HashMap<String, u64> = counts.into_iter().collect();
        let mut out = Vec::new();
        for (id, spec) in specs {
            let Ok(spec) = serde_json::from_str::<Spec>(&spec) else {
                continue;
            };
            out.push(SchedulerInfo {
                name: spec.template.name,
                schedule: spec.schedule,
                next_run_ms: next.get(&id).map(|t| *t as u64),
                iteration_count: counts.get(&id).copied().unwrap_or(0),
                id,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Removes a scheduler and the pending job of its next run.
    pub(crate) async fn drop_scheduler(&self, queue: &str, id: &str) -> Result<bool> {
        let mut inv = self.keys(queue).invoke(&self.scripts.sched_remove);
        inv.arg(id);
        Ok(self.script::<i64>("removing a scheduler", inv).await? == 1)
    }
}
