//! verbhost's SIP stack.
//!
//! - [`message`]: our own request/response types (rsip stays behind them);
//! - [`wire`]: framing, normalisation and parsing of untrusted bytes;

pub mod message;
pub mod wire;
