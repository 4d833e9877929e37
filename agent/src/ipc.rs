//! The local IPC socket: how `vigia-agent report`, `status` and `reply` talk to the
//! running agent, so the person at the keyboard needs no MQTT credentials.
//!
//! A Unix stream socket (default `agent.sock` in the data directory, `[ipc] socket` to
//! move it) carrying one JSON request line and one JSON response line per connection.
//! `[ipc] access` says who may connect: `everyone` (0666, the default, so every local
//! user can report; the agent only accepts the three requests below, each bounded and
//! limited per user), `group` (0660, the socket's group set to `[ipc] group`, default
//! `vigia`; a missing group is an error at start) or `owner` (0600). The reporter's login
//! name comes from the kernel (`SO_PEERCRED`), not from the client, so a report cannot
//! claim to be someone else. The trade-off: Unix-only, which is what the agent targets.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use vigia_protocol::{
    bounded, CmdBody, EventBody, OpenFault, Reply as ReplyBody, Urgency, UserReport,
};

use crate::config::{Config, SocketAccess};
use crate::enrol::EnrolView;
use crate::link::{lock, now_ms, AgentState, LinkState};

/// Longest request line accepted.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a report request may wait for its incident number.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Reports one user may send in [`RATE_WINDOW`].
const MAX_REPORTS_PER_WINDOW: usize = 5;
/// Replies one user may send in [`RATE_WINDOW`].
const MAX_REPLIES_PER_WINDOW: usize = 20;
/// The window of the per-user limits.
const RATE_WINDOW: u64 = 10 * 60 * 1000;
/// Replies kept per incident: past this, IT has the user's attention by other means.
const MAX_REPLIES_PER_INCIDENT: u32 = 20;
/// The longest reply, in characters (the wire's limit).
const MAX_REPLY_CHARS: usize = 2000;

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
    /// Who sent it (the login the kernel gave for the socket's peer).
    #[serde(default)]
    pub reporter: String,
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
    /// Events kept in memory because the data directory cannot take them (a full disk);
    /// written, then delivered, once it can.
    #[serde(default)]
    pub held: usize,
    /// Events dropped because the spool was full, ever.
    pub dropped_total: u64,
    /// Faults open now.
    pub open_faults: Vec<OpenFault>,
    /// The asking user's reports, newest last (each user sees only their own).
    pub reports: Vec<ReportView>,
    /// Questions about the asking user's reports, waiting for an answer.
    pub questions: Vec<Question>,
    /// While the agent asks to join (self-enrolment), where its request stands; absent
    /// once it has its device account (and from agents that predate enrolment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolment: Option<EnrolView>,
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
        /// The report waits in memory: the disk is full.
        #[serde(default)]
        held: bool,
    },
    /// The reply is in the spool (or, `held`, waits in memory for a full disk).
    Replied {
        /// The event's seq.
        seq: u64,
        /// The reply waits in memory: the disk is full.
        #[serde(default)]
        held: bool,
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
/// still shows them after a restart (trees `reports`, `questions` and `replies`). Each
/// use opens its tree from the spool's database: a handle kept here would hold up the
/// reopen that follows a full disk. While the database is closed these are empty and
/// their writes are lost (logged); the events themselves wait in the spool's memory.
struct ReportsAndQuestions {
    shared: Arc<AgentState>,
}

const MAX_REPORTS: usize = 20;

impl ReportsAndQuestions {
    fn new(shared: Arc<AgentState>) -> Self {
        Self { shared }
    }

    fn tree(&self, name: &str) -> Option<sled::Tree> {
        let db = lock(&self.shared.spool).db().ok()?.clone();
        match db.open_tree(name) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(tree = name, error = %e, "cannot open the local socket's records");
                None
            }
        }
    }

    fn put_report(&self, r: &ReportView) {
        let Some(reports) = self.tree("reports") else {
            tracing::warn!("cannot record a report for status: the database is closed");
            return;
        };
        let res = serde_json::to_vec(r)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                reports
                    .insert(r.report_id.to_be_bytes(), v)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = res {
            tracing::warn!(error = %e, "cannot record a report for status");
        }
        // Keep the newest MAX_REPORTS.
        while reports.len() > MAX_REPORTS {
            match reports.pop_min() {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }

    fn reports(&self) -> Vec<ReportView> {
        let Some(reports) = self.tree("reports") else {
            return Vec::new();
        };
        reports
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
                let stored = self.tree("questions").map(|q| {
                    q.insert(incident.to_be_bytes(), question.as_bytes())
                        .map(|_| ())
                });
                if !matches!(stored, Some(Ok(()))) {
                    tracing::warn!(incident, "cannot record a question for status");
                }
            }
            CmdBody::Recheck => {}
        }
    }

    /// The incidents of `reporter`'s reports.
    fn incidents_of(&self, reporter: &str) -> Vec<u64> {
        self.reports()
            .into_iter()
            .filter(|r| r.reporter == reporter)
            .filter_map(|r| r.incident)
            .collect()
    }

    /// Counts one more reply on `incident`; `false` when it already has the most allowed.
    fn count_reply(&self, incident: u64) -> bool {
        let key = incident.to_be_bytes();
        let Some(replies) = self.tree("replies") else {
            // Cannot count while the database is closed: the rate limit still holds.
            return true;
        };
        let n = replies
            .get(key)
            .ok()
            .flatten()
            .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map_or(0, u32::from_be_bytes);
        if n >= MAX_REPLIES_PER_INCIDENT {
            return false;
        }
        if let Err(e) = replies.insert(key, &(n + 1).to_be_bytes()) {
            tracing::warn!(error = %e, "cannot count a reply");
        }
        true
    }

    fn answered(&self, incident: u64) {
        if let Some(q) = self.tree("questions") {
            let _ = q.remove(incident.to_be_bytes());
        }
    }

    fn questions(&self) -> Vec<Question> {
        let Some(questions) = self.tree("questions") else {
            return Vec::new();
        };
        questions
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
    limits: Arc<Mutex<RateLimit>>,
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
        let store = ReportsAndQuestions::new(Arc::clone(&shared));
        // Subscribe before the link starts, so no command slips past.
        let cmds = shared.cmds.subscribe();
        let gid = match &cfg.socket_access {
            SocketAccess::Group(g) => Some(group_id(g, Path::new("/etc/group")).map_err(err)?),
            _ => None,
        };
        let listener = UnixListener::bind(&path).map_err(err)?;
        // The group first, then the mode: never a moment when another group may connect.
        let applied = gid
            .map_or(Ok(()), |g| std::os::unix::fs::chown(&path, None, Some(g)))
            .and_then(|()| {
                std::fs::set_permissions(
                    &path,
                    std::fs::Permissions::from_mode(cfg.socket_access.mode()),
                )
            });
        if let Err(e) = applied {
            let _ = std::fs::remove_file(&path);
            return Err(err(e));
        }
        let mode = cfg.socket_access.mode();
        tracing::info!(socket = %path.display(), mode = format!("{mode:o}"), gid, "ipc socket listening");
        Ok(Self {
            listener,
            path,
            shared,
            store: Arc::new(store),
            limits: Arc::new(Mutex::new(RateLimit::default())),
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
                        let limits = Arc::clone(&self.limits);
                        tokio::spawn(async move {
                            if let Err(e) = handle(stream, shared, store, limits).await {
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

/// The id of group `name` (a name in `group_file`, normally `/etc/group`, or a number),
/// or an error saying how to create it.
fn group_id(name: &str, group_file: &Path) -> std::io::Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string(group_file).unwrap_or_default();
    let found = text.lines().find_map(|l| {
        let mut f = l.split(':');
        let n = f.next()?;
        let _pw = f.next()?;
        (n == name).then(|| f.next()?.parse::<u32>().ok()).flatten()
    });
    found.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "ipc.group: no group {name:?} in {} (create it with `groupadd --system {name}` \
                 and add the users who may report with `usermod -aG {name} USER`, give its \
                 number instead, or set ipc.access = \"everyone\")",
                group_file.display()
            ),
        )
    })
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
    limits: Arc<Mutex<RateLimit>>,
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
            Ok(req) => answer(req, &reporter, &shared, &store, &limits).await,
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

/// Refused, with a message for the user.
fn refuse(message: impl Into<String>) -> Response {
    Response::Error {
        message: message.into(),
    }
}

async fn answer(
    req: Request,
    reporter: &str,
    shared: &AgentState,
    store: &ReportsAndQuestions,
    limits: &Mutex<RateLimit>,
) -> Response {
    let now = now_ms();
    match req {
        Request::Status => Response::Status(status(shared, store, reporter)),
        Request::Reply { incident, text } => {
            if text.chars().count() > MAX_REPLY_CHARS {
                return refuse(format!(
                    "the reply is longer than {MAX_REPLY_CHARS} characters; shorten it"
                ));
            }
            // A user answers for their own reports only.
            if !store.incidents_of(reporter).contains(&incident) {
                return refuse(format!("incident {incident} is not one of your reports"));
            }
            if let Err(wait) = lock(limits).allow(Limit::Reply, reporter, now) {
                return refuse(format!(
                    "too many replies; try again in {} minutes",
                    wait.div_ceil(60_000)
                ));
            }
            if !store.count_reply(incident) {
                return refuse(format!(
                    "incident {incident} already has {MAX_REPLIES_PER_INCIDENT} replies; \
                     call IT instead"
                ));
            }
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
                    tracing::info!(incident, seq = p.seq, held = p.held, "user reply spooled");
                    Response::Replied {
                        seq: p.seq,
                        held: p.held,
                    }
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
            if let Err(wait) = lock(limits).allow(Limit::Report, reporter, now) {
                return refuse(format!(
                    "too many reports; try again in {} minutes",
                    wait.div_ceil(60_000)
                ));
            }
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
                reporter: reporter.to_owned(),
                summary,
                ts,
                ..ReportView::default()
            });
            shared.wake.notify_one();
            tracing::info!(
                report_id,
                seq = p.seq,
                held = p.held,
                reporter,
                "user report spooled"
            );
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
                held: p.held,
            }
        }
    }
}

fn status(shared: &AgentState, store: &ReportsAndQuestions, reporter: &str) -> StatusView {
    let (connected, attempts, last_error, enrolment) = match &*lock(&shared.state) {
        LinkState::Connected { .. } => (true, 0, None, None),
        LinkState::Connecting {
            attempts,
            last_error,
        } => (false, *attempts, last_error.clone(), None),
        LinkState::Enrolling {
            view,
            attempts,
            last_error,
        } => (false, *attempts, last_error.clone(), Some(view.clone())),
        LinkState::Stopped => (false, 0, None, None),
    };
    let (spooled, held, dropped_total) = {
        let s = lock(&shared.spool);
        (s.len(), s.held(), s.dropped_total())
    };
    let open_faults = lock(&shared.pass).open_faults.iter().cloned().collect();
    StatusView {
        device: shared.device.to_string(),
        connected,
        attempts,
        last_error,
        spooled,
        held,
        dropped_total,
        open_faults,
        reports: store
            .reports()
            .into_iter()
            .filter(|r| r.reporter == reporter)
            .collect(),
        questions: {
            let mine = store.incidents_of(reporter);
            store
                .questions()
                .into_iter()
                .filter(|q| mine.contains(&q.incident))
                .collect()
        },
        enrolment,
    }
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Limit {
    Report,
    Reply,
}

/// Per-user limits on reports and replies: at most so many in a sliding window, so one
/// user (or a script gone wrong) cannot fill the spool that carries everyone's faults.
#[derive(Debug, Default)]
struct RateLimit {
    seen: std::collections::HashMap<(Limit, String), std::collections::VecDeque<u64>>,
}

impl RateLimit {
    /// Counts one `what` by `user` at `now` (ms), or says how many ms until one is allowed.
    fn allow(&mut self, what: Limit, user: &str, now: u64) -> Result<(), u64> {
        let max = match what {
            Limit::Report => MAX_REPORTS_PER_WINDOW,
            Limit::Reply => MAX_REPLIES_PER_WINDOW,
        };
        let times = self.seen.entry((what, user.to_owned())).or_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= RATE_WINDOW)
        {
            times.pop_front();
        }
        if times.len() >= max {
            let oldest = times.front().copied().unwrap_or(now);
            return Err(RATE_WINDOW - now.saturating_sub(oldest));
        }
        times.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::spool::Spool;
    use vigia_protocol::DeviceId;

    fn agent() -> (Arc<AgentState>, ReportsAndQuestions, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(
            &dir.path().join("db"),
            DeviceId::new("ws-1").unwrap(),
            1 << 20,
        )
        .unwrap();
        let shared = Arc::new(AgentState::new(spool));
        let store = ReportsAndQuestions::new(Arc::clone(&shared));
        (shared, store, dir)
    }

    fn report(summary: &str) -> Request {
        Request::Report {
            category: "hardware".into(),
            summary: summary.into(),
            text: "x".into(),
            urgency: Urgency::Low,
            contact: "ext 1".into(),
            wait_ms: 0,
        }
    }

    fn reply(incident: u64, text: &str) -> Request {
        Request::Reply {
            incident,
            text: text.into(),
        }
    }

    /// Reports `summary` as `user` and has the collector number it `incident`.
    async fn reported(
        who: &str,
        summary: &str,
        incident: u64,
        a: &(Arc<AgentState>, ReportsAndQuestions, tempfile::TempDir),
        limits: &Mutex<RateLimit>,
    ) {
        let Response::Reported { report_id, .. } =
            answer(report(summary), who, &a.0, &a.1, limits).await
        else {
            panic!("not reported")
        };
        a.1.note_cmd(&CmdBody::ReportAccepted {
            report_id,
            incident,
        });
    }

    #[tokio::test]
    async fn each_user_sees_only_their_own_reports_and_questions() {
        let a = agent();
        let limits = Mutex::new(RateLimit::default());
        reported("ana", "pantalla", 10, &a, &limits).await;
        reported("luis", "impresora", 11, &a, &limits).await;
        for i in [10, 11] {
            a.1.note_cmd(&CmdBody::RequestInfo {
                incident: i,
                question: bounded("¿desde cuándo?"),
            });
        }
        let Response::Status(s) = answer(Request::Status, "ana", &a.0, &a.1, &limits).await else {
            panic!()
        };
        assert_eq!(s.reports.len(), 1);
        assert_eq!(s.reports[0].summary, "pantalla");
        assert_eq!(
            s.questions.iter().map(|q| q.incident).collect::<Vec<_>>(),
            [10]
        );
    }

    #[tokio::test]
    async fn status_says_where_enrolment_stands_until_the_link_runs() {
        let a = agent();
        let limits = Mutex::new(RateLimit::default());
        let view = EnrolView::Refused {
            request: "0a1b".into(),
            reason: "unknown machine".into(),
        };
        *lock(&a.0.state) = LinkState::Enrolling {
            view: view.clone(),
            attempts: 3,
            last_error: Some("connection reset".into()),
        };
        let Response::Status(s) = answer(Request::Status, "ana", &a.0, &a.1, &limits).await else {
            panic!()
        };
        assert_eq!(s.enrolment, Some(view));
        assert!(!s.connected);
        assert_eq!(s.attempts, 3);
        assert_eq!(s.last_error.as_deref(), Some("connection reset"));
        *lock(&a.0.state) = LinkState::Connected { since: 1 };
        let Response::Status(s) = answer(Request::Status, "ana", &a.0, &a.1, &limits).await else {
            panic!()
        };
        assert_eq!(s.enrolment, None);
        assert!(s.connected);
    }

    #[tokio::test]
    async fn a_user_replies_only_about_their_own_reports_within_the_caps() {
        let a = agent();
        let limits = Mutex::new(RateLimit::default());
        reported("ana", "pantalla", 10, &a, &limits).await;
        reported("luis", "impresora", 11, &a, &limits).await;
        let err = |r: Response| match r {
            Response::Error { message } => message,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(
            err(answer(reply(11, "x"), "ana", &a.0, &a.1, &limits).await)
                .contains("not one of your reports")
        );
        let long = "a".repeat(MAX_REPLY_CHARS + 1);
        assert!(
            err(answer(reply(10, &long), "ana", &a.0, &a.1, &limits).await).contains("longer than")
        );
        for _ in 0..MAX_REPLIES_PER_WINDOW {
            let r = answer(reply(10, "sí"), "ana", &a.0, &a.1, &limits).await;
            assert!(matches!(r, Response::Replied { .. }), "{r:?}");
        }
        assert!(
            err(answer(reply(10, "sí"), "ana", &a.0, &a.1, &limits).await)
                .contains("too many replies")
        );
        // Another user is not slowed down by ana.
        let r = answer(reply(11, "hola"), "luis", &a.0, &a.1, &limits).await;
        assert!(matches!(r, Response::Replied { .. }), "{r:?}");
    }

    #[tokio::test]
    async fn reports_are_limited_per_user() {
        let a = agent();
        let limits = Mutex::new(RateLimit::default());
        for n in 0..MAX_REPORTS_PER_WINDOW {
            reported("ana", "x", 100 + n as u64, &a, &limits).await;
        }
        let r = answer(report("once more"), "ana", &a.0, &a.1, &limits).await;
        assert!(
            matches!(&r, Response::Error { message } if message.contains("too many reports")),
            "{r:?}"
        );
        reported("luis", "mine", 200, &a, &limits).await;
    }

    #[test]
    fn the_window_slides() {
        let mut l = RateLimit::default();
        for t in 0..MAX_REPORTS_PER_WINDOW as u64 {
            l.allow(Limit::Report, "ana", t * 1000).unwrap();
        }
        let wait = l.allow(Limit::Report, "ana", 10_000).unwrap_err();
        assert_eq!(wait, RATE_WINDOW - 10_000);
        assert!(l.allow(Limit::Report, "ana", RATE_WINDOW).is_ok());
    }

    /// Binds a socket with `[ipc]` settings `ipc`; the mode and group it got.
    fn bind_with(ipc: &str) -> Result<(u32, u32), String> {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::from_toml(
            &format!(
                "data_dir = \"{}\"\n[device]\nid = \"ws-1\"\n[ipc]\n{ipc}\n",
                dir.path().display()
            ),
            "test",
        )
        .map_err(|e| e.to_string())?;
        let spool = Spool::open(&cfg.db_path(), cfg.device.clone(), 1 << 20).unwrap();
        let shared = Arc::new(AgentState::new(spool));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let server = Server::bind(&cfg, shared).map_err(|e| e.to_string())?;
        let meta = std::fs::metadata(&cfg.socket).unwrap();
        drop(server);
        Ok((meta.mode() & 0o7777, meta.gid()))
    }

    /// A group of this system other than the process's own (`nogroup` on Debian).
    fn other_group() -> (String, u32) {
        let text = std::fs::read_to_string("/etc/group").unwrap();
        let own = std::fs::metadata("/proc/self").ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.gid()
        });
        let groups: Vec<(String, u32)> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?.to_string();
                let gid = f.nth(1)?.parse::<u32>().ok()?;
                Some((name, gid))
            })
            .collect();
        let nogroup = groups.iter().find(|(n, _)| n == "nogroup");
        nogroup
            .or_else(|| groups.iter().find(|(_, g)| Some(*g) != own))
            .cloned()
            .unwrap()
    }

    #[test]
    fn the_socket_gets_the_mode_and_group_the_config_asks_for() {
        let (mode, _) = bind_with("").unwrap();
        assert_eq!(mode, 0o666, "default: every local user may report");
        let (mode, _) = bind_with("access = \"owner\"").unwrap();
        assert_eq!(mode, 0o600);
        // Changing a socket's group to one the process is not in takes root.
        if !crate::config::running_as_root() {
            panic!("this test needs root to give the socket another group");
        }
        let (name, gid) = other_group();
        let (mode, got) = bind_with(&format!("access = \"group\"\ngroup = \"{name}\"")).unwrap();
        assert_eq!((mode, got), (0o660, gid), "group {name}");
        let (mode, got) = bind_with(&format!("access = \"group\"\ngroup = \"{gid}\"")).unwrap();
        assert_eq!((mode, got), (0o660, gid), "by number");
    }

    #[test]
    fn a_missing_group_is_a_clear_error() {
        let e = bind_with("access = \"group\"\ngroup = \"no-such-group-vigia\"").unwrap_err();
        assert!(
            e.contains("ipc.group: no group \"no-such-group-vigia\" in /etc/group")
                && e.contains("groupadd --system no-such-group-vigia"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("group"),
            "root:x:0:\nvigia:x:997:ana,luis\n",
        )
        .unwrap();
        assert_eq!(group_id("vigia", &dir.path().join("group")).unwrap(), 997);
        assert_eq!(group_id("1234", &dir.path().join("group")).unwrap(), 1234);
        assert!(group_id("vigi", &dir.path().join("group")).is_err());
    }

    #[test]
    fn replies_per_incident_are_capped() {
        let (_, store, _dir) = agent();
        for _ in 0..MAX_REPLIES_PER_INCIDENT {
            assert!(store.count_reply(5));
        }
        assert!(!store.count_reply(5));
        assert!(store.count_reply(6));
    }
}
