//! Limits and sizing of the runtime.

use std::time::Duration;

/// How the runtime sizes its engine and bounds each run. The defaults suit a 2-core machine
/// running a few hundred concurrent calls.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Runs that may be instantiated at once (the pooling allocator's slots). A run beyond
    /// this waits for a slot.
    pub max_concurrent_runs: u32,
    /// Largest linear memory a plugin may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// Guest CPU time one run may use. Only CPU time the guest's thread actually ran is
    /// charged: time parked in host calls, queued for a worker, paused (SIGSTOP) or preempted
    /// by other threads is not. Enforced at each epoch tick.
    pub cpu_budget: Duration,
    /// Wall-clock time one run may take, waits included.
    pub wall_clock_limit: Duration,
    /// Host calls one run may make.
    pub max_host_calls: u32,
    /// Largest verb JSON accepted, in bytes.
    pub max_verb_bytes: usize,
    /// Largest actionHook or eventHook payload a plugin may produce, in bytes.
    pub max_payload_bytes: usize,
    /// Events (eventHook posts) one run may emit.
    pub max_events: u32,
    /// Log bytes one run may write through the `log` import; the rest is dropped and counted.
    pub max_log_bytes: usize,
    /// Bytes of guest stdout/stderr kept (reported with traps).
    pub max_guest_output_bytes: usize,
    /// Largest plugin file accepted, in bytes.
    pub max_plugin_bytes: usize,
    /// Interval of the epoch ticker that enforces `cpu_budget`. A stretch of guest code that
    /// no tick interrupted is charged its wall time, but at most one tick (see the runtime's
    /// CPU meter), so this also bounds what a pause can cost a short stretch.
    pub epoch_tick: Duration,
    /// Bytes of each pooled linear memory kept resident (zeroed with memset) when a run ends,
    /// instead of being returned to the kernel. 0 measured fastest for the sip:refer plugin:
    /// zeroing 1 MiB per run cost about 9 us, more than the page faults it saves.
    pub memory_keep_resident: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_concurrent_runs: 128,
            max_memory_bytes: 32 << 20,
            cpu_budget: Duration::from_millis(100),
            wall_clock_limit: Duration::from_secs(3600),
            max_host_calls: 10_000,
            max_verb_bytes: 1 << 20,
            max_payload_bytes: 1 << 20,
            max_events: 1_000,
            max_log_bytes: 64 << 10,
            max_guest_output_bytes: 4 << 10,
            max_plugin_bytes: 32 << 20,
            epoch_tick: Duration::from_millis(10),
            memory_keep_resident: 0,
        }
    }
}
