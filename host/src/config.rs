//! Configuration: a TOML file (`--config FILE`), then command-line flags on top.
//!
//! Every key is optional; see `verbhost.example.toml` for all of them with their defaults.
//! Unknown keys are refused with their name, so a typo does not silently fall back to a
//! default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) sip: SipConfig,
    pub(crate) app: AppConfig,
    pub(crate) plugins: PluginsConfig,
    pub(crate) webhooks: WebhookConfig,
    pub(crate) admin: AdminConfig,
    pub(crate) server: ServerConfig,
    pub(crate) log: LogConfig,
}

/// `[sip]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SipConfig {
    /// Where `serve` listens.
    pub(crate) listen: SocketAddr,
    /// `udp` or `tcp`.
    pub(crate) transport: TransportName,
    /// The domain that bare numbers in verbs (`"referTo": "+4930123"`) are placed in. When
    /// unset, the host of the far end's URI is used (the caller's domain on inbound calls,
    /// the callee's on outbound ones): the domain the REFER goes to anyway, and never one of
    /// the host's own addresses.
    pub(crate) default_domain: Option<String>,
    /// The From of calls that `call` places.
    pub(crate) from: String,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            transport: TransportName::Udp,
            default_domain: None,
            from: "sip:verbhost@127.0.0.1".into(),
        }
    }
}

/// A SIP transport by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TransportName {
    Udp,
    Tcp,
}

/// `[app]`: where the application comes from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct AppConfig {
    /// A JSON file holding the verb array.
    pub(crate) file: Option<PathBuf>,
    /// A URL POSTed the call's details, answering with the verb array.
    pub(crate) call_hook: Option<String>,
    /// The URL relative hooks resolve against when the application comes from a file (a
    /// call hook's own URL is the base of the applications it returns).
    pub(crate) base_url: Option<String>,
}

/// `[plugins]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PluginsConfig {
    /// A directory of `.wasm` plugins that add or override verbs by name.
    pub(crate) dir: Option<PathBuf>,
}

/// `[webhooks]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct WebhookConfig {
    /// Timeout of one attempt, in milliseconds.
    pub(crate) timeout_ms: u64,
    /// Retries after the first attempt (connection failures, timeouts, 429 and 5xx).
    pub(crate) retries: u32,
    /// Backoff before the first retry, in milliseconds; it doubles each time (capped at 10 s).
    pub(crate) backoff_ms: u64,
    /// HMAC-SHA256 secret; when set, every request is signed.
    pub(crate) secret: Option<String>,
    /// The header that carries the signature.
    pub(crate) signature_header: String,
    /// How long an actionHook waits for the verb's eventHooks still being delivered, so the
    /// application sees them in order; after that it is posted regardless (the eventHooks
    /// still complete in the background).
    pub(crate) event_flush_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            timeout_ms: 5_000,
            retries: 2,
            backoff_ms: 250,
            secret: None,
            signature_header: "Verbhost-Signature".into(),
            event_flush_ms: 1_000,
        }
    }
}

impl WebhookConfig {
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        crate::webhook::backoff(Duration::from_millis(self.backoff_ms), retry)
    }

    pub(crate) fn event_flush(&self) -> Duration {
        Duration::from_millis(self.event_flush_ms)
    }
}

/// `[admin]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct AdminConfig {
    /// Where `/metrics` and `/health` are served; off when unset.
    pub(crate) listen: Option<SocketAddr>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ServerConfig {
    /// On SIGTERM or SIGINT, how long calls in progress may run on before they are hung up.
    pub(crate) drain_timeout_s: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            drain_timeout_s: 30,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LogConfig {
    /// `text` or `json`.
    pub(crate) format: LogFormat,
    /// A tracing filter (`info`, `verbhost=debug,warn`, ...); `RUST_LOG` overrides it.
    pub(crate) level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Reads `path`, or the defaults when there is none.
    pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the config file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }

    pub(crate) fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_and_matches_the_defaults() {
        let example = include_str!("../../verbhost.example.toml");
        let config = Config::parse(example).unwrap();
        let defaults = Config::default();
        assert_eq!(config.webhooks.timeout_ms, defaults.webhooks.timeout_ms);
        assert_eq!(config.webhooks.retries, defaults.webhooks.retries);
        assert_eq!(
            config.server.drain_timeout_s,
            defaults.server.drain_timeout_s
        );
        assert_eq!(config.sip.listen, defaults.sip.listen);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("[webhooks]\ntimeout = 5\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `timeout`"), "{err}");
    }
}
