//! Usage control on a key: `meta`, `rate_limits`, `credits` and `allowed_ips` (the
//! README's *Usage control*), as the API shows and takes them, and their checks.
//!
//! What enforces them at verification time is [`crate::meter`].

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::limits::{
    MAX_ALLOWED_IPS, MAX_CREDITS, MAX_META_BYTES, MAX_META_DEPTH, MAX_RATE_LIMIT,
    MAX_RATE_LIMIT_NAME_BYTES, MAX_RATE_LIMIT_WINDOW_SECONDS, MAX_RATE_LIMITS,
};

/// One named rate limit: at most `limit` requests per `window_seconds`.
///
/// Enforced with GCRA (the `governor` crate): a full window after the limit was reached,
/// the whole limit is available again; in between, it comes back evenly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
// A misspelt member (`refil`) is refused, not dropped: postcard, which stores these, reads
// a struct as a sequence and never sees a member's name.
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// 1 to 32 characters of `[A-Za-z0-9_.-]`, unique among the key's (or user's) limits.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9_.\-]{1,32}$"))]
    pub name: String,
    /// Requests per window, 1 to 1,000,000,000.
    #[serde(deserialize_with = "crate::wire::integer")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000_000))]
    pub limit: u32,
    /// The window, 1 second to 31 days.
    #[serde(deserialize_with = "crate::wire::integer")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 2_678_400))]
    pub window_seconds: u32,
}

/// How often credits are refilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RefillInterval {
    /// Every day at 00:00 UTC.
    Day,
    /// Every month on `day_of_month` at 00:00 UTC.
    Month,
}

/// A refill: the credits are set to `amount` at each interval's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
// A misspelt member (`refil`) is refused, not dropped: postcard, which stores these, reads
// a struct as a sequence and never sees a member's name.
#[serde(deny_unknown_fields)]
pub struct Refill {
    /// The credits after a refill: 1 to 10^15 (no refill at all is `refill` left out).
    #[serde(deserialize_with = "crate::wire::integer")]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)
    )]
    // MAX_CREDITS
    pub amount: u64,
    /// `day` or `month`.
    pub interval: RefillInterval,
    /// For `month`: the day the refill happens, 1 to 28 (default 1).
    // No `skip_serializing_if` here or in `Credits`: both are stored with postcard.
    #[serde(default, deserialize_with = "crate::wire::optional_integer")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 28))]
    pub day_of_month: Option<u8>,
}

/// A key's credits: each authenticated request costs 1 (or a route's cost); at 0 the key is
/// refused with `usage_exceeded` until a refill or a PATCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
// A misspelt member (`refil`) is refused, not dropped: postcard, which stores these, reads
// a struct as a sequence and never sees a member's name.
#[serde(deny_unknown_fields)]
pub struct Credits {
    /// What is left (at most 10^15).
    #[serde(deserialize_with = "crate::wire::integer")]
    #[cfg_attr(feature = "openapi", schema(maximum = 1_000_000_000_000_000_i64))]
    // MAX_CREDITS
    pub remaining: u64,
    /// An optional refill.
    #[serde(default)]
    pub refill: Option<Refill>,
}

/// A change to a key's credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditsPatch {
    /// No credits any more: the key is not metered.
    Clear,
    /// Sets what is left; `refill: Some(None)` removes the refill, `None` keeps it.
    Set {
        /// What is left from now on.
        remaining: u64,
        /// `Some(None)` removes the refill.
        refill: Option<Option<Refill>>,
    },
    /// Replaces the refill (`None` removes it) and keeps what is left: this process's
    /// unspent slice goes back into it; a slice another process holds counts as spent, as
    /// with [`CreditsPatch::Set`]. The key must have credits.
    Refill(Option<Refill>),
    /// Adds to what is left (after the consumption not yet persisted).
    Add(u64),
}

/// The state of one rate limit or the credits after a verification, for `/v1/verify` and the
/// `RateLimit` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitState {
    /// The limit's name; `credits` for the credits.
    pub name: String,
    /// The limit (`null` for credits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The window (`null` for credits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<u32>,
    /// What is left.
    #[serde(deserialize_with = "crate::wire::integer")]
    pub remaining: u64,
    /// Seconds until the full limit is available again (for credits: until the next
    /// refill, `null` without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_seconds: Option<u64>,
}

/// Checks `meta`: a JSON object of at most 4 KiB once serialized, nested at most
/// [`MAX_META_DEPTH`] levels deep, holding no key's full text.
pub fn check_meta(meta: &serde_json::Value) -> Result<(), StoreError> {
    if !meta.is_object() {
        return Err(StoreError::invalid("meta", "must be a JSON object"));
    }
    if depth(meta) > MAX_META_DEPTH {
        return Err(StoreError::invalid(
            "meta",
            format!("at most {MAX_META_DEPTH} levels of nested objects and arrays"),
        ));
    }
    // `Value`'s Display is its compact JSON, the text that is stored.
    let text = meta.to_string();
    if text.len() > MAX_META_BYTES {
        return Err(StoreError::invalid(
            "meta",
            format!("at most {MAX_META_BYTES} bytes of JSON"),
        ));
    }
    // Handed to services with every verification and shown to whoever reads the key: a
    // secret is never stored in plain, here no more than in a name. (A key's text needs no
    // escaping in JSON, so it stands in the serialized text as it was given.)
    crate::limits::check_no_key("meta", &text)
}

/// How many levels of objects and arrays `value` nests (a scalar is 0). Walks with a stack of
/// its own, so a deep value cannot exhaust the thread's.
fn depth(value: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0)];
    while let Some((value, above)) = stack.pop() {
        let level = above + 1;
        match value {
            serde_json::Value::Object(map) => stack.extend(map.values().map(|v| (v, level))),
            serde_json::Value::Array(items) => stack.extend(items.iter().map(|v| (v, level))),
            _ => continue,
        }
        deepest = deepest.max(level);
    }
    deepest
}

/// Whether `name` may name a rate limit: 1 to 32 characters of `[A-Za-z0-9_.-]`, which
/// need no escaping in JSON or in the `RateLimit` headers' quoted strings.
pub fn is_rate_limit_name(name: &str) -> bool {
    (1..=MAX_RATE_LIMIT_NAME_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// What a user's rate limit is named in refusals and limit states: `user:<name>`, apart
/// from a key's own limit of the same name.
pub const USER_LIMIT_PREFIX: &str = "user:";

/// Whether `name` may name a limit in a refusal or a limit state (`/v1/verify`'s `limits`,
/// a 429's body and `RateLimit` headers): a [rate limit's name](is_rate_limit_name), that
/// of a user's limit ([`USER_LIMIT_PREFIX`]), or `credits`. None needs escaping in JSON or
/// in a header's quoted string.
pub fn is_limit_state_name(name: &str) -> bool {
    is_rate_limit_name(name.strip_prefix(USER_LIMIT_PREFIX).unwrap_or(name))
}

/// Checks a list of rate limits: at most 8, each well-formed, names unique.
pub fn check_rate_limits(limits: &[RateLimit]) -> Result<(), StoreError> {
    let field = "rate_limits";
    if limits.len() > MAX_RATE_LIMITS {
        return Err(StoreError::invalid(
            field,
            format!("at most {MAX_RATE_LIMITS} limits"),
        ));
    }
    for (i, limit) in limits.iter().enumerate() {
        if !is_rate_limit_name(&limit.name) {
            return Err(StoreError::invalid(
                field,
                format!("a name is 1 to {MAX_RATE_LIMIT_NAME_BYTES} characters of [A-Za-z0-9_.-]"),
            ));
        }
        if limits[..i].iter().any(|l| l.name == limit.name) {
            return Err(StoreError::invalid(field, "names must be unique"));
        }
        if !(1..=MAX_RATE_LIMIT).contains(&limit.limit) {
            return Err(StoreError::invalid(
                field,
                format!("a limit is 1 to {MAX_RATE_LIMIT}"),
            ));
        }
        if !(1..=MAX_RATE_LIMIT_WINDOW_SECONDS).contains(&limit.window_seconds) {
            return Err(StoreError::invalid(
                field,
                format!("a window is 1 to {MAX_RATE_LIMIT_WINDOW_SECONDS} seconds"),
            ));
        }
    }
    Ok(())
}

/// Checks credits: at most 10^15 remaining or refilled, a day of month from 1 to 28.
pub fn check_credits(credits: &Credits) -> Result<(), StoreError> {
    check_credit_amount(credits.remaining)?;
    if let Some(refill) = &credits.refill {
        check_refill(refill)?;
    }
    Ok(())
}

/// Checks a refill: one of 0 credits would only keep the key stopped, which is surely not
/// what was meant (a stopped key is disabled instead, and no refill is `refill` left out).
pub fn check_refill(refill: &Refill) -> Result<(), StoreError> {
    if refill.amount == 0 {
        return Err(StoreError::invalid(
            "credits",
            "a refill's amount is at least 1 (leave the refill out for none)",
        ));
    }
    check_credit_amount(refill.amount)?;
    match (refill.interval, refill.day_of_month) {
        (_, None) => Ok(()),
        (RefillInterval::Month, Some(1..=28)) => Ok(()),
        (RefillInterval::Month, Some(_)) => {
            Err(StoreError::invalid("credits", "day_of_month is 1 to 28"))
        }
        (RefillInterval::Day, Some(_)) => Err(StoreError::invalid(
            "credits",
            "day_of_month goes with a monthly refill only",
        )),
    }
}

/// Checks an amount of credits.
pub fn check_credit_amount(amount: u64) -> Result<(), StoreError> {
    if amount > MAX_CREDITS {
        return Err(StoreError::invalid(
            "credits",
            format!("at most {MAX_CREDITS} credits"),
        ));
    }
    Ok(())
}

/// `net` as it matches: a range of IPv4-mapped IPv6 addresses (`::ffff:203.0.113.0/120`)
/// as the IPv4 range it maps (`203.0.113.0/24`), since a client's address is checked as
/// its IPv4 address when it has one ([`IpAddr::to_canonical`](std::net::IpAddr)). Any
/// other range as it is.
pub fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

/// Whether `net` holds `ip`, an address as [`IpAddr::to_canonical`] gives it: an IPv6
/// range wider than the IPv4-mapped block (`::/0`) holds the IPv4 addresses it maps, as
/// a range of them holds them ([`canonical_net`]).
pub fn net_holds(net: IpNet, ip: IpAddr) -> bool {
    match (canonical_net(net), ip) {
        (IpNet::V6(v6), IpAddr::V4(v4)) => v6.contains(&v4.to_ipv6_mapped()),
        (net, ip) => net.contains(&ip),
    }
}

/// Checks an IP allowlist: at most 64 CIDRs.
pub fn check_allowed_ips(ips: &[IpNet]) -> Result<(), StoreError> {
    if ips.len() > MAX_ALLOWED_IPS {
        return Err(StoreError::invalid(
            "allowed_ips",
            format!("at most {MAX_ALLOWED_IPS} CIDRs"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(name: &str, limit: u32, window_seconds: u32) -> RateLimit {
        RateLimit {
            name: name.into(),
            limit,
            window_seconds,
        }
    }

    #[test]
    fn rate_limits_are_bounded() {
        assert!(check_rate_limits(&[limit("default", 100, 60)]).is_ok());
        let nine: Vec<_> = (0..9).map(|i| limit(&format!("l{i}"), 1, 1)).collect();
        assert!(check_rate_limits(&nine).is_err());
        assert!(check_rate_limits(&[limit("a", 1, 1), limit("a", 2, 2)]).is_err());
        assert!(check_rate_limits(&[limit("", 1, 1)]).is_err());
        assert!(check_rate_limits(&[limit("a b", 1, 1)]).is_err());
        assert!(check_rate_limits(&[limit("a", 0, 1)]).is_err());
        assert!(check_rate_limits(&[limit("a", 1, 0)]).is_err());
    }

    #[test]
    fn meta_is_a_small_object() {
        assert!(check_meta(&serde_json::json!({"plan": "pro"})).is_ok());
        assert!(check_meta(&serde_json::json!([1])).is_err());
        let big = "x".repeat(MAX_META_BYTES);
        assert!(check_meta(&serde_json::json!({ "a": big })).is_err());
        let key = crate::ApiKey::generate(&crate::Prefix::default(), crate::Env::Live);
        let error = check_meta(&serde_json::json!({"a": [key.expose()]})).unwrap_err();
        assert!(!error.to_string().contains(key.expose()), "{error}");
    }

    #[test]
    fn meta_nests_at_most_sixteen_levels() {
        let nested = |levels: usize| {
            let mut value = serde_json::json!(1);
            for level in 1..levels {
                value = if level % 2 == 0 {
                    serde_json::json!([value])
                } else {
                    serde_json::json!({ "a": value })
                };
            }
            serde_json::json!({ "top": value })
        };
        assert_eq!(depth(&nested(MAX_META_DEPTH)), MAX_META_DEPTH);
        assert!(check_meta(&nested(MAX_META_DEPTH)).is_ok());
        let error = check_meta(&nested(MAX_META_DEPTH + 1)).unwrap_err();
        assert!(error.to_string().contains("levels"), "{error}");
        assert_eq!(depth(&serde_json::json!({})), 1);
        assert_eq!(depth(&serde_json::json!({"a": [], "b": {"c": 1}})), 2);
    }

    /// They refuse unknown JSON members and are still stored and read back with postcard.
    #[test]
    fn stored_records_round_trip_and_json_refuses_unknown_members() {
        let credits = Credits {
            remaining: 5,
            refill: Some(Refill {
                amount: 10,
                interval: RefillInterval::Month,
                day_of_month: Some(3),
            }),
        };
        let bytes = postcard::to_stdvec(&credits).unwrap();
        assert_eq!(postcard::from_bytes::<Credits>(&bytes).unwrap(), credits);
        let limits = vec![limit("default", 100, 60)];
        let bytes = postcard::to_stdvec(&limits).unwrap();
        assert_eq!(
            postcard::from_bytes::<Vec<RateLimit>>(&bytes).unwrap(),
            limits
        );
        let misspelt =
            serde_json::json!({"remaining": 5, "refil": {"amount": 1, "interval": "day"}});
        assert!(serde_json::from_value::<Credits>(misspelt).is_err());
    }

    #[test]
    fn refills_are_checked() {
        let monthly = |day| Refill {
            amount: 10,
            interval: RefillInterval::Month,
            day_of_month: Some(day),
        };
        assert!(check_refill(&monthly(1)).is_ok());
        assert!(check_refill(&monthly(29)).is_err());
        assert!(check_refill(&monthly(0)).is_err());
        assert!(check_credit_amount(MAX_CREDITS + 1).is_err());
        let nothing = Refill {
            amount: 0,
            ..monthly(1)
        };
        assert!(check_refill(&nothing).is_err());
    }
}
