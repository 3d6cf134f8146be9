//! A daemon URL that answers what no daemon should: a redirect elsewhere, an endless body.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use latchkey_tower::latchkey_core::{Env, Prefix, VerifyError};
use latchkey_tower::remote::RemoteVerifier;
use latchkey_tower::{ApiKey, Verifier};
use tokio::net::TcpListener;

use crate::{loopback, within};

/// Serves `app` on a loopback port; answers its URL.
async fn serve(app: Router) -> String {
    let listener = TcpListener::bind(loopback(0)).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// What a verifier of `url` says of a key it never saw.
async fn verify_unknown(
    url: &str,
) -> Result<latchkey_tower::latchkey_core::Principal, VerifyError> {
    let service = ApiKey::generate(&Prefix::default(), Env::Live);
    let verifier = RemoteVerifier::builder(url, service.expose())
        .build()
        .unwrap();
    let key = ApiKey::generate(&Prefix::default(), Env::Live);
    within(verifier.verify(&key)).await
}

#[tokio::test]
async fn a_redirect_is_never_followed_and_the_key_goes_nowhere_else() {
    // Elsewhere: counts every request it receives.
    let received = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&received);
    let elsewhere = serve(Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { "{}" }
    }))
    .await;
    // The daemon URL: a 308 (which keeps the method and the body) to elsewhere.
    let target = format!("{elsewhere}/v1/verify");
    let daemon = serve(Router::new().fallback(move || async move {
        (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, target.clone())],
        )
    }))
    .await;

    let answer = verify_unknown(&daemon).await;
    assert!(
        matches!(answer, Err(VerifyError::Unavailable(_))),
        "{answer:?}"
    );
    assert_eq!(received.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_answer_past_one_mib_is_not_read_and_the_miss_is_unavailable() {
    // A refusal that would parse, padded past the bound and streamed (no Content-Length).
    let daemon = serve(Router::new().route(
        "/v1/verify",
        post(|| async {
            let chunks = std::iter::once(r#"{"valid":false,"code":"invalid_key","pad":""#.into())
                .chain(std::iter::repeat_n("a".repeat(64 * 1024), 32))
                .chain(std::iter::once(r#""}"#.to_owned()))
                .map(Ok::<String, std::io::Error>);
            Body::from_stream(futures_util::stream::iter(chunks)).into_response()
        }),
    ))
    .await;

    let answer = verify_unknown(&daemon).await;
    assert!(
        matches!(answer, Err(VerifyError::Unavailable(_))),
        "{answer:?}"
    );
}
