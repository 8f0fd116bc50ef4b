//! The sans-IO engine driven by hand, with no sockets and a clock the test moves: thousands of
//! inbound calls transferred at once (INVITE, 200, ACK, REFER, 202, NOTIFY 100/180/200, BYE),
//! thousands of callers that never ACK, and a REFER that could not be sent. Every message the
//! engine sends is counted, so a stray retransmission or a lost answer fails the test.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{SDP, ack, from_caller, invite};
use verbhost_sip::dialog::SubscriptionEvent;
use verbhost_sip::endpoint::{EndpointConfig, ReferFailure, Stats};
use verbhost_sip::engine::{CallInfo, Destination, Engine, Event, InviteKey, Transmit};
use verbhost_sip::message::{Message, Method, Request, Response, SipHeaders};
use verbhost_sip::wire;

const CALLS: usize = 5_000;

fn engine_addr() -> SocketAddr {
    "127.0.0.1:5060".parse().expect("address")
}

/// The peer every call comes from (a sipp-like caller).
fn peer_addr() -> SocketAddr {
    "127.0.0.1:5070".parse().expect("address")
}

fn new_engine(now: Instant) -> Engine {
    let mut config = EndpointConfig::udp(engine_addr());
    config.admission.max_calls = None;
    config.admission.max_calls_per_sec = None;
    config.admission.max_queue_delay = None;
    Engine::new(config, engine_addr(), Arc::new(Stats::default()), now)
}

/// Everything the engine has to send and tell, after one input.
#[derive(Default)]
struct Drained {
    sent: Vec<Transmit>,
    events: Vec<Event>,
}

fn drain(engine: &mut Engine) -> Drained {
    let mut drained = Drained::default();
    loop {
        if let Some(transmit) = engine.poll_transmit() {
            drained.sent.push(transmit);
        } else if let Some(event) = engine.poll_event() {
            drained.events.push(event);
        } else {
            return drained;
        }
    }
}

/// The one message sent to the peer, parsed.
fn only_message(drained: &Drained) -> Message {
    assert_eq!(drained.sent.len(), 1, "one message sent");
    let transmit = &drained.sent[0];
    assert_eq!(transmit.to, Destination::Addr(peer_addr()));
    wire::parse(&transmit.bytes).expect("the engine sends valid SIP")
}

fn only_response(drained: &Drained) -> Response {
    match only_message(drained) {
        Message::Response(response) => response,
        Message::Request(request) => panic!("expected a response, got {}", request.method),
    }
}

fn only_request(drained: &Drained) -> Request {
    match only_message(drained) {
        Message::Request(request) => request,
        Message::Response(response) => panic!("expected a request, got {}", response.status),
    }
}

/// An in-dialog request from the peer in `call`.
fn from_peer(method: &str, call: &CallInfo, cseq: u32, extra: &str, body: &str) -> String {
    let branch = format!("z9hG4bK-{method}-{cseq}-{}", call.id.call_id);
    let (peer, to) = (peer_addr(), engine_addr());
    from_caller(method, &call.id, peer, to, &branch, cseq, extra, body)
}

fn feed(engine: &mut Engine, now: Instant, text: &str) -> Drained {
    engine.handle_datagram(now, peer_addr(), now, text.as_bytes());
    drain(engine)
}

/// A new INVITE, admitted: the 100 Trying goes out and the key comes back.
fn admitted(engine: &mut Engine, now: Instant, n: usize) -> InviteKey {
    let call_id = format!("call-{n}");
    let mut drained = feed(
        engine,
        now,
        &invite(
            peer_addr(),
            engine_addr(),
            &call_id,
            &format!("z9hG4bK-inv-{n}"),
        ),
    );
    assert!(drained.sent.is_empty(), "nothing is sent before admission");
    let Some(Event::NewInvite(new)) = drained.events.pop() else {
        panic!("a new INVITE to admit")
    };
    assert_eq!(new.invite.call_id(), Some(call_id.as_str()));
    let key = engine.admit(now, new);
    assert_eq!(only_response(&drain(engine)).status, 100);
    key
}

#[test]
fn thousands_of_transfers_at_once_without_sockets() {
    let start = Instant::now();
    let mut now = start;
    let mut engine = new_engine(now);
    let keys: Vec<InviteKey> = (0..CALLS).map(|n| admitted(&mut engine, now, n)).collect();

    // All answered: 200 OK with our SDP, a dialog for each.
    let mut calls = Vec::with_capacity(CALLS);
    let mut oks = Vec::with_capacity(CALLS);
    for key in &keys {
        let call = engine
            .answer(now, key, 200, SDP.to_vec())
            .expect("a dialog");
        let ok = only_response(&drain(&mut engine));
        assert_eq!((ok.status, ok.body.as_slice()), (200, SDP));
        calls.push(call);
        oks.push(ok);
    }
    assert_eq!(engine.open_dialogs(), CALLS);

    // The REFERs are asked for before the ACKs come: they wait for them.
    for (op, call) in calls.iter().enumerate() {
        let headers = vec![("Refer-To".into(), "<sip:carol@127.0.0.1>".into())];
        engine.refer(now, op as u64, call.id.clone(), headers);
        let drained = drain(&mut engine);
        assert!(drained.sent.is_empty() && drained.events.is_empty());
    }
    now += Duration::from_millis(100);
    let mut refers = Vec::with_capacity(CALLS);
    for (n, ok) in oks.iter().enumerate() {
        let drained = feed(
            &mut engine,
            now,
            &ack(peer_addr(), engine_addr(), ok, &format!("z9hG4bK-ack-{n}")),
        );
        let refer = only_request(&drained);
        assert_eq!(refer.method, Method::Refer);
        assert_eq!(refer.call_id(), Some(format!("call-{n}").as_str()));
        refers.push(refer);
    }

    // The peer accepts every REFER: each waiter gets its 202 and the refer id.
    now += Duration::from_millis(100);
    for (n, refer) in refers.iter().enumerate() {
        engine.handle_datagram(
            now,
            peer_addr(),
            now,
            &Response::to(refer, 202, None).to_bytes(),
        );
        let drained = drain(&mut engine);
        assert!(drained.sent.is_empty());
        let answered = drained.events.iter().find_map(|event| match event {
            Event::Referred { op, result } => Some((*op, result.clone())),
            _ => None,
        });
        let (op, result) = answered.expect("the REFER's answer");
        assert_eq!(op, n as u64);
        let answer = result.expect("answered");
        // Our first request in a dialog we answered: CSeq 1, so `Event: refer;id=1`.
        assert_eq!((answer.status, answer.refer_id), (202, 1));
    }

    // NOTIFY 100, 180, 200 on every call, each answered 200 and readable at once.
    let progress = [
        ("active;expires=60", "SIP/2.0 100 Trying\r\n"),
        ("active;expires=60", "SIP/2.0 180 Ringing\r\n"),
        ("terminated;reason=noresource", "SIP/2.0 200 OK\r\n"),
    ];
    for (step, (state, sipfrag)) in progress.iter().enumerate() {
        now += Duration::from_millis(50);
        for call in &calls {
            let extra = format!(
                "Event: refer;id=1\r\nSubscription-State: {state}\r\nContent-Type: message/sipfrag;version=2.0\r\n"
            );
            let notify = from_peer("NOTIFY", call, 2 + step as u32, &extra, sipfrag);
            let drained = feed(&mut engine, now, &notify);
            assert_eq!(only_response(&drained).status, 200);
            assert!(matches!(drained.events.as_slice(), [Event::Readable(id)] if *id == call.id));
            let event = engine.next_refer_event(&call.id, 1).expect("subscribed");
            let Some(SubscriptionEvent::Notify { body, .. }) = event else {
                panic!("a NOTIFY event, got {event:?}")
            };
            assert_eq!(body, sipfrag.as_bytes());
        }
    }

    // The peer hangs up every call.
    now += Duration::from_millis(50);
    for call in &calls {
        let drained = feed(&mut engine, now, &from_peer("BYE", call, 5, "", ""));
        assert_eq!(only_response(&drained).status, 200);
        assert!(matches!(
            drained.events.as_slice(),
            [Event::Ended { id, by_peer: true }] if *id == call.id
        ));
    }
    assert_eq!(
        engine
            .stats()
            .retransmissions
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // Past the BYE grace (300 ms) the dialogs end; everything in them was read, so none is
    // kept for the 120 s an unread one stays.
    now += Duration::from_secs(1);
    engine.handle_timeout(now);
    let forgotten_at_grace = drain(&mut engine)
        .events
        .iter()
        .filter(|event| matches!(event, Event::Forgotten(_)))
        .count();
    assert_eq!((forgotten_at_grace, engine.dialogs()), (CALLS, 0));

    // The clock alone cleans up: BYE grace, then the time an ended dialog stays readable,
    // and the transactions' own timers. Nothing is sent while it does.
    let mut forgotten = 0;
    let mut wake_ups = 0;
    while let Some(at) = engine.poll_timeout() {
        wake_ups += 1;
        assert!(wake_ups < 100 * CALLS, "the clock keeps waking the engine");
        assert!(at <= now + Duration::from_secs(600), "a deadline far away");
        now = now.max(at);
        engine.handle_timeout(now);
        let drained = drain(&mut engine);
        assert!(
            drained.sent.is_empty(),
            "nothing to send after the calls ended"
        );
        for event in drained.events {
            match event {
                Event::Forgotten(_) => forgotten += 1,
                Event::Readable(_) | Event::Ended { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(
        forgotten, 0,
        "all forgotten at the end of the BYE grace already"
    );
    assert_eq!((engine.dialogs(), engine.transactions()), (0, 0));
    assert_eq!(engine.open_dialogs(), 0);
}

#[test]
fn thousands_of_callers_that_never_ack_are_hung_up_by_timer_h() {
    let start = Instant::now();
    let mut now = start;
    let mut engine = new_engine(now);
    let calls: Vec<CallInfo> = (0..CALLS)
        .map(|n| {
            let key = admitted(&mut engine, now, n);
            let call = engine
                .answer(now, &key, 200, SDP.to_vec())
                .expect("a dialog");
            assert_eq!(only_response(&drain(&mut engine)).status, 200);
            let headers = vec![("Refer-To".into(), "<sip:carol@127.0.0.1>".into())];
            engine.refer(now, n as u64, call.id.clone(), headers);
            call
        })
        .collect();
    assert!(
        drain(&mut engine).sent.is_empty(),
        "the REFERs wait for the ACKs"
    );

    // No ACK ever comes: the 200s are retransmitted (Timer G), and at Timer H (64·T1 = 32 s)
    // each call's REFER fails unsent and the call ends with a BYE of ours.
    let (mut resent_200, mut gone, mut ended, mut forgotten) = (0, 0, 0, 0);
    // Calls hung up (a BYE each, retransmitted while the caller stays silent).
    let mut byes = std::collections::HashSet::new();
    let timer_h = start + Duration::from_secs(32);
    let mut wake_ups = 0;
    while let Some(at) = engine.poll_timeout() {
        if at > timer_h + Duration::from_secs(1) {
            break;
        }
        wake_ups += 1;
        assert!(wake_ups < 100 * CALLS, "the clock keeps waking the engine");
        now = now.max(at);
        engine.handle_timeout(now);
        let drained = drain(&mut engine);
        for transmit in &drained.sent {
            match wire::parse(&transmit.bytes).expect("valid SIP") {
                Message::Response(response) if response.status == 200 => resent_200 += 1,
                Message::Request(request) if request.method == Method::Bye => {
                    assert!(now >= timer_h, "a BYE before Timer H");
                    byes.insert(request.call_id().expect("Call-ID").to_owned());
                }
                other => panic!("unexpected message {other:?}"),
            }
        }
        for event in drained.events {
            match event {
                Event::Referred { result, .. } => {
                    assert_eq!(result, Err(ReferFailure::DialogGone));
                    gone += 1;
                }
                Event::Ended { by_peer, .. } => {
                    assert!(!by_peer);
                    ended += 1;
                }
                Event::Readable(_) => {}
                // Nothing to read in them (the REFERs never went out): gone at once.
                Event::Forgotten(_) => forgotten += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!((byes.len(), gone, ended), (CALLS, CALLS, CALLS));
    // Timer G: T1, 2·T1, 4·T1, then every T2 (4 s) until Timer H: 0.5, 1.5, 3.5, 7.5, ...
    // 31.5 s, 10 retransmissions of each 200.
    assert_eq!(resent_200, 10 * CALLS);
    let unacked = engine
        .stats()
        .unacked_answers
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(unacked, CALLS as u64);
    assert_eq!(
        (engine.open_dialogs(), engine.dialogs(), forgotten),
        (0, 0, CALLS)
    );
    let _ = calls;
}

#[test]
fn a_refer_that_could_not_be_sent_fails_at_once() {
    let now = Instant::now();
    let mut engine = new_engine(now);
    let key = admitted(&mut engine, now, 0);
    let call = engine
        .answer(now, &key, 200, SDP.to_vec())
        .expect("a dialog");
    let ok = only_response(&drain(&mut engine));
    feed(
        &mut engine,
        now,
        &ack(peer_addr(), engine_addr(), &ok, "z9hG4bK-ack"),
    );
    let headers = vec![("Refer-To".into(), "<sip:carol@127.0.0.1>".into())];
    engine.refer(now, 7, call.id.clone(), headers);
    let mut drained = drain(&mut engine);
    let report = drained
        .sent
        .pop()
        .and_then(|t| t.report)
        .expect("the REFER asks to be reported");
    engine.handle_send_error(now, report, "connecting to 127.0.0.1:5070 timed out");
    let events = drain(&mut engine).events;
    let failure = events.iter().find_map(|event| match event {
        Event::Referred { op: 7, result } => Some(result.clone()),
        _ => None,
    });
    assert_eq!(
        failure,
        Some(Err(ReferFailure::Transport(
            "connecting to 127.0.0.1:5070 timed out".into()
        )))
    );
    // The transaction is gone: nothing is retransmitted later.
    engine.handle_timeout(now + Duration::from_secs(1));
    assert!(drain(&mut engine).sent.iter().all(|t| {
        !matches!(wire::parse(&t.bytes), Ok(Message::Request(r)) if r.method == Method::Refer)
    }));
}
