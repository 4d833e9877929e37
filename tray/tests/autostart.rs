//! The autostart entry the package installs in `/etc/xdg/autostart/`: valid by the
//! freedesktop specification (Debian's `desktop-file-validate`, required under CI), and
//! starting this crate's binary, in every session, without a terminal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn entry() -> (std::path::PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/vigia-tray.desktop");
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

fn key<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .map(str::trim)
}

#[test]
fn the_autostart_entry_starts_the_tray_in_every_session() {
    let (_, text) = entry();
    assert!(text.starts_with("[Desktop Entry]\n"), "{text}");
    let bin = Path::new(env!("CARGO_BIN_EXE_vigia-tray"));
    let name = bin.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        key(&text, "Exec"),
        Some(name),
        "runs the tray, no subcommand"
    );
    assert_eq!(key(&text, "TryExec"), Some(name));
    assert_eq!(key(&text, "Type"), Some("Application"));
    assert_eq!(key(&text, "Terminal"), Some("false"));
    // Hidden=true would disable it; OnlyShowIn would leave some desktops without it.
    assert_eq!(key(&text, "Hidden"), None);
    assert_eq!(key(&text, "OnlyShowIn"), None);
    assert_eq!(key(&text, "NotShowIn"), None);
    assert!(key(&text, "Comment[es]").is_some(), "Spanish too");
}

#[test]
fn the_autostart_entry_is_valid() {
    let (path, _) = entry();
    let out = match Command::new("desktop-file-validate").arg(&path).output() {
        Ok(out) => out,
        Err(e) if std::env::var("CI").is_err() => {
            eprintln!("skipped: desktop-file-validate ({e}); apt-get install desktop-file-utils");
            return;
        }
        Err(e) => panic!("CI must install desktop-file-utils (see .ci/run): {e}"),
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}
