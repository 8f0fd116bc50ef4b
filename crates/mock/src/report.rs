//! Comparing a run with its scenario's expectations, and printing the result.

use std::fmt;

use serde_json::{Map, Value, json};
use verbhost_runtime::{Outcome, Run, RunError, VerbError, Webhook};

use crate::call::MockCall;
use crate::scenario::{ErrorSpec, Expect};

/// The result of one scenario.
#[derive(Debug, Clone)]
pub struct Report {
    /// The scenario's name (or file, when it could not be read).
    pub name: String,
    /// What did not match; empty when the scenario passed.
    pub failures: Vec<Failure>,
    /// What happened, host call by host call, on the virtual clock.
    pub transcript: Vec<String>,
}

/// One expectation that was not met.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Which expectation.
    pub what: String,
    /// The difference: a line diff (`-` expected, `+` actual) or a sentence.
    pub detail: String,
}

impl Report {
    /// True when every expectation was met.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// A report for a scenario that could not even be run.
    pub fn broken(name: impl Into<String>, why: impl Into<String>) -> Report {
        Report {
            name: name.into(),
            failures: vec![Failure {
                what: "scenario".into(),
                detail: why.into(),
            }],
            transcript: Vec::new(),
        }
    }

    pub(crate) fn compare(name: &str, expect: &Expect, run: &Run<MockCall>) -> Report {
        let mut report = Report {
            name: name.to_owned(),
            failures: Vec::new(),
            transcript: run.host.transcript(),
        };
        let call = &run.host;
        for violation in &call.violations {
            report.fail("host calls", violation.clone());
        }
        if let Some(expected) = &expect.refer {
            let actual = call.refers.first().map_or(Value::Null, refer_json);
            report.compare_subset("refer", expected, &actual);
        }
        if let Some(expected) = &expect.events {
            let actual: Vec<Value> = call
                .events_emitted
                .iter()
                .map(|(_, payload)| Value::Object(payload.clone()))
                .collect();
            report.compare_exact(
                "events",
                &Value::Array(expected.clone()),
                &Value::Array(actual),
            );
        }
        if let Some(expected) = &expect.notify_timeouts_ms {
            report.compare_exact(
                "notify_timeouts_ms",
                &json!(expected),
                &json!(call.notify_timeouts_ms),
            );
        }
        if let Some(expected) = expect.clock_ms {
            report.compare_exact("clock_ms", &json!(expected), &json!(call.clock_ms()));
        }
        for needle in &expect.logs_contain {
            if !call.logs.iter().any(|line| line.contains(needle.as_str())) {
                report.fail("logs", format!("no log line contains {needle:?}"));
            }
        }
        match (&run.outcome, &expect.completion, &expect.error) {
            (Ok(outcome), Some(expected), _) => {
                report.compare_subset("completion", expected, &completion_json(outcome));
            }
            (Ok(outcome), None, Some(error)) => report.fail(
                "error",
                format!(
                    "expected a {} error, but the verb completed: {}",
                    error.kind,
                    completion_json(outcome)
                ),
            ),
            (Ok(_), None, None) => {}
            (Err(err), _, Some(expected)) => report.compare_error(expected, err),
            (Err(err), _, None) => report.fail("completion", format!("the run failed: {err}")),
        }
        report
    }

    fn fail(&mut self, what: &str, detail: String) {
        self.failures.push(Failure {
            what: what.to_owned(),
            detail,
        });
    }

    /// Compares only the keys the expectation gives (when it is an object).
    fn compare_subset(&mut self, what: &str, expected: &Value, actual: &Value) {
        let actual = match (expected, actual) {
            (Value::Object(want), Value::Object(have)) => Value::Object(
                have.iter()
                    .filter(|(key, _)| want.contains_key(*key))
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
            ),
            _ => actual.clone(),
        };
        self.compare_exact(what, expected, &actual);
    }

    fn compare_exact(&mut self, what: &str, expected: &Value, actual: &Value) {
        if expected != actual {
            self.fail(&format!("{what} differs"), diff(expected, actual));
        }
    }

    fn compare_error(&mut self, expected: &ErrorSpec, err: &RunError) {
        let (kind, message) = error_kind(err);
        if kind != expected.kind {
            self.fail(
                "error",
                format!("expected a {} error, got {kind}: {message}", expected.kind),
            );
            return;
        }
        if let Some(want) = &expected.message
            && *want != message
        {
            self.fail("error message differs", diff(&json!(want), &json!(message)));
        }
        if let Some(part) = &expected.message_contains
            && !message.contains(part.as_str())
        {
            self.fail(
                "error message",
                format!("{message:?} does not contain {part:?}"),
            );
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed() {
            return write!(f, "PASS {}", self.name);
        }
        writeln!(f, "FAIL {}", self.name)?;
        for failure in &self.failures {
            writeln!(f, "  {}:", failure.what)?;
            for line in failure.detail.lines() {
                writeln!(f, "    {line}")?;
            }
        }
        if !self.transcript.is_empty() {
            writeln!(f, "  transcript:")?;
            for line in &self.transcript {
                writeln!(f, "    {line}")?;
            }
        }
        Ok(())
    }
}

/// The kind name and message of a run error, as scenarios spell them.
pub fn error_kind(err: &RunError) -> (&'static str, String) {
    match err {
        RunError::Verb(VerbError::InvalidVerb(why)) => ("invalid-verb", why.clone()),
        RunError::Verb(VerbError::Failed(why)) => ("failed", why.clone()),
        RunError::VerbTooLarge { .. } => ("verb-too-large", err.to_string()),
        RunError::Trap { .. } => ("trap", err.to_string()),
        RunError::WallClock(_) => ("wall-clock", err.to_string()),
        RunError::InvalidCompletion(_) => ("invalid-completion", err.to_string()),
        RunError::Instantiate(_) => ("instantiate", err.to_string()),
        RunError::Overloaded { .. } => ("overloaded", err.to_string()),
        RunError::NoPlugin { .. } => ("no-plugin", err.to_string()),
    }
}

fn refer_json(request: &verbhost_runtime::ReferRequest) -> Value {
    let headers: Map<String, Value> = request
        .headers
        .iter()
        .map(|h| (h.name.clone(), Value::String(h.value.clone())))
        .collect();
    json!({
        "refer_to": request.refer_to,
        "referred_by": request.referred_by,
        "headers": headers,
    })
}

/// A completion as scenarios spell it.
pub fn completion_json(outcome: &Outcome) -> Value {
    json!({
        "event": outcome.event,
        "payload": Value::Object(outcome.payload.clone()),
        "action_hook": outcome.action_hook.as_ref().map(hook_json),
        "call_left": outcome.call_left,
    })
}

fn hook_json(hook: &Webhook) -> Value {
    let mut object = json!({ "url": hook.url, "method": hook.method });
    if let Some(user) = &hook.username {
        object["username"] = json!(user);
    }
    if let Some(password) = &hook.password {
        object["password"] = json!(password);
    }
    object
}

/// A line diff of two JSON values, pretty-printed: `-` expected, `+` actual.
fn diff(expected: &Value, actual: &Value) -> String {
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    let (expected, actual) = (pretty(expected), pretty(actual));
    let mut out = String::from("(- expected, + actual)\n");
    for change in similar::TextDiff::from_lines(&expected, &actual).iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Delete => '-',
            similar::ChangeTag::Insert => '+',
            similar::ChangeTag::Equal => ' ',
        };
        out.push(sign);
        out.push(' ');
        out.push_str(change.value().trim_end_matches('\n'));
        out.push('\n');
    }
    out
}
