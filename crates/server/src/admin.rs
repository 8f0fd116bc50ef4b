//! The admin HTTP API on `admin.listen`: `/metrics` (OpenMetrics) and `/health`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::error::ServerError;
use crate::metrics::Metrics;

/// Binds the admin address.
pub(crate) async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServerError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::AdminBind { addr, source })
}

/// Serves the admin API on `listener` until `stop` resolves.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/health", get(health))
        .with_state(metrics);
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %err, "the admin server stopped");
    }
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
    let allocator = metrics.allocator();
    if metrics.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("draining\nplugin allocator: {allocator}\n"),
        )
    } else {
        (
            StatusCode::OK,
            format!("ok\nplugin allocator: {allocator}\n"),
        )
    }
}
