//! A small client over any [`Transport`]: JSON in and out, problem+json to [`Problem`], and
//! name-to-id resolution for users and groups.

use std::collections::HashMap;

use ::http::Method;
use latchkey_admin::api::List;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::output::read;
use crate::transport::{ApiRequest, Problem, Transport, forbidden};

/// The management API, over a transport.
#[derive(Debug)]
pub struct Client<T> {
    transport: T,
}

impl<T: Transport> Client<T> {
    /// A client over `transport`.
    pub fn new(transport: T) -> Client<T> {
        Client { transport }
    }

    /// The transport back, for what ends it (`LocalTransport::close`).
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// Sends a request; a 2xx answer gives its JSON body (`null` when empty), anything else
    /// a [`Problem`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let response = self
            .transport
            .send(ApiRequest {
                method: method.clone(),
                path: path.to_owned(),
                body,
            })
            .await?;
        if !response.status.is_success() {
            return Err(Problem::from_response(response.status, &response.body).into());
        }
        if response.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&response.body).map_err(|e| {
            // Answered as done, the answer unreadable: what was done is not known.
            let message = format!("the answer to {path} is not JSON: {e}");
            crate::transport::lost_answer(&method, message)
        })
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body: one of the API's request types (`latchkey_admin::api`).
    pub async fn post(&self, path: &str, body: impl Serialize) -> anyhow::Result<Value> {
        self.call(Method::POST, path, Some(serde_json::to_value(body)?))
            .await
    }

    /// `PATCH path` with a JSON body: one of the API's request types (`latchkey_admin::api`).
    pub async fn patch(&self, path: &str, body: impl Serialize) -> anyhow::Result<Value> {
        self.call(Method::PATCH, path, Some(serde_json::to_value(body)?))
            .await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::DELETE, path, None).await
    }

    /// The id of the user or group (`collection`) that `reference` names, to name it in a
    /// command's answer: an id as given, a name looked up. `None` when the caller may not
    /// read it: the API takes a name wherever it takes an id, so a command needs no read
    /// permission the endpoint it calls does not (audit s60 M1: `users delete NAME` asked
    /// for `latchkey:users:read`).
    pub async fn id_of(&self, collection: &str, reference: &str) -> anyhow::Result<Option<String>> {
        if Uuid::parse_str(reference).is_ok() {
            return Ok(Some(reference.to_owned()));
        }
        match self
            .get(&format!("/v1/{collection}/{}", segment(reference)))
            .await
        {
            Ok(record) => Ok(Some(read::<Named>(&record)?.id.to_string())),
            Err(e) if forbidden(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Names by id of the records of a collection that `ids` name, for human output: read
    /// one by one, so a page of keys costs a request per user on it, never a read of every
    /// user of the store. Best effort: a record the caller may not read shows its id.
    pub async fn names_of(
        &self,
        collection: &str,
        ids: impl IntoIterator<Item = Uuid>,
    ) -> HashMap<Uuid, String> {
        let mut names = HashMap::new();
        let mut asked = std::collections::HashSet::new();
        for id in ids {
            if !asked.insert(id) {
                continue;
            }
            if let Ok(record) = self.get(&format!("/v1/{collection}/{id}")).await
                && let Ok(named) = read::<Named>(&record)
            {
                names.insert(id, named.name);
            }
        }
        names
    }
}

/// What names a user or a group: the two fields of `User` and `Group` that
/// [`Client::names_of`] and name resolution read (serde skips the others).
#[derive(Debug, Deserialize)]
struct Named {
    id: Uuid,
    name: String,
}

/// Tells on stderr how to get the next page of a list, when there is one.
pub fn more<T>(list: &List<T>, what: &str) {
    if let Some(cursor) = &list.next_cursor {
        eprintln!("More {what}: the same command with --cursor {cursor}");
    }
}

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one path segment (everything but RFC 3986's unreserved characters).
pub fn segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

/// Builds a query string (`application/x-www-form-urlencoded`, as the API parses it) from
/// the pairs whose value is set.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let set: Vec<(&str, &str)> = pairs
        .iter()
        .filter_map(|(name, value)| Some((*name, value.as_deref()?)))
        .collect();
    match serde_urlencoded::to_string(&set) {
        Ok(query) if !query.is_empty() => format!("?{query}"),
        // Pairs of strings always serialize; nothing set gives no query.
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_queries() {
        assert_eq!(segment("ops-team_1.x"), "ops-team_1.x");
        assert_eq!(segment("a b/c?"), "a%20b%2Fc%3F");
        assert_eq!(segment("é"), "%C3%A9");
        assert_eq!(query(&[("a", None)]), "");
        assert_eq!(
            query(&[
                ("q", Some("x y".into())),
                ("n", None),
                ("sort", Some("-name".into()))
            ]),
            "?q=x+y&sort=-name"
        );
    }
}
