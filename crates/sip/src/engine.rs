//! The endpoint's state machine, without I/O (the way quinn-proto drives QUIC): an
//! [`Engine`] owns the transactions, dialogs, REFER subscriptions and admission of one
//! endpoint. It is fed with `now` and a received message ([`Engine::handle_datagram`]), an API
//! call ([`Engine::invite`], [`Engine::answer`], [`Engine::refer`], ...), its deadline
//! ([`Engine::handle_timeout`]) or a send that failed ([`Engine::handle_send_error`]); then it
//! is polled for what to send ([`Engine::poll_transmit`]), what happened
//! ([`Engine::poll_event`]) and when it next needs the clock ([`Engine::poll_timeout`]).
//!
//! It never reads a clock, opens a socket, resolves a name or connects: a host name in a
//! Contact or Record-Route becomes a [`Destination::Name`] for the driver to resolve, and a
//! TCP connection is the driver's to open (a failure comes back through
//! [`Engine::handle_send_error`]). Transactions, dialogs and ACKs are found by key and
//! deadlines sit in a heap, so the cost of an event does not grow with the number of calls.
//! [`crate::endpoint`] is the tokio driver.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::admission::{Gate, Refusal};
use crate::dialog::{
    Dialog, DialogId, NotifyVerdict, ReferSubscriptions, SubscriptionError, SubscriptionEvent,
};
use crate::endpoint::{CallError, EndpointConfig, ReferAnswer, ReferFailure, Stats};
use crate::message::{Headers, Message, Method, Request, Response, SipHeaders, addr_uri};
use crate::trace::{self, DropCause};
use crate::transaction::{
    ClientEvent, ClientInvite, ClientNonInvite, InviteClientEvent, ServerEvent, ServerInvite,
    ServerInviteTick, ServerNonInvite, Tick,
};
use crate::transport::Transport;
use crate::wakes::Wakes;
use crate::wire;

/// Names an API call whose outcome comes later as an [`Event`] (chosen by the caller).
pub type Op = u64;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// An address.
    Addr(SocketAddr),
    /// A `host:port` to resolve first; `fallback` (where the dialog's messages came from)
    /// when it does not resolve.
    Name {
        /// Host and port (5060 when the URI has none).
        host_port: String,
        /// Where to send when the name does not resolve.
        fallback: SocketAddr,
    },
}

/// A failure the driver reports back: the send of a request that starts a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRef(String);

/// A message to send.
#[derive(Debug)]
pub struct Transmit {
    /// Where to.
    pub to: Destination,
    /// The whole message.
    pub bytes: Vec<u8>,
    /// Set on the first send of a request of ours: if it cannot be sent (a TCP connect that
    /// fails, a full send queue), hand it to [`Engine::handle_send_error`] and the waiter
    /// learns it at once instead of at the transaction's timeout.
    pub report: Option<SendRef>,
}

/// Identifies an inbound INVITE's server transaction (for [`Engine::answer`] and
/// [`Engine::unanswered`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InviteKey(TxKey);

/// A new INVITE that passed admission: [`Engine::admit`] it (100 Trying, a transaction) or
/// [`Engine::decline`] it (a stateless 503) before the next input.
#[derive(Debug)]
pub struct NewInvite {
    /// The INVITE.
    pub invite: Request,
    /// Where it came from.
    pub from: SocketAddr,
    key: TxKey,
}

/// A dialog that came up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    /// Its identity.
    pub id: DialogId,
    /// The peer's SDP.
    pub remote_sdp: Vec<u8>,
    /// The INVITE's From header.
    pub from: String,
    /// The To header as the dialog has it (with the remote tag for outbound calls).
    pub to: String,
}

/// What the engine has to tell.
#[derive(Debug)]
pub enum Event {
    /// A new INVITE to admit or decline.
    NewInvite(NewInvite),
    /// The outcome of [`Engine::invite`].
    Placed {
        /// As given.
        op: Op,
        /// The call, or why there is none.
        result: Result<CallInfo, CallError>,
    },
    /// The final response to [`Engine::refer`] (or why there is none).
    Referred {
        /// As given.
        op: Op,
        /// The answer.
        result: Result<ReferAnswer, ReferFailure>,
    },
    /// [`Engine::bye`] is done.
    HungUp {
        /// As given.
        op: Op,
        /// `Err` when the BYE could not be sent.
        result: Result<(), ReferFailure>,
    },
    /// A subscription of the dialog has something new for [`Engine::next_refer_event`].
    Readable(DialogId),
    /// The dialog has ended for its owner (once per dialog).
    Ended {
        /// The dialog.
        id: DialogId,
        /// Whether the peer's BYE ended it.
        by_peer: bool,
    },
    /// The dialog is gone for good: it ended and everything in it was read, or it ended and
    /// stayed unread for 120 s. Its subscriptions can no longer be read.
    Forgotten(DialogId),
}

/// A dialog with everything the engine keeps for it.
struct DialogState {
    dialog: Dialog,
    /// Where in-dialog requests go (the remote target or first route).
    peer: Destination,
    subscriptions: ReferSubscriptions,
    /// Whether [`Event::Ended`] went out.
    ended: bool,
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
        op: Op,
    },
    Bye {
        op: Op,
    },
}

/// How long an ended dialog's subscriptions stay readable.
const CLOSED_KEPT: Duration = Duration::from_secs(120);

/// A dialog that just came up, as [`Engine::register_call`] takes it.
struct NewCall {
    dialog: Dialog,
    peer: Destination,
    ack: Option<Vec<u8>>,
    local_sdp: Vec<u8>,
    remote_sdp: Vec<u8>,
    from: String,
    to: String,
    /// Whether requests of ours may go out at once (see [`DialogState::confirmed`]).
    confirmed: bool,
}

/// Who waits for a client transaction's answer.
enum Pending {
    Refer {
        id: DialogId,
        refer_id: u32,
        op: Op,
    },
    Bye {
        id: DialogId,
        /// `None`: a BYE of ours nobody waits for (Timer H).
        op: Option<Op>,
    },
    /// A request whose answer nobody waits for.
    Quiet,
}

struct InviteClient {
    tx: ClientInvite,
    request: Request,
    peer: SocketAddr,
    /// `None` once answered.
    op: Option<Op>,
}

/// An INVITE we answer (new or re-INVITE) and what its ACK and its failure concern.
struct ServerInviteState {
    tx: ServerInvite,
    invite: Request,
    peer: SocketAddr,
    /// The dialog a 2xx of ours set up (ended if the ACK never comes).
    dialog: Option<DialogId>,
}

/// Server transactions are keyed by top-Via branch and method (ACK finds its INVITE).
type TxKey = (String, Method);

/// Where the ACK for a 2xx finds its INVITE: Call-ID and CSeq number (it has a branch of its
/// own, RFC 3261 §17.1.1.3).
type AckKey = (String, u32);

/// What a deadline in [`Engine::wakes`] belongs to.
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

/// The SIP endpoint as a state machine; see the [module documentation](self).
pub struct Engine {
    config: EndpointConfig,
    local: SocketAddr,
    stats: Arc<Stats>,
    clients: HashMap<String, (ClientNonInvite, Destination, Pending)>,
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
    /// transaction's or dialog's timers calls [`Engine::schedule`] for it.
    wakes: Wakes<Wake>,
    draining: bool,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

/// A random token for tags, branches and Call-IDs.
pub(crate) fn token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", hasher.finish())
}

/// `host:port` of a SIP URI, with port 5060 when it has none; `None` when it has no host.
pub fn host_port(uri: &str) -> Option<String> {
    let uri = addr_uri(uri);
    let rest = uri.split_once(':').map(|(_, r)| r)?;
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = hostport.split([';', '?', '>']).next()?;
    if hostport.is_empty() {
        return None;
    }
    // A port follows the host's last `:` (an IPv6 literal's own colons are in brackets).
    let after_literal = hostport.rsplit_once(']').map_or(hostport, |(_, rest)| rest);
    if after_literal.contains(':') {
        Some(hostport.to_owned())
    } else {
        Some(format!("{hostport}:5060"))
    }
}

/// Where a URI points: an address when its host is an IP literal, else a name to resolve
/// (with `fallback` when it does not resolve).
fn destination(uri: &str, fallback: SocketAddr) -> Destination {
    let Some(host_port) = host_port(uri) else {
        return Destination::Addr(fallback);
    };
    if let Ok(addr) = host_port.parse::<SocketAddr>() {
        return Destination::Addr(addr);
    }
    // A bare IPv6 literal without brackets or port is not a SIP host; anything else that is
    // not an address is a name.
    if host_port.parse::<IpAddr>().is_ok() {
        return Destination::Addr(fallback);
    }
    Destination::Name {
        host_port,
        fallback,
    }
}

impl Engine {
    /// An engine for an endpoint listening on `local` (where its Via and Contact point).
    /// `stats` is shared with the driver, which counts transport events in it.
    pub fn new(config: EndpointConfig, local: SocketAddr, stats: Arc<Stats>, now: Instant) -> Self {
        Engine {
            gate: Gate::new(config.admission, now),
            config,
            local,
            stats,
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
            draining: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] is next due (`None`: nothing waits for the clock).
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.wakes.next()
    }

    /// What the engine counted.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Dialogs not yet ended.
    pub fn open_dialogs(&self) -> usize {
        self.open_dialogs
    }

    /// Dialogs kept, ended ones included (until their subscriptions stop being readable).
    pub fn dialogs(&self) -> usize {
        self.dialogs.len()
    }

    /// Transactions in progress, client and server.
    pub fn transactions(&self) -> usize {
        self.clients.len() + self.invites.len() + self.servers.len() + self.server_invites.len()
    }

    /// Starts or ends draining (see [`crate::endpoint::Endpoint::set_draining`]).
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
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

    fn send(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        self.send_to(Destination::Addr(to), bytes, None);
    }

    fn send_to(&mut self, to: Destination, bytes: Vec<u8>, report: Option<SendRef>) {
        self.transmits.push_back(Transmit { to, bytes, report });
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
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut no_ack = Vec::new();
        for wake in self.wakes.take_due(now) {
            match &wake {
                Wake::Client(branch) => {
                    let Some((tx, peer, _)) = self.clients.get_mut(branch) else {
                        continue;
                    };
                    match tx.on_tick(now) {
                        Tick::Retransmit(bytes) => {
                            let peer = peer.clone();
                            self.send_to(peer, bytes, None);
                        }
                        // A terminated transaction has already answered its waiter; a
                        // timed-out one answers it now.
                        Tick::TimedOut | Tick::Terminated => {
                            if let Some((_, _, pending)) = self.clients.remove(branch) {
                                self.fail_pending(pending, ReferFailure::Timeout, now);
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
                        Tick::Retransmit(bytes) => {
                            let peer = client.peer;
                            self.send(peer, bytes);
                        }
                        Tick::TimedOut | Tick::Terminated => {
                            if let Some(client) = self.invites.remove(branch)
                                && let Some(op) = client.op
                            {
                                let result = Err(CallError::Timeout);
                                self.events.push_back(Event::Placed { op, result });
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
                        ServerInviteTick::Retransmit(bytes) => {
                            let peer = state.peer;
                            self.send(peer, bytes);
                        }
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
                        self.end_dialog(id, now);
                    } else if state.closed_since.is_some_and(|at| now >= at + CLOSED_KEPT) {
                        self.dialogs.remove(id);
                        self.events.push_back(Event::Forgotten(id.clone()));
                    }
                }
            }
            self.schedule(wake);
        }
        for id in no_ack {
            self.on_no_ack(&id, now);
        }
    }

    /// A message of ours that [`Transmit::report`] named could not be sent: the request's
    /// transaction ends and its waiter learns why (RFC 3261 §17.1.4).
    pub fn handle_send_error(&mut self, now: Instant, failed: SendRef, error: &str) {
        let SendRef(branch) = failed;
        if let Some((_, _, pending)) = self.clients.remove(&branch) {
            self.fail_pending(pending, ReferFailure::Transport(error.to_owned()), now);
            self.schedule(Wake::Client(branch));
        } else if let Some(client) = self.invites.remove(&branch) {
            if let Some(op) = client.op {
                let result = Err(CallError::Transport(error.to_owned()));
                self.events.push_back(Event::Placed { op, result });
            }
            self.schedule(Wake::Invite(branch));
        }
    }

    fn fail_pending(&mut self, pending: Pending, failure: ReferFailure, now: Instant) {
        match pending {
            Pending::Refer { id, refer_id, op } => {
                if let Some(state) = self.dialogs.get_mut(&id) {
                    state.subscriptions.refer_failed(refer_id);
                    self.events.push_back(Event::Readable(id.clone()));
                }
                // No answer at all to a request in the dialog: the dialog is gone, as for a
                // 481 or 408 (RFC 3261 §12.2.1.2).
                if failure == ReferFailure::Timeout {
                    self.end_dialog(&id, now);
                }
                let result = Err(failure);
                self.events.push_back(Event::Referred { op, result });
            }
            Pending::Bye { id, op } => {
                // A BYE that got no answer still ends our side of the dialog; one that could
                // not be sent is reported.
                self.end_dialog(&id, now);
                if let Some(op) = op {
                    let result = match failure {
                        ReferFailure::Timeout => Ok(()),
                        other => Err(other),
                    };
                    self.events.push_back(Event::HungUp { op, result });
                }
            }
            Pending::Quiet => {}
        }
    }

    /// The dialog has ended for its owner: [`Event::Ended`], once.
    fn report_ended(&mut self, id: &DialogId, by_peer: bool) {
        if let Some(state) = self.dialogs.get_mut(id)
            && !state.ended
        {
            state.ended = true;
            let id = id.clone();
            self.events.push_back(Event::Ended { id, by_peer });
        }
    }

    /// Ends a dialog now: subscriptions learn it, waiters wake, the owner is told. The entry
    /// stays (closed) so queued events can still be read.
    fn end_dialog(&mut self, id: &DialogId, now: Instant) {
        let Some(state) = self.dialogs.get_mut(id) else {
            return;
        };
        if state.closed_since.is_some() {
            return;
        }
        self.open_dialogs = self.open_dialogs.saturating_sub(1);
        state.subscriptions.dialog_ended();
        state.closing_at = None;
        state.closed_since = Some(now);
        let waiting = std::mem::take(&mut state.waiting);
        self.abandon(waiting);
        self.report_ended(id, false);
        self.events.push_back(Event::Readable(id.clone()));
        self.schedule(Wake::Dialog(id.clone()));
        self.forget_if_read(id);
    }

    /// Forgets an ended dialog at once when nothing in it is left to read (every subscription
    /// ended and read to the end), instead of keeping it for [`CLOSED_KEPT`]: at 1,000
    /// transfers/s, 120 s of ended dialogs (about 10 KiB each) would hold over 1 GiB. To the
    /// owner nothing changes: a read of an ended, read-out subscription fails either way.
    fn forget_if_read(&mut self, id: &DialogId) {
        if self
            .dialogs
            .get(id)
            .is_some_and(|d| d.closed_since.is_some() && d.subscriptions.all_read())
        {
            self.dialogs.remove(id);
            self.events.push_back(Event::Forgotten(id.clone()));
            self.schedule(Wake::Dialog(id.clone()));
        }
    }

    /// The dialog ends (or the peer hung up) before the waiting requests could go out: a
    /// waiting REFER fails with [`ReferFailure::DialogGone`], a waiting BYE has nothing left
    /// to do.
    fn abandon(&mut self, waiting: Vec<Deferred>) {
        for deferred in waiting {
            self.events.push_back(match deferred {
                Deferred::Refer { op, .. } => Event::Referred {
                    op,
                    result: Err(ReferFailure::DialogGone),
                },
                Deferred::Bye { op } => Event::HungUp { op, result: Ok(()) },
            });
        }
    }

    /// Sends an in-dialog request and starts its client transaction; a send failure comes
    /// back through [`Self::handle_send_error`].
    fn start_request(
        &mut self,
        branch: String,
        bytes: Vec<u8>,
        peer: Destination,
        pending: Pending,
        now: Instant,
    ) {
        let report = Some(SendRef(branch.clone()));
        self.send_to(peer.clone(), bytes.clone(), report);
        let tx = ClientNonInvite::new(
            bytes,
            self.config.transport.reliable(),
            self.config.timers,
            now,
        );
        self.clients.insert(branch.clone(), (tx, peer, pending));
        self.schedule(Wake::Client(branch));
    }

    /// Keeps a new dialog and returns what its owner gets to know of it.
    fn register_call(&mut self, new: NewCall) -> CallInfo {
        let info = CallInfo {
            id: new.dialog.id.clone(),
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
                ended: false,
                ack: new.ack,
                local_sdp: new.local_sdp,
                closing_at: None,
                closed_since: None,
                confirmed: new.confirmed,
                waiting: Vec::new(),
            },
        );
        info
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

impl Engine {
    /// A message received from `from` at `received` (when the transport read it: admission
    /// measures the wait from there to `now`).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        received: Instant,
        bytes: &[u8],
    ) {
        let message = match wire::parse(bytes) {
            Ok(message) => message,
            Err(err @ wire::ParseError::Empty) => {
                self.drop_message(from, DropCause::KeepAlive, &err);
                return;
            }
            Err(err) => {
                match wire::error_response(bytes, &err) {
                    Some(response) => {
                        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        let (transport, local) = (self.config.transport, self.local);
                        trace::answered(transport, local, from, response.status, &err);
                        self.send(from, response.to_bytes());
                    }
                    None => self.drop_message(from, DropCause::Unparseable, &err),
                }
                return;
            }
        };
        match message {
            Message::Response(response) => self.on_response(response, from, now),
            Message::Request(request) => self.on_request(request, from, received, now),
        }
    }

    /// A response, then the new deadlines of the transaction it went to.
    fn on_response(&mut self, response: Response, from: SocketAddr, now: Instant) {
        let Some(branch) = response.via_branch().map(str::to_owned) else {
            self.drop_message(from, DropCause::StrayResponse, &"no Via branch");
            return;
        };
        if self.clients.contains_key(&branch) {
            self.on_client_response(&branch, response, now);
            self.schedule(Wake::Client(branch));
        } else if self.invites.contains_key(&branch) {
            self.on_invite_response(&branch, response, now);
            self.schedule(Wake::Invite(branch));
        } else {
            let detail = format!("{} to branch {branch}", response.status);
            self.drop_message(from, DropCause::StrayResponse, &detail);
        }
    }

    fn on_client_response(&mut self, branch: &str, response: Response, now: Instant) {
        let Some((tx, _, pending)) = self.clients.get_mut(branch) else {
            return;
        };
        if tx.on_response(response.status, now) != ClientEvent::Deliver || response.status < 200 {
            return;
        }
        match std::mem::replace(pending, Pending::Quiet) {
            Pending::Refer { id, refer_id, op } => {
                if let Some(state) = self.dialogs.get_mut(&id) {
                    state.subscriptions.refer_answered(refer_id, &response);
                    self.events.push_back(Event::Readable(id.clone()));
                }
                // 481 or 408 to an in-dialog request: the dialog is gone (§12.2.1.2).
                if matches!(response.status, 408 | 481) {
                    self.end_dialog(&id, now);
                }
                let result = Ok(ReferAnswer {
                    refer_id,
                    status: response.status,
                    reason: response.reason,
                    headers: response.headers,
                });
                self.events.push_back(Event::Referred { op, result });
            }
            Pending::Bye { id, op } => {
                self.end_dialog(&id, now);
                if let Some(op) = op {
                    self.events.push_back(Event::HungUp { op, result: Ok(()) });
                }
            }
            Pending::Quiet => {}
        }
    }

    fn on_invite_response(&mut self, branch: &str, response: Response, now: Instant) {
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
                let op = client.op.take();
                let Some(mut dialog) = Dialog::uac(&request, &response, &contact) else {
                    if let Some(op) = op {
                        let result = Err(CallError::Transport(
                            "the 2xx lacks To tag or Contact".into(),
                        ));
                        self.events.push_back(Event::Placed { op, result });
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
                let hop = destination(&first_hop(&dialog), peer);
                let ack = ack.to_bytes();
                self.send_to(hop.clone(), ack.clone(), None);
                let call = self.register_call(NewCall {
                    dialog,
                    peer: hop,
                    ack: Some(ack),
                    local_sdp: request.body.clone(),
                    remote_sdp: response.body.clone(),
                    from: request.headers.get("From").unwrap_or_default().to_owned(),
                    to: response.headers.get("To").unwrap_or_default().to_owned(),
                    // Our ACK is out: the dialog is confirmed (RFC 3261 §13.2.2.4).
                    confirmed: true,
                });
                if let Some(op) = op {
                    self.events.push_back(Event::Placed {
                        op,
                        result: Ok(call),
                    });
                }
            }
            InviteClientEvent::DeliverAndAck(ack) => {
                let op = client.op.take();
                self.send(peer, ack);
                if let Some(op) = op {
                    let result = Err(CallError::Rejected {
                        status: response.status,
                        reason: response.reason.clone(),
                    });
                    self.events.push_back(Event::Placed { op, result });
                }
            }
            InviteClientEvent::Ack(ack) => self.send(peer, ack),
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
                    let to = state.peer.clone();
                    self.send_to(to, ack, None);
                }
            }
            InviteClientEvent::Deliver | InviteClientEvent::Absorb => {}
        }
    }

    fn respond(
        &mut self,
        request: &Request,
        to: SocketAddr,
        status: u16,
        reason: Option<&str>,
        now: Instant,
    ) {
        let mut response = Response::to(request, status, None);
        if let Some(reason) = reason {
            response.reason = reason.to_owned();
        }
        self.send_response(request, to, status, response, now);
    }

    /// Answers `request` with `status` and `headers` added.
    fn respond_with(
        &mut self,
        request: &Request,
        to: SocketAddr,
        status: u16,
        headers: &[(&str, String)],
        now: Instant,
    ) {
        let mut response = Response::to(request, status, None);
        for (name, value) in headers {
            response.headers.push(*name, value.clone());
        }
        self.send_response(request, to, status, response, now);
    }

    /// Sends a response to `request`, kept in its server transaction for retransmissions.
    fn send_response(
        &mut self,
        request: &Request,
        to: SocketAddr,
        status: u16,
        response: Response,
        now: Instant,
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
            tx.respond(status, bytes.clone(), now);
            self.schedule(Wake::Server(key));
        }
        self.send(to, bytes);
    }

    fn on_request(&mut self, request: Request, from: SocketAddr, received: Instant, now: Instant) {
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
                self.confirm(&id, now);
            }
            return;
        }
        if let Some(state) = self.server_invites.get(&key) {
            if let ServerEvent::Resend(bytes) = state.tx.on_retransmission() {
                self.stats.retransmissions.fetch_add(1, Ordering::Relaxed);
                self.send(from, bytes);
            }
            return;
        }
        if let Some((tx, _)) = self.servers.get(&key) {
            if let ServerEvent::Resend(bytes) = tx.on_retransmission() {
                self.stats.retransmissions.fetch_add(1, Ordering::Relaxed);
                self.send(from, bytes);
            }
            return;
        }
        if request.method == Method::Invite && request.to_tag().is_none() {
            self.on_new_invite(request, key, from, received, now);
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
            self.respond(&request, from, 501, None, now);
            return;
        }
        if request.to_tag().is_none() {
            // Outside any dialog: OPTIONS is answered (503 while draining, so a prober takes
            // us out of rotation), CANCEL finds nothing, the rest 481.
            match request.method {
                Method::Options if self.draining => {
                    let retry_after = self.gate.retry_after_secs().to_string();
                    let headers = [("Retry-After", retry_after)];
                    self.respond_with(&request, from, 503, &headers, now);
                }
                Method::Options => self.respond(&request, from, 200, None, now),
                _ => self.respond(&request, from, 481, None, now),
            }
            return;
        }
        let Some(id) = Dialog::id_of_incoming(&request) else {
            self.respond(&request, from, 481, None, now);
            return;
        };
        let grace = self.config.bye_grace;
        let Some(state) = self.open_dialog(&id) else {
            self.respond(&request, from, 481, None, now);
            return;
        };
        if let Err(err) = state.dialog.accept_remote_cseq(&request) {
            self.respond(&request, from, err.status(), None, now);
            return;
        }
        match request.method {
            Method::Notify => {
                let verdict = state.subscriptions.on_notify(&request);
                if let NotifyVerdict::Accept(_) | NotifyVerdict::Coalesced(_) = verdict {
                    self.events.push_back(Event::Readable(id));
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
                self.respond(&request, from, status, None, now);
            }
            Method::Bye => {
                // Hold the dialog open for a moment: a final NOTIFY on the heels of the BYE
                // still counts. After that the subscriptions learn the dialog ended.
                // For the call's owner the dialog has ended now: it learns so, and no
                // request of ours goes out in it any more.
                if state.closing_at.is_none() {
                    state.closing_at = Some(now + grace);
                    let waiting = std::mem::take(&mut state.waiting);
                    self.report_ended(&id, true);
                    self.abandon(waiting);
                }
                self.schedule(Wake::Dialog(id));
                self.respond(&request, from, 200, None, now);
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
                let bytes = response.to_bytes();
                tx.respond(200, bytes.clone(), now);
                self.servers.remove(&key);
                self.keep_server_invite(
                    key,
                    ServerInviteState {
                        tx,
                        invite: request,
                        peer: from,
                        dialog: Some(id),
                    },
                );
                self.send(from, bytes);
            }
            Method::Options | Method::Info | Method::Update => {
                self.respond(&request, from, 200, None, now);
            }
            _ => self.respond(&request, from, 501, None, now),
        }
    }

    /// A new INVITE (no To tag): refused statelessly with 503 when draining or over the
    /// admission limits, else [`Event::NewInvite`] for the driver to admit or decline.
    fn on_new_invite(
        &mut self,
        request: Request,
        key: TxKey,
        from: SocketAddr,
        received: Instant,
        now: Instant,
    ) {
        if self.draining {
            self.refuse(&request, from, Refusal::Draining);
            return;
        }
        let in_progress = self.open_dialogs + self.answering.len();
        if let Err(why) = self.gate.check(in_progress, received, now) {
            self.refuse(&request, from, why);
            return;
        }
        self.events.push_back(Event::NewInvite(NewInvite {
            invite: request,
            from,
            key,
        }));
    }

    /// Takes a new INVITE: a server transaction and 100 Trying; the call then waits for
    /// [`Self::answer`] (or [`Self::unanswered`]).
    pub fn admit(&mut self, now: Instant, new: NewInvite) -> InviteKey {
        let NewInvite { invite, from, key } = new;
        // Admitted already (a retransmission offered twice): the transaction answers it.
        if !self.server_invites.contains_key(&key) {
            let reliable = self.config.transport.reliable();
            let mut tx = ServerInvite::new(reliable, self.config.timers);
            let trying = Response::to(&invite, 100, None).to_bytes();
            tx.respond(100, trying.clone(), now);
            self.answering.insert(key.clone());
            self.keep_server_invite(
                key.clone(),
                ServerInviteState {
                    tx,
                    invite,
                    peer: from,
                    dialog: None,
                },
            );
            self.send(from, trying);
        }
        InviteKey(key)
    }

    /// Turns a new INVITE away: the application cannot take it now (its queue of calls to
    /// accept is full, or nobody accepts calls). A stateless 503, counted in
    /// [`Stats::refused_no_capacity`].
    pub fn decline(&mut self, new: NewInvite) {
        self.refuse(&new.invite, new.from, Refusal::NoCapacity);
    }

    /// Answers a new INVITE `503 Service Unavailable` with `Retry-After`, statelessly (RFC
    /// 3261 §8.2.7): no transaction, no 100 Trying, and a To tag computed from the request, so
    /// a retransmission gets the same answer. Its ACK matches nothing and is absorbed.
    fn refuse(&mut self, request: &Request, from: SocketAddr, why: Refusal) {
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
        self.send(from, response.to_bytes());
    }
}

impl Engine {
    /// Places a call: an INVITE to `target` (a SIP URI) through `peer` (the target's address,
    /// or the outbound proxy's, resolved by the caller), with `from`, `to` and an SDP offer.
    /// [`Event::Placed`] with `op` tells how it went.
    #[allow(clippy::too_many_arguments)]
    pub fn invite(
        &mut self,
        now: Instant,
        op: Op,
        peer: SocketAddr,
        target: &str,
        from: &str,
        to: String,
        sdp: Vec<u8>,
    ) {
        let reliable = self.config.transport.reliable();
        let branch = format!("z9hG4bK{}", token());
        let mut headers = Headers::new();
        headers.push("Via", format!("{};branch={branch};rport", self.via()));
        headers.push("Max-Forwards", "70");
        headers.push("From", format!("{from};tag={}", token()));
        headers.push("To", to);
        headers.push("Call-ID", format!("{}@{}", token(), self.local.ip()));
        headers.push("CSeq", "1 INVITE");
        headers.push("Contact", self.contact());
        if let Some(proxy) = &self.config.outbound_proxy {
            headers.push("Route", proxy_route(proxy));
        }
        headers.push(
            "Allow",
            "INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REFER, INFO, UPDATE",
        );
        headers.push("Supported", "norefersub");
        headers.push("Content-Type", "application/sdp");
        let request = Request {
            method: Method::Invite,
            uri: addr_uri(target).to_owned(),
            headers,
            body: sdp,
        };
        let bytes = request.to_bytes();
        let report = Some(SendRef(branch.clone()));
        self.send_to(Destination::Addr(peer), bytes.clone(), report);
        self.invites.insert(
            branch.clone(),
            InviteClient {
                tx: ClientInvite::new(bytes, reliable, self.config.timers, now),
                request,
                peer,
                op: Some(op),
            },
        );
        self.schedule(Wake::Invite(branch));
    }

    /// Answers an admitted INVITE with `status`: a 2xx (with `sdp`) sets up the dialog and
    /// returns it; requests of ours in it wait for the ACK. `None` for a failure status, or
    /// when the INVITE was answered already or is gone.
    pub fn answer(
        &mut self,
        now: Instant,
        key: &InviteKey,
        status: u16,
        sdp: Vec<u8>,
    ) -> Option<CallInfo> {
        let key = &key.0;
        let answered = self.answer_invite(now, key, status, sdp);
        self.schedule(Wake::ServerInvite(key.clone()));
        answered
    }

    fn answer_invite(
        &mut self,
        now: Instant,
        key: &TxKey,
        status: u16,
        sdp: Vec<u8>,
    ) -> Option<CallInfo> {
        let contact = self.contact();
        let state = self.server_invites.get_mut(key)?;
        let local_tag = token();
        let mut response = Response::to(&state.invite, status, Some(&local_tag));
        let peer = state.peer;
        if status < 300 {
            // RFC 3261 §12.1.1: a response that sets up a dialog carries the INVITE's
            // Record-Route, every value in order, so the caller builds the same route set and
            // its requests (ACK, NOTIFY, BYE) pass the proxies.
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
            return None;
        }
        let dialog = if status < 300 {
            Dialog::uas(&state.invite, &local_tag, &contact, 0)
        } else {
            None
        };
        if let Some(dialog) = &dialog {
            state.dialog = Some(dialog.id.clone());
        }
        let remote_sdp = state.invite.body.clone();
        let from = state
            .invite
            .headers
            .get("From")
            .unwrap_or_default()
            .to_owned();
        if status >= 200 {
            self.answering.remove(key);
        }
        self.send(peer, bytes);
        let dialog = dialog?;
        // Over TCP, requests of ours go back on the connection the INVITE came in on.
        let hop = if self.config.transport.reliable() {
            Destination::Addr(peer)
        } else {
            destination(&first_hop(&dialog), peer)
        };
        Some(self.register_call(NewCall {
            dialog,
            peer: hop,
            ack: None,
            local_sdp: sdp,
            remote_sdp,
            from,
            to: response.headers.get("To").unwrap_or_default().to_owned(),
            // Requests of ours wait for the ACK.
            confirmed: false,
        }))
    }

    /// The application let go of an admitted INVITE without answering it: it is answered
    /// `500 Server Internal Error` (nothing happens when it was answered already).
    pub fn unanswered(&mut self, now: Instant, key: &InviteKey) {
        let key = &key.0;
        if let Some(state) = self.server_invites.get_mut(key) {
            let response = Response::to(&state.invite, 500, Some(&token()));
            let bytes = response.to_bytes();
            // Refused (and nothing sent) when the call was answered already.
            if state.tx.respond(500, bytes.clone(), now) {
                let peer = state.peer;
                self.answering.remove(key);
                self.stats.unanswered_calls.fetch_add(1, Ordering::Relaxed);
                self.send(peer, bytes);
            }
        }
        self.schedule(Wake::ServerInvite(key.clone()));
    }

    /// The next event of REFER `refer_id`'s subscription in dialog `id`: `Ok(None)` when
    /// nothing is queued yet ([`Event::Readable`] tells when to ask again). An ended dialog is
    /// forgotten ([`Event::Forgotten`]) once its last event is read; its subscriptions are
    /// then [`SubscriptionError::Unknown`].
    pub fn next_refer_event(
        &mut self,
        id: &DialogId,
        refer_id: u32,
    ) -> Result<Option<SubscriptionEvent>, SubscriptionError> {
        let event = match self.dialogs.get_mut(id) {
            Some(state) => state.subscriptions.next_event(refer_id),
            None => return Err(SubscriptionError::Unknown(refer_id)),
        };
        self.forget_if_read(id);
        event
    }

    /// Sends a REFER in dialog `id` with `headers` (Refer-To, Referred-By, ...), or queues it
    /// until the dialog is confirmed. [`Event::Referred`] with `op` carries the answer.
    pub fn refer(&mut self, now: Instant, op: Op, id: DialogId, headers: Vec<(String, String)>) {
        let via = self.via();
        let Some(state) = self.sendable_dialog(&id) else {
            let result = Err(ReferFailure::DialogGone);
            self.events.push_back(Event::Referred { op, result });
            return;
        };
        if !state.confirmed {
            state.waiting.push(Deferred::Refer { headers, op });
            return;
        }
        let branch = format!("z9hG4bK{}", token());
        let mut refer = state.dialog.request(Method::Refer, &via, &branch, None);
        for (name, value) in headers {
            refer.headers.push(name, value);
        }
        let refer_id = state.dialog.local_cseq;
        state.subscriptions.refer_sent(refer_id);
        let peer = state.peer.clone();
        let pending = Pending::Refer { id, refer_id, op };
        self.start_request(branch, refer.to_bytes(), peer, pending, now);
    }

    /// Sends a BYE in dialog `id`, or queues it until the dialog is confirmed.
    /// [`Event::HungUp`] with `op` tells when it is answered (at once when the dialog is
    /// gone already).
    pub fn bye(&mut self, now: Instant, op: Op, id: DialogId) {
        let via = self.via();
        let Some(state) = self.sendable_dialog(&id) else {
            self.events.push_back(Event::HungUp { op, result: Ok(()) });
            return;
        };
        if !state.confirmed {
            state.waiting.push(Deferred::Bye { op });
            return;
        }
        let branch = format!("z9hG4bK{}", token());
        let bye = state.dialog.request(Method::Bye, &via, &branch, None);
        let peer = state.peer.clone();
        let pending = Pending::Bye { id, op: Some(op) };
        self.start_request(branch, bye.to_bytes(), peer, pending, now);
    }

    /// The ACK for our 2xx arrived: the dialog is confirmed, and the requests waiting for it
    /// go out now, in the order they were made.
    fn confirm(&mut self, id: &DialogId, now: Instant) {
        let Some(state) = self.dialogs.get_mut(id) else {
            return;
        };
        if state.confirmed {
            return;
        }
        state.confirmed = true;
        for deferred in std::mem::take(&mut state.waiting) {
            match deferred {
                Deferred::Refer { headers, op } => self.refer(now, op, id.clone(), headers),
                Deferred::Bye { op } => self.bye(now, op, id.clone()),
            }
        }
    }

    /// No ACK for our 2xx within Timer H (RFC 3261 §13.3.1.4): the dialog is confirmed for
    /// us but never came up for the peer, so the session is terminated with a BYE. Waiting
    /// REFERs fail with [`ReferFailure::DialogGone`] (never sent); a waiting BYE resolves
    /// when that BYE is answered. The dialog ends now for the call's owner.
    fn on_no_ack(&mut self, id: &DialogId, now: Instant) {
        let via = self.via();
        let Some(state) = self.sendable_dialog(id) else {
            // Already ended, or the peer hung up: nothing to send.
            self.end_dialog(id, now);
            return;
        };
        state.confirmed = true;
        let mut bye_op = None;
        let mut settled = Vec::new();
        for deferred in std::mem::take(&mut state.waiting) {
            match deferred {
                // More than one hangup waiting: the first gets the BYE's answer.
                Deferred::Bye { op } if bye_op.is_none() => bye_op = Some(op),
                other => settled.push(other),
            }
        }
        let branch = format!("z9hG4bK{}", token());
        let bye = state.dialog.request(Method::Bye, &via, &branch, None);
        let peer = state.peer.clone();
        self.stats.unacked_answers.fetch_add(1, Ordering::Relaxed);
        self.abandon(settled);
        let pending = Pending::Bye {
            id: id.clone(),
            op: bye_op,
        };
        self.start_request(branch, bye.to_bytes(), peer, pending, now);
        self.end_dialog(id, now);
    }
}

/// The pre-loaded Route for an outbound proxy URI (`sip:host:port`, with or without angle
/// brackets): in brackets, with `;lr`, since an outbound proxy is a loose router (RFC 3261
/// §8.1.2).
pub(crate) fn proxy_route(proxy: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_of_uris() {
        let fallback: SocketAddr = "192.0.2.9:5099".parse().unwrap();
        let addr = |s: &str| Destination::Addr(s.parse().unwrap());
        assert_eq!(
            destination("<sip:bob@127.0.0.1:5070>", fallback),
            addr("127.0.0.1:5070")
        );
        assert_eq!(
            destination("sip:127.0.0.1;lr", fallback),
            addr("127.0.0.1:5060")
        );
        assert_eq!(
            destination("sip:bob@[::1]:5070;transport=udp", fallback),
            addr("[::1]:5070")
        );
        assert_eq!(destination("sip:bob@[::1]", fallback), addr("[::1]:5060"));
        assert_eq!(
            destination("<sip:bob@pbx.example.com;transport=udp>", fallback),
            Destination::Name {
                host_port: "pbx.example.com:5060".into(),
                fallback
            }
        );
        assert_eq!(
            destination("sip:pbx.example.com:5080", fallback),
            Destination::Name {
                host_port: "pbx.example.com:5080".into(),
                fallback
            }
        );
        assert_eq!(
            destination("garbage", fallback),
            Destination::Addr(fallback)
        );
    }
}
