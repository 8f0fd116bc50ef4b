//! UDP and TCP on tokio. Both deliver whole messages to the endpoint's driver with the address
//! they came from and when they arrived, and send bytes to an address: over UDP as one
//! datagram, over TCP on the connection to that address (the one the request came in on, or a
//! new one, opened in a task of its own so the driver never waits for a connect). A message
//! that could not go out and carries a [`SendRef`] is reported back, so the request's waiter
//! learns it at once. TCP connections from outside are bounded by [`TcpLimits`]: how many,
//! and how long one may sit on half a message or on nothing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::endpoint::Stats;
use crate::engine::SendRef;
use crate::trace::{self, DropCause};
use crate::wire::{self, StreamFramer};

/// Which transport an endpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: unreliable, so the transactions retransmit.
    Udp,
    /// TCP: reliable, framed by Content-Length.
    Tcp,
}

impl Transport {
    /// The token in Via (`UDP`, `TCP`).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// Whether the transport is reliable.
    pub fn reliable(self) -> bool {
        self == Transport::Tcp
    }
}

/// Limits on TCP connections: an outsider decides how many it opens and how slowly it talks.
/// In [`crate::endpoint::EndpointConfig::tcp`]; `None` turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Most connections accepted at once, from all peers; the next one is closed at once.
    /// Default 1,000 (below the usual limit of 1,024 open files).
    pub max_connections: Option<usize>,
    /// Most connections accepted at once from one IP address. Default 100 (an SBC or proxy
    /// uses a handful).
    pub max_connections_per_ip: Option<usize>,
    /// How long one message may take on a connection, either way: one that has sent part of a
    /// message but not all of it within this time is closed (slowloris), and so is one that
    /// does not take a message we send within it (a peer that stops reading). Default 10 s.
    pub message_timeout: Option<Duration>,
    /// A connection on which the peer has sent nothing for this long is closed. Any bytes
    /// count, so RFC 5626 CRLF keep-alives keep it open. Default 1 hour: longer than the usual
    /// session-timer refresh (30 minutes), so a call whose peer refreshes or keeps alive is
    /// never cut; a call's dialog also survives its connection (a new one is opened to send).
    pub idle_timeout: Option<Duration>,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: Some(1_000),
            max_connections_per_ip: Some(100),
            message_timeout: Some(Duration::from_secs(10)),
            idle_timeout: Some(Duration::from_secs(3_600)),
        }
    }
}

/// One received message, not yet parsed.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub(crate) bytes: Vec<u8>,
    pub(crate) from: SocketAddr,
    /// When the transport read it (before it waited in the core's queue).
    pub(crate) received: Instant,
}

/// A message that carried a [`SendRef`] and could not be sent.
#[derive(Debug)]
pub(crate) struct SendFailure {
    pub(crate) report: SendRef,
    pub(crate) error: String,
}

/// A message queued for a TCP connection.
struct Outgoing {
    bytes: Vec<u8>,
    report: Option<SendRef>,
}

/// The sending half, shared by the driver.
#[derive(Clone)]
pub(crate) enum Sender {
    Udp(Arc<UdpSocket>),
    Tcp(TcpSender),
}

/// Messages queued for one connection's writer. A peer that stops reading fills it, and what
/// we send it next fails at once instead of piling up in memory.
const WRITE_QUEUE: usize = 64;

/// The open TCP connections: a writer per peer address, and how many of them we accepted,
/// in all and per IP address (connections we opened are not counted against the limits).
#[derive(Default)]
struct Connections {
    writers: HashMap<SocketAddr, Writer>,
    /// The id of the next connection.
    next_id: u64,
    accepted: usize,
    accepted_from: HashMap<IpAddr, usize>,
}

/// The queue of one connection's writer task; the id tells a connection from a newer one to
/// the same peer address.
struct Writer {
    id: u64,
    queue: mpsc::Sender<Outgoing>,
}

impl Connections {
    /// Forgets connection `id`'s writer, unless a newer connection to `peer` replaced it.
    fn forget(&mut self, peer: SocketAddr, id: u64) {
        if self.writers.get(&peer).is_some_and(|w| w.id == id) {
            self.writers.remove(&peer);
        }
    }

    /// Counts a connection accepted from `ip`, or says which limit it is over.
    fn admit(&mut self, ip: IpAddr, limits: &TcpLimits) -> Result<(), TcpRefusal> {
        if limits
            .max_connections
            .is_some_and(|max| self.accepted >= max)
        {
            return Err(TcpRefusal::Total);
        }
        let from_ip = self.accepted_from.entry(ip).or_default();
        if limits
            .max_connections_per_ip
            .is_some_and(|max| *from_ip >= max)
        {
            return Err(TcpRefusal::PerIp);
        }
        *from_ip += 1;
        self.accepted += 1;
        Ok(())
    }

    /// An accepted connection from `ip` has closed.
    fn release(&mut self, ip: IpAddr) {
        self.accepted = self.accepted.saturating_sub(1);
        if let Some(count) = self.accepted_from.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.accepted_from.remove(&ip);
            }
        }
    }
}

/// Which limit refused a connection.
enum TcpRefusal {
    Total,
    PerIp,
}

#[derive(Clone)]
pub(crate) struct TcpSender {
    connections: Arc<Mutex<Connections>>,
    inbound: mpsc::Sender<Inbound>,
    failures: mpsc::UnboundedSender<SendFailure>,
    limits: TcpLimits,
    stats: Arc<Stats>,
    /// The listening address (the `dst` of what is traced as received).
    local: SocketAddr,
}

impl Sender {
    /// Sends `bytes` to `to` (UDP), or queues them on the connection to `to` (TCP, opening
    /// one when there is none). An error that is known at once is returned; a TCP connection
    /// that cannot be opened, or closes before the message is written, reports `report` on
    /// the failures channel instead.
    pub(crate) async fn send(
        &self,
        to: SocketAddr,
        bytes: Vec<u8>,
        report: Option<SendRef>,
    ) -> std::io::Result<()> {
        match self {
            Sender::Udp(socket) => socket.send_to(&bytes, to).await.map(drop),
            Sender::Tcp(tcp) => tcp.send(to, Outgoing { bytes, report }),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// How long opening a TCP connection to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl TcpSender {
    /// Queues `outgoing` on the connection to `to`, or on a new one that a task opens.
    fn send(&self, to: SocketAddr, outgoing: Outgoing) -> std::io::Result<()> {
        let existing = self.lock().writers.get(&to).map(|w| w.queue.clone());
        let outgoing = match existing {
            None => outgoing,
            Some(writer) => match writer.try_send(outgoing) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    bump(&self.stats.tcp_send_queue_full);
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        format!("{to} does not read: {WRITE_QUEUE} messages wait to be sent"),
                    ));
                }
                // The connection has closed: open a new one.
                Err(mpsc::error::TrySendError::Closed(outgoing)) => outgoing,
            },
        };
        let (id, writer, queue) = self.register(to);
        let this = self.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await {
                Ok(Ok(stream)) => this.run(stream, to, id, false, queue),
                Ok(Err(err)) => {
                    this.fail_queue(to, id, queue, &format!("connecting to {to}: {err}"));
                }
                Err(_) => this.fail_queue(to, id, queue, &format!("connecting to {to} timed out")),
            }
        });
        writer
            .try_send(outgoing)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "connection closed"))
    }

    /// Nothing more goes out on connection `id`: what is queued on it fails with `error`, and
    /// the next message to `peer` opens a new connection.
    fn fail_queue(
        &self,
        peer: SocketAddr,
        id: u64,
        mut queue: mpsc::Receiver<Outgoing>,
        error: &str,
    ) {
        queue.close();
        self.lock().forget(peer, id);
        while let Ok(outgoing) = queue.try_recv() {
            self.report(outgoing, error);
        }
    }

    /// Reports a message that could not be sent, if it asked to be.
    fn report(&self, outgoing: Outgoing, error: &str) {
        if let Some(report) = outgoing.report {
            let error = error.to_owned();
            let _ = self.failures.send(SendFailure { report, error });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connections> {
        // A poisoned map only means a task panicked mid-insert; the map itself is fine.
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection from outside: adopted, or closed at once when it is over the limits.
    fn accept(&self, stream: TcpStream, peer: SocketAddr) {
        match self.lock().admit(peer.ip(), &self.limits) {
            Ok(()) => {}
            Err(TcpRefusal::Total) => return bump(&self.stats.tcp_refused_max),
            Err(TcpRefusal::PerIp) => return bump(&self.stats.tcp_refused_per_ip),
        }
        let (id, _, queue) = self.register(peer);
        self.run(stream, peer, id, true, queue);
    }

    /// Registers a new connection's writer queue under `peer` (replacing an older one).
    fn register(
        &self,
        peer: SocketAddr,
    ) -> (u64, mpsc::Sender<Outgoing>, mpsc::Receiver<Outgoing>) {
        let (writer, queue) = mpsc::channel::<Outgoing>(WRITE_QUEUE);
        let mut connections = self.lock();
        let id = connections.next_id;
        connections.next_id += 1;
        let registered = writer.clone();
        connections.writers.insert(
            peer,
            Writer {
                id,
                queue: registered,
            },
        );
        (id, writer, queue)
    }

    /// Starts the reader and writer tasks of connection `id` to `peer`. `accepted`
    /// connections release their place in the limits when they close.
    fn run(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        id: u64,
        accepted: bool,
        mut queue: mpsc::Receiver<Outgoing>,
    ) {
        let (mut read, mut write) = stream.into_split();
        // Set when the writer stops: the reader then stops too, so a peer that does not read
        // cannot keep sending requests we cannot answer.
        let writer_gone = Arc::new(tokio::sync::Notify::new());
        let this = self.clone();
        let gone = writer_gone.clone();
        tokio::spawn(async move {
            while let Some(outgoing) = queue.recv().await {
                let written = match this.limits.message_timeout {
                    Some(limit) => tokio::time::timeout(limit, write.write_all(&outgoing.bytes))
                        .await
                        .unwrap_or_else(|_| {
                            bump(&this.stats.tcp_write_timeouts);
                            Err(std::io::ErrorKind::TimedOut.into())
                        }),
                    None => write.write_all(&outgoing.bytes).await,
                };
                if let Err(err) = written {
                    // What did not go out fails now, not at its transaction's timeout.
                    let error = format!("writing to {peer}: {err}");
                    this.report(outgoing, &error);
                    this.fail_queue(peer, id, queue, &error);
                    gone.notify_one();
                    return;
                }
            }
            // Nothing more goes out on this connection (dropping the write half sends FIN);
            // the next message to the peer opens a new one.
            this.lock().forget(peer, id);
            gone.notify_one();
        });
        let this = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = this.read_messages(&mut read, peer) => {}
                () = writer_gone.notified() => {}
            }
            let mut connections = this.lock();
            connections.forget(peer, id);
            if accepted {
                connections.release(peer.ip());
            }
        });
    }

    /// Reads a connection until it closes, cannot be framed, or times out (a message left
    /// incomplete past `message_timeout`, or nothing at all for `idle_timeout`), and hands
    /// every message to the core.
    async fn read_messages(&self, read: &mut (impl AsyncReadExt + Unpin), peer: SocketAddr) {
        let mut framer = StreamFramer::new();
        let mut chunk = vec![0u8; 16 * 1024];
        let mut last_traffic = Instant::now();
        // When the first byte of the message still incomplete arrived.
        let mut partial_since: Option<Instant> = None;
        loop {
            let deadline = match partial_since {
                Some(since) => self.limits.message_timeout.map(|t| (since + t, true)),
                None => self.limits.idle_timeout.map(|t| (last_traffic + t, false)),
            };
            let received = match deadline {
                Some((at, partial)) => {
                    match tokio::time::timeout_at(at.into(), read.read(&mut chunk)).await {
                        Ok(received) => received,
                        Err(_) if partial => return bump(&self.stats.tcp_message_timeouts),
                        Err(_) => return bump(&self.stats.tcp_idle_timeouts),
                    }
                }
                None => read.read(&mut chunk).await,
            };
            let n = match received {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let now = Instant::now();
            last_traffic = now;
            framer.push(&chunk[..n]);
            let mut framed_any = false;
            loop {
                match framer.next_message() {
                    Ok(Some(bytes)) => {
                        framed_any = true;
                        let message = Inbound {
                            bytes,
                            from: peer,
                            received: Instant::now(),
                        };
                        if self.inbound.send(message).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    // A stream that cannot be framed cannot be resynchronised: close it.
                    Err(err) => {
                        let cause = DropCause::Unframeable;
                        trace::dropped(Transport::Tcp, peer, self.local, cause, &err);
                        return bump(&self.stats.tcp_unframeable);
                    }
                }
            }
            partial_since = match (framer.buffered(), partial_since) {
                (0, _) => None,
                // What is left belongs to a message that started in these bytes.
                (_, _) if framed_any => Some(now),
                (_, since) => since.or(Some(now)),
            };
        }
    }
}

/// Binds the transport on `addr` and starts receiving into `inbound`.
pub(crate) async fn bind(
    transport: Transport,
    addr: SocketAddr,
    inbound: mpsc::Sender<Inbound>,
    failures: mpsc::UnboundedSender<SendFailure>,
    limits: TcpLimits,
    stats: Arc<Stats>,
) -> std::io::Result<(Sender, SocketAddr)> {
    match transport {
        Transport::Udp => {
            let socket = Arc::new(UdpSocket::bind(addr).await?);
            let local = socket.local_addr()?;
            let receiver = socket.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; wire::MAX_MESSAGE_BYTES + 1];
                loop {
                    let Ok((n, from)) = receiver.recv_from(&mut buffer).await else {
                        continue;
                    };
                    // Oversized datagrams arrive truncated to the buffer; the parser
                    // refuses them by size.
                    let message = Inbound {
                        bytes: buffer[..n].to_vec(),
                        from,
                        received: Instant::now(),
                    };
                    if inbound.send(message).await.is_err() {
                        break;
                    }
                }
            });
            Ok((Sender::Udp(socket), local))
        }
        Transport::Tcp => {
            let listener = TcpListener::bind(addr).await?;
            let local = listener.local_addr()?;
            let sender = TcpSender {
                connections: Arc::new(Mutex::new(Connections::default())),
                inbound,
                failures,
                limits,
                stats,
                local,
            };
            let acceptor = sender.clone();
            tokio::spawn(async move {
                loop {
                    let (stream, peer) = match listener.accept().await {
                        Ok(accepted) => accepted,
                        // Out of file descriptors or a connection reset before accept: the
                        // listener is fine, try again shortly instead of giving up.
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    if acceptor.inbound.is_closed() {
                        break;
                    }
                    acceptor.accept(stream, peer);
                }
            });
            Ok((Sender::Tcp(sender), local))
        }
    }
}
