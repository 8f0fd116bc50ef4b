//! One call running its application: verbs in order through their plugins, the actionHook
//! once per verb, eventHooks in order in the background, and the call's end.
//!
//! What a call may cost is bounded: `server.max_verbs_per_call` verbs and
//! `server.max_app_replacements` applications returned by actionHooks (then the call is hung
//! up), `webhooks.max_queued_events` eventHooks queued at once (more are dropped), and
//! `webhooks.event_drain_ms` for the eventHooks still queued once the call has ended (then
//! they are abandoned). Each of these is logged and counted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use reqwest::Url;
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};
use verbhost_runtime::{CallInfo, Direction, Identity, RunError, Runtime, VerbError, Webhook};
use verbhost_sip::endpoint::Call;
use verbhost_sip::message::addr_uri;

use crate::app::{self, AppVerb};
use crate::bridge::SipCallHost;
use crate::config::Config;
use crate::error::ServerError;
use crate::metrics::Metrics;
use crate::native::{self, NativeVerbs};
use crate::plugins::Plugins;
use crate::webhook::{HookKind, Webhooks};

/// What every call shares.
pub(crate) struct Shared {
    pub(crate) plugins: Arc<Plugins>,
    pub(crate) webhooks: Webhooks,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) config: Config,
    /// Verbs served by a natively built plugin ([`crate::ServerBuilder::native_plugin`]).
    pub(crate) native: NativeVerbs,
}

impl Shared {
    /// Loads the plugins and builds the webhook client and the metrics.
    pub(crate) async fn new(
        config: Config,
        native: NativeVerbs,
    ) -> Result<Arc<Shared>, ServerError> {
        let webhooks = Webhooks::new(config.webhooks.clone()).map_err(ServerError::Webhooks)?;
        let runtime = Runtime::new(
            config
                .pool
                .runtime(config.plugins.cache_dir(), config.limits.run.clone()),
        )
        .map_err(ServerError::Runtime)?;
        let metrics = Arc::new(Metrics::new(runtime.allocator()));
        let plugins = Plugins::start(
            config.plugins.clone(),
            config.limits.clone(),
            runtime,
            metrics.clone(),
        )
        .await?;
        metrics.watch_plugins(&plugins);
        Ok(Arc::new(Shared {
            plugins,
            webhooks,
            metrics,
            config,
            native,
        }))
    }
}

/// The identifiers every payload carries, jambonz style: `from` and `to` are the user parts
/// (the numbers), `caller_name` the From display name.
#[derive(Debug, Clone)]
pub(crate) struct CallIds {
    pub(crate) call_sid: String,
    pub(crate) call_id: String,
    pub(crate) direction: Direction,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) caller_name: Option<String>,
}

/// Keys the host owns in every payload; a plugin cannot overwrite them.
const HOST_KEYS: [&str; 5] = ["call_sid", "call_id", "direction", "from", "to"];

impl CallIds {
    /// From the dialog's From and To headers (as the INVITE had them).
    pub(crate) fn new(call_id: &str, direction: Direction, from: &str, to: &str) -> CallIds {
        CallIds {
            call_sid: uuid::Uuid::new_v4().to_string(),
            call_id: call_id.to_owned(),
            direction,
            from: user_part(addr_uri(from)).to_owned(),
            to: user_part(addr_uri(to)).to_owned(),
            caller_name: display_name(from),
        }
    }

    pub(crate) fn direction_str(&self) -> &'static str {
        match self.direction {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    /// Writes the identifiers into `payload`, over anything the plugin put there.
    pub(crate) fn stamp(&self, payload: &mut Map<String, Value>, verb: &str) {
        for key in HOST_KEYS {
            if payload.contains_key(key) {
                tracing::warn!(call_sid = %self.call_sid, verb, key, "the plugin set a key the host owns; replaced");
            }
        }
        payload.insert("call_sid".into(), self.call_sid.clone().into());
        payload.insert("call_id".into(), self.call_id.clone().into());
        payload.insert("direction".into(), self.direction_str().into());
        payload.insert("from".into(), self.from.clone().into());
        payload.insert("to".into(), self.to.clone().into());
        if let Some(name) = &self.caller_name {
            payload
                .entry("caller_name")
                .or_insert_with(|| name.clone().into());
        }
    }
}

/// The user part of a SIP or tel URI (`sip:+4930@x;p` gives `+4930`), or the URI itself.
pub(crate) fn user_part(uri: &str) -> &str {
    let rest = ["sip:", "sips:", "tel:"]
        .iter()
        .find_map(|scheme| {
            uri.get(..scheme.len())
                .filter(|p| p.eq_ignore_ascii_case(scheme))
                .map(|_| &uri[scheme.len()..])
        })
        .unwrap_or(uri);
    let user = rest.split(['@', ';']).next().unwrap_or(rest);
    if user.is_empty() { uri } else { user }
}

/// The host of a SIP URI (`sip:a@host:5060;p` gives `host`).
pub(crate) fn uri_host(uri: &str) -> Option<&str> {
    let rest = uri.split_once(':')?.1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = rest.split([';', '?', '>']).next()?;
    let host = if host.starts_with('[') {
        host.split_inclusive(']').next()?
    } else {
        host.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

/// The display name of a name-addr, unquoted.
pub(crate) fn display_name(value: &str) -> Option<String> {
    let (name, _) = value.split_once('<')?;
    let name = name.trim();
    let name = name
        .strip_prefix('"')
        .and_then(|n| n.strip_suffix('"'))
        .map(|n| n.replace("\\\"", "\"").replace("\\\\", "\\"))
        .unwrap_or_else(|| name.to_owned());
    (!name.is_empty()).then_some(name)
}

/// What the plugin is told about a call.
pub(crate) fn call_info(
    ids: &CallIds,
    from: &str,
    to: &str,
    default_domain: Option<&str>,
) -> CallInfo {
    // The far end: the caller on inbound calls, the callee on outbound ones.
    let remote = match ids.direction {
        Direction::Inbound => from,
        Direction::Outbound => to,
    };
    let remote_uri = addr_uri(remote).to_owned();
    let default_domain = default_domain
        .map(str::to_owned)
        .or_else(|| uri_host(&remote_uri).map(str::to_owned))
        .unwrap_or_default();
    CallInfo {
        call_sid: ids.call_sid.clone(),
        sip_call_id: ids.call_id.clone(),
        direction: ids.direction,
        from: from.to_owned(),
        to: to.to_owned(),
        remote_party: Identity {
            display_name: display_name(remote),
            uri: remote_uri,
        },
        default_domain,
    }
}

/// Where the call's progress goes: JSON lines for `verbhost call` and the demo, and the log.
#[derive(Clone, Default)]
pub struct Journal(Option<mpsc::UnboundedSender<Value>>);

impl Journal {
    pub fn to(sender: mpsc::UnboundedSender<Value>) -> Journal {
        Journal(Some(sender))
    }

    pub fn record(&self, line: Value) {
        tracing::debug!(target: "verbhost::journal", "{line}");
        if let Some(sender) = &self.0 {
            let _ = sender.send(line);
        }
    }
}

/// Work for a call's event queue. The post is boxed: the queue allocates room for 32 jobs
/// when it is created, so every call pays for 32 of these while it waits for its NOTIFYs
/// (unboxed, about 3.9 KiB per call, measured with heaptrack; boxed, 512 bytes).
pub(crate) enum EventJob {
    /// Deliver an eventHook.
    Post(Box<(Webhook, Map<String, Value>)>),
    /// Answer once everything queued before has been delivered (or has failed).
    Flush(oneshot::Sender<()>),
}

/// The sending side of a call's event queue, shared by every verb run of the call. At most
/// `webhooks.max_queued_events` eventHooks are queued or in flight at once; one more is
/// dropped, logged (the first per call) and counted.
#[derive(Clone)]
pub(crate) struct EventQueue {
    sender: mpsc::UnboundedSender<EventJob>,
    /// eventHooks queued or in flight.
    pending: Arc<AtomicUsize>,
    /// eventHooks dropped because the queue was full.
    dropped: Arc<AtomicU64>,
    max: usize,
    metrics: Arc<Metrics>,
    call_sid: Arc<str>,
}

impl EventQueue {
    /// Queues an eventHook, unless the call already has `max` queued or in flight.
    pub(crate) fn post(&self, hook: Webhook, payload: Map<String, Value>) {
        let admitted = self
            .pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            self.metrics.event_hooks_abandoned("queue_full", 1);
            if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(call_sid = %self.call_sid, max = self.max,
                    "eventHook dropped: the call already has webhooks.max_queued_events queued \
                     (the eventHook URL is slower than the events); further drops are counted");
            }
            return;
        }
        // The queue outlives every run of the call; a send fails only after the call ended.
        if self
            .sender
            .send(EventJob::Post(Box::new((hook, payload))))
            .is_err()
        {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Resolves once everything queued before has been delivered (or has failed); `None`
    /// when the queue is gone.
    fn flush(&self) -> Option<oneshot::Receiver<()>> {
        let (flushed, wait) = oneshot::channel();
        self.sender.send(EventJob::Flush(flushed)).ok()?;
        Some(wait)
    }
}

/// How the application on a call went.
#[derive(Debug, Default)]
pub struct Summary {
    /// Verbs that did not complete: no plugin, rejected by the plugin, or the plugin failed.
    pub failed_verbs: Vec<String>,
    /// Verbs that completed.
    pub completed_verbs: usize,
    /// Whether the far end hung up (rather than verbhost).
    pub ended_by_remote: bool,
    /// The limit (config key) that ended the call, if one did.
    pub limit: Option<&'static str>,
}

/// One call running an application.
pub(crate) struct Session {
    shared: Arc<Shared>,
    call: Call,
    info: CallInfo,
    ids: Arc<CallIds>,
    /// What relative hooks resolve against.
    base: Option<Url>,
    journal: Journal,
}

impl Session {
    /// A session on an established call; what the plugin is told comes from the call's
    /// From and To.
    pub(crate) fn new(
        shared: Arc<Shared>,
        call: Call,
        ids: Arc<CallIds>,
        base: Option<Url>,
        journal: Journal,
    ) -> Session {
        let info = call_info(
            &ids,
            &call.from,
            &call.to,
            shared.config.sip.default_domain.as_deref(),
        );
        Session {
            shared,
            call,
            info,
            ids,
            base,
            journal,
        }
    }

    /// Runs `verbs` on the call and ends it: verbhost hangs up unless the far end did first.
    pub(crate) async fn run(self, verbs: Vec<AppVerb>) -> Summary {
        self.shared.metrics.call_started(self.ids.direction_str());
        let started = Instant::now();
        let (sender, queue) = mpsc::unbounded_channel();
        let events = EventQueue {
            sender,
            pending: Arc::default(),
            dropped: Arc::default(),
            max: self.shared.config.webhooks.max_queued_events as usize,
            metrics: self.shared.metrics.clone(),
            call_sid: self.ids.call_sid.as_str().into(),
        };
        let mut poster = tokio::spawn(deliver_events(
            queue,
            events.pending.clone(),
            self.shared.clone(),
            self.base.clone(),
            self.journal.clone(),
            self.ids.call_sid.clone(),
        ));
        let mut summary = Summary::default();
        let limits = &self.shared.config.server;
        let (mut verbs_run, mut replacements) = (0u32, 0u32);
        let mut pending: VecDeque<AppVerb> = verbs.into();
        while let Some(verb) = pending.pop_front() {
            if self.call.is_ended() {
                tracing::info!(call_sid = %self.ids.call_sid, verb = %verb.name, remaining = pending.len() + 1,
                    "the call ended; the rest of the application is skipped");
                break;
            }
            if verbs_run >= limits.max_verbs_per_call {
                self.limit_reached(
                    "max_verbs_per_call",
                    limits.max_verbs_per_call,
                    &mut summary,
                );
                break;
            }
            verbs_run += 1;
            match self.run_verb(&verb, &events, started, &mut summary).await {
                Next::Continue => {}
                Next::Replace(verbs) => {
                    replacements += 1;
                    if replacements > limits.max_app_replacements {
                        self.limit_reached(
                            "max_app_replacements",
                            limits.max_app_replacements,
                            &mut summary,
                        );
                        break;
                    }
                    pending = verbs.into();
                }
                Next::Stop => break,
            }
        }
        if !self.call.is_ended() {
            let why = match summary.limit {
                Some(limit) => format!("the call reached server.{limit}"),
                None => "the application ended".to_owned(),
            };
            self.hang_up(&why).await;
        }
        // The far end's BYE, not ours: a drain that ran out of time hung the call up from
        // outside this session, and that is verbhost's hangup too.
        summary.ended_by_remote = self.call.ended_by_peer();
        // Let the eventHooks still queued finish, for at most event_drain_ms: a dead eventHook
        // URL must not keep a finished call (and a shutdown drain) waiting.
        let dropped = events.dropped.load(Ordering::Relaxed);
        let pending_events = events.pending.clone();
        drop(events);
        let limit = self.shared.config.webhooks.event_drain();
        if tokio::time::timeout(limit, &mut poster).await.is_err() {
            poster.abort();
            let abandoned = pending_events.load(Ordering::SeqCst) as u64;
            self.shared
                .metrics
                .event_hooks_abandoned("drain_timeout", abandoned);
            tracing::warn!(call_sid = %self.ids.call_sid, abandoned,
                "eventHooks abandoned: still queued or in flight webhooks.event_drain_ms ({limit:?}) after the call ended");
        }
        if dropped > 0 {
            tracing::warn!(call_sid = %self.ids.call_sid, dropped, "eventHooks dropped over webhooks.max_queued_events");
        }
        self.journal.record(json!({
            "type": "call.ended",
            "call_sid": self.ids.call_sid,
            "by": if summary.ended_by_remote { "remote" } else { "verbhost" },
            "completed_verbs": summary.completed_verbs,
            "failed_verbs": summary.failed_verbs,
            "limit": summary.limit,
        }));
        self.shared.metrics.call_ended();
        summary
    }

    /// Records that the call reached `limit` (a `[server]` key) of `value`: it is hung up.
    fn limit_reached(&self, limit: &'static str, value: u32, summary: &mut Summary) {
        tracing::warn!(call_sid = %self.ids.call_sid, limit, value,
            "the call reached server.{limit} ({value}); hanging up");
        self.shared.metrics.call_limited(limit);
        self.journal.record(json!({
            "type": "call.limited",
            "call_sid": self.ids.call_sid,
            "limit": limit,
            "value": value,
        }));
        summary.limit = Some(limit);
    }

    async fn run_verb(
        &self,
        verb: &AppVerb,
        events: &EventQueue,
        started: Instant,
        summary: &mut Summary,
    ) -> Next {
        let sid = &self.ids.call_sid;
        // The version is taken once: a swap from here on does not touch this verb.
        let version = self.shared.plugins.get(&verb.name);
        self.journal.record(json!({
            "type": "verb.start",
            "call_sid": sid,
            "verb": verb.name,
            "plugin": version.as_ref().map(|v| format!("{} {}", v.name(), v.version())),
            "sha256": version.as_ref().map(|v| v.sha256()),
        }));
        let Some(version) = version else {
            let why = RunError::NoPlugin {
                verb: verb.name.clone(),
                loaded: self.shared.plugins.verbs().join(", "),
            }
            .to_string();
            return self
                .verb_failed(verb, VerbFailure::NoPlugin, &why, &why, events, summary)
                .await;
        };
        let host = SipCallHost {
            call: self.call.clone(),
            ids: self.ids.clone(),
            verb: verb.name.clone(),
            journal: self.journal.clone(),
            metrics: self.shared.metrics.clone(),
            events: events.clone(),
            started,
        };
        let outcome = match self.shared.native.get(&verb.name) {
            Some(run) => {
                version.record_call();
                native::run(run, host, &verb.json, &self.info, version.plugin()).await
            }
            None => {
                let run = version.run(host, &verb.json, &self.info).await;
                if run.log_dropped > 0 {
                    tracing::warn!(call_sid = %sid, verb = %verb.name, bytes = run.log_dropped, "plugin log over its limit; dropped");
                }
                if run.guest_output_dropped > 0 {
                    tracing::debug!(call_sid = %sid, verb = %verb.name, bytes = run.guest_output_dropped, "plugin stdout/stderr over limits.max_guest_output_bytes; only its tail is kept");
                }
                run.outcome
            }
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(err) => {
                let reason = match &err {
                    RunError::Verb(VerbError::InvalidVerb(_)) | RunError::VerbTooLarge { .. } => {
                        VerbFailure::InvalidVerb
                    }
                    RunError::Trap { kind, .. } => {
                        self.shared.metrics.trap(&verb.name, &kind.to_string());
                        VerbFailure::PluginTrap
                    }
                    RunError::Overloaded { .. } => VerbFailure::Overloaded,
                    _ => VerbFailure::PluginFailed,
                };
                let why = err.to_string();
                let detail = run_detail(&err);
                return self
                    .verb_failed(verb, reason, &why, &detail, events, summary)
                    .await;
            }
        };
        summary.completed_verbs += 1;
        self.shared.metrics.verb(&verb.name, &outcome.event);
        let mut payload = outcome.payload;
        self.ids.stamp(&mut payload, &verb.name);
        payload.entry("call_status").or_insert_with(|| {
            if self.call.is_ended() || outcome.call_left {
                "completed"
            } else {
                "in-progress"
            }
            .into()
        });
        tracing::info!(call_sid = %sid, verb = %verb.name, event = %outcome.event, call_left = outcome.call_left, "verb completed");
        self.journal.record(json!({
            "type": "verb.completed",
            "call_sid": sid,
            "verb": verb.name,
            "event": outcome.event,
            "call_left": outcome.call_left,
            "payload": payload,
        }));
        // The leg has left: end it now (unless the far end did), before any HTTP round trip.
        if outcome.call_left && !self.call.is_ended() {
            self.hang_up("the call was transferred").await;
        }
        let replacement = match &outcome.action_hook {
            Some(hook) => self.post_action(hook, payload, events).await,
            None => None,
        };
        if outcome.call_left {
            if replacement.is_some() {
                tracing::info!(call_sid = %sid, "the actionHook returned verbs, but the call has left; ignored");
            }
            return Next::Stop;
        }
        match replacement {
            Some(verbs) => Next::Replace(verbs),
            None => Next::Continue,
        }
    }

    /// Reports a verb that did not complete: a log line naming the cause, the journal, the
    /// metrics, and the verb's actionHook (exactly once, as for any verb) when it has one.
    async fn verb_failed(
        &self,
        verb: &AppVerb,
        reason: VerbFailure,
        why: &str,
        detail: &str,
        events: &EventQueue,
        summary: &mut Summary,
    ) -> Next {
        let reason = reason.as_str();
        tracing::error!(call_sid = %self.ids.call_sid, verb = %verb.name, reason, "verb failed: {why}");
        self.shared.metrics.verb(&verb.name, reason);
        summary.failed_verbs.push(verb.name.clone());
        let mut payload = Map::new();
        payload.insert("event".into(), "VERB_ERROR".into());
        payload.insert("verb".into(), verb.name.clone().into());
        payload.insert("completion_reason".into(), reason.into());
        payload.insert("completion_detail".into(), detail.into());
        if let Some(id) = &verb.id {
            payload.insert("verb_id".into(), id.clone().into());
        }
        self.ids.stamp(&mut payload, &verb.name);
        payload.insert(
            "call_status".into(),
            if self.call.is_ended() {
                "completed"
            } else {
                "in-progress"
            }
            .into(),
        );
        self.journal.record(json!({
            "type": "verb.failed",
            "call_sid": self.ids.call_sid,
            "verb": verb.name,
            "reason": reason,
            "error": why,
            "payload": payload,
        }));
        match &verb.action_hook {
            Some(Ok(hook)) => match self.post_action(hook, payload, events).await {
                Some(verbs) => Next::Replace(verbs),
                None => Next::Continue,
            },
            Some(Err(bad)) => {
                tracing::warn!(call_sid = %self.ids.call_sid, verb = %verb.name, "the verb's actionHook is unusable ({bad}); not posted");
                Next::Continue
            }
            None => Next::Continue,
        }
    }

    /// Posts the actionHook once, after the verb's eventHooks (waiting at most
    /// `event_flush`), and returns the verbs its answer replaces the application with.
    async fn post_action(
        &self,
        hook: &Webhook,
        payload: Map<String, Value>,
        events: &EventQueue,
    ) -> Option<Vec<AppVerb>> {
        let sid = &self.ids.call_sid;
        if let Some(wait) = events.flush() {
            let limit = self.shared.config.webhooks.event_flush();
            if tokio::time::timeout(limit, wait).await.is_err() {
                tracing::warn!(call_sid = %sid, "eventHooks still in flight after {limit:?}; posting the actionHook now");
            }
        }
        let payload = Value::Object(payload);
        let delivered = post_hook(
            &self.shared,
            HookKind::Action,
            hook,
            self.base.as_ref(),
            &payload,
            &self.journal,
            sid,
        )
        .await?;
        // Too large: logged and counted by post_hook; not an application, the verb's result
        // stands.
        let body = delivered.body.ok()?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        match app::parse(&body) {
            Ok(verbs) if verbs.is_empty() => None,
            Ok(verbs) => {
                tracing::info!(call_sid = %sid, verbs = verbs.len(), "the actionHook replaced the application");
                self.journal.record(json!({
                    "type": "app.replaced",
                    "call_sid": sid,
                    "verbs": verbs.iter().map(|v| v.name.clone()).collect::<Vec<_>>(),
                }));
                Some(verbs)
            }
            Err(err) => {
                tracing::warn!(call_sid = %sid, url = %delivered.url, "the actionHook's answer is not an application ({err}); the application continues");
                None
            }
        }
    }

    async fn hang_up(&self, why: &str) {
        tracing::info!(call_sid = %self.ids.call_sid, "hanging up: {why}");
        if let Err(err) = self.call.hangup().await {
            tracing::warn!(call_sid = %self.ids.call_sid, error = %err, "BYE failed");
        }
        self.journal
            .record(json!({"type": "bye.sent", "call_sid": self.ids.call_sid, "why": why}));
    }
}

/// Longest `completion_detail` posted to an application, in bytes.
const MAX_DETAIL_BYTES: usize = 512;

/// `text` cut to its first line and at most [`MAX_DETAIL_BYTES`].
fn bounded(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let mut end = line.len().min(MAX_DETAIL_BYTES);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_owned()
}

/// What an application is told about a failed run (`completion_detail`): one bounded line. For
/// a trap, its kind and the last line the guest wrote (where a panic message lands) or else the
/// trap's root cause; the wasm backtrace and the rest of the output stay in the log.
pub(crate) fn run_detail(err: &RunError) -> String {
    match err {
        RunError::Trap {
            kind,
            message,
            guest_output,
        } => {
            // Rust's panic hook ends with a hint about RUST_BACKTRACE, which says nothing
            // about the cause: the message is the line before it.
            let last = |text: &str| {
                text.lines()
                    .rev()
                    .map(str::trim)
                    .find(|line| {
                        !line.is_empty() && !line.starts_with("note: run with `RUST_BACKTRACE")
                    })
                    .map(str::to_owned)
            };
            let cause = last(guest_output)
                .or_else(|| last(message))
                .unwrap_or_default();
            bounded(&format!("plugin trapped ({kind}): {cause}"))
        }
        other => bounded(&other.to_string()),
    }
}

/// Why a verb did not complete: its `completion_reason` and its metric outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VerbFailure {
    /// No plugin implements the verb.
    NoPlugin,
    /// The plugin refused the verb, or it is too large to run.
    InvalidVerb,
    /// The plugin trapped (a bug or an exceeded bound).
    PluginTrap,
    /// The instance pool (or the plugin's own `max_concurrent_runs`) had no room within
    /// `limits.slot_wait_ms`.
    Overloaded,
    /// Any other failure of the run.
    PluginFailed,
}

impl VerbFailure {
    /// Every reason, for the metric labels.
    pub(crate) const ALL: [VerbFailure; 5] = [
        VerbFailure::NoPlugin,
        VerbFailure::InvalidVerb,
        VerbFailure::PluginTrap,
        VerbFailure::Overloaded,
        VerbFailure::PluginFailed,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            VerbFailure::NoPlugin => "no-plugin",
            VerbFailure::InvalidVerb => "invalid-verb",
            VerbFailure::PluginTrap => "plugin-trap",
            VerbFailure::Overloaded => "overloaded",
            VerbFailure::PluginFailed => "plugin-failed",
        }
    }
}

enum Next {
    Continue,
    Replace(Vec<AppVerb>),
    Stop,
}

/// Delivers one hook, counting and journaling the result; `None` when it failed (logged).
/// A delivered answer over the size cap is logged and counted here; its caller decides what
/// that means for the hook (the body is an `Err`).
pub(crate) async fn post_hook(
    shared: &Shared,
    kind: HookKind,
    hook: &Webhook,
    base: Option<&Url>,
    payload: &Value,
    journal: &Journal,
    call_sid: &str,
) -> Option<crate::webhook::Delivered> {
    match shared.webhooks.deliver(hook, base, payload).await {
        Ok(delivered) => {
            shared.metrics.hook(kind.as_str(), true);
            tracing::info!(call_sid, hook = kind.as_str(), url = %delivered.url, status = delivered.status,
                attempts = delivered.attempts, delivery_id = %delivered.delivery_id, "hook delivered");
            let mut line = json!({
                "type": "hook.posted",
                "call_sid": call_sid,
                "hook": kind.as_str(),
                "url": delivered.url,
                "delivery_id": delivered.delivery_id,
                "status": delivered.status,
                "attempts": delivered.attempts,
                "payload": payload,
            });
            if let Err(too_large) = &delivered.body {
                shared
                    .metrics
                    .hook_answer_too_large(kind.as_str(), too_large.cause());
                tracing::warn!(call_sid, hook = kind.as_str(), url = %delivered.url, "hook answer not used: {too_large}");
                line["answer_error"] = too_large.to_string().into();
            }
            journal.record(line);
            Some(delivered)
        }
        Err(err) => {
            shared.metrics.hook(kind.as_str(), false);
            tracing::error!(call_sid, hook = kind.as_str(), "hook failed: {err}");
            journal.record(json!({
                "type": "hook.failed",
                "call_sid": call_sid,
                "hook": kind.as_str(),
                "delivery_id": err.delivery_id(),
                "error": err.to_string(),
                "payload": payload,
            }));
            None
        }
    }
}

/// The call's event queue: eventHooks delivered one after another, in the order emitted.
/// `pending` counts those queued or in flight; each is taken off once delivered or failed.
async fn deliver_events(
    mut queue: mpsc::UnboundedReceiver<EventJob>,
    pending: Arc<AtomicUsize>,
    shared: Arc<Shared>,
    base: Option<Url>,
    journal: Journal,
    call_sid: String,
) {
    while let Some(job) = queue.recv().await {
        match job {
            EventJob::Post(post) => {
                let (hook, payload) = *post;
                let payload = Value::Object(payload);
                // An eventHook's answer is not used, whatever its size.
                post_hook(
                    &shared,
                    HookKind::Event,
                    &hook,
                    base.as_ref(),
                    &payload,
                    &journal,
                    &call_sid,
                )
                .await;
                pending.fetch_sub(1, Ordering::SeqCst);
            }
            EventJob::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities() {
        assert_eq!(
            user_part("sip:+4930123@carrier.example;user=phone"),
            "+4930123"
        );
        assert_eq!(user_part("tel:+4930123"), "+4930123");
        assert_eq!(user_part("SIP:alice@x"), "alice");
        assert_eq!(user_part("sip:example.com"), "example.com");
        assert_eq!(
            uri_host("sip:+49@carrier.example:5060;user=phone"),
            Some("carrier.example")
        );
        assert_eq!(uri_host("sip:carrier.example"), Some("carrier.example"));
        assert_eq!(uri_host("sip:a@[::1]:5060"), Some("[::1]"));
        assert_eq!(
            display_name(r#""Alice \"A\"" <sip:a@x>;tag=1"#).as_deref(),
            Some("Alice \"A\"")
        );
        assert_eq!(display_name("Bob <sip:b@x>").as_deref(), Some("Bob"));
        assert_eq!(display_name("<sip:b@x>"), None);
        assert_eq!(display_name("sip:b@x"), None);
    }

    #[test]
    fn the_default_domain_is_the_far_ends() {
        let ids = CallIds::new(
            "c1",
            Direction::Inbound,
            r#""A" <sip:+4930111@carrier.example>;tag=1"#,
            "<sip:app@10.0.0.5>",
        );
        let info = call_info(
            &ids,
            r#""A" <sip:+4930111@carrier.example>;tag=1"#,
            "<sip:app@10.0.0.5>",
            None,
        );
        assert_eq!(info.default_domain, "carrier.example");
        assert_eq!(info.remote_party.uri, "sip:+4930111@carrier.example");
        assert_eq!(info.remote_party.display_name.as_deref(), Some("A"));
        let info = call_info(&ids, "<sip:a@b>", "<sip:c@d>", Some("pstn.example"));
        assert_eq!(info.default_domain, "pstn.example");
        assert_eq!((ids.from.as_str(), ids.to.as_str()), ("+4930111", "app"));
    }

    #[test]
    fn a_failure_detail_is_one_bounded_line_with_the_cause() {
        let trap = RunError::Trap {
            kind: verbhost_runtime::TrapKind::Panic,
            message: "error while executing at wasm backtrace:\n    0: 0x1f2 - run\n\nwasm trap: unreachable".into(),
            // As a Rust guest writes it: the message, then the hook's hint.
            guest_output: "thread panicked at src/lib.rs:9:5:\nthe plugin gave up on purpose\n\
                           note: run with `RUST_BACKTRACE=1` environment variable to display a \
                           backtrace\n"
                .into(),
        };
        assert_eq!(
            run_detail(&trap),
            "plugin trapped (panic): the plugin gave up on purpose"
        );
        let silent = RunError::Trap {
            kind: verbhost_runtime::TrapKind::Panic,
            message: "error while executing at wasm backtrace:\n    0: 0x1f2 - run\n\nwasm trap: unreachable".into(),
            guest_output: String::new(),
        };
        assert_eq!(
            run_detail(&silent),
            "plugin trapped (panic): wasm trap: unreachable"
        );
        let long = "é".repeat(400);
        let cut = bounded(&long);
        assert!(
            cut.len() <= MAX_DETAIL_BYTES && long.starts_with(&cut),
            "{}",
            cut.len()
        );
    }

    #[tokio::test]
    async fn a_calls_event_queue_holds_at_most_max_queued_events() {
        let metrics = Arc::new(Metrics::new(&verbhost_runtime::Allocator::Pooling {
            slots: 128,
        }));
        let (sender, mut queue) = mpsc::unbounded_channel();
        let events = EventQueue {
            sender,
            pending: Arc::default(),
            dropped: Arc::default(),
            max: 2,
            metrics: metrics.clone(),
            call_sid: "c1".into(),
        };
        let hook = Webhook {
            url: "http://127.0.0.1:9/event".into(),
            method: "POST".into(),
            username: None,
            password: None,
        };
        for _ in 0..5 {
            events.clone().post(hook.clone(), Map::new());
        }
        assert_eq!(events.pending.load(Ordering::SeqCst), 2);
        assert_eq!(events.dropped.load(Ordering::SeqCst), 3);
        let text = metrics.encode();
        assert!(
            text.contains(r#"verbhost_event_hooks_abandoned_total{cause="queue_full"} 3"#),
            "{text}"
        );
        // Two queued; once one is delivered (the poster takes it off), one more fits.
        assert!(matches!(queue.recv().await, Some(EventJob::Post(..))));
        events.pending.fetch_sub(1, Ordering::SeqCst);
        events.post(hook, Map::new());
        assert_eq!(events.pending.load(Ordering::SeqCst), 2);
        assert_eq!(events.dropped.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn the_host_owns_the_identifiers() {
        let ids = CallIds::new("c1", Direction::Outbound, "<sip:a@b>;tag=x", "<sip:c@d>");
        let mut payload = Map::new();
        payload.insert("call_sid".into(), "spoofed".into());
        payload.insert("event".into(), "E".into());
        ids.stamp(&mut payload, "v");
        assert_eq!(payload["call_sid"], ids.call_sid.as_str());
        assert_eq!(payload["direction"], "outbound");
        assert_eq!(payload["event"], "E");
    }
}
