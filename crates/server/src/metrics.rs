//! Prometheus metrics and the admin HTTP server (`/metrics`, `/health`).
//!
//! Label values never come straight from outside input: a verb label is one of the loaded
//! plugins' verbs, an outcome is one of the host's own reasons or one of the first
//! [`MAX_EVENTS_PER_VERB`] distinct event names a verb's plugin reported; anything else is
//! counted under [`OTHER`]. So a hostile application (random verb names, 10,000 verbs) or a
//! plugin inventing event names cannot grow `/metrics` without bound.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use verbhost_runtime::Allocator;
use verbhost_sip::endpoint::Stats;
use verbhost_sip::hep::HepStats;

use crate::plugins::Plugins;
use crate::session::VerbFailure;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrapLabels {
    verb: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookCauseLabels {
    kind: &'static str,
    cause: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: &'static str,
}

/// The label value for a verb or outcome that is not a known one.
pub(crate) const OTHER: &str = "other";

/// Distinct plugin event names kept as `outcome` labels per verb; later ones are [`OTHER`].
pub(crate) const MAX_EVENTS_PER_VERB: usize = 16;

/// Longest plugin event name kept as a label, in bytes.
const MAX_EVENT_LABEL_BYTES: usize = 64;

/// Which label values are allowed: the loaded verbs, and per verb the event names seen
/// first.
struct Labels {
    verbs: Mutex<BTreeSet<String>>,
    events: Mutex<HashMap<String, HashSet<String>>>,
}

/// Distinct verbs kept as labels, over the life of the process (plugins come and go with
/// hot swap; each one's verbs are added when it is installed). Later ones are [`OTHER`].
const MAX_VERB_LABELS: usize = 256;

impl Labels {
    /// `verb` if a plugin implements (or implemented) it, else [`OTHER`].
    fn verb(&self, verb: &str) -> String {
        match self.verbs.lock() {
            Ok(verbs) if verbs.contains(verb) => verb.to_owned(),
            _ => OTHER.to_owned(),
        }
    }

    /// `outcome` if it is a host reason or one of the first event names of `verb` (already
    /// a label value), else [`OTHER`].
    fn outcome(&self, verb: &str, outcome: &str) -> String {
        if VerbFailure::ALL.iter().any(|r| r.as_str() == outcome) {
            return outcome.to_owned();
        }
        let printable = outcome.len() <= MAX_EVENT_LABEL_BYTES
            && !outcome.is_empty()
            && outcome
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
        if verb == OTHER || !printable {
            return OTHER.to_owned();
        }
        let Ok(mut events) = self.events.lock() else {
            return OTHER.to_owned();
        };
        let seen = events.entry(verb.to_owned()).or_default();
        if seen.contains(outcome) || seen.len() < MAX_EVENTS_PER_VERB {
            seen.insert(outcome.to_owned());
            outcome.to_owned()
        } else {
            OTHER.to_owned()
        }
    }
}

/// Everything verbhost counts.
pub(crate) struct Metrics {
    registry: Registry,
    calls: Family<DirectionLabel, Counter>,
    calls_active: Gauge,
    calls_rejected: Counter,
    verbs: Family<VerbLabels, Counter>,
    refer_responses: Family<ClassLabel, Counter>,
    hooks_posted: Family<HookLabel, Counter>,
    hook_failures: Family<HookLabel, Counter>,
    plugin_traps: Family<TrapLabels, Counter>,
    hook_answers_too_large: Family<HookCauseLabels, Counter>,
    calls_limited: Family<LimitLabel, Counter>,
    event_hooks_abandoned: Family<CauseLabel, Counter>,
    labels: Labels,
    sip: Arc<SipCollector>,
    hep: Arc<HepCollector>,
    plugin_swaps: Family<SwapLabels, Counter>,
    plugin_rollbacks: Family<VerbLabel, Counter>,
    plugins: Arc<PluginCollector>,
    /// The plugin allocator, for `/health`.
    allocator: String,
    draining: AtomicBool,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SwapLabels {
    verb: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabel {
    verb: String,
}

/// The active version of every verb (`verbhost_plugin_version_info`) and the compiled
/// cache's counters, read from the plugins at every scrape.
#[derive(Debug, Default)]
struct PluginCollector(OnceLock<Weak<Plugins>>);

impl Collector for PluginCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Some(plugins) = self.0.get().and_then(Weak::upgrade) else {
            return Ok(());
        };
        let mut family = encoder.encode_descriptor(
            "plugin_version",
            "The plugin version serving each verb, with its sha256 and source",
            None,
            MetricType::Info,
        )?;
        for version in plugins.list() {
            family.encode_info(&vec![
                ("verb", version.verb),
                ("plugin", version.plugin),
                ("version", version.version),
                ("sha256", version.sha256),
                ("source", version.origin),
            ])?;
        }
        let cache = plugins.runtime().cache_stats();
        if cache.enabled {
            let mut family = encoder.encode_descriptor(
                "plugin_cache",
                "Compiled-plugin cache lookups, by result (hit, miss, error: an entry that \
                 failed to load and was rebuilt)",
                None,
                ConstCounter::<u64>::default().metric_type(),
            )?;
            for (result, count) in [
                ("hit", cache.hits),
                ("miss", cache.misses),
                ("error", cache.errors),
            ] {
                ConstCounter::new(count).encode(family.encode_family(&[("result", result)])?)?;
            }
        }
        Ok(())
    }
}

/// One counter family of [`SipCollector`]: no label when `label` is empty.
struct SipFamily {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    values: Vec<(&'static str, u64)>,
}

/// The SIP stack's own counters, read from the endpoint's [`Stats`] at every scrape (the
/// endpoint is bound after the metrics exist; until then nothing is reported).
#[derive(Debug, Default)]
struct SipCollector(OnceLock<Arc<Stats>>);

impl Collector for SipCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Some(stats) = self.0.get() else {
            return Ok(());
        };
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let family = |name, help, label, values| SipFamily {
            name,
            help,
            label,
            values,
        };
        let families = [
            family(
                "sip_messages_dropped",
                "SIP messages received and dropped without an answer, by cause (unparseable: \
                 did not parse and could not be answered 400; keepalive: only CR/LF; \
                 no_branch: a request whose top Via has no branch; stray_response: a response \
                 to none of our transactions)",
                "cause",
                vec![
                    ("unparseable", get(&stats.dropped)),
                    ("keepalive", get(&stats.dropped_keepalive)),
                    ("no_branch", get(&stats.dropped_no_branch)),
                    ("stray_response", get(&stats.dropped_stray_response)),
                ],
            ),
            family(
                "sip_requests_answered_error",
                "SIP requests that parsed, answered 4xx/5xx by the stack, by cause (no_dialog: \
                 481; not_implemented: 501; bad_event: 489; bad_cseq: 400 or 500 for a missing \
                 or out-of-order CSeq; 503s are in sip_calls_refused, 400/505 for requests \
                 that did not parse in sip_requests_rejected)",
                "cause",
                vec![
                    ("no_dialog", get(&stats.answered_no_dialog)),
                    ("not_implemented", get(&stats.answered_not_implemented)),
                    ("bad_event", get(&stats.answered_bad_event)),
                    ("bad_cseq", get(&stats.answered_bad_cseq)),
                ],
            ),
            family(
                "sip_requests_rejected",
                "SIP requests that did not parse, answered 400 or 505",
                "",
                vec![("", get(&stats.rejected))],
            ),
            family(
                "sip_retransmissions",
                "Retransmitted SIP requests answered from their transaction",
                "",
                vec![("", get(&stats.retransmissions))],
            ),
            family(
                "sip_notifies_ignored",
                "In-dialog NOTIFYs answered but not delivered to the plugin, by cause (duplicate: \
                 repeats the previous one; excess: past the per-subscription limit; coalesced: a \
                 queued progress NOTIFY replaced by a newer one)",
                "cause",
                vec![
                    ("duplicate", get(&stats.notify_duplicates)),
                    ("excess", get(&stats.notify_excess)),
                    ("coalesced", get(&stats.notify_coalesced)),
                ],
            ),
            family(
                "sip_calls_refused",
                "New INVITEs answered 503 with Retry-After, by cause (max_calls, rate: \
                 max_calls_per_sec, queue_delay: waited past max_queue_delay_ms, no_capacity: \
                 the server's accept queue was full, draining: the server is shutting down)",
                "cause",
                vec![
                    ("max_calls", get(&stats.refused_max_calls)),
                    ("rate", get(&stats.refused_rate)),
                    ("queue_delay", get(&stats.refused_queue_delay)),
                    ("no_capacity", get(&stats.refused_no_capacity)),
                    ("draining", get(&stats.refused_draining)),
                ],
            ),
            family(
                "sip_calls_unacked",
                "Inbound calls whose 200 got no ACK within Timer H (64*T1): the dialog never \
                 came up for the caller, so a REFER waiting for the ACK failed (dialog_gone) \
                 and the call was ended with a BYE",
                "",
                vec![("", get(&stats.unacked_answers))],
            ),
            family(
                "sip_calls_unanswered",
                "Inbound calls dropped without an answer by the server, answered 500",
                "",
                vec![("", get(&stats.unanswered_calls))],
            ),
            family(
                "sip_tcp_closed",
                "TCP connections closed by verbhost, by cause (max_connections, \
                 max_connections_per_ip, message_timeout, idle_timeout, unframeable, \
                 write_timeout, send_queue_full: messages dropped for a peer that does not read)",
                "cause",
                vec![
                    ("max_connections", get(&stats.tcp_refused_max)),
                    ("max_connections_per_ip", get(&stats.tcp_refused_per_ip)),
                    ("message_timeout", get(&stats.tcp_message_timeouts)),
                    ("idle_timeout", get(&stats.tcp_idle_timeouts)),
                    ("unframeable", get(&stats.tcp_unframeable)),
                    ("write_timeout", get(&stats.tcp_write_timeouts)),
                    ("send_queue_full", get(&stats.tcp_send_queue_full)),
                ],
            ),
        ];
        for SipFamily {
            name,
            help,
            label,
            values,
        } in families
        {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                ConstCounter::<u64>::default().metric_type(),
            )?;
            if label.is_empty() {
                // One value, no label: `name_total N`, not `name_total{} N`.
                let count = values.first().map_or(0, |(_, count)| *count);
                ConstCounter::new(count).encode(family)?;
                continue;
            }
            for (value, count) in values {
                ConstCounter::new(count).encode(family.encode_family(&[(label, value)])?)?;
            }
        }
        Ok(())
    }
}

/// The HEP exporter's counters (`--hep`), read at every scrape; nothing is reported
/// without an exporter.
#[derive(Debug, Default)]
struct HepCollector(OnceLock<Arc<HepStats>>);

impl Collector for HepCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Some(stats) = self.0.get() else {
            return Ok(());
        };
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut family = encoder.encode_descriptor(
            "sip_hep_packets",
            "SIP messages offered to the HEP export (log.hep), by result (sent; queue_full: \
             dropped from the export because the sender was behind, the call is unaffected; \
             send_error: the socket refused the packet)",
            None,
            ConstCounter::<u64>::default().metric_type(),
        )?;
        for (result, count) in [
            ("sent", get(&stats.sent)),
            ("queue_full", get(&stats.dropped_queue_full)),
            ("send_error", get(&stats.send_errors)),
        ] {
            ConstCounter::new(count).encode(family.encode_family(&[("result", result)])?)?;
        }
        let family = encoder.encode_descriptor(
            "sip_hep_truncated",
            "HEP packets whose SIP message was cut to fit one datagram (65,000 bytes)",
            None,
            ConstCounter::<u64>::default().metric_type(),
        )?;
        ConstCounter::new(get(&stats.truncated)).encode(family)
    }
}

impl Metrics {
    /// The metrics of a host whose plugins implement `known_verbs` (the only verb label
    /// values).
    pub(crate) fn new(allocator: &Allocator) -> Metrics {
        let mut registry = Registry::with_prefix("verbhost");
        let (kind, slots) = match allocator {
            Allocator::Pooling { slots } => ("pooling", slots.to_string()),
            Allocator::OnDemand { .. } => ("on_demand", "0".to_owned()),
        };
        registry.register(
            "plugin_allocator",
            "How plugin instances are allocated: pooling (slots: runs at once) or on_demand \
             (the pool could not be reserved; every figure is slower; /health says why)",
            Info::new(vec![("kind", kind.to_owned()), ("slots", slots)]),
        );
        let calls = Family::<DirectionLabel, Counter>::default();
        registry.register("calls", "Calls handled, by direction", calls.clone());
        let calls_active = Gauge::default();
        registry.register("calls_active", "Calls in progress", calls_active.clone());
        let calls_rejected = Counter::default();
        registry.register(
            "calls_rejected",
            "Inbound calls the server refused after the SIP stack took them: the call hook gave \
             no usable application (500, or 480 for an empty one), or the server was draining \
             (503); the stack's own 503s are in sip_calls_refused",
            calls_rejected.clone(),
        );
        let verbs = Family::<VerbLabels, Counter>::default();
        registry.register(
            "verbs",
            "Verbs run, by verb and outcome (the plugin's event, or no-plugin/invalid-verb/plugin-trap/plugin-failed)",
            verbs.clone(),
        );
        let refer_responses = Family::<ClassLabel, Counter>::default();
        registry.register(
            "refer_responses",
            "Final responses to REFER by class (2xx..6xx), or timeout/transport/dialog_gone",
            refer_responses.clone(),
        );
        let hooks_posted = Family::<HookLabel, Counter>::default();
        registry.register(
            "hooks_posted",
            "Webhooks delivered, by kind",
            hooks_posted.clone(),
        );
        let hook_failures = Family::<HookLabel, Counter>::default();
        registry.register(
            "hook_failures",
            "Webhooks that failed after every retry, by kind",
            hook_failures.clone(),
        );
        let plugin_traps = Family::<TrapLabels, Counter>::default();
        registry.register(
            "plugin_traps",
            "Plugin runs that trapped, by verb and kind",
            plugin_traps.clone(),
        );
        let hook_answers_too_large = Family::<HookCauseLabels, Counter>::default();
        registry.register(
            "hook_answers_too_large",
            "2xx hook answers over webhooks.max_response_bytes, not used, by kind and cause \
             (content_length: refused unread; body: read no further)",
            hook_answers_too_large.clone(),
        );
        let calls_limited = Family::<LimitLabel, Counter>::default();
        registry.register(
            "calls_limited",
            "Calls hung up on reaching a limit (max_verbs_per_call, max_app_replacements)",
            calls_limited.clone(),
        );
        let event_hooks_abandoned = Family::<CauseLabel, Counter>::default();
        registry.register(
            "event_hooks_abandoned",
            "eventHooks not delivered, by cause (queue_full: over max_queued_events; \
             drain_timeout: still queued event_drain_ms after the call ended)",
            event_hooks_abandoned.clone(),
        );
        let plugin_swaps = Family::<SwapLabels, Counter>::default();
        registry.register(
            "plugin_swaps",
            "Plugin versions offered to a verb, by verb and result (ok: in service; rejected: \
             refused by a check, the version before keeps serving; retired: its file was removed)",
            plugin_swaps.clone(),
        );
        let plugin_rollbacks = Family::<VerbLabel, Counter>::default();
        registry.register(
            "plugin_rollbacks",
            "Rollbacks through the admin API, by verb",
            plugin_rollbacks.clone(),
        );
        let sip = Arc::new(SipCollector::default());
        registry.register_collector(Box::new(sip.clone()));
        let hep = Arc::new(HepCollector::default());
        registry.register_collector(Box::new(hep.clone()));
        let plugins = Arc::new(PluginCollector::default());
        registry.register_collector(Box::new(plugins.clone()));
        Metrics {
            registry,
            calls,
            calls_active,
            calls_rejected,
            verbs,
            refer_responses,
            hooks_posted,
            hook_failures,
            plugin_traps,
            hook_answers_too_large,
            calls_limited,
            event_hooks_abandoned,
            plugin_swaps,
            plugin_rollbacks,
            labels: Labels {
                verbs: Mutex::default(),
                events: Mutex::default(),
            },
            sip,
            hep,
            plugins,
            allocator: allocator.to_string(),
            draining: AtomicBool::new(false),
        }
    }

    pub(crate) fn call_started(&self, direction: &'static str) {
        self.calls
            .get_or_create(&DirectionLabel { direction })
            .inc();
        self.calls_active.inc();
    }

    pub(crate) fn call_ended(&self) {
        self.calls_active.dec();
    }

    pub(crate) fn call_rejected(&self) {
        self.calls_rejected.inc();
    }

    /// Counts a verb run by its outcome (see the module doc for which labels are kept).
    pub(crate) fn verb(&self, verb: &str, outcome: &str) {
        let verb = self.labels.verb(verb);
        let outcome = self.labels.outcome(&verb, outcome);
        self.verbs
            .get_or_create(&VerbLabels { verb, outcome })
            .inc();
    }

    pub(crate) fn refer_response(&self, class: &'static str) {
        self.refer_responses
            .get_or_create(&ClassLabel { class })
            .inc();
    }

    pub(crate) fn hook(&self, kind: &'static str, ok: bool) {
        let family = if ok {
            &self.hooks_posted
        } else {
            &self.hook_failures
        };
        family.get_or_create(&HookLabel { kind }).inc();
    }

    pub(crate) fn trap(&self, verb: &str, kind: &str) {
        self.plugin_traps
            .get_or_create(&TrapLabels {
                verb: self.labels.verb(verb),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// A 2xx answer of hook `kind` over the size cap; `cause` from
    /// [`AnswerTooLarge::cause`](crate::webhook::AnswerTooLarge::cause).
    pub(crate) fn hook_answer_too_large(&self, kind: &'static str, cause: &'static str) {
        self.hook_answers_too_large
            .get_or_create(&HookCauseLabels { kind, cause })
            .inc();
    }

    /// A call hung up on reaching `limit` (the config key's name).
    pub(crate) fn call_limited(&self, limit: &'static str) {
        self.calls_limited
            .get_or_create(&LimitLabel { limit })
            .inc();
    }

    /// `count` eventHooks not delivered, for `cause` (`queue_full`, `drain_timeout`).
    pub(crate) fn event_hooks_abandoned(&self, cause: &'static str, count: u64) {
        self.event_hooks_abandoned
            .get_or_create(&CauseLabel { cause })
            .inc_by(count);
    }

    /// Verbs that may be labels from now on (a plugin implementing them was installed).
    pub(crate) fn add_verbs(&self, verbs: &[String]) {
        if let Ok(mut known) = self.labels.verbs.lock() {
            for verb in verbs {
                if known.len() >= MAX_VERB_LABELS {
                    break;
                }
                known.insert(verb.clone());
            }
        }
    }

    /// A version offered to `verb`: `ok`, `rejected` or `retired`.
    pub(crate) fn plugin_swap(&self, verb: &str, result: &'static str) {
        self.plugin_swaps
            .get_or_create(&SwapLabels {
                verb: self.labels.verb(verb),
                result,
            })
            .inc();
    }

    pub(crate) fn plugin_rollback(&self, verb: &str) {
        self.plugin_rollbacks
            .get_or_create(&VerbLabel {
                verb: self.labels.verb(verb),
            })
            .inc();
    }

    /// Reports the active plugin versions and the compiled cache from now on.
    pub(crate) fn watch_plugins(&self, plugins: &Arc<Plugins>) {
        let _ = self.plugins.0.set(Arc::downgrade(plugins));
    }

    /// Reports the SIP endpoint's counters from now on (the first endpoint given wins).
    pub(crate) fn watch_sip(&self, stats: Arc<Stats>) {
        let _ = self.sip.0.set(stats);
    }

    /// Reports the HEP exporter's counters from now on.
    pub(crate) fn watch_hep(&self, stats: Arc<HepStats>) {
        let _ = self.hep.0.set(stats);
    }

    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// The text exposition format.
    /// True once the server has begun to drain.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// How plugin instances are allocated, as `/health` shows it.
    pub(crate) fn allocator(&self) -> &str {
        &self.allocator
    }

    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The class label of a REFER's final status: `2xx` .. `6xx`.
pub(crate) fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "6xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_rejected_says_what_the_readme_says() {
        let metrics = Metrics::new(&Allocator::Pooling { slots: 1 });
        let text = metrics.encode();
        let help = text
            .lines()
            .find(|l| l.starts_with("# HELP verbhost_calls_rejected "))
            .expect("calls_rejected has a HELP line");
        // The README: "(call hook failures, draining)".
        assert!(
            help.contains("the call hook gave no usable application"),
            "{help}"
        );
        assert!(help.contains("draining"), "{help}");
        assert!(!help.contains("no application,"), "{help}");
    }

    #[test]
    fn hep_counters_appear_once_an_exporter_runs() {
        let metrics = Metrics::new(&Allocator::Pooling { slots: 1 });
        assert!(!metrics.encode().contains("sip_hep"));
        let stats = Arc::new(HepStats::default());
        stats.sent.fetch_add(3, Ordering::Relaxed);
        stats.dropped_queue_full.fetch_add(2, Ordering::Relaxed);
        metrics.watch_hep(stats);
        let text = metrics.encode();
        for line in [
            r#"verbhost_sip_hep_packets_total{result="sent"} 3"#,
            r#"verbhost_sip_hep_packets_total{result="queue_full"} 2"#,
            r#"verbhost_sip_hep_packets_total{result="send_error"} 0"#,
            "verbhost_sip_hep_truncated_total 0",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
    }

    #[test]
    fn verb_and_outcome_labels_stay_bounded() {
        let metrics = Metrics::new(&Allocator::Pooling { slots: 128 });
        metrics.add_verbs(&["sip:refer".to_owned()]);
        let empty = metrics.encode().len();
        metrics.verb("sip:refer", "TRANSFER_REFER_SUCCESS");
        metrics.verb("sip:refer", "no-plugin");
        // What a hostile application and a hostile plugin can make up.
        for n in 0..2_000 {
            metrics.verb(&format!("random-verb-{n}"), "no-plugin");
            metrics.verb(&format!("random-verb-{n}"), &format!("EVENT_{n}"));
            metrics.verb("sip:refer", &format!("EVENT_{n}"));
            metrics.trap(&format!("random-verb-{n}"), "cpu-budget");
        }
        metrics.verb("sip:refer", &"X".repeat(1_000));
        metrics.verb("sip:refer", "two words");
        let text = metrics.encode();
        let verbs: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("verbhost_verbs_total{"))
            .collect();
        // sip:refer: SUCCESS, no-plugin, 15 more events, other; other: no-plugin, other.
        assert_eq!(verbs.len(), 2 + (MAX_EVENTS_PER_VERB - 1) + 1 + 2, "{text}");
        eprintln!(
            "/metrics: {empty} bytes empty, {} bytes and {} lines after 8,000 hostile labels",
            text.len(),
            text.lines().count()
        );
        assert!(text.len() < empty + 8_000, "{} bytes:\n{text}", text.len());
        for line in [
            r#"verbhost_verbs_total{verb="sip:refer",outcome="TRANSFER_REFER_SUCCESS"} 1"#,
            r#"verbhost_verbs_total{verb="sip:refer",outcome="EVENT_0"} 1"#,
            r#"verbhost_verbs_total{verb="other",outcome="no-plugin"} 2000"#,
            r#"verbhost_verbs_total{verb="other",outcome="other"} 2000"#,
            r#"verbhost_plugin_traps_total{verb="other",kind="cpu-budget"} 2000"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // 2,000 - 15 made-up events, the long one and the one with a space.
        let other = format!(
            r#"verbhost_verbs_total{{verb="sip:refer",outcome="other"}} {}"#,
            2_000 - (MAX_EVENTS_PER_VERB - 1) + 2
        );
        assert!(text.lines().any(|l| l == other), "{other} missing:\n{text}");
    }
}
