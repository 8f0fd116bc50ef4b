//! Posting webhooks: the call hook, eventHooks and actionHooks.
//!
//! A hook is a URL (absolute, or relative to the application's base URL) with a method and
//! optional basic-auth credentials. POST sends the payload as JSON; GET sends it as query
//! parameters (jambonz does the same). Every request has a bounded timeout; connection
//! failures, timeouts, 429 and 5xx are retried with exponential backoff, other statuses are
//! final.
//!
//! **Delivery ids.** Each delivery (one payload to one hook) carries a fresh UUID in
//! `Verbhost-Delivery-Id`, the same on every retry of that delivery: a retried request may
//! already have been processed (a timeout does not say it was not), so a receiver that must
//! act once dedupes by this id.
//!
//! **Signatures.** With a secret configured, each request is signed:
//! `<signature-header>: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<signed>">` (the scheme
//! jambonz and Stripe use, so existing verifiers work). `<signed>` is what carries the
//! payload: the raw body of a POST, and the exact query string of a GET (what follows the
//! `?` in the request line, as sent, without the `?`).
//!
//! **Answers.** Only a 2xx answer's body is read, and at most `max_response_bytes` of it: a
//! larger `Content-Length` is refused before the body is read, and a body without one is
//! read with a running count and abandoned once past the cap (see [`AnswerTooLarge`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use reqwest::{Client, Method, Response, StatusCode, Url};
use serde_json::Value;
use sha2::Sha256;
use verbhost_runtime::Webhook;

use crate::config::WebhookConfig;

/// Which hook of an application a request is for (metrics label and log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HookKind {
    /// The call hook that returns the application.
    Call,
    /// A verb's eventHook.
    Event,
    /// A verb's actionHook.
    Action,
}

impl HookKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HookKind::Call => "callHook",
            HookKind::Event => "eventHook",
            HookKind::Action => "actionHook",
        }
    }
}

/// Why a hook could not be delivered.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum HookError {
    /// The URL is relative and the application has no base URL, or it does not parse.
    #[error("bad hook URL {url:?}: {why}")]
    Url { url: String, why: String },
    /// The method is not GET or POST.
    #[error("unsupported hook method {0:?}")]
    Method(String),
    /// Every attempt failed; the last failure is given.
    #[error("{url}: {last} (after {attempts} attempt(s))")]
    Failed {
        url: String,
        delivery_id: String,
        attempts: u32,
        last: String,
    },
}

/// The header that carries a delivery's id.
pub(crate) const DELIVERY_ID_HEADER: &str = "Verbhost-Delivery-Id";

/// A 2xx answer whose body is over `webhooks.max_response_bytes`. The hook was delivered
/// (it is not retried), but its answer is not used: a call hook's call is refused, an
/// actionHook's answer does not replace the application, an eventHook's is ignored anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AnswerTooLarge {
    /// The answer's `Content-Length` is over the cap; no byte of the body was read.
    #[error(
        "the answer declares {declared} bytes (Content-Length), over webhooks.max_response_bytes \
         ({limit} bytes); not read"
    )]
    Declared { declared: u64, limit: u64 },
    /// The answer had no `Content-Length` (or understated it) and its body passed the cap;
    /// it was read no further.
    #[error("the answer passed webhooks.max_response_bytes ({limit} bytes); read no further")]
    Streamed { limit: u64 },
}

impl AnswerTooLarge {
    /// The `cause` label of `verbhost_hook_answers_too_large_total`.
    pub(crate) fn cause(self) -> &'static str {
        match self {
            AnswerTooLarge::Declared { .. } => "content_length",
            AnswerTooLarge::Streamed { .. } => "body",
        }
    }
}

impl HookError {
    /// The delivery's id, when an attempt was made.
    pub(crate) fn delivery_id(&self) -> Option<&str> {
        match self {
            HookError::Failed { delivery_id, .. } => Some(delivery_id),
            HookError::Url { .. } | HookError::Method(_) => None,
        }
    }
}

/// A delivered hook's answer.
#[derive(Debug, Clone)]
pub(crate) struct Delivered {
    /// The resolved URL.
    pub(crate) url: String,
    /// The id every attempt of this delivery carried in `Verbhost-Delivery-Id`.
    pub(crate) delivery_id: String,
    /// HTTP status (2xx).
    pub(crate) status: u16,
    /// The response body, or why it was not read in full.
    pub(crate) body: Result<Vec<u8>, AnswerTooLarge>,
    /// Attempts it took.
    pub(crate) attempts: u32,
}

/// The webhook client, shared by every call.
#[derive(Debug, Clone)]
pub(crate) struct Webhooks {
    client: Client,
    config: WebhookConfig,
}

impl Webhooks {
    pub(crate) fn new(config: WebhookConfig) -> Result<Self, reqwest::Error> {
        let client = Client::builder()
            .timeout(config.timeout())
            .connect_timeout(config.timeout())
            // A redirected POST would turn into a GET and lose its payload: report 3xx instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("verbhost/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Webhooks { client, config })
    }

    /// Resolves `hook.url` against `base` (the application's URL).
    pub(crate) fn resolve(hook: &Webhook, base: Option<&Url>) -> Result<Url, HookError> {
        let bad = |why: String| HookError::Url {
            url: hook.url.clone(),
            why,
        };
        let url = match Url::parse(&hook.url) {
            Ok(url) => url,
            Err(url::ParseError::RelativeUrlWithoutBase) => match base {
                Some(base) => base.join(&hook.url).map_err(|e| bad(e.to_string()))?,
                None => {
                    return Err(bad(
                        "relative URL and the application has no base URL (set --base-url or \
                         app.base_url)"
                            .into(),
                    ));
                }
            },
            Err(e) => return Err(bad(e.to_string())),
        };
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!("scheme {} is not http or https", url.scheme())));
        }
        Ok(url)
    }

    /// Delivers `payload` to `hook`, retrying as configured. Every attempt carries the same
    /// fresh delivery id.
    pub(crate) async fn deliver(
        &self,
        hook: &Webhook,
        base: Option<&Url>,
        payload: &Value,
    ) -> Result<Delivered, HookError> {
        let mut url = Self::resolve(hook, base)?;
        let method = match hook.method.to_ascii_uppercase().as_str() {
            "POST" => Method::POST,
            "GET" => Method::GET,
            other => return Err(HookError::Method(other.to_owned())),
        };
        let body = if method == Method::GET {
            if let Value::Object(map) = payload {
                let mut query = url.query_pairs_mut();
                for (key, value) in map {
                    match value {
                        Value::String(s) => query.append_pair(key, s),
                        other => query.append_pair(key, &other.to_string()),
                    };
                }
            }
            Vec::new()
        } else {
            serde_json::to_vec(payload).unwrap_or_default()
        };
        let request = Request {
            method,
            hook,
            delivery_id: uuid::Uuid::new_v4().to_string(),
            body,
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let last = match self.attempt(&request, &url).await {
                Ok((status, body)) if status.is_success() => {
                    return Ok(Delivered {
                        url: url.to_string(),
                        delivery_id: request.delivery_id,
                        status: status.as_u16(),
                        body,
                        attempts,
                    });
                }
                Ok((status, _)) => {
                    let retry = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
                    let why = format!("HTTP {status}");
                    if !retry {
                        return Err(HookError::Failed {
                            url: url.to_string(),
                            delivery_id: request.delivery_id,
                            attempts,
                            last: why,
                        });
                    }
                    why
                }
                Err(err) => describe(&err),
            };
            if attempts > self.config.retries {
                return Err(HookError::Failed {
                    url: url.to_string(),
                    delivery_id: request.delivery_id,
                    attempts,
                    last,
                });
            }
            tracing::debug!(%url, attempts, delivery_id = %request.delivery_id, error = %last, "hook attempt failed; retrying");
            tokio::time::sleep(self.config.backoff(attempts)).await;
        }
    }

    /// One attempt: the status, and for a 2xx the body (capped).
    async fn attempt(
        &self,
        request: &Request<'_>,
        url: &Url,
    ) -> Result<(StatusCode, Result<Vec<u8>, AnswerTooLarge>), reqwest::Error> {
        let mut builder = self
            .client
            .request(request.method.clone(), url.clone())
            .header(DELIVERY_ID_HEADER, &request.delivery_id);
        if let Some(user) = &request.hook.username {
            builder = builder.basic_auth(user, request.hook.password.as_deref());
        }
        if request.method == Method::POST {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(request.body.clone());
        }
        if let Some(secret) = &self.config.secret {
            // What carries the payload is what is signed: a GET's query, a POST's body.
            let signed = if request.method == Method::GET {
                url.query().unwrap_or_default().as_bytes()
            } else {
                &request.body
            };
            builder = builder.header(
                self.config.signature_header.as_str(),
                signature(secret, unix_now(), signed),
            );
        }
        let mut response = builder.send().await?;
        let status = response.status();
        if !status.is_success() {
            // A failure's body is never used: do not read it.
            return Ok((status, Ok(Vec::new())));
        }
        let body = read_capped(&mut response, self.config.max_response_bytes).await?;
        Ok((status, body))
    }
}

/// One delivery, as every attempt sends it.
struct Request<'a> {
    method: Method,
    hook: &'a Webhook,
    delivery_id: String,
    /// The JSON body of a POST (empty for a GET).
    body: Vec<u8>,
}

/// Reads `response`'s body, never holding more than `limit` bytes of it.
async fn read_capped(
    response: &mut Response,
    limit: u64,
) -> Result<Result<Vec<u8>, AnswerTooLarge>, reqwest::Error> {
    let declared = response.content_length();
    if let Some(declared) = declared
        && declared > limit
    {
        return Ok(Err(AnswerTooLarge::Declared { declared, limit }));
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = response.chunk().await? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Ok(Err(AnswerTooLarge::Streamed { limit }));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Ok(body))
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<signed>")>`, where `signed` is a POST's body or
/// a GET's query string.
pub(crate) fn signature(secret: &str, t: u64, signed: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(signed);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One line for a reqwest error, with its cause (reqwest's Display alone says only
/// "error sending request").
fn describe(err: &reqwest::Error) -> String {
    let what = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "connection failed".to_owned()
    } else {
        err.to_string()
    };
    let mut cause = std::error::Error::source(err);
    let mut text = what;
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The backoff before retry `n` (1-based): `backoff * 2^(n-1)`, capped at 10 s. Retry 0
/// does not exist; it gets the first retry's backoff.
pub(crate) fn backoff(base: Duration, n: u32) -> Duration {
    base.saturating_mul(1 << n.saturating_sub(1).min(16))
        .min(Duration::from_secs(10))
}

#[cfg(test)]
use verbhost_testkit as support;

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(url: &str) -> Webhook {
        Webhook {
            url: url.into(),
            method: "POST".into(),
            username: None,
            password: None,
        }
    }

    #[test]
    fn relative_hooks_resolve_against_the_base() {
        let base = Url::parse("http://app.example:3000/apps/refer/call").unwrap();
        let url = Webhooks::resolve(&hook("/action"), Some(&base)).unwrap();
        assert_eq!(url.as_str(), "http://app.example:3000/action");
        let url = Webhooks::resolve(&hook("status"), Some(&base)).unwrap();
        assert_eq!(url.as_str(), "http://app.example:3000/apps/refer/status");
        let url = Webhooks::resolve(&hook("https://other.example/x"), Some(&base)).unwrap();
        assert_eq!(url.as_str(), "https://other.example/x");
        let err = Webhooks::resolve(&hook("/action"), None).unwrap_err();
        assert!(err.to_string().contains("no base URL"), "{err}");
        let err = Webhooks::resolve(&hook("ftp://x/y"), None).unwrap_err();
        assert!(err.to_string().contains("not http"), "{err}");
    }

    #[test]
    fn signature_matches_a_known_value() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            signature("s3cret", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_millis(200);
        assert_eq!(backoff(base, 1), Duration::from_millis(200));
        assert_eq!(backoff(base, 3), Duration::from_millis(800));
        assert_eq!(backoff(base, 30), Duration::from_secs(10));
        // Retry 0 does not exist; it must not underflow into the 10 s cap (or panic).
        assert_eq!(backoff(base, 0), Duration::from_millis(200));
    }

    /// A server answering `/hook` with a 200 of `len` bytes, declared or chunked.
    async fn big_answers(len: usize, declared: bool) -> (Url, support::BigAnswers) {
        let answer = if declared {
            support::Big::Declared(len)
        } else {
            support::Big::Chunked(len)
        };
        let server = support::BigAnswers::start(vec![("/hook", vec![answer])]).await;
        (Url::parse(&server.url("/hook")).unwrap(), server)
    }

    fn capped(limit: u64) -> Webhooks {
        Webhooks::new(WebhookConfig {
            max_response_bytes: limit,
            timeout_ms: 5_000,
            ..WebhookConfig::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn an_answer_declaring_more_than_the_cap_is_refused_unread() {
        let (url, _) = big_answers(8 << 20, true).await;
        let delivered = capped(64 << 10)
            .deliver(&hook(url.as_str()), None, &serde_json::json!({}))
            .await
            .unwrap();
        assert_eq!((delivered.status, delivered.attempts), (200, 1));
        let err = delivered.body.unwrap_err();
        assert_eq!(
            err,
            AnswerTooLarge::Declared {
                declared: 8 << 20,
                limit: 64 << 10
            }
        );
        assert!(
            err.to_string()
                .contains("webhooks.max_response_bytes (65536 bytes)"),
            "{err}"
        );
        assert_eq!(err.cause(), "content_length");
    }

    #[tokio::test]
    async fn an_answer_without_a_length_is_read_up_to_the_cap_only() {
        let (url, written) = big_answers(64 << 20, false).await;
        let delivered = capped(64 << 10)
            .deliver(&hook(url.as_str()), None, &serde_json::json!({}))
            .await
            .unwrap();
        let err = delivered.body.unwrap_err();
        assert_eq!(err, AnswerTooLarge::Streamed { limit: 64 << 10 });
        assert_eq!(err.cause(), "body");
        // The host stopped reading: the server could write little more than the socket
        // buffers hold, far from the 64 MiB it had.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = written.written();
        assert!(sent < 16 << 20, "{sent} bytes were written");
        // An answer of exactly the cap is read whole, chunked or declared.
        for declared in [false, true] {
            let (url, _) = big_answers(64 << 10, declared).await;
            let delivered = capped(64 << 10)
                .deliver(&hook(url.as_str()), None, &serde_json::json!({}))
                .await
                .unwrap();
            assert_eq!(delivered.body.unwrap().len(), 64 << 10);
        }
    }
}
