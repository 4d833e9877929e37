//! `vigia-agent run`: wires the parts together and runs them until shutdown.
//!
//! Three tasks share one [`AgentState`] state: the sampling loop (every interval, one
//! detector pass; each fault transition becomes an event in the spool and wakes the
//! link), the MQTT link (see [`crate::link`]) and the local IPC server (see
//! [`crate::ipc`]). An event is in the spool, flushed, before anything tries to publish
//! it, so a broker that is down at start only means the spool fills and drains later.
//! The detectors start, and every pass runs, on the blocking pool, after the link and
//! the socket are up: a slow probe (`smartctl`, up to 30 s a disk) must not stall the
//! MQTT keep-alive or the local socket, at start or later.
//!
//! A device with an `[enrol] token` and no `[mqtt] username` first gets its account
//! ([`crate::enrol`]): the link task asks to join and waits for the approval before it
//! connects as the device, while the sampler, the spool and the socket already run, so
//! faults found meanwhile are delivered after the approval. Should the broker later
//! refuse those credentials ([`REFUSALS_TO_ASK`] times in a row), the link task asks the
//! collector again: a revoked device is told so (and `status` says it), and credentials
//! the collector still stands by are tried again after the ask period, not at once.
//!
//! A full data directory never stops the agent. Events the spool cannot write wait in
//! its memory; the sampling loop reopens the database (sled stays failed after an I/O
//! error) and writes them, retrying with a backoff, and stores the detectors' counter
//! state only once nothing waits in memory, so a fault is never recorded as reported
//! before its event is in the spool. A database that cannot be opened at start for the
//! same reason is retried the same way.
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use vigia_protocol::{Backoff, EventBody};

use crate::config::Config;
use crate::enrol::{self, Start};
use crate::link::{self, lock, now_ms, AgentState, LinkConfig, LinkError, LinkState, PassView};
use crate::probe::{Detectors, ProbeError};
use crate::spool::{self, Spool, SpoolError};

/// First delay before writing again to a data directory that failed.
const STORE_RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest delay between attempts.
const STORE_RETRY_CAP: Duration = Duration::from_secs(60);
/// How long a reopen waits for the old database handles to be let go of.
const REOPEN_WAIT: Duration = Duration::from_secs(5);

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The data directory could not be created or used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The spool database is held by another process.
    #[error("{path} is in use by another vigia-agent (sled allows one process per database)")]
    InUse {
        /// The database directory.
        path: PathBuf,
    },
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The detectors could not start.
    #[error("detectors: {0}")]
    Probe(#[from] ProbeError),
    /// The MQTT link failed for good.
    #[error("mqtt link: {0}")]
    Link(#[from] LinkError),
    /// The IPC socket could not be opened.
    #[error(transparent)]
    Ipc(#[from] crate::ipc::BindError),
    /// A task ended abnormally.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// Opens the data directory's sled database, naming a concurrent owner clearly.
pub fn open_db(cfg: &Config) -> Result<sled::Db, AgentError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| AgentError::DataDir {
        path: cfg.data_dir.clone(),
        source,
    })?;
    let path = cfg.db_path();
    match crate::spool::open_db(&path, Duration::from_secs(3)) {
        Ok(db) => Ok(db),
        Err(SpoolError::Locked(path)) => Err(AgentError::InUse { path }),
        Err(e) => Err(AgentError::Spool(e)),
    }
}

/// Whether opening the spool failed for want of space, which waiting can cure, rather
/// than for a reason a person must fix (permissions, another agent, a bad config).
fn worth_waiting(e: &AgentError) -> bool {
    match e {
        AgentError::DataDir { source, .. } => matches!(
            source.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        ),
        AgentError::Spool(SpoolError::Db(e)) => spool::is_disk_full(e),
        _ => false,
    }
}

/// Opens the spool, waiting with a backoff while the data directory is full. `None`
/// when `shutdown` came first.
async fn open_spool(
    cfg: &Config,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<Option<Spool>, AgentError> {
    let mut backoff = Backoff::new(STORE_RETRY_BASE, STORE_RETRY_CAP, now_ms());
    loop {
        let c = cfg.clone();
        let opened = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&c.data_dir).map_err(|source| AgentError::DataDir {
                path: c.data_dir.clone(),
                source,
            })?;
            match Spool::open(&c.db_path(), c.device.clone(), c.spool_max_bytes) {
                Ok(s) => Ok(s),
                Err(SpoolError::Locked(path)) => Err(AgentError::InUse { path }),
                Err(e) => Err(AgentError::Spool(e)),
            }
        })
        .await
        .map_err(|e| AgentError::Task(e.to_string()))?;
        let e = match opened {
            Ok(s) => return Ok(Some(s)),
            Err(e) if worth_waiting(&e) => e,
            Err(e) => return Err(e),
        };
        // The reserve left by the last run is there for this moment.
        let reserve = spool::reserve_path(&cfg.db_path());
        if std::fs::remove_file(&reserve).is_ok() {
            tracing::warn!(reserve = %reserve.display(), "disk full: released the spool's reserve");
            continue;
        }
        let delay = backoff.next_delay();
        tracing::error!(
            error = %e,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "cannot open the spool in the data directory (disk full?); retrying"
        );
        tokio::select! {
            _ = &mut *shutdown => return Ok(None),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Runs the agent until `shutdown` completes (or a part fails for good): samples,
/// spools, publishes; then sends the offline status and disconnects.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    // Boxed: polled through one pointer, its state machine is not inlined into every
    // executor function that runs it (the binary has a size budget).
    Box::pin(run_agent(cfg, shutdown)).await
}

async fn run_agent(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    tokio::pin!(shutdown);
    let Some(spool) = open_spool(&cfg, &mut shutdown).await? else {
        return Ok(());
    };
    tracing::info!(
        device = %cfg.device,
        interval_ms = u64::try_from(cfg.interval.as_millis()).unwrap_or(u64::MAX),
        spooled = spool.len(),
        data_dir = %cfg.data_dir.display(),
        "vigia-agent starting"
    );
    let instance = spool.instance();
    let shared = Arc::new(AgentState::new(spool));
    let mut link_cfg = LinkConfig::from_config(&cfg)?;
    link_cfg.instance = instance;
    let (stop_tx, stop_rx) = watch::channel(false);

    let ipc = crate::ipc::Server::bind(&cfg, Arc::clone(&shared))?;
    let ipc = tokio::spawn(ipc.serve(stop_rx.clone()));
    let start = enrol::start(&cfg);
    let mut link = tokio::spawn(connect(
        Arc::clone(&shared),
        link_cfg,
        start,
        enrol::dir_of(&cfg.data_dir),
        cfg.enrol_poll,
        stop_rx.clone(),
    ));
    let ready_fallback = tokio::spawn(crate::service::ready_after_wait());

    // The detectors' first reads (smartctl reads every disk) happen on the blocking pool
    // while the link and the socket already serve.
    let made = {
        let (detect, root, shared) = (cfg.detect.clone(), cfg.root.clone(), Arc::clone(&shared));
        tokio::task::spawn_blocking(move || {
            let db = lock(&shared.spool).db()?.clone();
            let baselines = db.open_tree("baselines").map_err(SpoolError::Db)?;
            Ok::<_, AgentError>(Detectors::new(&detect, &root, baselines)?)
        })
    };
    let mut sampler = None;
    let early = tokio::select! {
        _ = &mut shutdown => None,
        r = &mut link => Some(r),
        made = made => {
            let detectors = match made {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => return stop_on_error(e, &stop_tx, link, ipc, &shared).await,
                Err(e) => {
                    let e = AgentError::Task(e.to_string());
                    return stop_on_error(e, &stop_tx, link, ipc, &shared).await;
                }
            };
            log_unsupported(&detectors);
            *lock(&shared.pass) = PassView::of(&detectors);
            sampler = Some(tokio::spawn(sample_loop(
                Arc::clone(&shared),
                Arc::new(Mutex::new(detectors)),
                cfg.interval,
                stop_rx,
            )));
            tokio::select! {
                _ = &mut shutdown => None,
                r = &mut link => Some(r),
            }
        }
    };
    tracing::info!("vigia-agent stopping");
    crate::service::stopping();
    ready_fallback.abort();
    let _ = stop_tx.send(true);
    let link_result = match early {
        Some(r) => r,
        None => link.await,
    };
    if let Some(s) = sampler {
        let _ = s.await;
    }
    let _ = ipc.await;
    final_flush(&shared);
    match link_result {
        Ok(r) => r.map_err(AgentError::from),
        Err(e) => Err(AgentError::Task(e.to_string())),
    }
}

/// Refusals of an enrolled device's account in a row before the agent asks the collector
/// again: a few, so that one refused reconnection (a broker restarting) does not, yet the
/// person reading `status` learns of a revocation within seconds.
pub const REFUSALS_TO_ASK: u32 = 3;

/// The link task: gets the device account first when it must (see [`crate::enrol`]),
/// then runs the link; asks again when the broker keeps refusing an enrolled account. A
/// shutdown during enrolment ends it like one of the link.
async fn connect(
    shared: Arc<AgentState>,
    mut link_cfg: LinkConfig,
    start: Start,
    enrol_dir: PathBuf,
    poll: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), LinkError> {
    let (mut creds, token) = match start {
        Start::Configured => return link::run(shared, link_cfg, stop).await,
        Start::Enrolled(c, token) => (Some(c), token),
        Start::Enrol(token) => (None, token),
    };
    let mut backoff = Backoff::new(poll, poll, now_ms() ^ u64::from(std::process::id()));
    let mut refused: Option<vigia_protocol::enrol::Credentials> = None;
    loop {
        let c = match creds.take() {
            Some(c) => c,
            None => {
                match enrol::run(&shared, &link_cfg, &token, &enrol_dir, poll, &mut stop).await? {
                    Some(c) => c,
                    None => {
                        *lock(&shared.state) = LinkState::Stopped;
                        return Ok(());
                    }
                }
            }
        };
        if refused.as_ref() == Some(&c) {
            // Not revoked (the collector would have said so), yet refused: a broker that
            // lost its accounts, or a refusal that passes. Again after the ask period.
            tracing::error!(device = %c.device, "the collector still gives the credentials the broker refuses; an administrator may revoke this device and approve its new request; trying again later");
            let wait = backoff.spread(poll);
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => {
                    *lock(&shared.state) = LinkState::Stopped;
                    return Ok(());
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
        link_cfg.credentials = Some((c.device.to_string(), c.password.to_string()));
        link_cfg.refusals_to_give_up = Some(REFUSALS_TO_ASK);
        match link::run(Arc::clone(&shared), link_cfg.clone(), stop.clone()).await {
            Err(LinkError::AccountRefused(n)) => {
                tracing::warn!(device = %c.device, refusals = n, "the broker refuses this device's account; asking the collector again");
                refused = Some(c);
            }
            other => return other,
        }
    }
}

/// The detectors could not start: stop the link and the socket, then report why.
async fn stop_on_error(
    e: AgentError,
    stop_tx: &watch::Sender<bool>,
    link: tokio::task::JoinHandle<Result<(), LinkError>>,
    ipc: tokio::task::JoinHandle<()>,
    shared: &AgentState,
) -> Result<(), AgentError> {
    let _ = stop_tx.send(true);
    let _ = link.await;
    let _ = ipc.await;
    final_flush(shared);
    Err(e)
}

fn final_flush(shared: &AgentState) {
    let spool = lock(&shared.spool);
    if spool.held() > 0 {
        tracing::error!(
            held = spool.held(),
            "stopping with events the full data directory never took: they are lost"
        );
    }
    if let Ok(db) = spool.db() {
        if let Err(e) = db.flush() {
            tracing::error!(error = %e, "spool: final flush failed");
        }
    }
}

/// One line for the first screen: on a laptop or a VM most of the hardware detectors
/// have nothing to read, which is information, not a degradation. The reasons are
/// logged at debug and printed by `vigia-agent check`.
fn log_unsupported(detectors: &Detectors) {
    let unsupported = detectors.unsupported();
    if !unsupported.is_empty() {
        let names: Vec<&str> = unsupported.iter().map(|(n, _)| *n).collect();
        tracing::info!(
            detectors = %names.join(", "),
            "not watched here (nothing to read on this machine; `vigia-agent check` says why)"
        );
        for (name, reason) in unsupported {
            tracing::debug!(detector = name, reason = %reason, "probe unsupported here");
        }
    }
}

/// Every `interval` (or on a `Recheck` command): one detector pass, its fault
/// transitions into the spool, then the link is woken. While the data directory fails,
/// also on a backoff timer: reopen, write what waits in memory.
async fn sample_loop(
    shared: Arc<AgentState>,
    detectors: Arc<Mutex<Detectors>>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Backoff::new(STORE_RETRY_BASE, STORE_RETRY_CAP, now_ms());
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let sample = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            _ = ticker.tick() => true,
            _ = shared.recheck.notified() => true,
            _ = retry => false,
        };
        let (sh, det, now) = (Arc::clone(&shared), Arc::clone(&detectors), now_ms());
        // Off the runtime thread: a pass may take as long as smartctl does, and a reopen
        // waits for old handles; the link's keep-alive and the local socket go on.
        let job = tokio::task::spawn_blocking(move || {
            let mut d = lock(&det);
            if sample {
                pass(&sh, &mut d, now);
            }
            keep_store(&sh, &mut d, now)
        })
        .await;
        shared.wake.notify_one();
        match job {
            Ok(true) => {
                retry_at = None;
                backoff.reset();
            }
            Ok(false) => {
                retry_at = Some(tokio::time::Instant::now() + backoff.next_delay());
            }
            Err(e) => tracing::error!(error = %e, "detector pass failed"),
        }
    }
    // A last attempt for what waits in memory.
    let (sh, det) = (Arc::clone(&shared), Arc::clone(&detectors));
    let _ = tokio::task::spawn_blocking(move || keep_store(&sh, &mut lock(&det), now_ms())).await;
}

/// One detector pass at `now`; its fault transitions go to the spool.
fn pass(shared: &AgentState, d: &mut Detectors, now: u64) {
    let mut faults = Vec::new();
    d.tick(now, &mut faults);
    *lock(&shared.pass) = PassView::of(d);
    if faults.is_empty() {
        return;
    }
    let mut spool = lock(&shared.spool);
    for f in faults {
        let (kind, subject, action, severity) = (f.kind, f.subject.clone(), f.action, f.severity);
        match spool.push(now, EventBody::Fault(f)) {
            Ok(p) => tracing::info!(
                seq = p.seq,
                kind = %kind,
                subject = %subject,
                action = action.as_str(),
                severity = %severity,
                held = p.held,
                "fault event spooled"
            ),
            Err(e) => {
                tracing::error!(error = %e, kind = %kind, subject = %subject, "spool: cannot store a fault event")
            }
        }
    }
}

/// Keeps the spool writable: reopens a failed database, writes what waits in memory,
/// and only then the detectors' counter state. Returns whether all of it is written.
fn keep_store(shared: &AgentState, d: &mut Detectors, now: u64) -> bool {
    if lock(&shared.spool).needs_reopen() {
        if let Err(e) = reopen(shared, d, now) {
            tracing::debug!(error = %e, "spool: database not reopened yet; retrying");
            return false;
        }
    }
    if !lock(&shared.spool).retry(now) {
        return false;
    }
    match d.persist() {
        Ok(()) => true,
        Err(e) => {
            // The same database: sled is failed for the spool too.
            lock(&shared.spool).write_failed(&e);
            false
        }
    }
}

/// Closes the spool's database, lets go of every handle to it and opens it again.
fn reopen(shared: &AgentState, d: &mut Detectors, now: u64) -> Result<(), SpoolError> {
    let path = lock(&shared.spool)
        .path()
        .map(Path::to_path_buf)
        .ok_or(SpoolError::Closed)?;
    if !spool::room_to_reopen(&path) {
        // Opening a database on a full disk is what damages it: wait for room.
        return Err(SpoolError::Closed);
    }
    let old = lock(&shared.spool).close();
    d.detach_store();
    drop(old);
    let db = spool::open_db(&path, REOPEN_WAIT)?;
    d.attach_store(db.open_tree("baselines")?);
    lock(&shared.spool).attach(db, now)
}
