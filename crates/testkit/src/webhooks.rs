//! The webhook side: [`Receiver`], a real HTTP server on loopback that records every request
//! in order and answers each path with scripted replies, and [`BigAnswers`], a bare HTTP/1.1
//! server that sends answers of any size (declared or chunked) without holding them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::Value;

use crate::{Error, lock};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The HTTP method (`POST`, `GET`, ...).
    pub method: String,
    /// Path and query, as requested (`/event?x=1`).
    pub path: String,
    /// The request headers, names in lower case (a repeated header keeps its last value;
    /// a value that is not text reads as empty).
    pub headers: HashMap<String, String>,
    /// The raw body.
    pub raw: Vec<u8>,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status (an invalid code answers 200).
    pub status: u16,
    /// The body (a verb list in JSON, for a call hook or an actionHook).
    pub body: String,
    /// How long to wait before answering (to test the host's timeouts).
    pub delay: Duration,
}

impl Reply {
    /// A 200 with this body, at once.
    pub fn ok(body: impl Into<String>) -> Reply {
        Reply {
            status: 200,
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    /// This status with no body, at once.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    /// The same answer, given after `delay`.
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

/// An application's web server on loopback: records every request, in arrival order, and
/// answers each path with its scripted [`Reply`]s. Clones share the same records. It serves
/// until the tokio runtime it started on ends. Request bodies over 2 MiB are refused (413,
/// not recorded).
#[derive(Clone)]
pub struct Receiver {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    /// Starts on 127.0.0.1 with an ephemeral port. Unscripted paths answer 200 with no body.
    ///
    /// # Panics
    ///
    /// When the port cannot be bound (a test convenience; see [`Receiver::try_start`]).
    pub async fn start() -> Receiver {
        Receiver::try_start()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Receiver::start`], with the bind failure as an error.
    pub async fn try_start() -> Result<Receiver, Error> {
        let bind = |source| Error::Bind {
            party: "webhook receiver",
            source,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let app = Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Receiver { addr, inner })
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
        lock(&self.inner).replies.insert(path.to_owned(), replies);
    }

    /// Every request so far, in arrival order.
    pub fn hits(&self) -> Vec<Hit> {
        lock(&self.inner).hits.clone()
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
        let mut inner = lock(&inner);
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

/// How [`BigAnswers`] answers one request: always a 200 (bodies of spaces are not JSON).
#[derive(Debug, Clone)]
pub enum Big {
    /// `len` spaces, sent chunked (no `Content-Length`).
    Chunked(usize),
    /// `len` spaces, with `Content-Length: len`.
    Declared(usize),
    /// This JSON text, with its `Content-Length`.
    Json(String),
}

/// A bare HTTP/1.1 server on 127.0.0.1 for answers too big to build in memory: each request
/// (one per connection) gets the next scripted answer of its path (the last repeats), written
/// 64 KiB at a time until done or until the client goes away. Unscripted paths get 404.
#[derive(Clone)]
pub struct BigAnswers {
    addr: SocketAddr,
    /// Requests received, per path.
    requests: Arc<Mutex<HashMap<String, usize>>>,
    /// Body bytes written, over every answer.
    written: Arc<AtomicUsize>,
}

impl BigAnswers {
    /// Starts with an ephemeral port; `script` maps a path to its answers, used in turn.
    ///
    /// # Panics
    ///
    /// When the port cannot be bound (it is for tests only).
    pub async fn start(script: Vec<(&str, Vec<Big>)>) -> BigAnswers {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the big-answer server");
        let server = BigAnswers {
            addr: listener.local_addr().expect("its address"),
            requests: Arc::default(),
            written: Arc::default(),
        };
        let script: Arc<Mutex<HashMap<String, Vec<Big>>>> = Arc::new(Mutex::new(
            script
                .into_iter()
                .map(|(path, answers)| (path.to_owned(), answers))
                .collect(),
        ));
        let state = server.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(state.clone().answer(socket, script.clone()));
            }
        });
        server
    }

    /// `http://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests received for `path` so far.
    pub fn requests(&self, path: &str) -> usize {
        lock(&self.requests).get(path).copied().unwrap_or(0)
    }

    /// Body bytes written so far, over every answer.
    pub fn written(&self) -> usize {
        self.written.load(Ordering::Relaxed)
    }

    async fn answer(
        self,
        mut socket: tokio::net::TcpStream,
        script: Arc<Mutex<HashMap<String, Vec<Big>>>>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // The request head (a request body, if any, is not needed).
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
            if head.len() > 64 << 10 {
                return;
            }
        }
        let line = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        let target = line.split(' ').nth(1).unwrap_or("/");
        let path = target.split('?').next().unwrap_or(target).to_owned();
        *lock(&self.requests).entry(path.clone()).or_default() += 1;
        let answer = match lock(&script).get_mut(&path) {
            Some(answers) if answers.len() > 1 => Some(answers.remove(0)),
            Some(answers) => answers.first().cloned(),
            None => None,
        };
        let (head, len, chunked) = match answer {
            None => {
                let _ = socket
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .await;
                return;
            }
            Some(Big::Json(text)) => {
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
                return;
            }
            Some(Big::Declared(len)) => (
                format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n"),
                len,
                false,
            ),
            Some(Big::Chunked(len)) => (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned(),
                len,
                true,
            ),
        };
        if socket.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b' '; 64 << 10];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            let framed = if chunked {
                [format!("{n:x}\r\n").as_bytes(), &chunk[..n], b"\r\n"].concat()
            } else {
                chunk[..n].to_vec()
            };
            if socket.write_all(&framed).await.is_err() {
                return;
            }
            self.written.fetch_add(n, Ordering::Relaxed);
            left -= n;
        }
        if chunked {
            let _ = socket.write_all(b"0\r\n\r\n").await;
        }
    }
}
