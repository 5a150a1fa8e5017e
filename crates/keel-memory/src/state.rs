//! One queue's data, kept under one lock. Every transition here is a plain method on
//! [`QueueData`], so each one is atomic simply because the caller holds the queue's mutex while
//! it runs (the in-process counterpart of BullMQ's one-Lua-script-per-transition rule).
//!
//! Over 600 lines with its tests (the code is ~560): one queue's state machine is one type on
//! purpose, so every invariant between its collections is visible in one place.

use std::collections::{BTreeSet, HashMap, VecDeque};

use keel_core::{Error, Job, JobState, KeepJobs, NewJob, QueueCounts, QueueEvent, Result};
use serde_json::Value;

use crate::schedule::Scheduler;

/// A job and the bookkeeping the memory backend keeps beside it.
pub(crate) struct Entry {
    pub job: Job,
    pub state: JobState,
    pub logs: Vec<String>,
    /// Insertion order (for FIFO listing and tie breaks).
    pub seq: u64,
    /// When delayed: the run-at time.
    pub due: u64,
    /// The scheduler that produced this job, if any.
    pub scheduler: Option<String>,
}

/// Everything about one queue.
#[derive(Default)]
pub(crate) struct QueueData {
    pub next_id: u64,
    pub seq: u64,
    pub jobs: HashMap<String, Entry>,
    /// Waiting jobs: taken from the back; FIFO adds go to the front, LIFO adds to the back
    /// (BullMQ's LPUSH / RPUSH + RPOPLPUSH), so listing front-first is newest-first.
    pub wait: VecDeque<String>,
    /// (priority, seq, id): lowest priority value first, FIFO within a priority.
    pub prioritized: BTreeSet<(u32, u64, String)>,
    /// (due, seq, id).
    pub delayed: BTreeSet<(u64, u64, String)>,
    /// (seq of taking, id).
    pub active: BTreeSet<(u64, String)>,
    /// (finished_on, seq, id).
    pub completed: BTreeSet<(u64, u64, String)>,
    pub failed: BTreeSet<(u64, u64, String)>,
    pub paused: bool,
    /// dedup id → (job id, expiry when a ttl was given).
    pub dedup: HashMap<String, (String, Option<u64>)>,
    /// At most `max` job starts per `duration_ms`, with the start times in the window.
    pub rate_limit: Option<(u64, u64)>,
    pub starts: VecDeque<u64>,
    /// At most this many jobs active at once, across workers.
    pub global_concurrency: Option<u64>,
    pub schedulers: HashMap<String, Scheduler>,
    /// Events produced by the last transitions, drained by the caller after unlocking.
    pub pending_events: Vec<QueueEvent>,
}

/// What a worker gets when it takes a job.
pub(crate) enum Take {
    /// A job to run (its snapshot, with `attempts_started` already counted).
    Job(Box<Job>),
    /// Nothing now; look again no later than this time (ms), or when notified.
    WaitUntil(Option<u64>),
}

impl QueueData {
    /// Whether the queue holds or held anything (what makes it listed, like BullMQ's meta key).
    pub fn in_use(&self) -> bool {
        self.next_id > 0
            || !self.jobs.is_empty()
            || self.paused
            || self.rate_limit.is_some()
            || self.global_concurrency.is_some()
            || !self.schedulers.is_empty()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn emit(&mut self, event: QueueEvent) {
        self.pending_events.push(event);
    }

    /// Adds a job (options already merged and validated). Returns the stored job; for a known
    /// custom id or a held deduplication id, the existing job.
    pub fn add(&mut self, queue: &str, new: NewJob, now: u64) -> Job {
        if let Some(id) = &new.opts.job_id {
            if let Some(existing) = self.jobs.get(id) {
                return existing.job.clone();
            }
        }
        if let Some(de) = &new.opts.deduplication {
            if let Some((held, expiry)) = self.dedup.get(&de.id) {
                let live = match expiry {
                    Some(t) => *t > now,
                    None => self.jobs.get(held).is_some_and(|e| !e.state.is_finished()),
                };
                if live {
                    if let Some(e) = self.jobs.get(held) {
                        return e.job.clone();
                    }
                }
            }
        }
        let id = match &new.opts.job_id {
            Some(id) => id.clone(),
            None => {
                self.next_id += 1;
                self.next_id.to_string()
            }
        };
        if let Some(de) = &new.opts.deduplication {
            self.dedup
                .insert(de.id.clone(), (id.clone(), de.ttl_ms.map(|t| now + t)));
        }
        let job = Job::added(id.clone(), queue, new, now);
        let seq = self.next_seq();
        self.emit(QueueEvent::Added {
            job_id: id.clone(),
            name: job.name.clone(),
        });
        let delay = job.opts.delay_ms.unwrap_or(0);
        self.jobs.insert(
            id.clone(),
            Entry {
                job: job.clone(),
                state: JobState::Waiting,
                logs: Vec::new(),
                seq,
                due: 0,
                scheduler: None,
            },
        );
        if delay > 0 {
            self.put_delayed(&id, now + delay);
        } else {
            self.put_ready(&id, job.opts.lifo, true);
        }
        job
    }

    /// Puts a job in `wait` (front, or back for LIFO) or `prioritized`.
    fn put_ready(&mut self, id: &str, lifo: bool, fresh: bool) {
        let Some(e) = self.jobs.get_mut(id) else {
            return;
        };
        let prio = e.job.priority();
        let seq = e.seq;
        if prio > 0 {
            e.state = JobState::Prioritized;
            self.prioritized.insert((prio, seq, id.to_string()));
        } else {
            e.state = JobState::Waiting;
            if lifo && fresh {
                self.wait.push_back(id.to_string());
            } else {
                self.wait.push_front(id.to_string());
            }
        }
        self.emit(QueueEvent::Waiting {
            job_id: id.to_string(),
        });
    }

    fn put_delayed(&mut self, id: &str, due: u64) {
        let Some(e) = self.jobs.get_mut(id) else {
            return;
        };
        e.state = JobState::Delayed;
        e.due = due;
        let seq = e.seq;
        self.delayed.insert((due, seq, id.to_string()));
        self.emit(QueueEvent::Delayed {
            job_id: id.to_string(),
            until_ms: due,
        });
    }

    /// Moves every due delayed job to waiting/prioritized.
    pub fn promote_due(&mut self, now: u64) {
        while let Some((due, _, _)) = self.delayed.first() {
            if *due > now {
                break;
            }
            let (_, _, id) = self.delayed.pop_first().expect("checked non-empty");
            self.put_ready(&id, false, false);
        }
    }

    /// Detaches a job from whatever state collection holds it.
    fn detach(&mut self, id: &str) {
        let Some(e) = self.jobs.get(id) else { return };
        let (seq, due, prio, fin) = (
            e.seq,
            e.due,
            e.job.priority(),
            e.job.finished_on.unwrap_or(0),
        );
        match e.state {
            JobState::Waiting | JobState::WaitingChildren => {
                if let Some(pos) = self.wait.iter().position(|x| x == id) {
                    self.wait.remove(pos);
                }
            }
            JobState::Prioritized => {
                self.prioritized.remove(&(prio, seq, id.to_string()));
            }
            JobState::Delayed => {
                self.delayed.remove(&(due, seq, id.to_string()));
            }
            JobState::Active => {
                self.active.retain(|(_, x)| x != id);
            }
            JobState::Completed => {
                self.completed.remove(&(fin, seq, id.to_string()));
            }
            JobState::Failed => {
                self.failed.remove(&(fin, seq, id.to_string()));
            }
        }
    }

    /// Takes the next job for a worker, honouring pause and the rate limit. Waiting jobs go
    /// before prioritized ones, as in BullMQ's `moveToActive`.
    pub fn take(&mut self, now: u64, worker: Option<&str>) -> Take {
        self.promote_due(now);
        let next_due = self.delayed.first().map(|(d, _, _)| *d);
        if self.paused {
            return Take::WaitUntil(None);
        }
        if self
            .global_concurrency
            .is_some_and(|max| self.active.len() as u64 >= max)
        {
            // A finished job's event wakes the workers.
            return Take::WaitUntil(next_due);
        }
        if let Some((max, dur)) = self.rate_limit {
            while self.starts.front().is_some_and(|t| *t + dur <= now) {
                self.starts.pop_front();
            }
            if self.starts.len() as u64 >= max {
                let reset = self.starts.front().map(|t| t + dur);
                return Take::WaitUntil(min_opt(reset, next_due));
            }
        }
        let id = match self.wait.pop_back() {
            Some(id) => id,
            None => match self.prioritized.pop_first() {
                Some((_, _, id)) => id,
                None => return Take::WaitUntil(next_due),
            },
        };
        if self.rate_limit.is_some() {
            self.starts.push_back(now);
        }
        let seq = self.next_seq();
        self.active.insert((seq, id.clone()));
        let e = self
            .jobs
            .get_mut(&id)
            .expect("queued ids always have entries");
        e.state = JobState::Active;
        e.job.attempts_started += 1;
        e.job.processed_on = Some(now);
        e.job.processed_by = worker.map(str::to_string);
        let job = e.job.clone();
        let scheduler = e.scheduler.clone();
        self.emit(QueueEvent::Active { job_id: id.clone() });
        if let Some(sid) = scheduler {
            self.schedule_next(&job.queue, &sid, now);
        }
        Take::Job(Box::new(job))
    }

    /// Finishes an attempt successfully.
    pub fn complete(&mut self, id: &str, value: Value, now: u64) -> bool {
        if self.jobs.get(id).map(|e| e.state) != Some(JobState::Active) {
            return false;
        }
        self.detach(id);
        let e = self.jobs.get_mut(id).expect("checked above");
        e.state = JobState::Completed;
        e.job.attempts_made += 1;
        e.job.finished_on = Some(now);
        e.job.returnvalue = Some(value.clone());
        let seq = e.seq;
        let keep = e.job.opts.remove_on_complete.clone();
        self.completed.insert((now, seq, id.to_string()));
        self.emit(QueueEvent::Completed {
            job_id: id.to_string(),
            returnvalue: value,
        });
        self.retain(JobState::Completed, keep, now);
        true
    }

    /// Records a failed attempt: retries (delayed after `delay` ms, or waiting) unless
    /// `terminal`. Returns false when the job was not active any more. Like bullmq-official's
    /// worker, it stores the reason but no stack trace (Keel keeps handler stacks in the DLQ
    /// entry), so both backends show the same job.
    pub fn fail(&mut self, id: &str, reason: &str, terminal: bool, delay: u64, now: u64) -> bool {
        if self.jobs.get(id).map(|e| e.state) != Some(JobState::Active) {
            return false;
        }
        self.detach(id);
        let e = self.jobs.get_mut(id).expect("checked above");
        e.job.attempts_made += 1;
        e.job.failed_reason = Some(reason.to_string());
        if terminal {
            e.state = JobState::Failed;
            e.job.finished_on = Some(now);
            let seq = e.seq;
            let keep = e.job.opts.remove_on_fail.clone();
            self.failed.insert((now, seq, id.to_string()));
            self.emit(QueueEvent::Failed {
                job_id: id.to_string(),
                reason: reason.to_string(),
            });
            self.retain(JobState::Failed, keep, now);
        } else if delay > 0 {
            self.put_delayed(id, now + delay);
        } else {
            let lifo = e.job.opts.lifo;
            self.put_ready(id, lifo, true);
        }
        true
    }

    /// Puts an active job back to delayed until `until` without counting an attempt, with
    /// `log` appended to its log (a per-key rate limit's postponement).
    pub fn postpone(&mut self, id: &str, until: u64, log: &str) -> bool {
        if self.jobs.get(id).map(|e| e.state) != Some(JobState::Active) {
            return false;
        }
        self.detach(id);
        if let Some(e) = self.jobs.get_mut(id) {
            e.logs.push(log.to_string());
        }
        self.put_delayed(id, until);
        true
    }

    /// Puts an active job back to waiting because its worker let it go (a stall).
    pub fn release_stalled(&mut self, id: &str) -> bool {
        if self.jobs.get(id).map(|e| e.state) != Some(JobState::Active) {
            return false;
        }
        self.detach(id);
        if let Some(e) = self.jobs.get_mut(id) {
            e.job.stalled_counter += 1;
        }
        self.emit(QueueEvent::Stalled {
            job_id: id.to_string(),
        });
        self.put_ready(id, false, false);
        true
    }

    /// Applies a retention policy to completed or failed jobs.
    fn retain(&mut self, state: JobState, keep: Option<KeepJobs>, now: u64) {
        let Some(keep) = keep else { return };
        let set = if state == JobState::Completed {
            &self.completed
        } else {
            &self.failed
        };
        let mut doomed: Vec<String> = Vec::new();
        if let Some(age) = keep.age_s {
            let cutoff = now.saturating_sub(age.saturating_mul(1000));
            doomed.extend(
                set.iter()
                    .take_while(|(f, _, _)| *f < cutoff)
                    .map(|(_, _, id)| id.clone()),
            );
        }
        if let Some(count) = keep.count {
            let excess = set.len().saturating_sub(count);
            doomed.extend(set.iter().take(excess).map(|(_, _, id)| id.clone()));
        }
        doomed.sort();
        doomed.dedup();
        for id in doomed {
            self.delete(&id);
        }
    }

    /// Deletes a job entirely (any state).
    pub fn delete(&mut self, id: &str) -> bool {
        if !self.jobs.contains_key(id) {
            return false;
        }
        self.detach(id);
        self.jobs.remove(id);
        self.dedup.retain(|_, (held, _)| held != id);
        self.emit(QueueEvent::Removed {
            job_id: id.to_string(),
        });
        true
    }

    /// Removes a job unless active.
    pub fn remove(&mut self, id: &str) -> Result<bool> {
        match self.jobs.get(id).map(|e| e.state) {
            None => Ok(false),
            Some(JobState::Active) => Err(Error::Conflict(format!(
                "job {id} is active (locked by a worker) and cannot be removed"
            ))),
            Some(_) => Ok(self.delete(id)),
        }
    }

    /// Failed → waiting with fresh attempts.
    pub fn retry(&mut self, queue: &str, id: &str) -> Result<()> {
        match self.jobs.get(id).map(|e| e.state) {
            None => Err(Error::not_found(format!("job {id} in queue {queue}"))),
            Some(JobState::Failed) => {
                self.detach(id);
                let e = self.jobs.get_mut(id).expect("checked above");
                e.job.attempts_made = 0;
                e.job.attempts_started = 0;
                e.job.stalled_counter = 0;
                e.job.failed_reason = None;
                e.job.finished_on = None;
                e.job.processed_on = None;
                self.put_ready(id, false, false);
                Ok(())
            }
            Some(other) => Err(Error::Conflict(format!(
                "job {id} is {other}, only failed jobs can be retried"
            ))),
        }
    }

    /// Ids in `state`, newest first unless `asc`, from `offset`, at most `limit`.
    pub fn ids(&self, state: JobState, offset: usize, limit: usize, asc: bool) -> Vec<String> {
        fn page<'a, I>(it: I, offset: usize, limit: usize) -> Vec<String>
        where
            I: Iterator<Item = &'a String>,
        {
            it.skip(offset).take(limit).cloned().collect()
        }
        match (state, asc) {
            (JobState::Waiting, false) => page(self.wait.iter(), offset, limit),
            (JobState::Waiting, true) => page(self.wait.iter().rev(), offset, limit),
            (JobState::Active, false) => {
                page(self.active.iter().rev().map(|x| &x.1), offset, limit)
            }
            (JobState::Active, true) => page(self.active.iter().map(|x| &x.1), offset, limit),
            // Prioritized "newest first" follows BullMQ's ZRANGE order with asc=false, i.e.
            // by score descending; asc lists in run order.
            (JobState::Prioritized, false) => {
                page(self.prioritized.iter().rev().map(|x| &x.2), offset, limit)
            }
            (JobState::Prioritized, true) => {
                page(self.prioritized.iter().map(|x| &x.2), offset, limit)
            }
            (JobState::Delayed, false) => {
                page(self.delayed.iter().rev().map(|x| &x.2), offset, limit)
            }
            (JobState::Delayed, true) => page(self.delayed.iter().map(|x| &x.2), offset, limit),
            (JobState::Completed, false) => {
                page(self.completed.iter().rev().map(|x| &x.2), offset, limit)
            }
            (JobState::Completed, true) => page(self.completed.iter().map(|x| &x.2), offset, limit),
            (JobState::Failed, false) => {
                page(self.failed.iter().rev().map(|x| &x.2), offset, limit)
            }
            (JobState::Failed, true) => page(self.failed.iter().map(|x| &x.2), offset, limit),
            (JobState::WaitingChildren, _) => Vec::new(),
        }
    }

    /// Counts by state.
    pub fn counts(&self) -> QueueCounts {
        QueueCounts {
            waiting: self.wait.len() as u64,
            active: self.active.len() as u64,
            delayed: self.delayed.len() as u64,
            prioritized: self.prioritized.len() as u64,
            completed: self.completed.len() as u64,
            failed: self.failed.len() as u64,
            paused: self.paused,
        }
    }

    /// Removes up to `limit` jobs in `state` whose reference time is before `cutoff`.
    pub fn clean(&mut self, cutoff: u64, limit: usize, state: JobState) -> Vec<String> {
        let ids: Vec<String> = self
            .ids(state, 0, usize::MAX, true)
            .into_iter()
            .filter(|id| {
                self.jobs.get(id).is_some_and(|e| {
                    let t = if state.is_finished() {
                        e.job.finished_on.unwrap_or(0)
                    } else {
                        e.job.timestamp
                    };
                    t < cutoff
                })
            })
            .take(limit)
            .collect();
        for id in &ids {
            self.delete(id);
        }
        ids
    }

    /// Removes waiting and prioritized jobs (and delayed when asked).
    pub fn drain(&mut self, delayed: bool) {
        let mut ids: Vec<String> = self.wait.iter().cloned().collect();
        ids.extend(self.prioritized.iter().map(|x| x.2.clone()));
        if delayed {
            ids.extend(self.delayed.iter().map(|x| x.2.clone()));
        }
        for id in ids {
            self.delete(&id);
        }
        self.emit(QueueEvent::Drained);
    }

    /// Failed jobs finished within `[from, to]`, oldest first.
    pub fn failed_between(&self, from: u64, to: u64, limit: usize) -> Vec<Job> {
        self.failed
            .range((from, 0, String::new())..)
            .take_while(|(f, _, _)| *f <= to)
            .take(limit)
            .filter_map(|(_, _, id)| self.jobs.get(id).map(|e| e.job.clone()))
            .collect()
    }

    /// Adds the pending job of scheduler `sid` for its next run after `now`.
    pub fn schedule_next(&mut self, queue: &str, sid: &str, now: u64) {
        let Some(s) = self.schedulers.get_mut(sid) else {
            return;
        };
        let Some(next) = s.next_after(now) else {
            s.next_run = None;
            return;
        };
        s.next_run = Some(next);
        s.iterations += 1;
        let mut template = s.template.clone();
        let job_id = format!("repeat-{sid}-{next}");
        template.opts.job_id = Some(job_id.clone());
        template.opts.delay_ms = Some(next.saturating_sub(now).max(1));
        self.add(queue, template, now);
        if let Some(e) = self.jobs.get_mut(&job_id) {
            e.scheduler = Some(sid.to_string());
        }
        if let Some(s) = self.schedulers.get_mut(sid) {
            s.pending_job = Some(job_id);
        }
    }
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::JobOptions;
    use serde_json::json;

    fn add(q: &mut QueueData, opts: JobOptions) -> String {
        q.add("q", NewJob::new("t", json!({})).with_opts(opts), 1000)
            .id
    }

    fn take_id(q: &mut QueueData, now: u64) -> Option<String> {
        match q.take(now, None) {
            Take::Job(j) => Some(j.id),
            Take::WaitUntil(_) => None,
        }
    }

    #[test]
    fn fifo_lifo_and_priority_order() {
        let mut q = QueueData::default();
        let a = add(&mut q, JobOptions::default());
        let b = add(&mut q, JobOptions::default());
        let c = add(
            &mut q,
            JobOptions {
                lifo: true,
                ..Default::default()
            },
        );
        let p2 = add(
            &mut q,
            JobOptions {
                priority: Some(2),
                ..Default::default()
            },
        );
        let p1 = add(
            &mut q,
            JobOptions {
                priority: Some(1),
                ..Default::default()
            },
        );
        let order: Vec<_> = (0..5).filter_map(|_| take_id(&mut q, 1000)).collect();
        assert_eq!(order, vec![c, a, b, p1, p2]);
    }

    #[test]
    fn delayed_jobs_wait_for_their_time() {
        let mut q = QueueData::default();
        let d = add(
            &mut q,
            JobOptions {
                delay_ms: Some(50),
                ..Default::default()
            },
        );
        assert!(matches!(q.take(1010, None), Take::WaitUntil(Some(1050))));
        assert_eq!(take_id(&mut q, 1050), Some(d));
    }

    #[test]
    fn retention_by_count_keeps_the_newest() {
        let mut q = QueueData::default();
        let opts = JobOptions {
            remove_on_complete: Some(KeepJobs::count(2)),
            ..Default::default()
        };
        let ids: Vec<_> = (0..4).map(|_| add(&mut q, opts.clone())).collect();
        for (i, _) in ids.iter().enumerate() {
            let id = take_id(&mut q, 2000 + i as u64).unwrap();
            assert!(q.complete(&id, json!(null), 2000 + i as u64));
        }
        assert_eq!(q.counts().completed, 2);
        assert!(!q.jobs.contains_key(&ids[0]));
        assert!(q.jobs.contains_key(&ids[3]));
    }

    #[test]
    fn custom_id_and_dedup_return_the_existing_job() {
        let mut q = QueueData::default();
        let first = q.add(
            "q",
            NewJob::new("t", json!({"v": 1})).with_opts(JobOptions {
                job_id: Some("x".into()),
                ..Default::default()
            }),
            1,
        );
        let again = q.add(
            "q",
            NewJob::new("t", json!({"v": 2})).with_opts(JobOptions {
                job_id: Some("x".into()),
                ..Default::default()
            }),
            2,
        );
        assert_eq!(again.data, first.data);
        let de = JobOptions {
            deduplication: Some(keel_core::Deduplication {
                id: "d".into(),
                ttl_ms: None,
            }),
            ..Default::default()
        };
        let a = add(&mut q, de.clone());
        let b = add(&mut q, de.clone());
        assert_eq!(a, b);
        let id = take_id(&mut q, 5).unwrap();
        assert_eq!(id, "x");
        let id = take_id(&mut q, 5).unwrap();
        assert!(q.complete(&id, json!(1), 6));
        let c = add(&mut q, de);
        assert_ne!(a, c, "dedup id is released when the job finishes");
    }

    #[test]
    fn rate_limit_caps_starts_per_window() {
        let mut q = QueueData {
            rate_limit: Some((2, 100)),
            ..Default::default()
        };
        for _ in 0..3 {
            add(&mut q, JobOptions::default());
        }
        assert!(take_id(&mut q, 1000).is_some());
        assert!(take_id(&mut q, 1001).is_some());
        assert!(matches!(q.take(1002, None), Take::WaitUntil(Some(1100))));
        assert!(take_id(&mut q, 1100).is_some());
    }
}
