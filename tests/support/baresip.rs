//! Test support: baresip 1.0.0 as a real, headless transferee ("bob") on loopback.
//!
//! Include it from an integration test with
//!
//! ```ignore
//! #[path = "support/baresip.rs"]
//! mod baresip;
//! ```
//!
//! std only. Tests must first call the `require("baresip")` / `require("sipp")` helper from
//! `tests/support/sipp.rs`, which skips the test when the tool is not installed; this module
//! does not check for it (a missing binary surfaces as an `io::ErrorKind::NotFound` from
//! [`BaresipPeer::start`]).
//!
//! The template config lives in `tests/baresip/` (see its README.md). `start` copies it into a
//! fresh temp dir, replacing `@PORT@` (SIP port) and `@RTP_PORTS@` (RTP/RTCP range), and runs
//! `baresip -f <dir> -t <secs> -v -s` with stdin from /dev/null and stdout/stderr redirected to
//! `<dir>/stdout.log` and `<dir>/stderr.log` (`-s` puts the full SIP trace in stdout.log).
//!
//! Ports used by `start(port)` (all on 127.0.0.1 unless noted):
//! - `port`: SIP over UDP and TCP;
//! - `port + 1`: TCP only (baresip 1.0.0 always opens its TLS listener at SIP port + 1);
//! - `port + 10 ..= port + 19`: RTP/RTCP (baresip binds these on 0.0.0.0; hard-coded in
//!   src/stream.c, no config knob), about 4 per call.
//!
//! baresip also opens two ephemeral DNS client sockets (0.0.0.0 and ::), which stay silent
//! because the config points `dns_server` at 127.0.0.1:53 and every URI is an IP literal.

// Included as a private `mod` of each test binary: not every test uses every item, and the
// workspace's `unreachable_pub` lint would flag the (intentionally) `pub` API.
#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Line baresip prints once its SIP transports are bound and all modules are loaded.
const READY_LINE: &str = "baresip is ready.";
/// How long `start` waits for [`READY_LINE`].
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `-t`: baresip starts quitting by itself after this many seconds. Long enough for the
/// "target unreachable" case (final NOTIFY 500 after about 32 s). `-t` is graceful: when a call
/// is still up and its peer no longer answers BYE, baresip exits only when that BYE times out,
/// 32 s later (observed: `-t 5` exited at 37 s). So an orphaned baresip (test process killed
/// before `Drop` ran) lives at most `run_secs + 32` s.
pub const DEFAULT_RUN_SECS: u32 = 60;
/// Wait after each SIGTERM when stopping (see `terminate`).
const TERM_GRACE: Duration = Duration::from_secs(1);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running baresip "bob" (`sip:bob@127.0.0.1:<port>`, auto-answer, call transfer enabled).
///
/// The transferor must send in-dialog requests (REFER, BYE) to the Contact of baresip's 200
/// (`<sip:bob-0x…@127.0.0.1:<port>>`); see tests/baresip/README.md for the observed wire flow.
#[derive(Debug)]
pub struct BaresipPeer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl BaresipPeer {
    /// Start baresip with SIP on `127.0.0.1:port`, RTP on `port+10 ..= port+19`, and a
    /// run-time bound of [`DEFAULT_RUN_SECS`]. Returns once baresip is listening (at most ~5 s).
    pub fn start(port: u16) -> io::Result<BaresipPeer> {
        let rtp_min = port
            .checked_add(10)
            .ok_or_else(|| invalid("port too high"))?;
        let rtp_max = port
            .checked_add(19)
            .ok_or_else(|| invalid("port too high"))?;
        Self::start_with(port, (rtp_min, rtp_max), DEFAULT_RUN_SECS)
    }

    /// Like [`BaresipPeer::start`] with an explicit RTP port range (inclusive) and `-t` bound.
    pub fn start_with(port: u16, rtp_ports: (u16, u16), run_secs: u32) -> io::Result<BaresipPeer> {
        if port == 0 || port == u16::MAX {
            return Err(invalid(
                "SIP port must be in 1..=65534 (baresip also uses port+1/TCP)",
            ));
        }
        if rtp_ports.0 == 0 || rtp_ports.0 > rtp_ports.1 {
            return Err(invalid("bad RTP port range"));
        }
        if run_secs == 0 {
            return Err(invalid("run_secs must be > 0"));
        }

        let dir = fresh_dir(port)?;
        let rtp = format!("{}-{}", rtp_ports.0, rtp_ports.1);
        let template = template_dir();
        for name in ["config", "accounts"] {
            let src = template.join(name);
            let text = fs::read_to_string(&src)
                .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", src.display())))?;
            let text = text
                .replace("@PORT@", &port.to_string())
                .replace("@RTP_PORTS@", &rtp);
            fs::write(dir.join(name), text)?;
        }

        let stdout = fs::File::create(dir.join("stdout.log"))?;
        let stderr = fs::File::create(dir.join("stderr.log"))?;
        let child = Command::new("baresip")
            .arg("-f")
            .arg(&dir)
            .arg("-t")
            .arg(run_secs.to_string())
            .arg("-v")
            .arg("-s")
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()?;

        let mut peer = BaresipPeer {
            port,
            dir,
            child: Some(child),
        };
        if let Err(e) = peer.wait_ready() {
            // The error carries the log; nothing worth keeping on disk.
            peer.terminate();
            let _ = fs::remove_dir_all(&peer.dir);
            return Err(e);
        }
        Ok(peer)
    }

    /// SIP port (UDP/TCP on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The account AOR, `sip:bob@127.0.0.1:<port>`: the Request-URI for the initial INVITE.
    pub fn uri(&self) -> String {
        format!("sip:bob@127.0.0.1:{}", self.port)
    }

    /// The per-run directory (config, accounts, stdout.log, stderr.log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Current stdout+stderr log (baresip log and SIP trace), without stopping.
    pub fn log(&self) -> String {
        let mut s = fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default();
        let err = fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        if !err.is_empty() {
            s.push_str("\n--- stderr ---\n");
            s.push_str(&err);
        }
        s
    }

    /// Stop baresip (SIGTERM, SIGTERM, SIGKILL; at most ~2 s), return its log, delete the temp dir.
    pub fn stop(mut self) -> String {
        self.terminate();
        let log = self.log();
        let _ = fs::remove_dir_all(&self.dir);
        log
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let out = fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default();
            if out.contains(READY_LINE) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                // e.g. exit 98 and "ua: SIP Transport failed: Address already in use"
                self.child = None;
                return Err(io::Error::other(format!(
                    "baresip exited before ready ({status}); log:\n{}",
                    self.log()
                )));
            }
            if Instant::now() >= deadline {
                self.terminate();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "baresip not ready after {READY_TIMEOUT:?}; log:\n{}",
                        self.log()
                    ),
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop sequence, at most ~2 s:
    /// 1. SIGTERM: baresip's first signal is graceful (`ua_stop_all`, BYE for every call still
    ///    up). It exits at once when no call is up, but waits for each BYE transaction (up to
    ///    32 s) when the peer does not answer.
    /// 2. After 1 s, a second SIGTERM: baresip 1.0.0 then calls `exit(0)` (logs are flushed).
    /// 3. After 1 more s, SIGKILL.
    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        for _ in 0..2 {
            if exited_within(&mut child, Duration::ZERO) {
                return;
            }
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if exited_within(&mut child, TERM_GRACE) {
                return;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Polls `child` until it has exited (true) or `limit` has passed (false).
fn exited_within(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

impl Drop for BaresipPeer {
    /// Kills baresip if still running. The temp dir is kept (its path is printed) so that a
    /// failed test leaves the log behind; `stop` deletes it.
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate();
            eprintln!("baresip log kept in {}", self.dir.display());
        }
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

/// The template dir `tests/baresip`. Found via `CARGO_MANIFEST_DIR` (the tests crate, or any
/// workspace member including this file via `#[path]`), else relative to this source file.
fn template_dir() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(manifest) = option_env!("CARGO_MANIFEST_DIR") {
        let manifest = Path::new(manifest);
        candidates.push(manifest.join("baresip"));
        candidates.push(manifest.join("tests/baresip"));
        candidates.push(manifest.join("../tests/baresip"));
    }
    if let Some(tests) = Path::new(file!()).parent().and_then(Path::parent) {
        candidates.push(tests.join("baresip"));
    }
    candidates.push(PathBuf::from("tests/baresip"));
    candidates
        .iter()
        .find(|dir| dir.join("config").is_file() && dir.join("accounts").is_file())
        .cloned()
        .unwrap_or_else(|| candidates[0].clone())
}

fn fresh_dir(port: u16) -> io::Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "verbhost-baresip-{}-{port}-{n}-{nanos:08x}",
            std::process::id()
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("could not create a fresh temp dir"))
}
