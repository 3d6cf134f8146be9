//! The benchmark program of `bench/remote.sh`: a daemon, its fixtures, and the revocation
//! propagation measurement.
//!
//! ```text
//! remote-bench daemon DIR ADDR           serve the management API over the store in DIR
//!                                        (created with an admin key in DIR.admin on first
//!                                        use); prints "listening on ADDR"
//! remote-bench setup URL ADMIN_KEY       create a service user (latchkey:verify) and a
//!                                        reader (orders:read) with a key each; prints
//!                                        "service KEY" and "reader KEY"
//! remote-bench propagation URL ADMIN_KEY N APP...
//!                                        N times: create a reader key, see it accepted by
//!                                        every app, revoke it, and time from the revoke
//!                                        call's return to each app's first 401
//! ```
//!
//! `daemon` serves exactly `latchkey_admin::router`, which is what `latchkey serve` serves;
//! the script uses it when the `latchkey` binary is not built.

use std::path::Path;
use std::time::{Duration, Instant};

use latchkey_tower::latchkey_core::{Store, StoreConfig, StoreError};
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long one app may take to refuse a revoked key before the sample counts as lost.
const GIVE_UP: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["daemon", dir, addr] => daemon(Path::new(dir), addr).await,
        ["setup", url, admin] => setup(url, admin).await,
        ["propagation", url, admin, n, apps @ ..] if !apps.is_empty() => {
            propagation(url, admin, n.parse()?, apps).await
        }
        _ => Err("usage: see the module docs of examples/remote_bench.rs".into()),
    }
}

async fn daemon(dir: &Path, addr: &str) -> Result<(), Error> {
    let config = StoreConfig::default();
    let store = match Store::open(dir, config.clone()) {
        Ok(store) => store,
        Err(StoreError::NotInitialized { .. }) => {
            let (store, admin) = Store::create_with_admin(dir, "lk", config)?;
            let mut path = dir.as_os_str().to_owned();
            path.push(".admin");
            std::fs::write(path, admin.secret.expose())?;
            store
        }
        Err(e) => return Err(e.into()),
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let app = latchkey_admin::router(store.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    store.flush()?;
    Ok(())
}

/// The admin API, as the admin.
struct Api {
    http: reqwest::Client,
    url: String,
    admin: String,
}

impl Api {
    fn new(url: &str, admin: &str) -> Api {
        Api {
            // The verifier's own TLS set-up (ring): reqwest brings no crypto provider here.
            http: latchkey_tower::remote::https_client_builder(None)
                .expect("a TLS config")
                .tcp_nodelay(true)
                .build()
                .expect("a client"),
            url: url.trim_end_matches('/').to_owned(),
            admin: admin.to_owned(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, Error> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            return Err(format!("POST {path}: {status} {body}").into());
        }
        Ok(body)
    }

    /// A user with these permissions and a key for it; returns the key's id and secret.
    async fn user_with_key(&self, name: &str, permissions: &[&str]) -> Result<String, Error> {
        self.post(
            "/v1/users",
            json!({"name": name, "permissions": permissions}),
        )
        .await?;
        let key = self
            .post(
                "/v1/keys",
                json!({"name": format!("{name} key"), "user_id": name}),
            )
            .await?;
        Ok(key["secret"].as_str().ok_or("no secret")?.to_owned())
    }
}

async fn setup(url: &str, admin: &str) -> Result<(), Error> {
    let api = Api::new(url, admin);
    let service = api
        .user_with_key("bench-service", &["latchkey:verify"])
        .await?;
    let reader = api.user_with_key("bench-reader", &["orders:read"]).await?;
    println!("service {service}");
    println!("reader {reader}");
    Ok(())
}

/// `GET /orders` with `key`: the status.
async fn get_orders(http: &reqwest::Client, app: &str, key: &str) -> Result<u16, Error> {
    let response = http
        .get(format!("{app}/orders"))
        .bearer_auth(key)
        .send()
        .await?;
    let status = response.status().as_u16();
    response.bytes().await?;
    Ok(status)
}

async fn propagation(url: &str, admin: &str, n: usize, apps: &[&str]) -> Result<(), Error> {
    let api = Api::new(url, admin);
    // One client (and keep-alive connection) per app, as a steady caller would have.
    let clients: Vec<reqwest::Client> = apps
        .iter()
        .map(|_| {
            latchkey_tower::remote::https_client_builder(None)
                .expect("a TLS config")
                .tcp_nodelay(true)
                .build()
        })
        .collect::<Result<_, _>>()?;
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(n); apps.len()];
    let mut polls = vec![0u64; apps.len()];
    let mut first_refused = 0;
    for i in 0..n {
        let key = api
            .post(
                "/v1/keys",
                json!({"name": format!("propagation {i}"), "user_id": "bench-reader"}),
            )
            .await?;
        let (id, secret) = (
            key["id"].as_str().ok_or("no id")?.to_owned(),
            key["secret"].as_str().ok_or("no secret")?.to_owned(),
        );
        // Accepted everywhere (the first request is the miss, the second a cache hit).
        for (client, app) in clients.iter().zip(apps) {
            for _ in 0..2 {
                let status = get_orders(client, app, &secret).await?;
                if status != 200 {
                    return Err(format!("{app}: a fresh key answered {status}").into());
                }
            }
        }
        api.post(&format!("/v1/keys/{id}/revoke"), json!({}))
            .await?;
        let returned = Instant::now();
        let waits = clients.iter().zip(apps).map(|(client, app)| {
            let secret = &secret;
            async move {
                let mut count = 0u64;
                loop {
                    count += 1;
                    let status = get_orders(client, app, secret).await?;
                    if status == 401 {
                        return Ok::<_, Error>((returned.elapsed(), count));
                    }
                    if status != 200 {
                        return Err(format!("{app}: answered {status} while polling").into());
                    }
                    if returned.elapsed() > GIVE_UP {
                        return Err(format!("{app}: still 200 after {GIVE_UP:?}").into());
                    }
                }
            }
        });
        let results = futures_util::future::join_all(waits).await;
        for (app, result) in results.into_iter().enumerate() {
            let (took, count) = result?;
            samples[app].push(took);
            polls[app] += count;
            first_refused += usize::from(count == 1);
        }
    }
    println!("revocation propagation over {n} revocations (revoke returned -> first 401)");
    let mut all = Vec::new();
    for (app, samples) in apps.iter().zip(&mut samples) {
        all.extend_from_slice(samples);
        print_stats(app, samples);
    }
    print_stats("all apps", &mut all);
    let total: u64 = polls.iter().sum();
    println!(
        "polls: {total} requests in all ({:.2} per app and revocation); the first request \
         after the revoke returned was already refused {first_refused} times of {}",
        total as f64 / (n * apps.len()) as f64,
        n * apps.len()
    );
    Ok(())
}

fn print_stats(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let rank = |p: f64| {
        // Nearest rank: the smallest sample with at least p of them at or below it.
        let index = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[index]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<28} p50 {:7.3} ms   p90 {:7.3} ms   p99 {:7.3} ms   max {:7.3} ms",
        ms(rank(0.50)),
        ms(rank(0.90)),
        ms(rank(0.99)),
        ms(samples[samples.len() - 1]),
    );
}
