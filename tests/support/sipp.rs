//! Test support: run a sipp scenario as a scripted SIP peer on loopback.
//!
//! Integration tests include this file with
//! `#[path = "support/sipp.rs"] mod sipp;`. It uses only `std`.
//!
//! ```ignore
//! if !sipp::require("sipp") {
//!     return;
//! }
//! let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("sipp/uas-refer-accept.xml");
//! let peer = SippPeer::start(&scenario, 15080, Transport::Udp)?;
//! // ... drive the host against 127.0.0.1:15080 ...
//! let outcome = peer.wait(Duration::from_secs(45));
//! assert!(outcome.passed(), "{}", outcome.describe());
//! ```
//!
//! The peer reserves four loopback ports: `port` (SIP), `port + 1` (sipp's UDP
//! control socket) and `port + 2`, `port + 4` (its RTP sockets, which sipp
//! always binds). Every socket is bound to 127.0.0.1 only.

// Each test binary uses a different subset, and the module is private there.
#![allow(dead_code, unreachable_pub)]

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The only address the peer binds or talks to.
pub const LOOPBACK: &str = "127.0.0.1";

/// sipp's own global timeout (`-timeout`); `wait` should allow more than this.
pub const SIPP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `start` waits for sipp to bind its SIP socket.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Returns true if `tool` is an executable on `PATH`. Otherwise prints a loud
/// banner to stderr and returns false, so the caller can return early.
///
/// # Panics
///
/// If the tool is missing and `CI=true`: CI must not silently skip.
pub fn require(tool: &str) -> bool {
    if find_on_path(tool).is_some() {
        return true;
    }
    missing(tool, install_hint(tool))
}

/// Reports that `what` (a tool, or packages a tool needs) is not installed, and returns false
/// so the caller can return early: a loud banner on stderr, with `hint` saying how to install
/// it.
///
/// # Panics
///
/// If `CI=true`: CI must not silently skip.
pub fn missing(what: &str, hint: &str) -> bool {
    let in_ci = env::var("CI").is_ok_and(|value| value == "true");
    assert!(
        !in_ci,
        "{what} is required when CI=true but is not installed ({hint})"
    );
    let rule = "=".repeat(72);
    eprintln!("\n{rule}\nSKIPPING: {what} not installed ({hint})\n{rule}\n");
    false
}

fn install_hint(tool: &str) -> &'static str {
    match tool {
        "sipp" => "apt-get install sip-tester",
        "baresip" => "apt-get install --no-install-recommends baresip-core",
        "sngrep" => "apt-get install sngrep",
        _ if tool.ends_with("componentize-py") => "run guest/sdk-py/build.sh --install",
        "kamailio" => "apt-get install --no-install-recommends kamailio",
        "node" | "npm" => "apt-get install nodejs npm",
        _ => "apt-get install the package that provides it",
    }
}

fn find_on_path(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        let path = PathBuf::from(tool);
        return is_executable(&path).then_some(path);
    }
    let path_var = env::var_os("PATH")?;
    env::split_paths(&path_var)
        .map(|dir| dir.join(tool))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// SIP transport for the sipp peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    fn sipp_flag(self) -> &'static str {
        match self {
            Transport::Tcp => "t1",
            Transport::Udp => "u1",
        }
    }
}

/// A running sipp UAS. Killed on drop if `wait` was not called.
pub struct SippPeer {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    transport: Transport,
}

impl SippPeer {
    /// Starts `sipp -sf <scenario_xml>` as a UAS on 127.0.0.1:`port` and waits
    /// (at most 5 s) until its SIP socket is bound.
    ///
    /// # Errors
    ///
    /// The scenario file is missing, sipp cannot be spawned, exits during startup
    /// (for example 254: port in use, with its stderr in the message), or does not
    /// bind in time.
    pub fn start(scenario_xml: &Path, port: u16, transport: Transport) -> io::Result<SippPeer> {
        Self::start_with_args(scenario_xml, port, transport, &[])
    }

    /// Like `start`, with extra sipp arguments appended (for example `["-nr"]`,
    /// which `uas-refer-notify-retransmit.xml` needs on UDP).
    ///
    /// # Errors
    ///
    /// As for `start`.
    pub fn start_with_args(
        scenario_xml: &Path,
        port: u16,
        transport: Transport,
        extra_args: &[&str],
    ) -> io::Result<SippPeer> {
        // sipp runs in a temp dir, so the scenario path must not be relative.
        let scenario = fs::canonicalize(scenario_xml).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("scenario {}: {err}", scenario_xml.display()),
            )
        })?;
        let ports_error = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("port {port} leaves no room for port + 4"),
            )
        };
        let control_port = port.checked_add(1).ok_or_else(ports_error)?;
        let media_port = port.checked_add(2).ok_or_else(ports_error)?;
        port.checked_add(4).ok_or_else(ports_error)?;

        let dir = fresh_temp_dir()?;
        let launched = Self::launch(
            &dir,
            scenario,
            [port, control_port, media_port],
            transport,
            extra_args,
        );
        if launched.is_err() {
            // The failed peer (if any) was dropped and killed inside `launch`.
            let _ = fs::remove_dir_all(&dir);
        }
        launched
    }

    fn launch(
        dir: &Path,
        scenario: PathBuf,
        [port, control_port, media_port]: [u16; 3],
        transport: Transport,
        extra_args: &[&str],
    ) -> io::Result<SippPeer> {
        let stdout = fs::File::create(dir.join("sipp.stdout"))?;
        let stderr = fs::File::create(dir.join("sipp.stderr"))?;

        let mut args: Vec<OsString> = vec!["-sf".into(), scenario.into_os_string()];
        let fixed = [
            "-t",
            transport.sipp_flag(),
            "-i",
            LOOPBACK,
            "-bind_local",
            "-mi",
            LOOPBACK,
            "-ci",
            LOOPBACK,
            "-m",
            "1",
            "-nostdin",
            "-trace_err",
            "-trace_msg",
            "-timeout_error",
        ];
        args.extend(fixed.iter().map(OsString::from));
        let sipp_timeout = format!("{}s", SIPP_TIMEOUT.as_secs());
        args.extend(["-timeout".into(), sipp_timeout.into()]);
        args.extend(["-p".into(), port.to_string().into()]);
        args.extend(["-cp".into(), control_port.to_string().into()]);
        args.extend(["-mp".into(), media_port.to_string().into()]);
        if transport == Transport::Tcp {
            // By default sipp fails the call when the peer closes the connection
            // before the final <timewait> has started, which the host does right
            // after its BYE completes.
            args.extend(["-reconnect_close".into(), "false".into()]);
        }
        args.extend(extra_args.iter().map(OsString::from));

        let child = Command::new("sipp")
            .args(&args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()?;
        let mut peer = SippPeer {
            child: Some(child),
            dir: dir.to_path_buf(),
            port,
            transport,
        };
        peer.wait_until_bound()?;
        Ok(peer)
    }

    /// The SIP port the peer listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("{LOOPBACK}:{}", self.port)
    }

    /// Directory holding the trace files and sipp's stdout/stderr.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn wait_until_bound(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err(io::Error::other("sipp child already reaped"));
            };
            if let Some(status) = child.try_wait()? {
                self.child = None;
                let stderr = read_lossy(&self.dir.join("sipp.stderr"));
                return Err(io::Error::other(format!(
                    "sipp exited during startup ({}): {}",
                    describe_code(status.code()),
                    stderr.trim()
                )));
            }
            match socket_bound_by(child.id(), self.port, self.transport) {
                Some(true) => return Ok(()),
                // No /proc (not Linux): give sipp a moment and hope for the best.
                None => {
                    thread::sleep(Duration::from_millis(300));
                    return Ok(());
                }
                Some(false) => {}
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("sipp did not bind {} within {READY_TIMEOUT:?}", self.addr()),
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits for sipp to exit, at most `timeout` (then kills it), and collects
    /// the exit code and trace files. Allow more than `SIPP_TIMEOUT`.
    pub fn wait(mut self, timeout: Duration) -> SippOutcome {
        let deadline = Instant::now() + timeout;
        let mut exit_code = None;
        let mut killed_after_timeout = false;
        if let Some(child) = self.child.as_mut() {
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        exit_code = status.code();
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
                    Ok(None) | Err(_) => {
                        killed_after_timeout = true;
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        self.child = None;
        SippOutcome {
            exit_code,
            killed_after_timeout,
            messages: read_trace(&self.dir, "_messages.log"),
            errors: read_trace(&self.dir, "_errors.log"),
            stdout: read_lossy(&self.dir.join("sipp.stdout")),
            stderr: read_lossy(&self.dir.join("sipp.stderr")),
            dir: self.dir.clone(),
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SippPeer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a sipp run left behind.
#[derive(Debug)]
pub struct SippOutcome {
    /// sipp's exit code; `None` if it was killed (see `killed_after_timeout`).
    pub exit_code: Option<i32>,
    /// `wait`'s own timeout fired and the process was killed.
    pub killed_after_timeout: bool,
    /// The `*_messages.log` trace (`-trace_msg`): every message sent and received.
    pub messages: String,
    /// The `*_errors.log` trace (`-trace_err`): unexpected messages, failed checks.
    pub errors: String,
    pub stdout: String,
    pub stderr: String,
    /// Where the traces live. Removed on drop if the run passed, unless
    /// `VERBHOST_KEEP_SIPP_TRACES` is set.
    pub dir: PathBuf,
}

impl SippOutcome {
    /// The scenario ran to its end and every check in it held (exit code 0).
    pub fn passed(&self) -> bool {
        self.exit_code == Some(0) && !self.killed_after_timeout
    }

    /// Messages sipp received, each starting with its start line.
    pub fn received(&self) -> Vec<&str> {
        self.trace_entries(" message received ")
    }

    /// Messages sipp sent, each starting with its start line.
    pub fn sent(&self) -> Vec<&str> {
        self.trace_entries(" message sent ")
    }

    /// How many received messages have a start line beginning with `prefix`,
    /// for example `"SIP/2.0 200"` or `"BYE "`.
    pub fn received_count(&self, prefix: &str) -> usize {
        self.received()
            .iter()
            .filter(|message| message.starts_with(prefix))
            .count()
    }

    /// How many sent messages have a start line beginning with `prefix`.
    pub fn sent_count(&self, prefix: &str) -> usize {
        self.sent()
            .iter()
            .filter(|message| message.starts_with(prefix))
            .count()
    }

    /// A multi-line summary for assertion messages.
    pub fn describe(&self) -> String {
        let status = if self.killed_after_timeout {
            "killed: wait() timed out".to_owned()
        } else {
            describe_code(self.exit_code)
        };
        format!(
            "sipp {status}\ntraces: {}\n--- errors.log ---\n{}\n--- stderr ---\n{}",
            self.dir.display(),
            self.errors.trim(),
            self.stderr.trim()
        )
    }

    // Log entries look like:
    //   ----------------------------------------------- 2026-11-21 02:08:58.421059
    //   UDP message sent (500 bytes):
    //   SIP/2.0 200 OK
    //   ...
    fn trace_entries(&self, direction: &str) -> Vec<&str> {
        self.messages
            .split("-----------------------------------------------")
            .filter_map(|entry| {
                let entry = entry.split_once('\n')?.1;
                let (heading, message) = entry.split_once('\n')?;
                heading
                    .contains(direction)
                    .then(|| message.trim_start_matches(['\r', '\n']))
            })
            .collect()
    }
}

impl Drop for SippOutcome {
    fn drop(&mut self) {
        if self.passed() && env::var_os("VERBHOST_KEEP_SIPP_TRACES").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// sipp's documented exit codes.
fn describe_code(code: Option<i32>) -> String {
    let meaning = match code {
        Some(0) => "all calls passed",
        Some(1) => "a call failed (unexpected message, failed check_it, retransmission timeout)",
        Some(97) => "exited on an internal command",
        Some(99) => "normal exit without any call processed",
        Some(254) => "fatal error binding a socket (port in use?)",
        Some(255) => "fatal error, or -timeout fired (-timeout_error)",
        Some(_) => "unknown exit code",
        None => "killed by a signal",
    };
    match code {
        Some(code) => format!("exit {code}: {meaning}"),
        None => meaning.to_owned(),
    }
}

fn fresh_temp_dir() -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = env::temp_dir().join(format!("verbhost-sipp-{}-{nanos}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "could not create a fresh sipp temp dir",
    ))
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// Concatenates every file in `dir` whose name ends with `suffix`.
fn read_trace(dir: &Path, suffix: &str) -> String {
    let Ok(entries) = fs::read_dir(dir) else {
        return String::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with(suffix))
        })
        .collect();
    paths.sort();
    paths.iter().map(|path| read_lossy(path)).collect()
}

/// Whether process `pid` owns a socket bound to 127.0.0.1:`port` (listening, for
/// TCP), from `/proc`. `None` if `/proc` is unavailable.
fn socket_bound_by(pid: u32, port: u16, transport: Transport) -> Option<bool> {
    let table = match transport {
        Transport::Tcp => "/proc/net/tcp",
        Transport::Udp => "/proc/net/udp",
    };
    let table = fs::read_to_string(table).ok()?;
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    // 127.0.0.1 in /proc/net is little-endian hex: 0100007F.
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let listening = transport == Transport::Udp || fields.get(3) == Some(&"0A");
            (fields.get(1) == Some(&local.as_str()) && listening)
                .then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))
                .flatten()
        })
        .collect();
    if inodes.is_empty() {
        return Some(false);
    }
    let owned = fds.filter_map(Result::ok).any(|fd| {
        fs::read_link(fd.path()).is_ok_and(|target| {
            inodes
                .iter()
                .any(|inode| target.as_os_str() == inode.as_str())
        })
    });
    Some(owned)
}
