//! `verbhost test`: the mock host on the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use verbhost_mock::MockHost;
use verbhost_runtime::RuntimeConfig;
use verbhost_server::config::PluginsConfig;

/// Runs `scenarios` against `plugin` and prints one report per scenario and a summary line.
/// Exit code 0 when all pass, 1 when any fails.
pub(crate) async fn run(
    plugin: &str,
    scenarios: &[PathBuf],
    verbose: bool,
) -> anyhow::Result<ExitCode> {
    // The compiled cache `serve` uses without a plugin directory, so testing a large plugin
    // again (a Python one takes about 30 s to compile) loads it in milliseconds.
    let host = MockHost::with_config(RuntimeConfig {
        max_concurrent_runs: 16,
        cache_dir: PluginsConfig::default().cache_dir(),
        ..RuntimeConfig::default()
    })
    .context("cannot start the mock host")?;
    let loaded = match plugin.strip_prefix("builtin:") {
        Some("sip-refer") => host.load(verbhost_guests::SIP_REFER_WASM).await,
        Some(other) => bail!("there is no built-in plugin {other:?}; the built-in is sip-refer"),
        None => host.load_file(Path::new(plugin)).await,
    }
    .with_context(|| format!("cannot load plugin {plugin}"))?;
    let info = loaded.info();
    println!(
        "plugin {} {} ({})",
        info.name,
        info.version,
        info.verbs.join(", ")
    );
    let reports = host.run_files(&loaded, scenarios).await;
    let mut failed = 0;
    for report in &reports {
        if report.passed() {
            println!("{report}");
            if verbose {
                for line in &report.transcript {
                    println!("    {line}");
                }
            }
        } else {
            failed += 1;
            print!("{report}");
        }
    }
    println!("{} passed, {failed} failed", reports.len() - failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
