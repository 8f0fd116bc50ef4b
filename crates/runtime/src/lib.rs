//! Runs verbhost verb plugins.
//!
//! A plugin is a WebAssembly component targeting the `verb-plugin` world of
//! `wit/plugin.wit` (`verbhost:plugin@0.1.1`). The runtime follows wasmtime's fast path: one
//! [`Runtime`] per process holds the `Engine` and a `Linker` built once; every
//! [`Plugin::run`] gets a fresh `Store`, so a trap in one verb can never affect another.
//!
//! Loading has two halves, so one compilation can serve several hosts:
//!
//! - [`Runtime::compile`] checks the size, compiles on a blocking thread (or maps the code
//!   back from the compiled cache, [`RuntimeConfig::cache_dir`]), takes the sha256 and
//!   measures what one instance takes from the instance pool, into a [`Compiled`].
//! - [`Runtime::instantiate`] checks the imports and exports, links and calls `describe()`,
//!   into a [`Plugin`]. [`Runtime::sibling`] gives a runtime for another [`CallHost`] on the
//!   same engine, pool and cache (the mock host, say, to run a new version's scenarios on the
//!   very code the server will serve). [`Runtime::load`] does both halves.
//!
//! Instances come from wasmtime's pooling allocator; where its address space cannot be
//! reserved the runtime allocates on demand instead, logs that at warn and reports it in
//! [`Runtime::allocator`]. Each run first takes room in the pool (a run slot, and the core
//! instances, memories and tables its plugin needs, [`PluginNeeds`]), so a heavy plugin's
//! runs wait for capacity instead of failing, and a run that waits longer than
//! [`RunLimits::slot_wait_ms`] ends [`RunError::Overloaded`]. A plugin that could never fit
//! is refused at load ([`LoadError::TooHeavy`]).
//!
//! The embedder supplies the call: a [`CallHost`] implementation that sends REFERs and
//! delivers NOTIFYs (the SIP stack in production, scripted answers in the mock host).
//!
//! Each run is bounded by its plugin's [`RunLimits`] (the config's `run` unless
//! [`Plugin::with_limits`] gave it its own): guest CPU time (epoch interruption; only CPU
//! time the guest's thread ran is charged, so time parked in host calls, queued, paused or
//! preempted is not), linear memory, host calls, REFERs, bytes passed in and out, log volume,
//! events and concurrent runs. A guest that exceeds a bound traps and the run ends with a
//! [`RunError`] that names the bound; the host and every other call carry on.
//!
//! [`Registry`] maps verb names to the [`Version`] serving them and swaps versions
//! atomically while calls run, with one level of rollback (see the [`registry`] module).
//!
//! WASI is linked with nothing granted: no files, environment, sockets or clocks. stdout and
//! stderr go to a small in-memory ring that keeps their last bytes (never refusing a write,
//! counting what it pushes out) and is reported with traps. Plugins may import only
//! the contract, `wasi:io`, `wasi:cli` and the insecure-random interfaces Rust's `HashMap`
//! uses (seeded deterministically); anything else is refused at load with the import named.

mod bindings;
mod cache;
mod config;
pub mod contract;
mod error;
mod host;
mod meter;
pub mod native;
mod output;
mod plugin;
mod pool;
pub mod registry;

pub use cache::{CacheStats, sha256_hex};
pub use config::{KEEP_RESIDENT_WITH_PAGEMAP_SCAN, LimitsError, RunLimits, RuntimeConfig};
pub use contract::{ContractError, ContractVersion};
pub use error::{LoadError, RunError, TrapKind};
pub use host::CallHost;
pub use plugin::{Allocator, Compiled, Outcome, Plugin, Run, Runtime};
pub use pool::PluginNeeds;
pub use registry::{Origin, Registry, RollbackError, Swap, Version, VersionInfo, VersionRef};

pub use bindings::exports::verbhost::plugin::verb::{PluginInfo, VerbError};
pub use bindings::verbhost::plugin::sip::{
    Notify, NotifyError, ReferError, ReferEvent, ReferRequest, ReferResponse, SipfragStatus,
    SubscriptionState, SubscriptionStatus,
};
pub use bindings::verbhost::plugin::types::{
    CallInfo, Direction, Header, Identity, Level, Webhook,
};

/// The contract version this host implements. Plugins built against `0.1.0` or `0.1.1`, or a
/// later `0.1.x` that uses nothing this host lacks, load; [`contract`] has the rules and the
/// checks.
pub const CONTRACT_VERSION: &str = "0.1.1";

/// Builds the contract's view of a NOTIFY from its raw parts, exactly as every host does:
/// the `Subscription-State` header parsed, and the sipfrag status line read when the
/// Content-Type is `message/sipfrag` (in any letter case, with any parameters).
pub fn notify_from_parts(
    subscription_state: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Notify {
    use verbhost_common::{sipfrag, subscription};
    let state = subscription_state
        .and_then(subscription::parse)
        .map(|s| SubscriptionState {
            status: match s.status {
                subscription::Status::Active => SubscriptionStatus::Active,
                subscription::Status::Pending => SubscriptionStatus::Pending,
                subscription::Status::Terminated => SubscriptionStatus::Terminated,
            },
            expires: s.expires,
            reason: s.reason,
        });
    let sipfrag = content_type
        .filter(|ct| sipfrag::is_sipfrag_content_type(ct))
        .and_then(|_| sipfrag::parse_status_line(&body))
        .map(|line| SipfragStatus {
            code: line.code,
            reason: line.reason,
        });
    Notify {
        state,
        content_type: content_type.map(str::to_owned),
        body,
        sipfrag,
    }
}
