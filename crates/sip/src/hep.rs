//! HEP v3 export: every SIP message the endpoint sends and receives, copied to a capture
//! server (Homer's `heplify-server`, `sngrep -L udp:ADDR`) as one HEP v3 datagram over UDP.
//!
//! The endpoint's core only offers each message to a [`Capture`], a bounded queue: when the
//! queue is full the message is dropped from the export and counted
//! ([`HepStats::dropped_queue_full`]), so a slow or absent capture server never slows a call.
//! A task of its own ([`Capture::start`]) encodes and sends. A message too large for one
//! datagram is cut to [`MAX_PACKET_BYTES`] and counted ([`HepStats::truncated`]).
//!
//! The packet ([`encode`]) is the `HEP3` header (magic and total length) followed by chunks of
//! vendor 0 (generic): IP family, IP protocol (UDP or TCP), source and destination address
//! and port, timestamp (seconds and microseconds), protocol type 1 (SIP), capture agent id,
//! the message itself, and the correlation id (the message's Call-ID).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::transport::Transport;

/// Largest packet sent, in bytes, header and chunks included: fits a UDP datagram
/// (65,507 bytes over IPv4) with room to spare. A message that would make a larger packet
/// has its payload cut.
pub const MAX_PACKET_BYTES: usize = 65_000;

/// Messages waiting for the sender at most; more are dropped from the export and counted.
pub const QUEUE_LEN: usize = 1024;

/// Longest correlation id (Call-ID) carried, in bytes; a longer one is cut.
const MAX_CORRELATION_BYTES: usize = 256;

/// One SIP message as it crossed the wire.
#[derive(Debug, Clone)]
pub struct Captured {
    /// UDP or TCP.
    pub transport: Transport,
    /// Who sent it.
    pub src: SocketAddr,
    /// Who it was sent to.
    pub dst: SocketAddr,
    /// When it was received or sent.
    pub at: SystemTime,
    /// The whole message.
    pub bytes: Vec<u8>,
}

/// What the exporter did, for `/metrics`.
#[derive(Debug, Default)]
pub struct HepStats {
    /// Packets sent to the capture server.
    pub sent: AtomicU64,
    /// Messages not exported because the queue was full (the sender was behind).
    pub dropped_queue_full: AtomicU64,
    /// Packets the socket refused to send (the capture server is unreachable, ...).
    pub send_errors: AtomicU64,
    /// Packets whose payload was cut to [`MAX_PACKET_BYTES`].
    pub truncated: AtomicU64,
}

/// The endpoint's side of the export: cheap to clone, never blocks. Set it in
/// [`crate::endpoint::EndpointConfig::capture`].
#[derive(Clone)]
pub struct Capture {
    queue: mpsc::Sender<Captured>,
    stats: Arc<HepStats>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").finish_non_exhaustive()
    }
}

impl Capture {
    /// Starts exporting to `target` with capture agent id `agent_id`: binds a UDP socket on
    /// the unspecified address of `target`'s family (port 0) and spawns the sending task on
    /// the current tokio runtime. The task ends when every clone of the `Capture` is dropped.
    pub async fn start(target: SocketAddr, agent_id: u32) -> std::io::Result<Capture> {
        let bind: SocketAddr = match target {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = tokio::net::UdpSocket::bind(bind).await?;
        let (queue, mut receiver) = mpsc::channel::<Captured>(QUEUE_LEN);
        let stats = Arc::new(HepStats::default());
        let task_stats = stats.clone();
        tokio::spawn(async move {
            let mut packet = Vec::with_capacity(4096);
            while let Some(message) = receiver.recv().await {
                if encode(&message, agent_id, &mut packet) {
                    task_stats.truncated.fetch_add(1, Ordering::Relaxed);
                }
                match socket.send_to(&packet, target).await {
                    Ok(_) => task_stats.sent.fetch_add(1, Ordering::Relaxed),
                    Err(err) => {
                        tracing::debug!(target: crate::trace::TARGET, %target, error = %err, "HEP packet not sent");
                        task_stats.send_errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        });
        Ok(Capture { queue, stats })
    }

    /// The exporter's counters.
    pub fn stats(&self) -> &Arc<HepStats> {
        &self.stats
    }

    /// Queues a copy of `bytes` for export, or counts it dropped when the queue is full.
    pub(crate) fn offer(
        &self,
        transport: Transport,
        src: SocketAddr,
        dst: SocketAddr,
        bytes: &[u8],
    ) {
        if bytes.iter().all(|b| b"\r\n".contains(b)) {
            return; // a keep-alive, not a SIP message
        }
        let message = Captured {
            transport,
            src,
            dst,
            at: SystemTime::now(),
            bytes: bytes.to_vec(),
        };
        if self.queue.try_send(message).is_err() {
            self.stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes `message` as one HEP v3 packet into `out` (cleared first), with capture agent id
/// `agent_id`. Returns whether the payload had to be cut to keep the packet within
/// [`MAX_PACKET_BYTES`].
pub fn encode(message: &Captured, agent_id: u32, out: &mut Vec<u8>) -> bool {
    fn chunk(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
        // Callers keep every value far below u16::MAX - 6 (the payload is cut first).
        let len = u16::try_from(6 + value.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&0u16.to_be_bytes()); // vendor: generic
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(value);
    }
    out.clear();
    out.extend_from_slice(b"HEP3");
    out.extend_from_slice(&[0, 0]); // total length, set below
    // One family for both ends: an IPv4 peer of an IPv6 socket is written IPv4-mapped.
    let (src, dst) = (
        message.src.ip().to_canonical(),
        message.dst.ip().to_canonical(),
    );
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            chunk(out, 0x0001, &[2]); // AF_INET
            chunk(out, 0x0002, &[protocol(message.transport)]);
            chunk(out, 0x0003, &src.octets());
            chunk(out, 0x0004, &dst.octets());
        }
        (src, dst) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            chunk(out, 0x0001, &[10]); // AF_INET6
            chunk(out, 0x0002, &[protocol(message.transport)]);
            chunk(out, 0x0005, &v6(src).octets());
            chunk(out, 0x0006, &v6(dst).octets());
        }
    }
    chunk(out, 0x0007, &message.src.port().to_be_bytes());
    chunk(out, 0x0008, &message.dst.port().to_be_bytes());
    let since = message.at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = u32::try_from(since.as_secs()).unwrap_or(u32::MAX);
    chunk(out, 0x0009, &secs.to_be_bytes());
    chunk(out, 0x000a, &since.subsec_micros().to_be_bytes());
    chunk(out, 0x000b, &[1]); // SIP
    chunk(out, 0x000c, &agent_id.to_be_bytes());
    let correlation = call_id(&message.bytes);
    // What is left for the payload: its chunk header, and the correlation chunk after it.
    let room = MAX_PACKET_BYTES - out.len() - 6 - (6 + correlation.len());
    let payload = &message.bytes[..message.bytes.len().min(room)];
    chunk(out, 0x000f, payload);
    chunk(out, 0x0011, correlation);
    let total = u16::try_from(out.len()).unwrap_or(u16::MAX);
    out[4..6].copy_from_slice(&total.to_be_bytes());
    payload.len() < message.bytes.len()
}

/// The HEP IP protocol id of `transport` (IANA: UDP 17, TCP 6).
fn protocol(transport: Transport) -> u8 {
    match transport {
        Transport::Udp => 17,
        Transport::Tcp => 6,
    }
}

/// The Call-ID of a SIP message (full or compact `i` form, any case), trimmed and at most
/// [`MAX_CORRELATION_BYTES`]; empty when the head has none. Only the head is read.
fn call_id(message: &[u8]) -> &[u8] {
    let head_end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    for line in message[..head_end].split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
            let value = line[colon + 1..].trim_ascii();
            return &value[..value.len().min(MAX_CORRELATION_BYTES)];
        }
    }
    &[]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn message(bytes: &[u8]) -> Captured {
        Captured {
            transport: Transport::Udp,
            src: "10.0.0.1:5060".parse().unwrap(),
            dst: "192.168.1.2:5070".parse().unwrap(),
            at: UNIX_EPOCH + Duration::from_micros(1_796_160_362_123_456),
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn a_packet_is_byte_for_byte_what_hep_v3_specifies() {
        let sip = b"OPTIONS sip:a@b SIP/2.0\r\ni: abc@h\r\n\r\n";
        let mut out = Vec::new();
        assert!(!encode(&message(sip), 0x01020304, &mut out));
        // Checked by hand against the HEP v3 specification: each chunk is vendor (0),
        // type, length (header included), value, all big-endian.
        let mut expected: Vec<u8> = Vec::new();
        expected.extend_from_slice(b"HEP3");
        let total = 6 + 7 + 7 + 10 + 10 + 8 + 8 + 10 + 10 + 7 + 10 + (6 + sip.len()) + (6 + 5);
        expected.extend_from_slice(&(total as u16).to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 1, 0, 7, 2]); // IP family: AF_INET
        expected.extend_from_slice(&[0, 0, 0, 2, 0, 7, 17]); // IP protocol: UDP
        expected.extend_from_slice(&[0, 0, 0, 3, 0, 10, 10, 0, 0, 1]); // src 10.0.0.1
        expected.extend_from_slice(&[0, 0, 0, 4, 0, 10, 192, 168, 1, 2]); // dst
        expected.extend_from_slice(&[0, 0, 0, 7, 0, 8, 0x13, 0xc4]); // src port 5060
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 8, 0x13, 0xce]); // dst port 5070
        // 1796160362 s = 0x6B0F_3B6A, 123456 µs = 0x0001_E240.
        expected.extend_from_slice(&[0, 0, 0, 9, 0, 10, 0x6b, 0x0f, 0x3b, 0x6a]);
        expected.extend_from_slice(&[0, 0, 0, 10, 0, 10, 0x00, 0x01, 0xe2, 0x40]);
        expected.extend_from_slice(&[0, 0, 0, 11, 0, 7, 1]); // protocol type: SIP
        expected.extend_from_slice(&[0, 0, 0, 12, 0, 10, 1, 2, 3, 4]); // agent id
        expected.extend_from_slice(&[0, 0, 0, 15]);
        expected.extend_from_slice(&((6 + sip.len()) as u16).to_be_bytes());
        expected.extend_from_slice(sip);
        expected.extend_from_slice(&[0, 0, 0, 0x11, 0, 11]);
        expected.extend_from_slice(b"abc@h"); // correlation id: the Call-ID
        assert_eq!(out, expected);
        assert_eq!(out.len(), total);
    }

    #[test]
    fn ipv6_and_mapped_addresses_share_one_family() {
        let mut m = message(b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n");
        m.src = "[::1]:5060".parse().unwrap();
        m.dst = "[::ffff:10.0.0.9]:5070".parse().unwrap();
        m.transport = Transport::Tcp;
        let mut out = Vec::new();
        encode(&m, 7, &mut out);
        assert_eq!(&out[6..20], &[0, 0, 0, 1, 0, 7, 10, 0, 0, 0, 2, 0, 7, 6]);
        // src ::1 (16 bytes), then dst as IPv4-mapped.
        assert_eq!(&out[20..26], &[0, 0, 0, 5, 0, 22]);
        assert_eq!(out[26 + 15], 1);
        assert_eq!(&out[42..48], &[0, 0, 0, 6, 0, 22]);
        assert_eq!(&out[48 + 10..48 + 16], &[0xff, 0xff, 10, 0, 0, 9]);
    }

    #[test]
    fn a_huge_message_is_cut_to_the_packet_bound_and_said_so() {
        let mut sip = b"INVITE sip:a@b SIP/2.0\r\nCall-ID: big\r\n\r\n".to_vec();
        sip.resize(70_000, b'x');
        let mut out = Vec::new();
        assert!(encode(&message(&sip), 1, &mut out));
        assert_eq!(out.len(), MAX_PACKET_BYTES);
        assert_eq!(
            u16::from_be_bytes([out[4], out[5]]) as usize,
            MAX_PACKET_BYTES
        );
        assert!(out.ends_with(b"\x00\x00\x00\x11\x00\x09big"));
    }

    #[test]
    fn the_call_id_is_found_in_any_form_and_bounded() {
        assert_eq!(call_id(b"BYE x SIP/2.0\r\nCALL-ID:  a b \r\n\r\n"), b"a b");
        assert_eq!(
            call_id(b"BYE x SIP/2.0\r\nTo: <sip:i@x>\r\n\r\ni: body"),
            b""
        );
        let long = format!("BYE x SIP/2.0\r\ni: {}\r\n\r\n", "y".repeat(1000));
        assert_eq!(call_id(long.as_bytes()).len(), MAX_CORRELATION_BYTES);
        assert_eq!(call_id(b""), b"");
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        // A capture whose sender task never runs (current-thread runtime, no yield).
        let (queue, _receiver) = mpsc::channel(2);
        let capture = Capture {
            queue,
            stats: Arc::default(),
        };
        let (a, b) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        for _ in 0..5 {
            capture.offer(Transport::Udp, a, b, b"x");
        }
        assert_eq!(capture.stats.dropped_queue_full.load(Ordering::Relaxed), 3);
    }
}
