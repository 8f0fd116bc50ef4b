//! The sans-IO engine's cost per transfer, with no sockets: one inbound call transferred from
//! start to end (INVITE, 100, 200, ACK, REFER, 202, NOTIFY 100/180/200 and their 200s, BYE and
//! its 200, and the engine's own timers), on an engine that holds no other call and on one
//! that holds 10,000 parked transfers (answered, REFER accepted, waiting for the final
//! NOTIFY). Only the engine's work is timed: the scripted caller builds and parses its
//! messages outside the clock. The two figures show whether the cost of a message grows with
//! the number of calls (it should not: everything is found by key, deadlines sit in a heap).

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use support::{SDP, ack, from_caller, invite};
use verbhost_sip::endpoint::{EndpointConfig, Stats};
use verbhost_sip::engine::{CallInfo, Engine, Event, Transmit};
use verbhost_sip::message::{Message, Response};
use verbhost_sip::wire;

fn engine_addr() -> SocketAddr {
    "127.0.0.1:5060".parse().expect("address")
}

fn peer_addr() -> SocketAddr {
    "127.0.0.1:5070".parse().expect("address")
}

/// The engine with a virtual clock, and the time spent inside it.
struct Bench {
    engine: Engine,
    now: Instant,
    spent: Duration,
    sent: Vec<Transmit>,
    next_call: u64,
}

impl Bench {
    fn new() -> Bench {
        let now = Instant::now();
        let mut config = EndpointConfig::udp(engine_addr());
        config.admission.max_calls = None;
        config.admission.max_calls_per_sec = None;
        config.admission.max_queue_delay = None;
        Bench {
            engine: Engine::new(config, engine_addr(), Arc::new(Stats::default()), now),
            now,
            spent: Duration::ZERO,
            sent: Vec::new(),
            next_call: 0,
        }
    }

    /// Runs `work` on the engine, then drains it (admitting new INVITEs), all on the clock.
    fn timed<T>(&mut self, work: impl FnOnce(&mut Engine, Instant) -> T) -> T {
        let started = Instant::now();
        let out = work(&mut self.engine, self.now);
        loop {
            if let Some(transmit) = self.engine.poll_transmit() {
                self.sent.push(transmit);
            } else if let Some(event) = self.engine.poll_event() {
                if let Event::NewInvite(new) = event {
                    let _ = self.engine.admit(self.now, new);
                }
            } else {
                break;
            }
        }
        self.spent += started.elapsed();
        out
    }

    fn feed(&mut self, text: &str) {
        self.timed(|engine, now| engine.handle_datagram(now, peer_addr(), now, text.as_bytes()));
    }

    /// The last message sent, parsed off the clock.
    fn last_sent(&mut self) -> Message {
        let transmit = self.sent.pop().expect("a message was sent");
        self.sent.clear();
        wire::parse(&transmit.bytes).expect("valid SIP")
    }
}

/// A new call from the caller up to its accepted REFER (INVITE, 100, 200, ACK, REFER, 202),
/// the engine timed through it; `label` keeps its Call-ID apart from other calls'.
fn refer_accepted(bench: &mut Bench, label: &str) -> CallInfo {
    let n = bench.next_call;
    bench.next_call += 1;
    let call_id = format!("{label}-{n}");
    let branch = format!("z9hG4bK-inv-{call_id}");
    let text = invite(peer_addr(), engine_addr(), &call_id, &branch);
    let key = bench.timed(|engine, now| {
        engine.handle_datagram(now, peer_addr(), now, text.as_bytes());
        let Some(Event::NewInvite(new)) = engine.poll_event() else {
            panic!("a new INVITE")
        };
        engine.admit(now, new)
    });
    let call = bench.timed(|engine, now| engine.answer(now, &key, 200, SDP.to_vec()));
    let call = call.expect("a dialog");
    let Message::Response(ok) = bench.last_sent() else {
        panic!("a 200")
    };
    let branch = format!("z9hG4bK-ack-{call_id}");
    bench.feed(&ack(peer_addr(), engine_addr(), &ok, &branch));
    let headers = vec![("Refer-To".into(), "<sip:carol@127.0.0.1>".into())];
    let id = call.id.clone();
    bench.timed(|engine, now| engine.refer(now, n, id, headers));
    let Message::Request(refer) = bench.last_sent() else {
        panic!("a REFER")
    };
    let accepted = Response::to(&refer, 202, None).to_bytes();
    bench.feed(&String::from_utf8_lossy(&accepted));
    call
}

/// One whole transfer, the engine timed through it.
fn transfer(bench: &mut Bench) {
    let call = refer_accepted(bench, "bench");
    park_then_finish(bench, &call, true);
}

/// The NOTIFYs 100 and 180, each read from the subscription, and, when `finish`, the final
/// NOTIFY and the BYE.
fn park_then_finish(bench: &mut Bench, call: &CallInfo, finish: bool) {
    let steps: &[(u32, &str, &str)] = if finish {
        &[
            (2, "active;expires=60", "SIP/2.0 100 Trying\r\n"),
            (3, "active;expires=60", "SIP/2.0 180 Ringing\r\n"),
            (4, "terminated;reason=noresource", "SIP/2.0 200 OK\r\n"),
        ]
    } else {
        &[
            (2, "active;expires=60", "SIP/2.0 100 Trying\r\n"),
            (3, "active;expires=60", "SIP/2.0 180 Ringing\r\n"),
        ]
    };
    for (cseq, state, sipfrag) in steps {
        let extra = format!(
            "Event: refer;id=1\r\nSubscription-State: {state}\r\nContent-Type: message/sipfrag;version=2.0\r\n"
        );
        let branch = format!("z9hG4bK-n{cseq}-{}", call.id.call_id);
        let text = from_caller(
            "NOTIFY",
            &call.id,
            peer_addr(),
            engine_addr(),
            &branch,
            *cseq,
            &extra,
            sipfrag,
        );
        let id = call.id.clone();
        bench.timed(|engine, now| {
            engine.handle_datagram(now, peer_addr(), now, text.as_bytes());
            while let Ok(Some(_)) = engine.next_refer_event(&id, 1) {}
        });
    }
    bench.sent.clear();
    if finish {
        let branch = format!("z9hG4bK-bye-{}", call.id.call_id);
        let bye = from_caller(
            "BYE",
            &call.id,
            peer_addr(),
            engine_addr(),
            &branch,
            5,
            "",
            "",
        );
        bench.feed(&bye);
        bench.sent.clear();
    }
}

/// One parked transfer: everything up to the 180 NOTIFY, the final one held back.
fn park(bench: &mut Bench) {
    let call = refer_accepted(bench, "parked");
    park_then_finish(bench, &call, false);
}

fn engine_transfer(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine_transfer");
    for parked in [0usize, 10_000] {
        let mut bench = Bench::new();
        for _ in 0..parked {
            park(&mut bench);
        }
        group.bench_with_input(BenchmarkId::from_parameter(parked), &parked, |b, _| {
            b.iter_custom(|iters| {
                bench.spent = Duration::ZERO;
                for _ in 0..iters {
                    transfer(&mut bench);
                    // 1 ms of virtual time per transfer (1,000 transfers/s): the engine's
                    // timers (transactions, BYE grace, ended dialogs) come due as in a run.
                    bench.now += Duration::from_millis(1);
                    bench.timed(|engine, now| engine.handle_timeout(now));
                    bench.sent.clear();
                }
                bench.spent
            })
        });
        // Past the last BYE's grace, only the parked calls are still up.
        bench.now += Duration::from_secs(1);
        bench.timed(|engine, now| engine.handle_timeout(now));
        assert_eq!(
            bench.engine.open_dialogs(),
            parked,
            "the parked calls are still up"
        );
    }
    group.finish();
}

criterion_group!(benches, engine_transfer);
criterion_main!(benches);
