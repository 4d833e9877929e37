//! `vigia-sim`: many simulated devices, each its own MQTT connection and id, speaking
//! exactly the agent's protocol (through `vigia-protocol`): a retained birth, a status
//! with its Last Will, and events numbered per instance like a spool's, at a rate and in
//! a mix (steady, flapping, reports, a storm where every device fails at once). Each
//! device keeps what the collector has not acknowledged and sends it again, as the agent
//! does, when the collector announces itself online or when acks stop coming.
//!
//! At the end it prints what it sent and what was acknowledged, and, given the
//! collector's API and a token, what the collector stored for each device; it exits
//! non-zero on any difference. Also the time from publishing an event to its ack (p50,
//! p99), which bounds the collector's ingest latency from a device's point of view.
//!
//! For the fleet benchmarks: `--faulty` devices send events while the rest only stay
//! connected (MQTT keep-alive is their heartbeat), `--spread` starts the senders evenly
//! over a span counted from the moment every device is connected, `--hold` keeps the
//! fleet connected that long, and `--watch-feed` follows the collector's live feed and
//! reports the time from a fault's detection (the moment its event is made, as the
//! agent's detector would) to its incident arriving on the feed.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::BufRead;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use rumqttc::{AsyncClient, Event as MqttEvent, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::Semaphore;
use vigia_protocol::{
    bounded, decode, encode, Ack, Birth, BrokerUrl, Cmd, CmdAck, CollectorStatus, DeviceId,
    DownKind, Dur, Event, EventBody, Evidence, FaultAction, FaultEvent, FaultKind, Severity,
    Status, Topics, UpKind, Urgency, UserReport, MAX_PACKET, VERSION,
};

/// What the devices send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mix {
    /// Disk faults on five subjects, raised and cleared in turn.
    Steady,
    /// Disk faults on five subjects, each raised once and then only updated: long-lived
    /// incidents with many events each (`--events 4000` is 800 per incident).
    Updates,
    /// One subject raised and cleared again and again.
    Flapping,
    /// User reports.
    Reports,
    /// Every device raises the same fault at once, then clears it, repeatedly.
    Storm,
}

/// Simulated devices against a broker and a collector.
#[derive(Debug, Parser)]
#[command(name = "vigia-sim", version)]
struct Args {
    /// The broker (`mqtt://host:port`).
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// How many devices.
    #[arg(long, default_value_t = 10)]
    devices: usize,
    /// Events per device.
    #[arg(long, default_value_t = 20)]
    events: u64,
    /// What they send.
    #[arg(long, value_enum, default_value = "steady")]
    mix: Mix,
    /// Time between one device's events (the storm sends without pause).
    #[arg(long, default_value = "50ms")]
    interval: Dur,
    /// Device ids are `PREFIX-00001`...
    #[arg(long, default_value = "sim")]
    id_prefix: String,
    /// Topic prefix shared with the collector.
    #[arg(long, default_value = vigia_protocol::DEFAULT_PREFIX)]
    topic_prefix: String,
    /// At most this many connections being opened at once.
    #[arg(long, default_value_t = 200)]
    connect_burst: usize,
    /// Give up waiting for acks after this long.
    #[arg(long, default_value = "60s")]
    deadline: Dur,
    /// The collector's API, to check what it stored (`http://127.0.0.1:8790`).
    #[arg(long)]
    api: Option<String>,
    /// An API token (read scope is enough).
    #[arg(long, env = "VIGIA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Publish every event as fast as the broker takes it (QoS 1, each publish
    /// acknowledged by the broker), then leave without waiting for the collector's acks:
    /// the broker queues the stream for a collector that is offline, so a benchmark can
    /// time the collector draining it. Nothing is resent; with `--api` it then waits (up
    /// to `--deadline`) until the collector has stored everything, and checks it.
    #[arg(long)]
    no_wait: bool,
    /// Device instances are this plus the device's index (default: from the clock, a new
    /// instance every run, as a fresh spool would have).
    #[arg(long)]
    instance_base: Option<u64>,
    /// Only this many of the devices send events (the first ones); the others connect,
    /// say who they are and stay connected (default: all of them).
    #[arg(long)]
    faulty: Option<usize>,
    /// The sending devices start evenly over this span, counted from the moment every
    /// device is connected (default: all at once).
    #[arg(long, default_value = "0s")]
    spread: Dur,
    /// Every device stays connected at least this long after all are connected,
    /// heartbeating with MQTT keep-alive.
    #[arg(long, default_value = "0s")]
    hold: Dur,
    /// MQTT keep-alive of each device (the agent's is 30 s).
    #[arg(long, default_value = "30s")]
    keep_alive: Dur,
    /// Follow the collector's live feed (`--api`, `--token`) and report the time from
    /// each fault's detection to its new incident on the feed (p50, p99, max).
    #[arg(long)]
    watch_feed: bool,
}

/// The whole fleet: when every device is connected, the benchmark's clock starts.
#[derive(Debug)]
struct Fleet {
    devices: usize,
    arrived: AtomicUsize,
    all: tokio::sync::watch::Sender<Option<Instant>>,
}

impl Fleet {
    /// One device is connected (or gave up): the last one starts the clock.
    fn arrive(&self) {
        if self.arrived.fetch_add(1, Ordering::SeqCst) + 1 == self.devices {
            let at = Instant::now();
            self.all.send_replace(Some(at));
        }
    }

    /// When every device was connected.
    async fn all_connected(&self) -> Instant {
        let mut rx = self.all.subscribe();
        loop {
            if let Some(at) = *rx.borrow_and_update() {
                return at;
            }
            if rx.changed().await.is_err() {
                return Instant::now();
            }
        }
    }
}

/// Arrives at the fleet when dropped, unless it already did: a device that fails to
/// connect must not hold the others at the start line.
struct Arrival<'a>(&'a Fleet, bool);

impl Arrival<'_> {
    fn arrive(&mut self) {
        if !self.1 {
            self.1 = true;
            self.0.arrive();
        }
    }
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        self.arrive();
    }
}

/// A new incident's key on the feed: device, fault kind, subject.
type OpenKey = (String, String, String);

/// What one device saw.
#[derive(Debug, Default)]
struct DeviceResult {
    id: String,
    instance: u64,
    sent: u64,
    acked: BTreeSet<u64>,
    rejected: u64,
    resends: u64,
    commands: u64,
    ack_latency: Vec<Duration>,
    /// When each fault that should open an incident was detected.
    detected: Vec<(OpenKey, Instant)>,
    /// When the collector acknowledged the last event.
    last_ack: Option<Instant>,
}

fn fault(kind: FaultKind, subject: &str, action: FaultAction, value: f64) -> EventBody {
    EventBody::Fault(FaultEvent {
        action,
        kind,
        subject: bounded(subject),
        severity: Severity::Warning,
        evidence: Evidence {
            value,
            threshold: 90.0,
            unit: bounded("%"),
            source: bounded("vigia-sim"),
        },
        message: bounded(&format!("{subject} simulated")),
    })
}

/// The body of event `seq` of a device in `mix`.
fn body(mix: Mix, seq: u64) -> EventBody {
    // Raised on odd seqs of a subject, cleared on even ones.
    let action = |n: u64| {
        if n % 2 == 1 {
            FaultAction::Raised
        } else {
            FaultAction::Cleared
        }
    };
    match mix {
        Mix::Steady => {
            let subject = (seq - 1) % 5;
            let nth = (seq - 1) / 5 + 1;
            fault(
                FaultKind::DiskSpace,
                &format!("/data{subject}"),
                action(nth),
                95.0,
            )
        }
        Mix::Updates => {
            let subject = (seq - 1) % 5;
            let action = if seq <= 5 {
                FaultAction::Raised
            } else {
                FaultAction::Updated
            };
            fault(
                FaultKind::DiskSpace,
                &format!("/data{subject}"),
                action,
                90.0 + (seq % 7) as f64,
            )
        }
        Mix::Flapping => fault(FaultKind::DiskSpace, "/var", action(seq), 96.0),
        Mix::Storm => fault(FaultKind::Overheating, "cpu", action(seq), 99.0),
        Mix::Reports => EventBody::Report(UserReport {
            report_id: seq,
            category: bounded("hardware"),
            summary: bounded(&format!("simulated report {seq}")),
            text: bounded("sent by vigia-sim"),
            reporter: bounded("sim"),
            contact: bounded("ext 0"),
            urgency: Urgency::Medium,
            snapshot: heapless::Vec::new(),
            open_faults: heapless::Vec::new(),
        }),
    }
}

fn now_ms() -> u64 {
    vigia_protocol::now_ms()
}

/// One device's life: connect, birth, status, events, acks, resends.
async fn device(
    args: Arc<Args>,
    index: usize,
    broker: (String, u16),
    gate: Arc<Semaphore>,
    fleet: Arc<Fleet>,
) -> anyhow::Result<DeviceResult> {
    let mut arrival = Arrival(&fleet, false);
    let faulty = args.faulty.unwrap_or(args.devices);
    let events = if index < faulty { args.events } else { 0 };
    let id = format!("{}-{:05}", args.id_prefix, index + 1);
    let dev = DeviceId::new(&id).map_err(|e| anyhow::anyhow!("device id {id:?}: {e}"))?;
    let topics = Topics::new(&args.topic_prefix).map_err(|e| anyhow::anyhow!("{e}"))?;
    let instance = match args.instance_base {
        Some(base) => base + index as u64,
        // A new instance every run, as a fresh spool would have.
        None => now_ms() ^ ((index as u64 + 1) << 40),
    };
    let boot = 1;
    let status = |online: bool| {
        encode(&Status {
            v: VERSION,
            device: dev.clone(),
            instance,
            online,
            boot,
            ts: now_ms(),
        })
    };
    let mut opts = MqttOptions::new(&id, &broker.0, broker.1);
    opts.set_keep_alive(args.keep_alive.duration().max(Duration::from_secs(1)))
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_last_will(LastWill::new(
            topics.up(&dev, UpKind::Status).as_str(),
            status(false)?,
            QoS::AtLeastOnce,
            true,
        ));
    let (client, mut el) = AsyncClient::new(opts, if events > 0 { 1024 } else { 16 });
    // As the agent: each packet goes out at once (TCP_NODELAY).
    let mut net = el.network_options();
    net.set_tcp_nodelay(true);
    el.set_network_options(net);
    let permit = gate.acquire().await?;
    // Connected once the first ConnAck comes; the permit limits connection bursts.
    let connected = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match el.poll().await {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    drop(permit);
    match connected {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("{id}: cannot connect to the broker: {e}"),
        Err(_) => bail!("{id}: no ConnAck within 30 s"),
    }
    for kind in [DownKind::Ack, DownKind::Cmd] {
        client
            .subscribe(topics.down(&dev, kind).as_str(), QoS::AtLeastOnce)
            .await?;
    }
    client
        .subscribe(topics.collector_status().as_str(), QoS::AtLeastOnce)
        .await?;
    let birth = Birth {
        v: VERSION,
        device: dev.clone(),
        instance,
        boot,
        ts: now_ms(),
        agent_version: bounded(concat!("vigia-sim ", env!("CARGO_PKG_VERSION"))),
        hostname: bounded(&id),
        os: bounded("simulated"),
        os_version: bounded("1"),
        kernel: bounded("sim"),
        arch: bounded(std::env::consts::ARCH),
        cpu_model: bounded("simulated cpu"),
        cpu_cores: 1,
        ram_bytes: 1 << 30,
        dmi: Default::default(),
        disks: heapless::Vec::new(),
        nics: heapless::Vec::new(),
        tags: heapless::Vec::from_iter([bounded("site=sim")]),
    };
    let up_event = topics.up(&dev, UpKind::Event).to_string();
    client
        .publish(
            topics.up(&dev, UpKind::Birth).as_str(),
            QoS::AtLeastOnce,
            true,
            encode(&birth)?,
        )
        .await?;
    client
        .publish(
            topics.up(&dev, UpKind::Status).as_str(),
            QoS::AtLeastOnce,
            true,
            status(true)?,
        )
        .await?;

    let mut out = DeviceResult {
        id: id.clone(),
        instance,
        ..Default::default()
    };
    // Connected: wait for the fleet, then for this device's turn in the spread.
    arrival.arrive();
    // The broker's PubAcks of the birth and status may come meanwhile: `--no-wait`
    // counts them.
    let mut early_pubacks = 0u64;
    let all = tokio::select! {
        at = fleet.all_connected() => at,
        // Keep the connection serviced (keep-alive, the retained messages) meanwhile.
        _ = async {
            loop {
                match el.poll().await {
                    Ok(MqttEvent::Incoming(Packet::PubAck(_))) => early_pubacks += 1,
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        } => unreachable!(),
    };
    let start = if faulty > 1 && index < faulty {
        all + args.spread.duration().mul_f64(index as f64 / faulty as f64)
    } else {
        all
    };
    let hold_until = tokio::time::Instant::from_std(all + args.hold.duration());
    let mut opened: HashSet<(FaultKind, String)> = HashSet::new();
    if args.no_wait {
        tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
        publish_all(
            &args,
            events,
            early_pubacks,
            &dev,
            instance,
            boot,
            &up_event,
            &client,
            &mut el,
            &mut out,
        )
        .await?;
        goodbye(&client, &mut el, &topics, &dev, status(false)?).await?;
        return Ok(out);
    }
    // Events as a spool would hold them, until acked.
    let mut pending: BTreeMap<u64, (Vec<u8>, Instant)> = BTreeMap::new();
    let mut next_seq = 1;
    let mut next_send = tokio::time::Instant::from_std(start);
    let deadline = tokio::time::Instant::from_std(all + args.spread.duration()).max(hold_until)
        + args.deadline.duration();
    let mut last_progress = Instant::now();
    let stall = Duration::from_secs(5);
    loop {
        let now = tokio::time::Instant::now();
        if next_seq > events && pending.is_empty() && now >= hold_until {
            break;
        }
        if now >= deadline {
            break;
        }
        let send_now = next_seq <= events;
        let wake = if send_now {
            next_send
        } else {
            tokio::time::Instant::now() + Duration::from_millis(500)
        };
        tokio::select! {
            ev = el.poll() => match ev {
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    if p.topic.ends_with("/ack") {
                        let Ok(ack) = decode::<Ack>(&p.payload) else { continue };
                        if ack.instance != instance {
                            continue;
                        }
                        for r in &ack.stored {
                            for s in r.from..=r.to {
                                if let Some((_, at)) = pending.remove(&s) {
                                    out.ack_latency.push(at.elapsed());
                                    last_progress = Instant::now();
                                    out.last_ack = Some(last_progress);
                                }
                                out.acked.insert(s);
                            }
                        }
                        for r in &ack.rejected {
                            if pending.remove(&r.seq).is_some() {
                                out.rejected += 1;
                            }
                        }
                    } else if p.topic.ends_with("/cmd") {
                        // Acknowledge commands as the agent does, so the collector's
                        // outbox empties.
                        if let Ok(cmd) = decode::<Cmd>(&p.payload) {
                            if cmd.id != 0 {
                                let mut ids = heapless::Vec::new();
                                let _ = ids.push(cmd.id);
                                let ack = CmdAck { v: VERSION, device: dev.clone(), ids };
                                client.publish(topics.up(&dev, UpKind::CmdAck).as_str(), QoS::AtLeastOnce, false, encode(&ack)?).await?;
                                out.commands += 1;
                            }
                        }
                    } else if p.topic.ends_with("collector/status") {
                        // The collector came (back) online: send again what it has not
                        // acknowledged, as the agent does.
                        let back = decode::<CollectorStatus>(&p.payload).is_ok_and(|s| s.online);
                        if back && !pending.is_empty() {
                            for (payload, _) in pending.values() {
                                client.publish(up_event.as_str(), QoS::AtLeastOnce, false, payload.clone()).await?;
                                out.resends += 1;
                            }
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    // rumqttc reconnects on the next poll; pause so a dead broker is
                    // not polled in a tight loop.
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            _ = tokio::time::sleep_until(wake) => {
                if send_now {
                    let body = body(args.mix, next_seq);
                    // Detected now: the first raise of a fault opens its incident.
                    if let EventBody::Fault(f) = &body {
                        if f.action == FaultAction::Raised
                            && opened.insert((f.kind, f.subject.to_string()))
                        {
                            let key = (id.clone(), f.kind.as_str().to_owned(), f.subject.to_string());
                            out.detected.push((key, Instant::now()));
                        }
                    }
                    let ev = Event {
                        v: VERSION,
                        device: dev.clone(),
                        instance,
                        seq: next_seq,
                        boot,
                        ts: now_ms(),
                        body,
                    };
                    let payload = encode(&ev)?;
                    client.publish(up_event.as_str(), QoS::AtLeastOnce, false, payload.clone()).await?;
                    pending.insert(next_seq, (payload, Instant::now()));
                    out.sent += 1;
                    next_seq += 1;
                    next_send = if args.mix == Mix::Storm {
                        tokio::time::Instant::now()
                    } else {
                        tokio::time::Instant::now() + args.interval.duration()
                    };
                } else if last_progress.elapsed() >= stall {
                    // Acks stopped coming (a broker dropped something): send the rest again.
                    for (payload, _) in pending.values() {
                        client.publish(up_event.as_str(), QoS::AtLeastOnce, false, payload.clone()).await?;
                        out.resends += 1;
                    }
                    last_progress = Instant::now();
                }
            }
        }
    }
    goodbye(&client, &mut el, &topics, &dev, status(false)?).await?;
    Ok(out)
}

/// A clean goodbye: offline status, retained, then disconnect.
async fn goodbye(
    client: &AsyncClient,
    el: &mut rumqttc::EventLoop,
    topics: &Topics,
    dev: &DeviceId,
    offline: Vec<u8>,
) -> anyhow::Result<()> {
    client
        .publish(
            topics.up(dev, UpKind::Status).as_str(),
            QoS::AtLeastOnce,
            true,
            offline,
        )
        .await?;
    client.disconnect().await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while el.poll().await.is_ok() {}
    })
    .await;
    Ok(())
}

/// `--no-wait`: every event published, each acknowledged by the broker (so it holds
/// them), none waited for from the collector.
#[allow(clippy::too_many_arguments)]
async fn publish_all(
    args: &Args,
    events: u64,
    early_pubacks: u64,
    dev: &DeviceId,
    instance: u64,
    boot: u64,
    up_event: &str,
    client: &AsyncClient,
    el: &mut rumqttc::EventLoop,
    out: &mut DeviceResult,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + args.deadline.duration();
    // The birth and the online status are QoS 1 publishes too: their PubAcks count.
    let mut unacked: u64 = 2u64.saturating_sub(early_pubacks);
    let mut next_seq = 1;
    // The next event, encoded once however many times the request queue is full.
    let encoded = |seq: u64| {
        encode(&Event {
            v: VERSION,
            device: dev.clone(),
            instance,
            seq,
            boot,
            ts: now_ms(),
            body: body(args.mix, seq),
        })
    };
    let mut next = encoded(next_seq)?;
    while next_seq <= events || unacked > 0 {
        // Queue events until the client's request queue is full. `try_publish`, not
        // `publish` raced against the event loop: a publish cut short there may have been
        // queued already, and sending it again would duplicate the event.
        while next_seq <= events {
            match client.try_publish(up_event, QoS::AtLeastOnce, false, next.clone()) {
                Ok(()) => {
                    out.sent += 1;
                    unacked += 1;
                    next_seq += 1;
                    if next_seq <= events {
                        next = encoded(next_seq)?;
                    }
                }
                Err(rumqttc::ClientError::TryRequest(_)) => break,
                Err(e) => bail!("{}: {e}", dev.as_str()),
            }
        }
        match tokio::time::timeout_at(deadline, el.poll()).await {
            Err(_) => bail!(
                "{}: the broker did not take every event in time",
                dev.as_str()
            ),
            Ok(Ok(MqttEvent::Incoming(Packet::PubAck(_)))) => unacked -= 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("{}: connection lost while publishing: {e}", dev.as_str()),
        }
    }
    Ok(())
}

/// What the collector stored for `id`'s `instance`: how many, and gaps.
fn stored(api: &str, token: &str, id: &str, instance: u64) -> anyhow::Result<(u64, usize)> {
    let url = format!(
        "{}/api/devices/{id}/events?instance={instance}",
        api.trim_end_matches('/')
    );
    let mut resp = ureq::get(&url)
        .header("authorization", &format!("Bearer {token}"))
        .call()
        .with_context(|| format!("GET {url}"))?;
    let v: serde_json::Value = resp.body_mut().read_json()?;
    let count = v["count"].as_u64().unwrap_or(0);
    let gaps = v["missing"].as_array().map_or(0, Vec::len);
    Ok((count, gaps))
}

/// What the feed showed: when each new incident arrived.
#[derive(Debug, Default)]
struct FeedSeen {
    ready: bool,
    opened: HashMap<OpenKey, Instant>,
    /// `lagged` or `reset`: the stream fell behind and missed events.
    gaps: u64,
}

/// Follows `GET /api/feed` on a thread of its own (a blocking read of the SSE stream),
/// noting when each `opened` incident arrives.
fn watch_feed(api: &str, token: &str) -> anyhow::Result<Arc<Mutex<FeedSeen>>> {
    let url = format!("{}/api/feed", api.trim_end_matches('/'));
    let resp = ureq::get(&url)
        .header("authorization", &format!("Bearer {token}"))
        .header("accept", "text/event-stream")
        .call()
        .with_context(|| format!("GET {url}"))?;
    let seen = Arc::new(Mutex::new(FeedSeen::default()));
    let out = seen.clone();
    std::thread::spawn(move || {
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        let mut event = String::new();
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_owned();
            } else if let Some(data) = line.strip_prefix("data:") {
                let at = Instant::now();
                let mut seen = out.lock().unwrap_or_else(|e| e.into_inner());
                match event.as_str() {
                    "ready" => seen.ready = true,
                    "lagged" | "reset" => {
                        seen.ready = true;
                        seen.gaps += 1;
                    }
                    "incident" => {
                        let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                            continue;
                        };
                        if v["opened"].as_bool() != Some(true) {
                            continue;
                        }
                        let i = &v["incident"];
                        let key = (
                            i["device"].as_str().unwrap_or("").to_owned(),
                            i["kind"].as_str().unwrap_or("").to_owned(),
                            i["subject"].as_str().unwrap_or("").to_owned(),
                        );
                        seen.opened.entry(key).or_insert(at);
                    }
                    _ => {}
                }
            }
        }
    });
    let until = Instant::now() + Duration::from_secs(10);
    while !seen.lock().unwrap_or_else(|e| e.into_inner()).ready {
        if Instant::now() >= until {
            bail!("the live feed did not start within 10 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(seen)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let broker = BrokerUrl::parse(&args.broker).map_err(|e| anyhow::anyhow!("--broker: {e}"))?;
    if broker.tls {
        bail!("--broker: the simulator speaks plain MQTT (mqtt://)");
    }
    let feed = match (&args.api, &args.token, args.watch_feed) {
        (Some(api), Some(token), true) => Some(watch_feed(api, token)?),
        (_, _, true) => bail!("--watch-feed needs --api and a token"),
        _ => None,
    };
    let rt = tokio::runtime::Runtime::new()?;
    let started = Instant::now();
    let fleet = Arc::new(Fleet {
        devices: args.devices,
        arrived: AtomicUsize::new(0),
        all: tokio::sync::watch::channel(None).0,
    });
    let all_at: Arc<OnceLock<Instant>> = Arc::default();
    let results = rt.block_on(async {
        let gate = Arc::new(Semaphore::new(args.connect_burst.max(1)));
        let tasks: Vec<_> = (0..args.devices)
            .map(|i| {
                tokio::spawn(device(
                    args.clone(),
                    i,
                    (broker.host.clone(), broker.port),
                    gate.clone(),
                    fleet.clone(),
                ))
            })
            .collect();
        // Say when the fleet is connected, for a script measuring the steady state.
        let (f, a) = (fleet.clone(), all_at.clone());
        tokio::spawn(async move {
            let at = f.all_connected().await;
            let _ = a.set(at);
            println!(
                "connected {} devices in {:.1} s",
                f.devices,
                at.duration_since(started).as_secs_f64()
            );
        });
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await?);
        }
        Ok::<_, anyhow::Error>(out)
    })?;
    let elapsed = started.elapsed();
    let mut failures = Vec::new();
    let mut devices = Vec::new();
    for r in results {
        match r {
            Ok(d) => devices.push(d),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let sent: u64 = devices.iter().map(|d| d.sent).sum();
    let acked: u64 = devices.iter().map(|d| d.acked.len() as u64).sum();
    let rejected: u64 = devices.iter().map(|d| d.rejected).sum();
    let resends: u64 = devices.iter().map(|d| d.resends).sum();
    let commands: u64 = devices.iter().map(|d| d.commands).sum();
    let mut lat: Vec<Duration> = devices
        .iter()
        .flat_map(|d| d.ack_latency.iter().copied())
        .collect();
    lat.sort();
    println!(
        "devices {}  mix {:?}  sent {sent}  acked {acked}  rejected {rejected}  resent {resends}  commands {commands}  in {:.1} s ({:.0} events/s)",
        devices.len(),
        args.mix,
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64().max(1e-3)
    );
    println!(
        "publish to ack: p50 {:.1} ms  p99 {:.1} ms",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );
    // From the first event sent to the last one acknowledged (stored and flushed).
    let first = devices
        .iter()
        .flat_map(|d| d.detected.first().map(|(_, at)| *at))
        .min();
    let last = devices.iter().filter_map(|d| d.last_ack).max();
    if let (Some(first), Some(last)) = (first, last) {
        println!(
            "first event to last ack: {:.2} s",
            last.saturating_duration_since(first).as_secs_f64()
        );
    }
    let mut wrong = failures;
    if let Some(feed) = &feed {
        // Give the feed a moment past the last ack to carry the last incidents.
        let detected: Vec<&(OpenKey, Instant)> =
            devices.iter().flat_map(|d| d.detected.iter()).collect();
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = feed.lock().unwrap_or_else(|e| e.into_inner());
            let all = detected.iter().all(|(k, _)| seen.opened.contains_key(k));
            if all || Instant::now() >= until {
                break;
            }
            drop(seen);
            std::thread::sleep(Duration::from_millis(20));
        }
        let seen = feed.lock().unwrap_or_else(|e| e.into_inner());
        let mut open_lat: Vec<Duration> = detected
            .iter()
            .filter_map(|(k, at)| seen.opened.get(k).map(|s| s.saturating_duration_since(*at)))
            .collect();
        open_lat.sort();
        let missing = detected.len() - open_lat.len();
        println!(
            "detection to incident on the feed: {} of {} seen  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  stream gaps {}",
            open_lat.len(),
            detected.len(),
            ms(percentile(&open_lat, 0.5)),
            ms(percentile(&open_lat, 0.99)),
            ms(open_lat.last().copied().unwrap_or_default()),
            seen.gaps
        );
        if missing > 0 && seen.gaps == 0 {
            wrong.push(format!("{missing} new incident(s) never came on the feed"));
        }
    }
    for d in devices.iter().filter(|_| !args.no_wait) {
        if d.acked.len() as u64 + d.rejected != d.sent {
            wrong.push(format!(
                "{}: sent {}, acked {}, rejected {}",
                d.id,
                d.sent,
                d.acked.len(),
                d.rejected
            ));
        }
    }
    if let (Some(api), Some(token)) = (&args.api, &args.token) {
        // With --no-wait the collector may still be storing: ask again until it has
        // everything or the deadline passes.
        let until = Instant::now() + args.deadline.duration();
        let (total, differ) = loop {
            let mut total = 0;
            let mut differ = Vec::new();
            // A device that sent nothing has nothing to compare.
            for d in devices.iter().filter(|d| d.sent > 0) {
                let (count, gaps) = stored(api, token, &d.id, d.instance)?;
                total += count;
                if count != d.sent - d.rejected || gaps > 0 {
                    differ.push(format!(
                        "{}: sent {}, stored {count}, {gaps} gaps",
                        d.id, d.sent
                    ));
                }
            }
            if differ.is_empty() || !args.no_wait || Instant::now() >= until {
                break (total, differ);
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        wrong.extend(differ);
        let lost = sent.saturating_sub(rejected).saturating_sub(total);
        let extra = total.saturating_sub(sent);
        println!("stored {total}  lost {lost}  extra {extra}");
    } else if args.api.is_some() {
        bail!("--api needs a token (--token or VIGIA_TOKEN) to check what was stored");
    }
    if !wrong.is_empty() {
        for w in wrong.iter().take(20) {
            eprintln!("vigia-sim: {w}");
        }
        bail!("{} device(s) differ", wrong.len());
    }
    Ok(())
}
