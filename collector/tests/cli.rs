//! The `vigia-collector` binary: `run` prints where it listens and stops cleanly on
//! SIGTERM; the client commands talk to it; config errors name the file and the field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(20);

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigia-collector"))
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_prints_addresses_serves_clients_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("collector.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n[mqtt]\nembedded_port = 0\n[http]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let child = bin()
        .args(["--config", cfg.to_str().unwrap(), "run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let (tx, rx) = mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut mqtt = None;
    let mut http = None;
    let end = Instant::now() + DEADLINE;
    while mqtt.is_none() || http.is_none() {
        let line = rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .expect("the two listening lines");
        if let Some(u) = line.strip_prefix("mqtt listening on ") {
            mqtt = Some(u.to_string());
        }
        if let Some(u) = line.strip_prefix("http listening on ") {
            http = Some(u.to_string());
        }
    }
    let (mqtt, http) = (mqtt.unwrap(), http.unwrap());
    assert!(mqtt.starts_with("mqtt://127.0.0.1:"), "{mqtt}");
    assert!(http.starts_with("http://127.0.0.1:"), "{http}");

    // Without a token the client commands are refused, and told how to sign in.
    let home = dir.path().join("home");
    // The client commands with the token file under `home` (one per person).
    let as_in = |home: &std::path::Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vigia-collector"));
        c.env("XDG_CONFIG_HOME", home).env_remove("VIGIA_TOKEN");
        c
    };
    let bin = || as_in(&home);
    let out = bin().args(["--api", &http, "incidents"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("401") && err.contains("vigia-collector login"),
        "{err}"
    );
    // `login` with the first admin's password keeps a token for the other commands.
    let password = std::fs::read_to_string(dir.path().join("data/initial-admin-password")).unwrap();
    let login_in = |home: &std::path::Path, user: &str, password: &str| {
        let mut c = as_in(home)
            .args(["--api", &http, "login", "--user", user, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        c.wait_with_output().unwrap()
    };
    let login = |user: &str, password: &str| login_in(&home, user, password);
    let out = login("admin", "wrong password");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong login or password"));
    let out = login("admin", &password);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token_file = home.join("vigia/collector-token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the token file is private: {mode:o}");
    }
    // An admin adds a technician; the made-up password is shown once.
    let out = bin()
        .args([
            "--api",
            &http,
            "user",
            "add",
            "tomas",
            "--role",
            "technician",
            "--level",
            "2",
        ])
        .args(["--group", "soporte"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let tomas_password = said
        .lines()
        .find_map(|l| l.strip_prefix("password (shown once): "))
        .unwrap_or_else(|| panic!("no password in {said}"))
        .to_owned();
    let out = bin()
        .args(["--api", &http, "user", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("tomas") && list.contains("technician") && list.contains("soporte"),
        "{list}"
    );
    // A technician may not manage accounts.
    let out = bin()
        .args([
            "--api", &http, "token", "create", "--name", "x", "--scope", "read",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tomas_home = dir.path().join("tomas");
    let tech = login_in(&tomas_home, "tomas", &tomas_password);
    assert!(tech.status.success());
    let out = as_in(&tomas_home)
        .args(["--api", &http, "user", "add", "eve", "--role", "admin"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("403") && err.contains("only an admin"),
        "{err}"
    );

    let out = bin().args(["--api", &http, "incidents"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no incidents\n");
    let out = bin()
        .args(["--api", &http, "devices", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let out = bin()
        .args(["--api", &http, "incidents", "--state", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown state"));
    // The old `incidents` usage and the new `incidents list` agree.
    let out = bin()
        .args([
            "--api",
            &http,
            "incidents",
            "list",
            "--state",
            "open",
            "--level",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no incidents\n");
    // An action on an incident that does not exist: the API's 404 in plain words.
    let out = bin()
        .args(["--api", &http, "incidents", "close", "7"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no incident 7") && err.contains("404"),
        "{err}"
    );
    // The export answers with the CSV header even when empty.
    let out = bin()
        .args([
            "--api",
            &http,
            "export",
            "--from",
            "2026-01-01",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("date,incident,device"));

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let end = Instant::now() + DEADLINE;
    let exit = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "collector did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    assert!(token_file.exists());

    // Stopped: the client commands say so plainly.
    let out = bin().args(["--api", &http, "devices"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no collector answers"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn print_rules_prints_rules_a_config_can_load() {
    let out = bin().arg("print-rules").output().unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, &out.stdout).unwrap();
    let cfg = dir.path().join("collector.toml");
    std::fs::write(
        &cfg,
        format!("[workflow]\nrules = \"{}\"\n", rules.display()),
    )
    .unwrap();
    assert!(vigia_collector::config::Config::load(&cfg).is_ok());
    // A broken rules file is named, with the field that points at it.
    std::fs::write(&rules, "nonsense = [").unwrap();
    let err = vigia_collector::config::Config::load(&cfg)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("workflow.rules") && err.contains("rules.toml"),
        "{err}"
    );
}

#[test]
fn print_config_parses_back_and_bad_config_names_file_and_field() {
    let out = bin().arg("print-config").output().unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("printed.toml");
    std::fs::write(&cfg, &out.stdout).unwrap();
    assert!(vigia_collector::config::Config::load(&cfg).is_ok());

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[mqtt]\nprefix = \"a/#\"\n").unwrap();
    let out = bin()
        .args(["--config", bad.to_str().unwrap(), "run"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("mqtt.prefix"),
        "{err}"
    );
}
