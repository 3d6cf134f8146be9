//! The JSON records that the daemon and its clients both speak, defined once: the server
//! (latchkey-admin) writes them and the remote verifier (latchkey-tower) and the CLI read
//! them, so the two sides cannot drift apart.
//!
//! Core never speaks HTTP: these are plain serde types. With the `openapi` feature they
//! also derive their JSON schema for the management API's OpenAPI document.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::controls::LimitState;
use crate::limits::MAX_PERMISSIONS;
use crate::permission::Permission;
use crate::verify::PrincipalInfo;

/// The body of `POST /v1/usage`: figures a remote verifier counted from its cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    /// One entry per key, at most 500.
    #[cfg_attr(feature = "openapi", schema(max_items = 500))]
    pub items: Vec<UsageItem>,
}

/// Usage of one key since the last report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UsageItem {
    /// The key's record id.
    pub key_id: Uuid,
    /// Successful verifications, at least 1.
    #[serde(deserialize_with = "whole_number")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub count: u64,
    /// The last of them (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_used_at: OffsetDateTime,
}

/// The body of `POST /v1/verify`, as the remote verifier sends it and the daemon reads it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The full key presented to the service.
    pub key: String,
    /// Permissions the key must all hold for `valid` to be true.
    #[serde(
        default,
        deserialize_with = "optional_permission_list",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<Vec<crate::schema::Permission>>, max_items = 256)
    )]
    pub permissions: Option<Vec<Permission>>,
    /// The client's address, checked against the key's `allowed_ips` (a key with an
    /// allowlist is refused without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::IpAddress>))]
    pub client_ip: Option<IpAddr>,
    /// What this request costs against the key's rate limits and credits (default 1; 0
    /// checks without consuming any of them, though it counts as a use of the key in its
    /// usage figures: refused with `rate_limited` when a limit has not
    /// even one request left, `usage_exceeded` when no credits are; on PostgreSQL a limit
    /// whose state this daemon does not hold in memory is read from the database, writing
    /// nothing).
    #[serde(
        default,
        deserialize_with = "optional_integer",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(maximum = 1_000_000))] // limits::MAX_COST
    pub cost: Option<u64>,
}

/// Shows the key's display prefix only.
impl std::fmt::Debug for VerifyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyRequest")
            .field("key", &crate::key::Redacted(&self.key))
            .field("permissions", &self.permissions)
            .field("client_ip", &self.client_ip)
            .field("cost", &self.cost)
            .finish()
    }
}

/// The answer of `POST /v1/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyResponse {
    /// Whether the key authenticates and holds every permission asked for.
    pub valid: bool,
    /// `ok` when valid; otherwise `invalid_key`, `key_disabled`, `key_revoked`,
    /// `key_expired`, `user_disabled`, `ip_not_allowed`, `insufficient_permission`,
    /// `rate_limited` or `usage_exceeded`, checked in that order.
    pub code: String,
    /// The key's rate limits and credits after this request (each limit, then `credits`);
    /// with `rate_limited`, the limit that refused, as it stands (the refused cost took
    /// nothing from it; a shared limit, as this daemon knows it without a round trip when
    /// the cost is above the whole limit), whose `reset_seconds` is when the whole limit is
    /// back: the wait before a retry is `retry_after` only; with `usage_exceeded`, the credits
    /// left (fewer than the cost) and when they are refilled. Absent for a key without
    /// any: a remote verifier caches only such answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Vec<LimitState>>,
    /// With `rate_limited`: seconds until a retry can pass. With `usage_exceeded`:
    /// seconds until the credits are refilled (absent when they never are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Who the key authenticates as: present when it authenticates (also with
    /// `insufficient_permission`), absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<PrincipalInfo>,
    /// When the key expires (RFC 3339), present with `principal` for a key that has an
    /// expiry: a remote verifier's cache must not outlive it, and no event announces it.
    /// Absent from daemons that predate it (a remote verifier's `cache_ttl` then bounds
    /// its entry).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub expires_at: Option<OffsetDateTime>,
    /// On a database several daemons share: the newest change (audit `seq`) the answering
    /// daemon had applied when it verified. A remote verifier that has already seen a
    /// later change on its event stream (from another daemon) uses the answer but does not
    /// cache it: this daemon may not have applied a revocation yet. Absent on an embedded
    /// store, and from daemons that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// The body of `POST /v1/leases`: a remote verifier asks for slices of a key's rate limits
/// and credits, to admit requests from them without asking the daemon each time.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The full key presented to the service.
    pub key: String,
    /// The client's address, checked against the key's `allowed_ips` when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::IpAddress>))]
    pub client_ip: Option<IpAddr>,
    /// What to lease, at most 32 buckets, each at most once.
    #[cfg_attr(feature = "openapi", schema(max_items = 32))]
    pub buckets: Vec<BucketWant>,
}

impl std::fmt::Debug for LeaseRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseRequest")
            .field("key", &crate::key::Redacted(&self.key))
            .field("client_ip", &self.client_ip)
            .field("buckets", &self.buckets)
            .finish()
    }
}

/// What a lease is of: one of the key's rate limits, or its credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BucketKind {
    /// A rate limit of the key, by `name`.
    RateLimit,
    /// The key's credits (no `name`).
    Credits,
}

/// One bucket a lease asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BucketWant {
    /// A rate limit or the credits.
    pub kind: BucketKind,
    /// The rate limit's name (absent for credits, which refuse one): a user's with `user:`
    /// before it, at most 37 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 37))]
    pub name: Option<String>,
    /// How many requests' worth to lease, 1 to 100,000 (the daemon may grant fewer).
    #[serde(deserialize_with = "integer")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100_000))]
    pub want: u64,
}

/// The body of `POST /v1/leases/return`: a remote verifier gives back credits it leased
/// and did not spend (at its shutdown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaseReturn {
    /// The id of the key the credits were leased for (`principal.key_id` in the answer of
    /// `POST /v1/verify`): a verifier keeps no key text to give credits back.
    pub key_id: Uuid,
    /// How many credits to give back, 1 to 100,000 (the daemon takes back at most what it
    /// leased this caller for this key and did not get back yet).
    #[serde(deserialize_with = "integer")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100_000))]
    pub credits: u64,
}

/// The answer of `POST /v1/leases/return`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseReturned {
    /// How many credits went back to the key (0: none could be taken back: not leased to
    /// this caller, already given back, or the key's credits changed since).
    #[serde(deserialize_with = "integer")]
    pub returned: u64,
}

/// The answer of `POST /v1/leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseResponse {
    /// Whether the key authenticates (and its client's address is allowed).
    pub valid: bool,
    /// `ok`, or why not, as `POST /v1/verify` says it.
    pub code: String,
    /// The key's allowlist, which the verifier checks for each request it admits itself.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub allowed_ips: Vec<IpNet>,
    /// One grant per bucket asked for, in the same order.
    #[serde(default)]
    pub grants: Vec<LeaseGrant>,
}

/// What the daemon granted of one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseGrant {
    /// The bucket, as asked.
    pub kind: BucketKind,
    /// The rate limit's name (absent for credits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How many requests' worth is the verifier's to admit (0: none now; the key has no
    /// such bucket, or it is used up).
    #[serde(deserialize_with = "integer")]
    pub granted: u64,
    /// For a rate limit: how long the grant may be used, in milliseconds (the time the
    /// limit takes to win it back, at most its window); unused after that, it is void.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_ms: Option<u64>,
    /// With nothing granted: seconds until a request could pass (of a rate limit), or
    /// until the credits are refilled (absent when they never are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// The rate limit's requests per window (absent for credits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The rate limit's window (absent for credits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<u32>,
    /// For a rate limit granted some: what it had left after the grant. A verifier asks
    /// for more ahead while half of the limit is left, and a request at a time when less
    /// is ([`SliceSize`](crate::slice_size::SliceSize)). Absent from daemons that predate
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<u32>,
}

/// The data of the `ready` and `reset` events of `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStart {
    /// The sequence number of the store's newest change.
    pub head: u64,
    /// Where the stream resumes: changes after it follow.
    pub position: u64,
    /// The hash of the change at `position`; `null` at 0.
    #[serde(default)]
    pub hash: Option<String>,
    /// The store's lineage: it changes when the store is restored from a backup, and a
    /// client that sees another one than before drops whatever it derived from the feed.
    /// Always sent by this daemon; absent from daemons that predate it.
    #[serde(default)]
    pub lineage: Option<Uuid>,
    /// The daemon's clock when it wrote the event, in Unix milliseconds. A client that
    /// noted its own clock when it asked for the stream bounds the two clocks' offset with
    /// it, and so how late each [`Heartbeat`] reaches it. Absent from daemons that predate
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at_ms: Option<i64>,
}

/// The data of the `heartbeat` event of `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sequence number of the last change sent on this stream.
    pub head: u64,
    /// The daemon's clock when the heartbeat fell due, in Unix milliseconds (see
    /// [`StreamStart::sent_at_ms`]): every change published by then (durable; on a shared
    /// database, applied by the daemon) was sent before it. A
    /// stream delayed on its way (a proxy that buffers it, a congested link) must not vouch
    /// for a cache as if it were live. Absent from daemons that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at_ms: Option<i64>,
}

/// Deserializes a list of at most [`MAX_PERMISSIONS`] permissions, counted as sent
/// (duplicates included), so that a body's `maxItems` is the rule and a list within it
/// never breaks core's bound on a set by its count.
pub fn permission_list<'de, D>(deserializer: D) -> Result<Vec<Permission>, D::Error>
where
    D: Deserializer<'de>,
{
    let list = Vec::<Permission>::deserialize(deserializer)?;
    if list.len() > MAX_PERMISSIONS {
        return Err(serde::de::Error::invalid_length(
            list.len(),
            &"at most 256 permissions",
        ));
    }
    Ok(list)
}

/// [`permission_list`] for an `Option` field (`null` or absent is `None`).
pub fn optional_permission_list<'de, D>(
    deserializer: D,
) -> Result<Option<Vec<Permission>>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Bounded(#[serde(deserialize_with = "permission_list")] Vec<Permission>);
    Ok(Option::<Bounded>::deserialize(deserializer)?.map(|list| list.0))
}

/// Deserializes a non-negative integer, also when written with a zero fraction (`7.0`):
/// JSON Schema's `integer` is any number without a fractional part, so a client that
/// follows the document may send one, and it means the same number.
pub fn whole_number<'de, D>(deserializer: D) -> Result<u64, D::Error>
where
    D: Deserializer<'de>,
{
    // 2^64: every f64 below it that has no fraction fits a u64.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    let number = serde_json::Number::deserialize(deserializer)?;
    number
        .as_u64()
        .or_else(|| {
            let float = number.as_f64()?;
            (float.fract() == 0.0 && (0.0..LIMIT).contains(&float)).then_some(float as u64)
        })
        .ok_or_else(|| {
            serde::de::Error::invalid_value(
                serde::de::Unexpected::Other(&number.to_string()),
                &"a non-negative integer",
            )
        })
}

/// [`whole_number`] for any unsigned field type and any serde format: a JSON number without
/// a fractional part (`60` or `60.0`), or a format's own integer (postcard's, for records
/// that are also stored). Use as `#[serde(deserialize_with = "latchkey_core::wire::integer")]`.
pub fn integer<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let value = deserializer.deserialize_u64(Whole)?;
    T::try_from(value).map_err(|_| {
        serde::de::Error::invalid_value(
            serde::de::Unexpected::Unsigned(value),
            &"a smaller whole number",
        )
    })
}

/// [`integer`] for an `Option` field (`null` or absent is `None`).
pub fn optional_integer<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "integer")] u64);
    match Option::<Wrapped>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Wrapped(value)) => T::try_from(value).map(Some).map_err(|_| {
            serde::de::Error::invalid_value(
                serde::de::Unexpected::Unsigned(value),
                &"a smaller whole number",
            )
        }),
    }
}

/// Accepts unsigned integers, and floats without a fraction (serde_json hands a float to
/// `deserialize_u64`'s visitor as one).
struct Whole;

impl serde::de::Visitor<'_> for Whole {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<u64, E> {
        Ok(value)
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<u64, E> {
        u64::try_from(value)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(value), &self))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<u64, E> {
        // 2^64: every f64 below it that has no fraction fits a u64.
        const LIMIT: f64 = 18_446_744_073_709_551_616.0;
        if value.fract() == 0.0 && (0.0..LIMIT).contains(&value) {
            Ok(value as u64)
        } else {
            Err(E::invalid_value(serde::de::Unexpected::Float(value), &self))
        }
    }
}
