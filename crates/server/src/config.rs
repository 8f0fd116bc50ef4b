//! Configuration: a TOML file (`--config FILE`), then command-line flags on top.
//!
//! Every key is optional; see `verbhost.example.toml` for all of them with their defaults.
//! Unknown keys are refused with their name, so a typo does not silently fall back to a
//! default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use verbhost_sip::admission::Admission;
use verbhost_sip::endpoint::EndpointConfig;
use verbhost_sip::transport::TcpLimits;

pub use crate::limits::{LimitsConfig, LimitsOverrideError, PoolConfig};

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub sip: SipConfig,
    pub app: AppConfig,
    pub plugins: PluginsConfig,
    pub limits: LimitsConfig,
    pub pool: PoolConfig,
    pub webhooks: WebhookConfig,
    pub admin: AdminConfig,
    pub server: ServerConfig,
    pub log: LogConfig,
}

/// `[sip]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// Where `serve` listens: an IP address or a host name, with a port (a name is resolved
    /// once, when the file is read).
    #[serde(deserialize_with = "de_addr")]
    pub listen: SocketAddr,
    /// `udp` or `tcp`.
    pub transport: TransportName,
    /// The domain that bare numbers in verbs (`"referTo": "+4930123"`) are placed in. When
    /// unset, the host of the far end's URI is used (the caller's domain on inbound calls,
    /// the callee's on outbound ones): the domain the REFER goes to anyway, and never one of
    /// the host's own addresses.
    pub default_domain: Option<String>,
    /// The From of calls that `call` places.
    pub from: String,
    /// An outbound proxy (`--proxy`), a SIP URI such as `sip:127.0.0.1:5060`: the calls this
    /// host places go to it with a pre-loaded Route, and stay on its path if it
    /// record-routes. Unset: straight to the target.
    pub outbound_proxy: Option<String>,
    /// Most calls in progress at once (answered calls not yet ended, plus INVITEs being
    /// answered). A new INVITE past it is answered `503` with `Retry-After` at once. 0 is
    /// unlimited.
    pub max_calls: u32,
    /// Most new calls per second (a token bucket that allows bursts of one second's worth);
    /// past it, `503` with `Retry-After`. 0 is unlimited.
    pub max_calls_per_sec: u32,
    /// An INVITE that waited longer than this (milliseconds) between the socket and the SIP
    /// core is refused `503`: the server is behind, and the calls it already took come first.
    /// 0 never sheds.
    pub max_queue_delay_ms: u64,
    /// The `Retry-After` of those 503s, in seconds.
    pub retry_after_s: u64,
    /// TCP: most connections open at once, from all peers (more are closed at once). 0 is
    /// unlimited.
    pub tcp_max_connections: u32,
    /// TCP: most connections open at once from one IP address. 0 is unlimited.
    pub tcp_max_connections_per_ip: u32,
    /// TCP: a connection on which a message stays incomplete this long (seconds) is closed,
    /// and so is one that does not take a message we send within it. 0 never times out.
    pub tcp_message_timeout_s: u64,
    /// TCP: a connection with no traffic for this long (seconds) is closed; CRLF keep-alives
    /// count as traffic. 0 never times out.
    pub tcp_idle_timeout_s: u64,
}

impl Default for SipConfig {
    fn default() -> Self {
        let admission = Admission::default();
        let tcp = TcpLimits::default();
        let secs = |d: Option<Duration>| d.map_or(0, |d| d.as_secs());
        let count = |n: Option<usize>| n.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
        SipConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            transport: TransportName::Udp,
            default_domain: None,
            from: "sip:verbhost@127.0.0.1".into(),
            outbound_proxy: None,
            max_calls: count(admission.max_calls),
            max_calls_per_sec: admission.max_calls_per_sec.unwrap_or(0),
            max_queue_delay_ms: admission
                .max_queue_delay
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            retry_after_s: admission.retry_after.as_secs(),
            tcp_max_connections: count(tcp.max_connections),
            tcp_max_connections_per_ip: count(tcp.max_connections_per_ip),
            tcp_message_timeout_s: secs(tcp.message_timeout),
            tcp_idle_timeout_s: secs(tcp.idle_timeout),
        }
    }
}

impl SipConfig {
    /// The SIP endpoint's settings for `bind` on `transport`, with the limits above (0 turns
    /// a limit off).
    pub fn endpoint(&self, bind: SocketAddr, transport: TransportName) -> EndpointConfig {
        let count = |n: u32| (n > 0).then_some(n as usize);
        let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        let mut config = match transport {
            TransportName::Udp => EndpointConfig::udp(bind),
            TransportName::Tcp => EndpointConfig::tcp(bind),
        };
        config.admission = Admission {
            max_calls: count(self.max_calls),
            max_calls_per_sec: (self.max_calls_per_sec > 0).then_some(self.max_calls_per_sec),
            max_queue_delay: (self.max_queue_delay_ms > 0)
                .then(|| Duration::from_millis(self.max_queue_delay_ms)),
            retry_after: Duration::from_secs(self.retry_after_s.max(1)),
        };
        config.outbound_proxy = self.outbound_proxy.clone();
        config.tcp = TcpLimits {
            max_connections: count(self.tcp_max_connections),
            max_connections_per_ip: count(self.tcp_max_connections_per_ip),
            message_timeout: secs(self.tcp_message_timeout_s),
            idle_timeout: secs(self.tcp_idle_timeout_s),
        };
        config
    }
}

/// A SIP transport by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportName {
    Udp,
    Tcp,
}

/// `[app]`: where the application comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    /// A JSON file holding the verb array.
    pub file: Option<PathBuf>,
    /// A URL POSTed the call's details, answering with the verb array.
    pub call_hook: Option<String>,
    /// The URL relative hooks resolve against when the application comes from a file (a
    /// call hook's own URL is the base of the applications it returns).
    pub base_url: Option<String>,
}

impl AppConfig {
    /// The parsed `base_url`, when one is set.
    pub fn base_url(&self) -> Result<Option<url::Url>, ConfigError> {
        self.base_url
            .as_deref()
            .map(|value| {
                url::Url::parse(value).map_err(|source| ConfigError::BaseUrl {
                    value: value.to_owned(),
                    source,
                })
            })
            .transpose()
    }
}

/// `[plugins]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// A directory of `.wasm` plugins that add or override verbs by name. `NAME.wasm` may
    /// have its own mock-host scenarios in `NAME.scenarios/*.json`, which every new version
    /// must pass before it serves a call.
    pub dir: Option<PathBuf>,
    /// Watch `dir` and swap in new, changed and removed plugins while calls run.
    pub watch: bool,
    /// A file that is written without being closed or renamed into place is loaded once it
    /// has been quiet this long (milliseconds).
    pub quiet_ms: u64,
    /// Where compiled plugins are cached, keyed by the file's SHA-256 and the engine's
    /// build, so a restart or a swap back does not compile again. Default: `.cache` in `dir`,
    /// or the user's cache directory without a plugin directory. Only verbhost should be able
    /// to write it: a cached entry is trusted native code.
    pub cache_dir: Option<PathBuf>,
    /// Compile without the cache.
    pub no_cache: bool,
    /// Run each new version's own scenarios (`NAME.scenarios/*.json`) before it is swapped in.
    pub scenarios: bool,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            dir: None,
            watch: true,
            quiet_ms: 500,
            cache_dir: None,
            no_cache: false,
            scenarios: true,
        }
    }
}

impl PluginsConfig {
    /// The cache directory in force, if any: `cache_dir`, else `.cache` in the plugin
    /// directory, else the user's cache directory (`$XDG_CACHE_HOME/verbhost` or
    /// `~/.cache/verbhost`), so that even the built-in plugin is not compiled again at every
    /// start.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        self.cache_dir
            .clone()
            .or_else(|| self.dir.as_ref().map(|dir| dir.join(".cache")))
            .or_else(|| {
                let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty());
                let base = xdg.map(PathBuf::from).or_else(|| {
                    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache"))
                })?;
                Some(base.join("verbhost"))
            })
    }
}

/// `[webhooks]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Timeout of one attempt, in milliseconds.
    pub timeout_ms: u64,
    /// Retries after the first attempt (connection failures, timeouts, 429 and 5xx).
    pub retries: u32,
    /// Backoff before the first retry, in milliseconds; it doubles each time (capped at 10 s).
    pub backoff_ms: u64,
    /// HMAC-SHA256 secret; when set, every request is signed.
    pub secret: Option<String>,
    /// The header that carries the signature.
    pub signature_header: String,
    /// How long an actionHook waits for the verb's eventHooks still being delivered, so the
    /// application sees them in order; after that it is posted regardless (the eventHooks
    /// still complete in the background).
    pub event_flush_ms: u64,
    /// Largest answer body read from a hook, in bytes. A larger `Content-Length` is refused
    /// before the body is read, and a body without one is read only up to this many bytes.
    /// A call hook answering more refuses the call; an actionHook's answer is ignored (the
    /// verb's result stands); an eventHook's answer is ignored anyway.
    pub max_response_bytes: u64,
    /// Once a call has ended, how long its eventHooks still queued or in flight may hold it
    /// (and a shutdown drain) before they are abandoned and counted, in milliseconds.
    pub event_drain_ms: u64,
    /// eventHooks one call may have queued or in flight at once; more are dropped and
    /// counted (a slow eventHook URL cannot grow a call's queue without bound).
    pub max_queued_events: u32,
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
            max_response_bytes: 256 << 10,
            event_drain_ms: 15_000,
            max_queued_events: 64,
        }
    }
}

impl WebhookConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn backoff(&self, retry: u32) -> Duration {
        crate::webhook::backoff(Duration::from_millis(self.backoff_ms), retry)
    }

    pub fn event_flush(&self) -> Duration {
        Duration::from_millis(self.event_flush_ms)
    }

    /// `event_drain_ms` as a duration.
    pub fn event_drain(&self) -> Duration {
        Duration::from_millis(self.event_drain_ms)
    }
}

/// `[admin]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin API (`/metrics`, `/health`, `/plugins`) is served; off when unset. An
    /// IP address or a host name, with a port.
    #[serde(deserialize_with = "de_opt_addr")]
    pub listen: Option<SocketAddr>,
    /// The bearer token `/plugins` requires. Required when `listen` is not a loopback
    /// address. Also read from `VERBHOST_ADMIN_TOKEN`.
    pub token: Option<String>,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// On SIGTERM or SIGINT, how long calls in progress may run on before they are hung up.
    pub drain_timeout_s: u64,
    /// Verbs one call may run, counting those of every application an actionHook returned.
    /// A call that reaches it is hung up, logged and counted.
    pub max_verbs_per_call: u32,
    /// Times an actionHook may replace a call's application. One more replacement hangs the
    /// call up, logged and counted (an actionHook answering the same verb forever).
    pub max_app_replacements: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            drain_timeout_s: 30,
            max_verbs_per_call: 1_000,
            max_app_replacements: 200,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter (`info`, `verbhost=debug,warn`, ...); `RUST_LOG` overrides it.
    pub level: String,
    /// Print every SIP message sent and received on stderr, sngrep style (`--sip-trace`).
    pub sip_trace: bool,
    /// Send a copy of every SIP message sent and received, as a HEP v3 packet over UDP, to
    /// this address (a Homer capture server, `sngrep -L udp:ADDR`); `--hep`. Off when unset.
    #[serde(deserialize_with = "de_opt_addr")]
    pub hep: Option<SocketAddr>,
    /// The capture agent id in every HEP packet, which tells Homer which node captured it.
    pub hep_agent_id: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
            sip_trace: false,
            hep: None,
            hep_agent_id: 1,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Reads `path`, or the defaults when there is none.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.resolve_paths(path.parent().unwrap_or(Path::new("")));
        Ok(config)
    }

    /// Makes the file's relative paths (`app.file`, `plugins.dir`, `plugins.cache_dir`)
    /// relative to `dir`, the config file's directory, as a user writing the file expects.
    /// Flags stay relative to the working directory.
    fn resolve_paths(&mut self, dir: &Path) {
        for path in [
            self.app.file.as_mut(),
            self.plugins.dir.as_mut(),
            self.plugins.cache_dir.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
    }

    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks the values that reach the wire or the logs, after the flags are merged, so a
    /// bad one stops the command with its name instead of going out in a SIP header.
    pub fn check(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            ConfigError::LogLevel {
                value: self.log.level.clone(),
                why: e.to_string(),
            }
        })?;
        if let Some(domain) = &self.sip.default_domain {
            check_domain(domain).map_err(|why| ConfigError::DefaultDomain {
                value: domain.clone(),
                why,
            })?;
        }
        self.app.base_url()?;
        self.limits.check()?;
        if let Some(addr) = self.admin.listen
            && !addr.ip().is_loopback()
            && self.admin.token.as_deref().is_none_or(str::is_empty)
        {
            return Err(ConfigError::AdminWithoutToken(addr));
        }
        check_sip_uri(&self.sip.from).map_err(|why| ConfigError::From {
            value: self.sip.from.clone(),
            why,
        })?;
        if let Some(proxy) = &self.sip.outbound_proxy {
            check_sip_uri(proxy).map_err(|why| ConfigError::OutboundProxy {
                value: proxy.clone(),
                why,
            })?;
        }
        Ok(())
    }
}

/// A config value (from the file or its flag) that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read the config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema (the message names the key).
    #[error("config file {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// `--log-level` / `log.level` is not a tracing filter.
    #[error(
        "--log-level (log.level) {value:?} is not a log filter such as info or verbhost=debug: {why}"
    )]
    LogLevel { value: String, why: String },
    /// `--default-domain` / `sip.default_domain` is not a host.
    #[error(
        "--default-domain (sip.default_domain) {value:?} is not a domain or IP address with an optional port: {why}"
    )]
    DefaultDomain { value: String, why: &'static str },
    /// `--base-url` / `app.base_url` is not a URL.
    #[error("--base-url (app.base_url) {value:?} is not a URL")]
    BaseUrl {
        value: String,
        #[source]
        source: url::ParseError,
    },
    /// A `[limits.verbs."NAME"]` table.
    #[error(transparent)]
    LimitsOverride(#[from] LimitsOverrideError),
    /// The admin API would be reachable from other hosts with no token.
    #[error(
        "--admin (admin.listen) {0} is not a loopback address, so admin.token (or VERBHOST_ADMIN_TOKEN) must be set: anyone who can reach it could replace the plugins"
    )]
    AdminWithoutToken(SocketAddr),
    /// `--from` / `sip.from` is not a SIP URI.
    #[error("--from (sip.from) {value:?} is not a SIP URI such as sip:verbhost@example.com: {why}")]
    From { value: String, why: &'static str },
    /// `--proxy` / `sip.outbound_proxy` is not a SIP URI.
    #[error(
        "--proxy (sip.outbound_proxy) {value:?} is not a SIP URI such as sip:127.0.0.1:5060: {why}"
    )]
    OutboundProxy { value: String, why: &'static str },
}

/// A socket address that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    /// Not `HOST:PORT`.
    #[error("{value:?} is not HOST:PORT (such as 127.0.0.1:5060, [::1]:5060 or localhost:5060)")]
    Syntax { value: String },
    /// The host name did not resolve.
    #[error("the host name in {value:?} does not resolve")]
    Resolve {
        value: String,
        #[source]
        source: std::io::Error,
    },
    /// The name resolved, but to no address.
    #[error("the host name in {value:?} resolves to no address")]
    NoAddress { value: String },
}

/// `HOST:PORT` as a socket address: an IP address (`[...]` around IPv6) or a host name, which
/// is resolved now (blocking, through the system resolver). A name with several addresses
/// gives its first IPv4 one, else its first one.
pub fn resolve_addr(value: &str) -> Result<SocketAddr, AddrError> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let syntax = || AddrError::Syntax {
        value: value.to_owned(),
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(syntax)?;
    let port: u16 = port.parse().map_err(|_| syntax())?;
    if host.is_empty() || host.contains([':', '[', ']']) || host.contains(char::is_whitespace) {
        return Err(syntax());
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|source| AddrError::Resolve {
            value: value.to_owned(),
            source,
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| AddrError::NoAddress {
            value: value.to_owned(),
        })
}

/// Deserialises a [`resolve_addr`] address.
fn de_addr<'de, D: serde::Deserializer<'de>>(de: D) -> Result<SocketAddr, D::Error> {
    let value = String::deserialize(de)?;
    resolve_addr(&value).map_err(serde::de::Error::custom)
}

/// Deserialises an optional [`resolve_addr`] address.
fn de_opt_addr<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<SocketAddr>, D::Error> {
    Option::<String>::deserialize(de)?
        .map(|value| resolve_addr(&value).map_err(serde::de::Error::custom))
        .transpose()
}

/// A host (name, IPv4, or `[IPv6]`) with an optional `:port`: what goes after the `@` of a
/// SIP URI.
fn check_domain(value: &str) -> Result<(), &'static str> {
    let scheme = value
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    if matches!(scheme.as_deref(), Some("sip" | "sips" | "tel")) {
        return Err("give the domain alone, without a URI scheme");
    }
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or("an unclosed [")?;
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| "not an IPv6 address inside [ ]")?;
        match after {
            "" => (None, None),
            _ => (None, Some(after.strip_prefix(':').ok_or("text after ]")?)),
        }
    } else {
        match value.rsplit_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(value), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
            return Err("a domain is letters, digits, '-' and '.' (no spaces, no user@)");
        }
    }
    if let Some(port) = port {
        port.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or("the port is not a number from 1 to 65535")?;
    }
    Ok(())
}

/// `sip:` or `sips:`, an optional `user@`, and a host as [`check_domain`] takes it (URI
/// parameters after `;` allowed); angle brackets and a display name are not.
pub fn check_sip_uri(value: &str) -> Result<(), &'static str> {
    let rest = ["sip:", "sips:"]
        .iter()
        .find_map(|scheme| {
            value
                .get(..scheme.len())
                .filter(|p| p.eq_ignore_ascii_case(scheme))
                .map(|_| &value[scheme.len()..])
        })
        .ok_or("it does not start with sip: or sips:")?;
    let rest = rest.split(';').next().unwrap_or(rest);
    let host = match rest.rsplit_once('@') {
        Some((user, host)) => {
            if user.is_empty()
                || user
                    .contains(|c: char| c.is_whitespace() || c.is_control() || "<>\"".contains(c))
            {
                return Err("the user part is empty or has spaces, quotes or brackets");
            }
            host
        }
        None => rest,
    };
    check_domain(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(section, key)` of every line of the example that sets a key, commented out or not.
    fn example_keys(example: &str) -> std::collections::BTreeSet<(String, String)> {
        let mut section = String::new();
        let mut keys = std::collections::BTreeSet::new();
        for line in example.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
            } else if let Some((key, _)) = line.trim_start_matches(['#', ' ']).split_once('=') {
                let key = key.trim();
                if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    keys.insert((section.clone(), key.to_owned()));
                }
            }
        }
        keys
    }

    #[test]
    fn the_example_file_parses_to_the_defaults_and_shows_every_key() {
        let example = include_str!("../../../verbhost.example.toml");
        assert_eq!(Config::parse(example).unwrap(), Config::default());
        // Every key of every section, unset optional ones included (JSON keeps them as null).
        let defaults = serde_json::to_value(Config::default()).unwrap();
        let shown = example_keys(example);
        let mut missing = Vec::new();
        for (section, table) in defaults.as_object().unwrap() {
            for key in table.as_object().unwrap().keys() {
                if !shown.contains(&(section.clone(), key.clone())) {
                    missing.push(format!("[{section}] {key}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "verbhost.example.toml lacks these keys: {missing:?}"
        );
    }

    #[test]
    fn values_that_reach_the_wire_or_the_logs_are_checked_with_their_name() {
        let with = |edit: fn(&mut Config)| {
            let mut config = Config::default();
            edit(&mut config);
            config.check().map_err(|e| e.to_string())
        };
        assert_eq!(with(|_| {}), Ok(()));
        for good in [
            "carrier.example",
            "10.0.0.5",
            "pbx-1.example:5080",
            "[::1]",
            "[::1]:5070",
        ] {
            let mut config = Config::default();
            config.sip.default_domain = Some(good.into());
            assert!(config.check().is_ok(), "{good}");
        }
        for bad in [
            "bad domain",
            "sip:carrier.example",
            "a@b.example",
            "x.example:0",
            "x.example:port",
            "[::1",
            "-x.example",
            "",
        ] {
            let mut config = Config::default();
            config.sip.default_domain = Some(bad.into());
            let err = config.check().expect_err(bad).to_string();
            assert!(
                err.starts_with("--default-domain (sip.default_domain)"),
                "{err}"
            );
        }
        let err = with(|c| c.log.level = "bogus[[".into()).unwrap_err();
        assert!(
            err.starts_with("--log-level (log.level) \"bogus[[\" is not a log filter"),
            "{err}"
        );
        for bad in ["notauri", "<sip:a@b>", "sip:a b@c", "sip:", "http://x"] {
            let mut config = Config::default();
            config.sip.from = bad.into();
            let err = config.check().expect_err(bad).to_string();
            assert!(err.starts_with("--from (sip.from)"), "{err}");
        }
        for good in [
            "sip:verbhost@127.0.0.1",
            "sips:+4930@carrier.example;user=phone",
            "sip:pbx.example",
        ] {
            let mut config = Config::default();
            config.sip.from = good.into();
            assert!(config.check().is_ok(), "{good}");
        }
    }

    #[test]
    fn the_outbound_proxy_must_be_a_sip_uri_and_reaches_the_endpoint() {
        for bad in [
            "127.0.0.1:5060",
            "<sip:127.0.0.1:5060;lr>",
            "sip:",
            "udp:127.0.0.1",
        ] {
            let mut config = Config::default();
            config.sip.outbound_proxy = Some(bad.into());
            let err = config.check().expect_err(bad).to_string();
            assert!(err.starts_with("--proxy (sip.outbound_proxy)"), "{err}");
        }
        let mut config = Config::default();
        config.sip.outbound_proxy = Some("sip:127.0.0.1:5060;lr".into());
        assert!(config.check().is_ok());
        let endpoint = config
            .sip
            .endpoint("127.0.0.1:0".parse().unwrap(), TransportName::Udp);
        assert_eq!(
            endpoint.outbound_proxy.as_deref(),
            Some("sip:127.0.0.1:5060;lr")
        );
        assert_eq!(Config::default().sip.outbound_proxy, None);
    }

    #[test]
    fn an_admin_api_off_loopback_needs_a_token() {
        let mut config = Config::default();
        config.admin.listen = Some("0.0.0.0:9090".parse().unwrap());
        let err = config.check().unwrap_err().to_string();
        assert!(
            err.starts_with("--admin (admin.listen) 0.0.0.0:9090 is not a loopback address"),
            "{err}"
        );
        config.admin.token = Some(String::new());
        assert!(config.check().is_err(), "an empty token is no token");
        config.admin.token = Some("s3cret".into());
        assert!(config.check().is_ok());
        config.admin.listen = Some("127.0.0.1:9090".parse().unwrap());
        config.admin.token = None;
        assert!(config.check().is_ok(), "loopback needs no token");
    }

    #[test]
    fn addresses_take_host_names_and_refuse_what_is_not_host_port() {
        assert_eq!(
            resolve_addr("127.0.0.1:5060").unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 5060))
        );
        assert_eq!(resolve_addr("[::1]:5070").unwrap().port(), 5070);
        // A name resolves, to its IPv4 address first.
        assert_eq!(
            resolve_addr("localhost:5060").unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 5060))
        );
        for bad in [
            "localhost",
            "localhost:",
            ":5060",
            "a b:5060",
            "::1:5060",
            "x:99999",
        ] {
            let err = resolve_addr(bad).expect_err(bad);
            assert!(matches!(err, AddrError::Syntax { .. }), "{bad}: {err}");
        }
        let err = resolve_addr("no-such-host.invalid:5060").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the host name in \"no-such-host.invalid:5060\" does not resolve"),
            "{err}"
        );
        // In the file too, with the key named.
        let config =
            Config::parse("[sip]\nlisten = \"localhost:5080\"\n[log]\nhep = \"localhost:9060\"\n")
                .unwrap();
        assert_eq!(config.sip.listen, SocketAddr::from(([127, 0, 0, 1], 5080)));
        assert_eq!(
            config.log.hep,
            Some(SocketAddr::from(([127, 0, 0, 1], 9060)))
        );
        let err = Config::parse("[admin]\nlisten = \"9090\"\n").unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
        assert!(err.to_string().contains("is not HOST:PORT"), "{err}");
    }

    #[test]
    fn relative_paths_in_the_file_are_relative_to_its_directory() {
        let dir = std::env::temp_dir().join(format!("verbhost-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("verbhost.toml");
        std::fs::write(
            &file,
            "[app]\nfile = \"app.json\"\n[plugins]\ndir = \"plugins\"\ncache_dir = \"/var/cache/v\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&file)).unwrap();
        assert_eq!(config.app.file, Some(dir.join("app.json")));
        assert_eq!(config.plugins.dir, Some(dir.join("plugins")));
        assert_eq!(
            config.plugins.cache_dir,
            Some(PathBuf::from("/var/cache/v"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("[webhooks]\ntimeout = 5\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `timeout`"), "{err}");
    }
}
