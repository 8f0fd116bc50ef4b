//! The `verbhost` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use verbhost_server::config::{self, Config};

mod call_cmd;
mod demo;
mod plugin_new;
mod plugins_cmd;
mod serve;
mod sip_trace;
mod test_cmd;

/// `--transport`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Transport {
    Udp,
    Tcp,
}

impl From<Transport> for config::TransportName {
    fn from(transport: Transport) -> Self {
        match transport {
            Transport::Udp => config::TransportName::Udp,
            Transport::Tcp => config::TransportName::Tcp,
        }
    }
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl From<LogFormat> for config::LogFormat {
    fn from(format: LogFormat) -> Self {
        match format {
            LogFormat::Text => config::LogFormat::Text,
            LogFormat::Json => config::LogFormat::Json,
        }
    }
}

/// A SIP feature server whose call-control verbs are WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "verbhost", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Flags every command that runs calls shares.
#[derive(Debug, Args)]
struct Common {
    /// A TOML configuration file (see verbhost.example.toml); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A directory of .wasm plugins that add or override verbs by name (the built-in
    /// sip:refer plugin is always loaded first).
    #[arg(long, value_name = "DIR")]
    plugins: Option<PathBuf>,
    /// The domain that bare numbers in verbs are placed in [default: the far end's host, or
    /// sip.default_domain].
    #[arg(long, value_name = "DOMAIN")]
    default_domain: Option<String>,
    /// What relative hooks in an application file resolve against.
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// Sign every webhook with HMAC-SHA256 using this secret (see the README).
    #[arg(
        long,
        value_name = "SECRET",
        env = "VERBHOST_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    webhook_secret: Option<String>,
    /// Log format on stderr [default: text, or log.format].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `verbhost=debug` (RUST_LOG overrides it) [default: info, or
    /// log.level].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Print every SIP message sent and received on stderr, sngrep style, with the messages
    /// dropped or answered with an error and why [default: off, or log.sip_trace].
    #[arg(long)]
    sip_trace: bool,
    /// Send a copy of every SIP message sent and received as a HEP v3 packet over UDP to
    /// ADDR (Homer, `sngrep -L udp:ADDR`), IP:PORT or HOSTNAME:PORT [default: off, or
    /// log.hep].
    #[arg(long, value_name = "ADDR", value_parser = socket_addr)]
    hep: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Answer inbound calls and run the application on each.
    Serve {
        /// Address to listen for SIP on: IP:PORT or HOSTNAME:PORT [default: 127.0.0.1:5060, or
        /// sip.listen].
        #[arg(long, value_name = "ADDR", value_parser = socket_addr)]
        sip: Option<SocketAddr>,
        /// SIP transport [default: udp, or sip.transport].
        #[arg(long, value_enum)]
        transport: Option<Transport>,
        /// The application: a JSON file holding an array of verbs.
        #[arg(long, value_name = "FILE", conflicts_with = "call_hook")]
        app: Option<PathBuf>,
        /// The application: a URL POSTed each call's details, answering with the verb array.
        #[arg(long, value_name = "URL")]
        call_hook: Option<String>,
        /// Serve the admin API (/metrics, /health, /plugins) on this address, IP:PORT or
        /// HOSTNAME:PORT [default: off, or admin.listen].
        #[arg(long, value_name = "ADDR", value_parser = socket_addr)]
        admin: Option<SocketAddr>,
        /// The bearer token the admin API's /plugins endpoints require (needed when --admin
        /// is not a loopback address).
        #[arg(
            long,
            value_name = "TOKEN",
            env = "VERBHOST_ADMIN_TOKEN",
            hide_env_values = true
        )]
        admin_token: Option<String>,
        /// On SIGTERM/SIGINT, how long calls in progress may run on before they are hung up
        /// [default: 30, or server.drain_timeout_s].
        #[arg(long, value_name = "SECONDS")]
        drain_timeout: Option<u64>,
        #[command(flatten)]
        common: Common,
    },
    /// Place one call to SIP-URI, run the application once it is answered, print what happens
    /// as JSON lines, and exit when the call has ended (0: the application ran to its end;
    /// 1: a verb failed, or a limit ended the call; 2: bad input; 3: the call was not answered).
    Call {
        /// Who to call, e.g. sip:bob@127.0.0.1:5070.
        target: String,
        /// The application: a JSON file holding an array of verbs.
        #[arg(long, value_name = "FILE")]
        app: PathBuf,
        /// Local SIP address to place the call from, IP:PORT or HOSTNAME:PORT.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0", value_parser = socket_addr)]
        bind: SocketAddr,
        /// SIP transport [default: udp, or sip.transport].
        #[arg(long, value_enum)]
        transport: Option<Transport>,
        /// The From URI of the call [default: sip:verbhost@127.0.0.1, or sip.from].
        #[arg(long, value_name = "URI")]
        from: Option<String>,
        /// An outbound proxy (e.g. sip:127.0.0.1:5060, a Kamailio): the INVITE goes to it
        /// with a pre-loaded Route; the call stays on its path if it record-routes.
        #[arg(long, value_name = "URI")]
        proxy: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Run a complete transfer on loopback, with a built-in transferee, transfer target and
    /// webhook receiver, and show it as a SIP ladder with the webhooks received.
    Demo {
        /// Also print every SIP message on stderr, sngrep style.
        #[arg(long)]
        sip_trace: bool,
    },
    /// Manage the plugin versions of a running server through its admin API.
    Plugins(plugins_cmd::PluginsArgs),
    /// Write a new plugin, ready to build and test (`plugin new NAME`).
    Plugin(plugin_new::PluginArgs),
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

/// A socket address flag: an IP address or a host name (resolved now), with a port.
pub(crate) fn socket_addr(value: &str) -> Result<SocketAddr, String> {
    config::resolve_addr(value).map_err(|err| {
        let mut text = err.to_string();
        if let Some(cause) = std::error::Error::source(&err) {
            text = format!("{text}: {cause}");
        }
        text
    })
}

impl Common {
    /// The config file with these flags on top.
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(dir) = &self.plugins {
            config.plugins.dir = Some(dir.clone());
        }
        if let Some(domain) = &self.default_domain {
            config.sip.default_domain = Some(domain.clone());
        }
        if let Some(base) = &self.base_url {
            config.app.base_url = Some(base.clone());
        }
        if let Some(secret) = &self.webhook_secret {
            config.webhooks.secret = Some(secret.clone());
        }
        if let Some(format) = self.log_format {
            config.log.format = format.into();
        }
        if let Some(level) = &self.log_level {
            config.log.level = level.clone();
        }
        if self.sip_trace {
            config.log.sip_trace = true;
        }
        if let Some(hep) = self.hep {
            config.log.hep = Some(hep);
        }
        config.check()?;
        Ok(config)
    }
}

/// Logs go to stderr (stdout carries `call`'s JSON lines and the demo), and so does the SIP
/// trace when `log.sip_trace` is on, whatever the log filter.
fn init_logging(config: &Config) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let logs = match config.log.format {
        config::LogFormat::Json => logs.json().with_filter(filter).boxed(),
        config::LogFormat::Text => logs.with_filter(filter).boxed(),
    };
    let trace = config.log.sip_trace.then(sip_trace::layer);
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(trace)
        .try_init();
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve {
            sip,
            transport,
            app,
            call_hook,
            admin,
            admin_token,
            drain_timeout,
            common,
        } => {
            let mut config = common.config()?;
            init_logging(&config);
            if let Some(sip) = sip {
                config.sip.listen = sip;
            }
            if let Some(transport) = transport {
                config.sip.transport = transport.into();
            }
            if app.is_some() || call_hook.is_some() {
                config.app.file = app;
                config.app.call_hook = call_hook;
            }
            if let Some(admin) = admin {
                config.admin.listen = Some(admin);
            }
            if let Some(token) = admin_token {
                config.admin.token = Some(token);
            }
            if let Some(drain) = drain_timeout {
                config.server.drain_timeout_s = drain;
            }
            serve::run(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Call {
            target,
            app,
            bind,
            transport,
            from,
            proxy,
            common,
        } => {
            let mut config = common.config()?;
            if from.is_some() || proxy.is_some() {
                if let Some(from) = from {
                    config.sip.from = from;
                }
                if proxy.is_some() {
                    config.sip.outbound_proxy = proxy;
                }
                config.check()?;
            }
            init_logging(&config);
            let args = call_cmd::CallArgs {
                target,
                app,
                bind,
                transport: transport.map_or(config.sip.transport, Into::into),
                from: config.sip.from.clone(),
                base: config.app.base_url()?,
            };
            call_cmd::run(verbhost_server::Dialer::new(config).await?, args).await
        }
        Command::Demo { sip_trace } => demo::run(sip_trace).await,
        Command::Plugins(args) => plugins_cmd::run(args).await,
        Command::Plugin(args) => plugin_new::run(args),
        Command::Test {
            plugin,
            scenarios,
            verbose,
        } => test_cmd::run(&plugin, &scenarios, verbose).await,
    }
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
    match executor.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("verbhost: {err:#}");
            ExitCode::from(2)
        }
    }
}
