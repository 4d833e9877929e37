//! The HTTP client of a running collector's API.
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::config::DEFAULT_HTTP_LISTEN;
use crate::workflow::Command;

/// A client of the running collector's API.
pub(super) struct ApiClient {
    pub(super) base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl ApiClient {
    /// A client of the API at `base` (`http://127.0.0.1:8790`) sending `token`, trusting
    /// the public roots, or only the CAs in `ca` (PEM) when given.
    pub(super) fn new(
        base: &str,
        token: Option<String>,
        ca: Option<&[u8]>,
    ) -> anyhow::Result<Self> {
        use ureq::tls::{Certificate, RootCerts, TlsConfig};
        let roots = match ca {
            None => RootCerts::WebPki,
            Some(pem) => {
                let certs = ureq::tls::parse_pem(pem)
                    .filter_map(|i| match i {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                        Ok(_) => None,
                        Err(e) => Some(Err(e)),
                    })
                    .collect::<Result<Vec<Certificate<'static>>, _>>()
                    .context("cannot read the CA file")?;
                if certs.is_empty() {
                    bail!("the CA file holds no PEM certificate");
                }
                RootCerts::new_with_certs(&certs)
            }
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .build()
            .into();
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            agent,
            token,
        })
    }

    fn bearer(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    pub(super) fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(b) = self.bearer() {
            req = req.header("authorization", b);
        }
        self.answer(&url, req.call())
    }

    pub(super) fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send("POST", path, Some(body))
    }

    /// A request with a JSON body (or none) by `method`.
    pub(super) fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(b) = self.bearer() {
            req = req.header("authorization", b);
        }
        let resp = match body {
            Some(b) => {
                let req = req
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(b)?)
                    .context("cannot build the request")?;
                self.agent.run(req)
            }
            None => {
                let req = req.body(()).context("cannot build the request")?;
                self.agent.run(req)
            }
        };
        if method == "DELETE" {
            let (status, body) = self.read(&url, resp)?;
            if status >= 400 {
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                bail!("{}", error_text(&v, &body, status));
            }
            return Ok(Value::Null);
        }
        self.answer(&url, resp)
    }

    /// Posts a workflow command to incident `number`: the URL names it by its tag, the
    /// body carries its fields; the server records the token's account as who acted.
    pub(super) fn act(&self, number: u64, command: &Command) -> anyhow::Result<Value> {
        let Value::Object(mut body) = serde_json::to_value(command)? else {
            bail!("a workflow command did not encode as an object");
        };
        body.remove("command");
        self.post(
            &format!("/api/incidents/{number}/{}", command.name()),
            &Value::Object(body),
        )
    }

    /// Posts a text body (a CSV file) and reads the JSON answer.
    pub(super) fn post_text(
        &self,
        path: &str,
        content_type: &str,
        body: String,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = ureq::http::Request::builder()
            .method("POST")
            .uri(&url)
            .header("content-type", content_type);
        if let Some(b) = self.bearer() {
            req = req.header("authorization", b);
        }
        let req = req
            .body(body.into_bytes())
            .context("cannot build the request")?;
        let resp = self.agent.run(req);
        self.answer(&url, resp)
    }

    /// A text answer (the CSV export); errors still come as JSON.
    pub(super) fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(b) = self.bearer() {
            req = req.header("authorization", b);
        }
        let (status, body) = self.read(&url, req.call())?;
        if status >= 400 {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            bail!("{}", error_text(&v, &body, status));
        }
        Ok(body)
    }

    /// A JSON answer; an HTTP error is its `error` text.
    fn answer(
        &self,
        url: &str,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Value> {
        let (status, body) = self.read(url, resp)?;
        let v: Value = serde_json::from_str(&body)
            .with_context(|| format!("{url} answered HTTP {status} with non-JSON: {body:.200}"))?;
        if status >= 400 {
            bail!("{}", error_text(&v, "(no message)", status));
        }
        Ok(v)
    }

    /// The status and body of an answer, or a plain "nobody answers" when none came.
    fn read(
        &self,
        url: &str,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<(u16, String)> {
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
        Ok((status, body))
    }
}

/// An error answer as people read it, with what to do about a missing sign-in.
fn error_text(v: &Value, fallback: &str, status: u16) -> String {
    let msg = v["error"].as_str().unwrap_or(fallback);
    let hint = match (status, v["code"].as_str()) {
        (401, _) => "; sign in with `vigia-collector login` (or set VIGIA_TOKEN to an API token)",
        _ => "",
    };
    format!("{msg} (HTTP {status}){hint}")
}

/// The API base URL for a `[http] listen` address: an unspecified host (0.0.0.0, ::)
/// becomes loopback, and port 0 (known only to the running process) falls back to the
/// default address.
pub(super) fn api_from_listen(listen: &str, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    match listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.port() != 0 => {
            let host = if a.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else if a.is_ipv6() {
                format!("[{}]", a.ip())
            } else {
                a.ip().to_string()
            };
            format!("{scheme}://{host}:{}", a.port())
        }
        _ => format!("{scheme}://{DEFAULT_HTTP_LISTEN}"),
    }
}
