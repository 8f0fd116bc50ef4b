//! UDP and TCP on tokio. Both deliver whole messages to the endpoint's core with the address
//! they came from, and send bytes to an address: over UDP as one datagram, over TCP on the
//! connection to that address (the one the request came in on, or a new one).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::wire;

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

/// One received message, not yet parsed.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub(crate) bytes: Vec<u8>,
    pub(crate) from: SocketAddr,
}

/// The sending half, shared by the core.
#[derive(Clone)]
pub(crate) enum Sender {
    Udp(Arc<UdpSocket>),
    Tcp(TcpSender),
}

#[derive(Clone)]
pub(crate) struct TcpSender {
    connections: Arc<Mutex<HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>>>>,
    inbound: mpsc::Sender<Inbound>,
}

impl Sender {
    /// Sends `bytes` to `to`. Errors are returned for the caller to report (a transaction
    /// turns them into a transport failure).
    pub(crate) async fn send(&self, to: SocketAddr, bytes: Vec<u8>) -> std::io::Result<()> {
        match self {
            Sender::Udp(socket) => socket.send_to(&bytes, to).await.map(drop),
            Sender::Tcp(tcp) => tcp.send(to, bytes).await,
        }
    }
}

impl TcpSender {
    async fn send(&self, to: SocketAddr, bytes: Vec<u8>) -> std::io::Result<()> {
        let existing = self.lock().get(&to).cloned();
        if let Some(writer) = existing
            && writer.send(bytes.clone()).is_ok()
        {
            return Ok(());
        }
        let stream =
            tokio::time::timeout(std::time::Duration::from_secs(5), TcpStream::connect(to))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connecting to {to} timed out"),
                    )
                })??;
        let writer = self.adopt(stream, to);
        writer
            .send(bytes)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "connection closed"))
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>>> {
        // A poisoned map only means a task panicked mid-insert; the map itself is fine.
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the reader and writer tasks of a connection and registers it under `peer`.
    fn adopt(&self, stream: TcpStream, peer: SocketAddr) -> mpsc::UnboundedSender<Vec<u8>> {
        let (mut read, mut write) = stream.into_split();
        let (writer, mut queue) = mpsc::unbounded_channel::<Vec<u8>>();
        self.lock().insert(peer, writer.clone());
        tokio::spawn(async move {
            while let Some(bytes) = queue.recv().await {
                if write.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let inbound = self.inbound.clone();
        let connections = self.connections.clone();
        tokio::spawn(async move {
            let mut buffer = Vec::with_capacity(4096);
            let mut chunk = vec![0u8; 16 * 1024];
            'read: loop {
                let n = match read.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buffer.extend_from_slice(&chunk[..n]);
                loop {
                    match wire::frame(&buffer) {
                        Ok(Some(len)) => {
                            let message: Vec<u8> = buffer.drain(..len).collect();
                            if message.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                                continue; // keep-alive
                            }
                            if inbound
                                .send(Inbound {
                                    bytes: message,
                                    from: peer,
                                })
                                .await
                                .is_err()
                            {
                                break 'read;
                            }
                        }
                        Ok(None) => break,
                        // A stream that cannot be framed cannot be resynchronised: close it.
                        Err(_) => break 'read,
                    }
                }
            }
            connections
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&peer);
        });
        writer
    }
}

/// Binds the transport on `addr` and starts receiving into `inbound`.
pub(crate) async fn bind(
    transport: Transport,
    addr: SocketAddr,
    inbound: mpsc::Sender<Inbound>,
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
                    if inbound
                        .send(Inbound {
                            bytes: buffer[..n].to_vec(),
                            from,
                        })
                        .await
                        .is_err()
                    {
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
                connections: Arc::new(Mutex::new(HashMap::new())),
                inbound,
            };
            let acceptor = sender.clone();
            tokio::spawn(async move {
                while let Ok((stream, peer)) = listener.accept().await {
                    if acceptor.inbound.is_closed() {
                        break;
                    }
                    acceptor.adopt(stream, peer);
                }
            });
            Ok((Sender::Tcp(sender), local))
        }
    }
}
