//! A bounded mutation fuzzer over real captures: byte flips, inserts, deletions, duplicated
//! slices and truncations, deterministic (fixed seed), through every entry point that takes
//! untrusted bytes. A panic fails the test and prints the input to keep in `tests/corpus/`.
//! Every file in the corpus is replayed first.

use std::path::PathBuf;

use verbhost_sip::message::{Message, SipHeaders};
use verbhost_sip::wire;

/// Mutated inputs per run: bounded so CI stays fast (about a second in release).
const ITERATIONS: usize = 200_000;

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
    let mut rng = Rng(0x5EED_0F_5EED);
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
