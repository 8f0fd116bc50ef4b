//! The sandbox against plugins that misbehave: every bound ends the run with an error that
//! names it, nothing panics, and other runs of the same plugin are unaffected.

use std::time::Duration;

use serde_json::{Map, Value, json};
use verbhost_mock::{MockCall, MockHost, Scenario};
use verbhost_runtime::{
    CallHost, CallInfo, Direction, Identity, Level, LoadError, NotifyError, Plugin, ReferError,
    ReferEvent, ReferRequest, ReferResponse, RunError, Runtime, RuntimeConfig, TrapKind, Webhook,
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

fn trap_kind(run: &verbhost_runtime::Run<MockCall>) -> (TrapKind, String) {
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
        wall_clock_limit: Duration::from_millis(200),
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
