//! Hostile plugins against a running `verbhost serve`: while good sipp calls transfer through
//! the built-in `sip:refer`, one call per hostile mode of the misbehave plugin runs its verb.
//! Each hostile verb ends with its own error outcome (posted once to its actionHook, counted by
//! kind in /metrics), its call is hung up, every good call still succeeds, and the server still
//! answers afterwards. Plugins that must not load (forbidden imports, a file that is not wasm)
//! keep the server from starting, with the file and the cause named.
//!
//! sipp comes from Debian (`sip-tester`). With `CI=true` a missing sipp fails the test;
//! elsewhere the test is skipped with a loud message. Ports 28500-28599 only. The latency
//! comparison with and without hostile calls is `tests/bench/hostile/run.py`, not a test.

#[path = "support/sipp.rs"]
mod sipp;

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Json;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use verbhost_testkit::Receiver;

/// Each hostile mode of the misbehave plugin, with the error it must end in: the
/// `completion_reason` of its VERB_ERROR and, for traps, the trap kind counted in /metrics.
const HOSTILE: [(&str, &str, Option<&str>); 10] = [
    ("loop", "plugin-trap", Some("cpu budget exceeded")),
    ("oom", "plugin-trap", Some("memory limit")),
    ("stack", "plugin-trap", Some("stack overflow")),
    ("panic", "plugin-trap", Some("panic")),
    ("trap-mid-transfer", "plugin-trap", Some("panic")),
    // Huge output alone is no longer an error (the host keeps its tail and takes every
    // write); half a megabyte of output followed by a panic is, with the panic message kept.
    ("print-then-panic", "plugin-trap", Some("panic")),
    // limits.max_refers (10) ends the flood at the eleventh REFER.
    ("refer-flood", "plugin-trap", Some("refer limit")),
    ("host-call-flood", "plugin-trap", Some("host call limit")),
    ("huge-log", "plugin-trap", Some("host call limit")),
    ("bad-payload", "plugin-failed", None),
];

/// Good calls, run concurrently with the hostile ones.
const GOOD_CALLS: u32 = 10;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("verbhost-hostile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `verbhost serve ARGS`, its stderr in `log`.
fn serve(args: &[&str], log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_verbhost"))
        .current_dir(root())
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .arg("serve")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("verbhost serve starts")
}

/// A call hook that hands each call an application by its Request-URI user: `app` (the good
/// callers) gets a `sip:refer`, any other user the misbehave verb of that mode. Every verb's
/// actionHook is `receiver`'s `/action/<user>`.
async fn call_hook(receiver: &Receiver) -> String {
    let action = receiver.url("/action/");
    let app = move |Json(call): Json<Value>| async move {
        let user = call["sip"]["request_uri_user"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let hook = format!("{action}{user}");
        Json(if user == "app" {
            json!([{"verb": "sip:refer", "referTo": "sip:carol@127.0.0.1", "actionHook": hook}])
        } else {
            json!([{"verb": "misbehave", "mode": user, "actionHook": hook}])
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the call hook");
    let addr = listener.local_addr().expect("call hook address");
    let router = axum::Router::new().route("/call", post(app));
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/call")
}

/// Sends one OPTIONS to `to` from a fresh socket and returns the response's start line.
fn options(to: &str) -> String {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let local = socket.local_addr().expect("local address");
    let request = format!(
        "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-hostile-probe\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:{to}>\r\n\
         Call-ID: hostile-probe@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    socket.send_to(request.as_bytes(), to).expect("send");
    let mut buf = [0u8; 4096];
    match socket.recv_from(&mut buf) {
        Ok((len, _)) => String::from_utf8_lossy(&buf[..len])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
        Err(err) => format!("no answer: {err}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_verbs_fail_alone_while_good_calls_transfer() {
    if !sipp::require("sipp") {
        return;
    }
    let plugins = TempDir::new("plugins");
    std::fs::copy(verbhost_guests::MISBEHAVE, plugins.0.join("misbehave.wasm"))
        .expect("copy the misbehave plugin");
    let receiver = Receiver::start().await;
    let hook = call_hook(&receiver).await;
    let log = plugins.0.join("serve.log");
    let mut server = serve(
        &[
            "--sip",
            "127.0.0.1:28500",
            "--admin",
            "127.0.0.1:28501",
            "--plugins",
            plugins.0.to_str().expect("utf-8 path"),
            "--call-hook",
            &hook,
        ],
        &log,
    );
    let server_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut up = false;
    for _ in 0..300 {
        if reqwest::get("http://127.0.0.1:28501/health").await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "verbhost serve did not come up:\n{}", server_log());

    let accept = root().join("tests/sipp/uac-transferee-accept.xml");
    let hostile_xml = root().join("tests/bench/hostile/sipp/uac-hostile.xml");
    let good = sipp::SippPeer::start_with_args(
        &accept,
        28510,
        sipp::Transport::Udp,
        &["127.0.0.1:28500", "-m", &GOOD_CALLS.to_string(), "-r", "5"],
    )
    .expect("the good caller starts");
    // One caller runs every hostile mode in turn: its CSV has one mode per line.
    let modes = plugins.0.join("modes.csv");
    let csv: String = HOSTILE
        .iter()
        .map(|(mode, _, _)| format!("{mode};\n"))
        .collect();
    std::fs::write(&modes, format!("SEQUENTIAL\n{csv}")).expect("write the modes");
    let hostile = sipp::SippPeer::start_with_args(
        &hostile_xml,
        28520,
        sipp::Transport::Udp,
        &[
            "127.0.0.1:28500",
            "-inf",
            modes.to_str().expect("utf-8 path"),
            "-m",
            &HOSTILE.len().to_string(),
            "-r",
            "10",
        ],
    )
    .expect("the hostile caller starts");

    let good = tokio::task::spawn_blocking(move || good.wait(Duration::from_secs(60)));
    let hostile = tokio::task::spawn_blocking(move || hostile.wait(Duration::from_secs(60)));
    let good = good.await.expect("good caller joined");
    let hostile = hostile.await.expect("hostile caller joined");
    assert!(
        good.passed(),
        "good calls: {}\n{}",
        good.describe(),
        server_log()
    );
    assert!(
        hostile.passed(),
        "a hostile call did not end cleanly (hung up by the host): {}\n{}",
        hostile.describe(),
        server_log()
    );

    let expected = GOOD_CALLS as usize + HOSTILE.len();
    let hits = receiver.wait_for(expected, Duration::from_secs(10)).await;
    // Give a duplicate post every chance to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hits = if receiver.hits().len() > hits.len() {
        receiver.hits()
    } else {
        hits
    };
    let posts = |path: &str| -> Vec<Value> {
        hits.iter()
            .filter(|h| h.path == path)
            .map(|h| h.json.clone())
            .collect()
    };
    let good_posts = posts("/action/app");
    assert_eq!(good_posts.len(), GOOD_CALLS as usize, "{}", server_log());
    for post in &good_posts {
        assert_eq!(post["event"], "TRANSFER_REFER_SUCCESS", "{post}");
    }
    for (mode, reason, _) in HOSTILE {
        let posted = posts(&format!("/action/{mode}"));
        assert_eq!(
            posted.len(),
            1,
            "{mode}: exactly one actionHook post: {posted:?}"
        );
        let post = &posted[0];
        assert_eq!(post["event"], "VERB_ERROR", "{mode}: {post}");
        assert_eq!(post["verb"], "misbehave", "{mode}: {post}");
        assert_eq!(post["completion_reason"], reason, "{mode}: {post}");
        // The cause in one bounded line; the backtrace and the guest's output stay in the log.
        let detail = post["completion_detail"].as_str().unwrap_or("");
        assert!(
            !detail.is_empty() && detail.len() <= 512 && !detail.contains('\n'),
            "{mode}: {detail:?}"
        );
    }

    let metrics = reqwest::get("http://127.0.0.1:28501/metrics")
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    for (_, _, kind) in HOSTILE {
        if let Some(kind) = kind {
            match kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => kinds.push((kind, 1)),
            }
        }
    }
    let traps: usize = kinds.iter().map(|(_, n)| n).sum();
    let mut lines: Vec<String> = kinds
        .iter()
        .map(|(kind, n)| {
            format!("verbhost_plugin_traps_total{{verb=\"misbehave\",kind=\"{kind}\"}} {n}")
        })
        .collect();
    lines.push(format!(
        "verbhost_verbs_total{{verb=\"misbehave\",outcome=\"plugin-trap\"}} {traps}"
    ));
    lines.push(format!(
        "verbhost_verbs_total{{verb=\"misbehave\",outcome=\"plugin-failed\"}} {}",
        HOSTILE.len() - traps
    ));
    lines.push(format!(
        "verbhost_verbs_total{{verb=\"sip:refer\",outcome=\"TRANSFER_REFER_SUCCESS\"}} {GOOD_CALLS}"
    ));
    lines.push("verbhost_calls_active 0".into());
    for line in &lines {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing from:\n{metrics}"
        );
    }

    // The server still serves.
    let answer = tokio::task::spawn_blocking(|| options("127.0.0.1:28500"))
        .await
        .expect("probe ran");
    assert_eq!(answer, "SIP/2.0 200 OK", "{}", server_log());
    assert!(
        server.try_wait().expect("wait").is_none(),
        "the server exited:\n{}",
        server_log()
    );
    server.kill().await.expect("kill the server");
}

/// Starts `serve` with the misbehave plugin and `bad` in its plugin directory; waits for
/// /health, then returns the log (the directory shown as `DIR`), `GET /plugins` and
/// `/metrics`.
async fn serve_with_bad_plugin(
    bad: &str,
    contents: &[u8],
    ports: (u16, u16),
) -> (String, Value, String) {
    let plugins = TempDir::new(bad);
    std::fs::copy(verbhost_guests::MISBEHAVE, plugins.0.join("misbehave.wasm"))
        .expect("copy the misbehave plugin");
    std::fs::write(plugins.0.join(bad), contents).expect("write the bad plugin");
    let log = plugins.0.join("serve.log");
    let sip = format!("127.0.0.1:{}", ports.0);
    let admin = format!("127.0.0.1:{}", ports.1);
    let app = plugins.0.join("app.json");
    std::fs::write(&app, r#"[{"verb": "misbehave", "mode": "ok"}]"#).expect("write the app");
    let mut server = serve(
        &[
            "--sip",
            &sip,
            "--admin",
            &admin,
            "--plugins",
            plugins.0.to_str().expect("utf-8 path"),
            "--app",
            app.to_str().expect("utf-8 path"),
        ],
        &log,
    );
    let get = |path: &'static str| {
        let url = format!("http://{admin}{path}");
        async move {
            match reqwest::get(&url).await {
                Ok(response) => response.text().await.ok(),
                Err(_) => None,
            }
        }
    };
    let mut up = false;
    for _ in 0..300 {
        if get("/health").await.is_some() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = get("/plugins").await.unwrap_or_default();
    let metrics = get("/metrics").await.unwrap_or_default();
    let _ = server.start_kill();
    let _ = server.wait().await;
    let text = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .replace(&plugins.0.display().to_string(), "DIR");
    assert!(up, "serve did not come up:\n{text}");
    (
        text,
        serde_json::from_str(&listed).unwrap_or(Value::Null),
        metrics,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_that_must_not_load_are_rejected_naming_the_file_and_the_rest_serve() {
    // The import guests also import wasi:clocks (wasi:filesystem/types uses its datetime); the
    // refusal names a forbidden import.
    let cases: [(&str, PathBuf, &str); 3] = [
        (
            "fs.wasm",
            PathBuf::from(verbhost_guests::FS_IMPORT),
            "plugin imports wasi:",
        ),
        (
            "net.wasm",
            PathBuf::from(verbhost_guests::SOCKET_IMPORT),
            "plugin imports wasi:",
        ),
        ("text.wasm", PathBuf::new(), "not a WebAssembly component"),
    ];
    for (n, (name, source, cause)) in cases.into_iter().enumerate() {
        let contents = if source.as_os_str().is_empty() {
            b"this is a text file with a .wasm name".to_vec()
        } else {
            std::fs::read(&source).expect("guest built")
        };
        let port = 28580 + 2 * u16::try_from(n).expect("few cases");
        let (log, listed, metrics) = serve_with_bad_plugin(name, &contents, (port, port + 1)).await;
        let line = log
            .lines()
            .find(|l| {
                l.contains("plugin version rejected") && l.contains(&format!("file:DIR/{name}"))
            })
            .unwrap_or_else(|| panic!("{name}: no rejection naming the file:\n{log}"));
        assert!(
            line.contains(cause)
                && (name == "text.wasm" || line.contains("which verbhost does not grant")),
            "{name}: the rejection names {cause:?}:\n{line}"
        );
        let verbs: Vec<&str> = listed["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["verb"].as_str())
            .collect();
        assert_eq!(verbs, ["misbehave", "sip:refer"], "{name}: {listed}");
        assert!(
            metrics
                .lines()
                .any(|l| l == r#"verbhost_plugin_swaps_total{verb="other",result="rejected"} 1"#),
            "{name}:\n{metrics}"
        );
    }
}
