//! The verbhost feature server, as a library.
//!
//! [`Server::builder`] starts a server from a [`Config`]: it loads the plugins (the built-in
//! `sip:refer` and `plugins.dir`), reads the application (a file, or a call hook asked per
//! call), binds SIP and the admin API, and runs each inbound call's application through the
//! plugins, posting webhooks as jambonz does. [`Dialer`] is the outbound half: place one call
//! and run an application on it. The `verbhost` binary is a thin command line over these; tests
//! and benchmarks start a real server in-process on port 0.
//!
//! Inside, one job per module: [`config`] (the TOML file), [`app`] (applications), `session`
//! (one call's verbs, hooks and end), `bridge` (what a plugin's `send-refer` and `on-notify`
//! do on a real SIP call), `webhook` (delivery, signing, retries), `plugins` (verb name to
//! plugin), `metrics` and `admin` (the HTTP API).

mod admin;
pub mod app;
mod bridge;
pub mod config;
mod error;
mod limits;
mod metrics;
mod native;
mod outbound;
mod plugins;
mod server;
mod session;
mod watch;
mod webhook;

pub use config::Config;
pub use error::{AppCheckError, ServerError, UnknownVerb};
pub use outbound::{Dialer, signalling_sdp};
pub use server::{Server, ServerBuilder, ServerHandle, hep_capture};
pub use session::{Journal, Summary};
