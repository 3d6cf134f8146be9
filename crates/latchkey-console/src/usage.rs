//! Usage control in the console: a key's `meta`, rate limits, credits and allowed IPs as
//! its page shows them, and the create form's optional fields as the API's members. The
//! form is read here only into the API's shape; every bound is the API's, and its refusal
//! (400, naming the field) is what the form answers.

use latchkey_core::{Credits, RateLimit, RefillInterval};
use serde_json::{Value, json};

use crate::errors::UiError;
use crate::extract::Fields;

/// Adds the form's usage control fields, those filled in, to a create body:
/// `meta` (a JSON object), `rate_limits` (`100/60s`, `1000/1h hourly`, comma- or
/// line-separated), `credits` (a number) with `refill` (`day`, `month` or blank) and
/// `allowed_ips` (CIDRs or single addresses, space- or comma-separated).
pub(crate) fn add_to(body: &mut Value, fields: &Fields) -> Result<(), UiError> {
    if let Some(meta) = fields.optional("meta") {
        let meta: Value = serde_json::from_str(&meta).map_err(|_| {
            UiError::BadForm("meta: a JSON object, such as {\"plan\": \"pro\"}".into())
        })?;
        body["meta"] = meta;
    }
    if let Some(limits) = fields.optional("rate_limits") {
        body["rate_limits"] = rate_limits(&limits)?.into();
    }
    if let Some(credits) = fields.optional("credits") {
        let remaining: u64 = credits
            .parse()
            .map_err(|_| UiError::BadForm("credits: a whole number".into()))?;
        body["credits"] = match fields.get("refill") {
            "" => json!({ "remaining": remaining }),
            interval @ ("day" | "month") => json!({
                "remaining": remaining,
                "refill": { "amount": remaining, "interval": interval },
            }),
            _ => return Err(UiError::BadForm("refill: day, month or none".into())),
        };
    } else if !fields.get("refill").is_empty() {
        return Err(UiError::BadForm(
            "refill: give the credits to refill to".into(),
        ));
    }
    // Separators alone are an empty field: no allowlist (the API refuses `[]`).
    let ips = fields
        .optional("allowed_ips")
        .map(|ips| crate::pages::split_list(&ips));
    if let Some(ips) = ips.filter(|ips| !ips.is_empty()) {
        body["allowed_ips"] = ips.into();
    }
    Ok(())
}

/// Rate limits typed as text: `LIMIT/WINDOW[ NAME]` items, the window a number with `s`,
/// `m`, `h` or `d`; an item without a name is `default`.
pub(crate) fn rate_limits(text: &str) -> Result<Vec<Value>, UiError> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let bad = || {
                UiError::BadForm(format!(
                    "rate limits: {item:?} is not LIMIT/WINDOW [NAME], such as 100/60s or 1000/1h hourly"
                ))
            };
            let (spec, name) = item.split_once(char::is_whitespace).unwrap_or((item, "default"));
            let (limit, window) = spec.split_once('/').ok_or_else(bad)?;
            let limit: u64 = limit.parse().map_err(|_| bad())?;
            let window = seconds(window).ok_or_else(bad)?;
            Ok(json!({ "name": name.trim(), "limit": limit, "window_seconds": window }))
        })
        .collect()
}

/// `60s`, `5m`, `1h`, `1d` (or a bare number of seconds) in seconds.
fn seconds(text: &str) -> Option<u64> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(scale)
}

/// Rate limits as text: `100 per 60 s (default), …`, or `none`.
pub(crate) fn limits_text(limits: &[RateLimit]) -> String {
    if limits.is_empty() {
        return "none".to_owned();
    }
    limits
        .iter()
        .map(|l| format!("{} per {} s ({})", l.limit, l.window_seconds, l.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rate limits as the editor takes them back ([`rate_limits`]): `100/60s default, …`.
pub(crate) fn limits_input(limits: &[RateLimit]) -> String {
    limits
        .iter()
        .map(|l| format!("{}/{}s {}", l.limit, l.window_seconds, l.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Credits as text: `9,999 left, refilled to 10000 every day`, or `not metered`.
pub(crate) fn credits_text(credits: &Option<Credits>) -> String {
    let Some(credits) = credits else {
        return "not metered".to_owned();
    };
    let mut text = format!("{} left", credits.remaining);
    if let Some(refill) = &credits.refill {
        let every = match refill.interval {
            RefillInterval::Day => "every day".to_owned(),
            RefillInterval::Month => {
                format!("every month on day {}", refill.day_of_month.unwrap_or(1))
            }
        };
        text.push_str(&format!(", refilled to {} {every}", refill.amount));
    }
    text
}

/// `meta` as indented JSON (the template escapes it), or `None`.
pub(crate) fn meta_text(meta: &Option<Value>) -> Option<String> {
    meta.as_ref()
        .map(|m| serde_json::to_string_pretty(m).unwrap_or_default())
}

/// Allowed IPs as text, or `anywhere`.
pub(crate) fn ips_text(ips: &[impl std::fmt::Display]) -> String {
    if ips.is_empty() {
        return "anywhere".to_owned();
    }
    ips.iter()
        .map(|ip| ip.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse_from_text() {
        assert_eq!(
            rate_limits("100/60s, 1000/1h hourly\n5/1d daily").unwrap(),
            vec![
                json!({"name": "default", "limit": 100, "window_seconds": 60}),
                json!({"name": "hourly", "limit": 1000, "window_seconds": 3600}),
                json!({"name": "daily", "limit": 5, "window_seconds": 86400}),
            ]
        );
        for bad in ["100", "x/60s", "100/60y", "100/s"] {
            assert!(rate_limits(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_form_becomes_the_api_s_members() {
        let fields = Fields::parse(
            b"meta=%7B%22plan%22%3A%22pro%22%7D&rate_limits=10%2F1m&credits=50&refill=month&allowed_ips=10.0.0.0%2F8+192.0.2.1%2F32",
        )
        .unwrap();
        let mut body = json!({});
        add_to(&mut body, &fields).unwrap();
        assert_eq!(
            body,
            json!({
                "meta": {"plan": "pro"},
                "rate_limits": [{"name": "default", "limit": 10, "window_seconds": 60}],
                "credits": {"remaining": 50, "refill": {"amount": 50, "interval": "month"}},
                "allowed_ips": ["10.0.0.0/8", "192.0.2.1/32"],
            })
        );
        let mut untouched = json!({});
        add_to(&mut untouched, &Fields::parse(b"meta=&credits=").unwrap()).unwrap();
        assert_eq!(untouched, json!({}));
        for bad in [
            &b"meta=%7Bnot"[..],
            b"credits=-1",
            b"refill=day",
            b"credits=1&refill=week",
        ] {
            assert!(add_to(&mut json!({}), &Fields::parse(bad).unwrap()).is_err());
        }
    }
}
