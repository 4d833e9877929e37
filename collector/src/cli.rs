//! The `vigia-collector` command line: `run`, `incidents list|show|assign|escalate|
//! resolve|close|reopen|note|request-info|verify|classify|provider|...`, `export`,
//! `devices`, `print-config`, `print-rules`.
//!
//! `run` is the server. The other commands are clients of a running collector's HTTP API
//! (sled allows one process per database, so they never open the store themselves); when
//! nothing answers they say so plainly instead of printing an empty list.
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::api::DeviceSummary;
use crate::config::{Config, DEFAULT_HTTP_LISTEN};
use crate::feed::IncidentSummary;
use crate::workflow::{self, Dur, Role};

/// Vigía collector: turns device faults and user reports into support incidents.
#[derive(Debug, Parser)]
#[command(name = "vigia-collector", version)]
struct Cli {
    /// Config file (TOML). Without one, the defaults apply (`print-config` shows them).
    #[arg(long, global = true, env = "VIGIA_COLLECTOR_CONFIG")]
    config: Option<PathBuf>,
    /// The running collector's API, for the client commands (default: from the config's
    /// `[http] listen`, else http://127.0.0.1:8790).
    #[arg(long, global = true, env = "VIGIA_COLLECTOR_API")]
    api: Option<String>,
    /// Who acts, for incident actions (recorded in the audit trail; no authentication
    /// yet). Default: $USER.
    #[arg(long = "as", global = true, env = "VIGIA_AS")]
    actor: Option<String>,
    /// A role of whoever acts (repeat for several): service_desk, on_site, specialist,
    /// provider, coordinator. Only the service desk closes incidents.
    #[arg(long = "role", global = true, value_parser = parse_role)]
    roles: Vec<Role>,
    #[command(subcommand)]
    command: Command,
}

// One value per run of the program: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector (embedded broker when no [mqtt] url is set, ingest, HTTP API).
    Run,
    /// Work on incidents; without a subcommand, list them (newest first).
    #[command(args_conflicts_with_subcommands = true)]
    Incidents {
        #[command(subcommand)]
        action: Option<IncidentCmd>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Export the "Servicios soporte" record (004) of the incidents opened in a period.
    Export {
        /// First day included (2026-11-01, 2026-11-01T08:00:00Z or ms).
        #[arg(long)]
        from: Option<String>,
        /// First day excluded.
        #[arg(long)]
        to: Option<String>,
        /// csv or json.
        #[arg(long, default_value = "csv")]
        format: String,
    },
    /// Print the default triage rules (TOML), a starting point for `[workflow] rules`.
    PrintRules,
    /// Show one incident with its audit trail (same as `incidents show`).
    Incident {
        /// Its number.
        number: u64,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List devices: inventory summary, online, last seen.
    Devices {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the default configuration (TOML).
    PrintConfig,
}

#[derive(Debug, Clone, clap::Args)]
struct ListArgs {
    /// Only this state (registered, validating, needs_info, verifying, diagnosed,
    /// level1, level2, level3, waiting_provider, resolved, closed, reopened), `open`
    /// (all but closed) or `all`.
    #[arg(long, default_value = "all")]
    state: String,
    /// Only this level (1, 2, 3).
    #[arg(long)]
    level: Option<String>,
    /// Only this priority (P1..P4).
    #[arg(long)]
    priority: Option<String>,
    /// Only incidents of this device.
    #[arg(long)]
    device: Option<String>,
    /// Page, from 1.
    #[arg(long, default_value_t = 1)]
    page: usize,
    /// Page size (at most 1000).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum IncidentCmd {
    /// List incidents, newest first.
    List(ListArgs),
    /// Show one incident with its audit trail.
    Show {
        /// Its number.
        number: u64,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Assign to a person and/or a group.
    Assign {
        /// The incident.
        number: u64,
        /// The person.
        #[arg(long)]
        to: Option<String>,
        /// The group.
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        out: Out,
    },
    /// Escalate to the next level (or --level); from level 3 it notifies.
    Escalate {
        /// The incident.
        number: u64,
        /// Target level (1-3).
        #[arg(long)]
        level: Option<u8>,
        /// Why.
        #[arg(long, default_value = "")]
        why: String,
        #[command(flatten)]
        out: Out,
    },
    /// Mark solved.
    Resolve {
        /// The incident.
        number: u64,
        /// The solution (for the record and the export).
        #[arg(long)]
        solution: String,
        #[command(flatten)]
        out: Out,
    },
    /// Close definitively (service desk only: --role service_desk).
    Close {
        /// The incident.
        number: u64,
        /// A closing note.
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        out: Out,
    },
    /// Not definitively closed: back to level 1.
    Reopen {
        /// The incident.
        number: u64,
        /// Why.
        #[arg(long)]
        why: String,
        #[command(flatten)]
        out: Out,
    },
    /// Add a note.
    Note {
        /// The incident.
        number: u64,
        /// The note.
        text: String,
        #[command(flatten)]
        out: Out,
    },
    /// Ask the user for more information (sent to their device).
    RequestInfo {
        /// The incident.
        number: u64,
        /// The question.
        question: String,
        #[command(flatten)]
        out: Out,
    },
    /// Record the user's answer received by another channel (phone, chat).
    InfoReceived {
        /// The incident.
        number: u64,
        /// The answer.
        text: String,
        #[command(flatten)]
        out: Out,
    },
    /// Validate again (registered/validating incidents).
    Validate {
        /// The incident.
        number: u64,
        #[command(flatten)]
        out: Out,
    },
    /// Verification (000 step 3): --confirm routes it by the triage rules,
    /// --not-reproduced closes it.
    Verify {
        /// The incident.
        number: u64,
        /// The problem is real.
        #[arg(
            long,
            conflicts_with = "not_reproduced",
            required_unless_present = "not_reproduced"
        )]
        confirm: bool,
        /// The problem could not be reproduced.
        #[arg(long)]
        not_reproduced: bool,
        /// What was seen or tried.
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        out: Out,
    },
    /// Change the classification by hand (diagnosis).
    Classify {
        /// The incident.
        number: u64,
        /// Category.
        #[arg(long)]
        category: Option<String>,
        /// Impact: low, medium, high.
        #[arg(long)]
        impact: Option<String>,
        /// Urgency: low, medium, high, critical.
        #[arg(long)]
        urgency: Option<String>,
        /// Priority: P1..P4.
        #[arg(long)]
        priority: Option<String>,
        /// Required resources, comma separated (replaces the list).
        #[arg(long, value_delimiter = ',')]
        resources: Option<Vec<String>>,
        /// Specialised path: software_development, acquisition, application_change.
        #[arg(long)]
        path: Option<String>,
        #[command(flatten)]
        out: Out,
    },
    /// Ask a provider for a service (000 step 5, 003).
    Provider {
        /// The incident.
        number: u64,
        /// The provider (default: the asset's warranty provider).
        #[arg(long)]
        provider: Option<String>,
        /// scheduled or unplanned.
        #[arg(long, default_value = "unplanned")]
        kind: String,
        /// Agreed date and time: 2026-12-01T09:00:00Z, ms, or a delay from now (8d).
        #[arg(long)]
        at: String,
        /// Priority asked of the provider (default: the incident's).
        #[arg(long)]
        priority: Option<String>,
        /// The work affects the network (one week's notice to all staff).
        #[arg(long)]
        affects_network: bool,
        /// Agreed conditions.
        #[arg(long, default_value = "")]
        conditions: String,
        #[command(flatten)]
        out: Out,
    },
    /// The provider's service was verified (back to the level that asked).
    ProviderDelivered {
        /// The incident.
        number: u64,
        /// It was NOT delivered as agreed.
        #[arg(long)]
        not_as_agreed: bool,
        /// What was found.
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        out: Out,
    },
}

#[derive(Debug, Clone, Copy, clap::Args)]
struct Out {
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_role(s: &str) -> Result<Role, String> {
    serde_json::from_value(Value::String(s.replace('-', "_"))).map_err(|_| {
        format!(
            "unknown role {s:?}; use service_desk, on_site, specialist, provider or coordinator"
        )
    })
}

/// Runs the CLI on `args` (argv[0] included) and returns the process exit code.
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigia-collector: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The all-in-one binary may have set one up already; that one wins.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::PrintConfig => {
            print!("{}", Config::default_toml());
            Ok(())
        }
        Command::Run => {
            init_tracing();
            let cfg = load_config(cli.config.as_ref())?;
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(run(cfg))
        }
        Command::PrintRules => {
            print!("{}", workflow::print_rules()?);
            Ok(())
        }
        Command::Incidents { action, list } => {
            let api = Api::new(&cli)?;
            match action {
                None => list_incidents(&api, list),
                Some(IncidentCmd::List(l)) => list_incidents(&api, l),
                Some(IncidentCmd::Show { number, json }) => show(&api, *number, *json),
                Some(cmd) => {
                    let (number, action, fields, out) = action_of(cmd)?;
                    let actor = cli
                        .actor
                        .clone()
                        .or_else(|| std::env::var("USER").ok())
                        .filter(|a| !a.trim().is_empty())
                        .ok_or_else(|| anyhow!("say who acts with --as NAME"))?;
                    let mut body = fields;
                    body.insert("as".into(), Value::String(actor));
                    body.insert("roles".into(), serde_json::to_value(&cli.roles)?);
                    let v = api.post(
                        &format!("/api/incidents/{number}/{action}"),
                        &Value::Object(body),
                    )?;
                    if out.json {
                        println!("{}", serde_json::to_string_pretty(&v)?);
                    } else {
                        print!("{}", incident_text(&v));
                    }
                    Ok(())
                }
            }
        }
        Command::Export { from, to, format } => {
            let api = Api::new(&cli)?;
            let mut q = format!("/api/export?format={}", enc(format));
            if let Some(f) = from {
                q.push_str(&format!("&from={}", enc(f)));
            }
            if let Some(t) = to {
                q.push_str(&format!("&to={}", enc(t)));
            }
            print!("{}", api.get_text(&q)?);
            Ok(())
        }
        Command::Incident { number, json } => {
            let api = Api::new(&cli)?;
            show(&api, *number, *json)
        }
        Command::Devices { json } => {
            let api = Api::new(&cli)?;
            let v = api.get("/api/devices")?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let list: Vec<DeviceSummary> = serde_json::from_value(v)
                    .map_err(|e| anyhow!("unexpected answer from {}: {e}", api.base))?;
                print!("{}", devices_table(&list, now_ms()));
            }
            Ok(())
        }
    }
}

fn list_incidents(api: &Api, l: &ListArgs) -> anyhow::Result<()> {
    let mut path = format!(
        "/api/incidents?limit={}&page={}&state={}",
        l.limit,
        l.page,
        enc(&l.state)
    );
    for (k, v) in [
        ("device", &l.device),
        ("level", &l.level),
        ("priority", &l.priority),
    ] {
        if let Some(v) = v {
            path.push_str(&format!("&{k}={}", enc(v)));
        }
    }
    let v = api.get(&path)?;
    if l.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let list: Vec<IncidentSummary> = serde_json::from_value(v)
            .map_err(|e| anyhow!("unexpected answer from {}: {e}", api.base))?;
        print!("{}", incidents_table(&list, now_ms()));
        if list.len() == l.limit {
            println!("(more: --page {})", l.page + 1);
        }
    }
    Ok(())
}

fn show(api: &Api, number: u64, json: bool) -> anyhow::Result<()> {
    let v = api.get(&format!("/api/incidents/{number}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", incident_text(&v));
    }
    Ok(())
}

/// An agreed time: an instant, or a delay from now (`8d`).
fn parse_at(s: &str) -> anyhow::Result<u64> {
    if let Ok(d) = s.parse::<Dur>() {
        return Ok(now_ms().saturating_add(d.ms()));
    }
    crate::api::parse_instant(s).map_err(|e| anyhow!("--at {e}, or a delay like 8d"))
}

type Fields = serde_json::Map<String, Value>;

fn obj(v: Value) -> Fields {
    match v {
        Value::Object(m) => m,
        _ => Fields::new(),
    }
}

/// The API action and JSON fields of an incident subcommand.
fn action_of(cmd: &IncidentCmd) -> anyhow::Result<(u64, &'static str, Fields, Out)> {
    use serde_json::json;
    Ok(match cmd {
        IncidentCmd::List(_) | IncidentCmd::Show { .. } => bail!("not an action"),
        IncidentCmd::Assign {
            number,
            to,
            group,
            out,
        } => {
            if to.is_none() && group.is_none() {
                bail!("assign needs --to PERSON and/or --group GROUP");
            }
            let f = obj(json!({"assignee": to, "group": group}));
            (*number, "assign", f, *out)
        }
        IncidentCmd::Escalate {
            number,
            level,
            why,
            out,
        } => {
            let f = obj(json!({"to": level, "why": why}));
            (*number, "escalate", f, *out)
        }
        IncidentCmd::Resolve {
            number,
            solution,
            out,
        } => (
            *number,
            "resolve",
            obj(json!({ "solution": solution })),
            *out,
        ),
        IncidentCmd::Close { number, note, out } => {
            (*number, "close", obj(json!({ "note": note })), *out)
        }
        IncidentCmd::Reopen { number, why, out } => {
            (*number, "reopen", obj(json!({ "why": why })), *out)
        }
        IncidentCmd::Note { number, text, out } => {
            (*number, "note", obj(json!({ "text": text })), *out)
        }
        IncidentCmd::RequestInfo {
            number,
            question,
            out,
        } => {
            let f = obj(json!({ "question": question }));
            (*number, "request-info", f, *out)
        }
        IncidentCmd::InfoReceived { number, text, out } => {
            (*number, "info-received", obj(json!({ "text": text })), *out)
        }
        IncidentCmd::Validate { number, out } => (*number, "validate", Fields::new(), *out),
        IncidentCmd::Verify {
            number,
            confirm,
            note,
            out,
            ..
        } => {
            let outcome = if *confirm {
                "confirm"
            } else {
                "not_reproduced"
            };
            let f = obj(json!({"outcome": outcome, "note": note}));
            (*number, "verify", f, *out)
        }
        IncidentCmd::Classify {
            number,
            category,
            impact,
            urgency,
            priority,
            resources,
            path,
            out,
        } => {
            let mut f = Fields::new();
            for (k, v) in [
                ("category", category),
                ("impact", impact),
                ("urgency", urgency),
                ("priority", priority),
                ("path", path),
            ] {
                if let Some(v) = v {
                    f.insert(k.into(), Value::String(v.clone()));
                }
            }
            if let Some(r) = resources {
                f.insert("resources".into(), json!(r));
            }
            if f.is_empty() {
                bail!(
                    "classify needs at least one of --category --impact --urgency \
                     --priority --resources --path"
                );
            }
            (*number, "classify", f, *out)
        }
        IncidentCmd::Provider {
            number,
            provider,
            kind,
            at,
            priority,
            affects_network,
            conditions,
            out,
        } => {
            let f = obj(json!({
                "provider": provider, "kind": kind, "agreed_at": parse_at(at)?,
                "priority": priority, "affects_network": affects_network,
                "conditions": conditions,
            }));
            (*number, "provider", f, *out)
        }
        IncidentCmd::ProviderDelivered {
            number,
            not_as_agreed,
            note,
            out,
        } => {
            let f = obj(json!({"as_agreed": !not_as_agreed, "note": note}));
            (*number, "provider-delivered", f, *out)
        }
    })
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    use std::io::Write;
    let running = crate::start(cfg).await?;
    // Tests and scripts read these two lines to find the ports.
    println!("mqtt listening on {}", running.mqtt_url);
    println!("http listening on http://{}", running.http_addr);
    let _ = std::io::stdout().flush();
    tracing::info!(url = %running.mqtt_url, "mqtt listening");
    tracing::info!(url = %format!("http://{}", running.http_addr), "http listening");
    wait_for_signal().await?;
    tracing::info!("stopping");
    running.shutdown().await?;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("cannot watch Ctrl-C")
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn now_ms() -> u64 {
    crate::ingest::now_ms()
}

/// A client of the running collector's API.
struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(cli: &Cli) -> anyhow::Result<Self> {
        let base = match &cli.api {
            Some(a) => a.trim_end_matches('/').to_string(),
            None => {
                let cfg = load_config(cli.config.as_ref())?;
                api_from_listen(&cfg.http.listen)
            }
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Ok(Self { base, agent })
    }

    fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self.agent.get(&url).call();
        self.answer(&url, resp)
    }

    fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self.agent.post(&url).send_json(body);
        self.answer(&url, resp)
    }

    /// A text answer (the CSV export); errors still come as JSON.
    fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base);
        let mut resp = match self.agent.get(&url).call() {
            Ok(r) => r,
            Err(e) => bail!(
                "no collector answers at {} ({e}); is `vigia-collector run` running?",
                self.base
            ),
        };
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_string()
            .with_context(|| format!("cannot read the answer from {url}"))?;
        if status >= 400 {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            bail!("{} (HTTP {status})", v["error"].as_str().unwrap_or(&body));
        }
        Ok(body)
    }

    fn answer(
        &self,
        url: &str,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Value> {
        let mut resp = match resp {
            Ok(r) => r,
            Err(e) => bail!(
                "no collector answers at {} ({e}); is `vigia-collector run` running? \
                 (use --api URL or --config FILE to point elsewhere)",
                self.base
            ),
        };
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_string()
            .with_context(|| format!("cannot read the answer from {url}"))?;
        let v: Value = serde_json::from_str(&body)
            .with_context(|| format!("{url} answered HTTP {status} with non-JSON: {body:.200}"))?;
        if status >= 400 {
            let msg = v["error"].as_str().unwrap_or("(no message)");
            bail!("{msg} (HTTP {status})");
        }
        Ok(v)
    }
}

/// The API base URL for a `[http] listen` address: an unspecified host (0.0.0.0, ::)
/// becomes loopback, and port 0 (known only to the running process) falls back to the
/// default address.
fn api_from_listen(listen: &str) -> String {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.port() != 0 => {
            let host = if a.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else if a.is_ipv6() {
                format!("[{}]", a.ip())
            } else {
                a.ip().to_string()
            };
            format!("http://{host}:{}", a.port())
        }
        _ => format!("http://{DEFAULT_HTTP_LISTEN}"),
    }
}

fn ago(now: u64, then: u64) -> String {
    if then == 0 {
        return "-".into();
    }
    let s = now.saturating_sub(then) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Renders rows as left-aligned columns.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn incidents_table(list: &[IncidentSummary], now: u64) -> String {
    if list.is_empty() {
        return "no incidents\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            vec![
                i.number.to_string(),
                i.state.as_str().to_string(),
                format!("L{}", i.level),
                i.priority.map_or("-".into(), |p| p.to_string()),
                i.assignee.clone().unwrap_or_else(|| "-".into()),
                i.severity.map_or("-".into(), |s| s.as_str().to_string()),
                i.device.to_string(),
                clip(&format!("{} {}", i.kind, i.subject), 32),
                i.occurrences.to_string(),
                ago(now, i.updated_at),
                clip(&i.title, 50),
            ]
        })
        .collect();
    table(
        &[
            "#", "STATE", "LEVEL", "PRIO", "ASSIGNEE", "SEVERITY", "DEVICE", "WHAT", "SEEN",
            "UPDATED", "TITLE",
        ],
        &rows,
    )
}

fn devices_table(list: &[DeviceSummary], now: u64) -> String {
    if list.is_empty() {
        return "no devices\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            vec![
                d.device.to_string(),
                if d.online { "online" } else { "offline" }.to_string(),
                ago(now, d.last_seen),
                d.hostname.clone().unwrap_or_else(|| "-".into()),
                clip(d.os.as_deref().unwrap_or("-"), 28),
                clip(d.model.as_deref().unwrap_or("-"), 28),
                d.agent_version.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "DEVICE",
            "STATUS",
            "LAST SEEN",
            "HOST",
            "OS",
            "MODEL",
            "AGENT",
        ],
        &rows,
    )
}

fn when(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".into(), workflow::rfc3339)
}

fn incident_text(v: &Value) -> String {
    let s = |k: &str| match &v[k] {
        Value::String(x) => x.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let mut out = format!(
        "incident {}  [{}]  level {}  priority {}  {}\ndevice: {}  assignee: {}  group: {}\n",
        v["number"],
        s("state"),
        s("level"),
        s("priority"),
        s("title"),
        s("device"),
        s("assignee"),
        s("group"),
    );
    let o = &v["origin"];
    match o["type"].as_str() {
        Some("fault") => out.push_str(&format!(
            "fault: {} on {}  severity: {}  occurrences: {}  active: {}{}\n",
            o["kind"].as_str().unwrap_or("-"),
            o["subject"].as_str().unwrap_or("-"),
            s("severity"),
            v["occurrences"],
            v["fault_active"],
            if v["flapping"] == true {
                "  FLAPPING"
            } else {
                ""
            },
        )),
        Some("report") => out.push_str(&format!(
            "report by {} ({}), urgency {}, category {}\n{}\n",
            o["reporter"].as_str().unwrap_or("-"),
            o["contact"].as_str().unwrap_or("-"),
            o["urgency"].as_str().unwrap_or("-"),
            o["category"].as_str().unwrap_or("-"),
            o["text"].as_str().unwrap_or("")
        )),
        _ => {}
    }
    let c = &v["classification"];
    if c.is_object() {
        out.push_str(&format!(
            "classified: {} impact {} urgency {} -> {}, level {}, group {} (rule {})\n",
            c["category"].as_str().unwrap_or("-"),
            c["impact"].as_str().unwrap_or("-"),
            c["urgency"].as_str().unwrap_or("-"),
            c["priority"].as_str().unwrap_or("-"),
            c["level"],
            c["group"].as_str().unwrap_or("-"),
            c["rule"].as_str().unwrap_or("-"),
        ));
    }
    out.push_str(&format!(
        "opened {}  next timer {}\n",
        when(&v["opened_at"]),
        when(&v["next_deadline"])
    ));
    if let Some(sol) = v["solution"].as_str() {
        out.push_str(&format!("solution: {sol}\n"));
    }
    out.push_str("audit trail:\n");
    for r in v["audit"].as_array().into_iter().flatten() {
        let actor = match r["actor"]["type"].as_str() {
            Some("person") => r["actor"]["name"].as_str().unwrap_or("-").to_string(),
            Some("device") => format!("device {}", r["actor"]["device"].as_str().unwrap_or("-")),
            _ => "system".to_string(),
        };
        let (from, to) = (
            r["from"].as_str().unwrap_or("-"),
            r["to"].as_str().unwrap_or("-"),
        );
        let arrow = if from == to {
            from.to_string()
        } else {
            format!("{from} -> {to}")
        };
        out.push_str(&format!(
            "  {}  {:<14} {:<16} {:<30} {}\n",
            when(&r["at"]),
            clip(&actor, 14),
            r["action"].as_str().unwrap_or("-"),
            arrow,
            r["why"].as_str().unwrap_or("")
        ));
    }
    for n in v["notes"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "note from {} at {}: {}\n",
            n["author"].as_str().unwrap_or("-"),
            when(&n["at"]),
            n["text"].as_str().unwrap_or("")
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn api_base_from_listen_address() {
        assert_eq!(api_from_listen("127.0.0.1:8790"), "http://127.0.0.1:8790");
        assert_eq!(api_from_listen("0.0.0.0:9000"), "http://127.0.0.1:9000");
        assert_eq!(api_from_listen("[::1]:9000"), "http://[::1]:9000");
        assert_eq!(api_from_listen("127.0.0.1:0"), "http://127.0.0.1:8790");
    }

    #[test]
    fn client_command_says_plainly_when_no_collector_runs() {
        // A port nobody listens on: bind, learn it, release it.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let cli = Cli::try_parse_from([
            "vigia-collector",
            "--api",
            &format!("http://127.0.0.1:{port}"),
            "incidents",
        ])
        .unwrap();
        let err = dispatch(cli).unwrap_err().to_string();
        assert!(err.contains("no collector answers"), "{err}");
    }

    #[test]
    fn tables_align_and_say_when_empty() {
        assert_eq!(incidents_table(&[], 0), "no incidents\n");
        let t = table(
            &["A", "BB"],
            &[
                vec!["xxx".into(), "1".into()],
                vec!["y".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    BB\nxxx  1\ny    22\n");
    }

    #[test]
    fn print_config_is_accepted_without_a_config_file() {
        let cli = Cli::try_parse_from(["vigia-collector", "print-config"]).unwrap();
        assert!(matches!(cli.command, Command::PrintConfig));
    }
}
