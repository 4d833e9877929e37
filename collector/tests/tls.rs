//! The console over HTTPS: `[http] tls_cert` and `tls_key` from a site CA made with
//! openssl (Debian's, installed by `.ci/run`); the CLI trusts that CA through `[cli]
//! ca_file`; the session cookie is `Secure`; plain HTTP gets no answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::config;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("openssl is needed for this test (apt-get install openssl): {e}")
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a certificate for 127.0.0.1 and localhost signed by it.
fn site_ca(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=vigia test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-CAcreateserial",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-out",
            "srv.pem",
            "-extfile",
            "ext.cnf",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_over_https_and_the_cli_trusts_the_site_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    site_ca(&d);
    let mut cfg = config(&d);
    cfg.http.tls_cert = Some(d.join("srv.pem"));
    cfg.http.tls_key = Some(d.join("srv.key"));
    let running = vigia_collector::start(cfg).await.unwrap();
    assert!(running.https);
    let port = running.http_addr.port();
    let password = running.first_admin.as_ref().unwrap().password.clone();
    let d2 = d.clone();
    tokio::task::spawn_blocking(move || {
        let base = format!("https://127.0.0.1:{port}");
        // A browser-like client trusting the site CA: a Secure cookie and HSTS.
        let pem = std::fs::read(d2.join("ca.pem")).unwrap();
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|i| match i.unwrap() {
                ureq::tls::PemItem::Certificate(c) => Some(c),
                _ => None,
            })
            .collect();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            )
            .build()
            .into();
        let resp = agent
            .post(&format!("{base}/api/session"))
            .send_json(serde_json::json!({"login": "admin", "password": password}))
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let cookie = resp.headers().get("set-cookie").unwrap().to_str().unwrap();
        assert!(cookie.contains("; Secure"), "{cookie}");
        assert!(resp.headers().get("strict-transport-security").is_some());
        // Without the CA, the certificate is refused.
        assert!(ureq::get(&format!("{base}/healthz")).call().is_err());
        // Plain HTTP on the same port is not served.
        assert!(ureq::get(&format!("http://127.0.0.1:{port}/healthz"))
            .call()
            .is_err());

        // The CLI with [cli] ca_file: sign in, then list.
        let cli_cfg = d2.join("cli.toml");
        std::fs::write(
            &cli_cfg,
            "[cli]\nca_file = \"ca.pem\"\ntoken_file = \"token\"\n",
        )
        .unwrap();
        let cli = |args: &[&str]| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_vigia-collector"));
            c.env_remove("VIGIA_TOKEN")
                .args(["--config", cli_cfg.to_str().unwrap(), "--api", &base])
                .args(args);
            c
        };
        let mut login = cli(&["login", "--user", "admin", "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        login
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        let out = login.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = cli(&["incidents"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "no incidents\n");
    })
    .await
    .unwrap();
    running.shutdown().await.unwrap();
}
