//! A plugin that breaks the rules on request, so the runtime's bounds are tested against a
//! real guest. The verb `{"verb": "misbehave", "mode": "..."}` picks the offence.

use std::hint::black_box;

use serde_json::json;
use verbhost_sdk::sip::{self, ReferRequest};
use verbhost_sdk::{
    CallInfo, Completion, Header, Plugin, PluginInfo, VerbError, Webhook, export_plugin, host,
};

struct Misbehave;

/// The verb, read: the offence and its size, and the actionHook.
struct Offence {
    mode: String,
    count: u64,
    action_hook: Option<Webhook>,
}

impl Plugin for Misbehave {
    type Verb = Offence;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "misbehave".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            verbs: vec!["misbehave".into()],
        }
    }

    /// Also where the `*-in-parse` modes misbehave: in the host's check of the verb (which
    /// runs this alone, with no call) as well as in a run.
    fn parse(verb: &str) -> Result<Offence, VerbError> {
        let verb = verbhost_sdk::verb::Verb::parse(verb)?;
        let mut props = verb.props_known(&["mode", "count", "actionHook"])?;
        let mode = props.string("mode")?.unwrap_or_default();
        let count = props.integer("count", 0..=u64::MAX)?.unwrap_or(0);
        // Posted by the host when the verb fails, and handed back when it completes.
        let action_hook = props.hook("actionHook")?;
        let _warnings = props.finish()?;
        match mode.as_str() {
            "panic-in-parse" => panic!("the plugin gave up while reading the verb"),
            "loop-in-parse" => loop {
                black_box(0u64);
            },
            // Fine in a run; a trap in a check, which has no call to log to.
            "host-call-in-parse" => host::info("reading the verb"),
            _ => {}
        }
        Ok(Offence {
            mode,
            count,
            action_hook,
        })
    }

    fn run(verb: Offence, _call: &CallInfo) -> Result<Completion, VerbError> {
        let Offence {
            mode,
            count,
            action_hook,
        } = verb;
        let hook = Webhook {
            url: "http://127.0.0.1:9/events".into(),
            method: "POST".into(),
            username: None,
            password: None,
        };
        let mut payload = json!({});
        let mut event = "DONE".to_owned();
        match mode.as_str() {
            "ok" | "host-call-in-parse" => {}
            // Bounded real compute: `count` rounds of a multiply-xorshift, nothing else.
            "burn" => {
                let mut x = 0x9e37_79b9_7f4a_7c15u64;
                for _ in 0..count {
                    x = black_box(x.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (x >> 29));
                }
                payload["burned"] = count.into();
                payload["x"] = (x & 0xffff).into();
            }
            // `count` events, each a single host call.
            "events" => {
                for n in 0..count {
                    if let Err(err) = host::emit_event(&hook, &json!({ "n": n })) {
                        return Err(VerbError::Failed(err.message()));
                    }
                }
            }
            // One log line of 2 MiB: more bytes than the host accepts in one call.
            "huge-log" => host::info(&"x".repeat(2 << 20)),
            "loop" => loop {
                black_box(0u64);
            },
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    black_box(&hoard);
                }
            }
            "stack" => {
                payload["depth"] = recurse(black_box(1)).into();
            }
            "panic" => panic!("the plugin gave up on purpose"),
            "host-call-flood" => loop {
                black_box(host::clock_ms());
            },
            "log-flood" => {
                let line = "x".repeat(1024);
                for _ in 0..1000 {
                    host::info(&line);
                }
            }
            "event-flood" => {
                let mut refused = None;
                for n in 0..100_000u32 {
                    if let Err(err) = host::emit_event(&hook, &json!({ "n": n })) {
                        refused = Some((n, err.message()));
                        break;
                    }
                }
                payload["refused"] = json!(refused);
            }
            "owned-header" => {
                let request = ReferRequest {
                    refer_to: "<sip:carol@example.com>".into(),
                    referred_by: None,
                    headers: vec![Header {
                        name: "via".into(),
                        value: "SIP/2.0/UDP 10.0.0.1".into(),
                    }],
                };
                payload["error"] = match sip::send_refer(&request) {
                    Ok(response) => json!(format!("sent, answered {}", response.status)),
                    Err(err) => json!(err.message()),
                };
            }
            // A transfer in flight when the plugin dies: the REFER is sent (and accepted),
            // then the plugin panics before it follows a single NOTIFY.
            "trap-mid-transfer" => {
                let request = ReferRequest {
                    refer_to: "<sip:carol@127.0.0.1>".into(),
                    referred_by: None,
                    headers: Vec::new(),
                };
                let status = match sip::send_refer(&request) {
                    Ok(response) => response.status.to_string(),
                    Err(err) => err.message(),
                };
                panic!("the plugin died mid-transfer (REFER answered {status})");
            }
            // REFER after REFER on the same dialog, until the host refuses one (or `count`
            // of them are sent, when `count` is given): the payload says how many were sent
            // and why the host stopped them.
            "refer-flood" => {
                let request = ReferRequest {
                    refer_to: "<sip:carol@127.0.0.1>".into(),
                    referred_by: None,
                    headers: Vec::new(),
                };
                let limit = if count == 0 { u64::MAX } else { count };
                let mut sent = 0u64;
                let mut refused = None;
                while sent < limit {
                    match sip::send_refer(&request) {
                        Ok(_) => sent += 1,
                        Err(err) => {
                            refused = Some(err.message());
                            break;
                        }
                    }
                }
                payload["sent"] = sent.into();
                payload["refused"] = json!(refused);
            }
            // Megabytes on stdout and stderr (`count` MiB each, default 8), the way a chatty
            // plugin prints: `print!`, which panics when the host stops taking output.
            "huge-output" => {
                let mib = if count == 0 { 8 } else { count };
                let chunk = "y".repeat(64 << 10);
                for _ in 0..mib.saturating_mul(16) {
                    print!("{chunk}");
                    eprint!("{chunk}");
                }
                payload["written"] = mib.saturating_mul(2 << 20).into();
            }
            // Lines on stdout (`count` of them, default 10 000, about 500 KiB), then a panic:
            // the panic message is the last thing the guest writes (to stderr).
            "print-then-panic" => {
                let lines = if count == 0 { 10_000 } else { count };
                for n in 0..lines {
                    println!("line {n} of {lines}: the plugin is chatty before it dies");
                }
                panic!("the plugin gave up after {lines} lines");
            }
            "bad-payload" => {
                return Ok(Completion {
                    event,
                    payload: "this is not JSON".into(),
                    action_hook,
                    call_left: false,
                });
            }
            "bad-event" => event = "no spaces allowed".into(),
            other => {
                return Err(VerbError::InvalidVerb(format!(
                    "misbehave: mode: unknown {other:?}"
                )));
            }
        }
        Ok(Completion {
            event,
            payload: payload.to_string(),
            action_hook,
            call_left: false,
        })
    }
}

/// Recursion with no end that keeps almost nothing in linear memory, so it is the wasm call
/// stack (not Rust's shadow stack in linear memory) that overflows.
#[inline(never)]
fn recurse(n: u64) -> u64 {
    if n == u64::MAX {
        n
    } else {
        black_box(recurse(n + 1)).wrapping_add(1)
    }
}

export_plugin!(Misbehave);
