//! The guest's stdout and stderr: a ring buffer that keeps the last bytes written.
//!
//! A plugin's output is only for diagnosis (a Rust panic message lands on stderr, last), so
//! the host keeps the *tail* of it, bounded by [`RunLimits::max_guest_output_bytes`], and
//! never refuses a write: a refused write makes Rust's `print!` panic, which would turn a
//! chatty but healthy plugin into a trap. Bytes pushed out of the ring are counted and
//! reported as [`Run::guest_output_dropped`].
//!
//! [`RunLimits::max_guest_output_bytes`]: crate::RunLimits::max_guest_output_bytes
//! [`Run::guest_output_dropped`]: crate::Run::guest_output_dropped

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::async_trait;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The most bytes one `check-write` permits. The guest writes in pieces of at most this
/// size; WASI allocates up to this much for `write-zeroes`, so it stays small.
const PERMIT: usize = 64 << 10;

/// Where a run's stdout and stderr go (both into the same tail). Clones share the buffer.
#[derive(Debug, Clone)]
pub(crate) struct OutputTail {
    ring: Arc<Mutex<Ring>>,
}

/// The kept bytes and the count of those pushed out.
#[derive(Debug)]
struct Ring {
    kept: VecDeque<u8>,
    capacity: usize,
    dropped: usize,
}

impl OutputTail {
    /// An empty tail that keeps at most `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> Self {
        OutputTail {
            ring: Arc::new(Mutex::new(Ring {
                kept: VecDeque::new(),
                capacity,
                dropped: 0,
            })),
        }
    }

    /// The kept tail as text, and the bytes written that it does not hold.
    ///
    /// The tail may begin inside a UTF-8 character cut by the ring; those leading bytes are
    /// left out (and counted as dropped), so the text starts on a character boundary. Other
    /// invalid UTF-8 is replaced, as [`String::from_utf8_lossy`] does.
    pub(crate) fn text(&self) -> (String, usize) {
        let ring = self.lock();
        let (front, back) = ring.kept.as_slices();
        let mut bytes = Vec::with_capacity(ring.kept.len());
        bytes.extend_from_slice(front);
        bytes.extend_from_slice(back);
        let mut dropped = ring.dropped;
        if dropped > 0 {
            // Up to three continuation bytes (0b10xx_xxxx) of a character whose start was
            // pushed out.
            let cut = bytes
                .iter()
                .take(3)
                .take_while(|&&b| b & 0xc0 == 0x80)
                .count();
            bytes.drain(..cut);
            dropped += cut;
        }
        (String::from_utf8_lossy(&bytes).into_owned(), dropped)
    }

    /// Appends `bytes`, pushing the oldest bytes out past the capacity.
    fn push(&self, bytes: &[u8]) {
        let mut ring = self.lock();
        let capacity = ring.capacity;
        if bytes.len() >= capacity {
            let gone = ring.kept.len() + (bytes.len() - capacity);
            ring.dropped = ring.dropped.saturating_add(gone);
            ring.kept.clear();
            ring.kept.extend(&bytes[bytes.len() - capacity..]);
            return;
        }
        let overflow = (ring.kept.len() + bytes.len()).saturating_sub(capacity);
        ring.kept.drain(..overflow);
        ring.dropped = ring.dropped.saturating_add(overflow);
        ring.kept.extend(bytes);
    }

    /// The ring; a panic elsewhere while it was held (there is none: nothing in `push` or
    /// `text` panics) would leave it consistent, so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl IsTerminal for OutputTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait]
impl Pollable for OutputTail {
    /// Always ready: a write never waits.
    async fn ready(&mut self) {}
}

impl OutputStream for OutputTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(PERMIT)
    }
}

impl AsyncWrite for OutputTail {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(tail: &OutputTail, pieces: &[&[u8]]) -> (String, usize) {
        let mut stream = tail.p2_stream();
        for piece in pieces {
            assert!(stream.check_write().expect("always writable") > 0);
            stream
                .write(Bytes::copy_from_slice(piece))
                .expect("never refused");
        }
        tail.text()
    }

    #[test]
    fn keeps_everything_below_the_capacity() {
        let tail = OutputTail::new(8);
        assert_eq!(written(&tail, &[b"abc", b"def"]), ("abcdef".into(), 0));
    }

    #[test]
    fn keeps_the_last_bytes_across_writes() {
        let tail = OutputTail::new(8);
        assert_eq!(
            written(&tail, &[b"abcdef", b"ghij", b"kl"]),
            ("efghijkl".into(), 4)
        );
    }

    #[test]
    fn a_write_larger_than_the_capacity_keeps_its_own_end() {
        let tail = OutputTail::new(4);
        assert_eq!(written(&tail, &[b"ab", b"0123456789"]), ("6789".into(), 8));
    }

    #[test]
    fn stdout_and_stderr_share_one_tail() {
        let tail = OutputTail::new(6);
        let mut out = tail.p2_stream();
        let mut err = tail.p2_stream();
        out.write(Bytes::from_static(b"out1")).expect("written");
        err.write(Bytes::from_static(b"err1")).expect("written");
        assert_eq!(tail.text(), ("t1err1".into(), 2));
    }

    #[test]
    fn a_zero_capacity_keeps_nothing_and_counts_everything() {
        let tail = OutputTail::new(0);
        assert_eq!(written(&tail, &[b"abc", b"de"]), (String::new(), 5));
    }

    #[test]
    fn a_character_cut_by_the_ring_is_left_out_and_counted() {
        // "é" is two bytes (c3 a9); a tail of 3 bytes holds its second byte and "ab".
        let tail = OutputTail::new(3);
        assert_eq!(written(&tail, &["xé".as_bytes(), b"ab"]), ("ab".into(), 3));
    }
}
