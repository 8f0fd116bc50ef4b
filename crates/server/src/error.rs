//! Why the server (or a command built on it) cannot start or cannot take an application.

use std::net::SocketAddr;
use std::path::PathBuf;

use verbhost_runtime::LoadError;

use crate::app::AppError;
use crate::config::ConfigError;

/// Why the server cannot start, or an application cannot be used. Every variant names the
/// file, address or key at fault; the cause is its [`source`](std::error::Error::source), so
/// print the chain (`{:#}` with anyhow) to see both once.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The config file or a value in it.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The wasm engine could not be built.
    #[error("cannot start the plugin runtime")]
    Runtime(#[source] LoadError),
    /// The plugin that ships inside the binary does not load (a broken build).
    #[error("the built-in sip:refer plugin does not load")]
    Builtin(#[source] LoadError),
    /// `plugins.dir` cannot be listed.
    #[error("cannot read the plugin directory {}", dir.display())]
    PluginDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A plugin file does not load.
    #[error("plugin {}", path.display())]
    Plugin {
        path: PathBuf,
        #[source]
        source: LoadError,
    },
    /// Neither an application file nor a call hook is configured.
    #[error("no application: give --app FILE or --call-hook URL (app.file or app.call_hook)")]
    NoApplication,
    /// Both are configured.
    #[error("give either --app or --call-hook (app.file or app.call_hook), not both")]
    TwoApplications,
    /// A configured URL does not parse.
    #[error("{what} {value:?} is not a URL")]
    Url {
        what: &'static str,
        value: String,
        #[source]
        source: url::ParseError,
    },
    /// The application file cannot be read.
    #[error("cannot read the application {}", path.display())]
    AppRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The application file is not an application.
    #[error("application {}", path.display())]
    AppInvalid {
        path: PathBuf,
        #[source]
        source: AppError,
    },
    /// A verb of the application fails its check: no plugin implements it, its plugin
    /// refuses it, or a hook URL cannot be used.
    #[error("application {}", path.display())]
    AppVerb {
        path: PathBuf,
        #[source]
        source: AppCheckError,
    },
    /// The HEP export socket cannot be opened.
    #[error("cannot open a UDP socket to send HEP to {addr} (--hep, log.hep)")]
    Hep {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The SIP address cannot be bound.
    #[error("cannot listen for SIP on {addr}")]
    SipBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The admin address cannot be bound.
    #[error("cannot listen on the admin address {addr}")]
    AdminBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client for webhooks cannot be built (TLS roots).
    #[error("cannot build the webhook client")]
    Webhooks(#[source] reqwest::Error),
}

/// A verb of an application that no loaded plugin implements.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "verb {index} ({verb}): no plugin implements it (loaded: {loaded}; add one with --plugins)"
)]
pub struct UnknownVerb {
    /// Its position in the application.
    pub index: usize,
    /// Its name.
    pub verb: String,
    /// The verbs that have a plugin, comma-separated.
    pub loaded: String,
}

/// Why an application fails its check, which runs before any of it does: at `serve --app`
/// start, in `call` before dialling, and for each application a call hook answers with before
/// the call is answered. The text names the verb's index and name, then the property and the
/// cause, e.g. `verb 0 (sip:refer): unknown property eventhook`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppCheckError {
    /// The application has more verbs than one call may run (`server.max_verbs_per_call`), so
    /// it could never finish; it is refused before any verb is checked.
    #[error(
        "the application has {verbs} verbs, more than one call may run (server.max_verbs_per_call = {limit})"
    )]
    TooLong {
        /// How many verbs it has.
        verbs: usize,
        /// `server.max_verbs_per_call`.
        limit: u32,
    },
    /// No loaded plugin implements the verb.
    #[error(transparent)]
    NoPlugin(#[from] UnknownVerb),
    /// The plugin that implements the verb refused it (its `check`), or the verb is larger
    /// than `limits.max_verb_bytes`.
    #[error("verb {index} ({verb}): {cause}")]
    Refused {
        /// Its position in the application.
        index: usize,
        /// Its name.
        verb: String,
        /// The plugin's words, the property first (`unknown property eventhook`).
        cause: String,
    },
    /// A hook of the verb cannot be delivered: not a hook, or a URL that does not resolve
    /// against the application's base URL (a relative one with no base URL).
    #[error("verb {index} ({verb}): {property}: {cause}")]
    Hook {
        /// Its position in the application.
        index: usize,
        /// Its name.
        verb: String,
        /// The hook property, e.g. `actionHook`.
        property: String,
        /// Why it cannot be used.
        cause: String,
    },
    /// The plugin's check trapped or exceeded a bound (the application is refused, since
    /// the verb would fail the same way when it runs).
    #[error("verb {index} ({verb}): the check by plugin {plugin} failed: {cause}")]
    PluginFailed {
        /// Its position in the application.
        index: usize,
        /// Its name.
        verb: String,
        /// The plugin's name and version, e.g. `misbehave 0.1.0`.
        plugin: String,
        /// The trap or the bound.
        cause: String,
    },
}
