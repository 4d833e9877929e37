//! The `vigia-collector` command line: `run`, `login`, `logout`, `user add|list|passwd|
//! disable|enable|set`, `token create|list|revoke`, `incidents list|show|assign|escalate|
//! resolve|close|reopen|note|request-info|verify|classify|provider|...`, `export`,
//! `devices`, `device enroll|revoke`, `print-config`, `print-rules`.
//!
//! `run` is the server. The other commands are clients of a running collector's HTTP API
//! (sled allows one process per database, so they never open the store themselves); when
//! nothing answers they say so plainly instead of printing an empty list. They send an
//! API token: `VIGIA_TOKEN`, else the file `[cli] token_file` names, else the one `login`
//! wrote; the server knows who acts from it. An incident action is a workflow
//! [`Command`](crate::workflow::Command) built here and posted (`client`); answers are
//! rendered as text by `render`. `device enroll` and `device revoke` are the exception:
//! they work on the broker's files (`crate::enroll`), where Mosquitto runs, and need no
//! collector.
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::clock::now_ms;
use crate::config::Config;
use crate::http::DeviceSummary;
use crate::workflow::{
    self, ClassifyChange, Command as WfCommand, Dur, IncidentSummary, ProviderRequestSpec,
};
use vigia_protocol::time::parse_instant;

mod client;
mod render;
mod users;

use client::{api_from_listen, ApiClient};
use render::{devices_table, incident_text, incidents_table};

/// Vigía collector: turns device faults and user reports into support incidents.
#[derive(Debug, Parser)]
#[command(name = "vigia-collector", version)]
struct Cli {
    /// Config file (TOML). Default: /etc/vigia/collector.toml when it exists and can be
    /// read, else built-in defaults (`print-config` shows them).
    #[arg(long, global = true, env = "VIGIA_COLLECTOR_CONFIG")]
    config: Option<PathBuf>,
    /// The running collector's API, for the client commands (default: from the config's
    /// `[http] listen`, else http://127.0.0.1:8790).
    #[arg(long, global = true, env = "VIGIA_COLLECTOR_API")]
    api: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// `archive` subcommands.
#[derive(Debug, Subcommand)]
enum ArchiveAction {
    /// Print every archived incident, whole (audit trail included), one JSON object a
    /// line, by number.
    Export,
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
    /// Export the "Servicios soporte" record of the incidents opened in a period, or
    /// (`--record verifications`) the verifications of providers' services made in it.
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
        /// services (the Servicios soporte record) or verifications (of providers'
        /// services, made in the period).
        #[arg(long, default_value = "services")]
        record: String,
    },
    /// The archive of closed incidents that retention moved out of the live store.
    Archive {
        /// What to do with it.
        #[command(subcommand)]
        action: ArchiveAction,
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
    /// Sign in: get an API token for the client commands and keep it (mode 0600) in the
    /// token file.
    Login {
        /// The account (default: $USER).
        #[arg(long)]
        user: Option<String>,
        /// Read the password from standard input instead of asking.
        #[arg(long)]
        password_stdin: bool,
        /// What the token may do: read, act (default) or admin (account management).
        #[arg(long, default_value = "admin")]
        scope: String,
    },
    /// Revoke the token `login` kept, and forget it.
    Logout,
    /// Accounts (admin): add, list, change.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// API tokens for scripts: create, list, revoke.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Devices' broker accounts: enrol a fleet from a devices file.
    Device {
        #[command(subcommand)]
        cmd: DeviceCmd,
    },
    /// Notifications (admin): send a test through a channel of [notify].
    Notify {
        #[command(subcommand)]
        cmd: NotifyCmd,
    },
    /// Devices' warranties (admin): set one by hand, clear it, or import a file. A
    /// provider request on a device under warranty goes to its warranty provider unless
    /// another is named.
    Warranty {
        #[command(subcommand)]
        cmd: WarrantyCmd,
    },
    /// The providers registry: who support is contracted from, their contract for the
    /// period and the coordination meetings' minutes (changes: admin).
    Provider {
        #[command(subcommand)]
        cmd: ProviderCmd,
    },
    /// Self-enrolment (admin; needs the broker's dynamic-security plugin): sites' tokens,
    /// agents asking to join, approval, refusal and revoking a device.
    Enrolment {
        #[command(subcommand)]
        cmd: EnrolmentCmd,
    },
    /// Provider requests: one visit for several incidents, or a service with no incident
    /// behind it (planned maintenance, work on the network), listed, answered, done and
    /// verified once.
    Request {
        #[command(subcommand)]
        cmd: RequestCmd,
    },
}

#[derive(Debug, Subcommand)]
enum RequestCmd {
    /// Ask one provider for one service: for several incidents (each waits for it), or,
    /// with --service, for work no incident is behind, registered as a record of its own
    /// that waits for the provider.
    Create {
        /// An incident it is for (repeat).
        #[arg(
            long = "incident",
            required_unless_present = "service",
            conflicts_with = "service"
        )]
        incidents: Vec<u64>,
        /// A service with no incident behind it: what the work is, in one line.
        #[arg(long, requires = "category")]
        service: Option<String>,
        /// The service's category (network, hardware/power...), which the providers'
        /// contracts cover.
        #[arg(long, requires = "service")]
        category: Option<String>,
        /// The service's details: what is needed (tools, parts) and why.
        #[arg(long, default_value = "", requires = "service")]
        text: String,
        /// The device the service is for, when it is one the collector knows (its
        /// warranty provider is suggested when no --provider is named).
        #[arg(long, requires = "service")]
        device: Option<String>,
        /// The level that follows the service up (default 2; a technician's own).
        #[arg(long, requires = "service")]
        level: Option<u8>,
        /// The group that follows the service up.
        #[arg(long, requires = "service")]
        group: Option<String>,
        /// The provider (for one incident or a device, its warranty's when left out).
        #[arg(long)]
        provider: Option<String>,
        /// scheduled or unplanned.
        #[arg(long, default_value = "unplanned")]
        kind: String,
        /// Agreed date and time: 2026-12-01T09:00:00Z, with an offset (+01:00), ms, or a
        /// delay from now (8d).
        #[arg(long)]
        at: String,
        /// Priority asked of the provider (default: each incident's).
        #[arg(long)]
        priority: Option<String>,
        /// The work affects the network (one week's notice to all staff).
        #[arg(long)]
        affects_network: bool,
        /// What is needed (tools, parts, service) and the agreed conditions.
        #[arg(long, default_value = "")]
        conditions: String,
        #[command(flatten)]
        out: OutputFormat,
    },
    /// The pending requests, one line each with the incidents waiting for it.
    List {
        #[command(flatten)]
        out: OutputFormat,
    },
    /// One pending request.
    Show {
        /// Its id (as `list` shows it: 12-1).
        id: String,
        #[command(flatten)]
        out: OutputFormat,
    },
    /// The provider accepts it.
    Accept {
        /// Its id.
        id: String,
        /// What the provider says.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// The provider proposes another date.
    Propose {
        /// Its id.
        id: String,
        /// The date it proposes.
        #[arg(long)]
        date: String,
        /// Why.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Agree a new date with the provider.
    Reschedule {
        /// Its id.
        id: String,
        /// The new agreed date and time.
        #[arg(long)]
        at: String,
        /// Why.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// The provider reports the work done.
    Done {
        /// Its id.
        id: String,
        /// What was done.
        #[arg(long)]
        report: String,
    },
    /// Verify the service: accepted, or rejected with the reason (`--not-as-agreed`).
    Verify {
        /// Its id.
        id: String,
        /// It was NOT delivered as agreed.
        #[arg(long)]
        not_as_agreed: bool,
        /// What was found; the reason, when not as agreed.
        #[arg(long, default_value = "")]
        note: String,
    },
}

#[derive(Debug, Subcommand)]
enum EnrolmentCmd {
    /// Make a site's enrolment token (or a new one, which replaces the old): agents
    /// installed with it ask to join. Printed once; the broker keeps only its hash.
    Token {
        /// The site (lowercase letters, digits, '-'); devices enrolled with it are
        /// tagged with it by their config.
        #[arg(long)]
        site: String,
    },
    /// Withdraw a site's token: agents can no longer ask to join with it.
    RemoveSite {
        /// The site.
        site: String,
    },
    /// The sites with a token and the requests, pending first.
    List,
    /// Approve a request: the device's broker account is created and its password sent
    /// sealed to the agent.
    Approve {
        /// The request id (from `list`).
        request: String,
        /// The broker has an account with this device's id already (a reinstalled
        /// agent): revoke it and approve the new one.
        #[arg(long)]
        replace: bool,
    },
    /// Refuse a request; the agent is told the reason.
    Refuse {
        /// The request id.
        request: String,
        /// Why (the agent's log and status show it).
        #[arg(long)]
        reason: String,
    },
    /// Revoke a device: its broker account is deleted and its connection dropped at once.
    Revoke {
        /// The device id.
        device: String,
    },
}

#[derive(Debug, Subcommand)]
enum ProviderCmd {
    /// Register a provider, or replace its details (its minutes are kept).
    Add {
        /// Its name, as provider requests name it.
        name: String,
        /// Its service address.
        #[arg(long)]
        email: Option<String>,
        /// Its service phone.
        #[arg(long)]
        phone: Option<String>,
        /// Its portal (https://...).
        #[arg(long)]
        portal: Option<String>,
        /// A person there: "Ana Ruiz <ana@example.org>" or a name (repeatable).
        #[arg(long = "contact")]
        contacts: Vec<String>,
        /// A service it provides (repeatable).
        #[arg(long = "service")]
        services: Vec<String>,
        /// A kind of asset it covers: an incident category ("hardware") or a device tag
        /// (repeatable).
        #[arg(long = "covers")]
        covers: Vec<String>,
        /// The contract's first day (2026-01-01).
        #[arg(long, requires = "contract_end")]
        contract_start: Option<String>,
        /// The contract's last day (2026-12-31).
        #[arg(long, requires = "contract_start")]
        contract_end: Option<String>,
        /// The agreed conditions.
        #[arg(long, default_value = "")]
        conditions: String,
        /// Response time per priority, P1=4h (repeatable).
        #[arg(long = "response")]
        response: Vec<String>,
        /// Resolution time per priority, P1=1d (repeatable).
        #[arg(long = "resolution")]
        resolution: Vec<String>,
    },
    /// List the providers, with their contract's period.
    List,
    /// One provider in full.
    Show {
        /// Its name.
        name: String,
    },
    /// Remove a provider from the registry.
    Remove {
        /// Its name.
        name: String,
    },
    /// Record the minutes of a coordination meeting (acta) with the provider.
    Minutes {
        /// The provider.
        name: String,
        /// When the meeting was (2026-12-01).
        #[arg(long)]
        date: String,
        /// Who took part (repeatable).
        #[arg(long = "participant", required = true)]
        participants: Vec<String>,
        /// What was agreed.
        #[arg(long)]
        text: String,
    },
}

#[derive(Debug, Subcommand)]
enum WarrantyCmd {
    /// Set a device's warranty: who honours it and until when.
    Set {
        /// The device's id.
        device: String,
        /// Who honours the warranty ("Dell ProSupport").
        #[arg(long)]
        provider: String,
        /// The last day it covers (2027-05-31).
        #[arg(long)]
        until: String,
    },
    /// Clear a device's warranty.
    Clear {
        /// The device's id.
        device: String,
    },
    /// Import warranties from a CSV file whose first line names the columns: device or
    /// serial (the inventory's serial number), vendor (checked when given), provider,
    /// until. A malformed file changes nothing; rows that match no device are listed and
    /// skipped, the others applied.
    Import {
        /// The warranties file (CSV).
        #[arg(long = "from")]
        from: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum NotifyCmd {
    /// Send a test message now, by email to an address or to a configured webhook, and
    /// say whether the relay or the webhook took it.
    Test {
        /// An email address to send the test to.
        #[arg(long, conflicts_with = "webhook", required_unless_present = "webhook")]
        email: Option<String>,
        /// The name of a [[notify.webhook]] to post the test to.
        #[arg(long)]
        webhook: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCmd {
    /// Create the broker account of every device in a CSV file (columns id, hostname,
    /// site, tags, owner; a header names them) and write one agent config per device.
    /// Every row is checked first: one bad row and nothing is created. When the config
    /// names the broker's dynamic-security plugin (`[mqtt.dynamic_security]`), the
    /// accounts are made there, usable at once; otherwise in the password file, read at
    /// Mosquitto's next reload.
    Enroll {
        /// The devices file (CSV).
        #[arg(long = "from")]
        from: PathBuf,
        /// A new (or empty) directory for the configs, `ID.toml` each, and `index.csv`.
        #[arg(long)]
        out: PathBuf,
        /// The broker URL the agents connect to.
        #[arg(long, default_value = "mqtts://broker.example.org:8883")]
        broker_url: String,
        /// The CA certificate's path on the devices, for mqtts:// (`--ca-file ''`: the
        /// agents trust the system bundle).
        // A String, not a PathBuf: clap refuses an empty path, and '' is meaningful here.
        #[arg(long, default_value = "/etc/vigia/ca.crt")]
        ca_file: String,
        /// Mosquitto's password file (without the plugin).
        #[arg(long, default_value = "/etc/mosquitto/vigia.passwd")]
        passwd_file: PathBuf,
        /// Mosquitto's ACL file: its `user` entries are reserved names (without the
        /// plugin, whose other accounts are).
        #[arg(long, default_value = "/etc/mosquitto/vigia.acl")]
        acl: PathBuf,
        /// Give the listed devices that are already enrolled a new password (their old
        /// one stops working at once with the plugin, at the broker's next reload with
        /// the password file).
        #[arg(long)]
        rotate: bool,
        /// The mosquitto_passwd program.
        #[arg(
            long,
            default_value = "mosquitto_passwd",
            env = "VIGIA_MOSQUITTO_PASSWD"
        )]
        mosquitto_passwd: PathBuf,
    },
    /// Move the devices of the password file into the dynamic-security plugin, keeping
    /// their passwords: run it after `dynsec-setup` and before restarting Mosquitto (the
    /// plugin's state is edited while the broker does not run it).
    ImportPasswd {
        /// Mosquitto's password file.
        #[arg(long, default_value = "/etc/mosquitto/vigia.passwd")]
        passwd_file: PathBuf,
        /// The plugin's state (`plugin_opt_config_file`).
        #[arg(long, default_value = "/var/lib/mosquitto/dynamic-security.json")]
        state: PathBuf,
        /// Mosquitto's ACL file: its `user` entries are not devices.
        #[arg(long, default_value = "/etc/mosquitto/vigia.acl")]
        acl: PathBuf,
    },
    /// Remove devices' broker accounts from the password file (all the listed or none).
    /// Mosquitto drops their connections and refuses them from its next reload
    /// (systemctl reload mosquitto). With the dynamic-security plugin, `enrolment revoke
    /// ID` does it at once.
    Revoke {
        /// The device ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Mosquitto's password file.
        #[arg(long, default_value = "/etc/mosquitto/vigia.passwd")]
        passwd_file: PathBuf,
        /// Mosquitto's ACL file: its `user` entries are not devices.
        #[arg(long, default_value = "/etc/mosquitto/vigia.acl")]
        acl: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// Add an account. Without --password-stdin a password is made up and printed once.
    Add {
        /// Login (lower case letters, digits, '.', '_', '-').
        login: String,
        /// A role (repeat): viewer, technician, service_desk, provider, admin.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// A technician's level (1, 2 or 3).
        #[arg(long)]
        level: Option<u8>,
        /// A support group (repeat).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// The person's name.
        #[arg(long)]
        name: Option<String>,
        /// For a provider's contact: the provider it speaks for.
        #[arg(long)]
        provider: Option<String>,
        /// Where the notifications of routes naming its roles go (`accounts` in a
        /// [[notify.route]]).
        #[arg(long)]
        email: Option<String>,
        /// The most restricted information it may read: public, reserved (reservada) or
        /// classified (clasificada). Default: classified for an admin, reserved for the
        /// service desk, public for everyone else.
        #[arg(long)]
        clearance: Option<String>,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Set an account's password (made up and printed unless --password-stdin); ends its
    /// sessions.
    Passwd {
        /// The account.
        login: String,
        /// Read the new password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable an account: it cannot sign in, and its sessions and tokens stop working.
    Disable {
        /// The account.
        login: String,
    },
    /// Enable a disabled account again.
    Enable {
        /// The account.
        login: String,
    },
    /// Change roles, level, groups, name, email address or clearance.
    #[command(alias = "update")]
    Set {
        /// The account.
        login: String,
        /// Replace the roles (repeat).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Set the level (1-3).
        #[arg(long)]
        level: Option<u8>,
        /// Add to a group (repeat).
        #[arg(long = "add-group")]
        add_groups: Vec<String>,
        /// Remove from a group (repeat).
        #[arg(long = "remove-group")]
        remove_groups: Vec<String>,
        /// Set the name.
        #[arg(long)]
        name: Option<String>,
        /// Set the email address (`''` clears it).
        #[arg(long)]
        email: Option<String>,
        /// Set the clearance: public, reserved (reservada), classified (clasificada), or
        /// default (back to its roles' default). An admin is always cleared for all.
        #[arg(long)]
        clearance: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Create a token for the signed-in account; prints it once.
    Create {
        /// What it is for.
        #[arg(long)]
        name: String,
        /// read, act or admin (at most the scope of the token you use).
        #[arg(long, default_value = "read")]
        scope: String,
    },
    /// List your tokens (--all: everyone's, for an admin).
    List {
        /// Everyone's.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token by its id.
    Revoke {
        /// The id `list` shows.
        id: String,
    },
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
        out: OutputFormat,
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
        out: OutputFormat,
    },
    /// Mark solved.
    Resolve {
        /// The incident.
        number: u64,
        /// The solution (for the record and the export).
        #[arg(long)]
        solution: String,
        #[command(flatten)]
        out: OutputFormat,
    },
    /// Close definitively (service desk only).
    Close {
        /// The incident.
        number: u64,
        /// A closing note.
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        out: OutputFormat,
    },
    /// Not definitively closed: back to level 1.
    Reopen {
        /// The incident.
        number: u64,
        /// Why.
        #[arg(long)]
        why: String,
        #[command(flatten)]
        out: OutputFormat,
    },
    /// Add a note.
    Note {
        /// The incident.
        number: u64,
        /// The note.
        text: String,
        #[command(flatten)]
        out: OutputFormat,
    },
    /// Set the record's information classification: public (sin reserva), reserved
    /// (reservada: the reserved fields are hidden from accounts without clearance) or
    /// classified (clasificada: the record is hidden whole), for a number of years, with
    /// the justification. Service desk and admins only; recorded in the audit trail.
    Reserve {
        /// The incident.
        number: u64,
        /// public, reserved or classified (or reservada, clasificada, sin reserva).
        #[arg(long)]
        level: String,
        /// How many years it lasts (reserved and classified).
        #[arg(long)]
        years: Option<u32>,
        /// From when the years count (a date or RFC 3339 instant); the incident's
        /// registration by default.
        #[arg(long)]
        from: Option<String>,
        /// Only these fields are reserved (repeat; partial disclosure, divulgación
        /// parcial): description, reporter, conversation, notes, solution,
        /// provider_report, device. All of them by default.
        #[arg(long = "field")]
        fields: Vec<String>,
        /// Why it is reserved or classified (justificación), or why it is lifted.
        #[arg(long)]
        why: String,
        #[command(flatten)]
        out: OutputFormat,
    },
    /// Ask the user for more information (sent to their device).
    RequestInfo {
        /// The incident.
        number: u64,
        /// The question.
        question: String,
        #[command(flatten)]
        out: OutputFormat,
    },
    /// Record the user's answer received by another channel (phone, chat).
    InfoReceived {
        /// The incident.
        number: u64,
        /// The answer.
        text: String,
        #[command(flatten)]
        out: OutputFormat,
    },
    /// Validate again (registered/validating incidents).
    Validate {
        /// The incident.
        number: u64,
        #[command(flatten)]
        out: OutputFormat,
    },
    /// Verification: --confirm routes it by the triage rules,
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
        out: OutputFormat,
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
        out: OutputFormat,
    },
    /// Ask a provider for a service.
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
        /// Time the provider has to respond (4h, 2d); default: its contract's, for the
        /// priority.
        #[arg(long)]
        respond_within: Option<Dur>,
        /// Time the provider has to finish after the agreed time; default: its contract's.
        #[arg(long)]
        resolve_within: Option<Dur>,
        #[command(flatten)]
        out: OutputFormat,
    },
    /// The provider accepts the request (its contact, or staff on its behalf).
    ProviderAccept {
        /// The incident.
        number: u64,
        /// What the provider says.
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        out: OutputFormat,
    },
    /// The provider proposes another date for the service.
    ProviderPropose {
        /// The incident.
        number: u64,
        /// The date it proposes: 2026-12-01T09:00:00Z, with an offset (+01:00), ms, or a
        /// delay from now (8d).
        #[arg(long)]
        date: String,
        /// Why.
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        out: OutputFormat,
    },
    /// Agree a new date with the provider (its proposal, or another one).
    ProviderReschedule {
        /// The incident.
        number: u64,
        /// The new agreed date and time, as for `provider --at`.
        #[arg(long)]
        at: String,
        /// Why.
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        out: OutputFormat,
    },
    /// The provider says the work is done, with its report.
    ProviderDone {
        /// The incident.
        number: u64,
        /// What was done.
        #[arg(long)]
        report: String,
        #[command(flatten)]
        out: OutputFormat,
    },
    /// The provider's service was verified: accepted (back to the level that asked), or
    /// rejected with the reason (`--not-as-agreed --note ...`), which reopens the request.
    ProviderDelivered {
        /// The incident.
        number: u64,
        /// It was NOT delivered as agreed.
        #[arg(long)]
        not_as_agreed: bool,
        /// What was found; the reason, when not as agreed.
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        out: OutputFormat,
    },
}

/// How a command prints its answer.
#[derive(Debug, Clone, Copy, clap::Args)]
struct OutputFormat {
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
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
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "vigia-collector: error: {}",
                render::terminal_safe(&format!("{e:#}"))
            );
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(crate::LOG_FILTER));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // Under a unit whose stderr is the journal, entries with structured fields
    // (`journalctl -u vigia-collector DEVICE=ws-0042`); else text on stderr, coloured only
    // on a terminal.
    let journal = vigia_protocol::journal::stderr_is_journal()
        .then(|| vigia_protocol::journal::JournalLayer::new("vigia-collector").ok())
        .flatten();
    let fmt = journal.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    });
    // The all-in-one binary may have set one up already; that one wins.
    let _ = tracing_subscriber::registry()
        .with(journal)
        .with(fmt)
        .with(filter)
        .try_init();
}

/// The installed collector's config, read when none is given (as the agent reads
/// /etc/vigia/agent.toml).
pub const SYSTEM_CONFIG: &str = "/etc/vigia/collector.toml";

/// `--config`/`VIGIA_COLLECTOR_CONFIG`; else the installed config when it exists and this
/// user may read it (it is root:vigia 0640: staff outside the group are clients of the
/// API and need only its address, which the defaults give); else the defaults. So
/// `device enroll` on the server finds the broker's plugin without being told.
fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None if Path::new(SYSTEM_CONFIG).exists() => match Config::load(Path::new(SYSTEM_CONFIG)) {
            Err(crate::config::ConfigError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Ok(Config::default())
            }
            other => Ok(other?),
        },
        None => Ok(Config::default()),
    }
}

fn execute(cli: Cli) -> anyhow::Result<()> {
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
            let api = api_client(&cli)?;
            match action {
                None => list_incidents(&api, list),
                Some(IncidentCmd::List(l)) => list_incidents(&api, l),
                Some(IncidentCmd::Show { number, json }) => show(&api, *number, *json),
                Some(cmd) => {
                    let (number, command, out) = command_of(cmd)?;
                    let v = api.act(number, &command)?;
                    if out.json {
                        println!("{}", serde_json::to_string_pretty(&v)?);
                    } else {
                        render::out(&incident_text(&v));
                    }
                    Ok(())
                }
            }
        }
        Command::Archive {
            action: ArchiveAction::Export,
        } => {
            let api = api_client(&cli)?;
            render::out(&api.get_text("/api/archive")?);
            Ok(())
        }
        Command::Export {
            from,
            to,
            format,
            record,
        } => {
            let api = api_client(&cli)?;
            let mut q = format!("/api/export?format={}&record={}", enc(format), enc(record));
            if let Some(f) = from {
                q.push_str(&format!("&from={}", enc(f)));
            }
            if let Some(t) = to {
                q.push_str(&format!("&to={}", enc(t)));
            }
            render::out(&api.get_text(&q)?);
            Ok(())
        }
        Command::Incident { number, json } => {
            let api = api_client(&cli)?;
            show(&api, *number, *json)
        }
        Command::Login {
            user,
            password_stdin,
            scope,
        } => login(&cli, user.as_deref(), *password_stdin, scope),
        Command::Logout => logout(&cli),
        Command::User { cmd } => users::run(&api_client(&cli)?, cmd),
        Command::Token { cmd } => users::tokens(&api_client(&cli)?, cmd),
        Command::Device { cmd } => device(&cli, cmd),
        Command::Warranty { cmd } => warranty(&api_client(&cli)?, cmd),
        Command::Provider { cmd } => provider(&api_client(&cli)?, cmd),
        Command::Enrolment { cmd } => enrolment(&api_client(&cli)?, cmd),
        Command::Request { cmd } => request(&api_client(&cli)?, cmd),
        Command::Notify {
            cmd: NotifyCmd::Test { email, webhook },
        } => {
            let api = api_client(&cli)?;
            let (channel, to) = match (email, webhook) {
                (Some(e), _) => ("email", e.clone()),
                (None, Some(w)) => ("webhook", w.clone()),
                (None, None) => anyhow::bail!("give --email ADDRESS or --webhook NAME"),
            };
            api.post(
                "/api/notify/test",
                &serde_json::json!({"channel": channel, "to": to}),
            )?;
            println!("test sent to {to} ({channel})");
            Ok(())
        }
        Command::Devices { json } => {
            let api = api_client(&cli)?;
            let v = api.get("/api/devices")?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let list: Vec<DeviceSummary> = serde_json::from_value(v)
                    .map_err(|e| anyhow!("unexpected answer from {}: {e}", api.base))?;
                render::out(&devices_table(&list, now_ms()));
            }
            Ok(())
        }
    }
}

/// `P1=4h` pairs as a map of priority to duration.
fn per_priority(
    what: &str,
    pairs: &[String],
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut out = serde_json::Map::new();
    for p in pairs {
        let (prio, dur) = p
            .split_once('=')
            .with_context(|| format!("--{what} {p:?}: write it as P1=4h"))?;
        let prio = prio.trim().to_uppercase();
        if !["P1", "P2", "P3", "P4"].contains(&prio.as_str()) {
            bail!("--{what} {p:?}: the priority is P1, P2, P3 or P4");
        }
        let d: vigia_protocol::Dur = dur
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("--{what} {p:?}: {e}"))?;
        out.insert(prio, serde_json::to_value(d)?);
    }
    Ok(out)
}

fn request(api: &ApiClient, cmd: &RequestCmd) -> anyhow::Result<()> {
    let print = |v: &Value, json: bool| -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(v)?);
        } else {
            render::out(&request_lines(v));
        }
        Ok(())
    };
    let (id, command) = match cmd {
        RequestCmd::Create {
            incidents,
            service,
            category,
            text,
            device,
            level,
            group,
            provider,
            kind,
            at,
            priority,
            affects_network,
            conditions,
            out,
        } => {
            let service = match service {
                Some(summary) => {
                    let level = level
                        .map(|l| {
                            workflow::Level::try_from(l)
                                .map_err(|_| anyhow::anyhow!("--level is 1, 2 or 3, not {l}"))
                        })
                        .transpose()?;
                    serde_json::to_value(workflow::ServiceOrder {
                        summary: summary.clone(),
                        text: text.clone(),
                        category: category.clone().unwrap_or_default(),
                        device: device
                            .as_deref()
                            .map(vigia_protocol::DeviceId::new)
                            .transpose()
                            .map_err(|e| anyhow::anyhow!("--device: {e}"))?,
                        level,
                        group: group.clone(),
                    })?
                }
                None => Value::Null,
            };
            let body = serde_json::json!({
                "incidents": incidents,
                "service": service,
                "provider": provider,
                "kind": named::<workflow::ServiceKind>("kind", kind)?,
                "priority": named_opt::<workflow::Priority>("priority", priority)?,
                "agreed_at": parse_at(at)?,
                "affects_network": affects_network,
                "conditions": conditions,
            });
            let v = api.post("/api/requests", &body)?;
            print(&v, out.json)?;
            let refused = v["results"]
                .as_array()
                .map_or(0, |r| r.iter().filter(|r| r["ok"] != true).count());
            if refused > 0 {
                bail!("{refused} of the incidents refused the request");
            }
            return Ok(());
        }
        RequestCmd::List { out } => return print(&api.get("/api/requests")?, out.json),
        RequestCmd::Show { id, out } => {
            return print(&api.get(&format!("/api/requests/{}", enc(id)))?, out.json)
        }
        RequestCmd::Accept { id, note } => (id, WfCommand::ProviderAccept { note: note.clone() }),
        RequestCmd::Propose { id, date, note } => (
            id,
            WfCommand::ProviderPropose {
                date: parse_at(date)?,
                note: note.clone(),
            },
        ),
        RequestCmd::Reschedule { id, at, note } => (
            id,
            WfCommand::ProviderReschedule {
                agreed_at: parse_at(at)?,
                note: note.clone(),
            },
        ),
        RequestCmd::Done { id, report } => (
            id,
            WfCommand::ProviderDone {
                report: report.clone(),
            },
        ),
        RequestCmd::Verify {
            id,
            not_as_agreed,
            note,
        } => (
            id,
            WfCommand::ProviderDelivered {
                as_agreed: !not_as_agreed,
                note: note.clone(),
            },
        ),
    };
    let Value::Object(mut body) = serde_json::to_value(&command)? else {
        bail!("a workflow command did not encode as an object");
    };
    body.remove("command");
    let v = api.post(
        &format!("/api/requests/{}/{}", enc(id), command.name()),
        &Value::Object(body),
    )?;
    print(&v, false)?;
    let refused = v["results"]
        .as_array()
        .map_or(0, |r| r.iter().filter(|r| r["ok"] != true).count());
    if refused > 0 {
        bail!("{refused} of the request's incidents refused it");
    }
    Ok(())
}

/// A request list, one request, or an action's per-incident results, as lines.
fn request_lines(v: &Value) -> String {
    let one = |r: &Value| {
        let incidents: Vec<String> = r["incidents"]
            .as_array()
            .map(|a| a.iter().map(|n| n.to_string()).collect())
            .unwrap_or_default();
        let stage = if !r["done"].is_null() {
            "done, to verify"
        } else if !r["proposed"].is_null() {
            "another date proposed"
        } else if !r["accepted"].is_null() {
            "accepted"
        } else {
            "waiting for the provider"
        };
        format!(
            "{}  {}  {}  {}  incidents {}  {stage}\n",
            r["id"].as_str().unwrap_or("-"),
            r["provider"].as_str().unwrap_or("-"),
            r["kind"].as_str().unwrap_or("-"),
            r["agreed_at"]
                .as_u64()
                .map_or_else(|| "-".to_owned(), workflow::rfc3339),
            incidents.join(", "),
        )
    };
    if let Some(list) = v.as_array() {
        if list.is_empty() {
            return "no pending provider requests\n".into();
        }
        return list.iter().map(one).collect();
    }
    if let Some(results) = v["results"].as_array() {
        let mut out = format!("request {}\n", v["id"].as_str().unwrap_or("-"));
        for r in results {
            let n = r["number"].as_u64().unwrap_or(0);
            if r["ok"] == true {
                out.push_str(&format!(
                    "  incident {n}: {}\n",
                    r["state"].as_str().unwrap_or("-")
                ));
            } else {
                out.push_str(&format!(
                    "  incident {n}: refused: {}\n",
                    r["error"].as_str().unwrap_or("-")
                ));
            }
        }
        return out;
    }
    one(v)
}

fn provider(api: &ApiClient, cmd: &ProviderCmd) -> anyhow::Result<()> {
    let path = |n: &str| format!("/api/providers/{}", enc(n));
    match cmd {
        ProviderCmd::Add {
            name,
            email,
            phone,
            portal,
            contacts,
            services,
            covers,
            contract_start,
            contract_end,
            conditions,
            response,
            resolution,
        } => {
            let contacts: Vec<serde_json::Value> = contacts
                .iter()
                .map(|c| match c.split_once('<') {
                    Some((n, e)) => serde_json::json!({
                        "name": n.trim(), "email": e.trim_end_matches('>').trim()
                    }),
                    None => serde_json::json!({"name": c.trim()}),
                })
                .collect();
            let mut body = serde_json::json!({
                "name": name, "contacts": contacts, "services": services, "covers": covers,
            });
            for (k, v) in [("email", email), ("phone", phone), ("portal", portal)] {
                if let Some(v) = v {
                    body[k] = serde_json::json!(v);
                }
            }
            if let (Some(s), Some(e)) = (contract_start, contract_end) {
                let day = |d: &str| -> anyhow::Result<u64> {
                    parse_instant(d).map_err(|e| anyhow::anyhow!("{e}"))
                };
                body["contract"] = serde_json::json!({
                    "start": day(s)?,
                    "end": day(e)? + 86_400_000 - 1,
                    "conditions": conditions,
                    "response": per_priority("response", response)?,
                    "resolution": per_priority("resolution", resolution)?,
                });
            }
            api.send("PUT", &path(name), Some(&body))?;
            println!("provider {name} registered");
        }
        ProviderCmd::List => {
            let v = api.get("/api/providers")?;
            let mut out = String::new();
            for p in v.as_array().into_iter().flatten() {
                let c = &p["contract"];
                out.push_str(&format!(
                    "{:<30} {:<28} {}\n",
                    p["name"].as_str().unwrap_or("-"),
                    p["covers"]
                        .as_array()
                        .map(|a| a
                            .iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default(),
                    if c.is_object() {
                        format!(
                            "contract {} to {}",
                            render::when(&c["start"]),
                            render::when(&c["end"])
                        )
                    } else {
                        "no contract".into()
                    }
                ));
            }
            render::out(&out);
        }
        ProviderCmd::Show { name } => {
            let v = api.get(&path(name))?;
            render::out(&format!("{}\n", serde_json::to_string_pretty(&v)?));
        }
        ProviderCmd::Remove { name } => {
            api.send("DELETE", &path(name), None)?;
            println!("provider {name} removed");
        }
        ProviderCmd::Minutes {
            name,
            date,
            participants,
            text,
        } => {
            api.post(
                &format!("{}/minutes", path(name)),
                &serde_json::json!({"date": date, "participants": participants, "text": text}),
            )?;
            println!("minutes of {date} recorded for {name}");
        }
    }
    Ok(())
}

fn enrolment(api: &ApiClient, cmd: &EnrolmentCmd) -> anyhow::Result<()> {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    match cmd {
        EnrolmentCmd::Token { site } => {
            let v = api.post(
                "/api/enrolments/sites",
                &serde_json::json!({ "site": site }),
            )?;
            render::out(&format!(
                "enrolment token for site {site} (shown once; put it in the agents' \
                 [enrol] token):\n{}\n",
                s(&v["token"])
            ));
        }
        EnrolmentCmd::RemoveSite { site } => {
            api.send(
                "DELETE",
                &format!("/api/enrolments/sites/{}", enc(site)),
                None,
            )?;
            println!("site {site}: enrolment token withdrawn");
        }
        EnrolmentCmd::List => {
            let v = api.get("/api/enrolments")?;
            if v["enabled"] == serde_json::Value::Bool(false) {
                println!("self-enrolment is off: the broker has no dynamic-security plugin");
            }
            let sites: Vec<String> = v["sites"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| s(&x["site"]))
                .collect();
            let mut out = format!(
                "sites with a token: {}\n",
                if sites.is_empty() {
                    "none".into()
                } else {
                    sites.join(", ")
                }
            );
            let rows: Vec<Vec<String>> = v["requests"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    vec![
                        s(&r["request"]),
                        s(&r["decision"]),
                        s(&r["site"]),
                        s(&r["device"]),
                        render::clip(&s(&r["hostname"]), 24),
                        render::clip(&format!("{} {}", s(&r["vendor"]), s(&r["product"])), 30),
                        s(&r["serial"]),
                    ]
                })
                .collect();
            out.push_str(&render::table(
                &[
                    "REQUEST", "STATE", "SITE", "DEVICE", "HOSTNAME", "MACHINE", "SERIAL",
                ],
                &rows,
            ));
            render::out(&out);
        }
        EnrolmentCmd::Approve { request, replace } => {
            let v = api.post(
                &format!("/api/enrolments/{}/approve", enc(request)),
                &serde_json::json!({ "replace": replace }),
            )?;
            render::out(&format!(
                "approved: device {} has its broker account\n",
                s(&v["device"])
            ));
        }
        EnrolmentCmd::Refuse { request, reason } => {
            api.post(
                &format!("/api/enrolments/{}/refuse", enc(request)),
                &serde_json::json!({ "reason": reason }),
            )?;
            println!("refused");
        }
        EnrolmentCmd::Revoke { device } => {
            api.post(
                &format!("/api/devices/{}/revoke", enc(device)),
                &serde_json::json!({}),
            )?;
            render::out(&format!(
                "device {device} revoked: its broker account is deleted\n"
            ));
        }
    }
    Ok(())
}

fn warranty(api: &ApiClient, cmd: &WarrantyCmd) -> anyhow::Result<()> {
    let path = |d: &str| format!("/api/devices/{}/warranty", enc(d));
    match cmd {
        WarrantyCmd::Set {
            device,
            provider,
            until,
        } => {
            let v = api.send(
                "PUT",
                &path(device),
                Some(&serde_json::json!({"provider": provider, "until": until})),
            )?;
            let w = &v["warranty"];
            render::out(&format!(
                "{device}: under warranty with {} until {}{}\n",
                w["provider"].as_str().unwrap_or("-"),
                render::when(&w["until"]),
                if w["in_force"] == true {
                    ""
                } else {
                    " (already expired)"
                }
            ));
        }
        WarrantyCmd::Clear { device } => {
            api.send("DELETE", &path(device), None)?;
            println!("{device}: no warranty recorded");
        }
        WarrantyCmd::Import { from } => {
            let text =
                std::fs::read_to_string(from).with_context(|| format!("{}", from.display()))?;
            let v = api.post_text("/api/warranties", "text/csv; charset=utf-8", text)?;
            let applied = v["applied"].as_array().map_or(0, Vec::len);
            let unmatched = v["unmatched"].as_array().cloned().unwrap_or_default();
            let mut out = format!(
                "{applied} warrant{} set; {} row{} matched no device\n",
                if applied == 1 { "y" } else { "ies" },
                unmatched.len(),
                if unmatched.len() == 1 { "" } else { "s" }
            );
            for u in &unmatched {
                out.push_str(&format!(
                    "  line {}: {}\n",
                    u["line"],
                    u["reason"].as_str().unwrap_or("")
                ));
            }
            render::out(&out);
        }
    }
    Ok(())
}

/// The names no device may take: the collector's account, VIGIA_COLLECTOR_USER (as
/// enroll-device has it) and every `user` of the ACL.
fn reserved_accounts(cli: &Cli, acl: &Path) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let cfg = load_config(cli.config.as_ref())?;
    let mut reserved: std::collections::BTreeSet<String> = [
        cfg.mqtt.username.clone().unwrap_or_default(),
        cfg.mqtt.client_id.clone(),
        std::env::var("VIGIA_COLLECTOR_USER").unwrap_or_default(),
        crate::config::DEFAULT_CLIENT_ID.to_string(),
    ]
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect();
    match std::fs::read_to_string(acl) {
        Ok(text) => reserved.extend(crate::enroll::acl_users(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("{}: {e}", acl.display()),
    }
    Ok(reserved)
}

fn device(cli: &Cli, cmd: &DeviceCmd) -> anyhow::Result<()> {
    use crate::enroll;
    let (from, out, broker_url, ca_file, passwd_file, acl, rotate, mosquitto_passwd) = match cmd {
        DeviceCmd::Enroll {
            from,
            out,
            broker_url,
            ca_file,
            passwd_file,
            acl,
            rotate,
            mosquitto_passwd,
        } => (
            from,
            out,
            broker_url,
            ca_file,
            passwd_file,
            acl,
            rotate,
            mosquitto_passwd,
        ),
        DeviceCmd::ImportPasswd {
            passwd_file,
            state,
            acl,
        } => return import_passwd(cli, passwd_file, state, acl),
        DeviceCmd::Revoke {
            ids,
            passwd_file,
            acl,
        } => {
            if load_config(cli.config.as_ref())?
                .mqtt
                .dynamic_security
                .is_some()
            {
                bail!(
                    "this broker keeps its accounts in the dynamic-security plugin: \
                     `vigia-collector enrolment revoke ID` deletes a device's account and \
                     drops its connection at once"
                );
            }
            let reserved = reserved_accounts(cli, acl)?;
            let ids = ids
                .iter()
                .map(|id| {
                    vigia_protocol::DeviceId::new(id)
                        .map_err(|e| anyhow!("{}: {e}", render::terminal_safe(id)))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let n = enroll::revoke(passwd_file, &ids, &reserved)?;
            println!(
                "revoked {n} device{} in {}",
                if n == 1 { "" } else { "s" },
                passwd_file.display()
            );
            println!("reload Mosquitto to drop and refuse them now: systemctl reload mosquitto");
            return Ok(());
        }
    };
    let cfg = load_config(cli.config.as_ref())?;
    let reserved = reserved_accounts(cli, acl)?;
    let text = std::fs::read_to_string(from).with_context(|| format!("{}", from.display()))?;
    let rows = enroll::parse_csv(&text).map_err(|errors| enroll::EnrollError::Rows {
        file: from.display().to_string(),
        errors,
    })?;
    let target = enroll::Target {
        broker_url: broker_url.clone(),
        ca_file: Some(PathBuf::from(ca_file)).filter(|p| !p.as_os_str().is_empty()),
        out: out.clone(),
        rotate: *rotate,
    };
    let today = vigia_protocol::time::rfc3339(now_ms());
    let today = today.get(..10).unwrap_or(&today);
    let in_file = |e: enroll::EnrollError| match e {
        enroll::EnrollError::Rows { errors, .. } => enroll::EnrollError::Rows {
            file: from.display().to_string(),
            errors,
        },
        other => other,
    };
    let (done, place, then) = if cfg.mqtt.dynamic_security.is_some() {
        let dynsec = plugin_client(&cfg)?;
        let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
        let done = rt
            .block_on(enroll::apply_dynsec(
                &rows, &target, &dynsec, &reserved, today,
            ))
            .map_err(in_file)?;
        (
            done,
            "the broker's dynamic-security plugin".to_string(),
            "the devices can connect now (no reload needed)",
        )
    } else {
        let passwd = enroll::PasswdFile {
            path: passwd_file.clone(),
            mosquitto_passwd: mosquitto_passwd.clone(),
        };
        let done = enroll::apply(&rows, &target, &passwd, &reserved, today).map_err(in_file)?;
        (
            done,
            passwd_file.display().to_string(),
            "reload Mosquitto so it reads the new accounts: systemctl reload mosquitto",
        )
    };
    println!(
        "enrolled {} devices ({} new, {} given a new password) in {place}",
        done.added + done.rotated,
        done.added,
        done.rotated,
    );
    println!(
        "configs: {}/ID.toml, mode 0600 ({}/index.csv lists them)",
        done.out.display(),
        done.out.display()
    );
    println!("{then}");
    Ok(())
}

/// `device import-passwd`.
fn import_passwd(cli: &Cli, passwd_file: &Path, state: &Path, acl: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let cfg = load_config(cli.config.as_ref())?;
    let topics = cfg.validate()?.topics;
    let reserved = reserved_accounts(cli, acl)?;
    let passwd = std::fs::read_to_string(passwd_file)
        .with_context(|| format!("{}", passwd_file.display()))?;
    let text = std::fs::read_to_string(state)
        .with_context(|| format!("{} (run broker-config/dynsec-setup first)", state.display()))?;
    let mut json: Value =
        serde_json::from_str(&text).with_context(|| format!("{}", state.display()))?;
    let done = crate::dynsec::import_passwd(&mut json, &passwd, &topics, &reserved)
        .map_err(|e| anyhow!("{}: {e}", state.display()))?;
    let meta = std::fs::metadata(state).with_context(|| format!("{}", state.display()))?;
    let tmp = state.with_extension(format!("json.import-{}", std::process::id()));
    let body = serde_json::to_vec_pretty(&json)?;
    let written = (|| -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, state)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        bail!("cannot write {}: {e}", state.display());
    }
    println!(
        "moved {} device account{} into {}, with their passwords",
        done.devices.len(),
        if done.devices.len() == 1 { "" } else { "s" },
        state.display()
    );
    for (user, why) in &done.skipped {
        render::out(&format!("  left out {user}: {why}\n"));
    }
    println!("restart Mosquitto to run the plugin: systemctl restart mosquitto");
    Ok(())
}

/// A client of the broker's dynamic-security plugin, from the collector's config.
fn plugin_client(cfg: &Config) -> anyhow::Result<crate::dynsec::Dynsec> {
    let settings = cfg.validate()?;
    let (Some(admin), crate::config::BrokerTarget::External { host, port, .. }) =
        (settings.dynamic_security.clone(), &settings.broker)
    else {
        bail!("the config names no external broker with [mqtt.dynamic_security]");
    };
    Ok(crate::dynsec::Dynsec::new(crate::dynsec::DynsecConfig {
        host: host.clone(),
        port: *port,
        tls_ca: settings.ca_pem.clone(),
        credentials: admin,
        topics: settings.topics.clone(),
    }))
}

fn list_incidents(api: &ApiClient, l: &ListArgs) -> anyhow::Result<()> {
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
        render::out(&incidents_table(&list, now_ms()));
        if list.len() == l.limit {
            println!("(more: --page {})", l.page + 1);
        }
    }
    Ok(())
}

fn show(api: &ApiClient, number: u64, json: bool) -> anyhow::Result<()> {
    let v = api.get(&format!("/api/incidents/{number}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        render::out(&incident_text(&v));
    }
    Ok(())
}

/// The client of the collector's API: `--api`, else the config's `[http] listen`.
fn api_base(cli: &Cli, cfg: &Config) -> String {
    match &cli.api {
        Some(a) => a.clone(),
        None => api_from_listen(&cfg.http.listen, cfg.http.tls_cert.is_some()),
    }
}

fn api_client(cli: &Cli) -> anyhow::Result<ApiClient> {
    let cfg = load_config(cli.config.as_ref())?;
    let token = users::read_token(&cfg)?;
    client_with(cli, &cfg, token)
}

fn client_with(cli: &Cli, cfg: &Config, token: Option<String>) -> anyhow::Result<ApiClient> {
    let ca = match &cfg.cli.ca_file {
        Some(f) => {
            Some(std::fs::read(f).with_context(|| format!("[cli] ca_file {}", f.display()))?)
        }
        None => None,
    };
    ApiClient::new(&api_base(cli, cfg), token, ca.as_deref())
}

fn login(cli: &Cli, user: Option<&str>, password_stdin: bool, scope: &str) -> anyhow::Result<()> {
    let cfg = load_config(cli.config.as_ref())?;
    let user = user
        .map(str::to_owned)
        .or_else(|| std::env::var("USER").ok())
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| anyhow!("say which account with --user LOGIN"))?;
    let password = users::read_password(password_stdin, &format!("password for {user}: "))?;
    let api = client_with(cli, &cfg, None)?;
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let v = api.post(
        "/api/tokens",
        &serde_json::json!({
            "login": user, "password": password, "scope": scope,
            "name": format!("vigia-collector CLI on {}", host.trim()),
        }),
    )?;
    let token = v["token"]
        .as_str()
        .ok_or_else(|| anyhow!("the collector answered without a token: {v}"))?;
    let file = users::token_file(&cfg)?;
    users::write_token(&file, token)?;
    println!(
        "signed in as {user}; the token ({}) is in {}",
        v["id"].as_str().unwrap_or("?"),
        file.display()
    );
    Ok(())
}

fn logout(cli: &Cli) -> anyhow::Result<()> {
    let cfg = load_config(cli.config.as_ref())?;
    let file = users::token_file(&cfg)?;
    let Some(token) = users::read_token(&cfg)? else {
        println!("not signed in");
        return Ok(());
    };
    let api = client_with(cli, &cfg, Some(token))?;
    api.send("DELETE", "/api/tokens/current", None)?;
    match std::fs::remove_file(&file) {
        Ok(()) => println!("signed out; removed {}", file.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => println!("signed out"),
        Err(e) => bail!(
            "revoked the token but cannot remove {}: {e}",
            file.display()
        ),
    }
    Ok(())
}

/// An agreed time: an instant, or a delay from now (`8d`).
fn parse_at(s: &str) -> anyhow::Result<u64> {
    if let Ok(d) = s.parse::<Dur>() {
        return Ok(appointment_after(now_ms(), d.ms()));
    }
    parse_instant(s).map_err(|e| anyhow!("--at {e}, or a delay like 8d"))
}

/// A delay from now as an agreed time: on the next whole minute at least a second after
/// `now + delay`. Appointments are by the minute, and the server judges the time by its
/// own clock a moment later: `--at 7d` taken to the millisecond would fall just short
/// of the week's notice it means to give.
fn appointment_after(now: u64, delay: u64) -> u64 {
    now.saturating_add(delay)
        .saturating_add(1_000)
        .div_ceil(60_000)
        .saturating_mul(60_000)
}

/// One of the workflow's named values (`high`, `scheduled`, `P2`...), by its wire name.
fn named<T: DeserializeOwned>(what: &str, s: &str) -> anyhow::Result<T> {
    serde_json::from_value(Value::String(s.replace('-', "_")))
        .map_err(|e| anyhow!("{what} {s:?}: {e}"))
}

/// [`named`] for an optional flag.
fn named_opt<T: DeserializeOwned>(what: &str, v: &Option<String>) -> anyhow::Result<Option<T>> {
    v.as_deref().map(|s| named(what, s)).transpose()
}

/// The workflow command of an incident subcommand, and how to print the answer.
fn command_of(cmd: &IncidentCmd) -> anyhow::Result<(u64, WfCommand, OutputFormat)> {
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
            let c = WfCommand::Assign {
                assignee: to.clone(),
                group: group.clone(),
            };
            (*number, c, *out)
        }
        IncidentCmd::Escalate {
            number,
            level,
            why,
            out,
        } => {
            let to = level.map(|l| named("level", &l.to_string())).transpose()?;
            let c = WfCommand::Escalate {
                to,
                why: why.clone(),
            };
            (*number, c, *out)
        }
        IncidentCmd::Resolve {
            number,
            solution,
            out,
        } => {
            let c = WfCommand::Resolve {
                solution: solution.clone(),
            };
            (*number, c, *out)
        }
        IncidentCmd::Close { number, note, out } => {
            (*number, WfCommand::Close { note: note.clone() }, *out)
        }
        IncidentCmd::Reopen { number, why, out } => {
            (*number, WfCommand::Reopen { why: why.clone() }, *out)
        }
        IncidentCmd::Note { number, text, out } => {
            (*number, WfCommand::Note { text: text.clone() }, *out)
        }
        IncidentCmd::Reserve {
            number,
            level,
            years,
            from,
            fields,
            why,
            out,
        } => {
            let fields = fields
                .iter()
                .flat_map(|f| f.split(','))
                .map(|f| f.parse::<crate::workflow::ReservedField>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow!("--field: {e}"))?;
            let from = from
                .as_deref()
                .map(|f| parse_instant(f).map_err(|e| anyhow!("--from {e}")))
                .transpose()?;
            let c = WfCommand::Reserve(crate::workflow::ReserveSpec {
                level: level.parse().map_err(|e| anyhow!("--level: {e}"))?,
                years: *years,
                from,
                fields: (!fields.is_empty()).then_some(fields),
                justification: why.clone(),
            });
            (*number, c, *out)
        }
        IncidentCmd::RequestInfo {
            number,
            question,
            out,
        } => {
            let c = WfCommand::RequestInfo {
                question: question.clone(),
            };
            (*number, c, *out)
        }
        IncidentCmd::InfoReceived { number, text, out } => {
            let c = WfCommand::InfoReceived { text: text.clone() };
            (*number, c, *out)
        }
        IncidentCmd::Validate { number, out } => (*number, WfCommand::Validate, *out),
        IncidentCmd::Verify {
            number,
            confirm,
            note,
            out,
            ..
        } => {
            let note = note.clone();
            let c = if *confirm {
                WfCommand::Confirm { note }
            } else {
                WfCommand::NotReproduced { note }
            };
            (*number, c, *out)
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
            let change = ClassifyChange {
                category: category.clone(),
                impact: named_opt("impact", impact)?,
                urgency: named_opt("urgency", urgency)?,
                priority: named_opt("priority", priority)?,
                resources: resources.clone(),
                path: named_opt("path", path)?.map(Some),
            };
            if change == ClassifyChange::default() {
                bail!(
                    "classify needs at least one of --category --impact --urgency \
                     --priority --resources --path"
                );
            }
            (*number, WfCommand::Classify(change), *out)
        }
        IncidentCmd::Provider {
            number,
            provider,
            kind,
            at,
            priority,
            affects_network,
            conditions,
            respond_within,
            resolve_within,
            out,
        } => {
            let spec = ProviderRequestSpec {
                provider: provider.clone(),
                kind: named("kind", kind)?,
                priority: named_opt("priority", priority)?,
                agreed_at: parse_at(at)?,
                affects_network: *affects_network,
                conditions: conditions.clone(),
                respond_within: *respond_within,
                resolve_within: *resolve_within,
                request: None,
            };
            (*number, WfCommand::RequestProvider(spec), *out)
        }
        IncidentCmd::ProviderAccept { number, note, out } => (
            *number,
            WfCommand::ProviderAccept { note: note.clone() },
            *out,
        ),
        IncidentCmd::ProviderPropose {
            number,
            date,
            note,
            out,
        } => (
            *number,
            WfCommand::ProviderPropose {
                date: parse_at(date)?,
                note: note.clone(),
            },
            *out,
        ),
        IncidentCmd::ProviderReschedule {
            number,
            at,
            note,
            out,
        } => (
            *number,
            WfCommand::ProviderReschedule {
                agreed_at: parse_at(at)?,
                note: note.clone(),
            },
            *out,
        ),
        IncidentCmd::ProviderDone {
            number,
            report,
            out,
        } => (
            *number,
            WfCommand::ProviderDone {
                report: report.clone(),
            },
            *out,
        ),
        IncidentCmd::ProviderDelivered {
            number,
            not_as_agreed,
            note,
            out,
        } => {
            let c = WfCommand::ProviderDelivered {
                as_agreed: !not_as_agreed,
                note: note.clone(),
            };
            (*number, c, *out)
        }
    })
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    use std::io::Write;
    let running = crate::start(cfg).await?;
    // Tests and scripts read these two lines to find the ports.
    let scheme = if running.https { "https" } else { "http" };
    println!("mqtt listening on {}", running.mqtt_url);
    println!("http listening on {scheme}://{}", running.http_addr);
    if let Some(a) = &running.first_admin {
        println!(
            "first start: sign in as {} with the password in {} (then change it: \
             vigia-collector login --user {}; vigia-collector user passwd {})",
            a.login,
            a.file.display(),
            a.login,
            a.login
        );
    }
    let _ = std::io::stdout().flush();
    tracing::info!(url = %running.mqtt_url, "mqtt listening");
    tracing::info!(url = %format!("{scheme}://{}", running.http_addr), "http listening");
    // Under systemd (`Type=notify`): ready once the store is open, the broker subscribed
    // (or its bounded wait over) and the API listening.
    notify_systemd(&format!(
        "READY=1\nSTATUS=console on {scheme}://{}, broker {}",
        running.http_addr, running.mqtt_url
    ));
    wait_for_signal().await?;
    tracing::info!("stopping");
    notify_systemd("STOPPING=1");
    running.shutdown().await?;
    Ok(())
}

#[cfg(unix)]
fn notify_systemd(state: &str) {
    if let Err(e) = vigia_protocol::systemd::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

#[cfg(not(unix))]
fn notify_systemd(_: &str) {}

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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::render::table;
    use super::*;

    #[test]
    fn a_delay_is_an_appointment_on_a_whole_minute_past_it() {
        const WEEK: u64 = 7 * 24 * 3_600_000;
        let now = 1_796_300_000_123; // 13:33:20.123 on some day
        let at = appointment_after(now, WEEK);
        assert_eq!(at % 60_000, 0);
        // Past the exact week (the server's clock reads a moment later), by under 2 min.
        assert!(
            at >= now + WEEK + 1_000 && at < now + WEEK + 120_000,
            "{at}"
        );
        // The last second of a minute goes to the minute after next.
        let late = 1_796_300_039_500 - 1_796_300_039_500 % 60_000 + 59_500;
        assert_eq!(appointment_after(late, 0) - late, 60_500);
    }

    #[test]
    fn api_base_from_listen_address() {
        assert_eq!(
            api_from_listen("127.0.0.1:8790", false),
            "http://127.0.0.1:8790"
        );
        assert_eq!(
            api_from_listen("0.0.0.0:9000", false),
            "http://127.0.0.1:9000"
        );
        assert_eq!(api_from_listen("[::1]:9000", false), "http://[::1]:9000");
        assert_eq!(
            api_from_listen("127.0.0.1:0", false),
            "http://127.0.0.1:8790"
        );
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
        let err = execute(cli).unwrap_err().to_string();
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
