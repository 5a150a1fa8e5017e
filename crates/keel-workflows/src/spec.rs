//! Workflow definitions: what `[workflows.NAME]` in keel.toml and `PUT /api/owner/workflows/NAME`
//! say, and their validation (errors name the key, as the rest of the configuration's do).
//!
//! ```toml
//! [workflows.publish_article]
//! description = "Draft, audit and announce an article"
//! schedule = { cron = "0 6 * * *", tz = "Europe/Berlin", input = { topic = "daily" } }
//! on_complete = [{ queue = "imports", job = "article_imported" }]
//!
//! [[workflows.publish_article.steps]]
//! name = "draft"                      # [A-Za-z0-9_], unique in the workflow
//! queue = "ai-content"                # a configured queue; its handlers run the step
//! job = "generate_article_draft"      # the job name (default: the step name)
//! input = { topic = "${input.topic}" }
//! attempts = 3                        # overrides the queue's job defaults
//! backoff = { type = "exponential", delay = 1000 }
//! timeout_ms = 60000
//!
//! [[workflows.publish_article.steps]]
//! name = "seo"
//! queue = "ai-seo"
//! needs = ["draft"]
//! input = { text = "${steps.draft.output.text}" }
//! on_failure = "continue"             # or "fail" (the default): fail the instance
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};

use keel_core::{Backoff, Error, Result, Schedule};
use keel_records::workflow::{NewStep, OnFailure};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::template;

/// Longest workflow or step name.
pub const MAX_NAME: usize = 64;
/// Most steps in one workflow.
pub const MAX_STEPS: usize = 100;
/// Shortest interval of a workflow schedule: an instance a second at most (a schedule is for
/// periodic work; a faster one is a mistake that would flood the records).
pub const MIN_EVERY_MS: u64 = 1000;

/// A workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    /// What it does, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its steps; order is only for display, `needs` sets the order of execution.
    pub steps: Vec<StepSpec>,
    /// Start an instance on a cron pattern or an interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSpec>,
    /// Start an instance when a job of one of these queues completes; its input is
    /// `{"queue", "job_id", "name", "data", "result"}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_complete: Vec<JobTrigger>,
}

/// One step: a job on a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Name, unique in the workflow.
    pub name: String,
    /// The queue its job goes to.
    pub queue: String,
    /// The job name (routes to the queue's handler for it); the step name when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Steps that must end first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// The job's data as a template over `input` and `steps.<need>.output` (see
    /// [`crate::template`]); unset: `{"input": …, "steps": {"<need>": <output>, …}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Attempts of the step's job (overrides the queue's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Backoff between attempts (overrides the queue's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Longest one attempt may run; it then fails (retryable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// What the step's final failure does.
    #[serde(default)]
    pub on_failure: OnFailure,
}

impl StepSpec {
    /// The job name.
    pub fn job_name(&self) -> &str {
        self.job.as_deref().unwrap_or(&self.name)
    }
}

/// When a schedule starts an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// A cron pattern (5 fields, or 6 with seconds first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The cron pattern's IANA time zone (UTC when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// Or an interval in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_ms: Option<u64>,
    /// The instances' input.
    #[serde(default = "empty_object")]
    pub input: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl ScheduleSpec {
    /// The queue schedule it is.
    pub fn schedule(&self, field: &str) -> Result<Schedule> {
        match (&self.cron, self.every_ms) {
            (Some(pattern), None) => Ok(Schedule::Cron {
                pattern: pattern.clone(),
                tz: self.tz.clone(),
            }),
            (None, Some(every_ms)) if every_ms >= MIN_EVERY_MS => Ok(Schedule::Every { every_ms }),
            (None, Some(_)) => Err(Error::invalid(
                format!("{field}.every_ms"),
                format!("must be at least {MIN_EVERY_MS} (one instance a second)"),
            )),
            _ => Err(Error::invalid(
                field,
                "set exactly one of cron (with an optional tz) or every_ms",
            )),
        }
    }
}

/// A queue (and optionally a job name) whose completed jobs start an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobTrigger {
    /// The queue.
    pub queue: String,
    /// Only jobs of this name; every job when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_step_name(s: &str) -> bool {
    // No '-': the step is the tail of its job id `wf-<instance>-<step>[-r<n>]`.
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A validated definition, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// Name.
    pub name: String,
    /// Stored version.
    pub version: i64,
    /// The spec.
    pub spec: WorkflowSpec,
}

impl Compiled {
    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&StepSpec> {
        self.spec.steps.iter().find(|s| s.name == name)
    }

    /// The steps of a new instance.
    pub fn new_steps(&self) -> Vec<NewStep> {
        self.spec
            .steps
            .iter()
            .map(|s| NewStep {
                step: s.name.clone(),
                queue: s.queue.clone(),
                job_name: s.job_name().to_string(),
                needs: s.needs.clone(),
                on_failure: s.on_failure,
            })
            .collect()
    }
}

impl WorkflowSpec {
    /// Checks the definition named `name`; `field` is where it was written (`workflows.NAME`
    /// in keel.toml, `spec` in the API) and errors name the key under it. `known_queue` says
    /// whether a queue is configured.
    pub fn validate(
        &self,
        name: &str,
        field: &str,
        known_queue: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
        if !valid_name(name) {
            return Err(Error::invalid(
                field,
                format!("workflow name {name:?}: 1 to {MAX_NAME} of A-Z a-z 0-9 _ -"),
            ));
        }
        if self.steps.is_empty() {
            return Err(Error::invalid(
                format!("{field}.steps"),
                "needs at least one step",
            ));
        }
        if self.steps.len() > MAX_STEPS {
            return Err(Error::invalid(
                format!("{field}.steps"),
                format!("at most {MAX_STEPS} steps"),
            ));
        }
        let mut index = HashMap::new();
        for (i, s) in self.steps.iter().enumerate() {
            let at = format!("{field}.steps[{i}]");
            if !valid_step_name(&s.name) {
                return Err(Error::invalid(
                    format!("{at}.name"),
                    format!("step name {:?}: 1 to {MAX_NAME} of A-Z a-z 0-9 _", s.name),
                ));
            }
            if index.insert(s.name.as_str(), i).is_some() {
                return Err(Error::invalid(
                    format!("{at}.name"),
                    format!("step {:?} is defined twice", s.name),
                ));
            }
            if !known_queue(&s.queue) {
                return Err(Error::invalid(
                    format!("{at}.queue"),
                    format!("unknown queue {:?} (not in [queues])", s.queue),
                ));
            }
            if s.job_name().is_empty() {
                return Err(Error::invalid(format!("{at}.job"), "must not be empty"));
            }
            if s.attempts == Some(0) {
                return Err(Error::invalid(
                    format!("{at}.attempts"),
                    "must be at least 1",
                ));
            }
            if s.timeout_ms == Some(0) {
                return Err(Error::invalid(
                    format!("{at}.timeout_ms"),
                    "must be at least 1",
                ));
            }
            if let Some(b) = &s.backoff {
                if !(0.0..=1.0).contains(&b.jitter) {
                    return Err(Error::invalid(
                        format!("{at}.backoff.jitter"),
                        "must be between 0 and 1",
                    ));
                }
            }
        }
        for (i, s) in self.steps.iter().enumerate() {
            for (j, n) in s.needs.iter().enumerate() {
                if !index.contains_key(n.as_str()) {
                    return Err(Error::invalid(
                        format!("{field}.steps[{i}].needs[{j}]"),
                        format!("unknown step {n:?}"),
                    ));
                }
                if n == &s.name {
                    return Err(Error::invalid(
                        format!("{field}.steps[{i}].needs[{j}]"),
                        "a step cannot need itself",
                    ));
                }
            }
        }
        let ancestors = self.ancestors(field)?;
        for (i, s) in self.steps.iter().enumerate() {
            if let Some(t) = &s.input {
                let own = &ancestors[&s.name];
                template::check(t, &format!("{field}.steps[{i}].input"), &|step| {
                    own.contains(step)
                })?;
            }
        }
        if let Some(sch) = &self.schedule {
            sch.schedule(&format!("{field}.schedule"))?
                .validate()
                .map_err(|e| match e {
                    Error::InvalidInput { field: f, message } => {
                        Error::invalid(format!("{field}.schedule.{f}"), message)
                    }
                    other => other,
                })?;
        }
        for (i, t) in self.on_complete.iter().enumerate() {
            if !known_queue(&t.queue) {
                return Err(Error::invalid(
                    format!("{field}.on_complete[{i}].queue"),
                    format!("unknown queue {:?} (not in [queues])", t.queue),
                ));
            }
        }
        Ok(())
    }

    /// Every step's transitive needs; a cycle is an error naming a step on it.
    fn ancestors(&self, field: &str) -> Result<HashMap<String, HashSet<String>>> {
        let by_name: HashMap<&str, &StepSpec> =
            self.steps.iter().map(|s| (s.name.as_str(), s)).collect();
        // Kahn's order: a step comes after everything it needs.
        let mut indegree: HashMap<&str, usize> = self
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.needs.len()))
            .collect();
        let mut ready: Vec<&str> = indegree
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(n, _)| *n)
            .collect();
        let mut order = Vec::new();
        while let Some(n) = ready.pop() {
            order.push(n);
            for s in &self.steps {
                if s.needs.iter().any(|x| x == n) {
                    let d = indegree.get_mut(s.name.as_str()).expect("known step");
                    *d -= 1;
                    if *d == 0 {
                        ready.push(&s.name);
                    }
                }
            }
        }
        if order.len() < self.steps.len() {
            let (i, s) = self
                .steps
                .iter()
                .enumerate()
                .find(|(_, s)| indegree[s.name.as_str()] > 0)
                .expect("a step left on the cycle");
            return Err(Error::invalid(
                format!("{field}.steps[{i}].needs"),
                format!("step {:?} is on a cycle of needs", s.name),
            ));
        }
        let mut out: HashMap<String, HashSet<String>> = HashMap::new();
        for n in order {
            let mut set = HashSet::new();
            for need in &by_name[n].needs {
                set.insert(need.clone());
                set.extend(out[need.as_str()].iter().cloned());
            }
            out.insert(n.to_string(), set);
        }
        Ok(out)
    }
}

/// `[workflows.NAME]` tables of keel.toml, by name.
pub fn from_toml(
    table: &toml::Value,
    known_queue: &dyn Fn(&str) -> bool,
) -> Result<BTreeMap<String, WorkflowSpec>> {
    let raw: BTreeMap<String, WorkflowSpec> = serde_path_to_error::deserialize(table.clone())
        .map_err(|e| {
            Error::invalid(
                format!("workflows.{}", e.path()),
                e.inner().message().to_string(),
            )
        })?;
    for (name, spec) in &raw {
        spec.validate(name, &format!("workflows.{name}"), known_queue)?;
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BTreeMap<String, WorkflowSpec>> {
        let v: toml::Value = toml::from_str(text).unwrap();
        from_toml(&v["workflows"], &|q| q == "ai" || q == "hooks")
    }

    fn err(text: &str) -> (String, String) {
        match parse(text).unwrap_err() {
            Error::InvalidInput { field, message } => (field, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_dag_with_templates_parses() {
        let w = parse(
            r#"
            [workflows.publish]
            schedule = { every_ms = 60000 }
            [[workflows.publish.steps]]
            name = "draft"
            queue = "ai"
            input = { topic = "${input.topic}" }
            attempts = 3
            backoff = { type = "exponential", delay = 100 }
            [[workflows.publish.steps]]
            name = "seo"
            queue = "ai"
            needs = ["draft"]
            on_failure = "continue"
            [[workflows.publish.steps]]
            name = "notify"
            queue = "hooks"
            job = "webhook"
            needs = ["draft", "seo"]
            input = { text = "${steps.draft.output.text}", score = "${steps.seo.output}" }
            "#,
        )
        .unwrap();
        let p = &w["publish"];
        assert_eq!(p.steps[2].job_name(), "webhook");
        assert_eq!(p.steps[1].on_failure, OnFailure::Continue);
    }

    #[test]
    fn bad_definitions_name_the_key() {
        let base = "[workflows.w]\n";
        let cases = [
            (
                "[[workflows.w.steps]]\nname = \"a\"\nqueue = \"nope\"\n",
                "workflows.w.steps[0].queue",
                "unknown queue",
            ),
            (
                "[[workflows.w.steps]]\nname = \"a\"\nqueue = \"ai\"\nneeds = [\"b\"]\n",
                "workflows.w.steps[0].needs[0]",
                "unknown step",
            ),
            (
                "[[workflows.w.steps]]\nname = \"a\"\nqueue = \"ai\"\nneeds = [\"b\"]\n[[workflows.w.steps]]\nname = \"b\"\nqueue = \"ai\"\nneeds = [\"a\"]\n",
                "workflows.w.steps[0].needs",
                "cycle",
            ),
            (
                "[[workflows.w.steps]]\nname = \"a-b\"\nqueue = \"ai\"\n",
                "workflows.w.steps[0].name",
                "A-Z",
            ),
            (
                "[[workflows.w.steps]]\nname = \"a\"\nqueue = \"ai\"\n[[workflows.w.steps]]\nname = \"b\"\nqueue = \"ai\"\ninput = \"${steps.c.output}\"\n",
                "workflows.w.steps[1].input",
                "not a step this one needs",
            ),
            (
                "[[workflows.w.steps]]\nname = \"a\"\nqueue = \"ai\"\ninput = \"${nothing.x}\"\n",
                "workflows.w.steps[0].input",
                "input or steps",
            ),
            (
                "[[workflows.w.steps]]\nname = \"a\"\nqueue = \"ai\"\nattempts = 0\n",
                "workflows.w.steps[0].attempts",
                "at least 1",
            ),
            (
                "[[workflows.w.steps]]\nname = \"a\"\nqueue = \"ai\"\nretries = 2\n",
                "workflows.w.steps[0]",
                "unknown field",
            ),
            ("steps = []\n", "workflows.w.steps", "at least one"),
            (
                "schedule = { tz = \"UTC\" }\n[[workflows.w.steps]]\nname = \"a\"\nqueue = \"ai\"\n",
                "workflows.w.schedule",
                "exactly one",
            ),
            (
                "schedule = { every_ms = 10 }\n[[workflows.w.steps]]\nname = \"a\"\nqueue = \"ai\"\n",
                "workflows.w.schedule.every_ms",
                "at least 1000",
            ),
            (
                "on_complete = [{ queue = \"zz\" }]\n[[workflows.w.steps]]\nname = \"a\"\nqueue = \"ai\"\n",
                "workflows.w.on_complete[0].queue",
                "unknown queue",
            ),
        ];
        for (body, field, message) in cases {
            let (f, m) = err(&format!("{base}{body}"));
            assert!(f.starts_with(field), "{body}: field {f}, wanted {field}");
            assert!(m.contains(message), "{body}: message {m}, wanted {message}");
        }
    }
}
