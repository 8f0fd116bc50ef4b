//! What a plugin can ask of the host, and the per-run state behind it.

use std::future::Future;
use std::time::Duration;

use serde_json::{Map, Value};
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::verbhost::plugin::{host, sip, types};
use crate::config::RunLimits;
use crate::error::TrapKind;
use crate::meter::CpuMeter;
use crate::output::OutputTail;
use crate::{Level, NotifyError, ReferError, ReferEvent, ReferRequest, ReferResponse, Webhook};

/// The call a plugin runs on, as the embedder provides it: the real SIP dialog in
/// production, a script in the mock host.
///
/// The runtime checks what the guest passes before it calls these (header rules, payload
/// shape and size, limits), so an implementation only sees well-formed requests.
pub trait CallHost: Send + 'static {
    /// Sends a REFER in the call's dialog and resolves with its final response.
    fn send_refer(
        &mut self,
        request: ReferRequest,
    ) -> impl Future<Output = Result<ReferResponse, ReferError>> + Send;

    /// Resolves with the next event of REFER `refer_id`'s subscription, or
    /// [`ReferEvent::TimedOut`] after `timeout`.
    fn on_notify(
        &mut self,
        refer_id: u32,
        timeout: Duration,
    ) -> impl Future<Output = Result<ReferEvent, NotifyError>> + Send;

    /// Posts `payload` to the verb's eventHook, in the background: it must not block.
    fn emit_event(&mut self, hook: Webhook, payload: Map<String, Value>);

    /// Writes one line of the plugin's log.
    fn log(&mut self, level: Level, message: &str);

    /// Milliseconds since the run started.
    fn clock_ms(&mut self) -> u64;
}

/// Store data of one run.
pub(crate) struct State<H> {
    /// The call; `None` while the plugin is described at load or checks a verb, when it may
    /// not call the host.
    pub(crate) host: Option<H>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: Limits,
    /// The guest's stdout and stderr, the last `max_guest_output_bytes` of them.
    pub(crate) guest_output: OutputTail,
    pub(crate) meter: CpuMeter,
    bounds: Bounds,
    host_calls: u32,
    refers: u32,
    events: u32,
    log_bytes: usize,
    log_dropped: usize,
}

/// The per-run bounds the host functions enforce.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    max_host_calls: u32,
    max_refers: u32,
    max_payload_bytes: usize,
    max_events: u32,
    max_log_bytes: usize,
}

/// The store's resource limiter: wasmtime's [`StoreLimits`] for instance, table and memory
/// counts, and our own memory size check, whose refusal is a trap that names the limit and is
/// recorded here, so the trap is classified without reading wasmtime's message.
pub(crate) struct Limits {
    counts: StoreLimits,
    max_memory_bytes: usize,
    /// Set when a memory growth (or a memory's initial size) was refused.
    pub(crate) memory_refused: bool,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            self.memory_refused = true;
            return Err(wasmtime::Error::new(BoundExceeded {
                kind: TrapKind::Memory,
                what: format!(
                    "the guest tried to grow a memory to {desired} bytes, more than the limit of \
                     {} bytes",
                    self.max_memory_bytes
                ),
            }));
        }
        self.counts.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.counts.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.counts.instances()
    }

    fn tables(&self) -> usize {
        self.counts.tables()
    }

    fn memories(&self) -> usize {
        self.counts.memories()
    }
}

/// The error a trap carries when a bound is exceeded, so it can be classified afterwards.
#[derive(Debug)]
pub(crate) struct BoundExceeded {
    pub(crate) kind: TrapKind,
    pub(crate) what: String,
}

impl std::fmt::Display for BoundExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for BoundExceeded {}

/// The most core instances, memories and tables one store may create: one plugin instance's
/// share of the pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreCounts {
    pub(crate) instances: u32,
    pub(crate) memories: u32,
    pub(crate) tables: u32,
}

impl<H: CallHost> State<H> {
    pub(crate) fn new(
        host: Option<H>,
        config: &RunLimits,
        counts: StoreCounts,
        epoch_tick: Duration,
    ) -> Self {
        let guest_output = OutputTail::new(config.max_guest_output_bytes);
        let wasi = WasiCtx::builder()
            .stdout(guest_output.clone())
            .stderr(guest_output.clone())
            // Only the insecure interfaces are grantable (HashMap seeding); make them
            // deterministic so a run replays identically.
            .insecure_random_seed(0)
            .build();
        State {
            host,
            wasi,
            table: ResourceTable::new(),
            limits: Limits {
                counts: wasmtime::StoreLimitsBuilder::new()
                    .instances(counts.instances as usize)
                    .tables(counts.tables as usize)
                    .memories(counts.memories as usize)
                    .trap_on_grow_failure(true)
                    .build(),
                max_memory_bytes: config.max_memory_bytes,
                memory_refused: false,
            },
            guest_output,
            meter: CpuMeter::new(config.cpu_budget(), epoch_tick),
            bounds: Bounds {
                max_host_calls: config.max_host_calls,
                max_refers: config.max_refers,
                max_payload_bytes: config.max_payload_bytes,
                max_events: config.max_events,
                max_log_bytes: config.max_log_bytes,
            },
            host_calls: 0,
            refers: 0,
            events: 0,
            log_bytes: 0,
            log_dropped: 0,
        }
    }

    /// Counts a host call; traps once the run has made too many, or when there is no call
    /// (during `describe` or `check`).
    fn count_call(&mut self) -> wasmtime::Result<()> {
        self.host_calls += 1;
        if self.host_calls > self.bounds.max_host_calls {
            return Err(wasmtime::Error::new(BoundExceeded {
                kind: TrapKind::HostCalls,
                what: format!("more than {} host calls", self.bounds.max_host_calls),
            }));
        }
        if self.host.is_none() {
            return Err(no_host());
        }
        Ok(())
    }

    /// Counts a host call and returns the call host (see [`State::count_call`]).
    fn call(&mut self) -> wasmtime::Result<&mut H> {
        self.count_call()?;
        self.host.as_mut().ok_or_else(no_host)
    }

    /// [`State::call`] for an async host call, which also needs the CPU meter to pause it.
    fn parking_call(&mut self) -> wasmtime::Result<(&mut H, &mut CpuMeter)> {
        self.count_call()?;
        let host = self.host.as_mut().ok_or_else(no_host)?;
        Ok((host, &mut self.meter))
    }

    /// Bytes of the log the run dropped past its limit.
    pub(crate) fn log_dropped(&self) -> usize {
        self.log_dropped
    }
}

/// The error of a host call made while there is no call host (during `describe` or `check`).
fn no_host() -> wasmtime::Error {
    wasmtime::Error::new(BoundExceeded {
        kind: TrapKind::HostCalls,
        what: "describe() and check() may not call the host".into(),
    })
}

impl<H: CallHost> WasiView for State<H> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl<H: CallHost> types::Host for State<H> {}

impl<H: CallHost> host::Host for State<H> {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let room = self.bounds.max_log_bytes.saturating_sub(self.log_bytes);
        let len = message.len();
        let host = self.call()?;
        if len > room {
            self.log_dropped += len;
            return Ok(());
        }
        host.log(level, &message);
        self.log_bytes += len;
        Ok(())
    }

    fn emit_event(
        &mut self,
        hook: Webhook,
        payload: String,
    ) -> wasmtime::Result<Result<(), host::EventError>> {
        self.count_call()?;
        if self.events >= self.bounds.max_events {
            return Ok(Err(host::EventError::TooMany(self.bounds.max_events)));
        }
        let payload = match check_payload(&payload, self.bounds.max_payload_bytes) {
            Ok(payload) => payload,
            Err(PayloadError::TooLarge(limit)) => {
                return Ok(Err(host::EventError::TooLarge(limit)));
            }
            Err(PayloadError::Invalid(why)) => {
                return Ok(Err(host::EventError::InvalidPayload(why)));
            }
        };
        if let Err(why) = check_hook(&hook) {
            return Ok(Err(host::EventError::InvalidPayload(format!(
                "hook: {why}"
            ))));
        }
        self.host
            .as_mut()
            .ok_or_else(no_host)?
            .emit_event(hook, payload);
        self.events += 1;
        Ok(Ok(()))
    }

    fn clock_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(self.call()?.clock_ms())
    }
}

impl<H: CallHost> sip::Host for State<H> {
    async fn send_refer(
        &mut self,
        request: ReferRequest,
    ) -> wasmtime::Result<Result<ReferResponse, ReferError>> {
        self.refers += 1;
        if self.refers > self.bounds.max_refers {
            return Err(wasmtime::Error::new(BoundExceeded {
                kind: TrapKind::Refers,
                what: format!(
                    "more than {} send-refer calls in one run (max_refers)",
                    self.bounds.max_refers
                ),
            }));
        }
        let (host, meter) = self.parking_call()?;
        if let Err(why) = check_refer(&request) {
            return Ok(Err(ReferError::Rejected(why)));
        }
        meter.pause();
        let response = host.send_refer(request).await;
        meter.resume();
        Ok(response)
    }

    async fn on_notify(
        &mut self,
        refer_id: u32,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<ReferEvent, NotifyError>> {
        let (host, meter) = self.parking_call()?;
        meter.pause();
        let event = host
            .on_notify(refer_id, Duration::from_millis(u64::from(timeout_ms)))
            .await;
        meter.resume();
        Ok(event)
    }
}

/// Why a payload is refused.
pub(crate) enum PayloadError {
    /// Larger than the limit (the limit in bytes).
    TooLarge(u32),
    /// Not a JSON object.
    Invalid(String),
}

/// Parses a payload a plugin produced: a JSON object of at most `limit` bytes.
pub(crate) fn check_payload(
    payload: &str,
    limit: usize,
) -> Result<Map<String, Value>, PayloadError> {
    if payload.len() > limit {
        return Err(PayloadError::TooLarge(
            u32::try_from(limit).unwrap_or(u32::MAX),
        ));
    }
    match serde_json::from_str(payload) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(PayloadError::Invalid("a JSON object is required".into())),
        Err(err) => Err(PayloadError::Invalid(err.to_string())),
    }
}

/// Checks a webhook a plugin produced.
pub(crate) fn check_hook(hook: &Webhook) -> Result<(), String> {
    if hook.url.is_empty() || hook.url.len() > 4096 {
        return Err("the URL is empty or longer than 4096 bytes".into());
    }
    if hook
        .url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "the URL {:?} contains white space or control characters",
            hook.url
        ));
    }
    if !matches!(hook.method.as_str(), "GET" | "POST") {
        return Err(format!("method {:?} is not GET or POST", hook.method));
    }
    Ok(())
}

/// The host's own check of a REFER request: the guest is not trusted to have used the SDK.
fn check_refer(request: &ReferRequest) -> Result<(), String> {
    use verbhost_common::headers::{check_custom, check_value};
    check_value("Refer-To", &request.refer_to).map_err(|e| e.to_string())?;
    if request.refer_to.trim().is_empty() {
        return Err("Refer-To is empty".into());
    }
    if let Some(by) = &request.referred_by {
        check_value("Referred-By", by).map_err(|e| e.to_string())?;
    }
    if request.headers.len() > 64 {
        return Err(format!("{} headers, more than 64", request.headers.len()));
    }
    for header in &request.headers {
        check_custom(&header.name, &header.value).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Classifies a run's error into a trap kind, from the error's types and what the store
/// recorded, never from wasmtime's message text.
pub(crate) fn classify(err: &wasmtime::Error, memory_refused: bool) -> TrapKind {
    if let Some(bound) = err.downcast_ref::<BoundExceeded>() {
        return bound.kind;
    }
    if let Some(trap) = err.downcast_ref::<Trap>() {
        return match trap {
            Trap::StackOverflow => TrapKind::StackOverflow,
            Trap::UnreachableCodeReached => TrapKind::Panic,
            Trap::Interrupt => TrapKind::CpuBudget,
            _ => TrapKind::Other,
        };
    }
    if memory_refused {
        return TrapKind::Memory;
    }
    if is_hostcall_fuel_exhausted(err) {
        return TrapKind::HostCalls;
    }
    TrapKind::Other
}

/// True when the guest passed the host more bytes in one call than the store's hostcall fuel
/// allows. wasmtime 48 reports that with a private unit struct, `HostcallFuelExhausted`
/// (`component/func/options.rs`), which cannot be downcast: its derived `Debug`, the type's
/// name, is the most stable thing to match. The sandbox test
/// `a_host_call_argument_larger_than_the_host_accepts_is_a_host_call_trap` pins it.
pub(crate) fn is_hostcall_fuel_exhausted(err: &wasmtime::Error) -> bool {
    err.chain()
        .any(|cause| format!("{cause:?}") == "HostcallFuelExhausted")
}
