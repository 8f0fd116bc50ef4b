//! Errors of loading and running plugins.

use std::time::Duration;

use crate::VerbError;
use crate::config::LimitsError;
use crate::contract::ContractError;

/// Why the runtime could not start or a plugin could not be loaded. A failed load changes
/// nothing: a plugin already loaded keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The engine, linker or epoch ticker could not be set up.
    #[error("{0}")]
    Engine(String),
    /// The file could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The plugin is larger than the runtime accepts.
    #[error("plugin is {len} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not a WebAssembly component.
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The component imports something the sandbox does not grant.
    #[error("plugin imports {import}, which verbhost does not grant: {why}")]
    ForbiddenImport {
        /// The import's name.
        import: String,
        /// What to do instead.
        why: &'static str,
    },
    /// The component is built for a contract version this host does not run, or is not a
    /// verbhost plugin at all; the message names its version and the ones this host supports.
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// The component's imports or exports do not type-check against the contract.
    #[error("plugin does not fit the contract: {0}")]
    Link(String),
    /// `describe` trapped or returned nonsense.
    #[error("plugin failed its load check: {0}")]
    Describe(String),
    /// One instance of the plugin needs more of the instance pool than one plugin may have,
    /// so none of its runs could ever be instantiated.
    #[error("plugin needs {needs} {resource} per instance, more than the limit of {limit} ({key})")]
    TooHeavy {
        /// What it needs: "core instances", "memories" or "tables".
        resource: &'static str,
        /// How many one instance needs.
        needs: u32,
        /// The most one plugin may have.
        limit: u32,
        /// The runtime config key that sets the limit.
        key: &'static str,
    },
    /// The run limits in the config cannot be used.
    #[error("invalid run limits: {0}")]
    Limits(#[from] LimitsError),
}

/// What ended a run that did not complete normally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The verb JSON is larger than the runtime accepts; the plugin was not entered.
    #[error("verb is {len} bytes, more than the limit of {limit}")]
    VerbTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The plugin refused the verb or failed (its own error, returned normally).
    #[error("{}", verb_error_text(.0))]
    Verb(VerbError),
    /// The plugin trapped: a bug or an exceeded bound. The store was discarded.
    #[error("plugin trapped ({kind}): {message}{}", stderr_suffix(.guest_output))]
    Trap {
        /// Which bound or fault.
        kind: TrapKind,
        /// wasmtime's description.
        message: String,
        /// The tail of the guest's stdout/stderr (a Rust panic message lands here).
        guest_output: String,
    },
    /// The run took longer than the wall-clock limit.
    #[error("plugin ran longer than {0:?} and was stopped")]
    WallClock(Duration),
    /// The plugin completed with something the host cannot use.
    #[error("plugin returned an invalid completion: {0}")]
    InvalidCompletion(String),
    /// The plugin could not be instantiated.
    #[error("plugin could not be instantiated: {0}")]
    Instantiate(String),
    /// No plugin implements the verb, so nothing ran: a host that picks the plugin by verb
    /// name (the server's registry, the mock host with the one plugin it tests) reports this
    /// when the plugin's `describe()` does not list the verb.
    #[error("no plugin implements the verb {verb:?} (loaded: {loaded})")]
    NoPlugin {
        /// The verb's name.
        verb: String,
        /// The verbs that have a plugin, comma-separated.
        loaded: String,
    },
    /// There was no room for the run: it waited its `slot_wait` for the instance pool (or
    /// for the plugin's own `max_concurrent_runs`) and was not started. Retryable.
    #[error("overloaded: waited {waited:?} for {waited_for} and gave up (slot_wait_ms)")]
    Overloaded {
        /// What the run waited for, e.g. "38 core instances of the instance pool's 512".
        waited_for: String,
        /// How long it waited.
        waited: Duration,
    },
}

fn verb_error_text(err: &VerbError) -> String {
    match err {
        VerbError::InvalidVerb(why) => format!("invalid verb: {why}"),
        VerbError::Failed(why) => format!("verb failed: {why}"),
    }
}

fn stderr_suffix(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!("; guest output: {output}")
    }
}

/// The kind of trap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapKind {
    /// The guest used more CPU time than its budget.
    CpuBudget,
    /// The guest tried to grow its memory past the limit.
    Memory,
    /// The guest overflowed its stack.
    StackOverflow,
    /// The guest panicked or hit `unreachable`.
    Panic,
    /// The guest made more host calls than allowed, or passed the host too much data.
    HostCalls,
    /// The guest made more `send-refer` calls than [`crate::RunLimits::max_refers`].
    Refers,
    /// Any other trap (out-of-bounds access, bad conversion, ...).
    Other,
}

impl std::fmt::Display for TrapKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CpuBudget => "cpu budget exceeded",
            Self::Memory => "memory limit",
            Self::StackOverflow => "stack overflow",
            Self::Panic => "panic",
            Self::HostCalls => "host call limit",
            Self::Refers => "refer limit",
            Self::Other => "fault",
        })
    }
}
