//! The load harness's server: `verbhost serve --config FILE`, with `sip:refer` served either by
//! its wasm build (as `verbhost serve` serves it) or by the same plugin source compiled
//! natively into this binary (`verbhost_server::ServerBuilder::native_plugin`). Both modes are
//! this one binary, so the harness's side-by-side figure differs in the plugin's sandbox and
//! nothing else: the same config, the same logging, the same runtime.
//!
//! ```text
//! cargo build --release -p verbhost-tests --example load-server
//! target/release/examples/load-server serve --config verbhost.toml --plugin native
//! ```
//!
//! `tests/bench/load/run.py step --plugin native|wasm|both` starts it. Not a product: the
//! native mode has no sandbox, and nothing but this binary can turn it on.

use std::path::PathBuf;
use std::process::ExitCode;

use verbhost_server::{Config, Server};

/// The `sip:refer` plugin, `guest/sip-refer/src/lib.rs` compiled natively as a module of this
/// binary (as `crates/mock/benches/sandbox_cost.rs` builds it).
#[path = "../../../guest/sip-refer/src/lib.rs"]
mod sip_refer;

const USAGE: &str = "usage: load-server serve --config FILE [--plugin wasm|native]";

/// Which build of sip:refer serves the calls.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Build {
    Wasm,
    Native,
}

fn args() -> Result<(PathBuf, Build), String> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("serve") {
        return Err(USAGE.into());
    }
    let (mut config, mut build) = (None, Build::Wasm);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--config", Some(path)) => config = Some(PathBuf::from(path)),
            ("--plugin", Some(name)) if name == "wasm" => build = Build::Wasm,
            ("--plugin", Some(name)) if name == "native" => build = Build::Native,
            (arg, value) => return Err(format!("unexpected {arg} {value:?}; {USAGE}")),
        }
    }
    Ok((config.ok_or(USAGE)?, build))
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn serve(path: PathBuf, build: Build) -> anyhow::Result<()> {
    let config = Config::load(Some(&path))?;
    config.check()?;
    init_logging(&config);
    let mut builder = Server::builder(config);
    if build == Build::Native {
        builder = builder.native_plugin::<sip_refer::SipReferPlugin>();
    }
    let server = builder.start().await?;
    tracing::info!(plugin = ?build, "load-server: sip:refer build");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    server.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let (path, build) = match args() {
        Ok(args) => args,
        Err(why) => {
            eprintln!("load-server: {why}");
            return ExitCode::from(2);
        }
    };
    let executor = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(executor) => executor,
        Err(err) => {
            eprintln!("load-server: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match executor.block_on(serve(path, build)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("load-server: {err:#}");
            ExitCode::from(2)
        }
    }
}
