//! `vigia-agent run`: wires the parts together and runs them until shutdown.
//!
//! Three tasks share one [`AgentState`] state: the sampling loop (every interval, one
//! detector pass; each fault transition becomes an event in the spool and wakes the
//! link), the MQTT link (see [`crate::link`]) and the local IPC server (see
//! [`crate::ipc`]). An event is in the spool, flushed, before anything tries to publish
//! it, so a broker that is down at start only means the spool fills and drains later.
//! Detector passes run on the blocking pool: a slow probe (`smartctl`) must not stall
//! the MQTT keep-alive.
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use vigia_protocol::EventBody;

use crate::config::Config;
use crate::link::{self, lock, now_ms, AgentState, LinkConfig, LinkError, PassView};
use crate::probe::{Detectors, ProbeError};
use crate::spool::{Spool, SpoolError};

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

/// Runs the agent until `shutdown` completes (or a part fails for good): samples,
/// spools, publishes; then sends the offline status and disconnects.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let db = open_db(&cfg)?;
    let spool = Spool::with_db(db.clone(), cfg.device.clone(), cfg.spool_max_bytes)?;
    let baselines = db
        .open_tree("baselines")
        .map_err(|e| AgentError::Spool(SpoolError::Db(e)))?;
    let detectors = Detectors::new(&cfg.detect, &cfg.root, baselines)?;
    // One line for the first screen: on a laptop or a VM most of the hardware detectors
    // have nothing to read, which is information, not a degradation. The reasons are
    // logged at debug and printed by `vigia-agent check`.
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
    let first_view = PassView::of(&detectors);
    let detectors = Arc::new(Mutex::new(detectors));
    tracing::info!(
        device = %cfg.device,
        interval_ms = u64::try_from(cfg.interval.as_millis()).unwrap_or(u64::MAX),
        spooled = spool.len(),
        data_dir = %cfg.data_dir.display(),
        "vigia-agent starting"
    );
    let instance = spool.instance();
    let shared = Arc::new(AgentState::new(spool));
    *lock(&shared.pass) = first_view;
    let mut link_cfg = LinkConfig::from_config(&cfg)?;
    link_cfg.instance = instance;
    let (stop_tx, stop_rx) = watch::channel(false);

    let ipc = crate::ipc::Server::bind(&cfg, Arc::clone(&shared))?;
    let ipc = tokio::spawn(ipc.serve(stop_rx.clone()));
    let mut link = tokio::spawn(link::run(Arc::clone(&shared), link_cfg, stop_rx.clone()));
    let sampler = tokio::spawn(sample_loop(
        Arc::clone(&shared),
        detectors,
        cfg.interval,
        stop_rx,
    ));

    tokio::pin!(shutdown);
    let early = tokio::select! {
        _ = &mut shutdown => None,
        r = &mut link => Some(r),
    };
    tracing::info!("vigia-agent stopping");
    let _ = stop_tx.send(true);
    let link_result = match early {
        Some(r) => r,
        None => link.await,
    };
    let _ = sampler.await;
    let _ = ipc.await;
    let flushed = lock(&shared.spool).db().flush();
    if let Err(e) = flushed {
        tracing::error!(error = %e, "spool: final flush failed");
    }
    match link_result {
        Ok(r) => r.map_err(AgentError::from),
        Err(e) => Err(AgentError::Task(e.to_string())),
    }
}

/// Every `interval` (or on a `Recheck` command): one detector pass; its fault
/// transitions go to the spool, then the link is woken.
async fn sample_loop(
    shared: Arc<AgentState>,
    detectors: Arc<Mutex<Detectors>>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            _ = ticker.tick() => {}
            _ = shared.recheck.notified() => {}
        }
        let now = now_ms();
        let det = Arc::clone(&detectors);
        // Off the runtime thread: a pass may take as long as smartctl does, and the link's
        // keep-alive and the local socket must go on meanwhile.
        let pass = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut d = lock(&det);
            d.tick(now, &mut out);
            (out, PassView::of(&d))
        })
        .await;
        let faults = match pass {
            Ok((f, view)) => {
                *lock(&shared.pass) = view;
                f
            }
            Err(e) => {
                tracing::error!(error = %e, "detector pass failed");
                continue;
            }
        };
        if faults.is_empty() {
            continue;
        }
        {
            let mut spool = lock(&shared.spool);
            for f in faults {
                let (kind, subject, action, severity) =
                    (f.kind, f.subject.clone(), f.action, f.severity);
                match spool.push(now, EventBody::Fault(f)) {
                    Ok(p) => tracing::info!(
                        seq = p.seq,
                        kind = %kind,
                        subject = %subject,
                        action = action.as_str(),
                        severity = %severity,
                        "fault event spooled"
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, kind = %kind, subject = %subject, "spool: cannot store a fault event")
                    }
                }
            }
        }
        shared.wake.notify_one();
    }
}
