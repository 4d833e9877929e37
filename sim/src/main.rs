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
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
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
}

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
) -> anyhow::Result<DeviceResult> {
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
    opts.set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_last_will(LastWill::new(
            topics.up(&dev, UpKind::Status).as_str(),
            status(false)?,
            QoS::AtLeastOnce,
            true,
        ));
    let (client, mut el) = AsyncClient::new(opts, 1024);
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
    if args.no_wait {
        publish_all(
            &args, &dev, instance, boot, &up_event, &client, &mut el, &mut out,
        )
        .await?;
        goodbye(&client, &mut el, &topics, &dev, status(false)?).await?;
        return Ok(out);
    }
    // Events as a spool would hold them, until acked.
    let mut pending: BTreeMap<u64, (Vec<u8>, Instant)> = BTreeMap::new();
    let mut next_seq = 1;
    let mut next_send = tokio::time::Instant::now();
    let deadline = tokio::time::Instant::now() + args.deadline.duration();
    let mut last_progress = Instant::now();
    let stall = Duration::from_secs(5);
    loop {
        if next_seq > args.events && pending.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        let send_now = next_seq <= args.events;
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
                    let ev = Event {
                        v: VERSION,
                        device: dev.clone(),
                        instance,
                        seq: next_seq,
                        boot,
                        ts: now_ms(),
                        body: body(args.mix, next_seq),
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
    let mut unacked: u64 = 2;
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
    while next_seq <= args.events || unacked > 0 {
        // Queue events until the client's request queue is full. `try_publish`, not
        // `publish` raced against the event loop: a publish cut short there may have been
        // queued already, and sending it again would duplicate the event.
        while next_seq <= args.events {
            match client.try_publish(up_event, QoS::AtLeastOnce, false, next.clone()) {
                Ok(()) => {
                    out.sent += 1;
                    unacked += 1;
                    next_seq += 1;
                    if next_seq <= args.events {
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
    let rt = tokio::runtime::Runtime::new()?;
    let started = Instant::now();
    let results = rt.block_on(async {
        let gate = Arc::new(Semaphore::new(args.connect_burst.max(1)));
        let tasks: Vec<_> = (0..args.devices)
            .map(|i| {
                tokio::spawn(device(
                    args.clone(),
                    i,
                    (broker.host.clone(), broker.port),
                    gate.clone(),
                ))
            })
            .collect();
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
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3
    );
    let mut wrong = failures;
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
            for d in &devices {
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
