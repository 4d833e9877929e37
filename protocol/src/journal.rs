//! Logging to systemd's journal with structured fields: under a unit whose stderr is the
//! journal (`$JOURNAL_STREAM` names stderr's device and inode, as systemd documents), each
//! tracing event becomes one datagram of the journal's native protocol to
//! `/run/systemd/journal/socket`, with `PRIORITY` from its level and every field as a
//! field of its own (`device = %id` is `DEVICE=ws-0042`), so `journalctl -u vigia-agent
//! DEVICE=ws-0042` or `-p warning` select on them. `MESSAGE` keeps the text the terminal
//! shows (the message, then `key=value`), so a plain `journalctl` reads as before.
//! A few lines here rather than libsystemd or a crate; outside a unit both programs keep
//! writing text to stderr. A datagram the journal refuses (too large, socket gone) is
//! dropped: logging never stops the service.
use std::fmt::Write as _;
use std::format;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Where journald receives native-protocol datagrams.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Whether stderr is the journal: `$JOURNAL_STREAM` is `DEVICE:INODE` of the stream
/// systemd connected, and stderr is still that stream (not redirected by a shell).
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(st) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    stream_matches(&value.to_string_lossy(), st.st_dev, st.st_ino)
}

/// `$JOURNAL_STREAM`'s `DEVICE:INODE` against a file's device and inode.
pub fn stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.split_once(':') else {
        return false;
    };
    d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
}

/// A journal field name from a tracing field name: upper case, `[A-Z0-9_]` only, not
/// starting with `_` (trusted fields journald sets itself) or a digit, at most 64 bytes.
fn field_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' => c.to_ascii_uppercase(),
            'A'..='Z' | '0'..='9' => c,
            _ => '_',
        })
        .collect();
    if out.starts_with(|c: char| c == '_' || c.is_ascii_digit()) {
        out.insert(0, 'F');
    }
    out.truncate(64);
    out
}

/// One entry in the native protocol: `NAME=value\n`, or, for a value with a newline,
/// `NAME\n`, its length as 64-bit little endian, the value, `\n`.
pub fn encode(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend_from_slice(name.as_bytes());
        if value.contains('\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            out.push(b'=');
        }
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}

/// syslog's priority for a tracing level (`journalctl -p`).
fn priority(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "6",
        _ => "7",
    }
}

/// The tracing layer that writes each event to the journal.
pub struct JournalLayer {
    sock: UnixDatagram,
    path: PathBuf,
    identifier: String,
}

impl JournalLayer {
    /// A layer sending to journald's socket, entries tagged `SYSLOG_IDENTIFIER=identifier`.
    pub fn new(identifier: &str) -> io::Result<Self> {
        Self::with_socket(identifier, Path::new(JOURNAL_SOCKET))
    }

    /// A layer sending to the socket at `path` (tests bind their own).
    pub fn with_socket(identifier: &str, path: &Path) -> io::Result<Self> {
        let sock = UnixDatagram::unbound()?;
        // Fail here, where the caller can fall back to stderr, not at every event.
        sock.connect(path)?;
        Ok(Self {
            sock,
            path: path.to_path_buf(),
            identifier: identifier.to_string(),
        })
    }
}

/// The event's message and fields, collected.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.rest
                .push((field.name().to_string(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.rest
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let mut message = fields.message;
        for (k, v) in &fields.rest {
            let _ = write!(message, " {k}={v}");
        }
        let names: Vec<String> = fields.rest.iter().map(|(k, _)| field_name(k)).collect();
        let mut entry: Vec<(&str, &str)> = vec![
            ("MESSAGE", message.as_str()),
            ("PRIORITY", priority(meta.level())),
            ("SYSLOG_IDENTIFIER", self.identifier.as_str()),
            ("TARGET", meta.target()),
        ];
        for (name, (_, value)) in names.iter().zip(&fields.rest) {
            // A field may not take the place of the ones above.
            if !matches!(
                name.as_str(),
                "MESSAGE" | "PRIORITY" | "SYSLOG_IDENTIFIER" | "TARGET"
            ) {
                entry.push((name.as_str(), value.as_str()));
            }
        }
        let _ = self.sock.send(&encode(&entry));
    }
}

impl std::fmt::Debug for JournalLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalLayer")
            .field("socket", &self.path)
            .field("identifier", &self.identifier)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::{assert, assert_eq};
    use tracing_subscriber::layer::SubscriberExt;

    /// The native protocol's fields of one datagram, as journald parses them.
    fn parse(mut buf: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let nl = buf.iter().position(|&b| b == b'\n').unwrap();
            let line = &buf[..nl];
            if let Some(eq) = line.iter().position(|&b| b == b'=') {
                out.push((
                    String::from_utf8(line[..eq].to_vec()).unwrap(),
                    String::from_utf8(line[eq + 1..].to_vec()).unwrap(),
                ));
                buf = &buf[nl + 1..];
            } else {
                let name = String::from_utf8(line.to_vec()).unwrap();
                let len = u64::from_le_bytes(buf[nl + 1..nl + 9].try_into().unwrap()) as usize;
                let value = &buf[nl + 9..nl + 9 + len];
                assert_eq!(buf[nl + 9 + len], b'\n');
                out.push((name, String::from_utf8(value.to_vec()).unwrap()));
                buf = &buf[nl + 10 + len..];
            }
        }
        out
    }

    #[test]
    fn an_event_arrives_with_its_fields_and_priority() {
        let dir = std::env::temp_dir().join(format!("vigia-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("socket");
        let _ = std::fs::remove_file(&path);
        let journal = UnixDatagram::bind(&path).unwrap();
        let layer = JournalLayer::with_socket("vigia-test", &path).unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(device = %"ws-0042", seq = 7, "event refused");
            tracing::info!(reason = "two\nlines", "multi");
        });
        let mut buf = vec![0u8; 65536];
        let n = journal.recv(&mut buf).unwrap();
        let got = parse(&buf[..n]);
        let get = |k: &str| got.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("MESSAGE"), Some("event refused device=ws-0042 seq=7"));
        assert_eq!(get("PRIORITY"), Some("4"));
        assert_eq!(get("SYSLOG_IDENTIFIER"), Some("vigia-test"));
        assert_eq!(get("DEVICE"), Some("ws-0042"));
        assert_eq!(get("SEQ"), Some("7"));
        assert!(get("TARGET").is_some_and(|t| t.contains("journal")));
        let n = journal.recv(&mut buf).unwrap();
        let got = parse(&buf[..n]);
        assert!(
            got.contains(&("REASON".into(), "two\nlines".into())),
            "{got:?}"
        );
        assert!(got.contains(&("PRIORITY".into(), "6".into())), "{got:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn field_names_are_what_the_journal_accepts() {
        assert_eq!(field_name("device"), "DEVICE");
        assert_eq!(field_name("log.target"), "LOG_TARGET");
        assert_eq!(field_name("_uid"), "F_UID");
        assert_eq!(field_name("0x"), "F0X");
        assert_eq!(field_name(&"a".repeat(100)).len(), 64);
    }

    #[test]
    fn journal_stream_is_matched_on_device_and_inode() {
        assert!(stream_matches("8:12345", 8, 12345));
        assert!(!stream_matches("8:12345", 8, 12346));
        assert!(!stream_matches("8", 8, 12345));
        assert!(!stream_matches("", 0, 0));
    }

    #[test]
    fn no_journal_socket_is_an_error_at_start_not_at_each_event() {
        assert!(JournalLayer::with_socket("x", Path::new("/nonexistent/journal")).is_err());
    }
}
