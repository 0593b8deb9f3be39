//! The `kite` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Overrides, UpstreamArg};

/// Kite: MQTT in the browser. Serves the Kite dashboard and carries MQTT over WebSocket to
/// your brokers — or to its own embedded broker when none is given.
#[derive(Debug, Parser)]
#[command(name = "kite", version, about, arg_required_else_help = true)]
pub struct Cli {
    /// Log lines on stderr as text or as JSON objects (one per line, for log collectors)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "KITE_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the app at http://ADDR/ and MQTT over WebSocket at ws://ADDR/mqtt.
    Serve(Box<ServeArgs>),
    /// Print an argon2 hash of the password read from standard input, for a [[user]]
    /// password_hash in the config (e.g. `printf %s 'secret' | kite passwd`).
    Passwd,
    /// Check a config file: print every problem with its line (exit 2), or "ok" (exit 0).
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
}

/// `kite serve` options. Flags override the config file.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    kite serve                                (embedded broker: devices on mqtt://127.0.0.1:1883)\n  \
    kite serve --upstream mqtt://127.0.0.1:1883\n  \
    kite serve --upstream plant=mqtts://broker.example.com --upstream plant=mqtts://backup.example.com\n  \
    kite serve --config kite.toml --http 0.0.0.0:8080")]
pub struct ServeArgs {
    /// Address for HTTP and WebSocket [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR", env = "KITE_HTTP")]
    pub http: Option<SocketAddr>,

    /// Broker to forward to, as [NAME=]mqtt://HOST:PORT or [NAME=]mqtts://HOST:PORT.
    /// Repeat for more brokers; the same NAME again adds a failover address. The first
    /// upstream serves /mqtt, each also /mqtt/NAME.
    #[arg(long, value_name = "[NAME=]URL")]
    pub upstream: Vec<UpstreamArg>,

    /// TOML config file (see the README's config reference).
    #[arg(long, value_name = "FILE", env = "KITE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Directory holding the built app (index.html) [default: the `app` dir next to the
    /// binary, or target/dist/app in the workspace]
    #[arg(long, value_name = "DIR", env = "KITE_ASSETS")]
    pub assets: Option<PathBuf>,

    /// Serve https:// and wss:// with this PEM certificate chain (needs --tls-key; reloaded
    /// on SIGHUP)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Without an upstream, Kite runs its own broker: devices connect to it over TCP at this
    /// address [default: 127.0.0.1:1883]
    #[arg(long, value_name = "ADDR", env = "KITE_MQTT")]
    pub mqtt: Option<SocketAddr>,

    /// Also accept devices over TLS at this address (MQTT over TLS, e.g. 127.0.0.1:8883), with
    /// the --tls-cert certificate
    #[arg(long, value_name = "ADDR", env = "KITE_MQTTS")]
    pub mqtts: Option<SocketAddr>,

    /// Where the embedded broker keeps retained messages and persistent sessions
    /// [default: ./kite-data]
    #[arg(long, value_name = "DIR", env = "KITE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl ServeArgs {
    /// The flags as overrides of the config file.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            http: self.http,
            assets: self.assets.clone(),
            upstreams: self.upstream.clone(),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            mqtt: self.mqtt,
            mqtts: self.mqtts,
            data_dir: self.data_dir.clone(),
            env: crate::config::env::from_process(),
        }
    }
}

/// Where the built app is when `--assets` is not given: `<exe dir>/app` (the `cargo xtask
/// dist` layout) or `<exe dir>/../dist/app` (a workspace build in target/debug or
/// target/release).
pub fn default_assets() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("app"), dir.join("../dist/app")]
        .into_iter()
        .find(|d| d.join("index.html").is_file())
}
