//! `verbhost test` as a user runs it: exit codes and output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn verbhost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verbhost"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("verbhost runs")
}

/// Like [`verbhost`], but a command still running after `limit` (a server that started when it
/// should have refused to) is killed and fails the test instead of hanging it.
fn verbhost_within(args: &[&str], limit: std::time::Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_verbhost"))
        .current_dir(root())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("verbhost runs");
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "verbhost {args:?} still ran after {limit:?}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn shipped_scenarios() -> Vec<String> {
    let dir = root().join("tests/scenarios/sip-refer");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("scenario directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    files.sort();
    files
}

fn scratch(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("verbhost-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write scenario");
    path
}

#[test]
fn the_shipped_scenarios_pass_against_the_builtin_plugin() {
    let mut args = vec!["test", "builtin:sip-refer"];
    let files = shipped_scenarios();
    args.extend(files.iter().map(String::as_str));
    let output = verbhost(&args);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("plugin sip-refer 0.1.0 (sip:refer)\n"),
        "{stdout}"
    );
    let summary = stdout.lines().last().unwrap_or_default();
    let passed: usize = summary
        .strip_suffix(" passed, 0 failed")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected summary {summary:?}"));
    assert!(passed >= 80, "{summary}");
    assert_eq!(stdout.matches("\nPASS ").count(), passed);
}

#[test]
fn a_plugin_file_works_like_the_builtin() {
    let scenario = root().join("tests/scenarios/sip-refer/seed-jambonz.json");
    let output = verbhost(&[
        "test",
        verbhost_guests::SIP_REFER,
        &scenario.to_string_lossy(),
    ]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.ends_with("1 passed, 0 failed\n"), "{stdout}");
}

#[test]
fn a_failing_scenario_prints_a_diff_and_exits_1() {
    let failing = scratch(
        "failing.json",
        r#"{
          "name": "expects the wrong event",
          "verb": { "verb": "sip:refer", "referTo": "sip:carol@pbx.example" },
          "refer_response": { "status": 486 },
          "expect": { "completion": { "event": "TRANSFER_REFER_SUCCESS" } }
        }"#,
    );
    let broken = scratch("broken.json", "{");
    let output = verbhost(&[
        "test",
        "builtin:sip-refer",
        &failing.to_string_lossy(),
        &broken.to_string_lossy(),
    ]);
    let (stdout, _) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL expects the wrong event"), "{stdout}");
    assert!(
        stdout.contains(r#"-   "event": "TRANSFER_REFER_SUCCESS""#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"+   "event": "TRANSFER_REFER_ERROR""#),
        "{stdout}"
    );
    assert!(
        stdout.contains("invalid scenario: EOF while parsing"),
        "{stdout}"
    );
    assert!(stdout.ends_with("0 passed, 2 failed\n"), "{stdout}");
}

#[test]
fn a_plugin_that_cannot_load_exits_2_with_the_cause() {
    let output = verbhost(&["test", "no/such.wasm", "x.json"]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr.contains("cannot load plugin no/such.wasm: cannot read plugin no/such.wasm"),
        "{stderr}"
    );

    let garbage = scratch("garbage.wasm", "not wasm at all");
    let output = verbhost(&["test", &garbage.to_string_lossy(), "x.json"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).1.contains("not a WebAssembly component"));

    let output = verbhost(&["test", "builtin:sip-decline", "x.json"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output)
            .1
            .contains("there is no built-in plugin \"sip-decline\"")
    );
}

#[test]
fn values_that_would_reach_the_wire_or_the_logs_are_refused_before_anything_starts() {
    let app = scratch(
        "app.json",
        r#"[{"verb": "sip:refer", "referTo": "+4930123"}]"#,
    );
    let app = app.to_str().expect("utf-8 path");
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "serve",
                "--app",
                app,
                "--sip",
                "127.0.0.1:0",
                "--log-level",
                "bogus[[",
            ],
            "--log-level (log.level) \"bogus[[\" is not a log filter",
        ),
        (
            &[
                "serve",
                "--app",
                app,
                "--sip",
                "127.0.0.1:0",
                "--default-domain",
                "bad domain",
            ],
            "--default-domain (sip.default_domain) \"bad domain\" is not a domain",
        ),
        (
            &[
                "call",
                "sip:bob@127.0.0.1:9",
                "--app",
                app,
                "--default-domain",
                "sip:carrier.example",
            ],
            "--default-domain (sip.default_domain) \"sip:carrier.example\" is not a domain",
        ),
        (
            &[
                "call",
                "sip:bob@127.0.0.1:9",
                "--app",
                app,
                "--from",
                "notauri",
            ],
            "--from (sip.from) \"notauri\" is not a SIP URI",
        ),
    ];
    for (args, expected) in cases {
        let output = verbhost_within(args, std::time::Duration::from_secs(20));
        let (stdout, stderr) = text(&output);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}\n{stdout}\n{stderr}"
        );
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        // Nothing was dialled: `call` prints its JSON lines only once it places the call.
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
}

#[test]
fn call_refuses_a_target_that_is_not_a_sip_uri_and_an_empty_application_without_dialling() {
    let app = scratch(
        "one.json",
        r#"[{"verb": "sip:refer", "referTo": "+4930123"}]"#,
    );
    let empty = scratch("empty.json", "[]");
    // A real UDP socket as the callee: no INVITE may reach it.
    let callee = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = callee.local_addr().expect("bound");
    let bare = format!("bob@{addr}");
    let uri = format!("sip:bob@{addr}");
    let cases: [(&[&str], String); 2] = [
        (
            &["call", &bare, "--app", app.to_str().expect("utf-8")],
            format!("the target \"{bare}\" is not a SIP URI"),
        ),
        (
            &["call", &uri, "--app", empty.to_str().expect("utf-8")],
            "is empty: there is nothing to run, so no call is placed".into(),
        ),
    ];
    for (args, expected) in cases {
        let output = verbhost_within(args, std::time::Duration::from_secs(20));
        let (stdout, stderr) = text(&output);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}\n{stdout}\n{stderr}"
        );
        assert!(stderr.contains(&expected), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "nothing dialled: {args:?}: {stdout}");
    }
    callee
        .set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    let received = callee.recv_from(&mut buf);
    assert!(
        received.is_err(),
        "the callee received {:?}",
        received.map(|(len, _)| String::from_utf8_lossy(&buf[..len]).into_owned())
    );
}

#[test]
fn serve_help_shows_every_default() {
    let output = verbhost(&["serve", "--help"]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    // One line per flag in the short help; the defaults are the config's own.
    let defaults = verbhost_server::Config::default();
    let line = |flag: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("no {flag} in:\n{stdout}"))
            .to_owned()
    };
    let sip = format!("[default: {}, or sip.listen]", defaults.sip.listen);
    let drain = format!(
        "[default: {}, or server.drain_timeout_s]",
        defaults.server.drain_timeout_s
    );
    let level = format!("[default: {}, or", defaults.log.level);
    for (flag, shown) in [
        ("--sip <ADDR>", sip.as_str()),
        ("--transport", "[default: udp, or sip.transport]"),
        ("--admin <ADDR>", "[default: off, or admin.listen]"),
        ("--drain-timeout", drain.as_str()),
        ("--hep <ADDR>", "[default: off, or log.hep]"),
        ("--log-format", "[default: text, or log.format]"),
        ("--log-level", level.as_str()),
        ("--sip-trace", "[default: off, or log.sip_trace]"),
        (
            "--default-domain",
            "[default: the far end's host, or sip.default_domain]",
        ),
    ] {
        // clap wraps long help lines: join the flag's line with the next one.
        let at = stdout.find(&line(flag)).expect("the line");
        let rest: String = stdout[at..].lines().take(3).collect::<Vec<_>>().join(" ");
        let rest = rest.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(rest.contains(shown), "{flag}: {shown} not in {rest:?}");
    }
}

#[test]
fn an_address_that_does_not_resolve_is_refused_with_the_flag_named() {
    let app = scratch(
        "resolve.json",
        r#"[{"verb": "sip:refer", "referTo": "+4930123"}]"#,
    );
    let app = app.to_str().expect("utf-8 path");
    let cases: [(&[&str], &str); 3] = [
        (
            &["serve", "--app", app, "--sip", "no-such-host.invalid:5060"],
            "for '--sip <ADDR>': the host name in \"no-such-host.invalid:5060\" does not resolve",
        ),
        (
            &["serve", "--app", app, "--admin", "127.0.0.1"],
            "for '--admin <ADDR>': \"127.0.0.1\" is not HOST:PORT",
        ),
        (
            &[
                "call",
                "sip:bob@127.0.0.1:9",
                "--app",
                app,
                "--bind",
                "localhost:port",
            ],
            "for '--bind <ADDR>': \"localhost:port\" is not HOST:PORT",
        ),
    ];
    for (args, expected) in cases {
        let output = verbhost_within(args, std::time::Duration::from_secs(20));
        let (stdout, stderr) = text(&output);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}\n{stdout}\n{stderr}"
        );
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
    // `plugins --admin` takes a name too: nothing listens there, so the admin API cannot be
    // reached (exit 3), at the address the name resolved to.
    let output = verbhost_within(
        &["plugins", "list", "--admin", "localhost:28869"],
        std::time::Duration::from_secs(20),
    );
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("cannot reach the admin API at http://127.0.0.1:28869/plugins"),
        "{stderr}"
    );
    // The same checks for the config file, which names the key.
    let config = scratch(
        "bad-addr.toml",
        "[log]\nhep = \"no-such-host.invalid:9060\"\n",
    );
    let output = verbhost_within(
        &[
            "serve",
            "--app",
            app,
            "--config",
            config.to_str().expect("utf-8"),
        ],
        std::time::Duration::from_secs(20),
    );
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("hep"), "{stderr}");
    assert!(stderr.contains("does not resolve"), "{stderr}");
}
