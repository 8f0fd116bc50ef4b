//! Loopback parties for testing verbhost and its plugins, shared by `verbhost demo` and the
//! test suites so each exists once.
//!
//! - [`Receiver`]: the application's web server. A real HTTP server on `127.0.0.1:0` that
//!   records every request in arrival order ([`Hit`]) and answers each path with scripted
//!   [`Reply`]s (status, body, delay). Point an application's `actionHook` / `eventHook` (or
//!   the call hook) at [`Receiver::url`], then assert on [`Receiver::wait_for`].
//! - [`BigAnswers`]: a bare HTTP/1.1 server for answers too big to build in memory (declared
//!   or chunked), to test the host's response-size bounds.
//! - [`Transferee`] and [`TransferTarget`]: scripted SIP user agents over UDP on
//!   `127.0.0.1:0`, "bob" and "carol" of a transfer. Bob answers verbhost's call, accepts its
//!   REFER (202), sends `NOTIFY (100 Trying)`, calls carol and reports her answers in NOTIFYs,
//!   then answers verbhost's BYE and hangs up carol. Carol rings for 300 ms and answers.
//!   Each records what it sent and received ([`Seen`]), so a test can assert on the SIP
//!   ladder and the demo can draw it.
//!
//! A test uses it as a dev-dependency (`verbhost-testkit.workspace = true` under
//! `[dev-dependencies]`) and imports what it needs, e.g. `use verbhost_testkit::Receiver;`.
//! Only `verbhost demo` uses it outside tests; the server library never depends on it.
//!
//! A whole `sip:refer` transfer without sipp:
//!
//! ```no_run
//! # async fn demo() -> Result<(), verbhost_testkit::Error> {
//! use std::time::Duration;
//! use verbhost_testkit::{Receiver, TransferTarget, Transferee};
//!
//! let hooks = Receiver::try_start().await?;
//! let carol = TransferTarget::start().await?;
//! let mut bob = Transferee::start().await?;
//! let application = format!(
//!     r#"[{{"verb": "sip:refer", "referTo": "{}", "actionHook": "{}", "eventHook": "{}"}}]"#,
//!     carol.uri(),
//!     hooks.url("/action"),
//!     hooks.url("/event"),
//! );
//! // ... have verbhost call `bob.uri()` and run `application` on the call ...
//! bob.finished(Duration::from_secs(5)).await;
//! for hit in hooks.hits() {
//!     println!("{} {} {}", hit.method, hit.path, hit.json);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Everything binds loopback only and every wait is bounded. The parties live as long as
//! their handles (or, for [`Receiver`], the tokio runtime): dropping a peer stops it.

mod peers;
mod webhooks;

pub use peers::{Direction, Seen, TransferTarget, Transferee};
pub use webhooks::{Big, BigAnswers, Hit, Receiver, Reply};

/// Why a test party could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Its socket could not be bound on 127.0.0.1 (or its address read back).
    #[error("cannot bind the {party} on 127.0.0.1: {source}")]
    Bind {
        /// Which party: "webhook receiver", "transferee", ...
        party: &'static str,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

/// Locks `mutex`, also after a panic elsewhere poisoned it (the records stay readable).
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
