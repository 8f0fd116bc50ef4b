//! The endpoint on tokio: a thin driver around the sans-IO [`Engine`]. One task owns the
//! engine; it feeds it what the transport receives, the API calls of [`Call`] and
//! [`IncomingCall`] handles (over a channel), send failures and its deadline, and carries out
//! what the engine asks for: messages to send (a host name is resolved in a task of its own,
//! never on the driver), calls to hand to [`Endpoint::accept`], answers to the waiting API
//! calls, and the wake-ups of the [`Call`] handles.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot, watch};

pub use crate::admission::Admission;
pub use crate::transport::TcpLimits;

use crate::dialog::{DialogId, SubscriptionError, SubscriptionEvent};
use crate::engine::{self, CallInfo, Destination, Engine, Event, InviteKey, Op, SendRef, Transmit};
use crate::hep::Capture;
use crate::message::{Headers, Request};
use crate::trace;
use crate::transaction::Timers;
use crate::transport::{self, Inbound, SendFailure, Sender, Transport};

/// How an endpoint is set up.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Address to listen on (port 0 picks one).
    pub bind: SocketAddr,
    /// UDP or TCP.
    pub transport: Transport,
    /// Protocol timers.
    pub timers: Timers,
    /// The user part of our Contact.
    pub contact_user: String,
    /// How long after a BYE a NOTIFY is still accepted and counted, so a final NOTIFY that
    /// lands on the heels of the BYE is not lost.
    pub bye_grace: Duration,
    /// Which new calls are taken when the endpoint is loaded (caps, rate, queue delay).
    pub admission: Admission,
    /// Limits on TCP connections (ignored on UDP).
    pub tcp: TcpLimits,
    /// Where a copy of every message sent and received goes (HEP v3 export), if anywhere.
    /// Offering a message never blocks: a full export queue drops it from the export only.
    pub capture: Option<Capture>,
    /// An outbound proxy (a SIP URI such as `sip:127.0.0.1:5060`): the INVITEs of
    /// [`Endpoint::call`] go to it with a pre-loaded `Route: <URI;lr>` (RFC 3261 §8.1.2)
    /// instead of straight to the target. Requests inside the call then follow the route set
    /// of the 2xx (the proxy stays on the path when it record-routes). `None` (the default)
    /// sends to the target.
    pub outbound_proxy: Option<String>,
}

impl EndpointConfig {
    /// UDP on `bind`, default timers.
    pub fn udp(bind: SocketAddr) -> Self {
        EndpointConfig {
            bind,
            transport: Transport::Udp,
            timers: Timers::default(),
            contact_user: "verbhost".into(),
            bye_grace: verbhost_common::subscription::BYE_GRACE,
            admission: Admission::default(),
            tcp: TcpLimits::default(),
            capture: None,
            outbound_proxy: None,
        }
    }

    /// TCP on `bind`, default timers.
    pub fn tcp(bind: SocketAddr) -> Self {
        EndpointConfig {
            transport: Transport::Tcp,
            ..Self::udp(bind)
        }
    }
}

/// Why a call could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The callee answered with a failure.
    #[error("the call was answered {status} {reason}")]
    Rejected {
        /// Status code.
        status: u16,
        /// Reason phrase.
        reason: String,
    },
    /// No final answer in time (Timer B).
    #[error("no answer to the INVITE (timeout)")]
    Timeout,
    /// The target is not a usable SIP URI or cannot be resolved.
    #[error("bad target {0}")]
    Target(String),
    /// Sending failed.
    #[error("transport failure: {0}")]
    Transport(String),
    /// The endpoint has shut down.
    #[error("the endpoint is closed")]
    Closed,
}

/// Why a REFER got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferFailure {
    /// No final response (Timer F).
    #[error("no final response to the REFER (timeout)")]
    Timeout,
    /// The dialog no longer exists.
    #[error("the dialog no longer exists")]
    DialogGone,
    /// Sending failed.
    #[error("transport failure: {0}")]
    Transport(String),
}

/// The final response to a REFER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferAnswer {
    /// The REFER's CSeq number: the NOTIFYs' `Event: refer;id=`.
    pub refer_id: u32,
    /// Status code.
    pub status: u16,
    /// Reason phrase as received.
    pub reason: String,
    /// All headers of the response.
    pub headers: Headers,
}

/// What waiting on a subscription gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferWait {
    /// An event.
    Event(SubscriptionEvent),
    /// Nothing within the timeout.
    TimedOut,
    /// No such subscription, or it has ended and everything was read.
    Unknown,
}

/// What the endpoint counted.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages that did not parse and could not be answered.
    pub dropped: AtomicU64,
    /// Keep-alives received (only CR/LF), dropped as they should be.
    pub dropped_keepalive: AtomicU64,
    /// Requests dropped because their top Via has no branch.
    pub dropped_no_branch: AtomicU64,
    /// Responses dropped because they match none of our transactions.
    pub dropped_stray_response: AtomicU64,
    /// Requests answered 400 or 505 because they did not parse.
    pub rejected: AtomicU64,
    /// Requests answered 481: no such dialog or transaction.
    pub answered_no_dialog: AtomicU64,
    /// Requests answered 501: a method we do not implement.
    pub answered_not_implemented: AtomicU64,
    /// NOTIFYs answered 489: an Event we do not know.
    pub answered_bad_event: AtomicU64,
    /// In-dialog requests answered 400 (no CSeq) or 500 (CSeq out of order).
    pub answered_bad_cseq: AtomicU64,
    /// Retransmitted requests answered from a transaction's cache.
    pub retransmissions: AtomicU64,
    /// NOTIFYs answered 200 but not queued: the same Subscription-State, Content-Type and
    /// body as the subscription's previous NOTIFY.
    pub notify_duplicates: AtomicU64,
    /// Progress NOTIFYs answered 200 but not delivered: past the per-subscription limit.
    pub notify_excess: AtomicU64,
    /// Queued progress NOTIFYs dropped to make room for a newer one (the queue was full).
    pub notify_coalesced: AtomicU64,
    /// New INVITEs refused 503: `max_calls` calls were in progress.
    pub refused_max_calls: AtomicU64,
    /// New INVITEs refused 503: over `max_calls_per_sec`.
    pub refused_rate: AtomicU64,
    /// New INVITEs refused 503: they waited longer than `max_queue_delay` to be read.
    pub refused_queue_delay: AtomicU64,
    /// New INVITEs refused 503: the application's queue of calls to accept was full (or
    /// nobody accepts calls).
    pub refused_no_capacity: AtomicU64,
    /// New INVITEs refused 503: the endpoint is draining ([`Endpoint::set_draining`]).
    pub refused_draining: AtomicU64,
    /// 2xx answers of ours to an INVITE that got no ACK within Timer H (64·T1): the dialog
    /// never came up for the peer (RFC 3261 §13.3.1.4), so requests waiting for the ACK
    /// failed and the call was ended with a BYE.
    pub unacked_answers: AtomicU64,
    /// Inbound calls dropped by the application without an answer, answered 500 for it.
    pub unanswered_calls: AtomicU64,
    /// TCP connections closed at once: `max_connections` were open.
    pub tcp_refused_max: AtomicU64,
    /// TCP connections closed at once: `max_connections_per_ip` were open from that address.
    pub tcp_refused_per_ip: AtomicU64,
    /// TCP connections closed because a message stayed incomplete past `message_timeout`.
    pub tcp_message_timeouts: AtomicU64,
    /// TCP connections closed after `idle_timeout` without traffic.
    pub tcp_idle_timeouts: AtomicU64,
    /// TCP connections closed because their stream could not be framed (bad or oversized
    /// Content-Length, a head over the size cap).
    pub tcp_unframeable: AtomicU64,
    /// Messages not sent on TCP because the peer does not read: its send queue was full.
    pub tcp_send_queue_full: AtomicU64,
    /// TCP connections closed because the peer did not take a message within
    /// `message_timeout`.
    pub tcp_write_timeouts: AtomicU64,
}

/// A SIP endpoint on one transport.
#[derive(Clone)]
pub struct Endpoint {
    commands: mpsc::UnboundedSender<Command>,
    /// The Route of the outbound proxy [`Self::call`] sends its INVITEs to, if any.
    outbound_proxy: Option<Arc<str>>,
    local: SocketAddr,
    transport: Transport,
    incoming: Arc<tokio::sync::Mutex<mpsc::Receiver<IncomingCall>>>,
    stats: Arc<Stats>,
    draining: Arc<AtomicBool>,
}

/// An INVITE that arrived; answer or reject it. One dropped without either (a caller that
/// panics or returns early) is answered `500 Server Internal Error` for it, so the caller is
/// not left at 100 Trying.
pub struct IncomingCall {
    /// The INVITE.
    pub invite: Request,
    /// Where it came from.
    pub from: SocketAddr,
    guard: AnswerOnDrop,
}

/// Tells the core when an [`IncomingCall`] is gone. The core answers 500 unless the call was
/// already answered; commands are handled in order, so an answer sent just before the drop
/// always wins.
struct AnswerOnDrop {
    key: InviteKey,
    endpoint: Endpoint,
}

impl Drop for AnswerOnDrop {
    fn drop(&mut self) {
        let _ = self.endpoint.commands.send(Command::Unanswered {
            key: self.key.clone(),
        });
    }
}

/// An established call.
#[derive(Clone)]
pub struct Call {
    endpoint: Endpoint,
    id: DialogId,
    events: Arc<Notify>,
    ended: watch::Receiver<bool>,
    /// Set when the peer's BYE ended the dialog (not ours, nor a Timer H BYE).
    peer_hung_up: Arc<AtomicBool>,
    /// The peer's SDP.
    pub remote_sdp: Vec<u8>,
    /// The INVITE's From header.
    pub from: String,
    /// The INVITE's To header (as the dialog has it, with the remote tag for outbound).
    pub to: String,
}

enum Command {
    Invite {
        /// The target's (or the outbound proxy's) address.
        peer: SocketAddr,
        target: String,
        from: String,
        to: String,
        sdp: Vec<u8>,
        reply: oneshot::Sender<Result<Call, CallError>>,
    },
    Answer {
        key: InviteKey,
        status: u16,
        sdp: Vec<u8>,
        reply: oneshot::Sender<Option<Call>>,
    },
    Refer {
        id: DialogId,
        headers: Vec<(String, String)>,
        reply: oneshot::Sender<Result<ReferAnswer, ReferFailure>>,
    },
    NextEvent {
        id: DialogId,
        refer_id: u32,
        reply: oneshot::Sender<Result<Option<SubscriptionEvent>, SubscriptionError>>,
    },
    /// An [`IncomingCall`] was dropped: answer 500 unless it was answered.
    Unanswered { key: InviteKey },
    Bye {
        id: DialogId,
        reply: oneshot::Sender<Result<(), ReferFailure>>,
    },
}

impl Endpoint {
    /// Binds the transport and starts the core task.
    pub async fn bind(config: EndpointConfig) -> std::io::Result<Endpoint> {
        let (inbound_tx, inbound) = mpsc::channel(1024);
        let (failures_tx, failures) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let (sender, local) = transport::bind(
            config.transport,
            config.bind,
            inbound_tx,
            failures_tx,
            config.tcp,
            stats.clone(),
        )
        .await?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming) = mpsc::channel(64);
        let endpoint = Endpoint {
            commands,
            outbound_proxy: config
                .outbound_proxy
                .as_deref()
                .map(|proxy| Arc::from(engine::proxy_route(proxy))),
            local,
            transport: config.transport,
            incoming: Arc::new(tokio::sync::Mutex::new(incoming)),
            stats: stats.clone(),
            draining: Arc::new(AtomicBool::new(false)),
        };
        let driver = Driver {
            outbox: Outbox {
                sender,
                transport: config.transport,
                local,
                capture: config.capture.clone(),
            },
            engine: Engine::new(config, local, stats, Instant::now()),
            incoming: incoming_tx,
            waiting: HashMap::new(),
            next_op: 0,
            calls: HashMap::new(),
            draining: endpoint.draining.clone(),
            handle: endpoint.clone(),
        };
        tokio::spawn(driver.run(inbound, command_rx, failures));
        Ok(endpoint)
    }

    /// The address the transport listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The transport.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// What the endpoint counted.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Starts (`true`) or ends (`false`) draining. While draining, every new INVITE is
    /// refused statelessly with `503 Service Unavailable` and `Retry-After` (counted in
    /// [`Stats::refused_draining`]), and an OPTIONS outside a dialog is answered the same
    /// 503 instead of 200, so a load balancer that probes with OPTIONS (a Kamailio
    /// dispatcher) takes this node out of rotation. Calls in progress are not affected.
    /// Off when the endpoint is bound.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    /// Whether the endpoint is draining ([`Self::set_draining`]).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Sends a command to the core and waits for its reply; `None` when the core is gone.
    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).ok()?;
        answer.await.ok()
    }

    /// Places a call to `target` (a SIP URI) with an SDP offer; resolves once it is answered.
    pub async fn call(&self, target: &str, from: &str, sdp: Vec<u8>) -> Result<Call, CallError> {
        // Resolved here, in the caller's task: the driver never waits for a name.
        let hop = self.outbound_proxy.as_deref().unwrap_or(target);
        let Some(peer) = resolve(hop).await else {
            return Err(CallError::Target(match &self.outbound_proxy {
                Some(proxy) => format!("outbound proxy {proxy}"),
                None => target.to_owned(),
            }));
        };
        self.ask(|reply| Command::Invite {
            peer,
            target: target.to_owned(),
            from: from.to_owned(),
            to: format!("<{target}>"),
            sdp,
            reply,
        })
        .await
        .ok_or(CallError::Closed)?
    }

    /// The next inbound call; `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<IncomingCall> {
        self.incoming.lock().await.recv().await
    }
}

impl IncomingCall {
    /// Answers 200 with `sdp`; the call is established when this returns (the ACK may
    /// follow). Requests of ours in the call ([`Call::refer`], [`Call::hangup`]) wait for the
    /// ACK before they go out.
    pub async fn answer(self, sdp: Vec<u8>) -> Option<Call> {
        self.guard
            .endpoint
            .ask(|reply| Command::Answer {
                key: self.guard.key.clone(),
                status: 200,
                sdp,
                reply,
            })
            .await
            .flatten()
    }

    /// Refuses the call with `status` (4xx-6xx).
    pub async fn reject(self, status: u16) {
        self.guard
            .endpoint
            .ask(|reply| Command::Answer {
                key: self.guard.key.clone(),
                status,
                sdp: Vec::new(),
                reply,
            })
            .await;
    }
}

impl Call {
    /// The dialog's identity.
    pub fn id(&self) -> &DialogId {
        &self.id
    }

    /// Sends a REFER in the dialog with `headers` (Refer-To, Referred-By and any extra ones)
    /// and resolves with its final response. The subscription exists from the moment it is
    /// sent.
    ///
    /// On an inbound call the REFER waits until the dialog is confirmed (the ACK for our 200
    /// arrived): sent earlier, it could overtake the 200 through a proxy and reach a peer
    /// that has no dialog yet. It goes out the moment the ACK arrives. If no ACK comes
    /// within Timer H (64·T1) the dialog never came up: the REFER is never sent and this
    /// fails with [`ReferFailure::DialogGone`].
    pub async fn refer(&self, headers: Vec<(String, String)>) -> Result<ReferAnswer, ReferFailure> {
        self.endpoint
            .ask(|reply| Command::Refer {
                id: self.id.clone(),
                headers,
                reply,
            })
            .await
            .ok_or(ReferFailure::DialogGone)?
    }

    /// Waits up to `timeout` for the next event of REFER `refer_id`'s subscription.
    pub async fn next_refer_event(&self, refer_id: u32, timeout: Duration) -> ReferWait {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let asked = self.endpoint.ask(|reply| Command::NextEvent {
                id: self.id.clone(),
                refer_id,
                reply,
            });
            match asked.await {
                Some(Ok(Some(event))) => return ReferWait::Event(event),
                Some(Ok(None)) => {}
                Some(Err(_)) | None => return ReferWait::Unknown,
            }
            // The driver stores a permit when an event is queued, so none is missed between
            // the question above and this wait.
            if tokio::time::timeout_at(deadline, self.events.notified())
                .await
                .is_err()
            {
                return ReferWait::TimedOut;
            }
        }
    }

    /// Sends BYE and resolves when it is answered (or the dialog was already gone). On an
    /// inbound call it waits for the ACK like [`Self::refer`] (RFC 3261 §15); without an ACK
    /// the BYE goes out at Timer H (§13.3.1.4).
    pub async fn hangup(&self) -> Result<(), ReferFailure> {
        self.endpoint
            .ask(|reply| Command::Bye {
                id: self.id.clone(),
                reply,
            })
            .await
            .ok_or(ReferFailure::DialogGone)?
    }

    /// Whether the dialog has ended (BYE either way).
    pub fn is_ended(&self) -> bool {
        *self.ended.borrow()
    }

    /// Whether the far end hung up: its BYE ended the dialog. False while the dialog is up
    /// and when verbhost's own BYE ended it (a hangup, a drain that ran out of time, an ACK
    /// that never came).
    pub fn ended_by_peer(&self) -> bool {
        self.peer_hung_up.load(Ordering::Relaxed)
    }

    /// Resolves when the dialog ends.
    pub async fn ended(&self) {
        let mut ended = self.ended.clone();
        let _ = ended.wait_for(|e| *e).await;
    }
}

/// `host:port` of a SIP URI (default port 5060), resolved.
async fn resolve(uri: &str) -> Option<SocketAddr> {
    let host_port = engine::host_port(uri)?;
    tokio::net::lookup_host(host_port).await.ok()?.next()
}

/// How long a host name in a Contact or Record-Route may take to resolve before its message
/// goes to the fallback address.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// An API call waiting for the engine's answer.
enum Waiting {
    Call(oneshot::Sender<Result<Call, CallError>>),
    Refer(oneshot::Sender<Result<ReferAnswer, ReferFailure>>),
    Bye(oneshot::Sender<Result<(), ReferFailure>>),
}

/// What a dialog's [`Call`] handles wait on.
struct CallWakers {
    events: Arc<Notify>,
    ended: watch::Sender<bool>,
    peer_hung_up: Arc<AtomicBool>,
}

/// Where messages go out: the transport, with a trace and an export copy of each.
#[derive(Clone)]
struct Outbox {
    sender: Sender,
    transport: Transport,
    local: SocketAddr,
    capture: Option<Capture>,
}

impl Outbox {
    async fn send(
        &self,
        to: SocketAddr,
        bytes: Vec<u8>,
        report: Option<SendRef>,
    ) -> std::io::Result<()> {
        trace::sent(self.transport, self.local, to, &bytes);
        if let Some(capture) = &self.capture {
            capture.offer(self.transport, self.local, to, &bytes);
        }
        self.sender.send(to, bytes, report).await
    }
}

/// The task that owns the engine and does its I/O.
struct Driver {
    engine: Engine,
    outbox: Outbox,
    incoming: mpsc::Sender<IncomingCall>,
    /// API calls waiting for an [`Event`], by the [`Op`] they were given.
    waiting: HashMap<Op, Waiting>,
    next_op: Op,
    calls: HashMap<DialogId, CallWakers>,
    /// Shared with [`Endpoint::set_draining`].
    draining: Arc<AtomicBool>,
    handle: Endpoint,
}

impl Driver {
    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut failures: mpsc::UnboundedReceiver<SendFailure>,
    ) {
        loop {
            let wake = self.engine.poll_timeout();
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(message) = inbound.recv() => self.on_inbound(message),
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some(failure) = failures.recv() => {
                    let now = Instant::now();
                    self.engine.handle_send_error(now, failure.report, &failure.error);
                }
                () = sleep => self.engine.handle_timeout(Instant::now()),
            }
            self.flush().await;
        }
    }

    fn on_inbound(&mut self, inbound: Inbound) {
        let (transport, local, from) = (self.outbox.transport, self.outbox.local, inbound.from);
        trace::received(transport, from, local, &inbound.bytes);
        if let Some(capture) = &self.outbox.capture {
            capture.offer(transport, from, local, &inbound.bytes);
        }
        self.engine
            .set_draining(self.draining.load(Ordering::Relaxed));
        let now = Instant::now();
        self.engine
            .handle_datagram(now, from, inbound.received, &inbound.bytes);
    }

    /// Sends what the engine has to send and acts on its events, until it has neither.
    async fn flush(&mut self) {
        loop {
            if let Some(transmit) = self.engine.poll_transmit() {
                self.transmit(transmit).await;
            } else if let Some(event) = self.engine.poll_event() {
                self.on_event(event);
            } else {
                return;
            }
        }
    }

    async fn transmit(&mut self, transmit: Transmit) {
        let Transmit { to, bytes, report } = transmit;
        match to {
            Destination::Addr(to) => {
                let sent = self.outbox.send(to, bytes, report.clone()).await;
                if let (Err(err), Some(report)) = (sent, report) {
                    let now = Instant::now();
                    self.engine.handle_send_error(now, report, &err.to_string());
                }
            }
            // A name is resolved in a task of its own: the driver never waits for DNS. (Only
            // in-dialog requests and ACKs go to names; a REFER's failure to go out there is
            // reported by TCP's failure channel, or over UDP by its transaction's timeout.)
            Destination::Name {
                host_port,
                fallback,
            } => {
                let outbox = self.outbox.clone();
                tokio::spawn(async move {
                    let looked_up =
                        tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(host_port));
                    let to = match looked_up.await {
                        Ok(Ok(mut addrs)) => addrs.next().unwrap_or(fallback),
                        _ => fallback,
                    };
                    let _ = outbox.send(to, bytes, report).await;
                });
            }
        }
    }

    fn op(&mut self, waiting: Waiting) -> Op {
        let op = self.next_op;
        self.next_op += 1;
        self.waiting.insert(op, waiting);
        op
    }

    fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Invite {
                peer,
                target,
                from,
                to,
                sdp,
                reply,
            } => {
                let op = self.op(Waiting::Call(reply));
                self.engine.invite(now, op, peer, &target, &from, to, sdp);
            }
            Command::Answer {
                key,
                status,
                sdp,
                reply,
            } => {
                let call = self
                    .engine
                    .answer(now, &key, status, sdp)
                    .map(|info| self.register(info));
                let _ = reply.send(call);
            }
            Command::Refer { id, headers, reply } => {
                let op = self.op(Waiting::Refer(reply));
                self.engine.refer(now, op, id, headers);
            }
            Command::NextEvent {
                id,
                refer_id,
                reply,
            } => {
                let _ = reply.send(self.engine.next_refer_event(&id, refer_id));
            }
            Command::Unanswered { key } => self.engine.unanswered(now, &key),
            Command::Bye { id, reply } => {
                let op = self.op(Waiting::Bye(reply));
                self.engine.bye(now, op, id);
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::NewInvite(new) => {
                // Nobody takes calls, or too many wait: refused before any state is kept.
                let Ok(permit) = self.incoming.try_reserve() else {
                    return self.engine.decline(new);
                };
                let (invite, from) = (new.invite.clone(), new.from);
                let key = self.engine.admit(Instant::now(), new);
                permit.send(IncomingCall {
                    invite,
                    from,
                    guard: AnswerOnDrop {
                        key,
                        endpoint: self.handle.clone(),
                    },
                });
            }
            Event::Placed { op, result } => {
                if let Some(Waiting::Call(reply)) = self.waiting.remove(&op) {
                    let _ = reply.send(result.map(|info| self.register(info)));
                }
            }
            Event::Referred { op, result } => {
                if let Some(Waiting::Refer(reply)) = self.waiting.remove(&op) {
                    let _ = reply.send(result);
                }
            }
            Event::HungUp { op, result } => {
                if let Some(Waiting::Bye(reply)) = self.waiting.remove(&op) {
                    let _ = reply.send(result);
                }
            }
            Event::Readable(id) => {
                if let Some(wakers) = self.calls.get(&id) {
                    wakers.events.notify_one();
                }
            }
            Event::Ended { id, by_peer } => {
                if let Some(wakers) = self.calls.get(&id) {
                    wakers.peer_hung_up.store(by_peer, Ordering::Relaxed);
                    let _ = wakers.ended.send(true);
                }
            }
            Event::Forgotten(id) => {
                self.calls.remove(&id);
            }
        }
    }

    /// The handle of a dialog that came up.
    fn register(&mut self, info: CallInfo) -> Call {
        let (ended_tx, ended) = watch::channel(false);
        let wakers = CallWakers {
            events: Arc::new(Notify::new()),
            ended: ended_tx,
            peer_hung_up: Arc::new(AtomicBool::new(false)),
        };
        let call = Call {
            endpoint: self.handle.clone(),
            id: info.id.clone(),
            events: wakers.events.clone(),
            ended,
            peer_hung_up: wakers.peer_hung_up.clone(),
            remote_sdp: info.remote_sdp,
            from: info.from,
            to: info.to,
        };
        self.calls.insert(info.id, wakers);
        call
    }
}
