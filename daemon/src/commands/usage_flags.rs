//! The usage control flags of `keys add` and `keys update` as JSON members of the request
//! (`meta`, `rate_limits`, `credits`, `allowed_ips`), and their lines in `keys show`.

use anyhow::Context;
use latchkey_core::{Key, RateLimit, Refill, limits};
use serde_json::{Value, json};

use super::Body;
use crate::cli::UsageFlags;
use crate::duration::parse_duration;
use crate::output::wire_name;

/// Adds the flags given to a create or update body (`updating`). `credits` sets what is
/// left (with the refill, when given); a refill alone, on an update, changes the refill and
/// keeps the balance. The server checks every bound.
pub(crate) fn add_to(body: Body, flags: UsageFlags, updating: bool) -> anyhow::Result<Body> {
    let meta = flags
        .meta
        .as_deref()
        .map(|text| serde_json::from_str::<Value>(text).context("--meta: not JSON"))
        .transpose()?;
    let limits = rate_limits(&flags.rate_limits)?;
    let refill = flags.refill.as_deref().map(refill).transpose()?;
    let credits = match (flags.credits, refill) {
        (Some(remaining), Some(refill)) => Some(json!({"remaining": remaining, "refill": refill})),
        (Some(remaining), None) => Some(json!({"remaining": remaining})),
        (None, Some(refill)) if updating => Some(json!({"refill": refill})),
        (None, Some(_)) => anyhow::bail!("--refill refills credits: give them with --credits N"),
        (None, None) => None,
    };
    let ips = (!flags.allow_ips.is_empty()).then(|| {
        flags
            .allow_ips
            .iter()
            .map(|ip| Value::from(ip.trim()))
            .collect::<Vec<_>>()
    });
    Ok(body
        .opt("meta", meta)
        .opt("rate_limits", limits)
        .opt("credits", credits)
        .opt("allowed_ips", ips))
}

/// `keys update --clear-refill`: the refill removed (`"refill": null`), beside a balance the
/// body sets (`--credits N`), or alone, keeping it (audit s60 L2: only the API could).
pub(crate) fn without_refill(mut body: Body) -> Body {
    let credits = body.0.entry("credits").or_insert_with(|| json!({}));
    credits["refill"] = Value::Null;
    body
}

/// `--rate-limit` values (of keys and of users) as the `rate_limits` member; `None` when
/// none was given.
pub(crate) fn rate_limits(texts: &[String]) -> anyhow::Result<Option<Vec<Value>>> {
    let limits = texts
        .iter()
        .map(|text| rate_limit(text))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((!limits.is_empty()).then_some(limits))
}

/// `100/60s[,name]`.
fn rate_limit(text: &str) -> anyhow::Result<Value> {
    let bad = || format!("--rate-limit {text:?}: expected LIMIT/WINDOW[,NAME], such as 100/60s");
    let (spec, name) = text.split_once(',').unwrap_or((text, "default"));
    let (limit, window) = spec.split_once('/').with_context(bad)?;
    let limit: u64 = limit.trim().parse().ok().with_context(bad)?;
    // Past what the wire's number holds, the reason the server gives for any too large
    // (audit s60 L1: it was called a malformed flag).
    let limit = u32::try_from(limit)
        .ok()
        .filter(|limit| *limit <= limits::MAX_RATE_LIMIT)
        .with_context(|| {
            format!(
                "--rate-limit {text:?}: a limit is 1 to {}",
                limits::MAX_RATE_LIMIT
            )
        })?;
    let window = parse_duration(window)
        .map_err(anyhow::Error::msg)
        .with_context(bad)?;
    Ok(json!({"name": name.trim(), "limit": limit, "window_seconds": window.as_secs()}))
}

/// `N/day`, `N/month` (on the 1st) or `N/month@D` (on day D, 1 to 28: the server checks).
fn refill(text: &str) -> anyhow::Result<Value> {
    let bad = || format!("--refill {text:?}: expected N/day, N/month or N/month@DAY");
    let (amount, interval) = text.split_once('/').with_context(bad)?;
    let amount: u64 = amount.trim().parse().ok().with_context(bad)?;
    match interval.trim().split_once('@') {
        None if matches!(interval.trim(), "day" | "month") => {
            Ok(json!({"amount": amount, "interval": interval.trim()}))
        }
        Some((interval, day)) if interval.trim() == "month" => {
            let day: u8 = day.trim().parse().ok().with_context(bad)?;
            Ok(json!({"amount": amount, "interval": "month", "day_of_month": day}))
        }
        _ => Err(anyhow::anyhow!(bad())),
    }
}

/// A refill as `--refill` takes it: `N/day`, `N/month`, or `N/month@D` off the 1st.
fn refill_text(refill: &Refill) -> String {
    let interval = wire_name(&refill.interval);
    match refill.day_of_month {
        Some(day) if day != 1 => format!("{}/{interval}@{day}", refill.amount),
        _ => format!("{}/{interval}", refill.amount),
    }
}

/// The lines `keys show` prints for a key's usage control (none for a key without any).
pub(crate) fn lines(key: &Key) -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    if let Some(meta) = &key.meta {
        lines.push(("meta", meta.to_string()));
    }
    if let Some(limits) = limits_line(&key.rate_limits) {
        lines.push(("rate_limits", limits));
    }
    if let Some(credits) = &key.credits {
        let mut shown = credits.remaining.to_string();
        if let Some(refill) = &credits.refill {
            shown.push_str(&format!(" (refill {})", refill_text(refill)));
        }
        lines.push(("credits", shown));
    }
    if !key.allowed_ips.is_empty() {
        let ips = key.allowed_ips.iter().map(ToString::to_string);
        lines.push(("allowed_ips", ips.collect::<Vec<_>>().join(", ")));
    }
    lines
}

/// A key's or user's `rate_limits` on one line (`100/60s default, …`); `None` for none.
pub(crate) fn limits_line(limits: &[RateLimit]) -> Option<String> {
    if limits.is_empty() {
        return None;
    }
    let text = limits
        .iter()
        .map(|l| format!("{}/{}s {}", l.limit, l.window_seconds, l.name))
        .collect::<Vec<_>>()
        .join(", ");
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_and_refills_parse() {
        assert_eq!(
            rate_limit("100/60s").unwrap(),
            json!({"name": "default", "limit": 100, "window_seconds": 60})
        );
        assert_eq!(
            rate_limit("1000/1h,hourly").unwrap(),
            json!({"name": "hourly", "limit": 1000, "window_seconds": 3600})
        );
        assert!(rate_limit("100").is_err());
        assert!(rate_limit("x/60s").is_err());
        // Too large is said as such, past the wire's number too (audit s60 L1).
        for large in ["1000000001/60s", "5000000000/60s"] {
            let refused = rate_limit(large).unwrap_err().to_string();
            assert!(refused.ends_with("a limit is 1 to 1000000000"), "{refused}");
        }
        assert!(rate_limit("1000000000/60s").is_ok());
        // `--clear-refill`, alone or with `--credits N`.
        let alone = without_refill(Body::default());
        assert_eq!(alone.build(), json!({"credits": {"refill": null}}));
        let flags = UsageFlags {
            meta: None,
            rate_limits: Vec::new(),
            credits: Some(5),
            refill: None,
            allow_ips: Vec::new(),
        };
        let set = without_refill(add_to(Body::default(), flags, true).unwrap());
        let expected = json!({"credits": {"remaining": 5, "refill": null}});
        assert_eq!(set.build(), expected);
        assert_eq!(
            refill("500/month").unwrap(),
            json!({"amount": 500, "interval": "month"})
        );
        assert!(refill("500/week").is_err());
        assert_eq!(
            refill("500/month@15").unwrap(),
            json!({"amount": 500, "interval": "month", "day_of_month": 15})
        );
        assert!(refill("500/day@15").is_err());
        assert!(refill("500/month@x").is_err());
        // Shown as it is typed.
        for typed in ["500/day", "500/month", "500/month@15"] {
            let refill: Refill = serde_json::from_value(refill(typed).unwrap()).unwrap();
            assert_eq!(refill_text(&refill), typed);
        }
    }
}
