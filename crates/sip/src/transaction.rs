//! RFC 3261 §17 transactions as sans-IO state machines: they take `now`, return what to send,
//! and say when they next want to be woken. No sockets, no clock, no tasks, so every timer is
//! tested deterministically (`tests` below) and the tokio endpoint only drives them.
//!
//! - [`ClientNonInvite`]: REFER, BYE, NOTIFY we send. Timer E retransmits over UDP (T1
//!   doubling to T2, T2 after a provisional), Timer F (64·T1) times out, Timer K (T4 on UDP)
//!   absorbs retransmitted finals.
//! - [`ServerNonInvite`]: NOTIFY, BYE, REFER we receive. Retransmitted requests get the cached
//!   response and are never delivered twice; Timer J (64·T1 on UDP) keeps the cache.
//! - [`ClientInvite`]: Timer A retransmits over UDP, Timer B times out; a non-2xx final is
//!   ACKed by the transaction (Timer D absorbs its retransmissions); a 2xx moves to Accepted
//!   (RFC 6026, Timer M) so retransmitted 2xx reach the dialog, which re-sends its ACK.
//! - [`ServerInvite`]: the final response is retransmitted (Timer G, T1 doubling to T2) until
//!   the ACK arrives or Timer H / L (64·T1) gives up; 2xx included (RFC 6026 Accepted).

use std::time::{Duration, Instant};

/// The protocol timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Round-trip estimate, 500 ms.
    pub t1: Duration,
    /// Longest retransmission interval, 4 s.
    pub t2: Duration,
    /// Longest time a message stays in the network, 5 s.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// 64·T1: Timers B, F, H, J, L, M.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// What a client transaction tells its user after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Pass the response up (the first of each provisional and the final).
    Deliver,
    /// A retransmission or a late response: nothing to do.
    Absorb,
}

/// Output of a timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    /// Nothing due.
    Idle,
    /// Send these bytes again.
    Retransmit(Vec<u8>),
    /// No final response came (Timer B or F): report a local 408.
    TimedOut,
    /// The transaction is over and can be forgotten.
    Terminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// A non-INVITE client transaction.
#[derive(Debug)]
pub struct ClientNonInvite {
    request: Vec<u8>,
    reliable: bool,
    timers: Timers,
    state: ClientState,
    interval: Duration,
    retransmit_at: Option<Instant>,
    deadline: Instant,
    forget_at: Option<Instant>,
}

impl ClientNonInvite {
    /// Starts the transaction for `request`, which the caller sends now.
    pub fn new(request: Vec<u8>, reliable: bool, timers: Timers, now: Instant) -> Self {
        ClientNonInvite {
            request,
            reliable,
            timers,
            state: ClientState::Trying,
            interval: timers.t1,
            retransmit_at: (!reliable).then(|| now + timers.t1),
            deadline: now + timers.timeout(),
            forget_at: None,
        }
    }

    /// A response with `status` arrived.
    pub fn on_response(&mut self, status: u16, now: Instant) -> ClientEvent {
        match (self.state, status) {
            (ClientState::Trying | ClientState::Proceeding, 100..=199) => {
                if self.state == ClientState::Proceeding {
                    return ClientEvent::Absorb;
                }
                self.state = ClientState::Proceeding;
                if !self.reliable {
                    // Entering Proceeding, Timer E switches to T2 (RFC 3261 §17.1.2.2).
                    self.interval = self.timers.t2;
                    self.retransmit_at = Some(now + self.timers.t2);
                }
                ClientEvent::Deliver
            }
            (ClientState::Trying | ClientState::Proceeding, _) => {
                self.state = ClientState::Completed;
                self.retransmit_at = None;
                self.forget_at = Some(
                    now + if self.reliable {
                        Duration::ZERO
                    } else {
                        self.timers.t4
                    },
                );
                ClientEvent::Deliver
            }
            _ => ClientEvent::Absorb,
        }
    }

    /// Runs the timers due at `now`.
    pub fn on_tick(&mut self, now: Instant) -> Tick {
        match self.state {
            ClientState::Trying | ClientState::Proceeding => {
                if now >= self.deadline {
                    self.state = ClientState::Terminated;
                    return Tick::TimedOut;
                }
                match self.retransmit_at {
                    Some(at) if now >= at => {
                        if self.state == ClientState::Trying {
                            self.interval = (self.interval * 2).min(self.timers.t2);
                        }
                        self.retransmit_at = Some(now + self.interval);
                        Tick::Retransmit(self.request.clone())
                    }
                    _ => Tick::Idle,
                }
            }
            ClientState::Completed => match self.forget_at {
                Some(at) if now >= at => {
                    self.state = ClientState::Terminated;
                    Tick::Terminated
                }
                _ => Tick::Idle,
            },
            ClientState::Terminated => Tick::Terminated,
        }
    }

    /// When [`Self::on_tick`] next has something to do.
    pub fn next_wake(&self) -> Option<Instant> {
        match self.state {
            ClientState::Trying | ClientState::Proceeding => Some(
                self.retransmit_at
                    .map_or(self.deadline, |at| at.min(self.deadline)),
            ),
            ClientState::Completed => self.forget_at,
            ClientState::Terminated => None,
        }
    }

    /// True once the transaction can be forgotten.
    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }
}

/// What a server transaction says about a request that matched it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A retransmission: send these bytes (the cached response) again.
    Resend(Vec<u8>),
    /// A retransmission before any response: nothing to send yet.
    Absorb,
}

/// A non-INVITE server transaction: caches its response for retransmitted requests.
#[derive(Debug)]
pub struct ServerNonInvite {
    reliable: bool,
    timers: Timers,
    last_response: Option<Vec<u8>>,
    final_sent: bool,
    forget_at: Option<Instant>,
    /// A request nobody answers (a bug upstream) is forgotten after 64·T1.
    abandon_at: Instant,
}

impl ServerNonInvite {
    /// A new transaction for a request received at `now`; the caller delivers it once.
    pub fn new(reliable: bool, timers: Timers, now: Instant) -> Self {
        ServerNonInvite {
            reliable,
            timers,
            last_response: None,
            final_sent: false,
            forget_at: None,
            abandon_at: now + timers.timeout(),
        }
    }

    /// The transaction user responds; the caller sends `bytes`. Responses after the final one
    /// are refused (returns false) and must not be sent.
    pub fn respond(&mut self, status: u16, bytes: Vec<u8>, now: Instant) -> bool {
        if self.final_sent {
            return false;
        }
        if status >= 200 {
            self.final_sent = true;
            self.forget_at = Some(
                now + if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.timeout()
                },
            );
        }
        self.last_response = Some(bytes);
        true
    }

    /// The same request arrived again.
    pub fn on_retransmission(&self) -> ServerEvent {
        match &self.last_response {
            Some(bytes) => ServerEvent::Resend(bytes.clone()),
            None => ServerEvent::Absorb,
        }
    }

    /// Runs the timers due at `now`.
    pub fn on_tick(&mut self, now: Instant) -> Tick {
        match self.forget_at {
            Some(at) if now >= at => Tick::Terminated,
            None if now >= self.abandon_at => Tick::Terminated,
            _ => Tick::Idle,
        }
    }

    /// When [`Self::on_tick`] next has something to do.
    pub fn next_wake(&self) -> Option<Instant> {
        Some(self.forget_at.unwrap_or(self.abandon_at))
    }
}

/// An INVITE client transaction.
#[derive(Debug)]
pub struct ClientInvite {
    invite: Vec<u8>,
    reliable: bool,
    timers: Timers,
    state: InviteClientState,
    interval: Duration,
    retransmit_at: Option<Instant>,
    deadline: Instant,
    ack: Option<Vec<u8>>,
    forget_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InviteClientState {
    Calling,
    Proceeding,
    /// A non-2xx final was ACKed.
    Completed,
    /// A 2xx arrived; retransmitted 2xx still reach the dialog (RFC 6026).
    Accepted,
    Terminated,
}

/// What an INVITE client transaction says after a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InviteClientEvent {
    /// Pass the response up.
    Deliver,
    /// Pass the response up and send this ACK (for a non-2xx final).
    DeliverAndAck(Vec<u8>),
    /// A retransmitted non-2xx final: send the ACK again.
    Ack(Vec<u8>),
    /// A retransmitted 2xx: the dialog re-sends its own ACK.
    Retransmitted2xx,
    /// Nothing to do.
    Absorb,
}

impl ClientInvite {
    /// Starts the transaction for `invite`, which the caller sends now.
    pub fn new(invite: Vec<u8>, reliable: bool, timers: Timers, now: Instant) -> Self {
        ClientInvite {
            invite,
            reliable,
            timers,
            state: InviteClientState::Calling,
            interval: timers.t1,
            retransmit_at: (!reliable).then(|| now + timers.t1),
            deadline: now + timers.timeout(),
            ack: None,
            forget_at: None,
        }
    }

    /// A response arrived. For a non-2xx final, `ack` builds the ACK (same branch, RFC 3261
    /// §17.1.1.3); it is only called then.
    pub fn on_response(
        &mut self,
        status: u16,
        now: Instant,
        ack: impl FnOnce() -> Vec<u8>,
    ) -> InviteClientEvent {
        use InviteClientState::*;
        match (self.state, status) {
            (Calling | Proceeding, 100..=199) => {
                self.state = Proceeding;
                self.retransmit_at = None;
                InviteClientEvent::Deliver
            }
            (Calling | Proceeding, 200..=299) => {
                self.state = Accepted;
                self.retransmit_at = None;
                self.forget_at = Some(now + self.timers.timeout());
                InviteClientEvent::Deliver
            }
            (Calling | Proceeding, _) => {
                self.state = Completed;
                self.retransmit_at = None;
                self.forget_at = Some(
                    now + if self.reliable {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(32)
                    },
                );
                let ack = ack();
                self.ack = Some(ack.clone());
                InviteClientEvent::DeliverAndAck(ack)
            }
            (Completed, 300..) => self
                .ack
                .clone()
                .map_or(InviteClientEvent::Absorb, InviteClientEvent::Ack),
            (Accepted, 200..=299) => InviteClientEvent::Retransmitted2xx,
            _ => InviteClientEvent::Absorb,
        }
    }

    /// Runs the timers due at `now`.
    pub fn on_tick(&mut self, now: Instant) -> Tick {
        use InviteClientState::*;
        match self.state {
            Calling | Proceeding => {
                if now >= self.deadline && self.state == Calling {
                    self.state = Terminated;
                    return Tick::TimedOut;
                }
                match self.retransmit_at {
                    Some(at) if now >= at => {
                        self.interval *= 2;
                        self.retransmit_at = Some(now + self.interval);
                        Tick::Retransmit(self.invite.clone())
                    }
                    _ => Tick::Idle,
                }
            }
            Completed | Accepted => match self.forget_at {
                Some(at) if now >= at => {
                    self.state = Terminated;
                    Tick::Terminated
                }
                _ => Tick::Idle,
            },
            Terminated => Tick::Terminated,
        }
    }

    /// When [`Self::on_tick`] next has something to do. A proceeding INVITE waits for the
    /// callee as long as the caller wants (no Timer B after a provisional, RFC 3261 §17.1.1.2).
    pub fn next_wake(&self) -> Option<Instant> {
        use InviteClientState::*;
        match self.state {
            Calling => Some(
                self.retransmit_at
                    .map_or(self.deadline, |at| at.min(self.deadline)),
            ),
            Proceeding => None,
            Completed | Accepted => self.forget_at,
            Terminated => None,
        }
    }
}

/// An INVITE server transaction (with the RFC 6026 2xx retransmission folded in).
#[derive(Debug)]
pub struct ServerInvite {
    reliable: bool,
    timers: Timers,
    response: Option<Vec<u8>>,
    final_sent: bool,
    acked: bool,
    interval: Duration,
    retransmit_at: Option<Instant>,
    give_up_at: Option<Instant>,
    forget_at: Option<Instant>,
}

/// What happened to an INVITE server transaction on a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerInviteTick {
    /// Nothing due.
    Idle,
    /// Send the final response again.
    Retransmit(Vec<u8>),
    /// No ACK came for the final response (Timer H or L): the dialog failed.
    NoAck,
    /// The transaction is over.
    Terminated,
}

impl ServerInvite {
    /// A new transaction for an INVITE received at `now`.
    pub fn new(reliable: bool, timers: Timers) -> Self {
        ServerInvite {
            reliable,
            timers,
            response: None,
            final_sent: false,
            acked: false,
            interval: timers.t1,
            retransmit_at: None,
            give_up_at: None,
            forget_at: None,
        }
    }

    /// The user responds; the caller sends `bytes`. False (and nothing to send) after the final.
    pub fn respond(&mut self, status: u16, bytes: Vec<u8>, now: Instant) -> bool {
        if self.final_sent {
            return false;
        }
        if status >= 200 {
            self.final_sent = true;
            // Over TCP only a 2xx is retransmitted (end to end, RFC 3261 §13.3.1.4).
            if !self.reliable || status < 300 {
                self.retransmit_at = Some(now + self.timers.t1);
            }
            self.give_up_at = Some(now + self.timers.timeout());
        }
        self.response = Some(bytes);
        true
    }

    /// The INVITE arrived again: resend the last response, if any.
    pub fn on_retransmission(&self) -> ServerEvent {
        match &self.response {
            Some(bytes) if !self.acked => ServerEvent::Resend(bytes.clone()),
            _ => ServerEvent::Absorb,
        }
    }

    /// The ACK arrived.
    pub fn on_ack(&mut self, now: Instant) {
        if self.final_sent && !self.acked {
            self.acked = true;
            self.retransmit_at = None;
            self.forget_at = Some(
                now + if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                },
            );
        }
    }

    /// Whether the ACK has arrived.
    pub fn is_acked(&self) -> bool {
        self.acked
    }

    /// Runs the timers due at `now`.
    pub fn on_tick(&mut self, now: Instant) -> ServerInviteTick {
        if self.acked {
            return match self.forget_at {
                Some(at) if now >= at => ServerInviteTick::Terminated,
                _ => ServerInviteTick::Idle,
            };
        }
        if self.give_up_at.is_some_and(|at| now >= at) {
            self.give_up_at = None;
            self.retransmit_at = None;
            self.forget_at = Some(now);
            return ServerInviteTick::NoAck;
        }
        match (self.retransmit_at, &self.response) {
            (Some(at), Some(bytes)) if now >= at => {
                self.interval = (self.interval * 2).min(self.timers.t2);
                self.retransmit_at = Some(now + self.interval);
                ServerInviteTick::Retransmit(bytes.clone())
            }
            _ => match self.forget_at {
                Some(at) if now >= at => ServerInviteTick::Terminated,
                _ => ServerInviteTick::Idle,
            },
        }
    }

    /// When [`Self::on_tick`] next has something to do.
    pub fn next_wake(&self) -> Option<Instant> {
        [self.retransmit_at, self.give_up_at, self.forget_at]
            .into_iter()
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(start: Instant, n: u64) -> Instant {
        start + Duration::from_millis(n)
    }

    /// Drives `tick` at every wake-up until `until`, collecting (ms since start, output).
    fn run<T: PartialEq + std::fmt::Debug>(
        start: Instant,
        until: u64,
        mut wake: impl FnMut() -> Option<Instant>,
        mut tick: impl FnMut(Instant) -> T,
        idle: T,
    ) -> Vec<(u128, T)> {
        let mut out = Vec::new();
        while let Some(at) = wake() {
            if at > ms(start, until) {
                break;
            }
            let result = tick(at);
            if result != idle {
                out.push(((at - start).as_millis(), result));
            }
            if out.len() > 100 {
                break;
            }
        }
        out
    }

    #[test]
    fn non_invite_client_retransmits_on_udp_with_timer_e_then_times_out_with_f() {
        let start = Instant::now();
        let mut tx = ClientNonInvite::new(b"REFER".to_vec(), false, Timers::default(), start);
        let tx = std::cell::RefCell::new(&mut tx);
        let ticks = run(
            start,
            40_000,
            || tx.borrow().next_wake(),
            |now| tx.borrow_mut().on_tick(now),
            Tick::Idle,
        );
        let times: Vec<u128> = ticks.iter().map(|(t, _)| *t).collect();
        // T1 doubling to T2 (500, 1000, 2000, 4000, 4000 ...) until Timer F at 64·T1 = 32 s.
        assert_eq!(
            times,
            [
                500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500, 32000
            ]
        );
        assert_eq!(ticks.last().map(|(_, t)| t.clone()), Some(Tick::TimedOut));
        assert!(tx.borrow().is_terminated());
    }

    #[test]
    fn non_invite_client_after_a_provisional_retransmits_every_t2_and_absorbs_final_repeats() {
        let start = Instant::now();
        let mut tx = ClientNonInvite::new(b"BYE".to_vec(), false, Timers::default(), start);
        assert_eq!(
            tx.on_tick(ms(start, 500)),
            Tick::Retransmit(b"BYE".to_vec())
        );
        assert_eq!(tx.on_response(100, ms(start, 600)), ClientEvent::Deliver);
        assert_eq!(tx.on_response(100, ms(start, 700)), ClientEvent::Absorb);
        assert_eq!(tx.next_wake(), Some(ms(start, 4600)));
        assert_eq!(
            tx.on_tick(ms(start, 4600)),
            Tick::Retransmit(b"BYE".to_vec())
        );
        assert_eq!(tx.on_response(200, ms(start, 5000)), ClientEvent::Deliver);
        assert_eq!(
            tx.on_response(200, ms(start, 5100)),
            ClientEvent::Absorb,
            "Timer K absorbs"
        );
        assert_eq!(tx.next_wake(), Some(ms(start, 10_000)), "Timer K = T4");
        assert_eq!(tx.on_tick(ms(start, 10_000)), Tick::Terminated);
    }

    #[test]
    fn non_invite_client_on_tcp_never_retransmits() {
        let start = Instant::now();
        let mut tx = ClientNonInvite::new(b"REFER".to_vec(), true, Timers::default(), start);
        assert_eq!(tx.next_wake(), Some(ms(start, 32_000)));
        assert_eq!(tx.on_tick(ms(start, 31_999)), Tick::Idle);
        assert_eq!(tx.on_response(202, ms(start, 100)), ClientEvent::Deliver);
        assert_eq!(
            tx.on_tick(ms(start, 100)),
            Tick::Terminated,
            "Timer K = 0 on TCP"
        );
    }

    #[test]
    fn non_invite_server_answers_retransmissions_from_its_cache() {
        let start = Instant::now();
        let mut tx = ServerNonInvite::new(false, Timers::default(), start);
        assert_eq!(tx.on_retransmission(), ServerEvent::Absorb);
        assert!(tx.respond(200, b"200".to_vec(), ms(start, 10)));
        assert_eq!(tx.on_retransmission(), ServerEvent::Resend(b"200".to_vec()));
        assert!(
            !tx.respond(500, b"500".to_vec(), ms(start, 20)),
            "one final only"
        );
        assert_eq!(
            tx.on_tick(ms(start, 32_009)),
            Tick::Idle,
            "Timer J keeps the cache"
        );
        assert_eq!(tx.on_tick(ms(start, 32_010)), Tick::Terminated);
        let mut tcp = ServerNonInvite::new(true, Timers::default(), start);
        tcp.respond(200, b"200".to_vec(), start);
        assert_eq!(tcp.on_tick(start), Tick::Terminated, "Timer J = 0 on TCP");
    }

    #[test]
    fn invite_client_acks_non_2xx_and_hands_2xx_retransmissions_to_the_dialog() {
        let start = Instant::now();
        let mut tx = ClientInvite::new(b"INVITE".to_vec(), false, Timers::default(), start);
        assert_eq!(
            tx.on_tick(ms(start, 500)),
            Tick::Retransmit(b"INVITE".to_vec())
        );
        assert_eq!(
            tx.on_tick(ms(start, 1500)),
            Tick::Retransmit(b"INVITE".to_vec()),
            "Timer A doubles"
        );
        assert_eq!(
            tx.on_response(180, ms(start, 1600), Vec::new),
            InviteClientEvent::Deliver
        );
        assert_eq!(tx.next_wake(), None, "no Timer B once proceeding");
        let mut busy = ClientInvite::new(b"INVITE".to_vec(), false, Timers::default(), start);
        assert_eq!(
            busy.on_response(486, ms(start, 100), || b"ACK".to_vec()),
            InviteClientEvent::DeliverAndAck(b"ACK".to_vec())
        );
        assert_eq!(
            busy.on_response(486, ms(start, 600), || unreachable!()),
            InviteClientEvent::Ack(b"ACK".to_vec())
        );
        assert_eq!(busy.on_tick(ms(start, 32_100)), Tick::Terminated, "Timer D");
        assert_eq!(
            tx.on_response(200, ms(start, 2000), Vec::new),
            InviteClientEvent::Deliver
        );
        assert_eq!(
            tx.on_response(200, ms(start, 2500), Vec::new),
            InviteClientEvent::Retransmitted2xx
        );
        assert_eq!(tx.on_tick(ms(start, 34_000)), Tick::Terminated, "Timer M");
    }

    #[test]
    fn invite_client_times_out_with_timer_b() {
        let start = Instant::now();
        let mut tx = ClientInvite::new(b"INVITE".to_vec(), true, Timers::default(), start);
        assert_eq!(tx.next_wake(), Some(ms(start, 32_000)));
        assert_eq!(tx.on_tick(ms(start, 32_000)), Tick::TimedOut);
    }

    #[test]
    fn invite_server_retransmits_its_2xx_until_the_ack() {
        let start = Instant::now();
        let mut tx = ServerInvite::new(false, Timers::default());
        assert_eq!(tx.on_retransmission(), ServerEvent::Absorb);
        tx.respond(180, b"180".to_vec(), start);
        assert_eq!(tx.on_retransmission(), ServerEvent::Resend(b"180".to_vec()));
        tx.respond(200, b"200".to_vec(), ms(start, 100));
        let tx = std::cell::RefCell::new(tx);
        let ticks = run(
            start,
            4_000,
            || tx.borrow().next_wake(),
            |now| tx.borrow_mut().on_tick(now),
            ServerInviteTick::Idle,
        );
        let times: Vec<u128> = ticks.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, [600, 1600, 3600], "Timer G: T1 doubling");
        let mut tx = tx.into_inner();
        tx.on_ack(ms(start, 3700));
        assert!(tx.is_acked());
        assert_eq!(tx.on_tick(ms(start, 3800)), ServerInviteTick::Idle);
        assert_eq!(
            tx.on_tick(ms(start, 8700)),
            ServerInviteTick::Terminated,
            "Timer I = T4"
        );
    }

    #[test]
    fn invite_server_gives_up_without_an_ack() {
        let start = Instant::now();
        let mut tx = ServerInvite::new(true, Timers::default());
        tx.respond(200, b"200".to_vec(), start);
        assert_eq!(
            tx.on_tick(ms(start, 500)),
            ServerInviteTick::Retransmit(b"200".to_vec()),
            "2xx retransmitted even on TCP"
        );
        assert_eq!(tx.on_tick(ms(start, 32_000)), ServerInviteTick::NoAck);
        assert_eq!(tx.on_tick(ms(start, 32_000)), ServerInviteTick::Terminated);
    }
}
