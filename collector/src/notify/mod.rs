//! Notifications that reach people: email over SMTP (STARTTLS or TLS) and JSON webhooks
//! (chat and WhatsApp gateways), routed by event, group, level and priority.
//!
//! A change that calls for a notification writes a [`NotifyEntry`] to the store's
//! notification outbox in the same transaction as the change itself
//! (`store::embedded`'s `enqueue`), so a notification exists exactly when its change
//! does. The [`sender::NotifySender`] task routes each entry once (its recipients are
//! then part of the entry), sends every delivery, and writes down each result before the
//! next send: a restart resends only what was not recorded as sent. Each delivery has a
//! stable key (`vigia-<entry>-<recipient>`), sent as the mail's `Message-ID` and as the
//! webhook's `Idempotency-Key`, so the one send a kill can leave unrecorded (the relay
//! took it, the record did not reach the disk) is recognisable as a repeat downstream.
//! Temporary failures (a relay's 4xx, a webhook's 429/5xx or a refused connection) are
//! retried with backoff, never sooner than a webhook's `Retry-After`; permanent ones (a
//! 5xx from the relay, a webhook's other 4xx) stop at once. Every incident shows what was
//! sent to whom and when (`GET /api/incidents/{n}`, `notifications`).
//!
//! This module is the pure part: configuration, routing and the texts. Sending is in
//! [`channel`], the task in [`sender`].
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vigia_protocol::{DeviceId, Millis};

use crate::workflow::{Decision, IncidentSummary, Level, NotificationKind, Policy, Priority};

pub mod channel;
pub mod sender;

/// What a notification is about, as routes name it (`on = ["opened", "escalated"]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// An incident was opened (routes usually ask for P1 and P2 only).
    Opened,
    /// Escalated to a higher level, or due beyond level 3.
    Escalated,
    /// An SLA target was breached.
    SlaBreached,
    /// The user answered IT's question.
    InfoAnswered,
    /// The user did not answer in time: back to the service desk.
    InfoUnanswered,
    /// A provider service was requested.
    ProviderRequest,
    /// The provider did not deliver as agreed.
    ProviderNotAsAgreed,
    /// The provider accepted a request or proposed another date.
    ProviderAnswered,
    /// The provider says the work is done: verify it.
    VerificationDue,
    /// The provider missed its contract's deadline: for the administrators.
    ProviderOverdue,
    /// The week's notice of network work, for all staff.
    StaffNotice,
    /// A fault keeps coming back.
    Flapping,
    /// An incident came back.
    Reopened,
    /// The quiet digest: a recipient's repeats of the same fault, held and sent together
    /// (never a route's event; see [`NotifyConfig::digest`]).
    Digest,
}

impl NotifyEvent {
    /// Every event routes can name, in the order the docs list them.
    pub const ALL: [NotifyEvent; 13] = [
        Self::Opened,
        Self::Escalated,
        Self::SlaBreached,
        Self::InfoAnswered,
        Self::InfoUnanswered,
        Self::ProviderRequest,
        Self::ProviderNotAsAgreed,
        Self::ProviderAnswered,
        Self::VerificationDue,
        Self::ProviderOverdue,
        Self::StaffNotice,
        Self::Flapping,
        Self::Reopened,
    ];

    /// The event a workflow notification is.
    pub fn of(kind: &NotificationKind) -> Self {
        match kind {
            NotificationKind::Escalated { .. } | NotificationKind::EscalationFromL3 => {
                Self::Escalated
            }
            NotificationKind::SlaBreached { .. } => Self::SlaBreached,
            NotificationKind::ProviderRequested => Self::ProviderRequest,
            NotificationKind::NetworkNotice { .. } => Self::StaffNotice,
            NotificationKind::ProviderNotAsAgreed => Self::ProviderNotAsAgreed,
            NotificationKind::ProviderAnswered { .. } => Self::ProviderAnswered,
            NotificationKind::VerificationDue => Self::VerificationDue,
            NotificationKind::ProviderOverdue { .. } => Self::ProviderOverdue,
            NotificationKind::Flapping => Self::Flapping,
            NotificationKind::Reopened => Self::Reopened,
            NotificationKind::InfoUnanswered => Self::InfoUnanswered,
        }
    }

    /// Its name in routes and the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Escalated => "escalated",
            Self::SlaBreached => "sla_breached",
            Self::InfoAnswered => "info_answered",
            Self::InfoUnanswered => "info_unanswered",
            Self::ProviderRequest => "provider_request",
            Self::ProviderNotAsAgreed => "provider_not_as_agreed",
            Self::ProviderAnswered => "provider_answered",
            Self::VerificationDue => "verification_due",
            Self::ProviderOverdue => "provider_overdue",
            Self::StaffNotice => "staff_notice",
            Self::Flapping => "flapping",
            Self::Reopened => "reopened",
            Self::Digest => "digest",
        }
    }

    /// Whether the event says a fault is back: opened, reopened, flapping. A recipient
    /// told of one of these about a fault is not told again of that fault's returns for
    /// the digest's period; they go in its digest instead.
    pub fn is_recurrence(self) -> bool {
        matches!(self, Self::Opened | Self::Reopened | Self::Flapping)
    }
}

/// The language of a notification's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Español (the procedures' language).
    #[default]
    Es,
    /// English.
    En,
}

/// A channel a delivery goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Email through the configured relay.
    Email,
    /// A configured webhook, by name.
    Webhook,
}

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not sent yet, or to be tried again at `next_at`.
    Pending,
    /// Accepted by the relay or the webhook.
    Sent,
    /// Refused for good, or given up after the last attempt.
    Failed,
    /// A repeat of a fault this recipient was told of less than the digest's period ago:
    /// held until `next_at`, then sent in the recipient's digest.
    Held,
    /// Sent in the digest numbered `digest`.
    Digested,
}

/// One recipient of a notification and how its delivery went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Email or webhook.
    pub channel: Channel,
    /// The address, or the webhook's name.
    pub to: String,
    /// In which language.
    pub lang: Lang,
    /// Pending, sent or failed.
    pub state: DeliveryState,
    /// Attempts so far.
    pub attempts: u32,
    /// When to try (again), while pending.
    pub next_at: Millis,
    /// When it was sent, or failed for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<Millis>,
    /// The last failure, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The digest it went in, once digested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<u64>,
}

impl Delivery {
    /// A delivery to `to` not tried yet, due at `now`.
    pub fn pending(channel: Channel, to: &str, lang: Lang, now: Millis) -> Self {
        Self {
            channel,
            to: to.to_owned(),
            lang,
            state: DeliveryState::Pending,
            attempts: 0,
            next_at: now,
            done_at: None,
            error: None,
            digest: None,
        }
    }
}

/// A notification for people: written with the change that causes it, then routed and
/// delivered by the [`sender::NotifySender`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyEntry {
    /// Its number (the outbox's counter).
    pub id: u64,
    /// About which incident.
    pub incident: u64,
    /// What happened.
    pub event: NotifyEvent,
    /// The workflow's words for it (empty for an opening).
    pub text: String,
    /// The incident's one-line title then.
    pub title: String,
    /// Its device, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
    /// Its priority then, once diagnosed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Its level then.
    pub level: Level,
    /// The group working it then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The fault it is about (`disk_space /var`), for a fault's incident: what makes a
    /// notification a repeat of an earlier one. `None` for a user's report, whose every
    /// notification goes out on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// What a digest holds, oldest first (empty for every other notification).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<DigestItem>,
    /// The provider the workflow addressed it to (its request, its work not delivered as
    /// agreed): told too, at its service address and its contacts'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// When the change happened.
    pub at: Millis,
    /// Whether the routes have been applied (the recipients are then in `deliveries`).
    pub routed: bool,
    /// One per recipient.
    pub deliveries: Vec<Delivery>,
}

/// One held notification in a digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestItem {
    /// The notification held (its number).
    pub entry: u64,
    /// Its incident.
    pub incident: u64,
    /// What happened.
    pub event: NotifyEvent,
    /// The incident's title then.
    pub title: String,
    /// Its device, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
    /// When.
    pub at: Millis,
}

impl NotifyEntry {
    /// Whether nothing more will be sent for it (a held delivery is still to go, in a
    /// digest).
    pub fn finished(&self) -> bool {
        self.routed
            && self
                .deliveries
                .iter()
                .all(|d| !matches!(d.state, DeliveryState::Pending | DeliveryState::Held))
    }

    /// The key under which delivery `d` of this entry counts as a repeat: the recipient
    /// and the fault on its device, for the events that say a fault is back; `None` for
    /// everything that always goes out on its own.
    pub fn repeat_key(&self, d: &Delivery) -> Option<String> {
        let fault = self.fault.as_deref()?;
        if !self.event.is_recurrence() {
            return None;
        }
        let channel = match d.channel {
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        };
        Some(format!(
            "{channel}\u{1f}{}\u{1f}{}\u{1f}{fault}",
            d.to,
            self.device.as_ref().map_or("", |d| d.as_str())
        ))
    }

    /// The delivery's key, the same on every attempt: the mail's `Message-ID` (without
    /// its domain) and the webhook's `Idempotency-Key`.
    pub fn key(&self, delivery: usize) -> String {
        format!("vigia-{}-{}-{delivery}", self.incident, self.id)
    }

    /// When something of it is next due: `None` once finished.
    pub fn next_due(&self) -> Option<Millis> {
        if !self.routed {
            return Some(self.at);
        }
        self.deliveries
            .iter()
            .filter(|d| matches!(d.state, DeliveryState::Pending | DeliveryState::Held))
            .map(|d| d.next_at)
            .min()
    }
}

/// The digest for one recipient (`channel`, `to`, in `lang`) of every delivery to it
/// held in `held`: numbered by the store (`id` 0 here), due at `now`. `None` when none
/// of `held` has a held delivery to that recipient.
pub fn digest_of(
    held: &[NotifyEntry],
    channel: Channel,
    to: &str,
    lang: Lang,
    now: Millis,
) -> Option<NotifyEntry> {
    let mut items: Vec<DigestItem> = held
        .iter()
        .filter(|e| {
            e.deliveries
                .iter()
                .any(|d| d.state == DeliveryState::Held && d.channel == channel && d.to == to)
        })
        .map(|e| DigestItem {
            entry: e.id,
            incident: e.incident,
            event: e.event,
            title: e.title.clone(),
            device: e.device.clone(),
            at: e.at,
        })
        .collect();
    items.sort_by_key(|i| (i.at, i.entry));
    let first = items.first()?;
    Some(NotifyEntry {
        id: 0,
        incident: 0,
        event: NotifyEvent::Digest,
        text: String::new(),
        title: String::new(),
        device: first.device.clone(),
        priority: None,
        level: Level::L1,
        group: None,
        fault: None,
        at: now,
        routed: true,
        deliveries: vec![Delivery::pending(channel, to, lang, now)],
        items,
        provider: None,
    })
}

/// `held` with their deliveries to (`channel`, `to`) marked as sent in digest `id` at
/// `now`.
pub fn mark_digested(held: &mut [NotifyEntry], channel: Channel, to: &str, id: u64, now: Millis) {
    for e in held {
        for d in &mut e.deliveries {
            if d.state == DeliveryState::Held && d.channel == channel && d.to == to {
                d.state = DeliveryState::Digested;
                d.digest = Some(id);
                d.done_at = Some(now);
            }
        }
    }
}

/// The notifications a stored decision calls for: one per workflow notification, one for
/// an opening and one for an answer from the user. Their `id` is 0; the store numbers
/// them (and only reads its counter when there is one).
pub fn entries_of(d: &Decision, policy: &Policy, now: Millis) -> Vec<NotifyEntry> {
    let mut events: Vec<(NotifyEvent, String, Option<String>)> = Vec::new();
    if d.records.first().is_some_and(|r| r.seq == 0) {
        events.push((NotifyEvent::Opened, String::new(), None));
    }
    if let Some(r) = d.records.iter().find(|r| r.action == "info_received") {
        events.push((NotifyEvent::InfoAnswered, r.why.clone(), None));
    }
    for m in &d.messages {
        if let crate::workflow::Outgoing::Notify(n) = m {
            let event = NotifyEvent::of(&n.kind);
            let provider = match &n.audience {
                crate::workflow::Audience::Provider(p) => Some(p.clone()),
                _ => None,
            };
            // The same news for the staff and for the provider is one entry, told to
            // both: two would mail the staff twice.
            if let Some(same) = events.iter_mut().find(|(e, _, _)| *e == event) {
                if same.2.is_none() {
                    same.2 = provider;
                }
                continue;
            }
            events.push((event, n.text.clone(), provider));
        }
    }
    if events.is_empty() {
        return Vec::new();
    }
    let s = IncidentSummary::of(&d.incident, policy);
    events
        .into_iter()
        .map(|(event, text, provider)| NotifyEntry {
            id: 0,
            incident: s.number,
            event,
            text,
            title: s.title.clone(),
            device: s.device.clone(),
            priority: s.priority,
            level: s.level,
            group: s.group.clone(),
            fault: (s.origin == "fault").then(|| format!("{} {}", s.kind, s.subject)),
            items: Vec::new(),
            provider,
            at: now,
            routed: false,
            deliveries: Vec::new(),
        })
        .collect()
}

/// `[notify]`: where notifications go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// The language of the texts, unless a route says otherwise (`es` or `en`).
    pub lang: Lang,
    /// The console's address as people open it (`https://vigia.example.org`): each
    /// notification links to its incident.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_url: Option<String>,
    /// The first retry of a temporary failure waits this long, each next one twice as
    /// long up to `retry_max`.
    pub retry_first: crate::workflow::Dur,
    /// The longest wait between retries.
    pub retry_max: crate::workflow::Dur,
    /// A delivery still failing after this many attempts is given up (and shown failed).
    pub max_attempts: u32,
    /// The quiet digest: once a recipient is told a fault opened, came back or is
    /// flapping, its further returns on that device within this period are held and
    /// sent together in one digest at the period's end, instead of one message each.
    /// `0s` sends every one on its own.
    pub digest: crate::workflow::Dur,
    /// The mail relay, if notifications go by email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailConfig>,
    /// Webhooks, each with a name routes use.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub webhook: Vec<WebhookConfig>,
    /// Who gets what: every matching route adds its recipients (each once).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteConfig>,
}

impl Default for NotifyConfig {
    /// The defaults for retries, with no channel and no route.
    fn default() -> Self {
        Self {
            lang: Lang::Es,
            console_url: None,
            retry_first: crate::workflow::Dur(30_000),
            retry_max: crate::workflow::Dur(3_600_000),
            max_attempts: 20,
            digest: crate::workflow::Dur(3_600_000),
            email: None,
            webhook: Vec::new(),
            route: Vec::new(),
        }
    }
}

/// How the connection to the relay is secured; there is no plain-text option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, refused if the relay does not offer it
    /// (submission, port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// `[notify.email]`: the mail relay.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The relay's host name, as its certificate names it.
    pub relay: String,
    /// Its port (587 for STARTTLS, 465 for TLS).
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// `starttls` or `tls`.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// PEM file with the CA(s) that signed the relay's certificate
    /// (`/etc/ssl/certs/ca-certificates.crt` for the system roots).
    pub ca_file: PathBuf,
    /// The sender, `Vigía <vigia@example.org>`.
    pub from: String,
    /// The relay's account, if it asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Its password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

fn default_smtp_port() -> u16 {
    587
}

impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field("relay", &self.relay)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("ca_file", &self.ca_file)
            .field("from", &self.from)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `[[notify.webhook]]`: a JSON POST to a chat or messaging gateway.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The name routes use (`webhook = ["chat"]`).
    pub name: String,
    /// `https://...` (plain `http://` only to this machine).
    pub url: String,
    /// Extra headers (a gateway's `Authorization`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// PEM file with the CA of the gateway's certificate, if not a public one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// `[[notify.route]]`: which notifications go to whom. Every list but `on` is a filter
/// that matches anything when empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The events (`opened`, `escalated`, `sla_breached`, `info_answered`,
    /// `info_unanswered`, `provider_request`, `provider_answered`, `verification_due`,
    /// `provider_not_as_agreed`, `provider_overdue`, `staff_notice`, `flapping`, `reopened`).
    pub on: Vec<NotifyEvent>,
    /// Only incidents at these priorities (`P1`...); an undiagnosed one matches none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub priorities: Vec<Priority>,
    /// Only incidents at these levels (1, 2, 3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<Level>,
    /// Only incidents of these groups; an unassigned one matches none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Email addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email: Vec<String>,
    /// The staff accounts holding one of these roles (`technician`, `service_desk`,
    /// `admin`, ...), at the address each keeps on its account: enabled ones with an
    /// address, and for an incident of a group only its members and those in no group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<crate::auth::AccountRole>,
    /// Webhook names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhook: Vec<String>,
    /// The texts' language for these recipients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<Lang>,
}

impl RouteConfig {
    /// Whether `e` is for this route.
    pub fn matches(&self, e: &NotifyEntry) -> bool {
        self.on.contains(&e.event)
            && (self.priorities.is_empty()
                || e.priority.is_some_and(|p| self.priorities.contains(&p)))
            && (self.levels.is_empty() || self.levels.contains(&e.level))
            && (self.groups.is_empty() || e.group.as_ref().is_some_and(|g| self.groups.contains(g)))
    }
}

/// Checks a `[notify]` section: every route names known webhooks and parseable
/// addresses, email routes have a relay, webhook URLs are https (or http to this
/// machine). Returns the field and the reason.
pub fn validate(c: &NotifyConfig) -> Result<(), (&'static str, String)> {
    if c.max_attempts == 0 {
        return Err(("notify.max_attempts", "must be at least 1".into()));
    }
    if c.retry_first.ms() == 0 || c.retry_max.ms() < c.retry_first.ms() {
        return Err((
            "notify.retry_first",
            "must be more than 0 and no more than notify.retry_max".into(),
        ));
    }
    if let Some(u) = &c.console_url {
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            return Err(("notify.console_url", format!("{u:?} is not an http(s) URL")));
        }
    }
    if let Some(e) = &c.email {
        if e.relay.trim().is_empty() {
            return Err(("notify.email.relay", "must not be empty".into()));
        }
        channel::mailbox(&e.from).map_err(|r| ("notify.email.from", r))?;
        if e.password.is_some() && e.username.is_none() {
            return Err((
                "notify.email.password",
                "is set but notify.email.username is not".into(),
            ));
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for w in &c.webhook {
        if w.name.is_empty() || !names.insert(w.name.as_str()) {
            return Err((
                "notify.webhook.name",
                format!("{:?}: each webhook needs its own non-empty name", w.name),
            ));
        }
        channel::check_webhook_url(&w.url).map_err(|r| ("notify.webhook.url", r))?;
    }
    for r in &c.route {
        if r.on.is_empty() {
            return Err(("notify.route.on", "name at least one event".into()));
        }
        if r.on.contains(&NotifyEvent::Digest) {
            return Err((
                "notify.route.on",
                "\"digest\" is not an event: a recipient's digest holds the repeats its routes sent it (notify.digest sets its period)".into(),
            ));
        }
        if r.email.is_empty() && r.webhook.is_empty() && r.accounts.is_empty() {
            return Err((
                "notify.route",
                "a route needs at least one email address, accounts' role or webhook".into(),
            ));
        }
        if !r.accounts.is_empty() && c.email.is_none() {
            return Err((
                "notify.route.accounts",
                "accounts are told by email: it needs a [notify.email] relay".into(),
            ));
        }
        if !r.email.is_empty() && c.email.is_none() {
            return Err((
                "notify.route.email",
                "email recipients need a [notify.email] relay".into(),
            ));
        }
        for a in &r.email {
            channel::mailbox(a).map_err(|r| ("notify.route.email", r))?;
        }
        for w in &r.webhook {
            if !names.contains(w.as_str()) {
                return Err((
                    "notify.route.webhook",
                    format!("{w:?} is not a [[notify.webhook]] name"),
                ));
            }
        }
    }
    Ok(())
}

/// The addresses of the `accounts` a route's roles name for `e`: enabled accounts with
/// an address holding one of `roles`; for an incident of a group, those of the group and
/// those in no group (a service desk that answers for all).
fn account_addresses<'a>(
    roles: &[crate::auth::AccountRole],
    e: &NotifyEntry,
    accounts: &'a [crate::auth::Account],
) -> impl Iterator<Item = &'a String> {
    let roles = roles.to_vec();
    let group = e.group.clone();
    accounts
        .iter()
        .filter(move |a| !a.disabled && roles.iter().any(|r| a.has(*r)))
        .filter(move |a| a.groups.is_empty() || group.as_ref().is_none_or(|g| a.groups.contains(g)))
        .filter_map(|a| a.email.as_ref())
}

/// Where the provider `name` is told: its service address, its contacts' and its
/// contact accounts' (enabled ones), each once.
pub fn provider_addresses(
    name: &str,
    provider: Option<&crate::providers::Provider>,
    accounts: &[crate::auth::Account],
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let registry = provider.into_iter().flat_map(|p| {
        p.email
            .iter()
            .chain(p.contacts.iter().filter_map(|c| c.email.as_ref()))
    });
    let contacts = accounts
        .iter()
        .filter(|a| {
            !a.disabled
                && a.has(crate::auth::AccountRole::Provider)
                && a.provider
                    .as_deref()
                    .is_some_and(|p| p.eq_ignore_ascii_case(name))
        })
        .filter_map(|a| a.email.as_ref());
    for a in registry.chain(contacts) {
        if channel::mailbox(a).is_ok() && !out.iter().any(|o| o.eq_ignore_ascii_case(a)) {
            out.push(a.clone());
        }
    }
    out
}

/// The recipients of `e` under `routes`, each once (the first route that names one
/// decides its language), due at `now`. `accounts` are the staff accounts, for routes
/// that name roles; `provider` the addresses of the provider the entry is addressed to
/// ([`provider_addresses`]), told by email in the default language when there is a relay.
pub fn route(
    e: &NotifyEntry,
    c: &NotifyConfig,
    accounts: &[crate::auth::Account],
    provider: &[String],
    now: Millis,
) -> Vec<Delivery> {
    let mut out: Vec<Delivery> = Vec::new();
    let to_provider = (c.email.is_some() && e.provider.is_some())
        .then_some((c.lang, provider))
        .into_iter()
        .flat_map(|(lang, p)| p.iter().map(move |a| (lang, Channel::Email, a)));
    let by_routes = c.route.iter().filter(|r| r.matches(e)).flat_map(|r| {
        let lang = r.lang.unwrap_or(c.lang);
        r.email
            .iter()
            .chain(account_addresses(&r.accounts, e, accounts))
            .map(move |a| (lang, Channel::Email, a))
            .chain(r.webhook.iter().map(move |w| (lang, Channel::Webhook, w)))
    });
    for (lang, channel, to) in by_routes.chain(to_provider) {
        if out.iter().any(|d| d.channel == channel && &d.to == to) {
            continue;
        }
        out.push(Delivery::pending(channel, to, lang, now));
    }
    out
}

/// Text from a device or a user, safe in a mail, a chat message or a terminal that
/// shows them: control characters (escape sequences among them) become spaces; line
/// breaks stay where `lines` is true.
pub fn clean(text: &str, lines: bool) -> String {
    text.chars()
        .map(|c| {
            if c == '\n' && lines {
                c
            } else if c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c) {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// A notification's subject line and body in `lang`.
pub fn render(e: &NotifyEntry, lang: Lang, console_url: Option<&str>) -> (String, String) {
    if e.event == NotifyEvent::Digest {
        return render_digest(e, lang, console_url);
    }
    let n = e.incident;
    let title = clean(&e.title, false);
    let es = lang == Lang::Es;
    let what = match (e.event, es) {
        (NotifyEvent::Opened, true) => format!("Incidencia {n} abierta"),
        (NotifyEvent::Opened, false) => format!("Incident {n} opened"),
        (NotifyEvent::Escalated, true) => format!("Incidencia {n} escalada"),
        (NotifyEvent::Escalated, false) => format!("Incident {n} escalated"),
        (NotifyEvent::SlaBreached, true) => format!("Incidencia {n}: plazo vencido"),
        (NotifyEvent::SlaBreached, false) => format!("Incident {n}: SLA breached"),
        (NotifyEvent::InfoAnswered, true) => format!("Incidencia {n}: el usuario respondió"),
        (NotifyEvent::InfoAnswered, false) => format!("Incident {n}: the user answered"),
        (NotifyEvent::InfoUnanswered, true) => {
            format!("Incidencia {n}: sin respuesta del usuario, vuelve a la mesa de servicio")
        }
        (NotifyEvent::InfoUnanswered, false) => {
            format!("Incident {n}: no answer from the user, back to the service desk")
        }
        (NotifyEvent::ProviderRequest, true) => format!("Incidencia {n}: servicio de proveedor"),
        (NotifyEvent::ProviderRequest, false) => format!("Incident {n}: provider service"),
        (NotifyEvent::ProviderNotAsAgreed, true) => {
            format!("Incidencia {n}: el proveedor no cumplió lo acordado")
        }
        (NotifyEvent::ProviderNotAsAgreed, false) => {
            format!("Incident {n}: the provider did not deliver as agreed")
        }
        (NotifyEvent::ProviderAnswered, true) => {
            format!("Incidencia {n}: respuesta del proveedor")
        }
        (NotifyEvent::ProviderAnswered, false) => format!("Incident {n}: the provider answered"),
        (NotifyEvent::VerificationDue, true) => {
            format!("Incidencia {n}: verificar el servicio del proveedor")
        }
        (NotifyEvent::VerificationDue, false) => {
            format!("Incident {n}: verify the provider's service")
        }
        (NotifyEvent::ProviderOverdue, true) => {
            format!("Incidencia {n}: el proveedor no cumplió el plazo del contrato")
        }
        (NotifyEvent::ProviderOverdue, false) => {
            format!("Incident {n}: the provider missed its contract's deadline")
        }
        (NotifyEvent::StaffNotice, true) => "Aviso al personal: trabajos en la red".to_string(),
        (NotifyEvent::StaffNotice, false) => "Notice to all staff: network work".to_string(),
        (NotifyEvent::Flapping, true) => format!("Incidencia {n}: la falla se repite"),
        (NotifyEvent::Flapping, false) => format!("Incident {n}: the fault keeps coming back"),
        (NotifyEvent::Reopened, true) => format!("Incidencia {n} reabierta"),
        (NotifyEvent::Reopened, false) => format!("Incident {n} reopened"),
        (NotifyEvent::Digest, _) => String::new(),
    };
    let priority = e.priority.map(|p| format!(" [{p:?}]")).unwrap_or_default();
    let subject = format!("{what}{priority}: {title}");
    let mut body = format!("{what}\n\n{title}\n");
    if !e.text.is_empty() {
        body.push('\n');
        body.push_str(&clean(&e.text, true));
        body.push('\n');
    }
    let none = if es { "sin asignar" } else { "unassigned" };
    let (device, level, group, prio) = if es {
        ("Equipo", "Nivel", "Grupo", "Prioridad")
    } else {
        ("Device", "Level", "Group", "Priority")
    };
    body.push('\n');
    if let Some(d) = &e.device {
        body.push_str(&format!("{device}: {d}\n"));
    }
    body.push_str(&format!(
        "{level}: {}\n{group}: {}\n",
        e.level.number(),
        e.group
            .as_deref()
            .map_or(none.to_string(), |g| clean(g, false)),
    ));
    if let Some(p) = e.priority {
        body.push_str(&format!("{prio}: {p:?}\n"));
    }
    if let Some(url) = console_url {
        body.push_str(&format!("\n{}/incidents/{n}\n", url.trim_end_matches('/')));
    }
    (subject, body)
}

/// What one held notification was, in `lang`, for a digest's line.
fn what_happened(event: NotifyEvent, es: bool) -> &'static str {
    match (event, es) {
        (NotifyEvent::Opened, true) => "abierta",
        (NotifyEvent::Opened, false) => "opened",
        (NotifyEvent::Reopened, true) => "reabierta",
        (NotifyEvent::Reopened, false) => "reopened",
        (NotifyEvent::Flapping, true) => "la falla se repite",
        (NotifyEvent::Flapping, false) => "the fault keeps coming back",
        (_, true) => "aviso",
        (_, false) => "notice",
    }
}

/// A digest's subject and body: one line per held notification, the incidents' links.
fn render_digest(e: &NotifyEntry, lang: Lang, console_url: Option<&str>) -> (String, String) {
    let es = lang == Lang::Es;
    let n = e.items.len();
    let mut incidents: Vec<u64> = e.items.iter().map(|i| i.incident).collect();
    incidents.sort_unstable();
    incidents.dedup();
    let subject = if es {
        format!(
            "Resumen: {n} avisos repetidos de {} incidencias",
            incidents.len()
        )
    } else {
        format!(
            "Digest: {n} repeated notifications about {} incidents",
            incidents.len()
        )
    };
    let mut body = if es {
        "Estas fallas volvieron después de un primer aviso; se agrupan aquí en lugar de un mensaje por cada vez.\n\n".to_string()
    } else {
        "These faults came back after a first notice; they are gathered here instead of one message each time.\n\n".to_string()
    };
    let inc = if es { "Incidencia" } else { "Incident" };
    for i in &e.items {
        body.push_str(&format!(
            "- {} {inc} {} {}: {} ({})\n",
            vigia_protocol::time::rfc3339(i.at),
            i.incident,
            what_happened(i.event, es),
            clean(&i.title, false),
            i.device.as_ref().map_or("-", |d| d.as_str()),
        ));
    }
    if let Some(url) = console_url {
        body.push('\n');
        for n in incidents {
            body.push_str(&format!("{}/incidents/{n}\n", url.trim_end_matches('/')));
        }
    }
    (subject, body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(event: NotifyEvent, priority: Option<Priority>, group: Option<&str>) -> NotifyEntry {
        NotifyEntry {
            id: 7,
            incident: 42,
            event,
            text: String::new(),
            title: "/var 98 % full\u{1b}[31m".into(),
            device: Some(DeviceId::new("ws-1").unwrap()),
            priority,
            level: Level::L1,
            group: group.map(String::from),
            fault: None,
            items: Vec::new(),
            provider: None,
            at: 1_000,
            routed: false,
            deliveries: Vec::new(),
        }
    }

    fn cfg(text: &str) -> NotifyConfig {
        let mut c: NotifyConfig = toml::from_str(text).unwrap();
        c.retry_first = crate::workflow::Dur(1_000);
        c.retry_max = crate::workflow::Dur(10_000);
        c.max_attempts = 3;
        c
    }

    const ROUTES: &str = r#"
        [email]
        relay = "smtp.example.org"
        ca_file = "/etc/ssl/certs/ca-certificates.crt"
        from = "Vigía <vigia@example.org>"
        [[webhook]]
        name = "chat"
        url = "https://chat.example.org/hook"
        [[route]]
        on = ["opened"]
        priorities = ["P1", "P2"]
        email = ["oncall@example.org"]
        webhook = ["chat"]
        [[route]]
        on = ["opened", "escalated"]
        groups = ["redes"]
        email = ["redes@example.org", "oncall@example.org"]
        lang = "en"
    "#;

    #[test]
    fn routes_pick_by_event_priority_and_group_each_recipient_once() {
        let c = cfg(ROUTES);
        validate(&c).unwrap();
        let to = |e: &NotifyEntry| {
            route(e, &c, &[], &[], 5)
                .into_iter()
                .map(|d| format!("{:?}:{}:{:?}", d.channel, d.to, d.lang))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            to(&entry(
                NotifyEvent::Opened,
                Some(Priority::P1),
                Some("redes")
            )),
            [
                "Email:oncall@example.org:Es",
                "Webhook:chat:Es",
                "Email:redes@example.org:En"
            ]
        );
        assert!(to(&entry(NotifyEvent::Opened, Some(Priority::P3), None)).is_empty());
        assert!(
            to(&entry(NotifyEvent::Opened, None, None)).is_empty(),
            "not diagnosed: no priority route matches"
        );
        assert_eq!(
            to(&entry(
                NotifyEvent::Escalated,
                Some(Priority::P1),
                Some("redes")
            )),
            ["Email:redes@example.org:En", "Email:oncall@example.org:En"]
        );
        assert!(to(&entry(
            NotifyEvent::SlaBreached,
            Some(Priority::P1),
            Some("redes")
        ))
        .is_empty());
    }

    #[test]
    fn routes_naming_roles_reach_the_enabled_accounts_of_the_group_at_their_address() {
        use crate::auth::{Account, AccountRole};
        let c = cfg(
            "[email]\nrelay = \"localhost\"\nca_file = \"/x\"\nfrom = \"vigia@example.org\"\n\
             [[route]]\non = [\"escalated\", \"staff_notice\"]\naccounts = [\"technician\"]\n\
             email = [\"jefa@example.org\"]",
        );
        assert_eq!(validate(&c), Ok(()));
        let account = |login: &str, email: Option<&str>, groups: &[&str], role| {
            let mut a = Account::new(login, [role], 0);
            a.email = email.map(str::to_string);
            a.groups = groups.iter().map(|g| g.to_string()).collect();
            a
        };
        let mut off = account("off", Some("off@example.org"), &[], AccountRole::Technician);
        off.disabled = true;
        let accounts = vec![
            account(
                "redes",
                Some("redes@example.org"),
                &["redes"],
                AccountRole::Technician,
            ),
            account(
                "hw",
                Some("hw@example.org"),
                &["hardware"],
                AccountRole::Technician,
            ),
            account("all", Some("all@example.org"), &[], AccountRole::Technician),
            account("none", None, &[], AccountRole::Technician),
            account(
                "desk",
                Some("desk@example.org"),
                &[],
                AccountRole::ServiceDesk,
            ),
            off,
            // Also named by the route: told once.
            account(
                "jefa",
                Some("jefa@example.org"),
                &[],
                AccountRole::Technician,
            ),
        ];
        let to = |e: &NotifyEntry| {
            route(e, &c, &accounts, &[], 5)
                .into_iter()
                .map(|d| d.to)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            to(&entry(
                NotifyEvent::Escalated,
                Some(Priority::P2),
                Some("redes")
            )),
            ["jefa@example.org", "redes@example.org", "all@example.org"]
        );
        assert_eq!(
            to(&entry(NotifyEvent::StaffNotice, None, None)),
            [
                "jefa@example.org",
                "redes@example.org",
                "hw@example.org",
                "all@example.org"
            ]
        );
        let no_relay = cfg("[[route]]\non = [\"opened\"]\naccounts = [\"admin\"]");
        assert_eq!(validate(&no_relay).unwrap_err().0, "notify.route.accounts");

        // Addressed to a provider: its service address, its contacts' and its contact
        // accounts', each once, besides the routes' recipients.
        let mut redes = account(
            "redes",
            Some("tecnico@redes.example"),
            &[],
            AccountRole::Provider,
        );
        redes.provider = Some("Redes SAS".into());
        let mut other = account(
            "otro",
            Some("otro@otro.example"),
            &[],
            AccountRole::Provider,
        );
        other.provider = Some("Otro".into());
        let registry: crate::providers::Provider = serde_json::from_value(serde_json::json!({
            "name": "Redes SAS", "email": "mesa@redes.example",
            "contacts": [{"name": "Luis", "email": "TECNICO@redes.example"}, {"name": "Sin correo"}],
        }))
        .unwrap();
        let staff_and_contacts = [accounts.clone(), vec![redes, other]].concat();
        let addresses = provider_addresses("redes sas", Some(&registry), &staff_and_contacts);
        assert_eq!(addresses, ["mesa@redes.example", "TECNICO@redes.example"]);
        let mut e = entry(NotifyEvent::Escalated, Some(Priority::P2), Some("redes"));
        assert!(!to(&e).iter().any(|a| a.contains("redes.example")));
        e.provider = Some("Redes SAS".into());
        let got: Vec<String> = route(&e, &c, &accounts, &addresses, 5)
            .into_iter()
            .map(|d| d.to)
            .collect();
        assert_eq!(
            got,
            [
                "jefa@example.org",
                "redes@example.org",
                "all@example.org",
                "mesa@redes.example",
                "TECNICO@redes.example"
            ]
        );
    }

    #[test]
    fn bad_routes_are_refused_with_their_field() {
        let field = |extra: &str| validate(&cfg(&format!("{ROUTES}\n{extra}"))).unwrap_err().0;
        assert_eq!(
            field("[[route]]\non = [\"opened\"]\nwebhook = [\"nope\"]"),
            "notify.route.webhook"
        );
        assert_eq!(
            field("[[route]]\non = [\"opened\"]\nemail = [\"not an address\"]"),
            "notify.route.email"
        );
        assert_eq!(
            field("[[route]]\non = []\nemail = [\"a@b.org\"]"),
            "notify.route.on"
        );
        assert_eq!(
            field("[[webhook]]\nname = \"x\"\nurl = \"http://chat.example.org/\""),
            "notify.webhook.url"
        );
        let no_relay = cfg("[[route]]\non = [\"opened\"]\nemail = [\"a@b.org\"]");
        assert_eq!(validate(&no_relay).unwrap_err().0, "notify.route.email");
        assert!(toml::from_str::<NotifyConfig>("[[route]]\non = [\"bogus\"]\nemail = []").is_err());
    }

    #[test]
    fn texts_come_in_both_languages_without_control_characters() {
        let mut e = entry(NotifyEvent::Escalated, Some(Priority::P2), None);
        e.text = "de nivel 1 a 2\u{1b}]8;;http://x\u{7}".into();
        let (s, b) = render(&e, Lang::Es, Some("https://vigia.example.org/"));
        assert_eq!(s, "Incidencia 42 escalada [P2]: /var 98 % full [31m");
        assert!(
            b.contains("Equipo: ws-1\nNivel: 1\nGrupo: sin asignar\nPrioridad: P2"),
            "{b}"
        );
        assert!(b.contains("https://vigia.example.org/incidents/42"), "{b}");
        assert!(!b.chars().any(|c| c.is_control() && c != '\n'), "{b:?}");
        let (s, b) = render(&e, Lang::En, None);
        assert!(s.starts_with("Incident 42 escalated [P2]"), "{s}");
        assert!(b.contains("Group: unassigned"), "{b}");
    }

    #[test]
    fn only_a_faults_returns_are_repeats_and_each_recipient_has_its_own() {
        let c = cfg(ROUTES);
        let mut e = entry(NotifyEvent::Opened, Some(Priority::P1), Some("redes"));
        let d = route(&e, &c, &[], &[], 5);
        assert!(
            d.iter().all(|d| e.repeat_key(d).is_none()),
            "a user's report is never a repeat"
        );
        e.fault = Some("disk_space /var".into());
        let keys: Vec<String> = d.iter().filter_map(|d| e.repeat_key(d)).collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert_eq!(
            keys.iter().collect::<std::collections::BTreeSet<_>>().len(),
            3,
            "one key per recipient: {keys:?}"
        );
        for ev in [NotifyEvent::Reopened, NotifyEvent::Flapping] {
            e.event = ev;
            assert_eq!(e.repeat_key(&d[0]), Some(keys[0].clone()), "{ev:?}");
        }
        for ev in [
            NotifyEvent::Escalated,
            NotifyEvent::SlaBreached,
            NotifyEvent::ProviderRequest,
        ] {
            e.event = ev;
            assert_eq!(
                e.repeat_key(&d[0]),
                None,
                "{ev:?} always goes out on its own"
            );
        }
        let mut other = e.clone();
        other.event = NotifyEvent::Opened;
        other.device = Some(DeviceId::new("ws-2").unwrap());
        assert_ne!(other.repeat_key(&d[0]), Some(keys[0].clone()));
        assert_eq!(
            validate(&cfg(&format!(
                "{ROUTES}\n[[route]]\non = [\"digest\"]\nwebhook = [\"chat\"]"
            )))
            .unwrap_err()
            .0,
            "notify.route.on"
        );
    }

    #[test]
    fn a_digest_gathers_one_recipients_held_deliveries_and_marks_them() {
        let c = cfg(ROUTES);
        let mut held = Vec::new();
        for (id, (incident, event, at)) in [
            (3, NotifyEvent::Reopened, 3_000),
            (4, NotifyEvent::Flapping, 2_000),
            (3, NotifyEvent::Reopened, 4_000),
        ]
        .into_iter()
        .enumerate()
        {
            let mut e = entry(event, Some(Priority::P1), None);
            e.id = id as u64 + 10;
            e.incident = incident;
            e.at = at;
            e.fault = Some("disk_space /var".into());
            // The deliveries an opening gets (the test's routes name only openings).
            e.deliveries = route(
                &entry(NotifyEvent::Opened, Some(Priority::P1), None),
                &c,
                &[],
                &[],
                at,
            );
            e.routed = true;
            // Held for the mail, sent on its own to the chat.
            e.deliveries[0].state = DeliveryState::Held;
            e.deliveries[1].state = DeliveryState::Sent;
            held.push(e);
        }
        assert!(!held[0].finished(), "a held delivery is still to go");
        assert!(
            digest_of(&held, Channel::Webhook, "chat", Lang::Es, 9).is_none(),
            "nothing is held for the chat"
        );
        let d = digest_of(&held, Channel::Email, "oncall@example.org", Lang::En, 9_000).unwrap();
        assert_eq!(d.event, NotifyEvent::Digest);
        assert_eq!(
            d.items.iter().map(|i| (i.entry, i.at)).collect::<Vec<_>>(),
            [(11, 2_000), (10, 3_000), (12, 4_000)],
            "oldest first"
        );
        assert_eq!(d.deliveries.len(), 1);
        assert_eq!(d.deliveries[0].to, "oncall@example.org");
        let (subject, body) = render(&d, Lang::En, Some("https://vigia.example.org"));
        assert_eq!(
            subject,
            "Digest: 3 repeated notifications about 2 incidents"
        );
        assert!(
            body.contains("Incident 3 reopened: /var 98 % full [31m (ws-1)"),
            "{body}"
        );
        assert!(
            body.contains("Incident 4 the fault keeps coming back"),
            "{body}"
        );
        assert!(
            body.contains("https://vigia.example.org/incidents/3\n"),
            "{body}"
        );
        assert!(
            !body.chars().any(|c| c.is_control() && c != '\n'),
            "{body:?}"
        );
        let (subject, _) = render(&d, Lang::Es, None);
        assert_eq!(subject, "Resumen: 3 avisos repetidos de 2 incidencias");

        mark_digested(&mut held, Channel::Email, "oncall@example.org", 77, 9_000);
        assert!(held.iter().all(NotifyEntry::finished));
        assert!(held
            .iter()
            .all(|e| e.deliveries[0].state == DeliveryState::Digested
                && e.deliveries[0].digest == Some(77)
                && e.deliveries[1].digest.is_none()));
    }

    #[test]
    fn an_entry_is_due_until_every_delivery_is_sent_or_failed() {
        let c = cfg(ROUTES);
        let mut e = entry(NotifyEvent::Opened, Some(Priority::P1), None);
        assert_eq!(e.next_due(), Some(1_000));
        e.deliveries = route(&e, &c, &[], &[], 5);
        e.routed = true;
        assert_eq!(e.next_due(), Some(5));
        e.deliveries[0].state = DeliveryState::Sent;
        e.deliveries[1].next_at = 9;
        assert_eq!(e.next_due(), Some(9));
        assert!(!e.finished());
        e.deliveries[1].state = DeliveryState::Failed;
        assert!(e.finished());
        assert_eq!(e.next_due(), None);
        assert_eq!(e.key(1), "vigia-42-7-1");
    }
}
