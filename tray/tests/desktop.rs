//! `vigia-tray` on a real (virtual) desktop: Xvfb, a private session D-Bus, zenity, and a
//! real collector and agent (in this process, on free ports, the agent's readings
//! replayed from a file). The tray host is XFCE's panel (Debian's `xfce4-panel`: its
//! notification area is the StatusNotifierWatcher the tray registers with, and shows the
//! icon by the clock). The test serves an org.freedesktop.Notifications that records what
//! the tray announces, reads the item and clicks its menu over D-Bus as the panel does,
//! and types into the windows with xdotool. Screenshots of the screen, panel and window,
//! go to `target/screenshots/`.
//!
//! Without the desktop tools the desktop tests say "skipped", except under CI (`CI`
//! set), where `.ci/run` installs them and a missing one is a failure. The last test,
//! the terminal prompt without a display, needs none of them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zbus::zvariant::{OwnedValue, Value as ZValue};

/// How long any single wait may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// What the desktop tests run (Debian: xvfb dbus xfce4-panel zenity xdotool imagemagick).
const TOOLS: [&str; 6] = [
    "Xvfb",
    "dbus-daemon",
    "xfce4-panel",
    "zenity",
    "xdotool",
    "import",
];

/// The panel: one bar on top, the notification area (systray: it holds the
/// StatusNotifierWatcher) and the clock at its right end.
const PANEL_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<channel name="xfce4-panel" version="1.0">
  <property name="configver" type="int" value="2"/>
  <property name="panels" type="array">
    <value type="int" value="1"/>
    <property name="panel-1" type="empty">
      <property name="position" type="string" value="p=6;x=0;y=0"/>
      <property name="length" type="uint" value="100"/>
      <property name="size" type="uint" value="32"/>
      <property name="icon-size" type="uint" value="24"/>
      <property name="plugin-ids" type="array">
        <value type="int" value="1"/>
        <value type="int" value="2"/>
        <value type="int" value="3"/>
      </property>
    </property>
  </property>
  <property name="plugins" type="empty">
    <property name="plugin-1" type="string" value="separator">
      <property name="expand" type="bool" value="true"/>
      <property name="style" type="uint" value="0"/>
    </property>
    <property name="plugin-2" type="string" value="systray"/>
    <property name="plugin-3" type="string" value="clock"/>
  </property>
</channel>
"#;

fn have(tool: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    vigia_tray::dialog::find_program(tool, &path).is_some()
}

/// True when the tools are missing outside CI (the test is skipped); under CI a missing
/// tool fails the test.
fn skip_without_desktop() -> bool {
    let missing: Vec<_> = TOOLS.iter().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return false;
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI must install {missing:?} (see .ci/run: xvfb dbus xfce4-panel zenity xdotool imagemagick)"
    );
    eprintln!(
        "skipped: {missing:?} not installed (apt-get install xvfb dbus xfce4-panel zenity xdotool imagemagick)"
    );
    true
}

/// Polls `f` every few milliseconds until it returns `Some`; fails after [`DEADLINE`].
async fn poll<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let end = Instant::now() + DEADLINE;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A child process, killed and reaped when dropped, its output kept.
struct Proc {
    name: &'static str,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `cmd`; its first stdout line is returned when `first_line` (Xvfb's display
    /// number, dbus-daemon's address), read before anything else.
    fn spawn(name: &'static str, mut cmd: Command, first_line: bool) -> (Proc, Option<String>) {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let first = first_line.then(|| {
            let mut l = String::new();
            stdout
                .read_line(&mut l)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!l.is_empty(), "{name} exited before saying where it is");
            l.trim().to_owned()
        });
        let streams: [Box<dyn BufRead + Send>; 2] = [
            Box::new(stdout),
            Box::new(BufReader::new(child.stderr.take().unwrap())),
        ];
        for s in streams {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in s.lines().map_while(Result::ok) {
                    if std::env::var_os("VIGIA_TEST_ECHO").is_some() {
                        eprintln!("[{name}] {line}");
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        (Proc { name, child, log }, first)
    }

    fn output(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} output ---\n{}", self.name, self.output());
        }
    }
}

/// A private desktop: an X server, a session bus and XFCE's panel of its own.
struct Desktop {
    display: String,
    bus: String,
    /// The panel's settings (`XDG_CONFIG_HOME` of the panel and of xfconfd).
    config: tempfile::TempDir,
    // Dropped in this order: the panel before its settings daemon, the bus, the display.
    _panel: Option<Proc>,
    _xfconf: Option<Proc>,
    _dbus: Proc,
    _x: Proc,
}

/// Whether `name` has an owner on the bus.
async fn owned(conn: &zbus::Connection, name: &'static str) -> bool {
    let Ok(bus) = zbus::fdo::DBusProxy::new(conn).await else {
        return false;
    };
    let Ok(name) = zbus::names::BusName::try_from(name) else {
        return false;
    };
    bus.name_has_owner(name).await.unwrap_or(false)
}

impl Desktop {
    async fn start() -> Desktop {
        // -displayfd: Xvfb picks a free display itself and prints it once it accepts clients.
        let mut x = Command::new("Xvfb");
        x.args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1024x768x24",
            "-nolisten",
            "tcp",
        ]);
        let (x, n) = Proc::spawn("Xvfb", x, true);
        let mut d = Command::new("dbus-daemon");
        d.args(["--session", "--nofork", "--print-address=1"]);
        let (dbus, addr) = Proc::spawn("dbus-daemon", d, true);
        let config = tempfile::Builder::new()
            .prefix("vigia-tray-panel-")
            .tempdir()
            .unwrap();
        let channel = config.path().join("xfce4/xfconf/xfce-perchannel-xml");
        std::fs::create_dir_all(&channel).unwrap();
        std::fs::write(channel.join("xfce4-panel.xml"), PANEL_XML).unwrap();
        let mut desktop = Desktop {
            display: format!(":{}", n.unwrap()),
            bus: addr.unwrap(),
            config,
            _panel: None,
            _xfconf: None,
            _dbus: dbus,
            _x: x,
        };
        desktop.start_panel().await;
        desktop
    }

    /// XFCE's settings daemon (started here, not by the bus, so that it reads this
    /// desktop's settings and stops with it), then the panel.
    async fn start_panel(&mut self) {
        let conn = zbus::connection::Builder::address(self.bus.as_str())
            .unwrap()
            .build()
            .await
            .unwrap();
        let service = std::fs::read_to_string("/usr/share/dbus-1/services/org.xfce.Xfconf.service")
            .expect("xfconf (a dependency of xfce4-panel)");
        let xfconfd = service
            .lines()
            .find_map(|l| l.strip_prefix("Exec="))
            .expect("Exec= in org.xfce.Xfconf.service")
            .trim()
            .to_owned();
        let mut c = self.command(&xfconfd, "C.UTF-8");
        c.env("XDG_CONFIG_HOME", self.config.path());
        self._xfconf = Some(Proc::spawn("xfconfd", c, false).0);
        poll("xfconfd on the bus", || async {
            owned(&conn, "org.xfce.Xfconf").await.then_some(())
        })
        .await;
        let mut c = self.command("xfce4-panel", "C.UTF-8");
        // No window manager here: the panel would wait for one first.
        c.arg("--disable-wm-check")
            .env("XDG_CONFIG_HOME", self.config.path());
        self._panel = Some(Proc::spawn("xfce4-panel", c, false).0);
        poll("the panel's StatusNotifierWatcher", || async {
            owned(&conn, "org.kde.StatusNotifierWatcher")
                .await
                .then_some(())
        })
        .await;
    }

    /// A command run on this desktop (its display and bus, a UTF-8 locale in `lang`).
    fn command(&self, program: &str, lang: &str) -> Command {
        let mut c = Command::new(program);
        c.env("DISPLAY", &self.display)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .env("LANG", lang)
            .env_remove("LC_ALL")
            .env_remove("LC_MESSAGES")
            .env_remove("WAYLAND_DISPLAY")
            // No accessibility bus in this session: GTK would wait for it.
            .env("NO_AT_BRIDGE", "1");
        c
    }

    async fn xdotool(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::from(self.command("xdotool", "C.UTF-8"))
            .args(args)
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The windows whose title matches the regex `title`.
    async fn windows(&self, title: &str) -> Vec<String> {
        self.xdotool(&["search", "--onlyvisible", "--name", title])
            .await
            .lines()
            .map(str::to_owned)
            .collect()
    }

    async fn window(&self, title: &str) -> String {
        self.window_other_than(title, "").await
    }

    /// A window titled `title` that is not `old` (the next one, once `old` is closed).
    async fn window_other_than(&self, title: &str, old: &str) -> String {
        poll(&format!("a window titled {title:?}"), || async {
            self.windows(title).await.into_iter().find(|w| w != old)
        })
        .await
    }

    /// Presses Return in `win` (its default button) and waits until it is gone.
    async fn close(&self, win: &str, title: &str) {
        self.xdotool(&["windowfocus", "--sync", win]).await;
        self.xdotool(&["key", "Return"]).await;
        poll(&format!("the window {title:?} to close"), || async {
            (!self.windows(title).await.iter().any(|w| w == win)).then_some(())
        })
        .await;
    }

    /// Saves the screen (the panel with the icon, and the window) as
    /// `target/screenshots/{name}.png` (ImageMagick's `import`).
    async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        let out = tokio::process::Command::from(self.command("import", "C.UTF-8"))
            .args(["-window", "root", &format!("png:{}", path.display())])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A screen's worth of pixels, not an empty or one-colour file.
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size > 2000, "{} is {size} bytes", path.display());
        path
    }
}

/// One notification as the server received it.
#[derive(Debug, Clone)]
struct Note {
    app: String,
    summary: String,
    body: String,
    urgency: Option<u8>,
}

/// A notification server that reads markup in bodies (as GNOME's, KDE's and dunst do)
/// and records everything it is asked to show.
#[derive(Default, Clone)]
struct Notifications {
    got: Arc<Mutex<Vec<Note>>>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Notifications {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        hints: HashMap<String, OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let urgency = hints.get("urgency").and_then(|v| u8::try_from(v).ok());
        let mut got = self.got.lock().unwrap();
        got.push(Note {
            app: app_name,
            summary,
            body,
            urgency,
        });
        u32::try_from(got.len()).unwrap()
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["body".into(), "body-markup".into()]
    }

    fn close_notification(&self, _id: u32) {}

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "vigia-test".into(),
            "vigia".into(),
            "1".into(),
            "1.2".into(),
        )
    }
}

/// A collector, an agent and the tray's bus peers.
struct World {
    /// Kept until the world is dropped: the collector's and agent's data live there.
    _dir: tempfile::TempDir,
    http: String,
    token: String,
    replay: PathBuf,
    socket: PathBuf,
    /// The agent's config file, for the programs that read one.
    config: PathBuf,
    stop_agent: Option<tokio::sync::oneshot::Sender<()>>,
    agent: Option<tokio::task::JoinHandle<()>>,
    _collector: vigia_collector::run::Running,
}

fn disk_line(mount: &str, used_pct: u64) -> String {
    format!(
        "{{\"disk\":[{{\"mount\":\"{mount}\",\"total_bytes\":1000000,\"avail_bytes\":{},\"files\":1000,\"files_free\":900}}]}}\n",
        (100 - used_pct) * 10_000
    )
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// `method` on the collector's API as its first admin (blocking: run off the runtime).
async fn api(w: &World, method: &'static str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (url, token) = (format!("{}{path}", w.http), w.token.clone());
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let auth = format!("Bearer {token}");
        let mut r = match body {
            Some(b) => agent
                .post(&url)
                .header("authorization", &auth)
                .send_json(b)
                .unwrap(),
            None if method == "GET" => agent
                .get(&url)
                .header("authorization", &auth)
                .call()
                .unwrap(),
            None => agent
                .post(&url)
                .header("authorization", &auth)
                .send_json(json!({}))
                .unwrap(),
        };
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (
            r.status().as_u16(),
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
    .await
    .unwrap()
}

impl World {
    /// A config naming a socket nobody serves.
    fn other_config(&self) -> PathBuf {
        let path = self.config.with_file_name("other.toml");
        let text = format!(
            "[ipc]\nsocket = \"{}\"\n",
            self.config.with_file_name("nobody.sock").display()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    async fn start() -> World {
        let dir = tempfile::Builder::new()
            .prefix("vigia-tray-")
            .tempdir()
            .unwrap();
        let mut cfg = vigia_collector::config::Config {
            data_dir: dir.path().join("collector"),
            ..Default::default()
        };
        cfg.mqtt.embedded_port = 0;
        cfg.http.listen = "127.0.0.1:0".into();
        let running = vigia_collector::run::start(cfg).await.unwrap();
        let http = format!("http://{}", running.http_addr);
        let admin = running.first_admin.as_ref().unwrap();
        let (login, password) = (admin.login.clone(), admin.password.clone());
        let url = format!("{http}/api/tokens");
        let token = tokio::task::spawn_blocking(move || {
            let mut r = ureq::post(&url)
                .send_json(json!({"login": login, "password": password, "scope": "admin", "name": "tray test"}))
                .unwrap();
            let v: Value = r.body_mut().read_json().unwrap();
            v["token"].as_str().unwrap().to_owned()
        })
        .await
        .unwrap();

        let replay = dir.path().join("readings.jsonl");
        append(&replay, &disk_line("/var", 40));
        let socket = dir.path().join("agent.sock");
        let text = format!(
            "interval = \"50ms\"\ndata_dir = \"{data}\"\n\n[device]\nid = \"tray-e2e\"\n\n\
             [mqtt]\nurl = \"{mqtt}\"\n\n[ipc]\nsocket = \"{sock}\"\n\n[detect]\nreplay = \"{replay}\"\n",
            data = dir.path().join("agent").display(),
            mqtt = running.mqtt_url,
            sock = socket.display(),
            replay = replay.display(),
        );
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, &text).unwrap();
        let acfg = vigia_agent::config::Config::from_toml(&text, "agent.toml").unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let agent = tokio::spawn(async move {
            vigia_agent::run(acfg, async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
        });
        World {
            _dir: dir,
            http,
            token,
            replay,
            socket,
            config,
            stop_agent: Some(stop_tx),
            agent: Some(agent),
            _collector: running,
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop_agent.take() {
            let _ = s.send(());
        }
        if let Some(a) = self.agent.take() {
            tokio::time::timeout(DEADLINE, a).await.unwrap().unwrap();
        }
    }
}

/// The tray's item and menu, read and clicked over D-Bus as a panel does.
struct Item {
    conn: zbus::Connection,
    service: String,
}

impl Item {
    async fn prop<T>(&self, name: &str) -> T
    where
        T: TryFrom<OwnedValue>,
        T::Error: Into<zbus::Error>,
    {
        // Properties.Get each time: no cached value may hide a change.
        let v: OwnedValue = self
            .conn
            .call_method(
                Some(self.service.as_str()),
                "/StatusNotifierItem",
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &("org.kde.StatusNotifierItem", name),
            )
            .await
            .unwrap()
            .body()
            .deserialize()
            .unwrap();
        T::try_from(v).map_err(Into::into).unwrap()
    }

    async fn icon(&self) -> String {
        self.prop::<String>("IconName").await
    }

    /// The menu's entries: (id, label, enabled).
    async fn menu(&self) -> Vec<(i32, String, bool)> {
        type Node = (i32, HashMap<String, OwnedValue>, Vec<OwnedValue>);
        let reply = self
            .conn
            .call_method(
                Some(self.service.as_str()),
                "/MenuBar",
                Some("com.canonical.dbusmenu"),
                "GetLayout",
                &(0i32, -1i32, Vec::<String>::new()),
            )
            .await
            .unwrap();
        let (_rev, root): (u32, Node) = reply.body().deserialize().unwrap();
        root.2
            .into_iter()
            .filter_map(|child| {
                let (id, props, _): Node = child.try_into().ok()?;
                let label = props
                    .get("label")
                    .and_then(|v| String::try_from(v.clone()).ok())?;
                let enabled = props
                    .get("enabled")
                    .and_then(|v| bool::try_from(v).ok())
                    .unwrap_or(true);
                Some((id, label, enabled))
            })
            .collect()
    }

    /// Clicks the entry labelled `label`.
    async fn click(&self, label: &str) {
        let menu = self.menu().await;
        let (id, _, enabled) = menu
            .iter()
            .find(|(_, l, _)| l == label)
            .unwrap_or_else(|| panic!("no menu entry {label:?} in {menu:?}"));
        assert!(enabled, "{label:?} is disabled");
        self.conn
            .call_method(
                Some(self.service.as_str()),
                "/MenuBar",
                Some("com.canonical.dbusmenu"),
                "Event",
                &(*id, "clicked", ZValue::I32(0), 0u32),
            )
            .await
            .unwrap();
    }
}

/// The items the panel's StatusNotifierWatcher holds.
async fn registered(conn: &zbus::Connection) -> Vec<String> {
    let Ok(reply) = conn
        .call_method(
            Some("org.kde.StatusNotifierWatcher"),
            "/StatusNotifierWatcher",
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &(
                "org.kde.StatusNotifierWatcher",
                "RegisteredStatusNotifierItems",
            ),
        )
        .await
    else {
        return Vec::new();
    };
    let v: OwnedValue = reply.body().deserialize().unwrap();
    Vec::<String>::try_from(v).unwrap_or_default()
}

/// The desktop, the world, the test's bus services and the running tray.
struct Session {
    desktop: Desktop,
    world: World,
    notes: Notifications,
    item: Item,
    tray: Proc,
}

impl Session {
    async fn start(lang: &str) -> Session {
        let desktop = Desktop::start().await;
        let world = World::start().await;
        let notes = Notifications::default();
        let conn = zbus::connection::Builder::address(desktop.bus.as_str())
            .unwrap()
            .name("org.freedesktop.Notifications")
            .unwrap()
            .serve_at("/org/freedesktop/Notifications", notes.clone())
            .unwrap()
            .build()
            .await
            .unwrap();
        let mut cmd = desktop.command(env!("CARGO_BIN_EXE_vigia-tray"), lang);
        cmd.args(["--interval", "200ms", "--wait", "15s", "--socket"])
            .arg(&world.socket)
            .env("RUST_LOG", "info");
        let (tray, _) = Proc::spawn("vigia-tray", cmd, false);
        let pid = tray.child.id();
        let items = poll("the tray to register with the panel", || async {
            let items = registered(&conn).await;
            (!items.is_empty()).then_some(items)
        })
        .await;
        // ksni names the item after its process: this is our tray, not some other one.
        let service = items[0].split('/').next().unwrap().to_owned();
        assert!(
            service.starts_with(&format!("org.kde.StatusNotifierItem-{pid}-")),
            "{items:?}"
        );
        let item = Item { conn, service };
        Session {
            desktop,
            world,
            notes,
            item,
            tray,
        }
    }

    async fn icon_becomes(&self, icon: &str) {
        poll(&format!("the icon to become {icon}"), || async {
            (self.item.icon().await == icon).then_some(())
        })
        .await;
    }

    /// Fills the report form with xdotool: category and urgency chosen by position
    /// (Down from none selected), text typed; returns once it is sent.
    async fn fill_report(
        &self,
        title: &str,
        category: usize,
        urgency: usize,
        fields: [&str; 3],
        shot: &str,
    ) {
        let win = self.desktop.window(title).await;
        self.desktop.xdotool(&["windowfocus", "--sync", &win]).await;
        let d = &self.desktop;
        for _ in 0..category {
            d.xdotool(&["key", "--clearmodifiers", "Down"]).await;
        }
        let [summary, details, contact] = fields;
        d.xdotool(&["key", "Tab"]).await;
        d.xdotool(&["type", "--delay", "2", summary]).await;
        d.xdotool(&["key", "Tab"]).await;
        d.xdotool(&["type", "--delay", "2", details]).await;
        d.xdotool(&["key", "Tab"]).await;
        for _ in 0..urgency {
            d.xdotool(&["key", "Down"]).await;
        }
        d.xdotool(&["key", "Tab"]).await;
        d.xdotool(&["type", "--delay", "2", contact]).await;
        d.screenshot(shot).await;
        // Tab past Cancel to OK.
        d.xdotool(&["key", "Tab", "Tab", "Return"]).await;
    }

    /// Stops the tray as the session's end does (SIGTERM): it must exit cleanly.
    async fn stop(mut self) {
        let pid = self.tray.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let child = &mut self.tray.child;
        let status = poll("the tray to stop on SIGTERM", || {
            let exited = child.try_wait().unwrap();
            async move { exited }
        })
        .await;
        assert!(status.success(), "{status}\n{}", self.tray.output());
        drop(self.tray);
        self.world.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tray_shows_the_state_reports_a_problem_and_announces_a_question() {
    if skip_without_desktop() {
        return;
    }
    let s = Session::start("en_US.UTF-8").await;
    // Connected, nothing wrong.
    s.icon_becomes("security-high").await;
    let status: String = s.item.prop("Status").await;
    assert_eq!(status, "Active");
    let labels: Vec<String> = s.item.menu().await.into_iter().map(|(_, l, _)| l).collect();
    assert_eq!(
        labels,
        [
            "Report a problem…",
            "My reports",
            "Answer IT's question…",
            "About Vigía"
        ]
    );

    // /var fills up: the agent raises a fault and the icon says so.
    append(&s.world.replay, &disk_line("/var", 98));
    s.icon_becomes("dialog-warning").await;
    let status: String = s.item.prop("Status").await;
    assert_eq!(status, "NeedsAttention");

    // Report a problem from the menu, typing into the window as the user would.
    s.item.click("Report a problem…").await;
    s.fill_report(
        "report a problem to IT",
        3, // Printer
        3, // High
        [
            "The printer prints blank <pages> & smudges",
            "Since this morning",
            "ext 1234",
        ],
        "tray-report-form-en",
    )
    .await;
    // The number comes back in the window, its title included.
    let win = s.desktop.window("^Vig.*: incident [0-9]+$").await;
    let title = s.desktop.xdotool(&["getwindowname", &win]).await;
    let number: u64 = title.trim().rsplit(' ').next().unwrap().parse().unwrap();
    s.desktop.screenshot("tray-report-number-en").await;
    let (code, incident) = api(&s.world, "GET", &format!("/api/incidents/{number}"), None).await;
    assert_eq!(code, 200, "{incident}");
    let text = incident.to_string();
    assert_eq!(incident["device"], "tray-e2e", "{incident}");
    assert!(
        text.contains("The printer prints blank <pages> & smudges"),
        "{incident}"
    );
    assert!(
        text.contains("ext 1234") && text.contains("printer"),
        "{incident}"
    );
    // The reporter is who the kernel says ran the tray, not anything the tray said.
    let me = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    assert!(
        text.contains(&format!("\"{}\"", me.trim())),
        "reporter {me} not in {incident}"
    );
    s.desktop.close(&win, "^Vig.*: incident [0-9]+$").await;

    // IT asks a question, with markup in it: announced, escaped, and the icon changes.
    let question = "Which <b>tray</b> & which paper_size? C:\\new";
    let (code, v) = api(
        &s.world,
        "POST",
        &format!("/api/incidents/{number}/request-info"),
        Some(json!({"question": question})),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let note = poll("the question's notification", || async {
        s.notes
            .got
            .lock()
            .unwrap()
            .iter()
            .find(|n| n.summary == format!("IT asks about incident {number}"))
            .cloned()
    })
    .await;
    assert_eq!(note.app, "Vigía");
    assert_eq!(
        note.body,
        "Which &lt;b&gt;tray&lt;/b&gt; &amp; which paper_size? C:\\new"
    );
    assert_eq!(note.urgency, Some(2), "a question stays until seen");
    s.icon_becomes("dialog-question").await;

    // Answer it from the menu: the answer reaches the incident.
    s.item.click("Answer IT's question…").await;
    let win = s.desktop.window("^Vig.*: answer IT$").await;
    s.desktop.screenshot("tray-question-en").await;
    s.desktop.xdotool(&["windowfocus", "--sync", &win]).await;
    s.desktop
        .xdotool(&["type", "--delay", "2", "The upper tray, A4"])
        .await;
    s.desktop.xdotool(&["key", "Return"]).await;
    // The entry closes and the same title says the answer was sent.
    let sent = s
        .desktop
        .window_other_than("^Vig.*: answer IT$", &win)
        .await;
    let answered = poll("the answer at the collector", || async {
        let (_, v) = api(&s.world, "GET", &format!("/api/incidents/{number}"), None).await;
        v.to_string().contains("The upper tray, A4").then_some(v)
    })
    .await;
    assert!(answered.to_string().contains("The upper tray, A4"));
    // Back to the fault: the question is answered.
    s.icon_becomes("dialog-warning").await;
    s.desktop.close(&sent, "^Vig.*: answer IT$").await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_window_speaks_spanish() {
    if skip_without_desktop() {
        return;
    }
    let s = Session::start("es_CO.UTF-8").await;
    s.icon_becomes("security-high").await;
    let labels: Vec<String> = s.item.menu().await.into_iter().map(|(_, l, _)| l).collect();
    assert_eq!(
        labels,
        [
            "Reportar un problema…",
            "Mis reportes",
            "Responder a soporte…",
            "Acerca de Vigía"
        ]
    );
    s.item.click("Reportar un problema…").await;
    s.fill_report(
        "reportar un problema a soporte",
        1, // Hardware
        4, // Crítica
        ["La pantalla parpadea", "Desde esta mañana", "ext 4321"],
        "tray-report-form-es",
    )
    .await;
    let win = s.desktop.window("^Vig.*: incidente [0-9]+$").await;
    let title = s.desktop.xdotool(&["getwindowname", &win]).await;
    let number: u64 = title.trim().rsplit(' ').next().unwrap().parse().unwrap();
    s.desktop.screenshot("tray-report-number-es").await;
    let (code, incident) = api(&s.world, "GET", &format!("/api/incidents/{number}"), None).await;
    assert_eq!(code, 200, "{incident}");
    let text = incident.to_string();
    assert!(
        text.contains("La pantalla parpadea") && text.contains("ext 4321"),
        "{incident}"
    );
    assert!(text.contains("critical"), "the urgency chosen: {incident}");
    s.desktop.close(&win, "^Vig.*: incidente [0-9]+$").await;
    s.stop().await;
}

/// Without a display the report is asked in the terminal (the agent's own prompt, on
/// the socket given to the tray), and the number is printed there. `script` (Debian's
/// bsdutils, always installed) gives the prompt the terminal it asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_display_the_report_is_asked_in_the_terminal() {
    let w = World::start().await;
    let tray = format!(
        "{} --lang es --socket '{}' report --wait 15s",
        env!("CARGO_BIN_EXE_vigia-tray"),
        w.socket.display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &tray, "/dev/null"])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("VIGIA_AGENT_SOCKET")
        // A config that names another socket: the one given to the tray must win.
        .env("VIGIA_AGENT_CONFIG", w.other_config());
    // Proc::spawn gives stdin /dev/null: this one needs a pipe to type into.
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("script (bsdutils)");
    let mut stdin = child.stdin.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    for s in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut s = s;
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let chunk = String::from_utf8_lossy(&buf[..n]).into_owned();
                log.lock().unwrap().push(chunk);
            }
        });
    }
    let proc = Proc {
        name: "script vigia-tray report",
        child,
        log: Arc::clone(&log),
    };
    let screen = move || log.lock().unwrap().concat();
    let said = |what: &'static str| {
        let screen = screen.clone();
        async move {
            poll(&format!("the prompt to say {what:?}"), || async {
                screen().contains(what).then_some(())
            })
            .await;
        }
    };
    // Each answer once its question is on the screen, as a person would type it.
    said("Categoría").await;
    stdin.write_all(b"printer\n").unwrap();
    said("¿Cuál es el problema?").await;
    stdin.write_all(b"La impresora no imprime\n").unwrap();
    said("Detalles").await;
    stdin.write_all(b"Desde ayer\n\n").unwrap();
    said("Urgencia").await;
    stdin.write_all(b"alta\n").unwrap();
    said("¿Cómo lo contacta soporte?").await;
    stdin.write_all(b"ext 77\n").unwrap();
    said("incidente número").await;
    let number: u64 = poll("the incident number", || async {
        let text = screen();
        let after = text.split("incidente número ").nth(1)?;
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        (after.len() > digits.len()).then(|| digits.parse().ok())?
    })
    .await;
    let (code, incident) = api(&w, "GET", &format!("/api/incidents/{number}"), None).await;
    assert_eq!(code, 200, "{incident}");
    let text = incident.to_string();
    assert!(
        text.contains("La impresora no imprime") && text.contains("ext 77"),
        "{incident}"
    );
    assert!(
        text.contains("printer") && text.contains("high"),
        "{incident}"
    );
    drop(stdin);
    drop(proc);
    w.stop().await;
}
