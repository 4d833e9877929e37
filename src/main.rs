//! `vigia`: the whole system on one machine — the embedded broker, the collector with its
//! API and live feed, and an agent watching this machine — in one process, for trying
//! Vigía and for development. `vigia agent ...` and `vigia collector ...` run the same
//! command lines as the separate `vigia-agent` and `vigia-collector` binaries (the
//! end-to-end tests use them so they need only this package's binary).
use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

/// Vigía on this machine: broker, collector, live feed and an agent, in one command.
#[derive(Debug, Parser)]
#[command(
    name = "vigia",
    version,
    after_help = "Also: `vigia agent <command>` and `vigia collector <command>` run the agent's \
                  and the collector's own command lines (try `vigia collector incidents`)."
)]
struct Cli {
    /// Where the collector and the agent keep their data.
    #[arg(long, default_value = ".vigia", env = "VIGIA_DATA_DIR")]
    data_dir: PathBuf,
    /// Address of the HTTP API and live feed; a free port is used if this one is taken.
    #[arg(long, default_value = "127.0.0.1:8790")]
    http: SocketAddr,
    /// Port of the embedded MQTT broker on 127.0.0.1; a free one is used if it is taken.
    #[arg(long, default_value_t = 1883)]
    mqtt_port: u16,
    /// How often the agent checks this machine.
    #[arg(long, default_value = "10s")]
    interval: String,
}

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let sub = args.get(1).and_then(|a| a.to_str()).map(str::to_owned);
    match sub.as_deref() {
        Some(part @ ("agent" | "collector")) => {
            args.remove(1);
            args[0] = format!("vigia {part}").into();
            if part == "agent" {
                find_all_in_one_agent(&mut args);
                vigia_agent::cli::main(args)
            } else {
                vigia_collector::cli::main(args)
            }
        }
        _ => {
            let cli = Cli::parse_from(args);
            init_tracing();
            match all_in_one(cli) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vigia: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The agent config the all-in-one writes for its agent, under its data directory.
const AGENT_CONFIG: &str = "agent.toml";

/// `vigia agent report|status|reply` without a config talk to the all-in-one's agent when
/// one was started from this directory (or `VIGIA_DATA_DIR`): the system agent's socket
/// is not where it listens.
fn find_all_in_one_agent(args: &mut Vec<OsString>) {
    let asks_agent = args
        .iter()
        .skip(1)
        .any(|a| matches!(a.to_str(), Some("report" | "status" | "reply")));
    let has_config = std::env::var_os("VIGIA_AGENT_CONFIG").is_some()
        || args.iter().any(|a| {
            a.to_str()
                .is_some_and(|a| a == "-c" || a == "--config" || a.starts_with("--config="))
        });
    if !asks_agent || has_config {
        return;
    }
    let dir =
        std::env::var_os("VIGIA_DATA_DIR").map_or_else(|| PathBuf::from(".vigia"), PathBuf::from);
    let config = dir.join(AGENT_CONFIG);
    if config.is_file() {
        args.insert(1, "--config".into());
        args.insert(2, config.into_os_string());
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(vigia_collector::LOG_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// `addr` if it can be bound now, else the same host with port 0 (a free port).
fn available(addr: SocketAddr) -> (SocketAddr, bool) {
    match TcpListener::bind(addr) {
        Ok(_) => (addr, true),
        Err(_) => (SocketAddr::new(addr.ip(), 0), false),
    }
}

fn all_in_one(cli: Cli) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        std::fs::create_dir_all(&cli.data_dir)
            .with_context(|| format!("creating {}", cli.data_dir.display()))?;

        let (http, http_free) = available(cli.http);
        let (mqtt, mqtt_free) = available(SocketAddr::from(([127, 0, 0, 1], cli.mqtt_port)));
        let mut ccfg = vigia_collector::config::Config {
            data_dir: cli.data_dir.join("collector"),
            ..Default::default()
        };
        ccfg.mqtt.url = None;
        ccfg.mqtt.embedded_port = mqtt.port();
        ccfg.http.listen = http.to_string();
        let collector = vigia_collector::start(ccfg)
            .await
            .context("starting the collector")?;

        // The agent's config is also written out, so that `vigia agent report` (and
        // status, reply) find this agent's socket; absolute paths, since a config file's
        // relative paths are relative to the file.
        let data_dir = std::fs::canonicalize(&cli.data_dir)
            .with_context(|| format!("resolving {}", cli.data_dir.display()))?;
        let mut afile = vigia_agent::config::ConfigToml {
            data_dir: Some(data_dir.join("agent")),
            interval: Some(cli.interval.clone()),
            ..Default::default()
        };
        afile.mqtt.url = collector.mqtt_url.clone();
        let agent_config = cli.data_dir.join(AGENT_CONFIG);
        let text = toml::to_string_pretty(&afile).context("writing the agent's config")?;
        std::fs::write(
            &agent_config,
            format!(
                "# Written by `vigia` (the all-in-one) at every start, for `vigia agent \
                 report|status|reply`.\n{text}"
            ),
        )
        .with_context(|| format!("writing {}", agent_config.display()))?;
        let acfg = afile
            .validate("vigia (all-in-one)")
            .context("configuring the agent")?;
        let device = acfg.device.clone();

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut stop_agent = stop_rx.clone();
        let agent = tokio::spawn(vigia_agent::run(acfg, async move {
            let _ = stop_agent.wait_for(|s| *s).await;
        }));

        let feed = format!("http://{}", collector.http_addr);
        println!("Vigía is running on this machine.");
        println!("  console             {feed}/");
        let first = cli
            .data_dir
            .join("collector")
            .join(vigia_collector::auth::FIRST_ADMIN_FILE);
        match &collector.first_admin {
            Some(a) => println!(
                "  sign in as          {} / {}   (first start: kept in {} until you change it)",
                a.login,
                a.password,
                a.file.display()
            ),
            None if first.exists() => println!(
                "  sign in as          {} (its password is in {})",
                vigia_collector::auth::FIRST_ADMIN,
                first.display()
            ),
            None => println!("  sign in as          your account (an admin adds accounts)"),
        }
        println!("  MQTT broker         {} (embedded)", collector.mqtt_url);
        println!(
            "  this machine        device \"{device}\", checked every {}",
            cli.interval
        );
        println!(
            "  CLI sign-in         cargo run --release -- collector --api {feed} login --user admin"
        );
        println!("  incidents (CLI)     cargo run --release -- collector --api {feed} incidents");
        println!(
            "  report a problem    cargo run --release -- agent report   (then: agent status)"
        );
        if !http_free {
            println!(
                "  (port {} was taken; the console uses the port above)",
                cli.http.port()
            );
        }
        if !mqtt_free {
            println!(
                "  (port {} was taken; the broker uses the port above)",
                cli.mqtt_port
            );
        }
        println!("Ctrl-C stops everything. Data: {}", cli.data_dir.display());

        let mut agent = agent;
        let agent_result = tokio::select! {
            r = &mut agent => Some(r),
            _ = shutdown_signal() => None,
        };
        let _ = stop_tx.send(true);
        let agent_result = match agent_result {
            Some(r) => r,
            None => agent.await,
        };
        collector
            .shutdown()
            .await
            .context("stopping the collector")?;
        agent_result
            .context("the agent task failed")?
            .context("the agent stopped")?;
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
