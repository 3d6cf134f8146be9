//! What a flood of unknown keys costs the daemon: a bounded number of requests at once.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use latchkey_tower::latchkey_core::{Env, Prefix, Principal, VerifyError};
use latchkey_tower::remote::RemoteVerifier;
use latchkey_tower::{ApiKey, Verifier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{loopback, within};

/// A request's head, read from `socket` (at most 64 KiB); `None` when it closed first.
async fn read_head(socket: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    Some(head)
}

/// A daemon on `addr` that hands each request's head, once read, and its connection to
/// `answer`.
async fn fake_daemon<F, A>(addr: SocketAddr, answer: F) -> String
where
    F: Fn(Vec<u8>, TcpStream) -> A + Clone + Send + 'static,
    A: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                if let Some(head) = read_head(&mut socket).await {
                    answer(head, socket).await;
                }
            });
        }
    });
    url
}

/// A daemon that reads requests and never answers: every miss stays in flight until the
/// verifier's request timeout. Counts the `POST /v1/verify` requests it received.
async fn black_hole(addr: SocketAddr) -> (String, Arc<AtomicUsize>) {
    let verifies = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&verifies);
    let url = fake_daemon(addr, move |head, mut socket| {
        let counter = Arc::clone(&counter);
        async move {
            if head.starts_with(b"POST /v1/verify") {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            // Hold the connection, unanswered, until the test's runtime ends.
            let _ = socket.read(&mut [0u8; 1024]).await;
            std::future::pending::<()>().await;
        }
    })
    .await;
    (url, verifies)
}

#[tokio::test]
async fn concurrent_misses_are_bounded_and_the_rest_answered_503_quickly() {
    const BOUND: usize = 4;
    let (url, verifies) = black_hole(loopback(0)).await;
    let service = ApiKey::generate(&Prefix::default(), Env::Live);
    let verifier = RemoteVerifier::builder(&url, service.expose())
        .max_concurrent_misses(BOUND)
        // Far beyond the test's patience: only the bound can end the extra misses.
        .request_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let misses: Vec<_> = (0..BOUND + 12)
        .map(|_| {
            let key = ApiKey::generate(&Prefix::default(), Env::Live);
            tokio::spawn(verifier.verify(&key))
        })
        .collect();
    // All but BOUND answer 503 without the daemon, long before its request timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut refused = 0;
    let mut in_flight = Vec::new();
    for miss in misses {
        match tokio::time::timeout_at(deadline, miss).await {
            Ok(answer) => match answer.unwrap() {
                Err(VerifyError::Unavailable(_)) => refused += 1,
                other => panic!("expected 503, got {other:?}"),
            },
            Err(_) => in_flight.push(()),
        }
    }
    assert_eq!(refused, 12);
    assert_eq!(in_flight.len(), BOUND);
    within(async {
        while verifies.load(Ordering::SeqCst) < BOUND {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(verifies.load(Ordering::SeqCst), BOUND);
}

/// A daemon that answers each verification `delay` after it arrived, finding the key valid
/// (a key id of its own each time) or, when not `valid`, refusing it as `invalid_key`; every
/// other request 404. Counts the verifications it received.
async fn slow_daemon(delay: Duration, valid: bool) -> (String, Arc<AtomicUsize>) {
    let received = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&received);
    let url = fake_daemon(loopback(0), move |head, mut socket| {
        let counter = Arc::clone(&counter);
        async move {
            let answer = if head.starts_with(b"POST /v1/verify") {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let body = if valid {
                    serde_json::json!({
                        "valid": true,
                        "code": "ok",
                        "principal": {
                            "key_id": format!("00000000-0000-7000-8000-{n:012}"),
                            "prefix": "lk_live_000000000000",
                            "key_name": "k",
                            "env": "live",
                            "user_id": "00000000-0000-7000-8000-000000000001",
                            "user_name": "u",
                            "tenant_id": null,
                            "organization_id": null,
                            "permissions": ["orders:read"],
                        },
                    })
                } else {
                    serde_json::json!({ "valid": false, "code": "invalid_key" })
                }
                .to_string();
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    })
    .await;
    (url, received)
}

/// A verifier of the daemon at `url` that asks it one miss at a time.
fn one_miss_at_a_time(url: &str) -> RemoteVerifier {
    let service = ApiKey::generate(&Prefix::default(), Env::Live);
    let verifier = RemoteVerifier::builder(url, service.expose());
    verifier.max_concurrent_misses(1).build().unwrap()
}

/// A key the verifier has never seen: a miss.
fn unseen() -> ApiKey {
    ApiKey::generate(&Prefix::default(), Env::Live)
}

/// A miss asked once another holds the only slot (the daemon `received` it): whether it
/// was answered 503, and the other's answer.
async fn behind_another(
    verifier: &RemoteVerifier,
    received: &AtomicUsize,
) -> (bool, Result<Principal, VerifyError>) {
    let before = received.load(Ordering::SeqCst);
    let first = tokio::spawn(verifier.verify(&unseen()));
    within(async {
        while received.load(Ordering::SeqCst) == before {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let second = verifier.verify(&unseen()).await;
    let unavailable = matches!(second, Err(VerifyError::Unavailable(_)));
    (unavailable, within(first).await.unwrap())
}

/// Misses beyond `max_concurrent_misses` wait their turn while the daemon answers, rather
/// than 503 after 100 ms: a group's edit drops every cached answer, and the clients then
/// missing together got 503 for valid keys from a healthy daemon (remote hunt M1).
#[tokio::test]
async fn misses_wait_their_turn_while_the_daemon_answers() {
    let (url, received) = slow_daemon(Duration::from_millis(200), true).await;
    let verifier = one_miss_at_a_time(&url);
    // Before the daemon's first valid answer, a miss that finds the slot taken waits
    // 100 ms only.
    let (unavailable, first) = behind_another(&verifier, &received).await;
    assert!(unavailable && first.is_ok(), "{first:?}");
    // Three misses, one slot: the last waits two answers (400 ms), well past 100 ms.
    let misses: Vec<_> = (0..3)
        .map(|_| tokio::spawn(verifier.verify(&unseen())))
        .collect();
    for answer in within(futures_util::future::join_all(misses)).await {
        let answer = answer.unwrap();
        assert!(answer.is_ok(), "{answer:?}");
    }
}

/// Refusals do not make the daemon count as answering: a flood of made-up keys, each
/// refused at once by a healthy daemon, must not hold every miss of it for the longer wait.
#[tokio::test]
async fn refusals_leave_misses_the_short_wait() {
    let (url, received) = slow_daemon(Duration::from_millis(300), false).await;
    let verifier = one_miss_at_a_time(&url);
    let refused = within(verifier.verify(&unseen())).await;
    assert!(matches!(refused, Err(VerifyError::Invalid)), "{refused:?}");
    // The slot is taken for 300 ms; the next miss waits 100 ms for it, not 1 s.
    let (unavailable, first) = behind_another(&verifier, &received).await;
    assert!(unavailable, "a miss of the flood waited past 100 ms");
    assert!(matches!(first, Err(VerifyError::Invalid)), "{first:?}");
}

/// Requests of a key whose lease ran out wait behind one ask of the daemon at most as long
/// as one ask may take: a daemon that hangs gets them 503, not one timeout each in turn.
#[tokio::test]
async fn requests_behind_a_hanging_lease_ask_are_answered_503_together() {
    let mut s = crate::Setup::new().await;
    let key = s.partner_key_with_credits(1).await;
    // The daemon counts the first request; its lease holds nothing more.
    s.verify(key.secret.expose()).await.unwrap();
    // The daemon now hangs, on the same address; the cache stays trusted (its clock
    // stands still).
    let addr = s.daemon.addr;
    s.daemon.stop();
    let _hole = black_hole(addr).await;
    let parsed = ApiKey::parse(key.secret.expose()).unwrap();
    let requests: Vec<_> = (0..10)
        .map(|_| tokio::spawn(s.verifier.verify(&parsed)))
        .collect();
    // All of them within the test's patience (ten requests, one 2 s timeout each in turn,
    // would take 20 s).
    let answers = within(futures_util::future::join_all(requests)).await;
    for answer in answers {
        let answer = answer.unwrap();
        assert!(
            matches!(answer, Err(VerifyError::Unavailable(_))),
            "{answer:?}"
        );
    }
}
