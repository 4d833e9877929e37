//! Starting and stopping a whole collector: store, embedded broker (when no URL is
//! configured), ingest and the HTTP API, wired together in one process.
//!
//! [`start`] returns once the broker accepts connections, the subscription is in place
//! (or a bounded wait for an external broker has passed) and the API listens, so a caller
//! (a test, the `run` command, the all-in-one binary) can use the returned addresses at
//! once. The embedded broker cannot be stopped (rumqttd has no shutdown handle): it lives
//! until the process exits, which is why `shutdown` leaves it running.
//!
//! The workflow timer task runs beside ingest and the API; all three share the store,
//! the policy, the clock and the device [`Downlink`](crate::outbox::Downlink).
//! [`start_with_clock`] injects the clock so tests drive SLA time by hand.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::auth::{ensure_first_admin, Auth, FirstAdmin, FirstAdminError, FIRST_ADMIN_ENV};
use crate::broker::{self, BrokerError};
use crate::clock::{Clock, SystemClock};
use crate::config::{BrokerTarget, Config, ConfigError};
use crate::http::{self, HttpState};
use crate::ingest::{Ingest, IngestConfig, IngestDeps};
use crate::metrics::Metrics;
use crate::outbox::{CommandSender, FeedHub};
use crate::retention::{Archive, Pass, Retention, RetentionError};
use crate::store::embedded::SledStore;
use crate::store::{SharedStore, Store, StoreError};
use crate::timers::Timers;

/// How long [`start`] waits for the subscription before going on without it.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the collector could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory could not be created.
    #[error("cannot create the data directory {dir}: {source}")]
    DataDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("cannot open the store in {dir} (is another collector using it?): {source}")]
    Store {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// The embedded broker did not start.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The HTTP listener could not be bound.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    HttpBind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
    /// The final flush failed.
    #[error("final store flush failed: {0}")]
    Flush(#[source] StoreError),
    /// A background task panicked.
    #[error("a collector task failed: {0}")]
    Task(String),
    /// The first admin account could not be created.
    #[error(transparent)]
    FirstAdmin(#[from] FirstAdminError),
}

/// A running collector.
pub struct Running {
    /// The broker's URL (`mqtt://127.0.0.1:PORT` for the embedded one).
    pub mqtt_url: String,
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Whether the console is served over HTTPS.
    pub https: bool,
    /// The admin account created at this start, when the store had no account: whoever
    /// started the collector tells its user how to sign in.
    pub first_admin: Option<FirstAdmin>,
    /// Whether the broker is the embedded one.
    pub embedded_broker: bool,
    store: SharedStore,
    stop: watch::Sender<bool>,
    ingest: Ingest,
    api: JoinHandle<std::io::Result<()>>,
    timers: Timers,
    timer_task: JoinHandle<()>,
    sender_task: JoinHandle<()>,
    retention: Retention,
    retention_task: JoinHandle<()>,
    notify_task: JoinHandle<()>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("mqtt_url", &self.mqtt_url)
            .field("http_addr", &self.http_addr)
            .field("https", &self.https)
            .field("embedded_broker", &self.embedded_broker)
            .finish_non_exhaustive()
    }
}

/// Starts a collector: validates `cfg`, opens the store, starts the embedded broker when
/// no URL is configured, then ingest and the API.
pub async fn start(cfg: Config) -> Result<Running, CollectorError> {
    start_with_clock(cfg, Arc::new(SystemClock)).await
}

/// [`start`] with the clock the workflow reads (tests pass a
/// [`ManualClock`](crate::clock::ManualClock)).
pub async fn start_with_clock(
    cfg: Config,
    clock: Arc<dyn Clock>,
) -> Result<Running, CollectorError> {
    let settings = cfg.validate()?;
    let policy = Arc::new(settings.policy.clone());
    let dir = settings.data_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|source| CollectorError::DataDir {
        dir: dir.clone(),
        source,
    })?;
    let open_dir = dir.clone();
    let options = settings.store;
    let store = tokio::task::spawn_blocking(move || SledStore::open_with(&open_dir, options))
        .await
        .map_err(|e| CollectorError::Task(e.to_string()))?
        .map_err(|source| CollectorError::Store {
            dir: dir.clone(),
            source,
        })?;
    info!(data_dir = %dir.display(), events = store.event_count(), "store opened");
    let store: SharedStore = Arc::new(store);
    let first_admin = {
        let (store, dir, now) = (store.clone(), dir.clone(), clock.now());
        let password = std::env::var(FIRST_ADMIN_ENV).ok();
        tokio::task::spawn_blocking(move || ensure_first_admin(&store, &dir, now, password))
            .await
            .map_err(|e| CollectorError::Task(e.to_string()))??
    };

    let (host, port, mqtt_url, embedded) = match &settings.broker {
        BrokerTarget::Embedded { port } => {
            let b = broker::start(*port).await?;
            (b.addr.ip().to_string(), b.addr.port(), b.url(), true)
        }
        BrokerTarget::External { host, port, .. } => (
            host.clone(),
            *port,
            cfg.mqtt.url.clone().unwrap_or_default(),
            false,
        ),
    };

    let listener = TcpListener::bind(settings.http_listen)
        .await
        .map_err(|source| CollectorError::HttpBind {
            addr: settings.http_listen,
            source,
        })?;
    let http_addr = listener
        .local_addr()
        .map_err(|source| CollectorError::HttpBind {
            addr: settings.http_listen,
            source,
        })?;

    let metrics = Arc::new(Metrics::default());
    let feed = FeedHub::new();
    let wake = Arc::new(Notify::new());
    let dynsec = match (&settings.dynamic_security, &settings.credentials) {
        (Some(admin), Some(own)) => {
            let d = crate::dynsec::Dynsec::new(crate::dynsec::DynsecConfig {
                host: host.clone(),
                port,
                tls_ca: settings.ca_pem.clone(),
                credentials: admin.clone(),
                topics: settings.topics.clone(),
            });
            // Before ingest connects: the collector's account, with its topics.
            match d.ensure_collector(own, &settings.client_id).await {
                Ok(()) => {
                    info!("broker accounts: dynamic-security plugin, collector role in place")
                }
                Err(e) => error!(error = %e, "cannot set up the collector's role on the broker; \
                    enrolment and revocation will fail until it answers"),
            }
            Some(d)
        }
        _ => None,
    };
    let (approve_tx, mut approve_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut ingest = Ingest::spawn(
        IngestConfig {
            host,
            port,
            tls_ca: settings.ca_pem.clone(),
            client_id: settings.client_id.clone(),
            credentials: settings.credentials.clone(),
            topics: settings.topics.clone(),
            enrolment: dynsec.is_some(),
        },
        IngestDeps {
            store: store.clone(),
            metrics: metrics.clone(),
            feed: feed.clone(),
            policy: policy.clone(),
            clock: clock.clone(),
            wake: wake.clone(),
            known_serials: settings.known_serials.clone(),
            approve: dynsec.is_some().then_some(approve_tx),
        },
    );
    let enrolment = dynsec.map(|dynsec| {
        Arc::new(crate::enrolment::Enrolment {
            store: store.clone(),
            dynsec,
            downlink: ingest.downlink(),
            topics: settings.topics.clone(),
            clock: clock.clone(),
        })
    });
    if let Some(e) = &enrolment {
        // Requests whose serial is a known one: approved by the rule, one at a time.
        let e = e.clone();
        tokio::spawn(async move {
            while let Some(request) = approve_rx.recv().await {
                // Never replacing: a serial is what the agent says, and must not take over an account.
                match e.approve(&request, "rule:known-serial", false).await {
                    Ok(r) => {
                        info!(request = %request, device = %r.device, "approved by the known-serials rule")
                    }
                    Err(err) => {
                        warn!(request = %request, error = %err, "the known-serials rule could not approve")
                    }
                }
            }
        });
    }
    if !ingest.wait_ready(READY_TIMEOUT).await {
        warn!(broker = %mqtt_url, "not subscribed yet; ingest keeps retrying in the background");
    }

    let (stop, stop_rx) = watch::channel(false);
    let timers = Timers {
        store: store.clone(),
        policy: policy.clone(),
        clock: clock.clone(),
        downlink: ingest.downlink(),
        feed: feed.clone(),
        wake: wake.clone(),
    };
    let timer_task = timers.clone().spawn(stop_rx.clone());
    let sender_task = CommandSender {
        store: store.clone(),
        downlink: ingest.downlink(),
        metrics: metrics.clone(),
        clock: clock.clone(),
    }
    .spawn(stop_rx.clone());
    let notify_task = crate::notify::sender::NotifySender {
        store: store.clone(),
        config: settings.notify.clone(),
        clock: clock.clone(),
        wake: ingest.downlink().notifications(),
    }
    .spawn(stop_rx.clone());
    let retention = Retention {
        store: store.clone(),
        archive: Archive::new(&dir),
        config: settings.retention,
        clock: clock.clone(),
    };
    let retention_task = retention.clone().spawn(stop_rx.clone());
    let state = HttpState {
        store: store.clone(),
        metrics,
        feed,
        stopping: stop_rx.clone(),
        policy,
        clock: clock.clone(),
        downlink: ingest.downlink(),
        wake,
        auth: Arc::new(Auth::new(
            store.clone(),
            clock.clone(),
            settings.web.session,
        )),
        web: Arc::new(settings.web.clone()),
        data_dir: dir.clone(),
        notify: settings.notify.clone(),
        enrolment,
    };
    let mut api_stop = stop_rx;
    let api = tokio::spawn(http::serve(listener, state, async move {
        let _ = api_stop.wait_for(|s| *s).await;
    }));
    info!(mqtt = %mqtt_url, http = %http_addr, "collector started");
    Ok(Running {
        mqtt_url,
        http_addr,
        https: settings.web.tls.is_some(),
        first_admin,
        embedded_broker: embedded,
        store,
        stop,
        ingest,
        api,
        timers,
        timer_task,
        sender_task,
        notify_task,
        retention,
        retention_task,
    })
}

impl Running {
    /// The store, for in-process callers (tests, the all-in-one binary).
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Runs the workflow timers due at the clock's now, as the timer task does (tests
    /// call this after moving a manual clock, instead of sleeping). Returns how many
    /// incidents changed.
    pub async fn run_timers(&self) -> Result<usize, crate::timers::TimerError> {
        self.timers.run_due().await
    }

    /// One retention pass at the clock's now, as the retention task runs it (tests call
    /// this after moving a manual clock).
    pub async fn run_retention(&self) -> Result<Pass, RetentionError> {
        self.retention.run().await
    }

    /// Stops ingest (publishing "collector offline" and disconnecting), then the API, then
    /// flushes the store. The embedded broker keeps running until the process exits.
    pub async fn shutdown(self) -> Result<(), CollectorError> {
        let _ = self.stop.send(true);
        if let Err(e) = self.timer_task.await {
            warn!(error = %e, "timer task ended abnormally");
        }
        if let Err(e) = self.sender_task.await {
            warn!(error = %e, "command sender ended abnormally");
        }
        if let Err(e) = self.notify_task.await {
            warn!(error = %e, "notification sender ended abnormally");
        }
        if let Err(e) = self.retention_task.await {
            warn!(error = %e, "retention task ended abnormally");
        }
        self.ingest.shutdown().await;
        let api = self
            .api
            .await
            .map_err(|e| CollectorError::Task(e.to_string()))?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|e| CollectorError::Task(e.to_string()))?
            .map_err(CollectorError::Flush)?;
        api.map_err(CollectorError::Http)?;
        info!("collector stopped");
        Ok(())
    }
}
