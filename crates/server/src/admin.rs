//! The admin HTTP API on `admin.listen`.
//!
//! - `GET /metrics` (OpenMetrics) and `GET /health` (200 `ok`, or 503 `draining`) are open, so
//!   scrapers and load balancers need no credentials.
//! - `GET /plugins`, `PUT /plugins/NAME` and `POST /plugins/NAME/rollback` manage plugin
//!   versions. When `admin.token` is set they need `Authorization: Bearer TOKEN`; without a
//!   token they are served only on a loopback address (the config check refuses anything else).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::ServerError;
use crate::session::Shared;

/// Binds the admin address.
pub(crate) async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServerError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::AdminBind { addr, source })
}

/// Serves the admin API on `listener` until `stop` resolves.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    // An upload may be as large as a plugin file may be, and no larger.
    let upload_limit = shared.plugins.max_plugin_bytes();
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/health", get(health))
        .route("/plugins", get(list))
        .route("/plugins/{name}", put(upload))
        .route("/plugins/{name}/rollback", post(rollback))
        .layer(DefaultBodyLimit::max(upload_limit))
        .with_state(shared);
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %err, "the admin server stopped");
    }
}

async fn metrics_page(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
}

async fn health(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let allocator = shared.metrics.allocator();
    if shared.metrics.is_draining() {
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

/// `Authorization: Bearer TOKEN` matches `admin.token`, when one is set. The comparison
/// takes the same time wherever the tokens differ.
fn authorized(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(token) = shared.config.admin.token.as_deref() else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(token.as_bytes()),
    );
    if a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
    {
        return Ok(());
    }
    tracing::warn!("admin API: a request without the right bearer token was refused");
    Err(Box::new(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(json!({"error": "this needs Authorization: Bearer <admin.token>"})),
        )
            .into_response(),
    ))
}

async fn list(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorized(&shared, &headers) {
        return *refused;
    }
    axum::Json(json!({ "plugins": shared.plugins.list() })).into_response()
}

async fn upload(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = authorized(&shared, &headers) {
        return *refused;
    }
    let verdict = shared.plugins.upload(&name, body.to_vec()).await;
    let status = if verdict.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (status, axum::Json(verdict)).into_response()
}

async fn rollback(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = authorized(&shared, &headers) {
        return *refused;
    }
    match shared.plugins.rollback(&name) {
        Ok(done) => axum::Json(done).into_response(),
        Err(err) => (
            StatusCode::CONFLICT,
            axum::Json(json!({"result": "refused", "verb": name, "cause": err.to_string()})),
        )
            .into_response(),
    }
}
