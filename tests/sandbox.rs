//! The sandbox against plugins that misbehave: every bound ends the run with an error that
//! names it, nothing panics, and other runs of the same plugin are unaffected.

use std::time::Duration;

use serde_json::{Map, Value, json};
use verbhost_mock::{MockCall, MockHost, Scenario};
use verbhost_runtime::{
    Allocator, CallHost, CallInfo, ContractError, Direction, Identity, Level, LoadError,
    NotifyError, Plugin, ReferError, ReferEvent, ReferRequest, ReferResponse, RunError, RunLimits,
    Runtime, RuntimeConfig, TrapKind, Webhook,
};

fn quiet_call() -> MockCall {
    let scenario = Scenario::from_value(json!({ "name": "none", "verb": {}, "expect": {} }))
        .expect("valid scenario");
    MockCall::new(&scenario)
}

fn call_info() -> CallInfo {
    CallInfo {
        call_sid: "sid".into(),
        sip_call_id: "cid@127.0.0.1".into(),
        direction: Direction::Inbound,
        from: "<sip:alice@127.0.0.1>;tag=1".into(),
        to: "<sip:verbhost@127.0.0.1>;tag=2".into(),
        remote_party: Identity {
            display_name: None,
            uri: "sip:alice@127.0.0.1".into(),
        },
        default_domain: "127.0.0.1".into(),
    }
}

async fn misbehave() -> Plugin<MockCall> {
    let host = MockHost::new().expect("mock host starts");
    host.load_file(verbhost_guests::MISBEHAVE.as_ref())
        .await
        .expect("the misbehave plugin loads")
}

async fn run_mode(plugin: &Plugin<MockCall>, mode: &str) -> verbhost_runtime::Run<MockCall> {
    let verb = json!({ "verb": "misbehave", "mode": mode }).to_string();
    plugin.run(quiet_call(), &verb, &call_info()).await
}

fn trap_kind<H: CallHost>(run: &verbhost_runtime::Run<H>) -> (TrapKind, String) {
    match &run.outcome {
        Err(err @ RunError::Trap { kind, .. }) => (*kind, err.to_string()),
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[tokio::test]
async fn an_endless_loop_is_stopped_by_the_cpu_budget() {
    let plugin = misbehave().await;
    let run = run_mode(&plugin, "loop").await;
    let (kind, text) = trap_kind(&run);
    assert_eq!(kind, TrapKind::CpuBudget, "{text}");
    assert!(text.contains("more than its budget of 100ms"), "{text}");
}

#[tokio::test]
async fn unbounded_allocation_hits_the_memory_limit() {
    let plugin = misbehave().await;
    let (kind, text) = trap_kind(&run_mode(&plugin, "oom").await);
    assert_eq!(kind, TrapKind::Memory, "{text}");
    assert!(
        text.contains("more than the limit of 33554432 bytes"),
        "the trap names the limit: {text}"
    );
}

#[tokio::test]
async fn a_host_call_argument_larger_than_the_host_accepts_is_a_host_call_trap() {
    let plugin = misbehave().await;
    let (kind, text) = trap_kind(&run_mode(&plugin, "huge-log").await);
    assert_eq!(kind, TrapKind::HostCalls, "{text}");
    // The default limits: 1 MiB of payload or verb, plus 64 KiB.
    assert!(
        text.contains("more than 1114112 bytes to the host in one call"),
        "the trap names the limit: {text}"
    );
}

#[tokio::test]
async fn each_event_is_one_host_call() {
    let runtime = Runtime::<MockCall>::new(RuntimeConfig {
        run: RunLimits {
            max_host_calls: 10,
            ..RunLimits::default()
        },
        ..RuntimeConfig::default()
    })
    .expect("runtime starts");
    let plugin = runtime
        .load_file(verbhost_guests::MISBEHAVE.as_ref())
        .await
        .expect("loads");
    let events = |count: u32| json!({ "verb": "misbehave", "mode": "events", "count": count });
    let run = plugin
        .run(quiet_call(), &events(10).to_string(), &call_info())
        .await;
    assert!(
        run.outcome.is_ok(),
        "10 events are 10 host calls: {:?}",
        run.outcome
    );
    assert_eq!(run.host.events_emitted.len(), 10);
    let run = plugin
        .run(quiet_call(), &events(11).to_string(), &call_info())
        .await;
    let (kind, text) = trap_kind(&run);
    assert_eq!(kind, TrapKind::HostCalls, "{text}");
    assert!(text.contains("more than 10 host calls"), "{text}");
}

#[tokio::test]
async fn unbounded_recursion_overflows_the_stack_safely() {
    let plugin = misbehave().await;
    let (kind, text) = trap_kind(&run_mode(&plugin, "stack").await);
    assert_eq!(kind, TrapKind::StackOverflow, "{text}");
}

#[tokio::test]
async fn a_panic_is_a_trap_that_carries_the_panic_message() {
    let plugin = misbehave().await;
    let run = run_mode(&plugin, "panic").await;
    let (kind, text) = trap_kind(&run);
    assert_eq!(kind, TrapKind::Panic, "{text}");
    assert!(
        run.guest_output.contains("the plugin gave up on purpose"),
        "{}",
        run.guest_output
    );
    assert!(text.contains("the plugin gave up on purpose"), "{text}");
}

#[tokio::test]
async fn a_host_call_flood_is_cut_off() {
    let plugin = misbehave().await;
    let (kind, text) = trap_kind(&run_mode(&plugin, "host-call-flood").await);
    assert_eq!(kind, TrapKind::HostCalls, "{text}");
    assert!(text.contains("more than 10000 host calls"), "{text}");
}

#[tokio::test]
async fn a_log_flood_is_capped_and_counted() {
    let plugin = misbehave().await;
    let run = run_mode(&plugin, "log-flood").await;
    assert!(run.outcome.is_ok(), "{:?}", run.outcome);
    let kept: usize = run.host.logs.iter().map(String::len).sum();
    assert_eq!(kept, 64 * 1024, "64 lines of 1 KiB fit the 64 KiB budget");
    assert_eq!(run.log_dropped, (1000 - 64) * 1024);
}

#[tokio::test]
async fn an_event_flood_is_refused_past_the_limit_without_ending_the_verb() {
    let plugin = misbehave().await;
    let run = run_mode(&plugin, "event-flood").await;
    let outcome = run.outcome.expect("the verb completes");
    assert_eq!(
        outcome.payload["refused"],
        json!([1000, "more than 1000 events in one verb"])
    );
    assert_eq!(run.host.events_emitted.len(), 1000);
}

#[tokio::test]
async fn the_host_enforces_stack_owned_headers_even_without_the_sdk() {
    let plugin = misbehave().await;
    let run = run_mode(&plugin, "owned-header").await;
    let outcome = run.outcome.expect("the verb completes");
    assert_eq!(
        outcome.payload["error"],
        "the host refused the REFER: header Via is set by the SIP stack and cannot be given in `headers`"
    );
    assert!(
        run.host.refers.is_empty(),
        "the call host never saw the REFER"
    );
}

#[tokio::test]
async fn garbage_completions_are_refused() {
    let plugin = misbehave().await;
    match run_mode(&plugin, "bad-payload").await.outcome {
        Err(RunError::InvalidCompletion(why)) => {
            assert!(
                why.starts_with("payload: ") && why.ends_with("at line 1 column 2"),
                "{why}"
            );
        }
        other => panic!("{other:?}"),
    }
    match run_mode(&plugin, "bad-event").await.outcome {
        Err(RunError::InvalidCompletion(why)) => {
            assert!(why.contains("\"no spaces allowed\""), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_do_not_touch_other_runs_of_the_same_plugin() {
    let plugin = misbehave().await;
    let mut runs = Vec::new();
    for n in 0..12 {
        let plugin = plugin.clone();
        let mode = ["loop", "panic", "oom", "ok"][n % 4];
        runs.push(tokio::spawn(async move {
            (mode, run_mode(&plugin, mode).await.outcome)
        }));
    }
    for run in runs {
        let (mode, outcome) = run.await.expect("task ran");
        match (mode, outcome) {
            ("ok", Ok(outcome)) => assert_eq!(outcome.event, "DONE"),
            ("loop" | "panic" | "oom", Err(RunError::Trap { .. })) => {}
            (mode, other) => panic!("{mode}: {other:?}"),
        }
    }
    // The plugin still serves after all those traps: every run has its own store.
    assert!(run_mode(&plugin, "ok").await.outcome.is_ok());
}

#[tokio::test]
async fn plugins_that_are_not_valid_components_are_refused_with_the_cause() {
    let host = MockHost::new().expect("mock host starts");
    let err = |result: Result<Plugin<MockCall>, LoadError>| match result {
        Err(err) => err.to_string(),
        Ok(plugin) => panic!("loaded {:?}", plugin.info()),
    };
    assert!(err(host.load(b"").await).starts_with("not a WebAssembly component"));
    assert!(
        err(host.load(b"definitely not wasm").await).starts_with("not a WebAssembly component")
    );
    assert!(
        err(host.load(b"\0asm\x01\0\0\0").await)
            .contains("core WebAssembly module; build the plugin for wasm32-wasip2")
    );
    let clock = err(host.load_file(verbhost_guests::CLOCK_IMPORT.as_ref()).await);
    assert!(clock.starts_with("plugin imports wasi:clocks/"), "{clock}");
    assert!(
        clock.ends_with("there is no clock in the sandbox; use verbhost:plugin/host.clock-ms"),
        "{clock}"
    );
    assert!(
        err(host.load_file("no/such/plugin.wasm".as_ref()).await)
            .starts_with("cannot read plugin no/such/plugin.wasm")
    );

    let small = MockHost::with_config(RuntimeConfig {
        max_plugin_bytes: 1024,
        ..RuntimeConfig::default()
    })
    .expect("mock host starts");
    let too_large = err(small.load(verbhost_guests::SIP_REFER_WASM).await);
    assert!(
        too_large.ends_with("more than the limit of 1024"),
        "{too_large}"
    );
}

#[tokio::test]
async fn the_allocator_is_reported_and_a_pool_that_cannot_be_reserved_falls_back_to_on_demand() {
    let pooled = Runtime::<MockCall>::new(RuntimeConfig {
        max_concurrent_runs: 4,
        ..RuntimeConfig::default()
    })
    .expect("runtime starts");
    assert_eq!(pooled.allocator(), &Allocator::Pooling { slots: 4 });
    // 2^20 slots of two 4 GiB memory reservations each: more address space than there is.
    let started = std::time::Instant::now();
    let fallback = Runtime::<MockCall>::new(RuntimeConfig {
        max_concurrent_runs: 1 << 20,
        ..RuntimeConfig::default()
    })
    .expect("runtime starts without the pool");
    println!(
        "fallback after {:?}: {}",
        started.elapsed(),
        fallback.allocator()
    );
    match fallback.allocator() {
        Allocator::OnDemand { reason } => assert!(!reason.is_empty()),
        other => panic!("expected on-demand allocation, got {other}"),
    }
    let plugin = fallback
        .load_file(verbhost_guests::MISBEHAVE.as_ref())
        .await
        .expect("loads");
    let verb = json!({ "verb": "misbehave", "mode": "ok" }).to_string();
    let run = plugin.run(quiet_call(), &verb, &call_info()).await;
    assert_eq!(run.outcome.expect("the run completes").event, "DONE");
}

/// The peak resident set of this process, from `/proc/self/status`, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

#[tokio::test]
async fn a_plugin_file_over_the_limit_is_refused_without_reading_it() {
    let dir = std::env::temp_dir().join(format!("verbhost-sparse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("huge.wasm");
    // 1 GiB that takes no disk: reading it whole would take 1 GiB of memory.
    std::fs::File::create(&path)
        .and_then(|file| file.set_len(1 << 30))
        .expect("sparse file");
    let host = MockHost::new().expect("mock host starts");
    let before = peak_rss_kib();
    let result = tokio::time::timeout(Duration::from_secs(5), host.load_file(&path))
        .await
        .expect("refused within 5 s");
    let grown_mib = (peak_rss_kib() - before) / 1024;
    std::fs::remove_dir_all(&dir).ok();
    match result {
        Err(LoadError::TooLarge { len, limit }) => {
            assert_eq!((len, limit), (1 << 30, 32 << 20));
        }
        Err(other) => panic!("{other}"),
        Ok(plugin) => panic!("loaded {:?}", plugin.info()),
    }
    assert!(
        grown_mib < 256,
        "the file was read: the peak resident set grew by {grown_mib} MiB"
    );
}

/// Set in the child process of
/// [`pausing_the_process_is_not_charged_to_the_plugin_s_cpu_budget`].
const BURN_CHILD: &str = "VERBHOST_TEST_BURN_CHILD";
/// Rounds of the misbehave plugin's `burn` mode: about 250 ms of CPU on the 2-core CI VM.
const BURN_ROUNDS: u64 = 200_000_000;
/// The CPU budget of the burn: four times its CPU time, far less than the time it is paused.
const BURN_BUDGET: Duration = Duration::from_secs(1);

/// A bounded burn of real CPU completes within its budget. In the child process of
/// [`pausing_the_process_is_not_charged_to_the_plugin_s_cpu_budget`], it tells the parent
/// when the burn starts, so that the parent can pause it.
#[tokio::test]
async fn a_bounded_burn_completes_within_its_cpu_budget() {
    let runtime = Runtime::<MockCall>::new(RuntimeConfig {
        run: RunLimits {
            cpu_ms: BURN_BUDGET.as_millis() as u64,
            ..RunLimits::default()
        },
        ..RuntimeConfig::default()
    })
    .expect("runtime starts");
    let plugin = runtime
        .load_file(verbhost_guests::MISBEHAVE.as_ref())
        .await
        .expect("loads");
    let verb = json!({ "verb": "misbehave", "mode": "burn", "count": BURN_ROUNDS }).to_string();
    if std::env::var_os(BURN_CHILD).is_some() {
        use std::io::Write;
        println!("BURN STARTS");
        std::io::stdout().flush().expect("stdout");
    }
    let started = std::time::Instant::now();
    let run = plugin.run(quiet_call(), &verb, &call_info()).await;
    println!(
        "burn took {:?} of wall time, {:?} charged as CPU time",
        started.elapsed(),
        run.cpu_time
    );
    let outcome = run
        .outcome
        .expect("the burn completes within its CPU budget");
    assert_eq!(outcome.payload["burned"], BURN_ROUNDS);
}

/// Sends `signal` (`-STOP`, `-CONT`) to `pid`.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}: {status}");
}

/// The CPU budget charges the guest only for CPU time it ran: a process paused (SIGSTOP) or
/// descheduled for longer than the budget does not trap a guest that is well within it.
#[test]
fn pausing_the_process_is_not_charged_to_the_plugin_s_cpu_budget() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};

    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "a_bounded_burn_completes_within_its_cpu_budget",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(BURN_CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test binary runs");
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped");
    let (lines, started) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("BURN STARTS") {
                let _ = lines.send(());
            }
            seen.push(line);
        }
        seen
    });
    started
        .recv_timeout(Duration::from_secs(60))
        .expect("the child starts its burn within 60 s");
    // Pause the child 100 ms at a time, letting it run 5 ms in between, until it exits.
    let pause = Duration::from_millis(100);
    let mut pauses = 0u32;
    while child.try_wait().expect("wait").is_none() && pauses < 200 {
        signal(pid, "-STOP");
        std::thread::sleep(pause);
        signal(pid, "-CONT");
        pauses += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)
        .ok();
    let stdout = reader.join().expect("reader").join("\n");
    assert!(
        status.success(),
        "the burn, paused {pauses} times for {pause:?}, failed ({status}):\n{stdout}\n{stderr}"
    );
    assert!(
        pause * pauses > BURN_BUDGET * 2,
        "the burn ended after {pauses} pauses, too soon to test anything: raise BURN_ROUNDS\n{stdout}"
    );
    println!("paused {pauses} times for {pause:?}:\n{stdout}");
}

/// A call host whose NOTIFY arrives after real waiting.
struct SlowCall {
    notify_after: Duration,
}

impl CallHost for SlowCall {
    async fn send_refer(&mut self, _request: ReferRequest) -> Result<ReferResponse, ReferError> {
        Ok(ReferResponse {
            refer_id: 2,
            status: 202,
            reason: "Accepted".into(),
            headers: Vec::new(),
        })
    }

    async fn on_notify(
        &mut self,
        _refer_id: u32,
        _timeout: Duration,
    ) -> Result<ReferEvent, NotifyError> {
        tokio::time::sleep(self.notify_after).await;
        Ok(ReferEvent::Notify(verbhost_runtime::notify_from_parts(
            Some("terminated;reason=noresource"),
            Some("message/sipfrag"),
            b"SIP/2.0 200 OK\r\n".to_vec(),
        )))
    }

    fn emit_event(&mut self, _hook: Webhook, _payload: Map<String, Value>) {}

    fn log(&mut self, _level: Level, _message: &str) {}

    fn clock_ms(&mut self) -> u64 {
        0
    }
}

const TRANSFER: &str = r#"{"verb":"sip:refer","referTo":"sip:carol@127.0.0.1"}"#;

/// The sip:refer plugin in a runtime whose calls answer after real waiting.
async fn slow_sip_refer(config: RuntimeConfig) -> Plugin<SlowCall> {
    let runtime = Runtime::<SlowCall>::new(config).expect("runtime starts");
    runtime
        .load(verbhost_guests::SIP_REFER_WASM)
        .await
        .expect("loads")
}

/// Runs the transfer on a call whose NOTIFY comes after `notify_after`.
async fn slow_transfer(
    plugin: &Plugin<SlowCall>,
    notify_after: Duration,
) -> Result<verbhost_runtime::Outcome, RunError> {
    let call = SlowCall { notify_after };
    plugin.run(call, TRANSFER, &call_info()).await.outcome
}

#[tokio::test]
async fn time_parked_in_host_calls_is_not_charged_to_the_cpu_budget() {
    let plugin = slow_sip_refer(RuntimeConfig::default()).await;
    let outcome = slow_transfer(&plugin, Duration::from_millis(300))
        .await
        .expect("a 300 ms wait is not 300 ms of CPU");
    assert_eq!(outcome.event, "TRANSFER_REFER_SUCCESS");
}

#[tokio::test]
async fn the_wall_clock_limit_ends_a_run_that_waits_too_long() {
    let plugin = slow_sip_refer(RuntimeConfig {
        run: RunLimits {
            wall_clock_ms: 200,
            ..RunLimits::default()
        },
        ..RuntimeConfig::default()
    })
    .await;
    match slow_transfer(&plugin, Duration::from_secs(5)).await {
        Err(RunError::WallClock(limit)) => assert_eq!(limit, Duration::from_millis(200)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_beyond_the_pool_size_wait_for_a_slot_instead_of_failing() {
    let plugin = slow_sip_refer(RuntimeConfig {
        max_concurrent_runs: 2,
        ..RuntimeConfig::default()
    })
    .await;
    let runs: Vec<_> = (0..6)
        .map(|_| {
            let plugin = plugin.clone();
            tokio::spawn(async move { slow_transfer(&plugin, Duration::from_millis(50)).await })
        })
        .collect();
    for run in runs {
        let outcome = run.await.expect("task ran").expect("every run completes");
        assert_eq!(outcome.event, "TRANSFER_REFER_SUCCESS");
    }
}

/// Runs the misbehave plugin's `mode` on a call that accepts every REFER.
async fn misbehave_on_a_transfer(mode: &str) -> verbhost_runtime::Run<SlowCall> {
    let runtime = Runtime::<SlowCall>::new(RuntimeConfig::default()).expect("runtime starts");
    let plugin = runtime
        .load_file(verbhost_guests::MISBEHAVE.as_ref())
        .await
        .expect("loads");
    let call = SlowCall {
        notify_after: Duration::from_millis(10),
    };
    let verb = json!({ "verb": "misbehave", "mode": mode }).to_string();
    plugin.run(call, &verb, &call_info()).await
}

#[tokio::test]
async fn a_trap_after_the_refer_went_out_is_a_panic_trap_with_its_message() {
    let run = misbehave_on_a_transfer("trap-mid-transfer").await;
    let (kind, text) = trap_kind(&run);
    assert_eq!(kind, TrapKind::Panic, "{text}");
    assert!(
        text.contains("the plugin died mid-transfer (REFER answered 202)"),
        "{text}"
    );
}

#[tokio::test]
async fn a_refer_flood_ends_at_the_refer_limit() {
    // limits.max_refers (10 by default) ends the flood at the eleventh REFER: before the bound,
    // the flood sent 10,000 REFERs (one per host call) until the host call limit ended it.
    let run = misbehave_on_a_transfer("refer-flood").await;
    let (kind, text) = trap_kind(&run);
    assert_eq!(kind, TrapKind::Refers, "{text}");
    assert!(text.contains("max_refers"), "{text}");
}

#[tokio::test]
async fn megabytes_of_guest_output_keep_only_the_last_bytes_of_the_output_limit() {
    let plugin = misbehave().await;
    // 1 MiB on stdout and 1 MiB on stderr, in 64 KiB `print!`s: every write is taken, so
    // `print!` never panics and the verb completes.
    let verb = json!({ "verb": "misbehave", "mode": "huge-output", "count": 1 }).to_string();
    let run = plugin.run(quiet_call(), &verb, &call_info()).await;
    let outcome = run.outcome.as_ref().expect("the chatty verb completes");
    assert_eq!(outcome.event, "DONE");
    assert_eq!(outcome.payload["written"], json!(2 << 20));
    assert_eq!(run.guest_output.len(), 4 << 10, "kept the output limit");
    assert!(run.guest_output.bytes().all(|b| b == b'y'));
    assert_eq!(
        run.guest_output_dropped,
        (2 << 20) - (4 << 10),
        "every byte not kept is counted"
    );
}

#[tokio::test]
async fn a_guest_that_prints_a_lot_then_panics_keeps_its_panic_message() {
    let plugin = misbehave().await;
    let lines = 10_000u32;
    let verb =
        json!({ "verb": "misbehave", "mode": "print-then-panic", "count": lines }).to_string();
    let run = plugin.run(quiet_call(), &verb, &call_info()).await;
    let (kind, text) = trap_kind(&run);
    assert_eq!(kind, TrapKind::Panic, "{text}");
    let output = &run.guest_output;
    assert_eq!(output.len(), 4 << 10, "kept the output limit: {output}");
    let panic = "the plugin gave up after 10000 lines";
    assert!(
        output.contains(panic),
        "the panic message is kept: {output}"
    );
    assert!(text.contains(panic), "and reported with the trap: {text}");
    // The tail is the end of what was written: the last line, then the panic (on stderr).
    let line = |n: u32| format!("line {n} of {lines}: the plugin is chatty before it dies\n");
    let last = line(lines - 1);
    let after_last = output.find(&last).expect("the last line is kept") + last.len();
    assert!(output[after_last..].contains(panic), "{output}");
    assert!(!output.contains(&line(0)), "the first line was pushed out");
    // Exactly what was written and not kept is counted as dropped.
    let written: usize =
        (0..lines).map(|n| line(n).len()).sum::<usize>() + output.len() - after_last;
    assert_eq!(run.guest_output_dropped + output.len(), written);
}

/// Every import of the component at `path` that the sandbox does not grant by name: not the
/// contract and not the WASI interfaces std links in for stdio.
fn forbidden_imports(path: &str) -> Vec<String> {
    let engine = wasmtime::Engine::default();
    let component =
        wasmtime::component::Component::from_file(&engine, path).expect("a valid component");
    let granted = ["verbhost:plugin/", "wasi:io/", "wasi:cli/", "wasi:random/"];
    component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_owned())
        .filter(|name| !granted.iter().any(|prefix| name.starts_with(prefix)))
        .collect()
}

#[tokio::test]
async fn plugins_that_import_the_file_system_or_sockets_are_refused_naming_an_import() {
    let host = MockHost::new().expect("mock host starts");
    for (path, interface) in [
        (verbhost_guests::FS_IMPORT, "wasi:filesystem/"),
        (verbhost_guests::SOCKET_IMPORT, "wasi:sockets/"),
    ] {
        let imports = forbidden_imports(path);
        assert!(
            imports.iter().any(|name| name.starts_with(interface)),
            "{path} imports {interface}: {imports:?}"
        );
        match host.load_file(path.as_ref()).await {
            Err(err @ LoadError::ForbiddenImport { .. }) => {
                let text = err.to_string();
                let named = imports
                    .iter()
                    .find(|name| text.starts_with(&format!("plugin imports {name}, ")));
                assert!(named.is_some(), "{path}: names one of {imports:?}: {text}");
                println!("{path}: imports {imports:?}\n  refused: {text}");
            }
            Err(other) => panic!("{path}: refused for another cause: {other}"),
            Ok(plugin) => panic!("{path}: loaded {:?}", plugin.info()),
        }
    }
}
fn load_error(result: Result<Plugin<MockCall>, LoadError>) -> LoadError {
    match result {
        Err(err) => err,
        Ok(plugin) => panic!("loaded {:?}", plugin.info()),
    }
}

#[tokio::test]
async fn a_plugin_built_for_another_contract_version_is_refused_with_both_versions_named() {
    let host = MockHost::new().expect("mock host starts");
    let err = load_error(
        host.load_file(verbhost_guests::FUTURE_CONTRACT.as_ref())
            .await,
    );
    let text = err.to_string();
    assert!(
        matches!(err, LoadError::Contract(ContractError::Unsupported { .. })),
        "{err:?}"
    );
    assert!(
        text.starts_with("the plugin is built for verbhost:plugin@0.2.0 (it uses verbhost:plugin/"),
        "{text}"
    );
    assert!(
        text.contains("this host supports verbhost:plugin@0.1.x (0.1.0 and later 0.1 releases)"),
        "{text}"
    );
    assert!(text.ends_with("upgrade verbhost to run it"), "{text}");
}

#[tokio::test]
async fn a_plugin_for_a_later_0_1_release_that_needs_a_newer_host_function_is_refused_as_too_new() {
    let host = MockHost::new().expect("mock host starts");
    let err = load_error(host.load_file(verbhost_guests::NEWER_MINOR.as_ref()).await);
    let text = err.to_string();
    assert!(
        matches!(err, LoadError::Contract(ContractError::HostTooOld { .. })),
        "{err:?}"
    );
    assert_eq!(
        text,
        "the plugin is built for verbhost:plugin@0.1.2, newer than this host's 0.1.1: it \
         imports `get-config` from verbhost:plugin/host@0.1.2, which this host does not have; \
         upgrade verbhost, or rebuild the plugin against verbhost:plugin@0.1.1"
    );
}
