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
    /// The application uses a verb that no plugin implements.
    #[error("application {}", path.display())]
    AppVerb {
        path: PathBuf,
        #[source]
        source: UnknownVerb,
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
