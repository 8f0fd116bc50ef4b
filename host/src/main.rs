//! The `verbhost` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod test_cmd;

/// A SIP feature server whose call-control verbs are WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "verbhost", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a plugin against mock-host scenarios (no network): prints PASS/FAIL per scenario
    /// with a diff, and exits non-zero if any fails.
    Test {
        /// The plugin: a .wasm component, or `builtin:sip-refer` for the built-in plugin.
        plugin: String,
        /// Scenario files (JSON; see the README's "Mock host scenarios").
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        /// Print the transcript of passing scenarios too.
        #[arg(short, long)]
        verbose: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let executor = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
    {
        Ok(executor) => executor,
        Err(err) => {
            eprintln!("verbhost: {err:#}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Test {
            plugin,
            scenarios,
            verbose,
        } => executor.block_on(test_cmd::run(&plugin, &scenarios, verbose)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("verbhost: {err:#}");
            ExitCode::from(2)
        }
    }
}
