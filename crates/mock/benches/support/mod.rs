//! What the benches share: the transfer they time and the mock host they run the plugin in.
//! Also included by `tests/native_parity.rs`, which holds the native run to the wasm run.

use serde_json::json;
use verbhost_mock::{MockCall, MockHost, Scenario};
use verbhost_runtime::Plugin;

/// The timed transfer: `sip:refer` with an eventHook, answered 202, then NOTIFY 100, 180 and
/// a final 200.
pub(crate) fn scenario() -> Scenario {
    Scenario::from_value(json!({
        "name": "bench",
        "verb": {
            "verb": "sip:refer",
            "id": "bench",
            "referTo": "+4930555",
            "actionHook": "/done",
            "eventHook": "/progress"
        },
        "refer_response": { "status": 202, "at_ms": 20 },
        "notifies": [
            { "at_ms": 40, "notify": { "state": "active;expires=60", "body": "SIP/2.0 100 Trying\r\n" } },
            { "at_ms": 900, "notify": { "state": "active;expires=60", "body": "SIP/2.0 180 Ringing\r\n" } },
            { "at_ms": 5000, "notify": { "state": "terminated;reason=noresource", "body": "SIP/2.0 200 OK\r\n" } }
        ],
        "expect": {}
    }))
    .expect("valid scenario")
}

/// A single-threaded executor and a plugin loaded into a mock host.
pub(crate) fn setup(wasm: &[u8]) -> (tokio::runtime::Runtime, Plugin<MockCall>) {
    let executor = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let host = MockHost::new().expect("mock host");
    let plugin = executor.block_on(host.load(wasm)).expect("plugin loads");
    (executor, plugin)
}
