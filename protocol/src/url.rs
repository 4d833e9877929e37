//! The one broker-URL parser, for the agent's and the collector's `[mqtt] url`.
//!
//! Only `scheme://host[:port]` is accepted: credentials go in their own config fields
//! (never in a URL that ends up in logs), and a path, query or fragment would mean nothing
//! to an MQTT broker, so they are refused rather than ignored.
use alloc::format;
use alloc::string::{String, ToString};
use core::fmt;

/// Where a broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address (an IPv6 address without its brackets).
    pub host: String,
    /// Port (default 1883, or 8883 with TLS).
    pub port: u16,
    /// `mqtts://` or `ssl://`.
    pub tls: bool,
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (`tcp://` and `ssl://` too).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?} is not a URL; expected mqtt://host:port"))?;
        let tls = match scheme {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => {
                return Err(format!(
                    "scheme {other:?} is not supported; use mqtt:// or mqtts://"
                ))
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "{url:?}: only scheme://host:port is accepted (credentials go in mqtt.username/password)"
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("{url:?}: unexpected text after ']'")),
            };
            (host, port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let port = match port {
            None if tls => 8883,
            None => 1883,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(format!("{url:?}: port {p:?} is not 1-65535")),
                Ok(p) => p,
            },
        };
        Ok(Self {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let b = |u: &str| BrokerUrl::parse(u).unwrap();
        assert_eq!(
            b("mqtt://broker"),
            BrokerUrl {
                host: "broker".into(),
                port: 1883,
                tls: false
            }
        );
        assert_eq!(b("mqtts://broker").port, 8883);
        assert_eq!(b("ssl://b:9999/").port, 9999);
        assert!(!b("tcp://10.0.0.1:1884").tls);
        assert_eq!(b("mqtt://[::1]:1884").host, "::1");
        assert_eq!(b("mqtt://[::1]:1884").to_string(), "mqtt://[::1]:1884");
        assert_eq!(b("mqtts://broker").to_string(), "mqtts://broker:8883");
        for bad in [
            "broker:1883",
            "http://broker",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://b:0",
            "mqtt://b:99999",
            "mqtt://u:p@b",
            "mqtt://b/path",
            "mqtt://b?x=1",
            "mqtt://b#frag",
            "mqtt://[::1",
            "mqtt://[::1]x",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
