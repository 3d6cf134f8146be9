//! What `/metrics` says the daemon holds open right now (connections, event streams,
//! console sessions) and what its listeners turned away (connections shed, failed TLS
//! handshakes): the figures an operator watches for a flood or a leak.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{Daemon, Fixture, install_crypto_provider};
use crate::tls::Pki;

/// How many connections without a request one address may hold (`listen/mod.rs`).
const PER_ADDRESS: usize = 512;

/// The value of the series `name` (with its labels, as the exposition writes them).
#[track_caller]
fn value(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in the scrape:\n{scrape}"))
        .parse()
        .unwrap()
}

fn scrape(daemon: &Daemon) -> String {
    let answer = daemon.http("GET", "/metrics", None, None);
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.text
}

/// Scrapes until `done` holds of the scrape (at most 10 s); the last scrape.
#[track_caller]
fn scrape_until(daemon: &Daemon, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(daemon);
        if done(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn addr(daemon: &Daemon) -> String {
    daemon.url.trim_start_matches("http://").to_owned()
}

/// Whether the server closed `socket` (within 10 s) without sending anything.
fn closed_unanswered(mut socket: TcpStream) -> bool {
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    match socket.read(&mut [0; 64]) {
        Ok(n) => n == 0,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

const OPEN: &str = "latchkey_connections{listener=\"api\"}";
const SHED: &str = "latchkey_connections_shed_total{listener=\"api\",reason=\"per_address\"}";
const STREAMS: &str = "latchkey_event_streams";
const SESSIONS: &str = "latchkey_console_sessions";

#[test]
fn metrics_count_open_connections_and_the_ones_shed() {
    let f = Fixture::new();
    let before = scrape(&f.daemon);
    let (open, shed) = (value(&before, OPEN), value(&before, SHED));
    assert!(open >= 1.0, "the scrape's own connection is open: {open}");
    assert_eq!(shed, 0.0);
    // Connections that send nothing: counted while open.
    let mut idle: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(addr(&f.daemon)).unwrap())
        .collect();
    let during = scrape_until(&f.daemon, |s| value(s, OPEN) >= open + 5.0);
    assert!(value(&during, OPEN) >= open + 5.0, "{during}");
    // One address past its share: the last five are closed at once, and counted.
    idle.extend((5..PER_ADDRESS + 5).map(|_| TcpStream::connect(addr(&f.daemon)).unwrap()));
    for socket in idle.split_off(PER_ADDRESS) {
        assert!(
            closed_unanswered(socket),
            "a connection past the share was kept"
        );
    }
    drop(idle);
    let after = scrape_until(&f.daemon, |s| value(s, OPEN) <= open);
    assert!(
        value(&after, OPEN) <= open,
        "closed ones still counted: {after}"
    );
    assert_eq!(value(&after, SHED), 5.0, "{after}");
}

#[test]
fn metrics_count_open_event_streams_and_console_sessions() {
    let f = Fixture::new();
    let before = scrape(&f.daemon);
    assert_eq!(value(&before, STREAMS), 0.0);
    assert_eq!(value(&before, SESSIONS), 0.0);
    let mut stream = TcpStream::connect(addr(&f.daemon)).unwrap();
    write!(
        stream,
        "GET /v1/events?heartbeat_ms=1000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        f.admin
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = [0; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    assert_eq!(value(&scrape(&f.daemon), STREAMS), 1.0);
    assert_eq!(crate::listeners::console_sign_in(&f, &f.admin), 303);
    assert_eq!(value(&scrape(&f.daemon), SESSIONS), 1.0);
    // A stream whose client went: given back by its next heartbeat at the latest.
    drop(stream);
    let after = scrape_until(&f.daemon, |s| value(s, STREAMS) == 0.0);
    assert_eq!(value(&after, STREAMS), 0.0, "{after}");
}

#[test]
fn metrics_count_failed_tls_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "m");
    let args = pki.serve_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start_with(&dir.path().join("store"), &args);
    // A load balancer's TCP probes (opened and closed before a handshake): not counted.
    for _ in 0..3 {
        drop(TcpStream::connect(addr(&daemon)).unwrap());
    }
    // Plain HTTP to the TLS port: no handshake.
    let mut plain = TcpStream::connect(addr(&daemon)).unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let _ = plain.read(&mut [0; 64]);
    install_crypto_provider();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let url = format!("https://{}/metrics", addr(&daemon));
    let name = "latchkey_tls_handshake_failures_total{listener=\"api\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = client.get(&url).send().unwrap().text().unwrap();
        if value(&text, name) >= 1.0 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(value(&text, name), 1.0, "{text}");
    // The probes, closed before the plain request was sent, have long been seen by now.
    std::thread::sleep(Duration::from_millis(500));
    let text = client.get(&url).send().unwrap().text().unwrap();
    assert_eq!(value(&text, name), 1.0, "{text}");
}
