//! Test support: a real HTTP webhook receiver on loopback that records every request in
//! order and answers each path with scripted replies.
//!
//! Integration tests include this file with `#[path = "support/webhooks.rs"] mod webhooks;`.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::Value;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: HashMap<String, String>,
    /// The raw body.
    pub raw: Vec<u8>,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: impl Into<String>) -> Reply {
        Reply {
            status: 200,
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct Inner {
    hits: Vec<Hit>,
    /// Per path (without query): replies used in turn; the last one repeats.
    replies: HashMap<String, Vec<Reply>>,
}

/// The receiver; dropped with the test's runtime.
#[derive(Clone)]
pub struct Receiver {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    /// Starts on 127.0.0.1 with an ephemeral port. Unscripted paths answer 200 with no body.
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the webhook receiver");
        let addr = listener.local_addr().expect("receiver address");
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let app = Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, inner }
    }

    /// `http://127.0.0.1:<port>/`
    pub fn base(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// `http://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Scripts the replies for `path`, used in turn (the last repeats).
    pub fn reply(&self, path: &str, replies: Vec<Reply>) {
        self.inner
            .lock()
            .unwrap()
            .replies
            .insert(path.to_owned(), replies);
    }

    /// Every request so far, in arrival order.
    pub fn hits(&self) -> Vec<Hit> {
        self.inner.lock().unwrap().hits.clone()
    }

    /// The paths requested so far, in order.
    pub fn paths(&self) -> Vec<String> {
        self.hits().into_iter().map(|h| h.path).collect()
    }

    /// Waits (at most `timeout`) until `count` requests have arrived; returns them.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Hit> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let hits = self.hits();
            if hits.len() >= count || tokio::time::Instant::now() >= deadline {
                return hits;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let reply = {
        let mut inner = inner.lock().unwrap();
        inner.hits.push(Hit {
            method: method.to_string(),
            path: uri.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            raw: body.to_vec(),
            json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        match inner.replies.get_mut(uri.path()) {
            Some(replies) if replies.len() > 1 => Some(replies.remove(0)),
            Some(replies) => replies.first().cloned(),
            None => None,
        }
    };
    let reply = reply.unwrap_or_else(|| Reply::ok(""));
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK),
        reply.body,
    )
}
