//! The local IPC socket: how `vigia-agent report`, `status` and `reply` talk to the
//! running agent, so the person at the keyboard needs no MQTT credentials.
//!
//! A Unix stream socket (default `agent.sock` in the data directory, `[ipc] socket` to
//! move it) carrying one JSON request line and one JSON response line per connection.
//! The socket is mode 0666 by default so every local user can report (the agent only
//! accepts the three requests below, each bounded); `[ipc] allow_all_users = false`
//! makes it 0660 (root and the agent's group). The reporter's login name comes from the
//! kernel (`SO_PEERCRED`), not from the client, so a report cannot claim to be someone
//! else. The trade-off: Unix-only, which is what the agent targets.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use vigia_protocol::{
    bounded, CmdBody, EventBody, OpenFault, Reply as ReplyBody, Urgency, UserReport,
};

use crate::config::Config;
use crate::link::{lock, now_ms, AgentState, LinkState};

/// Longest request line accepted.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a report request may wait for its incident number.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// What a user asks the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Connection state, spool depth, faults, reports and questions.
    Status,
    /// Send a problem report.
    Report {
        /// Category ("hardware", "network", "printer"...).
        category: String,
        /// One line.
        summary: String,
        /// Free text.
        text: String,
        /// How urgent.
        urgency: Urgency,
        /// How to reach the reporter.
        contact: String,
        /// How long to wait for the incident number, in ms (capped at 30 s).
        wait_ms: u64,
    },
    /// Answer the collector's question about an incident.
    Reply {
        /// The incident.
        incident: u64,
        /// The answer.
        text: String,
    },
}

/// A report this agent sent, and what the collector said about it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportView {
    /// The agent's number for it.
    pub report_id: u64,
    /// Its summary.
    pub summary: String,
    /// When it was sent (ms since the epoch).
    pub ts: u64,
    /// The incident number, once assigned.
    pub incident: Option<u64>,
    /// The incident's last known state.
    pub state: Option<String>,
    /// The last note from IT.
    pub note: Option<String>,
}

/// A question IT asked about an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    /// The incident.
    pub incident: u64,
    /// The question.
    pub question: String,
}

/// The answer to [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// The device id.
    pub device: String,
    /// Whether the agent is connected to the broker.
    pub connected: bool,
    /// Failed attempts since the last connection.
    pub attempts: u32,
    /// The last connection error.
    pub last_error: Option<String>,
    /// Events waiting for the collector's ack.
    pub spooled: usize,
    /// Events dropped because the spool was full, ever.
    pub dropped_total: u64,
    /// Faults open now.
    pub open_faults: Vec<OpenFault>,
    /// Reports sent by this agent, newest last.
    pub reports: Vec<ReportView>,
    /// Questions waiting for an answer.
    pub questions: Vec<Question>,
}

/// What the agent answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Status.
    Status(StatusView),
    /// The report is in the spool; `incident` when the collector answered in time.
    Reported {
        /// The agent's report number.
        report_id: u64,
        /// The event's seq.
        seq: u64,
        /// The incident number.
        incident: Option<u64>,
    },
    /// The reply is in the spool.
    Replied {
        /// The event's seq.
        seq: u64,
    },
    /// The request was refused.
    Error {
        /// Why.
        message: String,
    },
}

/// Client-side errors.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// Nobody listens on the socket.
    #[error("the agent is not running (no socket at {0})")]
    NotRunning(PathBuf),
    /// The socket exists but we may not use it.
    #[error("permission denied on {0}")]
    Denied(PathBuf),
    /// Reading or writing failed.
    #[error("ipc: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not understood.
    #[error("ipc: bad answer from the agent: {0}")]
    Protocol(String),
}

/// Why the socket could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("ipc socket {path}: {source}")]
pub struct BindError {
    /// The socket path.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// Sends one request to the agent listening on `socket` and reads its answer.
pub async fn request(socket: &Path, req: &Request) -> Result<Response, IpcError> {
    let stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e) => {
            return Err(match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    IpcError::NotRunning(socket.to_path_buf())
                }
                std::io::ErrorKind::PermissionDenied => IpcError::Denied(socket.to_path_buf()),
                _ => IpcError::Io(e),
            })
        }
    };
    let (rd, mut wr) = stream.into_split();
    let mut line = serde_json::to_vec(req).map_err(|e| IpcError::Protocol(e.to_string()))?;
    line.push(b'\n');
    wr.write_all(&line).await?;
    wr.flush().await?;
    let mut answer = String::new();
    BufReader::new(rd).read_line(&mut answer).await?;
    serde_json::from_str(&answer).map_err(|e| IpcError::Protocol(e.to_string()))
}

/// Reports sent and questions received, persisted in the agent's database so `status`
/// still shows them after a restart (trees `reports` and `questions`).
struct ReportsAndQuestions {
    reports: sled::Tree,
    questions: sled::Tree,
}

const MAX_REPORTS: usize = 20;

impl ReportsAndQuestions {
    fn open(db: &sled::Db) -> sled::Result<Self> {
        Ok(Self {
            reports: db.open_tree("reports")?,
            questions: db.open_tree("questions")?,
        })
    }

    fn put_report(&self, r: &ReportView) {
        let res = serde_json::to_vec(r)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                self.reports
                    .insert(r.report_id.to_be_bytes(), v)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = res {
            tracing::warn!(error = %e, "cannot record a report for status");
        }
        // Keep the newest MAX_REPORTS.
        while self.reports.len() > MAX_REPORTS {
            match self.reports.pop_min() {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }

    fn reports(&self) -> Vec<ReportView> {
        self.reports
            .iter()
            .values()
            .filter_map(|v| v.ok())
            .filter_map(|v| serde_json::from_slice(&v).ok())
            .collect()
    }

    fn update_reports(&self, f: impl Fn(&mut ReportView) -> bool) {
        for r in self.reports() {
            let mut r = r;
            if f(&mut r) {
                self.put_report(&r);
            }
        }
    }

    fn note_cmd(&self, body: &CmdBody) {
        match body {
            CmdBody::ReportAccepted {
                report_id,
                incident,
            } => self.update_reports(|v| {
                let hit = v.report_id == *report_id;
                if hit {
                    v.incident = Some(*incident);
                }
                hit
            }),
            CmdBody::IncidentState {
                incident,
                state,
                note,
            } => self.update_reports(|v| {
                let hit = v.incident == Some(*incident);
                if hit {
                    v.state = Some(state.to_string());
                    if !note.is_empty() {
                        v.note = Some(note.to_string());
                    }
                }
                hit
            }),
            CmdBody::RequestInfo { incident, question } => {
                if let Err(e) = self
                    .questions
                    .insert(incident.to_be_bytes(), question.as_bytes())
                {
                    tracing::warn!(error = %e, "cannot record a question for status");
                }
            }
            CmdBody::Recheck => {}
        }
    }

    fn answered(&self, incident: u64) {
        let _ = self.questions.remove(incident.to_be_bytes());
    }

    fn questions(&self) -> Vec<Question> {
        self.questions
            .iter()
            .filter_map(|kv| kv.ok())
            .filter_map(|(k, v)| {
                let k: [u8; 8] = k.as_ref().try_into().ok()?;
                Some(Question {
                    incident: u64::from_be_bytes(k),
                    question: String::from_utf8_lossy(&v).into_owned(),
                })
            })
            .collect()
    }
}

/// The listening side.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    shared: Arc<AgentState>,
    store: Arc<ReportsAndQuestions>,
    cmds: tokio::sync::broadcast::Receiver<vigia_protocol::Cmd>,
}

impl Server {
    /// Binds the socket (replacing a stale one left by a crash) and sets its mode.
    pub fn bind(cfg: &Config, shared: Arc<AgentState>) -> Result<Self, BindError> {
        use std::os::unix::fs::PermissionsExt;
        let path = cfg.socket.clone();
        let err = |source| BindError {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        if path.exists() {
            // A live agent answers; a stale socket from a crash refuses.
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another agent is listening here",
                )));
            }
            std::fs::remove_file(&path).map_err(err)?;
        }
        let store =
            ReportsAndQuestions::open(lock(&shared.spool).db()).map_err(|e| err(e.into()))?;
        // Subscribe before the link starts, so no command slips past.
        let cmds = shared.cmds.subscribe();
        let listener = UnixListener::bind(&path).map_err(err)?;
        let mode = if cfg.socket_world { 0o666 } else { 0o660 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
        tracing::info!(socket = %path.display(), mode = format!("{mode:o}"), "ipc socket listening");
        Ok(Self {
            listener,
            path,
            shared,
            store: Arc::new(store),
            cmds,
        })
    }

    /// Serves until `stop` turns true, then removes the socket file.
    pub async fn serve(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let mut pause = false;
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                c = self.cmds.recv() => {
                    if let Ok(cmd) = c {
                        self.store.note_cmd(&cmd.body);
                    }
                }
                a = self.listener.accept() => match a {
                    Ok((stream, _)) => {
                        let shared = Arc::clone(&self.shared);
                        let store = Arc::clone(&self.store);
                        tokio::spawn(async move {
                            if let Err(e) = handle(stream, shared, store).await {
                                tracing::debug!(error = %e, "ipc client");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "ipc accept failed");
                        pause = true;
                    }
                },
            }
            if pause {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The login name of a uid, from `/etc/passwd`.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        (f.next()?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

async fn handle(
    stream: UnixStream,
    shared: Arc<AgentState>,
    store: Arc<ReportsAndQuestions>,
) -> std::io::Result<()> {
    let reporter = stream
        .peer_cred()
        .ok()
        .and_then(|c| user_name(c.uid()).or_else(|| Some(format!("uid {}", c.uid()))))
        .unwrap_or_default();
    let (rd, mut wr) = stream.into_split();
    let mut line = Vec::new();
    let read = tokio::time::timeout(
        READ_TIMEOUT,
        BufReader::new(rd.take(MAX_REQUEST as u64)).read_until(b'\n', &mut line),
    )
    .await;
    let resp = match read {
        Err(_) => Response::Error {
            message: "request timed out".into(),
        },
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) => match serde_json::from_slice::<Request>(&line) {
            Ok(req) => answer(req, &reporter, &shared, &store).await,
            Err(e) => Response::Error {
                message: format!("bad request: {e}"),
            },
        },
    };
    let mut out = serde_json::to_vec(&resp).map_err(std::io::Error::other)?;
    out.push(b'\n');
    wr.write_all(&out).await?;
    wr.flush().await
}

async fn answer(
    req: Request,
    reporter: &str,
    shared: &AgentState,
    store: &ReportsAndQuestions,
) -> Response {
    match req {
        Request::Status => Response::Status(status(shared, store)),
        Request::Reply { incident, text } => {
            let body = EventBody::Reply(ReplyBody {
                incident,
                text: bounded(&text),
            });
            let pushed = lock(&shared.spool).push(now_ms(), body);
            match pushed {
                Ok(p) => {
                    shared.wake.notify_one();
                    // The question is answered: `status` stops showing it.
                    store.answered(incident);
                    tracing::info!(incident, seq = p.seq, "user reply spooled");
                    Response::Replied { seq: p.seq }
                }
                Err(e) => Response::Error {
                    message: e.to_string(),
                },
            }
        }
        Request::Report {
            category,
            summary,
            text,
            urgency,
            contact,
            wait_ms,
        } => {
            // The last pass's readings, never the detectors themselves: a pass may hold
            // them for as long as smartctl takes.
            let (snapshot, open_faults) = {
                let p = lock(&shared.pass);
                (p.snapshot.clone(), p.open_faults.clone())
            };
            let mut cmds = shared.cmds.subscribe();
            let ts = now_ms();
            let pushed = {
                let mut spool = lock(&shared.spool);
                let report_id = spool.next_seq();
                let body = EventBody::Report(UserReport {
                    report_id,
                    category: bounded(&category),
                    summary: bounded(&summary),
                    text: bounded(&text),
                    reporter: bounded(reporter),
                    contact: bounded(&contact),
                    urgency,
                    snapshot,
                    open_faults,
                });
                spool.push(ts, body).map(|p| (report_id, p))
            };
            let (report_id, p) = match pushed {
                Ok(x) => x,
                Err(e) => {
                    return Response::Error {
                        message: e.to_string(),
                    }
                }
            };
            store.put_report(&ReportView {
                report_id,
                summary,
                ts,
                ..ReportView::default()
            });
            shared.wake.notify_one();
            tracing::info!(report_id, seq = p.seq, reporter, "user report spooled");
            let wait = Duration::from_millis(wait_ms).min(MAX_WAIT);
            let incident = tokio::time::timeout(wait, async {
                loop {
                    match cmds.recv().await {
                        Ok(cmd) => {
                            if let CmdBody::ReportAccepted {
                                report_id: r,
                                incident,
                            } = cmd.body
                            {
                                if r == report_id {
                                    return Some(incident);
                                }
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return None,
                    }
                }
            })
            .await
            .ok()
            .flatten();
            if let Some(i) = incident {
                store.note_cmd(&CmdBody::ReportAccepted {
                    report_id,
                    incident: i,
                });
            }
            Response::Reported {
                report_id,
                seq: p.seq,
                incident,
            }
        }
    }
}

fn status(shared: &AgentState, store: &ReportsAndQuestions) -> StatusView {
    let (connected, attempts, last_error) = match &*lock(&shared.state) {
        LinkState::Connected { .. } => (true, 0, None),
        LinkState::Connecting {
            attempts,
            last_error,
        } => (false, *attempts, last_error.clone()),
        LinkState::Stopped => (false, 0, None),
    };
    let (spooled, dropped_total) = {
        let s = lock(&shared.spool);
        (s.len(), s.dropped_total())
    };
    let open_faults = lock(&shared.pass).open_faults.iter().cloned().collect();
    StatusView {
        device: shared.device.to_string(),
        connected,
        attempts,
        last_error,
        spooled,
        dropped_total,
        open_faults,
        reports: store.reports(),
        questions: store.questions(),
    }
}
