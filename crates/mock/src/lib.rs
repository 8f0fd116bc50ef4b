//! The mock host: run a verb plugin against a scripted call, with no network, and check what
//! it did.
//!
//! It runs the plugin in the same [`verbhost_runtime`] as production (same sandbox, limits
//! and checks); only the call is scripted. A [`Scenario`] gives the call info, the verb, the
//! answer to `send-refer`, what `on-notify` delivers and when, and the expectations: the REFER
//! the plugin asked for, the eventHook payloads in order, the completion (or the error). Time
//! is virtual, so timeouts are tested exactly and instantly.
//!
//! From a plugin's own tests:
//!
//! ```no_run
//! let reports = verbhost_mock::run_files(
//!     "target/wasm32-wasip2/release/my_plugin.wasm".as_ref(),
//!     &["tests/transfer-accepted.json".into()],
//! )
//! .expect("plugin loads");
//! for report in &reports {
//!     assert!(report.passed(), "{report}");
//! }
//! ```
//!
//! The same runs from the command line as `verbhost test PLUGIN.wasm SCENARIO.json...`.

mod call;
mod report;
pub mod scenario;

use std::path::{Path, PathBuf};

pub use call::MockCall;
pub use report::{Failure, Report, completion_json, error_kind};
pub use scenario::{Scenario, ScenarioError};
use verbhost_runtime::{Compiled, LoadError, Plugin, Run, RunError, Runtime, RuntimeConfig};

/// A runtime whose calls are scripted.
#[derive(Clone)]
pub struct MockHost {
    runtime: Runtime<MockCall>,
}

impl MockHost {
    /// A mock host with the production limits and a small instance pool.
    pub fn new() -> Result<MockHost, LoadError> {
        Self::with_config(RuntimeConfig {
            max_concurrent_runs: 16,
            ..RuntimeConfig::default()
        })
    }

    /// A mock host with the given limits.
    pub fn with_config(config: RuntimeConfig) -> Result<MockHost, LoadError> {
        Ok(MockHost {
            runtime: Runtime::new(config)?,
        })
    }

    /// A mock host on an existing runtime, usually a [`Runtime::sibling`] of the server's:
    /// it shares the engine, pool and compiled cache, so a [`Compiled`] plugin the server is
    /// about to serve can run its scenarios here first without compiling twice.
    pub fn from_runtime(runtime: Runtime<MockCall>) -> MockHost {
        MockHost { runtime }
    }

    /// The runtime the mock host runs plugins in.
    pub fn runtime(&self) -> &Runtime<MockCall> {
        &self.runtime
    }

    /// Makes a compiled plugin runnable here (see [`Runtime::instantiate`]).
    pub async fn instantiate(&self, compiled: &Compiled) -> Result<Plugin<MockCall>, LoadError> {
        self.runtime.instantiate(compiled).await
    }

    /// Loads a plugin from its bytes.
    pub async fn load(&self, wasm: &[u8]) -> Result<Plugin<MockCall>, LoadError> {
        self.runtime.load(wasm).await
    }

    /// Loads a plugin file.
    pub async fn load_file(&self, path: &Path) -> Result<Plugin<MockCall>, LoadError> {
        self.runtime.load_file(path).await
    }

    /// Runs one scenario and compares the result with its expectations.
    ///
    /// As in production, a verb is first matched and checked, and only then run: a verb the
    /// plugin's `describe()` does not list fails `no-plugin` (the server's message), and a
    /// verb the plugin's `check` refuses (or that traps it) fails with that error without
    /// running, as an application holding it is refused before any call.
    pub async fn run(&self, plugin: &Plugin<MockCall>, scenario: &Scenario) -> Report {
        let call = MockCall::new(scenario);
        let verb = scenario.verb_text();
        let run = match admit(plugin, &verb).await {
            Ok(()) => plugin.run(call, &verb, &scenario.call.to_call_info()).await,
            Err(err) => Run {
                outcome: Err(err),
                host: call,
                guest_output: String::new(),
                guest_output_dropped: 0,
                log_dropped: 0,
                cpu_time: std::time::Duration::ZERO,
            },
        };
        Report::compare(&scenario.name, &scenario.expect, &run)
    }

    /// Runs scenario files in order; a file that cannot be read or parsed is a failed report.
    pub async fn run_files(&self, plugin: &Plugin<MockCall>, files: &[PathBuf]) -> Vec<Report> {
        let mut reports = Vec::with_capacity(files.len());
        for file in files {
            match Scenario::load_file(file) {
                Ok(scenarios) => {
                    for scenario in &scenarios {
                        let mut report = self.run(plugin, scenario).await;
                        report.name = format!("{} ({})", report.name, file.display());
                        reports.push(report);
                    }
                }
                Err(err) => {
                    reports.push(Report::broken(file.display().to_string(), err.to_string()))
                }
            }
        }
        reports
    }
}

/// What the server does before a verb runs: the plugin must declare the verb, and its
/// `check` (when it has one) must accept it. A verb whose name cannot be read is left to the
/// plugin, whose error names the cause.
async fn admit(plugin: &Plugin<MockCall>, verb: &str) -> Result<(), RunError> {
    let name = verbhost_common::json::parse(verb)
        .ok()
        .and_then(|value| verbhost_common::verb::split(value).ok())
        .map(|(name, _)| name);
    if let Some(name) = name {
        let verbs = &plugin.info().verbs;
        if !verbs.contains(&name) {
            return Err(RunError::NoPlugin {
                verb: name,
                loaded: verbs.join(", "),
            });
        }
    }
    plugin.check(verb).await
}

/// Loads `plugin` and runs `scenarios` against it, blocking: the whole mock host in one call,
/// for tests that do not run their own async runtime.
pub fn run_files(plugin: &Path, scenarios: &[PathBuf]) -> Result<Vec<Report>, LoadError> {
    let executor = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| LoadError::Engine(format!("cannot start an async runtime: {e}")))?;
    executor.block_on(async {
        let host = MockHost::new()?;
        let plugin = host.load_file(plugin).await?;
        Ok(host.run_files(&plugin, scenarios).await)
    })
}
