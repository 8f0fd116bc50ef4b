//! A bounded mutation fuzzer over real captures: byte flips, inserts, deletions, duplicated
//! slices and truncations, deterministic (fixed seed), through every entry point that takes
//! untrusted bytes: datagrams one by one, and TCP streams of several messages cut at random
//! points and framed chunk by chunk the way the TCP reader does. A panic or a broken framing
//! invariant fails the test and prints the input to keep in `tests/corpus/`. Every file in the
//! corpus is replayed first, alone and inside streams.
//!
//! The release profile runs this crate with overflow checks on (root `Cargo.toml`), so an
//! arithmetic overflow on untrusted input is a panic here, not a silent wrap.

use std::path::PathBuf;

use verbhost_sip::message::{Message, SipHeaders};
use verbhost_sip::wire::{self, MAX_MESSAGE_BYTES, ParseError};

/// Mutated inputs per run: bounded so CI stays fast (about a second in release).
const ITERATIONS: usize = 200_000;

/// Mutated streams per run (each of 1 to 5 messages, cut into up to 8 chunks).
const STREAMS: usize = 20_000;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sip"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read(&p).expect("readable"),
            )
        })
        .collect();
    files.sort();
    files
}

/// Everything the stack does with bytes from the network.
fn exercise(bytes: &[u8]) {
    let _ = wire::frame(bytes);
    match wire::parse(bytes) {
        Ok(Message::Request(request)) => {
            let _ = (
                request.cseq(),
                request.via_branch(),
                request.from_tag(),
                request.to_tag(),
            );
            let _ = request.contact_uri();
            let _ = request.headers.all("Record-Route").count();
            let _ = verbhost_common::sipfrag::parse_status_line(&request.body);
            let _ = request
                .headers
                .get("Subscription-State")
                .map(verbhost_common::subscription::parse);
            let _ = request.to_bytes();
        }
        Ok(Message::Response(response)) => {
            let _ = (response.cseq(), response.via_branch(), response.to_tag());
            let _ = response.to_bytes();
        }
        Err(err) => {
            let _ = wire::error_response(bytes, &err).map(|r| r.to_bytes());
        }
    }
}

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    const INTERESTING: &[u8] = b"\r\n:;<>\"\\, \t\0\xff=@?%";
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(6) {
            0 if !input.is_empty() => {
                let last = input.len() - 1;
                input[at.min(last)] ^= 1 << rng.below(8);
            }
            1 => input.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            2 if at < input.len() => {
                let end = (at + 1 + rng.below(16)).min(input.len());
                input.drain(at..end);
            }
            3 => input.truncate(at),
            4 if at < input.len() => {
                let end = (at + 1 + rng.below(64)).min(input.len());
                let slice = input[at..end].to_vec();
                let to = rng.below(input.len() + 1);
                input.splice(to..to, slice);
            }
            _ => input.insert(at, rng.below(256) as u8),
        }
    }
}

/// The release profile must keep overflow checks on for this crate (root `Cargo.toml`):
/// without them, the wrapped Content-Length of `corpus/tcp-content-length-wraps.sip`
/// survived 200,000 mutants.
#[test]
fn overflow_checks_are_on() {
    let max = std::hint::black_box(usize::MAX);
    let overflowed = std::panic::catch_unwind(|| std::hint::black_box(max) + 1);
    assert!(
        overflowed.is_err(),
        "overflow checks are off in this profile"
    );
}

#[test]
fn the_corpus_replays_without_panics() {
    let corpus = corpus();
    assert!(corpus.len() >= 4, "seeds went missing");
    for (name, bytes) in &corpus {
        let outcome = std::panic::catch_unwind(|| exercise(bytes));
        assert!(outcome.is_ok(), "{name} panics");
    }
    // The seeds themselves are valid messages.
    for (name, bytes) in corpus.iter().filter(|(n, _)| n.contains("seed-")) {
        assert!(
            wire::parse(bytes).is_ok(),
            "{name}: {:?}",
            wire::parse(bytes)
        );
    }
}

#[test]
fn mutated_captures_never_panic() {
    let seeds = corpus();
    let mut rng = Rng(0x005E_ED0F_5EED);
    let mut parsed = 0usize;
    for round in 0..ITERATIONS {
        let (_, seed) = &seeds[round % seeds.len()];
        let mut input = seed.clone();
        mutate(&mut rng, &mut input);
        if std::panic::catch_unwind(|| exercise(&input)).is_err() {
            panic!(
                "input {round} panics; keep it in tests/corpus/: {:?}",
                String::from_utf8_lossy(&input)
            );
        }
        parsed += usize::from(wire::parse(&input).is_ok());
    }
    // The mutations must not be so destructive that nothing parses (then the typed
    // accessors above would never run).
    assert!(
        parsed > ITERATIONS / 10,
        "only {parsed} of {ITERATIONS} mutants parsed"
    );
}

/// A message without the CR/LF keep-alives in front of it.
fn trimmed(message: &[u8]) -> &[u8] {
    let skip = message
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    &message[skip..]
}

/// Frames `stream`, delivered in pieces cut at `cuts`, with [`wire::frame`] on a plain buffer,
/// checking the framing invariants on every step: a frame is never empty, never longer than
/// the buffer, never over the size cap (unless it is a keep-alive run of CR/LF); more bytes
/// are only asked for while the buffer is within the cap. The same pieces go through the TCP
/// reader's [`wire::StreamFramer`], which must cut the same messages. Returns the messages
/// (keep-alives skipped) and the error that would close the connection, if any.
fn frame_stream(stream: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, Option<ParseError>) {
    let (messages, err) = frame_with_frame(stream, cuts);
    let mut framer = wire::StreamFramer::new();
    let mut framed = Vec::new();
    let mut framer_err = None;
    let mut from = 0;
    'pieces: for &to in cuts.iter().chain(std::iter::once(&stream.len())) {
        let to = to.clamp(from, stream.len());
        framer.push(&stream[from..to]);
        from = to;
        loop {
            match framer.next_message() {
                Ok(Some(message)) => {
                    assert!(!message.is_empty() && message.len() <= MAX_MESSAGE_BYTES);
                    framed.push(message);
                }
                Ok(None) => break,
                Err(e) => {
                    framer_err = Some(e);
                    break 'pieces;
                }
            }
        }
        assert!(framer.buffered() <= MAX_MESSAGE_BYTES);
    }
    let ours: Vec<&[u8]> = framed.iter().map(|m| trimmed(m)).collect();
    let reference: Vec<&[u8]> = messages.iter().map(|m| trimmed(m)).collect();
    assert_eq!(ours, reference, "StreamFramer and frame disagree");
    assert_eq!(
        framer_err.is_some(),
        err.is_some(),
        "{framer_err:?} vs {err:?}"
    );
    (messages, err)
}

/// [`frame_stream`] with [`wire::frame`] alone.
fn frame_with_frame(stream: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, Option<ParseError>) {
    let mut buffer = Vec::new();
    let mut messages = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&stream.len())) {
        let to = to.clamp(from, stream.len());
        buffer.extend_from_slice(&stream[from..to]);
        from = to;
        loop {
            match wire::frame(&buffer) {
                Ok(Some(len)) => {
                    assert!(len > 0, "an empty frame makes no progress");
                    assert!(len <= buffer.len(), "frame {len} > buffer {}", buffer.len());
                    let message: Vec<u8> = buffer.drain(..len).collect();
                    if message.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                        continue;
                    }
                    assert!(len <= MAX_MESSAGE_BYTES, "frame {len} over the cap");
                    exercise(&message);
                    messages.push(message);
                }
                Ok(None) => {
                    assert!(
                        buffer.len() <= MAX_MESSAGE_BYTES,
                        "more bytes asked for with {} buffered",
                        buffer.len()
                    );
                    break;
                }
                Err(err) => return (messages, Some(err)),
            }
        }
    }
    (messages, None)
}

/// Up to 7 cut points in `0..=len`, sorted.
fn cuts(rng: &mut Rng, len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (0..rng.below(8)).map(|_| rng.below(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

#[test]
fn streams_of_valid_messages_frame_back_exactly_wherever_they_are_cut() {
    // Each seed as a stream carries it: cut to its Content-Length (a datagram may carry junk
    // after the body; on a stream that would start the next message).
    let seeds: Vec<Vec<u8>> = corpus()
        .into_iter()
        .filter(|(n, _)| n.contains("seed-"))
        .map(|(name, mut bytes)| {
            let len = wire::frame(&bytes)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .unwrap_or_else(|| panic!("{name} is incomplete"));
            bytes.truncate(len);
            bytes
        })
        .collect();
    let mut rng = Rng(0x0057_2EA3);
    for round in 0..STREAMS / 4 {
        let picked: Vec<&Vec<u8>> = (0..1 + rng.below(5))
            .map(|_| &seeds[rng.below(seeds.len())])
            .collect();
        let mut stream = Vec::new();
        for message in &picked {
            if rng.below(4) == 0 {
                stream.extend_from_slice(b"\r\n\r\n"); // an RFC 5626 keep-alive
            }
            stream.extend_from_slice(message);
        }
        let cuts = cuts(&mut rng, stream.len());
        let (messages, err) = frame_stream(&stream, &cuts);
        assert_eq!(err, None, "round {round}");
        let expected: Vec<&[u8]> = picked.iter().map(|m| m.as_slice()).collect();
        let got: Vec<&[u8]> = messages.iter().map(|m| trimmed(m)).collect();
        assert_eq!(got, expected, "round {round}, cut at {cuts:?}");
    }
}

#[test]
fn mutated_streams_keep_the_framing_invariants() {
    let corpus = corpus();
    let mut rng = Rng(0xF4A3_57EA);
    for round in 0..STREAMS {
        let mut stream = Vec::new();
        for _ in 0..1 + rng.below(5) {
            let mut message = corpus[rng.below(corpus.len())].1.clone();
            if rng.below(4) != 0 {
                mutate(&mut rng, &mut message);
            }
            stream.extend_from_slice(&message);
        }
        let cuts = cuts(&mut rng, stream.len());
        if std::panic::catch_unwind(|| frame_stream(&stream, &cuts)).is_err() {
            panic!(
                "stream {round} (cut at {cuts:?}) breaks the framing; keep it in tests/corpus/: {:?}",
                String::from_utf8_lossy(&stream)
            );
        }
    }
}

#[test]
fn every_corpus_file_frames_within_a_stream() {
    let corpus = corpus();
    let mut rng = Rng(0x00C0_4975);
    for (name, bytes) in &corpus {
        for _ in 0..50 {
            let mut stream = bytes.clone();
            stream.extend_from_slice(bytes);
            let cuts = cuts(&mut rng, stream.len());
            let outcome = std::panic::catch_unwind(|| frame_stream(&stream, &cuts));
            assert!(
                outcome.is_ok(),
                "{name} breaks the framing, cut at {cuts:?}"
            );
        }
    }
}
