//! `kite`: parses arguments and configuration, binds, and runs the server.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use kite_gateway::cli::{Cli, Command, LogFormat, ServeArgs, default_assets};
use kite_gateway::config::Config;
use kite_gateway::http::AppState;
use kite_gateway::server;

/// Exit code for bad usage or configuration (as clap uses).
const USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KITE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match cli.log_format {
        LogFormat::Json => logs.with_writer(std::io::stderr).json().init(),
        LogFormat::Text => {
            // A client's strings in a text line are escaped: no forged lines (`logs`).
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            logs.with_writer(move || kite_gateway::logs::Escaping::new(std::io::stderr(), ansi))
                .with_ansi(ansi)
                .init();
        }
    }
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Passwd => passwd(),
        Command::CheckConfig { file } => check_config(&file),
    }
}

/// Help and version go to stdout as clap prints them; a usage error is one line on stderr
/// (clap's reason plus its tip, if any) and exit code 2.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        let code = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            USAGE
        } else {
            0
        };
        return ExitCode::from(code);
    }
    let rendered = e.render().to_string();
    // clap's reason, with the indented lines that continue it (e.g. the missing arguments).
    let mut reason = String::new();
    let mut tips: Vec<&str> = Vec::new();
    let mut in_error = false;
    for line in rendered.lines() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("error:") {
            reason = rest.trim().to_owned();
            in_error = true;
        } else if let Some(tip) = trimmed.strip_prefix("tip:") {
            tips.push(tip.trim());
            in_error = false;
        } else if in_error && line.starts_with(char::is_whitespace) && !trimmed.is_empty() {
            reason.push(' ');
            reason.push_str(trimmed);
        } else {
            in_error = false;
        }
    }
    if reason.is_empty() {
        reason = "invalid arguments".to_owned();
    }

    let tip = if tips.is_empty() {
        String::new()
    } else {
        format!("; tip: {}", tips.join("; "))
    };
    eprintln!("kite: error: {reason}{tip} (see `kite --help`)");
    ExitCode::from(USAGE)
}

/// `kite check-config FILE`: every problem with its line on stderr (exit 2), or one "ok" line
/// on stdout.
fn check_config(file: &std::path::Path) -> ExitCode {
    let problems = kite_gateway::config::check::check_file(file);
    if problems.is_empty() {
        #[allow(clippy::print_stdout)]
        {
            println!("{}: ok", file.display());
        }
        return ExitCode::SUCCESS;
    }
    for p in &problems {
        eprintln!("{p}");
    }
    eprintln!(
        "kite: error: {} problem{} in {}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        file.display()
    );
    ExitCode::from(USAGE)
}

/// `kite passwd`: one line from standard input (without its line ending) → its argon2 hash.
fn passwd() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("kite: error: cannot read the password from standard input: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!(
            "kite: error: empty password: pipe one in, e.g. `printf %s 'secret' | kite passwd`"
        );
        return ExitCode::from(USAGE);
    }
    match kite_policy::auth::hash_password(password.as_bytes()) {
        Ok(hash) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{hash}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kite: error: hashing failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    // The same pass as `kite check-config`: every problem, then stop.
    let mut config = match Config::load(args.config.as_deref(), args.overrides()) {
        Ok(c) => c,
        Err(problems) => {
            match &problems.0[..] {
                [one] => eprintln!("kite: error: {one}"),
                all => {
                    for p in all {
                        eprintln!("{p}");
                    }
                    eprintln!("kite: error: {} problems in the configuration", all.len());
                }
            }
            return ExitCode::from(USAGE);
        }
    };
    if config.assets.is_none() {
        config.assets = default_assets();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kite: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kite: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another program using it? choose another with --http)",
                config.http
            )
        })?;
    let addr = listener.local_addr()?;
    match &config.assets {
        Some(dir) => tracing::info!("serving the app from {}", dir.display()),
        None => tracing::warn!(
            "the app is not built; only /mqtt and /api are served (run `cargo xtask dist`)"
        ),
    }
    for u in &config.upstreams {
        let addrs: Vec<String> = u.addresses.iter().map(ToString::to_string).collect();
        tracing::info!(upstream = %u.name, "forwarding to {}", addrs.join(", "));
    }
    let config_tls = config.tls.is_some();
    let mqtt = config.broker.listen;
    let mqtts = config.broker.tls_listen;
    let state = AppState::new(config)?;
    let mut broker_line = String::new();
    if state.broker().is_some() {
        let listener = kite_gateway::listen::bind_mqtt(mqtt).await?;
        let bound = listener.local_addr()?;
        broker_line = format!("; embedded broker for devices: mqtt://{bound}");
        tracing::info!("no upstream configured: embedded broker on mqtt://{bound}");
        let tls_listener = match mqtts {
            Some(addr) => {
                let l = kite_gateway::listen::bind_mqtt(addr).await?;
                let bound = l.local_addr()?;
                broker_line.push_str(&format!(" and mqtts://{bound}"));
                tracing::info!("embedded broker over TLS on mqtts://{bound}");
                Some(l)
            }
            None => None,
        };
        server::start_broker(&state, listener, tls_listener);
    }
    // One line on stdout that people and tests can read: where to point the browser.
    #[allow(clippy::print_stdout)]
    {
        let (http, ws) = if config_tls {
            ("https", "wss")
        } else {
            ("http", "ws")
        };
        println!(
            "kite {} listening on {http}://{addr}/ (MQTT over WebSocket: {ws}://{addr}/mqtt{broker_line})",
            env!("CARGO_PKG_VERSION")
        );
    }
    server::run(listener, state, server::shutdown_signal()).await?;
    Ok(())
}
