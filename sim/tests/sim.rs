//! The simulator against a real collector (embedded broker, port 0): many devices, each
//! with its own connection, all their events stored exactly once, and the simulator
//! fails when the collector does not have what it sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use vigia_collector::config::Config;

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config {
        data_dir: dir.join("data"),
        ..Config::default()
    };
    c.mqtt.embedded_port = 0;
    c.http.listen = "127.0.0.1:0".into();
    c
}

fn read_token(base: &str, password: &str) -> String {
    let mut r = ureq::post(&format!("{base}/api/tokens"))
        .send_json(serde_json::json!({
            "login": "admin", "password": password, "scope": "read", "name": "sim test"
        }))
        .unwrap();
    let v: serde_json::Value = r.body_mut().read_json().unwrap();
    v["token"].as_str().unwrap().to_owned()
}

fn sim(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vigia-sim"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_devices_are_all_stored_once_and_a_difference_fails() {
    let dir = tempfile::tempdir().unwrap();
    let running = vigia_collector::start(config(dir.path())).await.unwrap();
    let base = format!("http://{}", running.http_addr);
    let password = running.first_admin.as_ref().unwrap().password.clone();
    let mqtt = running.mqtt_url.clone();
    // A second collector, which never hears these devices: checking against it must fail.
    let dir2 = tempfile::tempdir().unwrap();
    let other = vigia_collector::start(config(dir2.path())).await.unwrap();
    let base2 = format!("http://{}", other.http_addr);
    let password2 = other.first_admin.as_ref().unwrap().password.clone();
    let (b, m) = (base.clone(), mqtt.clone());
    tokio::task::spawn_blocking(move || {
        let token = read_token(&b, &password);
        for (mix, devices, events) in [
            ("steady", "30", "12"),
            ("reports", "5", "3"),
            ("storm", "20", "4"),
            ("updates", "4", "30"),
        ] {
            let (ok, out) = sim(&[
                "--broker",
                &m,
                "--api",
                &b,
                "--token",
                &token,
                "--mix",
                mix,
                "--devices",
                devices,
                "--events",
                events,
                "--interval",
                "5ms",
                "--id-prefix",
                mix,
                "--deadline",
                "60s",
            ]);
            assert!(ok, "{mix}: {out}");
            assert!(
                out.contains("lost 0") && out.contains("extra 0"),
                "{mix}: {out}"
            );
            let n: u64 = devices.parse::<u64>().unwrap() * events.parse::<u64>().unwrap();
            assert!(
                out.contains(&format!("sent {n}  acked {n}")),
                "{mix}: {out}"
            );
        }
        // --no-wait: published without waiting for acks, then checked once the collector
        // has stored them all.
        let (ok, out) = sim(&[
            "--broker",
            &m,
            "--api",
            &b,
            "--token",
            &token,
            "--mix",
            "updates",
            "--devices",
            "3",
            "--events",
            "40",
            "--no-wait",
            "--id-prefix",
            "nowait",
            "--deadline",
            "60s",
        ]);
        assert!(ok, "no-wait: {out}");
        assert!(
            out.contains("sent 120") && out.contains("stored 120  lost 0  extra 0"),
            "no-wait: {out}"
        );
        // Acknowledged by the first collector, checked against the second: it fails, and
        // says what is missing.
        let token2 = read_token(&base2, &password2);
        let (ok, out) = sim(&[
            "--broker",
            &m,
            "--api",
            &base2,
            "--token",
            &token2,
            "--devices",
            "2",
            "--events",
            "3",
            "--interval",
            "5ms",
            "--id-prefix",
            "elsewhere",
        ]);
        assert!(!ok, "a difference passed: {out}");
        assert!(out.contains("stored 0") && out.contains("lost 6"), "{out}");
        // No broker at all: it fails too, saying so.
        let (ok, out) = sim(&[
            "--broker",
            "mqtt://127.0.0.1:1",
            "--devices",
            "1",
            "--events",
            "1",
            "--deadline",
            "2s",
        ]);
        assert!(!ok && out.contains("cannot connect"), "{out}");
    })
    .await
    .unwrap();
    other.shutdown().await.unwrap();
    running.shutdown().await.unwrap();
}
