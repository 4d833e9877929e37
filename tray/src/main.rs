//! `vigia-tray`: parses the command line, starts tracing, finds the agent's socket and
//! runs the tray (or one report window) from the library.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vigia_protocol::Dur;
use vigia_tray::dialog::Dialogs;
use vigia_tray::text::Lang;

/// Vigía's tray icon: the device's state, and reporting a problem to IT without a terminal.
#[derive(Debug, Parser)]
#[command(name = "vigia-tray", version, about)]
struct Cli {
    /// The agent's config file, to find its socket. Default: /etc/vigia/agent.toml when
    /// it exists, else the agent's defaults.
    #[arg(long, short = 'c', global = true, env = "VIGIA_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// The agent's socket (overrides the one the config names).
    #[arg(long, global = true, env = "VIGIA_AGENT_SOCKET")]
    socket: Option<PathBuf>,
    /// Language: es or en (default: from LC_ALL, LC_MESSAGES, LANG).
    #[arg(long, global = true)]
    lang: Option<String>,
    /// How often to ask the agent for its state (500ms, 5s...).
    #[arg(long, default_value = "3s")]
    interval: Dur,
    /// How long a report waits for its incident number.
    #[arg(long, global = true, default_value = "10s")]
    wait: Dur,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open the report window once (in the terminal when there is no display).
    Report,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let lang = Lang::detect(cli.lang.as_deref());
    match go(cli, lang) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vigia-tray: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn go(cli: Cli, lang: Lang) -> anyhow::Result<ExitCode> {
    let socket = match &cli.socket {
        Some(s) => s.clone(),
        None => vigia_agent::cli::user_socket(cli.config.as_deref())?,
    };
    let dialogs = Dialogs::find(lang);
    if let Some(Command::Report) = cli.command {
        let Some(d) = dialogs else {
            // No display (or no dialog program): the agent's own terminal prompt.
            return Ok(terminal_report(&cli, lang));
        };
        let rt = runtime()?;
        rt.block_on(vigia_tray::app::report(&d, &socket, cli.wait.duration()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let opts = vigia_tray::Options {
        socket,
        lang,
        interval: cli.interval.duration(),
        wait: cli.wait.duration(),
    };
    let rt = runtime()?;
    rt.block_on(async {
        let stop = signalled()?;
        vigia_tray::run(opts, stop)
            .await
            .map_err(anyhow::Error::from)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `vigia-agent report`'s questions in the terminal, through the same socket.
fn terminal_report(cli: &Cli, lang: Lang) -> ExitCode {
    let mut args: Vec<String> = vec!["vigia-agent".into()];
    if let Some(c) = &cli.config {
        args.extend(["--config".into(), c.display().to_string()]);
    }
    if let Some(s) = &cli.socket {
        args.extend(["--socket".into(), s.display().to_string()]);
    }
    let lang = match lang {
        Lang::Es => "es",
        Lang::En => "en",
    };
    args.extend(["--lang".into(), lang.into(), "report".into()]);
    args.extend(["--wait".into(), cli.wait.duration().as_secs().to_string()]);
    vigia_agent::cli::main(args)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Resolves on SIGTERM or SIGINT (the session ending, or Ctrl-C).
fn signalled() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// Logs to stderr (the session's journal, when autostarted), filtered by `RUST_LOG`.
fn init_tracing() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| s.parse::<Targets>().ok())
        .unwrap_or_else(|| "info".parse().unwrap_or_default());
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .try_init();
}
