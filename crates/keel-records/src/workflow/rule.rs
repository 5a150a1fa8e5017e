//! The rule that moves an instance forward ([`WorkflowState::apply`], [`WorkflowState::settle`],
//! [`WorkflowState::rerun`]) and the step job ids; see [`super`] for what it decides.

use super::{
    InstanceStatus, OnFailure, StepEvent, StepExecution, StepStatus, StepUpdate, WorkflowState,
};
use crate::error::{Result, StoreError};

impl WorkflowState {
    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&StepExecution> {
        self.steps.iter().find(|s| s.step == name)
    }

    fn step_mut(&mut self, name: &str) -> Option<&mut StepExecution> {
        self.steps.iter_mut().find(|s| s.step == name)
    }

    /// Applies one step event. Events of an ended step change nothing (a late or repeated
    /// report: the stored output is the first one), except `Queued`, which may arrive late and
    /// only fills in the job id and input; `Started` of a step that has not ended counts the
    /// attempt. Returns whether the step changed.
    pub fn apply(&mut self, update: &StepUpdate) -> bool {
        let at = update.at;
        let Some(step) = self.step_mut(&update.step) else {
            return false;
        };
        if let StepEvent::Queued { job_id, input } = &update.event {
            // The report that a job was added can arrive after its worker's own reports (the
            // job is taken at once): it fills in what it knows and moves only a pending step.
            if step.job_id.as_deref() == Some(job_id.as_str()) && step.input.is_some() {
                return false;
            }
            step.job_id = Some(job_id.clone());
            step.input = Some(input.clone());
            step.queued_at.get_or_insert(at);
            if step.status == StepStatus::Pending {
                step.status = StepStatus::Queued;
            }
            return true;
        }
        let mut filled = false;
        if let (None, Some(j)) = (&step.job_id, &update.job_id) {
            step.job_id = Some(j.clone());
            filled = true;
        }
        if let (None, Some(i)) = (&step.input, &update.input) {
            step.input = Some(i.clone());
            filled = true;
        }
        if step.status.is_final() {
            return filled;
        }
        if let Some(t) = update.started_at {
            step.started_at.get_or_insert(t);
        }
        if let Some(a) = update.attempt {
            step.attempts = step.attempts.max(a);
        }
        match &update.event {
            StepEvent::Queued { .. } => unreachable!("handled above"),
            StepEvent::Started { attempt } => {
                step.status = StepStatus::Running;
                step.attempts = step.attempts.max(*attempt);
                step.started_at.get_or_insert(at);
            }
            StepEvent::Completed { output } => {
                step.status = StepStatus::Completed;
                step.output = Some(output.clone());
                step.error = None;
                step.stack = None;
                finish(step, at);
            }
            StepEvent::Failed {
                attempt,
                error,
                stack,
                terminal,
            } => {
                step.attempts = step.attempts.max(*attempt);
                step.error = Some(error.clone());
                step.stack = stack.clone();
                step.started_at.get_or_insert(at);
                if *terminal {
                    step.status = StepStatus::Failed;
                    finish(step, at);
                } else {
                    step.status = StepStatus::Running;
                }
            }
        }
        true
    }

    /// Moves the instance forward at `now`: starts it, fails it, completes it, cancels what can
    /// no longer run, queues the steps whose needs are met. Returns the steps just queued
    /// (their jobs are to be added, under [`step_job_id`]) and the steps whose status changed.
    pub fn settle(&mut self, now: i64) -> (Vec<String>, Vec<String>) {
        let mut changed = Vec::new();
        let inst = &mut self.instance;
        if inst.status.is_final() {
            return (Vec::new(), changed);
        }
        if inst.status == InstanceStatus::Pending {
            if let Some(first) = self.steps.iter().filter_map(|s| s.started_at).min() {
                inst.status = InstanceStatus::Running;
                inst.started_at = Some(first);
            }
        }
        let failed = self
            .steps
            .iter()
            .find(|s| s.status == StepStatus::Failed && s.on_failure == OnFailure::Fail);
        if let Some(f) = failed {
            let error = format!(
                "step {} failed: {}",
                f.step,
                f.error.as_deref().unwrap_or("no error recorded")
            );
            self.end(InstanceStatus::Failed, Some(error), now, &mut changed);
            return (Vec::new(), changed);
        }
        if self.steps.iter().all(|s| s.status.is_final()) {
            self.end(InstanceStatus::Completed, None, now, &mut changed);
            return (Vec::new(), changed);
        }
        let ready = self
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Pending)
            .filter(|s| {
                s.needs
                    .iter()
                    .all(|n| self.step(n).map(|d| d.satisfies()).unwrap_or(false))
            })
            .map(|s| s.step.clone())
            .collect::<Vec<_>>();
        // Queued in the same write that made them ready, under the job ids they are added
        // with: no second write when the jobs are added, and a later settle does not hand them
        // out again. A crash before the jobs exist leaves queued steps without jobs, which the
        // reconciler adds.
        let (id, reruns) = (self.instance.id.clone(), self.instance.reruns);
        for name in &ready {
            if let Some(s) = self.step_mut(name) {
                s.status = StepStatus::Queued;
                s.job_id = Some(step_job_id(&id, name, reruns));
                s.queued_at = Some(now);
                changed.push(name.clone());
            }
        }
        (ready, changed)
    }

    /// Ends the instance with `status`: steps that have not started are cancelled.
    pub fn end(
        &mut self,
        status: InstanceStatus,
        error: Option<String>,
        now: i64,
        changed: &mut Vec<String>,
    ) {
        self.instance.status = status;
        self.instance.error = error;
        self.instance.finished_at = Some(now);
        if self.instance.started_at.is_none() && status != InstanceStatus::Cancelled {
            self.instance.started_at = Some(now);
        }
        for s in &mut self.steps {
            if matches!(s.status, StepStatus::Pending | StepStatus::Queued) {
                s.status = StepStatus::Cancelled;
                s.finished_at = Some(now);
                changed.push(s.step.clone());
            }
        }
    }

    /// Prepares a re-run from the failed steps: steps that failed the instance and cancelled
    /// steps go back to pending (completed ones keep their outputs and are skipped), the
    /// instance runs again. `Conflict`
    /// unless the instance failed or was cancelled.
    pub fn rerun(&mut self, now: i64) -> Result<Vec<String>> {
        if !matches!(
            self.instance.status,
            InstanceStatus::Failed | InstanceStatus::Cancelled
        ) {
            return Err(StoreError::Conflict(format!(
                "instance {} is {}: only failed or cancelled instances are re-run",
                self.instance.id,
                self.instance.status.as_str()
            )));
        }
        let mut changed = Vec::new();
        for s in &mut self.steps {
            // A failure with `on_failure = "continue"` did not stop the instance: the steps after
            // it ran on it, so it stays as it was.
            let stopped = s.status == StepStatus::Cancelled
                || (s.status == StepStatus::Failed && s.on_failure == OnFailure::Fail);
            if stopped {
                s.status = StepStatus::Pending;
                s.attempts = 0;
                s.job_id = None;
                s.input = None;
                s.output = None;
                s.error = None;
                s.stack = None;
                s.queued_at = None;
                s.started_at = None;
                s.finished_at = None;
                s.duration_ms = None;
                changed.push(s.step.clone());
            }
        }
        let inst = &mut self.instance;
        inst.status = InstanceStatus::Running;
        inst.error = None;
        inst.finished_at = None;
        inst.reruns += 1;
        inst.updated_at = now;
        Ok(changed)
    }
}

fn finish(step: &mut StepExecution, at: i64) {
    step.finished_at = Some(at);
    step.duration_ms = step.started_at.map(|s| (at - s).max(0));
}

/// The job id of a step's run: `wf-<instance>-<step>`, and `wf-<instance>-<step>-r<n>` on the
/// n-th re-run (a failed job of an earlier run keeps its id).
pub fn step_job_id(instance_id: &str, step: &str, reruns: i64) -> String {
    if reruns == 0 {
        format!("wf-{instance_id}-{step}")
    } else {
        format!("wf-{instance_id}-{step}-r{reruns}")
    }
}

/// The instance id and step of a step job id; `None` for any other job.
pub fn parse_step_job_id(job_id: &str) -> Option<(&str, &str)> {
    let rest = job_id.strip_prefix("wf-")?;
    let (instance, step) = rest.split_at_checked(32)?;
    if !instance.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let step = step.strip_prefix('-')?;
    let step = match step.rsplit_once("-r") {
        Some((s, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => s,
        _ => step,
    };
    (!step.is_empty()).then_some((instance, step))
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::workflow::*;
    use serde_json::json;

    /// A new instance (id `a…a`) of the steps `(name, needs, on failure)`.
    pub(crate) fn new(steps: &[(&str, &[&str], OnFailure)]) -> WorkflowState {
        NewInstance {
            id: "a".repeat(32),
            tenant_id: None,
            workflow: "w".into(),
            version: 1,
            input: json!({}),
            trigger: Trigger {
                kind: "api".into(),
                reference: None,
            },
            actor: "test".into(),
            steps: steps
                .iter()
                .map(|(n, needs, f)| NewStep {
                    step: n.to_string(),
                    queue: "q".into(),
                    job_name: "j".into(),
                    needs: needs.iter().map(|s| s.to_string()).collect(),
                    on_failure: *f,
                })
                .collect(),
        }
        .state(1)
    }

    fn ev(s: &mut WorkflowState, step: &str, event: StepEvent) {
        s.apply(&StepUpdate {
            instance_id: s.instance.id.clone(),
            step: step.into(),
            at: 10,
            job_id: None,
            input: None,
            started_at: None,
            attempt: None,
            event,
        });
    }

    #[test]
    fn a_fan_in_is_ready_once_every_need_is_done() {
        let f = OnFailure::Fail;
        let mut s = new(&[("a", &[], f), ("b", &[], f), ("c", &["a", "b"], f)]);
        assert_eq!(s.settle(2).0, vec!["a", "b"]);
        ev(&mut s, "a", StepEvent::Started { attempt: 1 });
        ev(&mut s, "a", StepEvent::Completed { output: json!(1) });
        assert_eq!(s.step("b").unwrap().status, StepStatus::Queued);
        assert_eq!(
            s.step("b").unwrap().job_id.as_deref(),
            Some(step_job_id(&s.instance.id, "b", 0).as_str())
        );
        let (ready, _) = s.settle(3);
        assert!(ready.is_empty(), "c waits for b, queued already");
        assert_eq!(s.instance.status, InstanceStatus::Running);
        ev(&mut s, "b", StepEvent::Completed { output: json!(2) });
        assert_eq!(s.settle(4).0, vec!["c"]);
        ev(&mut s, "c", StepEvent::Completed { output: json!(3) });
        s.settle(5);
        assert_eq!(s.instance.status, InstanceStatus::Completed);
        assert_eq!(s.instance.finished_at, Some(5));
    }

    #[test]
    fn a_failed_step_fails_the_instance_or_lets_it_continue() {
        let mut s = new(&[
            ("a", &[], OnFailure::Continue),
            ("b", &["a"], OnFailure::Fail),
            ("c", &["b"], OnFailure::Fail),
        ]);
        let failed = |attempt, terminal| StepEvent::Failed {
            attempt,
            error: "boom".into(),
            stack: None,
            terminal,
        };
        ev(&mut s, "a", failed(1, false));
        assert_eq!(s.step("a").unwrap().status, StepStatus::Running);
        ev(&mut s, "a", failed(2, true));
        assert_eq!(s.settle(2).0, vec!["b"], "continue: b runs");
        ev(&mut s, "b", failed(1, true));
        let (ready, changed) = s.settle(3);
        assert!(ready.is_empty());
        assert_eq!(changed, vec!["c"]);
        assert_eq!(s.instance.status, InstanceStatus::Failed);
        assert_eq!(s.instance.error.as_deref(), Some("step b failed: boom"));
        assert_eq!(s.step("c").unwrap().status, StepStatus::Cancelled);
        // A re-run resets b and c, keeps a's failure (continue) as it was.
        assert_eq!(s.rerun(4).unwrap(), vec!["b", "c"]);
        assert_eq!(s.instance.reruns, 1);
        assert_eq!(s.settle(5).0, vec!["b"]);
        assert_eq!(s.rerun(6).unwrap_err().code(), "conflict");
    }

    #[test]
    fn an_ended_step_keeps_its_first_output() {
        let mut s = new(&[("a", &[], OnFailure::Fail)]);
        ev(&mut s, "a", StepEvent::Completed { output: json!(1) });
        ev(&mut s, "a", StepEvent::Completed { output: json!(2) });
        ev(&mut s, "a", StepEvent::Started { attempt: 2 });
        assert_eq!(s.step("a").unwrap().output, Some(json!(1)));
        assert_eq!(s.step("a").unwrap().status, StepStatus::Completed);
    }

    #[test]
    fn step_job_ids_round_trip() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            parse_step_job_id(&step_job_id(id, "seo_audit", 0)),
            Some((id, "seo_audit"))
        );
        assert_eq!(
            parse_step_job_id(&step_job_id(id, "draft", 3)),
            Some((id, "draft"))
        );
        assert_eq!(parse_step_job_id("wf-short-a"), None);
        assert_eq!(parse_step_job_id("42"), None);
        assert_eq!(parse_step_job_id(&format!("wf-{id}-")), None);
    }
}
