//! verbhost's SIP stack.
//!
//! - [`message`]: our own request/response types (rsip stays behind them);
//! - [`wire`]: framing, normalisation and parsing of untrusted bytes;
//! - [`transaction`]: RFC 3261 transactions as sans-IO state machines;
//! - [`dialog`]: dialogs and the REFER subscriptions in them, also without I/O;
//! - [`transport`]: UDP and TCP on tokio, with limits on TCP connections;
//! - [`trace`]: a `tracing` event for every message received, sent, dropped or refused;
//! - [`hep`]: a copy of every message sent and received, as HEP v3 packets for Homer or sngrep;
//! - [`admission`]: which new calls the endpoint takes when it is loaded;
//! - [`engine`]: the endpoint's state machine without I/O: it takes `now` and a message, an
//!   API call or its deadline, and is polled for messages to send, events and its next
//!   deadline;
//! - [`endpoint`]: the thin tokio driver around the engine: place and answer calls, REFER in
//!   them, read the subscriptions, hang up.

pub mod admission;
pub mod dialog;
pub mod endpoint;
pub mod engine;
pub mod hep;
pub mod message;
pub mod trace;
pub mod transaction;
pub mod transport;
mod wakes;
pub mod wire;
