//! Services of the host: logging, the eventHook, the clock.

#[cfg(target_arch = "wasm32")]
use crate::bindings::verbhost::plugin::host as wit;
pub use crate::bindings::verbhost::plugin::host::EventError;

use crate::{Level, Webhook};

/// Writes a log line at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    wit::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    crate::native::with_host("host::log", |host| host.log(level, message));
}

/// Logs at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Logs at info level.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Logs at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Posts a JSON object to `hook` in the background. The host adds the call identifiers; a
/// delivery failure never reaches the plugin. An error means the host refused the payload.
pub fn emit_event(hook: &Webhook, payload: &serde_json::Value) -> Result<(), EventError> {
    #[cfg(target_arch = "wasm32")]
    {
        wit::emit_event(hook, &payload.to_string())
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::native::with_host("host::emit_event", |host| {
            host.emit_event(hook, &payload.to_string())
        })
    }
}

/// Milliseconds since the verb started (virtual time under the mock host).
pub fn clock_ms() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        wit::clock_ms()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::native::with_host("host::clock_ms", |host| host.clock_ms())
    }
}

impl EventError {
    /// What the host refused, in words.
    pub fn message(&self) -> String {
        match self {
            Self::InvalidPayload(why) => format!("event payload is not a JSON object: {why}"),
            Self::TooLarge(limit) => format!("event payload is larger than {limit} bytes"),
            Self::TooMany(limit) => format!("more than {limit} events in one verb"),
        }
    }
}
