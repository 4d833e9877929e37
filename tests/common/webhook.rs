//! A webhook receiver for the tests: it records each request (when, its
//! `Idempotency-Key`, its JSON body) and answers from a script: busy (503 with
//! `Retry-After: 3`), hold the connection without answering, or OK.
// A test helper: a poisoned lock or a failed clone of a socket is the test's failure.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at: Instant,
    pub key: String,
    pub body: Value,
    pub answered: u16,
}

/// What the receiver answers next: `Hold` keeps the connection open without an answer
/// (a delivery in flight), the others answer with that status.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    Busy,
    Hold,
    Ok,
}

#[derive(Clone)]
pub struct Receiver {
    pub port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Arc<Mutex<Vec<Answer>>>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Receiver {
    /// A receiver on `port`'s listener, answering from `script` (then `Ok`).
    pub fn serve(listener: TcpListener, script: Vec<Answer>) -> Receiver {
        let r = Receiver {
            port: listener.local_addr().unwrap().port(),
            hits: Arc::default(),
            script: Arc::new(Mutex::new(script)),
            held: Arc::default(),
        };
        let me = r.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let me = me.clone();
                std::thread::spawn(move || me.handle(conn));
            }
        });
        r
    }

    fn handle(&self, mut conn: TcpStream) {
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut len = 0usize;
        let mut key = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("idempotency-key:") {
                key = l["idempotency-key:".len()..].trim().to_string();
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let answer = {
            let mut s = self.script.lock().unwrap();
            if s.is_empty() {
                Answer::Ok
            } else {
                s.remove(0)
            }
        };
        let status = match answer {
            Answer::Busy => 503,
            Answer::Hold => 0,
            Answer::Ok => 200,
        };
        self.hits.lock().unwrap().push(Hit {
            at: Instant::now(),
            key,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            answered: status,
        });
        match answer {
            Answer::Hold => self.held.lock().unwrap().push(conn),
            Answer::Busy => {
                let _ = conn.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
            Answer::Ok => {
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            }
        }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}
