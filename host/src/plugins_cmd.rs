//! `verbhost plugins list|push|rollback`: the admin API's plugin endpoints from the command
//! line. Exit codes: 0 done; 1 the server refused (a rejected version, nothing to roll back);
//! 2 bad input (the file, the flags) or a wrong token; 3 the admin API cannot be reached.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::Value;

#[derive(Debug, Args)]
pub(crate) struct PluginsArgs {
    /// The server's admin address (admin.listen): IP:PORT or HOSTNAME:PORT.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:9090",
        global = true,
        value_parser = crate::socket_addr
    )]
    admin: SocketAddr,
    /// The admin API's bearer token (admin.token).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "VERBHOST_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// Print the server's JSON answer instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: PluginsCommand,
}

#[derive(Debug, Subcommand)]
enum PluginsCommand {
    /// Every verb with its active plugin version, where it came from, calls, traps and the
    /// version a rollback would return to.
    List,
    /// Upload a new version. The server checks it as it checks a file in its plugin
    /// directory (contract, imports, describe(), its own scenarios) and swaps it in only
    /// if every check passes; calls in progress finish on the version they started with.
    Push {
        /// The .wasm component.
        file: PathBuf,
        /// A verb the plugin implements, or the plugin's name (default: the file's stem).
        #[arg(long)]
        name: Option<String>,
    },
    /// Swap a verb back to the version it had before the last swap.
    Rollback {
        /// The verb, e.g. sip:refer.
        verb: String,
    },
}

mod exit {
    pub(super) const REFUSED: u8 = 1;
    pub(super) const BAD_INPUT: u8 = 2;
    pub(super) const UNREACHABLE: u8 = 3;
}

pub(crate) async fn run(args: PluginsArgs) -> anyhow::Result<ExitCode> {
    let (method, path, body) = match &args.command {
        PluginsCommand::List => (Method::GET, "/plugins".to_owned(), None),
        PluginsCommand::Push { file, name } => {
            let bytes = match std::fs::read(file) {
                Ok(bytes) => bytes,
                Err(err) => {
                    eprintln!("verbhost: cannot read {}: {err}", file.display());
                    return Ok(ExitCode::from(exit::BAD_INPUT));
                }
            };
            let name = match name {
                Some(name) => name.clone(),
                None => match file.file_stem().and_then(|s| s.to_str()) {
                    Some(stem) => stem.to_owned(),
                    None => {
                        eprintln!(
                            "verbhost: give --name: {} has no usable file stem",
                            file.display()
                        );
                        return Ok(ExitCode::from(exit::BAD_INPUT));
                    }
                },
            };
            (
                Method::PUT,
                format!("/plugins/{}", segment(&name)),
                Some(bytes),
            )
        }
        PluginsCommand::Rollback { verb } => (
            Method::POST,
            format!("/plugins/{}/rollback", segment(verb)),
            None,
        ),
    };
    let url = format!("http://{}{path}", args.admin);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut request = client.request(method, &url);
    if let Some(token) = &args.token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/wasm")
            .body(body);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) => {
            eprintln!("verbhost: cannot reach the admin API at {url}: {err}");
            return Ok(ExitCode::from(exit::UNREACHABLE));
        }
    };
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer).unwrap_or(text));
    }
    let code = match status {
        StatusCode::UNAUTHORIZED => {
            eprintln!(
                "verbhost: the admin API refused the token (give --token or VERBHOST_ADMIN_TOKEN)"
            );
            exit::BAD_INPUT
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            eprintln!(
                "verbhost: the file is larger than the server accepts (limits.max_plugin_bytes)"
            );
            exit::BAD_INPUT
        }
        status if status.is_success() => {
            if !args.json {
                print!("{}", render(&args.command, &answer));
            }
            0
        }
        status if status.is_client_error() => {
            if !args.json {
                eprint!("{}", render(&args.command, &answer));
            }
            exit::REFUSED
        }
        status => {
            eprintln!("verbhost: the admin API answered {status}: {answer}");
            exit::UNREACHABLE
        }
    };
    Ok(ExitCode::from(code))
}

/// A path segment: verbs have `:` (allowed in a segment) and may have other characters.
fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn text(value: &Value, key: &str) -> String {
    match &value[key] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// How long ago a unix-ms timestamp was, e.g. `3m12s ago`.
fn age(unix_ms: &Value) -> String {
    let Some(then) = unix_ms.as_u64() else {
        return "-".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let secs = now.saturating_sub(then) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m{}s ago", secs / 60, secs % 60),
        3600..86400 => format!("{}h{}m ago", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{}h ago", secs / 86400, secs % 86400 / 3600),
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// The server's answer as text.
fn render(command: &PluginsCommand, answer: &Value) -> String {
    match command {
        PluginsCommand::List => {
            let mut rows = vec![
                [
                    "VERB", "PLUGIN", "VERSION", "SHA256", "SOURCE", "LOADED", "CALLS", "TRAPS",
                    "PREVIOUS",
                ]
                .map(str::to_owned),
            ];
            for p in answer["plugins"].as_array().into_iter().flatten() {
                let previous = match &p["previous"] {
                    Value::Null => "-".to_owned(),
                    prev => format!("{} {}", text(prev, "version"), short(&text(prev, "sha256"))),
                };
                rows.push([
                    text(p, "verb"),
                    text(p, "plugin"),
                    text(p, "version"),
                    short(&text(p, "sha256")).to_owned(),
                    text(p, "origin"),
                    age(&p["loaded_at_unix_ms"]),
                    text(p, "calls"),
                    text(p, "traps"),
                    previous,
                ]);
            }
            let widths: Vec<usize> = (0..9)
                .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
                .collect();
            let mut out = String::new();
            for row in rows {
                let line: Vec<String> = row
                    .iter()
                    .zip(&widths)
                    .map(|(cell, width)| format!("{cell:<width$}"))
                    .collect();
                out.push_str(line.join("  ").trim_end());
                out.push('\n');
            }
            out
        }
        PluginsCommand::Push { .. } if answer["result"] == "ok" => format!(
            "ok: {} is now {} {} (sha256 {}), {} in {} ms, {} scenario(s) passed{}\n",
            answer["verbs"]
                .as_array()
                .map(|v| v
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default(),
            text(answer, "plugin"),
            text(answer, "version"),
            short(&text(answer, "sha256")),
            text(answer, "compiled"),
            text(answer, "load_ms"),
            text(answer, "scenarios"),
            match &answer["saved"] {
                Value::String(path) => format!("; saved as {path}"),
                _ =>
                    "; not saved (the server has no plugin directory): a restart forgets it".into(),
            }
        ),
        PluginsCommand::Rollback { .. } if answer["result"] == "ok" => format!(
            "ok: {} is back on {} {} (sha256 {}); a second rollback returns to {} {}\n",
            text(answer, "verb"),
            text(&answer["active"], "plugin"),
            text(&answer["active"], "version"),
            short(&text(&answer["active"], "sha256")),
            text(&answer["previous"], "version"),
            short(&text(&answer["previous"], "sha256")),
        ),
        _ => format!(
            "{}: {}\n",
            text(answer, "result"),
            match &answer["cause"] {
                Value::String(cause) => cause.clone(),
                _ => answer.to_string(),
            }
        ),
    }
}
