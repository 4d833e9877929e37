//! Sending one delivery: email through the relay (lettre, over rustls with the relay's CA
//! from the config) and JSON webhooks (ureq). Both are blocking calls with timeouts, run
//! on tokio's blocking pool by the sender.
use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use serde::Serialize;

use super::{EmailConfig, NotifyEntry, WebhookConfig};

/// How long a relay or a webhook gets to answer.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// How a send went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted.
    Sent,
    /// Worth trying again; `after` is the receiver's `Retry-After`, if it gave one.
    Temporary {
        /// Why, in words.
        error: String,
        /// The shortest wait the receiver asked for.
        after: Option<Duration>,
    },
    /// Refused for good.
    Permanent(String),
}

/// Parses an address (`a@b.org` or `Name <a@b.org>`).
pub fn mailbox(text: &str) -> Result<Mailbox, String> {
    text.parse::<Mailbox>()
        .map_err(|e| format!("{text:?} is not an email address: {e}"))
}

/// A webhook URL must be https, or http to this machine only (a gateway on loopback).
pub fn check_webhook_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!("{url:?} is not an https:// URL"));
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    if matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        Ok(())
    } else {
        Err(format!(
            "{url:?}: plain http is allowed only to this machine (127.0.0.1); use https://"
        ))
    }
}

/// The relay, ready to send: its TLS parameters and credentials are checked once.
pub struct Mailer {
    transport: SmtpTransport,
    from: Mailbox,
}

impl Mailer {
    /// Builds the transport for `c` (reads its CA file).
    pub fn new(c: &EmailConfig) -> Result<Self, String> {
        let pem = std::fs::read(&c.ca_file)
            .map_err(|e| format!("cannot read {}: {e}", c.ca_file.display()))?;
        let ca = Certificate::from_pem(&pem)
            .map_err(|e| format!("{}: not a PEM certificate: {e}", c.ca_file.display()))?;
        let tls = TlsParameters::builder(c.relay.clone())
            .certificate_store(lettre::transport::smtp::client::CertificateStore::None)
            .add_root_certificate(ca)
            .build()
            .map_err(|e| format!("TLS for {}: {e}", c.relay))?;
        let mut b = SmtpTransport::builder_dangerous(c.relay.as_str())
            .port(c.port)
            .timeout(Some(TIMEOUT))
            .tls(match c.security {
                super::SmtpSecurity::Starttls => Tls::Required(tls),
                super::SmtpSecurity::Tls => Tls::Wrapper(tls),
            });
        if let Some(user) = &c.username {
            b = b.credentials(Credentials::new(
                user.clone(),
                c.password.clone().unwrap_or_default(),
            ));
        }
        Ok(Self {
            transport: b.build(),
            from: mailbox(&c.from)?,
        })
    }

    /// Sends one mail; `key` becomes its `Message-ID`, the same on every attempt.
    pub fn send(&self, to: &str, subject: &str, body: &str, key: &str) -> Outcome {
        let to = match mailbox(to) {
            Ok(m) => m,
            Err(e) => return Outcome::Permanent(e),
        };
        let domain = self.from.email.domain().to_string();
        let msg = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(format!("<{key}@{domain}>")))
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_string());
        let msg = match msg {
            Ok(m) => m,
            Err(e) => return Outcome::Permanent(format!("cannot build the mail: {e}")),
        };
        match self.transport.send(&msg) {
            Ok(_) => Outcome::Sent,
            Err(e) if e.is_permanent() => Outcome::Permanent(format!("the relay refused it: {e}")),
            Err(e) => Outcome::Temporary {
                error: format!("{e}"),
                after: None,
            },
        }
    }
}

/// The JSON a webhook receives.
#[derive(Debug, Serialize)]
pub struct WebhookBody<'a> {
    /// The delivery's key (also the `Idempotency-Key` header).
    pub id: &'a str,
    /// What happened (`opened`, `escalated`...).
    pub event: &'static str,
    /// The incident's number (absent in a digest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<u64>,
    /// Its device (absent in a digest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<&'a str>,
    /// A digest's incidents, each once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub incidents: Vec<u64>,
    /// Its priority, once diagnosed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Its level.
    pub level: u8,
    /// Its group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<&'a str>,
    /// The subject line.
    pub subject: &'a str,
    /// Subject and body as one message, as chat gateways show it.
    pub text: String,
}

/// Posts one notification to a webhook.
pub fn post_webhook(
    w: &WebhookConfig,
    e: &NotifyEntry,
    key: &str,
    subject: &str,
    body: &str,
) -> Outcome {
    let digest = e.event == super::NotifyEvent::Digest;
    let payload = WebhookBody {
        id: key,
        event: e.event.name(),
        incident: (!digest).then_some(e.incident),
        device: e.device.as_ref().filter(|_| !digest).map(|d| d.as_str()),
        incidents: {
            let mut v: Vec<u64> = e.items.iter().map(|i| i.incident).collect();
            v.sort_unstable();
            v.dedup();
            v
        },
        priority: e.priority.map(|p| format!("{p:?}")),
        level: e.level.number(),
        group: e.group.as_deref(),
        subject,
        text: format!("{subject}\n\n{body}"),
    };
    let agent = match webhook_agent(w) {
        Ok(a) => a,
        Err(e) => return Outcome::Permanent(e),
    };
    let mut req = agent.post(&w.url).header("idempotency-key", key).header(
        "user-agent",
        concat!("vigia-collector/", env!("CARGO_PKG_VERSION")),
    );
    for (k, v) in &w.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    match req.send_json(&payload) {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let after = retry_after(
                resp.headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()),
            );
            classify(status, after)
        }
        Err(e) => Outcome::Temporary {
            error: format!("{e}"),
            after: None,
        },
    }
}

fn webhook_agent(w: &WebhookConfig) -> Result<ureq::Agent, String> {
    let mut b = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(TIMEOUT));
    if let Some(p) = &w.ca_file {
        let pem = std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(format!("{}: no PEM certificate in it", p.display()));
        }
        b = b.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build(),
        );
    }
    Ok(b.build().into())
}

/// What a webhook's answer means: 2xx sent; 408, 425, 429 and 5xx worth a retry; any
/// other status refused for good.
pub fn classify(status: u16, after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Sent,
        408 | 425 | 429 | 500..=599 => Outcome::Temporary {
            error: format!("the webhook answered {status}"),
            after,
        },
        _ => Outcome::Permanent(format!("the webhook answered {status}")),
    }
}

/// A `Retry-After` value: seconds, or an HTTP date (taken relative to now).
pub fn retry_after(value: Option<&str>) -> Option<Duration> {
    let v = value?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_answers_are_sent_retried_or_refused() {
        assert_eq!(classify(204, None), Outcome::Sent);
        assert!(matches!(
            classify(503, Some(Duration::from_secs(2))),
            Outcome::Temporary { after: Some(a), .. } if a == Duration::from_secs(2)
        ));
        assert!(matches!(classify(429, None), Outcome::Temporary { .. }));
        assert!(matches!(classify(404, None), Outcome::Permanent(_)));
        assert!(matches!(classify(301, None), Outcome::Permanent(_)));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO),
            "a date in the past: no wait"
        );
        assert_eq!(retry_after(Some("soon")), None);
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn webhooks_need_https_but_on_this_machine() {
        assert!(check_webhook_url("https://chat.example.org/x").is_ok());
        assert!(check_webhook_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_webhook_url("http://localhost/hook").is_ok());
        assert!(check_webhook_url("http://chat.example.org/hook").is_err());
        assert!(check_webhook_url("http://127.0.0.1.evil.org/hook").is_err());
        assert!(check_webhook_url("ftp://x").is_err());
    }
}
