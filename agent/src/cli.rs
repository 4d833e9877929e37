//! The `vigia-agent` command line: `run`, `check`, `print-config`, and the user-facing
//! `report`, `status` and `reply` that talk to the running agent over its socket.
//!
//! Everything here is edge: parse flags, start tracing, load the config, build a tokio
//! runtime when the command needs one, print, and map outcomes to exit codes
//! (0 fine, 1 `check` found faults, 2 error). The work lives in the library modules.
use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vigia_protocol::{FaultAction, FaultEvent, Urgency};

use crate::config::{Config, ConfigToml, SOCKET_NAME, SYSTEM_CONFIG, SYSTEM_DATA_DIR};
use crate::i18n::{t, Lang, Msg};
use crate::ipc::{self, IpcError, Request, Response};
use crate::probe::Detectors;

/// Vigía device agent: finds hardware faults and reports them to the collector.
#[derive(Debug, Parser)]
#[command(name = "vigia-agent", version, about)]
struct Cli {
    /// Config file (TOML). Default: /etc/vigia/agent.toml when it exists, else built-in
    /// defaults (`vigia-agent print-config` shows them).
    #[arg(long, short = 'c', global = true, env = "VIGIA_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// The running agent's socket, for `report`, `status` and `reply` (overrides the one
    /// the config names; `vigia-tray` passes its own on when it asks in the terminal).
    #[arg(long, global = true, env = "VIGIA_AGENT_SOCKET")]
    socket: Option<PathBuf>,
    /// Language for messages to the user: es or en (default: from LC_ALL/LANG).
    #[arg(long, global = true)]
    lang: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: sample, spool, publish (until SIGTERM/SIGINT).
    Run,
    /// Run every detector now and print readings, faults and unsupported probes.
    /// Exit code 0: no fault; 1: faults found; 2: error.
    Check,
    /// Print the default configuration as TOML.
    PrintConfig,
    /// Report a problem to IT through the running agent (asks in the terminal when no
    /// flag is given).
    Report {
        /// Category: hardware, network, printer, software, other.
        #[arg(long)]
        category: Option<String>,
        /// One-line summary.
        #[arg(long)]
        summary: Option<String>,
        /// Details.
        #[arg(long)]
        text: Option<String>,
        /// low, medium, high or critical.
        #[arg(long)]
        urgency: Option<String>,
        /// Phone, extension or e-mail.
        #[arg(long)]
        contact: Option<String>,
        /// Seconds to wait for the incident number.
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
    /// Show the agent's connection, queue, faults, your reports and IT's questions.
    Status {
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Answer a question IT asked about an incident.
    Reply {
        /// The incident number.
        incident: u64,
        /// The answer.
        text: String,
    },
}

/// The whole CLI. Parses `args` (argv[0] included), initialises tracing, builds its own
/// tokio runtime when it needs one, and returns the exit code.
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    let lang = Lang::detect(cli.lang.as_deref());
    init_tracing(matches!(cli.command, Command::Run));
    let user = (cli.config.clone(), cli.socket.clone());
    let result = match cli.command {
        Command::PrintConfig => print_config(),
        Command::Run => load(cli.config.as_deref()).and_then(run),
        Command::Check => load(cli.config.as_deref()).and_then(check),
        Command::Report {
            category,
            summary,
            text,
            urgency,
            contact,
            wait,
        } => load_user(&user).and_then(|cfg| {
            report(
                &cfg,
                lang,
                ReportArgs {
                    category,
                    summary,
                    text,
                    urgency,
                    contact,
                    wait,
                },
            )
        }),
        Command::Status { json } => load_user(&user).and_then(|cfg| status(&cfg, lang, json)),
        Command::Reply { incident, text } => {
            load_user(&user).and_then(|cfg| reply(&cfg, lang, incident, &text))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vigia-agent: {}", error_text(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, skipping causes whose text the message already contains
/// (our error types quote their source).
fn error_text(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

/// Logs to stderr, filtered by `VIGIA_LOG` or `RUST_LOG` (`info`, `warn,vigia_agent=debug`:
/// levels per target, without `EnvFilter`'s span and regex syntax, whose regex engine
/// would add half a megabyte to the agent binary). Under a systemd unit whose stderr is
/// the journal, to the journal instead, each field a field of the entry.
fn init_tracing(run: bool) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = if run { "info" } else { "warn" };
    let from_env = ["VIGIA_LOG", "RUST_LOG"]
        .iter()
        .find_map(|var| std::env::var(var).ok())
        .and_then(|spec| spec.parse::<Targets>().ok());
    let filter = from_env.unwrap_or_else(|| default.parse().unwrap_or_default());
    let journal = vigia_protocol::journal::stderr_is_journal()
        .then(|| vigia_protocol::journal::JournalLayer::new("vigia-agent").ok())
        .flatten();
    let fmt = journal.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    });
    let _ = tracing_subscriber::registry()
        .with(journal)
        .with(fmt)
        .with(filter)
        .try_init();
}

/// The config: `--config`/`VIGIA_AGENT_CONFIG`, else `/etc/vigia/agent.toml` when it
/// exists, else the defaults.
fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    let cfg = match path {
        Some(p) => Config::load(p)?,
        None if Path::new(SYSTEM_CONFIG).exists() => Config::load(Path::new(SYSTEM_CONFIG))?,
        None => Config::defaults()?,
    };
    Ok(cfg)
}

/// The config for a user's program (`report`, `status`, `reply`, `vigia-tray`). Like
/// [`load`], except that a system config the user may not read (it is root's, mode 0600:
/// it holds the device's broker password) means the defaults, whose socket
/// [`socket_path`] finds at the system agent's place: the person at the keyboard must be
/// able to report without reading the agent's secrets.
fn load_for_user(path: Option<&Path>) -> anyhow::Result<Config> {
    if path.is_none() && Path::new(SYSTEM_CONFIG).exists() {
        match Config::load(Path::new(SYSTEM_CONFIG)) {
            Err(crate::config::ConfigError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                tracing::debug!("{SYSTEM_CONFIG} is not readable here: the system agent's socket");
                return Ok(Config::defaults()?);
            }
            other => return Ok(other?),
        }
    }
    load(path)
}

/// The config of a user's command (`report`, `status`, `reply`), with `--socket` applied.
/// `run` never reads `--socket`: where the agent serves is the config's to say.
fn load_user((config, socket): &(Option<PathBuf>, Option<PathBuf>)) -> anyhow::Result<Config> {
    let mut cfg = load_for_user(config.as_deref())?;
    if let Some(s) = socket {
        cfg.socket.clone_from(s);
    }
    Ok(cfg)
}

fn print_config() -> anyhow::Result<ExitCode> {
    let text = ConfigToml::default_toml().context("cannot print the default config")?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// One thread runs every task: the agent waits on timers and sockets almost all the
/// time, and each extra thread costs resident memory (its stack and a malloc arena) on
/// every device. Detector passes and sled I/O go to the (small) blocking pool.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(2)
        .thread_name("vigia-agent")
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Resolves on SIGTERM or SIGINT. The handlers are registered here, when this is
/// called, not when the future is first polled: a SIGTERM that arrives while the agent is
/// still starting must stop it cleanly, not kill it with the default action.
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

fn run(cfg: Config) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let stop = {
        let _context = rt.enter();
        signalled()?
    };
    rt.block_on(crate::run(cfg, stop))?;
    Ok(ExitCode::SUCCESS)
}

/// How many passes a persistent fault needs to show: the largest `raise_after` in the
/// detector config (read generically, so new detectors are covered), at least 1.
fn passes_needed(cfg: &Config) -> u64 {
    fn max_raise(v: &serde_json::Value) -> u64 {
        match v {
            serde_json::Value::Object(m) => m
                .iter()
                .map(|(k, v)| {
                    if k == "raise_after" {
                        v.as_u64().unwrap_or(1)
                    } else {
                        max_raise(v)
                    }
                })
                .max()
                .unwrap_or(1),
            serde_json::Value::Array(a) => a.iter().map(max_raise).max().unwrap_or(1),
            _ => 1,
        }
    }
    serde_json::to_value(&cfg.detect)
        .map(|v| max_raise(&v))
        .unwrap_or(1)
        .clamp(1, 20)
}

fn check(cfg: Config) -> anyhow::Result<ExitCode> {
    // A throwaway database: `check` must work while the agent holds the real one, and
    // must not move the agent's counter baselines.
    let db = sled::Config::new()
        .temporary(true)
        .open()
        .context("cannot open a temporary database")?;
    let mut det = Detectors::new(&cfg.detect, &cfg.root, db.open_tree("baselines")?)
        .context("cannot start the detectors")?;
    let passes = passes_needed(&cfg);
    let mut events: Vec<FaultEvent> = Vec::new();
    let start = crate::link::now_ms();
    let step = u64::try_from(cfg.interval.as_millis()).unwrap_or(u64::MAX);
    for i in 0..passes {
        det.tick(start.saturating_add(step.saturating_mul(i)), &mut events);
    }
    let readings = det.snapshot();
    let open = det.open_faults();
    let out = std::io::stdout();
    let mut o = out.lock();
    writeln!(o, "vigia-agent check: {} ({passes} passes)", cfg.device)?;
    writeln!(o, "\nReadings")?;
    if readings.is_empty() {
        writeln!(o, "  (none)")?;
    }
    for r in &readings {
        writeln!(o, "  {:<40} {:>14.2} {}", r.name, r.value, r.unit)?;
    }
    writeln!(o, "\nFaults")?;
    if open.is_empty() {
        writeln!(o, "  none")?;
    }
    for f in &open {
        // The latest raise/update for this fault carries its evidence.
        let detail = events.iter().rev().find(|e| {
            e.kind == f.kind && e.subject == f.subject && e.action != FaultAction::Cleared
        });
        match detail {
            Some(e) => writeln!(
                o,
                "  {:<9} {:<16} {:<24} {} ({} {} vs {} {}, {})",
                f.severity.as_str(),
                f.kind.as_str(),
                f.subject,
                e.message,
                e.evidence.value,
                e.evidence.unit,
                e.evidence.threshold,
                e.evidence.unit,
                e.evidence.source
            )?,
            None => writeln!(
                o,
                "  {:<9} {:<16} {}",
                f.severity.as_str(),
                f.kind.as_str(),
                f.subject
            )?,
        }
    }
    let unsupported = det.unsupported();
    writeln!(o, "\nUnsupported here")?;
    if unsupported.is_empty() {
        writeln!(o, "  none")?;
    }
    for (name, reason) in unsupported {
        writeln!(o, "  {name:<16} {reason}")?;
    }
    Ok(if open.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The socket to use: the configured one, or the system agent's when the configured
/// one does not exist (a user's CLI finding the root agent).
fn socket_path(cfg: &Config) -> PathBuf {
    if cfg.socket.exists() {
        return cfg.socket.clone();
    }
    let system = Path::new(SYSTEM_DATA_DIR).join(SOCKET_NAME);
    if system.exists() {
        system
    } else {
        cfg.socket.clone()
    }
}

/// The socket a user's program (`report`, `status`, `reply`, `vigia-tray`) talks to: that
/// of the config at `config` (else `/etc/vigia/agent.toml`, else the defaults), or the
/// system agent's when that one does not exist.
pub fn user_socket(config: Option<&Path>) -> anyhow::Result<PathBuf> {
    load_for_user(config).map(|cfg| socket_path(&cfg))
}

fn ask_ipc(cfg: &Config, lang: Lang, req: &Request) -> anyhow::Result<Option<Response>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let path = socket_path(cfg);
    match rt.block_on(ipc::request(&path, req)) {
        Ok(r) => Ok(Some(r)),
        Err(IpcError::NotRunning(p)) => {
            eprintln!("{}\n({})", t(lang, Msg::NotRunning), p.display());
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

struct ReportArgs {
    category: Option<String>,
    summary: Option<String>,
    text: Option<String>,
    urgency: Option<String>,
    contact: Option<String>,
    wait: u64,
}

fn prompt(lang: Lang, m: Msg) -> anyhow::Result<String> {
    print!("{}", t(lang, m));
    std::io::stdout().flush()?;
    let mut s = String::new();
    std::io::stdin().lock().read_line(&mut s)?;
    Ok(s.trim().to_string())
}

fn parse_urgency(s: &str) -> anyhow::Result<Urgency> {
    let s = s.trim().to_ascii_lowercase();
    let s = match s.as_str() {
        "baja" => "low",
        "media" => "medium",
        "alta" => "high",
        "critica" | "crítica" => "critical",
        other => other,
    };
    s.parse::<Urgency>()
        .map_err(|_| anyhow::anyhow!("urgency {s:?}: use low, medium, high or critical"))
}

fn check_len(lang: Lang, field: &str, value: &str, max: usize) -> anyhow::Result<()> {
    if value.len() > max {
        anyhow::bail!("{field} {} {max}", t(lang, Msg::TooLong));
    }
    Ok(())
}

fn report(cfg: &Config, lang: Lang, a: ReportArgs) -> anyhow::Result<ExitCode> {
    let none_given = a.category.is_none()
        && a.summary.is_none()
        && a.text.is_none()
        && a.urgency.is_none()
        && a.contact.is_none();
    let (category, summary, text, urgency, contact) = if none_given {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!("{}", t(lang, Msg::NoTerminal));
        }
        let category = prompt(lang, Msg::AskCategory)?;
        let summary = prompt(lang, Msg::AskSummary)?;
        println!("{}", t(lang, Msg::AskText));
        let mut text = String::new();
        for line in std::io::stdin().lock().lines() {
            let line = line?;
            if line.trim().is_empty() {
                break;
            }
            text.push_str(&line);
            text.push('\n');
        }
        let urgency = prompt(lang, Msg::AskUrgency)?;
        let contact = prompt(lang, Msg::AskContact)?;
        (
            Some(category),
            Some(summary),
            Some(text.trim_end().to_string()),
            Some(urgency),
            Some(contact),
        )
    } else {
        (a.category, a.summary, a.text, a.urgency, a.contact)
    };
    let summary = summary.unwrap_or_default();
    if summary.trim().is_empty() {
        anyhow::bail!("{}", t(lang, Msg::SummaryRequired));
    }
    let category = category
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| "hardware".into());
    let urgency = match urgency.filter(|u| !u.trim().is_empty()) {
        Some(u) => parse_urgency(&u)?,
        None => Urgency::Medium,
    };
    let text = text.unwrap_or_default();
    let contact = contact.unwrap_or_default();
    check_len(lang, "category", &category, 32)?;
    check_len(lang, "summary", &summary, 120)?;
    check_len(lang, "text", &text, 2000)?;
    check_len(lang, "contact", &contact, 96)?;
    eprintln!("{}", t(lang, Msg::Sending));
    let req = Request::Report {
        category,
        summary,
        text,
        urgency,
        contact,
        wait_ms: a.wait.saturating_mul(1000),
    };
    match ask_ipc(cfg, lang, &req)? {
        None => Ok(ExitCode::from(2)),
        Some(Response::Reported {
            incident: Some(i), ..
        }) => {
            println!("{} {i}", t(lang, Msg::Incident));
            Ok(ExitCode::SUCCESS)
        }
        Some(Response::Reported {
            incident: None,
            held: true,
            ..
        }) => {
            println!("{}", t(lang, Msg::HeldInMemory));
            Ok(ExitCode::SUCCESS)
        }
        Some(Response::Reported { incident: None, .. }) => {
            println!("{}", t(lang, Msg::Queued));
            Ok(ExitCode::SUCCESS)
        }
        Some(Response::Error { message }) => anyhow::bail!("{message}"),
        Some(other) => anyhow::bail!("unexpected answer from the agent: {other:?}"),
    }
}

fn status(cfg: &Config, lang: Lang, json: bool) -> anyhow::Result<ExitCode> {
    let view = match ask_ipc(cfg, lang, &Request::Status)? {
        None => return Ok(ExitCode::from(2)),
        Some(Response::Status(v)) => v,
        Some(Response::Error { message }) => anyhow::bail!("{message}"),
        Some(other) => anyhow::bail!("unexpected answer from the agent: {other:?}"),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} {}", t(lang, Msg::Device), view.device);
    println!("{}", connection_line(lang, &view));
    println!("{} {}", t(lang, Msg::Spooled), view.spooled);
    if view.held > 0 {
        println!("{} {}", t(lang, Msg::Held), view.held);
    }
    if view.dropped_total > 0 {
        println!("{} {}", t(lang, Msg::Dropped), view.dropped_total);
    }
    if view.open_faults.is_empty() {
        println!("{}", t(lang, Msg::NoFaults));
    } else {
        println!("{}", t(lang, Msg::OpenFaults));
        for f in &view.open_faults {
            println!(
                "  {:<9} {:<16} {}",
                f.severity.as_str(),
                f.kind.as_str(),
                f.subject
            );
        }
    }
    if view.reports.is_empty() {
        println!("{}", t(lang, Msg::NoReports));
    } else {
        println!("{}", t(lang, Msg::Reports));
        for r in &view.reports {
            let incident = r.incident.map_or_else(
                || t(lang, Msg::AwaitingIncident).to_string(),
                |i| format!("#{i}"),
            );
            let state = r.state.as_deref().unwrap_or("");
            println!("  {incident:<12} {state:<12} {}", r.summary);
            if let Some(n) = &r.note {
                println!("               {n}");
            }
        }
    }
    if !view.questions.is_empty() {
        println!("{}", t(lang, Msg::Questions));
        for q in &view.questions {
            println!("  #{}: {}", q.incident, q.question);
        }
        println!("{}", t(lang, Msg::ReplyHint));
    }
    Ok(ExitCode::SUCCESS)
}

/// The link's line of `status`: connected, not (and why), or where self-enrolment stands.
fn connection_line(lang: Lang, view: &ipc::StatusView) -> String {
    let err = view.last_error.as_deref().unwrap_or("-");
    match &view.enrolment {
        Some(e) if view.last_error.is_some() => format!("{} ({err})", e.text(lang)),
        Some(e) => e.text(lang),
        None if view.connected => t(lang, Msg::Connected).to_string(),
        None => format!("{} ({err})", t(lang, Msg::Disconnected)),
    }
}

fn reply(cfg: &Config, lang: Lang, incident: u64, text: &str) -> anyhow::Result<ExitCode> {
    check_len(lang, "text", text, 2000)?;
    let req = Request::Reply {
        incident,
        text: text.to_string(),
    };
    match ask_ipc(cfg, lang, &req)? {
        None => Ok(ExitCode::from(2)),
        Some(Response::Replied { .. }) => {
            println!("{}", t(lang, Msg::ReplySent));
            Ok(ExitCode::SUCCESS)
        }
        Some(Response::Error { message }) => anyhow::bail!("{message}"),
        Some(other) => anyhow::bail!("unexpected answer from the agent: {other:?}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bad_config_exits_2_and_names_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("agent.toml");
        std::fs::write(&f, "[mqtt]\nurl = \"http://x\"\n").unwrap();
        let e = load(Some(&f)).err().map(|e| error_text(&e)).unwrap();
        assert!(e.contains("agent.toml: mqtt.url:"), "{e}");
        let code = main(["vigia-agent", "--config", f.to_str().unwrap(), "check"]);
        assert_eq!(code, ExitCode::from(2));
        let code = main(["vigia-agent", "--config", "/nonexistent.toml", "run"]);
        assert_eq!(code, ExitCode::from(2));
    }

    #[test]
    fn unknown_subcommand_is_an_error_and_help_is_not() {
        assert_eq!(main(["vigia-agent", "frobnicate"]), ExitCode::from(2));
        assert_eq!(main(["vigia-agent", "--help"]), ExitCode::SUCCESS);
    }

    #[test]
    fn status_shows_where_enrolment_stands_and_reads_older_agents() {
        // An agent from before enrolment answers without the field.
        let old = r#"{"device":"ws-1","connected":false,"attempts":2,"last_error":"refused",
            "spooled":3,"dropped_total":0,"open_faults":[],"reports":[],"questions":[]}"#;
        let mut v: ipc::StatusView = serde_json::from_str(old).unwrap();
        assert_eq!(v.enrolment, None);
        assert_eq!(
            connection_line(Lang::En, &v),
            "Connection to the server: NOT connected (refused)"
        );
        v.last_error = None;
        v.enrolment = Some(crate::enrol::EnrolView::Waiting {
            request: "0a1b".into(),
        });
        assert_eq!(
            connection_line(Lang::En, &v),
            "enrolling: waiting for approval (request 0a1b)"
        );
        // It travels in the JSON answer.
        let back: ipc::StatusView =
            serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(back, v);
        v.enrolment = Some(crate::enrol::EnrolView::Refused {
            request: "0a1b".into(),
            reason: "unknown machine".into(),
        });
        v.last_error = Some("connection reset".into());
        assert_eq!(
            connection_line(Lang::En, &v),
            "enrolment refused: unknown machine (connection reset)"
        );
        v.enrolment = Some(crate::enrol::EnrolView::Revoked {
            request: "0a1b".into(),
        });
        v.last_error = None;
        assert_eq!(connection_line(Lang::En, &v), "device revoked");
        // Without enrolment, the field is not in the answer at all.
        v.enrolment = None;
        assert!(!serde_json::to_string(&v).unwrap().contains("enrolment"));
    }

    #[test]
    fn urgency_accepts_english_and_spanish() {
        assert_eq!(parse_urgency("HIGH").unwrap(), Urgency::High);
        assert_eq!(parse_urgency("alta").unwrap(), Urgency::High);
        assert_eq!(parse_urgency("crítica").unwrap(), Urgency::Critical);
        assert!(parse_urgency("soon").is_err());
    }
}
