//! The scripted call: a [`CallHost`] that answers from a scenario on a virtual clock and
//! records everything the plugin asked for.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{Map, Value};
use verbhost_common::subscription::BYE_GRACE;
use verbhost_runtime::{
    CallHost, Header, Level, NotifyError, ReferError, ReferEvent, ReferRequest, ReferResponse,
    SubscriptionStatus, Webhook,
};

use crate::scenario::{ReferErrorSpec, ReferResponseSpec, Scenario, ScriptedEvent};

/// A call driven by a scenario. Time is virtual: waiting costs nothing, so a 40-second
/// timeout is tested in microseconds and always lands on the same millisecond.
#[derive(Debug)]
pub struct MockCall {
    response: Option<ReferResponseSpec>,
    events: VecDeque<(u64, ScriptedEvent)>,
    /// When the scripted BYE arrived; the dialog ends [`BYE_GRACE`] later.
    bye_at: Option<u64>,
    clock: u64,
    /// The subscription `on-notify` may wait on: set by a 2xx, cleared when it ends.
    live_refer: Option<u32>,
    /// The REFERs the plugin asked for.
    pub refers: Vec<ReferRequest>,
    /// The events it emitted: hook and payload.
    pub events_emitted: Vec<(Webhook, Map<String, Value>)>,
    /// Its log lines.
    pub logs: Vec<String>,
    /// The timeouts it passed to `on-notify`, in ms.
    pub notify_timeouts_ms: Vec<u32>,
    /// What happened, host call by host call, with the virtual time; formatted only when a
    /// report is shown ([`MockCall::transcript`]).
    entries: Vec<(u64, Entry)>,
    /// Host calls the scenario did not allow (a REFER it does not script, a second REFER).
    pub violations: Vec<String>,
}

impl MockCall {
    /// A call scripted by `scenario`.
    ///
    /// A BYE ends the dialog the way the SIP stack ends it: the subscription learns it
    /// [`BYE_GRACE`] (300 ms) after the BYE arrived, and NOTIFYs that arrive within the grace
    /// are delivered first. What the script has arriving later never reaches the plugin (on
    /// the wire the SIP stack answers it 481).
    pub fn new(scenario: &Scenario) -> Self {
        // Events without a time follow the previous one immediately.
        let mut at = 0;
        let mut events: Vec<(u64, ScriptedEvent)> = scenario
            .notifies
            .iter()
            .map(|event| {
                at = event.at_ms.unwrap_or(at);
                (at, event.clone())
            })
            .collect();
        let mut bye_at = None;
        if let Some(index) = events.iter().position(|(_, event)| event.bye.is_some()) {
            let (at, bye) = events.remove(index);
            let grace = u64::try_from(BYE_GRACE.as_millis()).unwrap_or(u64::MAX);
            let ends_at = at.saturating_add(grace);
            let mut in_grace = events.split_off(index);
            in_grace.retain(|(arrives, event)| event.notify.is_some() && *arrives < ends_at);
            events.extend(in_grace);
            events.push((ends_at, bye));
            bye_at = Some(at);
        }
        MockCall {
            response: scenario.refer_response.clone(),
            events: events.into(),
            bye_at,
            clock: 0,
            live_refer: None,
            refers: Vec::new(),
            events_emitted: Vec::new(),
            logs: Vec::new(),
            notify_timeouts_ms: Vec::new(),
            entries: Vec::new(),
            violations: Vec::new(),
        }
    }

    /// The virtual clock, in ms.
    pub fn clock_ms(&self) -> u64 {
        self.clock
    }

    fn note(&mut self, entry: Entry) {
        self.entries.push((self.clock, entry));
    }

    /// What happened, one line per host call, with the virtual time.
    pub fn transcript(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(at, entry)| format!("{at:>7} ms  {}", self.describe(entry)))
            .collect()
    }

    fn describe(&self, entry: &Entry) -> String {
        match entry {
            Entry::Refer(index) => {
                let request = &self.refers[*index];
                let mut line = format!("send-refer  Refer-To: {}", request.refer_to);
                if let Some(by) = &request.referred_by {
                    line.push_str(&format!("  Referred-By: {by}"));
                }
                for header in &request.headers {
                    line.push_str(&format!("  {}: {}", header.name, header.value));
                }
                line
            }
            Entry::Answer(Ok(response)) => format!(
                "  <- {} {} (refer id {})",
                response.status, response.reason, response.refer_id
            ),
            Entry::Answer(Err(err)) => format!("  <- error {err:?}"),
            Entry::Wait {
                refer_id,
                timeout_ms,
            } => {
                format!("on-notify({refer_id}, {timeout_ms} ms)")
            }
            Entry::Delivered(Ok(ReferEvent::Notify(n))) => format!(
                "  <- NOTIFY {} (state {}, content-type {}, body {:?})",
                n.sipfrag
                    .as_ref()
                    .map_or("without status".to_owned(), |s| format!(
                        "{} {}",
                        s.code, s.reason
                    )),
                match n.state.as_ref().map(|s| s.status) {
                    Some(SubscriptionStatus::Active) => "active",
                    Some(SubscriptionStatus::Pending) => "pending",
                    Some(SubscriptionStatus::Terminated) => "terminated",
                    None => "none",
                },
                n.content_type.as_deref().unwrap_or("none"),
                String::from_utf8_lossy(&n.body)
            ),
            Entry::Delivered(Ok(ReferEvent::DialogEnded)) => match self.bye_at {
                Some(at) => format!(
                    "  <- dialog ended (BYE at {at} ms, after the {} ms BYE grace)",
                    BYE_GRACE.as_millis()
                ),
                None => "  <- dialog ended".to_owned(),
            },
            Entry::Delivered(Ok(ReferEvent::TimedOut)) => "  <- timed out".to_owned(),
            Entry::Delivered(Err(err)) => format!("  <- error {err:?}"),
            Entry::Event(index) => {
                let (hook, payload) = &self.events_emitted[*index];
                format!("emit-event {} {}", hook.url, Value::Object(payload.clone()))
            }
            Entry::Log(level, index) => {
                let level = match level {
                    Level::Trace => "trace",
                    Level::Debug => "debug",
                    Level::Info => "info",
                    Level::Warn => "warn",
                    Level::Error => "error",
                };
                format!("log {level}: {}", self.logs[*index])
            }
        }
    }

    fn answer_refer(&mut self) -> Result<ReferResponse, ReferError> {
        if self.refers.len() > 1 {
            self.violations
                .push("the plugin sent a second REFER; the scenario scripts one".into());
            return Err(ReferError::Rejected(
                "mock host: the scenario scripts one REFER".into(),
            ));
        }
        let Some(spec) = self.response.clone() else {
            self.violations
                .push("the plugin sent a REFER, but the scenario scripts no refer_response".into());
            return Err(ReferError::DialogGone);
        };
        self.clock = self.clock.max(spec.at_ms);
        if let Some(error) = spec.error {
            return Err(match error {
                ReferErrorSpec::Timeout => ReferError::Timeout,
                ReferErrorSpec::DialogGone => ReferError::DialogGone,
                ReferErrorSpec::Transport(why) => ReferError::Transport(why),
                ReferErrorSpec::Rejected(why) => ReferError::Rejected(why),
            });
        }
        // Invariant of Scenario::check: a response without `error` has a status.
        let status = spec.status.unwrap_or(500);
        if (200..300).contains(&status) {
            self.live_refer = Some(spec.refer_id);
        }
        Ok(ReferResponse {
            refer_id: spec.refer_id,
            status,
            reason: spec
                .reason
                .unwrap_or_else(|| verbhost_common::status::reason_phrase(status).to_owned()),
            headers: spec
                .headers
                .into_iter()
                .map(|(name, value)| Header { name, value })
                .collect(),
        })
    }

    fn next_event(&mut self, refer_id: u32, timeout: Duration) -> Result<ReferEvent, NotifyError> {
        if self.live_refer != Some(refer_id) {
            return Err(NotifyError::UnknownRefer(refer_id));
        }
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let deadline = self.clock.saturating_add(timeout_ms);
        match self.events.front() {
            Some((at, _)) if *at <= deadline => {}
            _ => {
                self.clock = deadline;
                return Ok(ReferEvent::TimedOut);
            }
        }
        let Some((at, event)) = self.events.pop_front() else {
            return Ok(ReferEvent::TimedOut);
        };
        self.clock = self.clock.max(at);
        // Scenario::check makes every event a NOTIFY or a BYE.
        let Some(spec) = event.notify else {
            self.live_refer = None;
            return Ok(ReferEvent::DialogEnded);
        };
        let notify = verbhost_runtime::notify_from_parts(
            spec.state.as_deref(),
            spec.content_type.as_deref(),
            spec.body.into_bytes(),
        );
        if notify
            .state
            .as_ref()
            .is_some_and(|s| s.status == SubscriptionStatus::Terminated)
        {
            self.live_refer = None;
        }
        Ok(ReferEvent::Notify(notify))
    }
}

/// One host call or its answer, kept unformatted until a report needs it.
#[derive(Debug)]
enum Entry {
    Refer(usize),
    Answer(Result<ReferResponse, ReferError>),
    Wait { refer_id: u32, timeout_ms: u32 },
    Delivered(Result<ReferEvent, NotifyError>),
    Event(usize),
    Log(Level, usize),
}

impl CallHost for MockCall {
    async fn send_refer(&mut self, request: ReferRequest) -> Result<ReferResponse, ReferError> {
        self.note(Entry::Refer(self.refers.len()));
        self.refers.push(request);
        let answer = self.answer_refer();
        self.note(Entry::Answer(answer.clone()));
        answer
    }

    async fn on_notify(
        &mut self,
        refer_id: u32,
        timeout: Duration,
    ) -> Result<ReferEvent, NotifyError> {
        let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        self.notify_timeouts_ms.push(timeout_ms);
        self.note(Entry::Wait {
            refer_id,
            timeout_ms,
        });
        let event = self.next_event(refer_id, timeout);
        self.note(Entry::Delivered(event.clone()));
        event
    }

    fn emit_event(&mut self, hook: Webhook, payload: Map<String, Value>) {
        self.note(Entry::Event(self.events_emitted.len()));
        self.events_emitted.push((hook, payload));
    }

    fn log(&mut self, level: Level, message: &str) {
        self.note(Entry::Log(level, self.logs.len()));
        self.logs.push(message.to_owned());
    }

    fn clock_ms(&mut self) -> u64 {
        self.clock
    }
}
