//! The endpoint: one task (the core) owns the transactions, dialogs and subscriptions and
//! drives the sans-IO state machines from the transport, from API calls and from its timers.
//! [`Call`] handles talk to it over a channel.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot, watch};

pub use crate::admission::Admission;
pub use crate::transport::TcpLimits;

use crate::admission::{Gate, Refusal};
use crate::dialog::{
    Dialog, DialogId, NotifyVerdict, ReferSubscriptions, SubscriptionError, SubscriptionEvent,
};
use crate::message::{Headers, Message, Method, Request, Response, SipHeaders, addr_uri};
use crate::trace::{self, DropCause};
use crate::transaction::{
    ClientEvent, ClientInvite, ClientNonInvite, InviteClientEvent, ServerEvent, ServerInvite,
    ServerInviteTick, ServerNonInvite, Tick, Timers,
};
use crate::transport::{self, Inbound, Sender, Transport};
use crate::wakes::Wakes;
use crate::wire;

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
    pub capture: Option<crate::hep::Capture>,
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
    key: TxKey,
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
        target: String,
        from: String,
        to: String,
        sdp: Vec<u8>,
        reply: oneshot::Sender<Result<Call, CallError>>,
        handle: Endpoint,
    },
    Answer {
        key: TxKey,
        status: u16,
        sdp: Vec<u8>,
        reply: oneshot::Sender<Option<Call>>,
        handle: Endpoint,
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
    Unanswered { key: TxKey },
    Bye {
        id: DialogId,
        reply: oneshot::Sender<Result<(), ReferFailure>>,
    },
}

/// Server transactions are keyed by top-Via branch and method (ACK finds its INVITE).
type TxKey = (String, Method);

impl Endpoint {
    /// Binds the transport and starts the core task.
    pub async fn bind(config: EndpointConfig) -> std::io::Result<Endpoint> {
        let (inbound_tx, inbound) = mpsc::channel(1024);
        let stats = Arc::new(Stats::default());
        let (sender, local) = transport::bind(
            config.transport,
            config.bind,
            inbound_tx,
            config.tcp,
            stats.clone(),
        )
        .await?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming) = mpsc::channel(64);
        let endpoint = Endpoint {
            commands,
            local,
            transport: config.transport,
            incoming: Arc::new(tokio::sync::Mutex::new(incoming)),
            stats: stats.clone(),
            draining: Arc::new(AtomicBool::new(false)),
        };
        let core = Core {
            gate: Gate::new(config.admission, Instant::now()),
            config,
            local,
            sender,
            stats,
            incoming: incoming_tx,
            clients: HashMap::new(),
            invites: HashMap::new(),
            servers: HashMap::new(),
            server_invites: HashMap::new(),
            acks: HashMap::new(),
            answering: HashSet::new(),
            open_dialogs: 0,
            tag_key: RandomState::new(),
            dialogs: HashMap::new(),
            wakes: Wakes::default(),
            draining: endpoint.draining.clone(),
            self_handle: endpoint.clone(),
        };
        tokio::spawn(core.run(inbound, command_rx));
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
        self.ask(|reply| Command::Invite {
            target: target.to_owned(),
            from: from.to_owned(),
            to: format!("<{target}>"),
            sdp,
            reply,
            handle: self.clone(),
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
        let handle = self.guard.endpoint.clone();
        self.guard
            .endpoint
            .ask(|reply| Command::Answer {
                key: self.guard.key.clone(),
                status: 200,
                sdp,
                reply,
                handle,
            })
            .await
            .flatten()
    }

    /// Refuses the call with `status` (4xx-6xx).
    pub async fn reject(self, status: u16) {
        let handle = self.guard.endpoint.clone();
        self.guard
            .endpoint
            .ask(|reply| Command::Answer {
                key: self.guard.key.clone(),
                status,
                sdp: Vec::new(),
                reply,
                handle,
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
            // The core stores a permit when it queues an event, so none is missed between
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

/// A dialog with everything the core keeps for it.
struct DialogState {
    dialog: Dialog,
    /// Where in-dialog requests go (resolved remote target or first route).
    peer: SocketAddr,
    subscriptions: ReferSubscriptions,
    events: Arc<Notify>,
    ended: watch::Sender<bool>,
    /// What [`Call::ended_by_peer`] reads.
    peer_hung_up: Arc<AtomicBool>,
    /// The ACK for our INVITE's 2xx, re-sent when the 2xx is retransmitted.
    ack: Option<Vec<u8>>,
    /// Our SDP, for re-INVITEs.
    local_sdp: Vec<u8>,
    /// When a BYE's grace period ends.
    closing_at: Option<Instant>,
    /// When the dialog ended; its subscriptions stay readable until [`CLOSED_KEPT`] later.
    closed_since: Option<Instant>,
    /// Whether requests of ours may go out: we sent the ACK (outbound call), or the ACK for
    /// our 2xx arrived or Timer H passed without it (inbound call, RFC 3261 §13.3.1.4, §15).
    confirmed: bool,
    /// Requests of ours made before the dialog was confirmed, sent in order once it is.
    waiting: Vec<Deferred>,
}

/// A request of ours waiting for the ACK of our 2xx.
enum Deferred {
    Refer {
        headers: Vec<(String, String)>,
        reply: oneshot::Sender<Result<ReferAnswer, ReferFailure>>,
    },
    Bye {
        reply: oneshot::Sender<Result<(), ReferFailure>>,
    },
}

impl DialogState {
    /// The dialog ends (or the peer hung up) before the waiting requests could go out: a
    /// waiting REFER fails with [`ReferFailure::DialogGone`], a waiting BYE has nothing left
    /// to do.
    fn abandon_waiting(&mut self) {
        for deferred in self.waiting.drain(..) {
            match deferred {
                Deferred::Refer { reply, .. } => {
                    let _ = reply.send(Err(ReferFailure::DialogGone));
                }
                Deferred::Bye { reply } => {
                    let _ = reply.send(Ok(()));
                }
            }
        }
    }
}

/// How long an ended dialog's subscriptions stay readable.
const CLOSED_KEPT: Duration = Duration::from_secs(120);

/// A dialog that just came up, as [`Core::register_call`] takes it.
struct NewCall {
    dialog: Dialog,
    peer: SocketAddr,
    handle: Endpoint,
    ack: Option<Vec<u8>>,
    local_sdp: Vec<u8>,
    remote_sdp: Vec<u8>,
    from: String,
    to: String,
    /// Whether requests of ours may go out at once (see [`DialogState::confirmed`]).
    confirmed: bool,
}

enum Pending {
    Refer {
        id: DialogId,
        refer_id: u32,
        reply: oneshot::Sender<Result<ReferAnswer, ReferFailure>>,
    },
    Bye {
        id: DialogId,
        reply: oneshot::Sender<Result<(), ReferFailure>>,
    },
    /// A request whose answer nobody waits for.
    Quiet,
}

struct InviteClient {
    tx: ClientInvite,
    request: Request,
    peer: SocketAddr,
    reply: Option<oneshot::Sender<Result<Call, CallError>>>,
    handle: Endpoint,
}

/// An INVITE we answer (new or re-INVITE) and what its ACK and its failure concern.
struct ServerInviteState {
    tx: ServerInvite,
    invite: Request,
    peer: SocketAddr,
    /// The dialog a 2xx of ours set up (ended if the ACK never comes).
    dialog: Option<DialogId>,
}

/// Where the ACK for a 2xx finds its INVITE: Call-ID and CSeq number (it has a branch of its
/// own, RFC 3261 §17.1.1.3).
type AckKey = (String, u32);

/// What a deadline in [`Core::wakes`] belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Wake {
    /// A non-INVITE client transaction, by branch.
    Client(String),
    /// An INVITE client transaction, by branch.
    Invite(String),
    /// A non-INVITE server transaction.
    Server(TxKey),
    /// An INVITE server transaction.
    ServerInvite(TxKey),
    /// A dialog's BYE grace, or the end of the time an ended dialog stays readable.
    Dialog(DialogId),
}

/// When a dialog next needs the clock: the end of its BYE grace, or (once it has ended, which
/// clears the grace) the end of the time it stays readable.
fn dialog_wake(state: &DialogState) -> Option<Instant> {
    state
        .closing_at
        .or(state.closed_since.map(|at| at + CLOSED_KEPT))
}

struct Core {
    config: EndpointConfig,
    local: SocketAddr,
    sender: Sender,
    stats: Arc<Stats>,
    incoming: mpsc::Sender<IncomingCall>,
    clients: HashMap<String, (ClientNonInvite, SocketAddr, Pending)>,
    invites: HashMap<String, InviteClient>,
    servers: HashMap<TxKey, (ServerNonInvite, SocketAddr)>,
    server_invites: HashMap<TxKey, ServerInviteState>,
    /// `server_invites` by Call-ID and CSeq, for the ACKs of 2xx.
    acks: HashMap<AckKey, TxKey>,
    /// New INVITEs admitted and not yet answered with a final response.
    answering: HashSet<TxKey>,
    /// Dialogs not yet ended.
    open_dialogs: usize,
    /// Admission control for new INVITEs.
    gate: Gate,
    /// Keys the To tags of stateless answers, so a retransmission gets the same tag.
    tag_key: RandomState,
    dialogs: HashMap<DialogId, DialogState>,
    /// The next deadline of every transaction and dialog that has one. Whatever changes a
    /// transaction's or dialog's timers calls [`Core::schedule`] for it.
    wakes: Wakes<Wake>,
    /// Shared with [`Endpoint::set_draining`].
    draining: Arc<AtomicBool>,
    self_handle: Endpoint,
}

/// A random token for tags, branches and Call-IDs.
pub(crate) fn token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", hasher.finish())
}

/// `host:port` of a SIP URI (default port 5060), resolved.
async fn resolve(uri: &str) -> Option<SocketAddr> {
    let uri = addr_uri(uri);
    let rest = uri.split_once(':').map(|(_, r)| r)?;
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = hostport.split([';', '?', '>']).next()?;
    let with_port = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5060")
    };
    tokio::net::lookup_host(with_port).await.ok()?.next()
}

impl Core {
    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        loop {
            let wake = self.next_wake();
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(message) = inbound.recv() => self.on_inbound(message).await,
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command).await,
                    None => break,
                },
                () = sleep => self.on_timers(Instant::now()).await,
            }
        }
    }

    fn via(&self) -> String {
        format!(
            "SIP/2.0/{} {}",
            self.config.transport.via_token(),
            self.local
        )
    }

    fn contact(&self) -> String {
        match self.config.transport {
            Transport::Udp => format!("<sip:{}@{}>", self.config.contact_user, self.local),
            Transport::Tcp => format!(
                "<sip:{}@{};transport=tcp>",
                self.config.contact_user, self.local
            ),
        }
    }

    async fn send(&self, to: SocketAddr, bytes: Vec<u8>) -> std::io::Result<()> {
        trace::sent(self.config.transport, self.local, to, &bytes);
        if let Some(capture) = &self.config.capture {
            capture.offer(self.config.transport, self.local, to, &bytes);
        }
        self.sender.send(to, bytes).await
    }

    /// Counts and traces a received message dropped for `cause`.
    fn drop_message(&self, from: SocketAddr, cause: DropCause, detail: &dyn std::fmt::Display) {
        let counter = match cause {
            DropCause::KeepAlive => &self.stats.dropped_keepalive,
            DropCause::Unparseable => &self.stats.dropped,
            DropCause::NoBranch => &self.stats.dropped_no_branch,
            DropCause::StrayResponse => &self.stats.dropped_stray_response,
            DropCause::Unframeable => &self.stats.tcp_unframeable,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        trace::dropped(self.config.transport, from, self.local, cause, detail);
    }

    fn next_wake(&mut self) -> Option<Instant> {
        self.wakes.next()
    }

    /// Sets `wake`'s deadline from its transaction's or dialog's own next wake-up (none when
    /// it is gone).
    fn schedule(&mut self, wake: Wake) {
        let at = match &wake {
            Wake::Client(branch) => self.clients.get(branch).and_then(|(tx, ..)| tx.next_wake()),
            Wake::Invite(branch) => self.invites.get(branch).and_then(|c| c.tx.next_wake()),
            Wake::Server(key) => self.servers.get(key).and_then(|(tx, _)| tx.next_wake()),
            Wake::ServerInvite(key) => self.server_invites.get(key).and_then(|s| s.tx.next_wake()),
            Wake::Dialog(id) => self.dialogs.get(id).and_then(dialog_wake),
        };
        self.wakes.set(&wake, at);
    }

    /// Ticks the transactions and dialogs whose deadline has come (only those), then sets
    /// their next deadlines.
    async fn on_timers(&mut self, now: Instant) {
        let mut resend = Vec::new();
        let mut no_ack = Vec::new();
        for wake in self.wakes.take_due(now) {
            match &wake {
                Wake::Client(branch) => {
                    let Some((tx, peer, _)) = self.clients.get_mut(branch) else {
                        continue;
                    };
                    match tx.on_tick(now) {
                        Tick::Retransmit(bytes) => resend.push((*peer, bytes)),
                        // A terminated transaction has already answered its waiter; a
                        // timed-out one answers it now.
                        Tick::TimedOut | Tick::Terminated => {
                            if let Some((_, _, pending)) = self.clients.remove(branch) {
                                self.fail_pending(pending, ReferFailure::Timeout);
                            }
                        }
                        Tick::Idle => {}
                    }
                }
                Wake::Invite(branch) => {
                    let Some(client) = self.invites.get_mut(branch) else {
                        continue;
                    };
                    match client.tx.on_tick(now) {
                        Tick::Retransmit(bytes) => resend.push((client.peer, bytes)),
                        Tick::TimedOut | Tick::Terminated => {
                            if let Some(mut client) = self.invites.remove(branch)
                                && let Some(reply) = client.reply.take()
                            {
                                let _ = reply.send(Err(CallError::Timeout));
                            }
                        }
                        Tick::Idle => {}
                    }
                }
                Wake::Server(key) => {
                    if let Some((tx, _)) = self.servers.get_mut(key)
                        && tx.on_tick(now) == Tick::Terminated
                    {
                        self.servers.remove(key);
                    }
                }
                Wake::ServerInvite(key) => {
                    let Some(state) = self.server_invites.get_mut(key) else {
                        continue;
                    };
                    match state.tx.on_tick(now) {
                        ServerInviteTick::Retransmit(bytes) => resend.push((state.peer, bytes)),
                        ServerInviteTick::NoAck => no_ack.extend(state.dialog.clone()),
                        ServerInviteTick::Terminated => self.forget_server_invite(key),
                        ServerInviteTick::Idle => {}
                    }
                }
                Wake::Dialog(id) => {
                    let Some(state) = self.dialogs.get(id) else {
                        continue;
                    };
                    if state.closing_at.is_some_and(|at| now >= at) {
                        self.end_dialog(id);
                    } else if state.closed_since.is_some_and(|at| now >= at + CLOSED_KEPT) {
                        self.dialogs.remove(id);
                    }
                }
            }
            self.schedule(wake);
        }
        for id in no_ack {
            self.on_no_ack(&id).await;
        }
        for (peer, bytes) in resend {
            let _ = self.send(peer, bytes).await;
        }
    }

    fn fail_pending(&mut self, pending: Pending, failure: ReferFailure) {
        match pending {
            Pending::Refer {
                id,
                refer_id,
                reply,
            } => {
                if let Some(state) = self.dialogs.get_mut(&id) {
                    state.subscriptions.refer_failed(refer_id);
                    state.events.notify_one();
                }
                // No answer at all to a request in the dialog: the dialog is gone, as for a
                // 481 or 408 (RFC 3261 §12.2.1.2).
                if failure == ReferFailure::Timeout {
                    self.end_dialog(&id);
                }
                let _ = reply.send(Err(failure));
            }
            Pending::Bye { id, reply } => {
                // A BYE that got no answer still ends our side of the dialog; one that could
                // not be sent is reported.
                self.end_dialog(&id);
                let _ = reply.send(match failure {
                    ReferFailure::Timeout => Ok(()),
                    other => Err(other),
                });
            }
            Pending::Quiet => {}
        }
    }

    /// Ends a dialog now: subscriptions learn it, waiters wake, `ended` flips. The entry
    /// stays (closed) so queued events can still be read.
    fn end_dialog(&mut self, id: &DialogId) {
        if let Some(state) = self.dialogs.get_mut(id)
            && state.closed_since.is_none()
        {
            self.open_dialogs = self.open_dialogs.saturating_sub(1);
            state.subscriptions.dialog_ended();
            state.abandon_waiting();
            state.closing_at = None;
            state.closed_since = Some(Instant::now());
            let _ = state.ended.send(true);
            state.events.notify_one();
            self.schedule(Wake::Dialog(id.clone()));
        }
    }

    /// Sends an in-dialog request and starts its client transaction; a send failure is
    /// reported to whoever waits on `pending`.
    async fn start_request(
        &mut self,
        branch: String,
        bytes: Vec<u8>,
        peer: SocketAddr,
        pending: Pending,
    ) {
        if let Err(err) = self.send(peer, bytes.clone()).await {
            self.fail_pending(pending, ReferFailure::Transport(err.to_string()));
            return;
        }
        let tx = ClientNonInvite::new(
            bytes,
            self.config.transport.reliable(),
            self.config.timers,
            Instant::now(),
        );
        self.clients.insert(branch.clone(), (tx, peer, pending));
        self.schedule(Wake::Client(branch));
    }

    /// Keeps a new dialog and returns the handle the API user gets for it.
    fn register_call(&mut self, new: NewCall) -> Call {
        let (ended_tx, ended) = watch::channel(false);
        let events = Arc::new(Notify::new());
        let peer_hung_up = Arc::new(AtomicBool::new(false));
        let call = Call {
            endpoint: new.handle,
            id: new.dialog.id.clone(),
            events: events.clone(),
            ended,
            peer_hung_up: peer_hung_up.clone(),
            remote_sdp: new.remote_sdp,
            from: new.from,
            to: new.to,
        };
        self.open_dialogs += 1;
        self.dialogs.insert(
            new.dialog.id.clone(),
            DialogState {
                dialog: new.dialog,
                peer: new.peer,
                subscriptions: ReferSubscriptions::default(),
                events,
                ended: ended_tx,
                peer_hung_up,
                ack: new.ack,
                local_sdp: new.local_sdp,
                closing_at: None,
                closed_since: None,
                confirmed: new.confirmed,
                waiting: Vec::new(),
            },
        );
        call
    }

    /// Keeps a server INVITE transaction, findable by its key and, for the ACK of a 2xx, by
    /// Call-ID and CSeq.
    fn keep_server_invite(&mut self, key: TxKey, state: ServerInviteState) {
        if let (Some(call_id), Some(cseq)) = (state.invite.call_id(), state.invite.cseq()) {
            self.acks
                .insert((call_id.to_owned(), cseq.seq), key.clone());
        }
        self.server_invites.insert(key.clone(), state);
        self.schedule(Wake::ServerInvite(key));
    }

    /// Forgets a server INVITE transaction and its index entries.
    fn forget_server_invite(&mut self, key: &TxKey) {
        self.answering.remove(key);
        if let Some(state) = self.server_invites.remove(key)
            && let (Some(call_id), Some(cseq)) = (state.invite.call_id(), state.invite.cseq())
        {
            let ack_key = (call_id.to_owned(), cseq.seq);
            if self.acks.get(&ack_key) == Some(key) {
                self.acks.remove(&ack_key);
            }
        }
    }

    /// An open dialog (not ended; NOTIFYs are still taken during the BYE grace).
    fn open_dialog(&mut self, id: &DialogId) -> Option<&mut DialogState> {
        self.dialogs
            .get_mut(id)
            .filter(|d| d.closed_since.is_none())
    }

    /// A dialog still open for requests of ours: open, and the peer has not sent BYE (a REFER
    /// or BYE of ours during the grace would be out of place).
    fn sendable_dialog(&mut self, id: &DialogId) -> Option<&mut DialogState> {
        self.open_dialog(id).filter(|d| d.closing_at.is_none())
    }
}

impl Core {
    async fn on_inbound(&mut self, inbound: Inbound) {
        let received = inbound.received;
        trace::received(
            self.config.transport,
            inbound.from,
            self.local,
            &inbound.bytes,
        );
        if let Some(capture) = &self.config.capture {
            capture.offer(
                self.config.transport,
                inbound.from,
                self.local,
                &inbound.bytes,
            );
        }
        let message = match wire::parse(&inbound.bytes) {
            Ok(message) => message,
            Err(err @ wire::ParseError::Empty) => {
                self.drop_message(inbound.from, DropCause::KeepAlive, &err);
                return;
            }
            Err(err) => {
                match wire::error_response(&inbound.bytes, &err) {
                    Some(response) => {
                        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        let (transport, local) = (self.config.transport, self.local);
                        trace::answered(transport, local, inbound.from, response.status, &err);
                        let _ = self.send(inbound.from, response.to_bytes()).await;
                    }
                    None => self.drop_message(inbound.from, DropCause::Unparseable, &err),
                }
                return;
            }
        };
        match message {
            Message::Response(response) => self.on_response(response, inbound.from).await,
            Message::Request(request) => self.on_request(request, inbound.from, received).await,
        }
    }

    /// A response, then the new deadlines of the transaction it went to.
    async fn on_response(&mut self, response: Response, from: SocketAddr) {
        let branch = response.via_branch().map(str::to_owned);
        self.handle_response(response, from).await;
        if let Some(branch) = branch {
            self.schedule(Wake::Client(branch.clone()));
            self.schedule(Wake::Invite(branch));
        }
    }

    async fn handle_response(&mut self, response: Response, from: SocketAddr) {
        let Some(branch) = response.via_branch().map(str::to_owned) else {
            self.drop_message(from, DropCause::StrayResponse, &"no Via branch");
            return;
        };
        let now = Instant::now();
        if let Some((tx, _, pending)) = self.clients.get_mut(&branch) {
            if tx.on_response(response.status, now) != ClientEvent::Deliver || response.status < 200
            {
                return;
            }
            match std::mem::replace(pending, Pending::Quiet) {
                Pending::Refer {
                    id,
                    refer_id,
                    reply,
                } => {
                    if let Some(state) = self.dialogs.get_mut(&id) {
                        state.subscriptions.refer_answered(refer_id, &response);
                        state.events.notify_one();
                    }
                    // 481 or 408 to an in-dialog request: the dialog is gone (§12.2.1.2).
                    if matches!(response.status, 408 | 481) {
                        self.end_dialog(&id);
                    }
                    let _ = reply.send(Ok(ReferAnswer {
                        refer_id,
                        status: response.status,
                        reason: response.reason.clone(),
                        headers: response.headers.clone(),
                    }));
                }
                Pending::Bye { id, reply } => {
                    self.end_dialog(&id);
                    let _ = reply.send(Ok(()));
                }
                Pending::Quiet => {}
            }
            return;
        }
        if self.invites.contains_key(&branch) {
            self.on_invite_response(&branch, response, now).await;
        } else {
            let detail = format!("{} to branch {branch}", response.status);
            self.drop_message(from, DropCause::StrayResponse, &detail);
        }
    }

    async fn on_invite_response(&mut self, branch: &str, response: Response, now: Instant) {
        let contact = self.contact();
        let via = self.via();
        let Some(client) = self.invites.get_mut(branch) else {
            return;
        };
        let request = client.request.clone();
        let event = client.tx.on_response(response.status, now, || {
            ack_for_failure(&request, &response)
        });
        let peer = client.peer;
        match event {
            InviteClientEvent::Deliver if response.status >= 200 => {
                let reply = client.reply.take();
                let handle = client.handle.clone();
                let Some(mut dialog) = Dialog::uac(&request, &response, &contact) else {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(CallError::Transport(
                            "the 2xx lacks To tag or Contact".into(),
                        )));
                    }
                    return;
                };
                let invite_cseq = request.cseq().map_or(1, |c| c.seq);
                let ack = dialog.request(
                    Method::Ack,
                    &via,
                    &format!("z9hG4bK{}", token()),
                    Some(invite_cseq),
                );
                let target = first_hop(&dialog);
                let peer_addr = resolve(&target).await.unwrap_or(peer);
                let ack = ack.to_bytes();
                let _ = self.send(peer_addr, ack.clone()).await;
                let call = self.register_call(NewCall {
                    dialog,
                    peer: peer_addr,
                    handle,
                    ack: Some(ack),
                    local_sdp: request.body.clone(),
                    remote_sdp: response.body.clone(),
                    from: request.headers.get("From").unwrap_or_default().to_owned(),
                    to: response.headers.get("To").unwrap_or_default().to_owned(),
                    // Our ACK is out: the dialog is confirmed (RFC 3261 §13.2.2.4).
                    confirmed: true,
                });
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(call));
                }
            }
            InviteClientEvent::DeliverAndAck(ack) => {
                let _ = self.send(peer, ack).await;
                if let Some(reply) = self.invites.get_mut(branch).and_then(|c| c.reply.take()) {
                    let _ = reply.send(Err(CallError::Rejected {
                        status: response.status,
                        reason: response.reason.clone(),
                    }));
                }
            }
            InviteClientEvent::Ack(ack) => {
                let _ = self.send(peer, ack).await;
            }
            InviteClientEvent::Retransmitted2xx => {
                // The peer did not get our ACK: send it again.
                let id = (|| {
                    Some(DialogId {
                        call_id: response.call_id()?.to_owned(),
                        local_tag: response.from_tag()?.to_owned(),
                        remote_tag: response.to_tag()?.to_owned(),
                    })
                })();
                if let Some(state) = id.and_then(|id| self.dialogs.get(&id))
                    && let Some(ack) = state.ack.clone()
                {
                    let _ = self.send(state.peer, ack).await;
                }
            }
            InviteClientEvent::Deliver | InviteClientEvent::Absorb => {}
        }
    }

    async fn respond(
        &mut self,
        request: &Request,
        to: SocketAddr,
        status: u16,
        reason: Option<&str>,
    ) {
        let mut response = Response::to(request, status, None);
        if let Some(reason) = reason {
            response.reason = reason.to_owned();
        }
        self.send_response(request, to, status, response).await;
    }

    /// Answers `request` with `status` and `headers` added.
    async fn respond_with(
        &mut self,
        request: &Request,
        to: SocketAddr,
        status: u16,
        headers: &[(&str, String)],
    ) {
        let mut response = Response::to(request, status, None);
        for (name, value) in headers {
            response.headers.push(*name, value.clone());
        }
        self.send_response(request, to, status, response).await;
    }

    /// Sends a response to `request`, kept in its server transaction for retransmissions.
    async fn send_response(
        &mut self,
        request: &Request,
        to: SocketAddr,
        status: u16,
        response: Response,
    ) {
        let bytes = response.to_bytes();
        let cause = match status {
            481 => Some((
                &self.stats.answered_no_dialog,
                "no such dialog or transaction",
            )),
            501 => Some((
                &self.stats.answered_not_implemented,
                "method not implemented",
            )),
            489 => Some((&self.stats.answered_bad_event, "unknown Event")),
            400 | 500 => Some((
                &self.stats.answered_bad_cseq,
                "missing or out-of-order CSeq",
            )),
            _ => None,
        };
        if let Some((counter, cause)) = cause {
            counter.fetch_add(1, Ordering::Relaxed);
            let (transport, local) = (self.config.transport, self.local);
            let cause = format_args!("{cause} ({} {})", request.method, request.uri);
            trace::answered(transport, local, to, status, &cause);
        }
        let key = server_key(request);
        if let Some(key) = key
            && let Some((tx, _)) = self.servers.get_mut(&key)
        {
            tx.respond(status, bytes.clone(), Instant::now());
            self.schedule(Wake::Server(key));
        }
        let _ = self.send(to, bytes).await;
    }

    async fn on_request(&mut self, request: Request, from: SocketAddr, received: Instant) {
        let now = Instant::now();
        let reliable = self.config.transport.reliable();
        let Some(key) = server_key(&request) else {
            self.drop_message(from, DropCause::NoBranch, &request.method);
            return;
        };
        // Retransmissions are answered from the transaction, never delivered twice.
        if request.method == Method::Ack {
            let mut invite_key = Some((key.0.clone(), Method::Invite));
            let mut acked = None;
            if let Some(state) = invite_key
                .as_ref()
                .and_then(|k| self.server_invites.get_mut(k))
            {
                state.tx.on_ack(now);
                acked = state.dialog.clone();
            } else {
                // The ACK for a 2xx has its own branch: find the INVITE by Call-ID and CSeq.
                // An ACK that matches nothing (one for a stateless 503, say) is absorbed.
                invite_key = request
                    .call_id()
                    .zip(request.cseq())
                    .and_then(|(call_id, cseq)| self.acks.get(&(call_id.to_owned(), cseq.seq)))
                    .cloned();
                if let Some(state) = invite_key
                    .as_ref()
                    .and_then(|k| self.server_invites.get_mut(k))
                {
                    state.tx.on_ack(now);
                    acked = state.dialog.clone();
                }
            }
            if let Some(invite_key) = invite_key {
                self.schedule(Wake::ServerInvite(invite_key));
            }
            if let Some(id) = acked {
                self.confirm(&id).await;
            }
            return;
        }
        if let Some(state) = self.server_invites.get(&key) {
            if let ServerEvent::Resend(bytes) = state.tx.on_retransmission() {
                self.stats.retransmissions.fetch_add(1, Ordering::Relaxed);
                let _ = self.send(from, bytes).await;
            }
            return;
        }
        if let Some((tx, _)) = self.servers.get(&key) {
            if let ServerEvent::Resend(bytes) = tx.on_retransmission() {
                self.stats.retransmissions.fetch_add(1, Ordering::Relaxed);
                let _ = self.send(from, bytes).await;
            }
            return;
        }
        if request.method == Method::Invite && request.to_tag().is_none() {
            self.on_new_invite(request, key, from, received).await;
            return;
        }
        self.servers.insert(
            key.clone(),
            (
                ServerNonInvite::new(reliable, self.config.timers, now),
                from,
            ),
        );
        self.schedule(Wake::Server(key.clone()));
        if let Method::Other(_) = request.method {
            self.respond(&request, from, 501, None).await;
            return;
        }
        if request.to_tag().is_none() {
            // Outside any dialog: OPTIONS is answered (503 while draining, so a prober takes
            // us out of rotation), CANCEL finds nothing, the rest 481.
            match request.method {
                Method::Options if self.draining.load(Ordering::Relaxed) => {
                    let retry_after = self.gate.retry_after_secs().to_string();
                    self.respond_with(&request, from, 503, &[("Retry-After", retry_after)])
                        .await;
                }
                Method::Options => self.respond(&request, from, 200, None).await,
                _ => self.respond(&request, from, 481, None).await,
            }
            return;
        }
        let Some(id) = Dialog::id_of_incoming(&request) else {
            self.respond(&request, from, 481, None).await;
            return;
        };
        let grace = self.config.bye_grace;
        let Some(state) = self.open_dialog(&id) else {
            self.respond(&request, from, 481, None).await;
            return;
        };
        if let Err(err) = state.dialog.accept_remote_cseq(&request) {
            self.respond(&request, from, err.status(), None).await;
            return;
        }
        match request.method {
            Method::Notify => {
                let verdict = state.subscriptions.on_notify(&request);
                if let NotifyVerdict::Accept(_) | NotifyVerdict::Coalesced(_) = verdict {
                    state.events.notify_one();
                }
                // Repeats and excess NOTIFYs are answered 200 too, so a sane peer does not
                // retransmit them; they are only counted.
                let status = match verdict {
                    NotifyVerdict::Accept(_) => 200,
                    NotifyVerdict::Coalesced(_) => {
                        self.stats.notify_coalesced.fetch_add(1, Ordering::Relaxed);
                        200
                    }
                    NotifyVerdict::Duplicate(_) => {
                        self.stats.notify_duplicates.fetch_add(1, Ordering::Relaxed);
                        200
                    }
                    NotifyVerdict::Excess(_) => {
                        self.stats.notify_excess.fetch_add(1, Ordering::Relaxed);
                        200
                    }
                    NotifyVerdict::BadEvent => 489,
                    NotifyVerdict::NoSubscription => 481,
                };
                self.respond(&request, from, status, None).await;
            }
            Method::Bye => {
                // Hold the dialog open for a moment: a final NOTIFY on the heels of the BYE
                // still counts. After that the subscriptions learn the dialog ended.
                // For the call's owner the dialog has ended now: `is_ended` flips and no
                // request of ours goes out in it any more.
                if state.closing_at.is_none() {
                    state.closing_at = Some(now + grace);
                    if !*state.ended.borrow() {
                        state.peer_hung_up.store(true, Ordering::Relaxed);
                    }
                    let _ = state.ended.send(true);
                    state.abandon_waiting();
                }
                self.schedule(Wake::Dialog(id));
                self.respond(&request, from, 200, None).await;
            }
            Method::Invite => {
                // A re-INVITE (session refresh): answer with the same session.
                let sdp = state.local_sdp.clone();
                let mut response = Response::to(&request, 200, None);
                response
                    .headers
                    .push("Contact", state.dialog.local_contact.clone());
                response.headers.push("Content-Type", "application/sdp");
                response.body = sdp;
                let mut tx = ServerInvite::new(reliable, self.config.timers);
                tx.respond(200, response.to_bytes(), now);
                let bytes = response.to_bytes();
                self.servers.remove(&key);
                self.keep_server_invite(
                    key,
                    ServerInviteState {
                        tx,
                        invite: request.clone(),
                        peer: from,
                        dialog: Some(id),
                    },
                );
                let _ = self.send(from, bytes).await;
            }
            Method::Options | Method::Info | Method::Update => {
                self.respond(&request, from, 200, None).await;
            }
            _ => self.respond(&request, from, 501, None).await,
        }
    }

    /// A new INVITE (no To tag): admitted (a transaction, 100 Trying, an [`IncomingCall`] for
    /// the application) or refused statelessly with 503.
    async fn on_new_invite(
        &mut self,
        request: Request,
        key: TxKey,
        from: SocketAddr,
        received: Instant,
    ) {
        let now = Instant::now();
        if self.draining.load(Ordering::Relaxed) {
            self.refuse(&request, from, Refusal::Draining).await;
            return;
        }
        let in_progress = self.open_dialogs + self.answering.len();
        if let Err(why) = self.gate.check(in_progress, received, now) {
            self.refuse(&request, from, why).await;
            return;
        }
        // Nobody takes calls, or too many wait: refuse before keeping any state.
        let incoming = self.incoming.clone();
        let Ok(permit) = incoming.try_reserve() else {
            self.refuse(&request, from, Refusal::NoCapacity).await;
            return;
        };
        let reliable = self.config.transport.reliable();
        let mut tx = ServerInvite::new(reliable, self.config.timers);
        let trying = Response::to(&request, 100, None).to_bytes();
        tx.respond(100, trying.clone(), now);
        self.answering.insert(key.clone());
        self.keep_server_invite(
            key.clone(),
            ServerInviteState {
                tx,
                invite: request.clone(),
                peer: from,
                dialog: None,
            },
        );
        let _ = self.send(from, trying).await;
        permit.send(IncomingCall {
            invite: request,
            from,
            guard: AnswerOnDrop {
                key,
                endpoint: self.self_handle.clone(),
            },
        });
    }

    /// Answers a new INVITE `503 Service Unavailable` with `Retry-After`, statelessly (RFC
    /// 3261 §8.2.7): no transaction, no 100 Trying, and a To tag computed from the request, so
    /// a retransmission gets the same answer. Its ACK matches nothing and is absorbed.
    async fn refuse(&mut self, request: &Request, from: SocketAddr, why: Refusal) {
        let (counter, cause) = match why {
            Refusal::MaxCalls => (&self.stats.refused_max_calls, "max_calls"),
            Refusal::Rate => (&self.stats.refused_rate, "max_calls_per_sec"),
            Refusal::QueueDelay => (&self.stats.refused_queue_delay, "max_queue_delay"),
            Refusal::NoCapacity => (&self.stats.refused_no_capacity, "no capacity to accept"),
            Refusal::Draining => (&self.stats.refused_draining, "draining"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let (transport, local) = (self.config.transport, self.local);
        trace::answered(transport, local, from, 503, &cause);
        let mut hasher = self.tag_key.build_hasher();
        for part in [request.call_id(), request.from_tag(), request.via_branch()] {
            hasher.write(part.unwrap_or_default().as_bytes());
            hasher.write_u8(0);
        }
        let tag = format!("{:016x}", hasher.finish());
        let mut response = Response::to(request, 503, Some(&tag));
        response
            .headers
            .push("Retry-After", self.gate.retry_after_secs().to_string());
        let _ = self.send(from, response.to_bytes()).await;
    }

    /// An API command, then the new deadline of the INVITE it answered (commands that start
    /// transactions schedule them where they start them).
    async fn on_command(&mut self, command: Command) {
        let answered = match &command {
            Command::Answer { key, .. } | Command::Unanswered { key } => Some(key.clone()),
            _ => None,
        };
        self.handle_command(command).await;
        if let Some(key) = answered {
            self.schedule(Wake::ServerInvite(key));
        }
    }

    async fn handle_command(&mut self, command: Command) {
        let now = Instant::now();
        let reliable = self.config.transport.reliable();
        match command {
            Command::Invite {
                target,
                from,
                to,
                sdp,
                reply,
                handle,
            } => {
                let proxy = self.config.outbound_proxy.as_deref().map(proxy_route);
                let Some(peer) = resolve(proxy.as_deref().unwrap_or(&target)).await else {
                    let unreachable = proxy.map_or(target, |p| format!("outbound proxy {p}"));
                    let _ = reply.send(Err(CallError::Target(unreachable)));
                    return;
                };
                let branch = format!("z9hG4bK{}", token());
                let mut headers = Headers::new();
                headers.push("Via", format!("{};branch={branch};rport", self.via()));
                headers.push("Max-Forwards", "70");
                headers.push("From", format!("{from};tag={}", token()));
                headers.push("To", to);
                headers.push("Call-ID", format!("{}@{}", token(), self.local.ip()));
                headers.push("CSeq", "1 INVITE");
                headers.push("Contact", self.contact());
                if let Some(route) = proxy {
                    headers.push("Route", route);
                }
                headers.push(
                    "Allow",
                    "INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REFER, INFO, UPDATE",
                );
                headers.push("Supported", "norefersub");
                headers.push("Content-Type", "application/sdp");
                let request = Request {
                    method: Method::Invite,
                    uri: addr_uri(&target).to_owned(),
                    headers,
                    body: sdp,
                };
                let bytes = request.to_bytes();
                if let Err(err) = self.send(peer, bytes.clone()).await {
                    let _ = reply.send(Err(CallError::Transport(err.to_string())));
                    return;
                }
                self.invites.insert(
                    branch.clone(),
                    InviteClient {
                        tx: ClientInvite::new(bytes, reliable, self.config.timers, now),
                        request,
                        peer,
                        reply: Some(reply),
                        handle,
                    },
                );
                self.schedule(Wake::Invite(branch));
            }
            Command::Answer {
                key,
                status,
                sdp,
                reply,
                handle,
            } => {
                let contact = self.contact();
                let Some(state) = self.server_invites.get_mut(&key) else {
                    let _ = reply.send(None);
                    return;
                };
                let local_tag = token();
                let mut response = Response::to(&state.invite, status, Some(&local_tag));
                let invite = state.invite.clone();
                let peer = state.peer;
                if status < 300 {
                    // RFC 3261 §12.1.1: a response that sets up a dialog carries the
                    // INVITE's Record-Route, every value in order, so the caller builds the
                    // same route set and its requests (ACK, NOTIFY, BYE) pass the proxies.
                    response
                        .headers
                        .copy_from(&state.invite.headers, "Record-Route");
                    response.headers.push("Contact", contact.clone());
                    response.headers.push(
                        "Allow",
                        "INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REFER, INFO, UPDATE",
                    );
                    response.headers.push("Supported", "norefersub");
                    response.headers.push("Content-Type", "application/sdp");
                    response.body = sdp.clone();
                }
                let bytes = response.to_bytes();
                if !state.tx.respond(status, bytes.clone(), now) {
                    let _ = reply.send(None);
                    return;
                }
                if status >= 200 {
                    self.answering.remove(&key);
                }
                let _ = self.send(peer, bytes).await;
                if status >= 300 {
                    let _ = reply.send(None);
                    return;
                }
                let Some(dialog) = Dialog::uas(&invite, &local_tag, &contact, 0) else {
                    let _ = reply.send(None);
                    return;
                };
                if let Some(state) = self.server_invites.get_mut(&key) {
                    state.dialog = Some(dialog.id.clone());
                }
                let target = first_hop(&dialog);
                let peer_addr = if self.config.transport.reliable() {
                    peer
                } else {
                    resolve(&target).await.unwrap_or(peer)
                };
                let call = self.register_call(NewCall {
                    dialog,
                    peer: peer_addr,
                    handle,
                    ack: None,
                    local_sdp: sdp,
                    remote_sdp: invite.body.clone(),
                    from: invite.headers.get("From").unwrap_or_default().to_owned(),
                    to: response.headers.get("To").unwrap_or_default().to_owned(),
                    // Requests of ours wait for the ACK.
                    confirmed: false,
                });
                let _ = reply.send(Some(call));
            }
            Command::Refer { id, headers, reply } => self.send_refer(id, headers, reply).await,
            Command::NextEvent {
                id,
                refer_id,
                reply,
            } => {
                let event = match self.dialogs.get_mut(&id) {
                    Some(state) => state.subscriptions.next_event(refer_id),
                    None => Err(SubscriptionError::Unknown(refer_id)),
                };
                let _ = reply.send(event);
            }
            Command::Unanswered { key } => {
                let Some(state) = self.server_invites.get_mut(&key) else {
                    return;
                };
                let response = Response::to(&state.invite, 500, Some(&token()));
                let bytes = response.to_bytes();
                // Refused (and nothing sent) when the call was answered already.
                if state.tx.respond(500, bytes.clone(), now) {
                    let peer = state.peer;
                    self.answering.remove(&key);
                    self.stats.unanswered_calls.fetch_add(1, Ordering::Relaxed);
                    let _ = self.send(peer, bytes).await;
                }
            }
            Command::Bye { id, reply } => self.send_bye(id, reply).await,
        }
    }

    /// Sends a REFER in dialog `id`, or queues it until the dialog is confirmed.
    async fn send_refer(
        &mut self,
        id: DialogId,
        headers: Vec<(String, String)>,
        reply: oneshot::Sender<Result<ReferAnswer, ReferFailure>>,
    ) {
        let via = self.via();
        let Some(state) = self.sendable_dialog(&id) else {
            let _ = reply.send(Err(ReferFailure::DialogGone));
            return;
        };
        if !state.confirmed {
            state.waiting.push(Deferred::Refer { headers, reply });
            return;
        }
        let branch = format!("z9hG4bK{}", token());
        let mut refer = state.dialog.request(Method::Refer, &via, &branch, None);
        for (name, value) in headers {
            refer.headers.push(name, value);
        }
        let refer_id = state.dialog.local_cseq;
        state.subscriptions.refer_sent(refer_id);
        let peer = state.peer;
        let pending = Pending::Refer {
            id,
            refer_id,
            reply,
        };
        self.start_request(branch, refer.to_bytes(), peer, pending)
            .await;
    }

    /// Sends a BYE in dialog `id`, or queues it until the dialog is confirmed.
    async fn send_bye(&mut self, id: DialogId, reply: oneshot::Sender<Result<(), ReferFailure>>) {
        let via = self.via();
        let Some(state) = self.sendable_dialog(&id) else {
            let _ = reply.send(Ok(()));
            return;
        };
        if !state.confirmed {
            state.waiting.push(Deferred::Bye { reply });
            return;
        }
        let branch = format!("z9hG4bK{}", token());
        let bye = state.dialog.request(Method::Bye, &via, &branch, None);
        let peer = state.peer;
        self.start_request(branch, bye.to_bytes(), peer, Pending::Bye { id, reply })
            .await;
    }

    /// The ACK for our 2xx arrived: the dialog is confirmed, and the requests waiting for it
    /// go out now, in the order they were made.
    async fn confirm(&mut self, id: &DialogId) {
        let Some(state) = self.dialogs.get_mut(id) else {
            return;
        };
        if state.confirmed {
            return;
        }
        state.confirmed = true;
        for deferred in std::mem::take(&mut state.waiting) {
            match deferred {
                Deferred::Refer { headers, reply } => {
                    self.send_refer(id.clone(), headers, reply).await;
                }
                Deferred::Bye { reply } => self.send_bye(id.clone(), reply).await,
            }
        }
    }

    /// No ACK for our 2xx within Timer H (RFC 3261 §13.3.1.4): the dialog is confirmed for
    /// us but never came up for the peer, so the session is terminated with a BYE. Waiting
    /// REFERs fail with [`ReferFailure::DialogGone`] (never sent); a waiting BYE resolves
    /// when that BYE is answered. The dialog ends now for the call's owner.
    async fn on_no_ack(&mut self, id: &DialogId) {
        let via = self.via();
        let stats = self.stats.clone();
        let Some(state) = self.sendable_dialog(id) else {
            // Already ended, or the peer hung up: nothing to send.
            self.end_dialog(id);
            return;
        };
        stats.unacked_answers.fetch_add(1, Ordering::Relaxed);
        state.confirmed = true;
        let mut bye_reply = None;
        for deferred in std::mem::take(&mut state.waiting) {
            match deferred {
                Deferred::Refer { reply, .. } => {
                    let _ = reply.send(Err(ReferFailure::DialogGone));
                }
                // More than one hangup waiting: the first gets the BYE's answer.
                Deferred::Bye { reply } if bye_reply.is_none() => bye_reply = Some(reply),
                Deferred::Bye { reply } => {
                    let _ = reply.send(Ok(()));
                }
            }
        }
        let branch = format!("z9hG4bK{}", token());
        let bye = state.dialog.request(Method::Bye, &via, &branch, None);
        let peer = state.peer;
        // Nobody may wait for this BYE: its answer then goes nowhere.
        let reply = bye_reply.unwrap_or_else(|| oneshot::channel().0);
        let pending = Pending::Bye {
            id: id.clone(),
            reply,
        };
        self.start_request(branch, bye.to_bytes(), peer, pending)
            .await;
        self.end_dialog(id);
    }
}

/// The pre-loaded Route for an outbound proxy URI (`sip:host:port`, with or without angle
/// brackets): in brackets, with `;lr`, since an outbound proxy is a loose router (RFC 3261
/// §8.1.2).
fn proxy_route(proxy: &str) -> String {
    let proxy = proxy.trim();
    let uri = if proxy.contains('<') {
        addr_uri(proxy)
    } else {
        proxy
    };
    let loose = uri
        .split(';')
        .skip(1)
        .any(|p| p.eq_ignore_ascii_case("lr") || p.to_ascii_lowercase().starts_with("lr="));
    if loose {
        format!("<{uri}>")
    } else {
        format!("<{uri};lr>")
    }
}

/// Where a dialog's requests go first: the first route, or the remote target.
fn first_hop(dialog: &Dialog) -> String {
    dialog
        .route_set
        .first()
        .map_or_else(|| dialog.remote_target.clone(), |r| addr_uri(r).to_owned())
}

/// The server transaction key of a request: top Via branch and method.
fn server_key(request: &Request) -> Option<TxKey> {
    Some((request.via_branch()?.to_owned(), request.method.clone()))
}

/// The ACK for a non-2xx final to our INVITE (RFC 3261 §17.1.1.3): same Request-URI, top Via,
/// From, Call-ID and CSeq number, the response's To (with its tag), and the INVITE's Routes.
fn ack_for_failure(invite: &Request, response: &Response) -> Vec<u8> {
    let mut headers = Headers::new();
    if let Some(via) = invite.headers.all("Via").next() {
        headers.push("Via", via);
    }
    headers.push("Max-Forwards", "70");
    headers.copy_from(&invite.headers, "From");
    headers.copy_from(&response.headers, "To");
    headers.copy_from(&invite.headers, "Call-ID");
    headers.push(
        "CSeq",
        format!("{} ACK", invite.cseq().map_or(1, |c| c.seq)),
    );
    headers.copy_from(&invite.headers, "Route");
    Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        headers,
        body: Vec::new(),
    }
    .to_bytes()
}
