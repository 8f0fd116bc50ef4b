//! `verbhost serve`: run the feature server until SIGTERM or SIGINT, then drain.

use verbhost_server::{Config, Server};

pub(crate) async fn run(config: Config) -> anyhow::Result<()> {
    let server = Server::builder(config).start().await?;
    let signal = shutdown_signal().await;
    tracing::info!(signal, "shutting down");
    server.shutdown().await;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT with the signal's name.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => term,
            Err(err) => {
                tracing::error!(error = %err, "cannot watch SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}
