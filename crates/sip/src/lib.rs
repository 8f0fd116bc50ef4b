//! verbhost's SIP stack.
//!
//! - [`message`]: our own request/response types (rsip stays behind them);
//! - [`wire`]: framing, normalisation and parsing of untrusted bytes;
//! - [`transaction`]: RFC 3261 transactions as sans-IO state machines;
//! - [`dialog`]: dialogs and the REFER subscriptions in them, also without I/O;

pub mod dialog;
pub mod message;
pub mod transaction;
pub mod wire;
