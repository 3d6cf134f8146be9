//! How some request members are read, beyond serde's derive: bounds counted as sent,
//! integers as JSON Schema defines them, and `null` told apart from absent.

use std::net::IpAddr;

use ipnet::IpNet;
use latchkey_core::PermissionSet;
use latchkey_core::wire::{optional_permission_list, permission_list};
use serde::{Deserialize, Deserializer};

pub(super) fn permission_set<'de, D>(deserializer: D) -> Result<PermissionSet, D::Error>
where
    D: Deserializer<'de>,
{
    permission_list(deserializer).map(PermissionSet::from_iter)
}

pub(super) fn optional_permission_set<'de, D>(
    deserializer: D,
) -> Result<Option<PermissionSet>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(optional_permission_list(deserializer)?.map(PermissionSet::from_iter))
}

/// Deserializes a member that is present, `null` included, as `Some`; with
/// `#[serde(default)]` an absent member stays `None`.
pub(super) fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A network an allowlist holds: in CIDR notation, or one address (the network of it
/// alone, `/32` or `/128`).
struct Net(IpNet);

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Net, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map(Net)
            .map_err(|_| {
                serde::de::Error::custom(
                    "an item is neither an IP address nor a network in CIDR notation \
                     (such as 203.0.113.7 or 203.0.113.0/24)",
                )
            })
    }
}

/// An allowlist, its addresses taken as the networks of them alone. `[]` is refused: read
/// beside `scopes: []` (nothing), it would seem to let no address in, where a key without
/// an allowlist takes any (an integration removing a key's last network would open it).
pub(super) fn optional_nets<'de, D>(deserializer: D) -> Result<Option<Vec<IpNet>>, D::Error>
where
    D: Deserializer<'de>,
{
    let nets = Option::<Vec<Net>>::deserialize(deserializer)?;
    if nets.as_ref().is_some_and(Vec::is_empty) {
        return Err(serde::de::Error::custom(
            "an empty allowlist is refused: give at least one network, or null for no \
             allowlist (requests from any address)",
        ));
    }
    Ok(nets.map(|nets| nets.into_iter().map(|Net(net)| net).collect()))
}

/// [`optional_nets`] for a member where `null` clears (see [`present`]).
pub(super) fn present_nets<'de, D>(deserializer: D) -> Result<Option<Option<Vec<IpNet>>>, D::Error>
where
    D: Deserializer<'de>,
{
    optional_nets(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use latchkey_core::PermissionSet;

    use crate::api::{CreateGroup, CreateKey, RotateKey, VerifyRequest};

    #[test]
    fn integers_may_have_a_zero_fraction() {
        let rotate = |body: &str| serde_json::from_str::<RotateKey>(body).map(|r| r.grace_seconds);
        assert_eq!(rotate(r#"{"grace_seconds": 7631}"#).unwrap(), 7631);
        assert_eq!(rotate(r#"{"grace_seconds": 7631.0}"#).unwrap(), 7631);
        assert_eq!(rotate(r#"{"grace_seconds": 1e3}"#).unwrap(), 1000);
        for bad in ["7631.5", "-1", "-0.5", "1e20", "\"7\"", "null"] {
            let body = format!(r#"{{"grace_seconds": {bad}}}"#);
            assert!(rotate(&body).is_err(), "{body}");
        }
    }

    #[test]
    fn permission_lists_are_bounded_as_sent() {
        let list = |n: usize| serde_json::json!(vec!["orders:read"; n]);
        let group = |n| {
            serde_json::from_value::<CreateGroup>(
                serde_json::json!({"name": "g", "permissions": list(n)}),
            )
        };
        assert_eq!(group(256).unwrap().permissions.len(), 1);
        assert!(group(257).is_err());
        let verify = |permissions| {
            serde_json::from_value::<VerifyRequest>(
                serde_json::json!({"key": "k", "permissions": permissions}),
            )
        };
        assert_eq!(verify(list(256)).unwrap().permissions.unwrap().len(), 256);
        assert!(verify(list(257)).is_err());
        assert_eq!(verify(serde_json::Value::Null).unwrap().permissions, None);
        let key = |scopes| {
            serde_json::from_value::<CreateKey>(
                serde_json::json!({"name": "k", "user_id": "u", "scopes": scopes}),
            )
        };
        assert!(key(list(257)).is_err());
        assert_eq!(key(serde_json::Value::Null).unwrap().scopes, None);
        assert_eq!(key(list(0)).unwrap().scopes, Some(PermissionSet::default()));
    }
}
