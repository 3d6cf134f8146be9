//! `latchkey health`: whether the daemon at `--url` answers `GET /healthz` (its keystore
//! readable): exit 0 and `ok`, or exit 1 saying why. Made for a container's `HEALTHCHECK`
//! (the image has no shell or curl) and for scripts; it needs no key.

use std::process::ExitCode;

use latchkey_admin::api::Health;
use serde_json::json;

use crate::config::Settings;
use crate::output::print_json;
use crate::transport::{ApiRequest, HttpTransport, Problem, Transport};

/// Asks the daemon at `settings.url` whether it is healthy.
pub async fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    // Never the admin key: `/healthz` needs none, and a check sent over plain HTTP must not
    // carry one.
    let transport = HttpTransport::for_settings_with_key(settings, None)?;
    let request = ApiRequest {
        method: ::http::Method::GET,
        path: "/healthz".to_owned(),
        body: None,
    };
    let answer = transport.send(request).await?;
    if answer.status.is_success() {
        // A 200 from whatever else listens there (a proxy's page, another service) is no
        // healthy daemon.
        let health: Option<Health> = serde_json::from_slice(&answer.body).ok();
        anyhow::ensure!(
            health.is_some_and(|h| h.status == "ok"),
            "{} answered /healthz, but not as a latchkey daemon does: is --url a latchkey \
             daemon?",
            crate::transport::shown_text(&settings.url)
        );
        if settings.json {
            print_json(&json!({"status": "ok"}));
        } else {
            println!("ok");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let problem = Problem::from_response(answer.status, &answer.body);
    anyhow::bail!(
        "the latchkey daemon at {} is not healthy: {problem}",
        crate::transport::shown_text(&settings.url)
    )
}
