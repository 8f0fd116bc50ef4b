//! Prometheus metrics and the admin HTTP server (`/metrics`, `/health`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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
    draining: AtomicBool,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("verbhost");
        let calls = Family::<DirectionLabel, Counter>::default();
        registry.register("calls", "Calls handled, by direction", calls.clone());
        let calls_active = Gauge::default();
        registry.register("calls_active", "Calls in progress", calls_active.clone());
        let calls_rejected = Counter::default();
        registry.register(
            "calls_rejected",
            "Inbound calls refused (no application, draining)",
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

    pub(crate) fn verb(&self, verb: &str, outcome: &str) {
        self.verbs
            .get_or_create(&VerbLabels {
                verb: verb.to_owned(),
                outcome: outcome.to_owned(),
            })
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
                verb: verb.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// The text exposition format.
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

/// Serves `/metrics` and `/health` on `listener` until the process exits.
pub(crate) async fn serve_admin(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/health", get(health))
        .with_state(metrics);
    if let Err(err) = axum::serve(listener, app).await {
        tracing::error!(error = %err, "the admin server stopped");
    }
}

/// Binds the admin address.
pub(crate) async fn bind_admin(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on the admin address {addr}: {e}"))
}

async fn metrics_page(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

async fn health(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}
