//! Accounts and access through the running collector's API: sign-in and its cookie,
//! CSRF, origin and host checks, the sign-in rate limit, token scopes, disabled
//! accounts, every role against every action, bulk actions, and the feed resuming from
//! `Last-Event-ID`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{config, issue_token, Api, TestClient, DEADLINE};
use serde_json::{json, Value};
use vigia_collector::workflow::actions::ACTIONS;

const DEV: &str = "acc-dev-1";

/// One request with explicit headers: the status, the response headers, the body.
fn raw(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, ureq::http::HeaderMap, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = match body {
        Some(b) => agent
            .run(
                req.header("content-type", "application/json")
                    .body(serde_json::to_vec(b).unwrap())
                    .unwrap(),
            )
            .unwrap(),
        None => agent.run(req.body(()).unwrap()).unwrap(),
    };
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    (status, h, resp.body_mut().read_to_string().unwrap())
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap_or(Value::Null)["code"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Opens `n` user reports from the test device; returns their incident numbers.
async fn reports(dev: &mut TestClient, first_seq: u64, n: u64) -> Vec<u64> {
    let mut numbers = Vec::new();
    for i in 0..n {
        let seq = first_seq + i;
        let ev = json!({"v": 1, "device": DEV, "seq": seq, "boot": 1, "ts": seq,
            "body": {"type": "report", "report_id": seq, "category": "hardware",
                     "summary": "La pantalla parpadea", "text": "desde ayer",
                     "reporter": "ana", "contact": "ext 12", "urgency": "medium"}});
        dev.publish(
            &format!("vigia/v1/up/{DEV}/event"),
            false,
            ev.to_string().into_bytes(),
        )
        .await;
        dev.recv_until("report accepted", |t, v| {
            if t.ends_with("/cmd") && v["body"]["report_id"] == seq {
                numbers.push(v["body"]["incident"].as_u64().unwrap());
                return true;
            }
            false
        })
        .await;
    }
    numbers
}

fn sample_body(action: &str) -> Value {
    match action {
        "request_info" => json!({"question": "¿Qué monitor?"}),
        "info_received" => json!({"text": "el de la izquierda"}),
        "classify" => json!({"priority": "P3"}),
        "assign" => json!({"group": "soporte"}),
        "escalate" => json!({"why": "necesita un técnico en sitio"}),
        "request_provider" => json!({"provider": "Acme", "kind": "unplanned", "agreed_at": 1}),
        "provider_delivered" => json!({"as_agreed": true}),
        "provider_propose" => json!({"date": 2}),
        "provider_reschedule" => json!({"agreed_at": 2}),
        "provider_done" => json!({"report": "disco cambiado"}),
        "resolve" => json!({"solution": "cable cambiado"}),
        "reopen" => json!({"why": "vuelve a fallar"}),
        "note" => json!({"text": "llamé al usuario"}),
        "reserve" => json!({"level": "reserved", "years": 2, "justification": "datos de salud"}),
        _ => json!({}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_csrf_origin_host_and_the_sign_in_limit() {
    let dir = tempfile::tempdir().unwrap();
    let running = vigia_collector::start(config(dir.path())).await.unwrap();
    let admin = Api::admin(&running).await;
    let base = format!("http://{}", running.http_addr);
    let password = running.first_admin.as_ref().unwrap().password.clone();

    let b = base.clone();
    blocking(move || {
        // Nothing without credentials.
        let (s, _, body) = raw("GET", &format!("{b}/api/incidents"), &[], None);
        assert_eq!(
            (s, code(&body).as_str()),
            (401, "unauthenticated"),
            "{body}"
        );
        let (s, _, body) = raw(
            "GET",
            &format!("{b}/api/incidents"),
            &[("authorization", "Bearer vigia_x")],
            None,
        );
        assert_eq!((s, code(&body).as_str()), (401, "bad_token"), "{body}");

        // Sign-in: a wrong password, then the right one and its cookie.
        let creds = |p: &str| json!({"login": "admin", "password": p});
        let (s, _, body) = raw(
            "POST",
            &format!("{b}/api/session"),
            &[],
            Some(&creds("nope nope")),
        );
        assert_eq!((s, code(&body).as_str()), (401, "bad_credentials"));
        let (s, h, body) = raw(
            "POST",
            &format!("{b}/api/session"),
            &[],
            Some(&creds(&password)),
        );
        assert_eq!(s, 200, "{body}");
        let set = h.get("set-cookie").unwrap().to_str().unwrap().to_owned();
        for part in ["vigia_session=", "HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(set.contains(part), "{set}");
        }
        assert!(!set.contains("Secure"), "plain HTTP: {set}");
        let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        let session: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(session["login"], "admin");
        let csrf = session["csrf"].as_str().unwrap().to_owned();
        let cookie = set.split(';').next().unwrap().to_owned();
        // A second sign-in gets a new session id.
        let (_, h2, _) = raw(
            "POST",
            &format!("{b}/api/session"),
            &[],
            Some(&creds(&password)),
        );
        assert_ne!(h2.get("set-cookie").unwrap().to_str().unwrap(), set);

        let (s, _, body) = raw(
            "GET",
            &format!("{b}/api/session"),
            &[("cookie", &cookie)],
            None,
        );
        assert_eq!(s, 200, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["csrf"],
            csrf.as_str()
        );

        // A change with the cookie but without the CSRF token is refused...
        let prefs = json!({"locale": "es"});
        let url = format!("{b}/api/me/preferences");
        let (s, _, body) = raw("PUT", &url, &[("cookie", &cookie)], Some(&prefs));
        assert_eq!((s, code(&body).as_str()), (403, "csrf"), "{body}");
        // ...so is one from a page of another site, even with the token...
        let (s, _, body) = raw(
            "PUT",
            &url,
            &[
                ("cookie", &cookie),
                ("x-csrf-token", &csrf),
                ("origin", "http://evil.example"),
            ],
            Some(&prefs),
        );
        assert_eq!((s, code(&body).as_str()), (403, "origin"), "{body}");
        // ...and the console's own page may.
        let own = format!("http://{}", b.trim_start_matches("http://"));
        let (s, _, body) = raw(
            "PUT",
            &url,
            &[
                ("cookie", &cookie),
                ("x-csrf-token", &csrf),
                ("origin", &own),
            ],
            Some(&prefs),
        );
        assert_eq!(s, 200, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["locale"],
            "es"
        );
        // A host name the collector does not answer to (DNS rebinding).
        let (s, _, body) = raw(
            "GET",
            &format!("{b}/api/session"),
            &[("cookie", &cookie), ("host", "evil.example")],
            None,
        );
        assert_eq!((s, code(&body).as_str()), (421, "host"), "{body}");

        // Sign out: the cookie no longer works.
        let (s, _, _) = raw(
            "DELETE",
            &format!("{b}/api/session"),
            &[("cookie", &cookie), ("x-csrf-token", &csrf)],
            None,
        );
        assert_eq!(s, 204);
        let (s, _, body) = raw(
            "GET",
            &format!("{b}/api/session"),
            &[("cookie", &cookie)],
            None,
        );
        assert_eq!((s, code(&body).as_str()), (401, "session_expired"));

        // Five failures hold the account; the right password is then refused unchecked.
        for _ in 0..5 {
            let (s, _, _) = raw(
                "POST",
                &format!("{b}/api/session"),
                &[],
                Some(&creds("guess guess")),
            );
            assert_eq!(s, 401);
        }
        let (s, h, body) = raw(
            "POST",
            &format!("{b}/api/session"),
            &[],
            Some(&creds(&password)),
        );
        assert_eq!((s, code(&body).as_str()), (429, "rate_limited"), "{body}");
        assert!(h.get("retry-after").is_some());
    })
    .await;
    let (_, metrics) = blocking(move || admin.call("GET", "/metrics", None)).await;
    assert!(
        metrics.contains("vigia_logins_total{outcome=\"failed\"} 6\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vigia_logins_total{outcome=\"rate_limited\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("vigia_forbidden_total 3\n"), "{metrics}");
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_against_every_action_tokens_and_disabled_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let running = vigia_collector::start(config(dir.path())).await.unwrap();
    let admin = Api::admin(&running).await;
    let base = running.http_addr.to_string();
    let mut dev = TestClient::connect(
        &running.mqtt_url,
        "acc-agent",
        &[format!("vigia/v1/down/{DEV}/+")],
    )
    .await;

    // One account per role; the technician works level 1, where new incidents start.
    let people = [
        ("vera", json!({"roles": ["viewer"]})),
        (
            "tomas",
            json!({"roles": ["technician"], "level": 1, "groups": ["soporte"]}),
        ),
        ("marta", json!({"roles": ["service_desk"]})),
        ("acme", json!({"roles": ["provider"], "provider": "Acme"})),
        ("root", json!({"roles": ["admin"]})),
    ];
    let mut tokens = std::collections::BTreeMap::new();
    for (login, mut body) in people {
        body["login"] = json!(login);
        body["password"] = json!("contraseña larga");
        let a = admin.clone();
        let (s, text) = blocking(move || a.call("POST", "/api/users", Some(&body))).await;
        assert_eq!(s, 201, "{text}");
        let b = base.clone();
        let t = blocking(move || issue_token(&b, login, "contraseña larga", "admin")).await;
        tokens.insert(
            login,
            Api {
                base: base.clone(),
                token: t,
            },
        );
    }

    // Forbidden pairs are refused whatever the state, so one incident serves them all;
    // each permitted pair gets an incident of its own (an action changes the state).
    let permitted = |login: &str, action: &str| match login {
        "marta" => true,
        "tomas" => !matches!(action, "classify" | "close" | "reopen" | "reserve"),
        // An admin alone works no incident, but sets records' classification.
        "root" => action == "reserve",
        _ => false,
    };
    let fresh_needed = ["tomas", "marta", "root"]
        .iter()
        .flat_map(|l| ACTIONS.iter().filter(move |a| permitted(l, a.action)))
        .count() as u64;
    let numbers = reports(&mut dev, 1, fresh_needed + 1).await;
    let shared = numbers[0];
    let mut fresh = numbers[1..].iter().copied();
    for (login, api) in &tokens {
        for spec in ACTIONS {
            let action = spec.action;
            let n = if permitted(login, action) {
                fresh.next().unwrap()
            } else {
                shared
            };
            let (api, body) = (api.clone(), sample_body(action));
            let path = format!("/api/incidents/{n}/{action}");
            let (s, text) = blocking(move || api.call("POST", &path, Some(&body))).await;
            if permitted(login, action) {
                assert_ne!(s, 403, "{login} {action} refused: {text}");
                assert!(matches!(s, 200 | 409 | 422), "{login} {action}: {s} {text}");
            } else if *login == "acme" {
                // A provider's contact learns nothing of incidents not addressed to it.
                assert_eq!(s, 404, "{login} {action}: {text}");
            } else {
                assert_eq!(s, 403, "{login} {action} allowed: {text}");
                assert!(
                    ["forbidden", "not_yours"].contains(&code(&text).as_str()),
                    "{text}"
                );
            }
        }
    }
    // The shared incident was never changed by all those refusals.
    let a = admin.clone();
    let (_, text) =
        blocking(move || a.call("GET", &format!("/api/incidents/{shared}"), None)).await;
    let inc: Value = serde_json::from_str(&text).unwrap();
    assert!(
        inc["audit"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["actor"]["type"] != "person"),
        "{inc}"
    );
    // What each role may do is what its page shows.
    for (login, want_some) in [("vera", false), ("marta", true), ("tomas", true)] {
        let api = tokens[login].clone();
        let (_, text) =
            blocking(move || api.call("GET", &format!("/api/incidents/{shared}"), None)).await;
        let v: Value = serde_json::from_str(&text).unwrap();
        let allowed = v["allowed"].as_array().unwrap();
        assert_eq!(!allowed.is_empty(), want_some, "{login}: {allowed:?}");
        if login == "tomas" {
            assert!(allowed
                .iter()
                .all(|a| a["action"] != "close" && a["action"] != "classify"));
        }
    }
    // The actor in the trail is the account that acted.
    let a = tokens["tomas"].clone();
    let n = fresh.next();
    assert!(n.is_none(), "every fresh incident was used");
    let (s, text) = blocking(move || {
        a.call(
            "POST",
            &format!("/api/incidents/{shared}/note"),
            Some(&json!({"text": "visto"})),
        )
    })
    .await;
    assert_eq!(s, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let last = v["audit"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["actor"]["name"], "tomas", "{last}");
    // An old client naming who acts is told the account decides.
    let a = tokens["marta"].clone();
    let (s, text) = blocking(move || {
        a.call(
            "POST",
            &format!("/api/incidents/{shared}/note"),
            Some(&json!({"as": "intruso", "text": "x"})),
        )
    })
    .await;
    assert_eq!(s, 400, "{text}");

    // A read token reads but acts on nothing.
    let b = base.clone();
    let read = blocking(move || issue_token(&b, "marta", "contraseña larga", "read")).await;
    let ro = Api {
        base: base.clone(),
        token: read,
    };
    let r2 = ro.clone();
    assert_eq!(
        blocking(move || r2.call("GET", "/api/incidents", None))
            .await
            .0,
        200
    );
    let (s, text) = blocking(move || {
        ro.call(
            "POST",
            &format!("/api/incidents/{shared}/note"),
            Some(&json!({"text": "x"})),
        )
    })
    .await;
    assert_eq!(
        (s, code(&text).as_str()),
        (403, "read_only_token"),
        "{text}"
    );

    // Bulk: one request, a result per incident.
    let a = tokens["tomas"].clone();
    let (s, text) = blocking(move || {
        a.call(
            "POST",
            "/api/incidents/bulk",
            Some(&json!({"numbers": [shared, 9999], "action": "note", "fields": {"text": "en ello"}})),
        )
    })
    .await;
    assert_eq!(s, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["results"][0]["ok"], true, "{v}");
    assert_eq!(v["results"][1]["code"], "not_found", "{v}");

    // Disabling an account stops its tokens at once; the last admin cannot be disabled.
    let a = admin.clone();
    let (s, text) = blocking(move || {
        a.call(
            "PATCH",
            "/api/users/tomas",
            Some(&json!({"disabled": true})),
        )
    })
    .await;
    assert_eq!(s, 200, "{text}");
    let t = tokens["tomas"].clone();
    let (s, text) = blocking(move || t.call("GET", "/api/incidents", None)).await;
    assert_eq!((s, code(&text).as_str()), (401, "bad_token"), "{text}");
    let a = admin.clone();
    blocking(move || a.call("PATCH", "/api/users/root", Some(&json!({"disabled": true})))).await;
    let a = admin.clone();
    let (s, text) = blocking(move || {
        a.call(
            "PATCH",
            "/api/users/admin",
            Some(&json!({"roles": ["service_desk"]})),
        )
    })
    .await;
    assert_eq!((s, code(&text).as_str()), (409, "last_admin"), "{text}");
    // Only admins manage accounts.
    let t = tokens["marta"].clone();
    let (s, _) = blocking(move || {
        t.call(
            "POST",
            "/api/users",
            Some(&json!({"login": "eve", "roles": ["admin"]})),
        )
    })
    .await;
    assert_eq!(s, 403);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_resumes_after_the_last_event_it_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let running = vigia_collector::start(config(dir.path())).await.unwrap();
    let admin = Api::admin(&running).await;
    let mut dev = TestClient::connect(
        &running.mqtt_url,
        "acc-agent-feed",
        &[format!("vigia/v1/down/{DEV}/+")],
    )
    .await;
    let first = reports(&mut dev, 1, 1).await[0];
    // The list's position, then two more incidents the page has not seen.
    let a = admin.clone();
    let position = blocking(move || {
        let (_, h, _) = raw(
            "GET",
            &format!("http://{}/api/incidents", a.base),
            &[("authorization", &format!("Bearer {}", a.token))],
            None,
        );
        h.get("x-feed-position")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    })
    .await;
    let later = reports(&mut dev, 2, 2).await;
    // A stream resuming from that position gets exactly those two, in order.
    let mut sse = tokio::net::TcpStream::connect(running.http_addr)
        .await
        .unwrap();
    let head = format!(
        "GET /api/feed HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Last-Event-ID: {position}\r\nAccept: text/event-stream\r\n\r\n",
        admin.token
    );
    sse.write_all(head.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 8192];
    let end = tokio::time::Instant::now() + DEADLINE;
    let opened = |s: &str, n: u64| s.contains(&format!("\"number\":{n},"));
    while !later.iter().all(|n| opened(&seen, *n)) {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        let n = tokio::time::timeout(left, sse.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("replay; so far:\n{seen}"))
            .unwrap();
        assert!(n > 0, "feed closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(!opened(&seen, first), "replayed what the list had: {seen}");
    assert!(!seen.contains("event: reset"), "{seen}");
    let i0 = seen.find(&format!("\"number\":{},", later[0])).unwrap();
    let i1 = seen.find(&format!("\"number\":{},", later[1])).unwrap();
    assert!(i0 < i1, "out of order: {seen}");
    assert!(seen.contains("\nid: "), "events carry ids: {seen}");
    // A position of another run of the collector: reload.
    let mut sse2 = tokio::net::TcpStream::connect(running.http_addr)
        .await
        .unwrap();
    let head = format!(
        "GET /api/feed?since=0-5 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Accept: text/event-stream\r\n\r\n",
        admin.token
    );
    sse2.write_all(head.as_bytes()).await.unwrap();
    let mut seen2 = String::new();
    while !seen2.contains("event: reset") {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        let n = tokio::time::timeout(left, sse2.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "{seen2}");
        seen2.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    drop((sse, sse2));
    running.shutdown().await.unwrap();
}
