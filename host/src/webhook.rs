//! Posting webhooks: the call hook, eventHooks and actionHooks.
//!
//! A hook is a URL (absolute, or relative to the application's base URL) with a method and
//! optional basic-auth credentials. POST sends the payload as JSON; GET sends it as query
//! parameters (jambonz does the same). Every request has a bounded timeout; connection
//! failures, timeouts, 429 and 5xx are retried with exponential backoff, other statuses are
//! final. With a secret configured, each request is signed:
//! `<signature-header>: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` (the scheme
//! jambonz and Stripe use, so existing verifiers work).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use reqwest::{Client, Method, StatusCode, Url};
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
        attempts: u32,
        last: String,
    },
}

/// A delivered hook's answer.
#[derive(Debug, Clone)]
pub(crate) struct Delivered {
    /// The resolved URL.
    pub(crate) url: String,
    /// HTTP status (2xx).
    pub(crate) status: u16,
    /// The response body.
    pub(crate) body: Vec<u8>,
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

    /// Delivers `payload` to `hook`, retrying as configured.
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
        let mut attempts = 0;
        loop {
            attempts += 1;
            let last = match self.attempt(&method, &url, hook, &body).await {
                Ok((status, body)) if status.is_success() => {
                    return Ok(Delivered {
                        url: url.to_string(),
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
                    attempts,
                    last,
                });
            }
            tracing::debug!(%url, attempts, error = %last, "hook attempt failed; retrying");
            tokio::time::sleep(self.config.backoff(attempts)).await;
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        hook: &Webhook,
        body: &[u8],
    ) -> Result<(StatusCode, Vec<u8>), reqwest::Error> {
        let mut request = self.client.request(method.clone(), url.clone());
        if let Some(user) = &hook.username {
            request = request.basic_auth(user, hook.password.as_deref());
        }
        if *method == Method::POST {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        if let Some(secret) = &self.config.secret {
            request = request.header(
                self.config.signature_header.as_str(),
                signature(secret, unix_now(), body),
            );
        }
        let response = request.send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        Ok((status, body.to_vec()))
    }
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub(crate) fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
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

/// The backoff before retry `n` (1-based): `backoff * 2^(n-1)`, capped at 10 s.
pub(crate) fn backoff(base: Duration, n: u32) -> Duration {
    base.saturating_mul(1 << (n - 1).min(16))
        .min(Duration::from_secs(10))
}

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
    }
}
