//! Extractors whose every rejection is a problem+json 400 naming the field, in place of
//! axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use http::StatusCode;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use latchkey_core::limits::{MAX_BODY_BYTES, MAX_LIST_LIMIT, MIN_IMPORTED_KEY_LEN};
use serde::de::DeserializeOwned;

use crate::error::AppError;

/// A JSON request body, deserialized with the path of the failing field kept.
///
/// Rejects, with problem+json: a content type other than `application/json` (or
/// `application/*+json`) with 415 `unsupported_media_type`; a body over
/// [`MAX_BODY_BYTES`] (64 KiB) with 413 `payload_too_large`, read no further; malformed
/// JSON, or a body that is not a JSON object, with 400 `invalid_json`; an unknown, missing
/// or ill-typed member with 400 `invalid_field` and `field` naming it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(CONTENT_TYPE)) {
            return Err(AppError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a body with Content-Type: application/json",
            ));
        }
        // A body in a coding (gzip, br) would be read as JSON as it comes: refused, as
        // RFC 9110 §15.5.16 says, never taken as plain or reported as malformed JSON.
        if req
            .headers()
            .get_all(CONTENT_ENCODING)
            .iter()
            .any(|coding| !coding.as_bytes().eq_ignore_ascii_case(b"identity"))
        {
            return Err(AppError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "a request body is read as sent: send it without Content-Encoding",
            ));
        }
        // Refused before any of it is read: a client waiting on `Expect: 100-continue`
        // gets the 413 instead of `100 Continue`.
        if declared_length(req.headers()).is_some_and(|length| length > MAX_BODY_BYTES as u64) {
            return Err(too_large());
        }
        let bytes = read_limited(req).await?;
        if !is_object(&bytes) {
            // serde reads a struct from a JSON array too, field by field in order: refused,
            // so that no client's positional guess is taken for a request.
            return Err(AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the body must be a JSON object",
            ));
        }
        parse_json(&bytes).map(JsonBody)
    }
}

/// Reads a body of at most [`MAX_BODY_BYTES`]; beyond, 413 without reading the rest.
async fn read_limited(req: Request) -> Result<Bytes, AppError> {
    match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("could not read the body: {e}"),
        )),
    }
}

fn too_large() -> AppError {
    AppError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("a request body is at most {MAX_BODY_BYTES} bytes"),
    )
}

/// The body's length as `Content-Length` declares it (hyper refuses a request whose
/// `Content-Length` fields disagree or do not parse).
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether a body's first non-blank byte opens a JSON object.
fn is_object(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{')
}

fn is_json(content_type: Option<&http::HeaderValue>) -> bool {
    let Some(Ok(value)) = content_type.map(|v| v.to_str()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

/// Deserializes a JSON document, naming the field at fault on failure.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let message = err.inner().to_string();
        let field = field_of(err.path(), &message).map(|field| shown_field(field, &message));
        let inner = err.into_inner();
        match (inner.classify(), field) {
            (serde_json::error::Category::Data, Some(field)) => {
                AppError::invalid(field, without_values(&data_message(&inner)))
            }
            _ => AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                without_values(&inner.to_string()),
            ),
        }
    })?;
    de.end()
        .map_err(|e| AppError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))?;
    Ok(value)
}

/// serde_json's message without its " at line 1 column 9" suffix, which says nothing
/// about a field once the field is named.
fn data_message(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// The top-level member a deserialization error is about: the first segment of its path,
/// or, for `unknown field` and `missing field` (raised before the path reaches the field),
/// the name serde quotes in its message.
pub(crate) fn field_of(path: &serde_path_to_error::Path, message: &str) -> Option<String> {
    use serde_path_to_error::Segment;
    if let Some(Segment::Map { key }) = path.iter().next() {
        return Some(key.clone());
    }
    for marker in ["unknown field `", "missing field `", "duplicate field `"] {
        if let Some(start) = message.find(marker) {
            let rest = &message[start + marker.len()..];
            return rest.find('`').map(|end| rest[..end].to_owned());
        }
    }
    None
}

/// `field` as a problem names it: an unknown member or parameter (serde's `message` says
/// so), which may be named by a key's text, is not said back when it is as long as one
/// (re-check s55 M3, s55b L2).
fn shown_field(field: String, message: &str) -> String {
    let unknown = message.contains(&format!("unknown field `{field}`"));
    if unknown && field.len() >= MIN_IMPORTED_KEY_LEN {
        "(a long member name, not shown)".to_owned()
    } else {
        field
    }
}

/// serde's `message` with each value it quotes (`"…"`) left out, and the unknown member or
/// variant it names when it is long enough to be a key: a body's values and member names
/// may be a key's text (an import item's put where its scopes go, a bare string for an
/// item, a member named by it, re-check s55 M3), which `without_keys`, knowing only
/// latchkey's keys, would leave. A shorter unknown name (`colour`, a typo) and the names
/// serde expects, in backticks, stay.
pub(crate) fn without_values(message: &str) -> String {
    let mut message = message.to_owned();
    for unknown in ["unknown field `", "unknown variant `"] {
        if let Some(start) = message.find(unknown).map(|at| at + unknown.len()) {
            // serde writes "unknown field `{name}`, expected …" (or ", there are no …").
            let end = message[start..]
                .find("`, ")
                .map_or(message.len(), |len| start + len);
            if end - start >= MIN_IMPORTED_KEY_LEN {
                message.replace_range(start..end, "…");
            }
        }
    }
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '"' {
            // To the closing quote, past escaped ones.
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => break,
                    _ => {}
                }
            }
            out.push_str("…\"");
        }
    }
    out
}

/// Query parameters, deserialized into a struct of optional strings.
///
/// The structs deny unknown parameters; every value stays a string here and is parsed by
/// the handler, so a bad value is a 400 naming its parameter with a message that says what
/// is expected. An unknown or repeated parameter is a 400 naming it too.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Params<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        // The parser would put U+FFFD for bytes that are no UTF-8 (a search would then look
        // for text no one typed), where a body that is no UTF-8 is refused.
        if percent_encoding::percent_decode_str(query)
            .decode_utf8()
            .is_err()
        {
            return Err(AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                "the query string is not UTF-8 text once percent-decoded",
            ));
        }
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Params)
            .map_err(|err| {
                let message = err.inner().to_string();
                let field = field_of(err.path(), &message);
                let field = field.map(|field| shown_field(field, &message));
                let message = without_values(&message);
                match field {
                    Some(field) => AppError::invalid(field, message),
                    None => AppError::new(StatusCode::BAD_REQUEST, "invalid_field", message),
                }
            })
    }
}

/// The parameters of an endpoint that takes none: any parameter is a 400 naming it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoParams {}

/// The parameters of a list of users or groups. An empty value counts as absent.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageParams {
    /// Page size, 1 to 1000 (default 50).
    #[param(value_type = Option<crate::openapi::rules::PageSize>)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<crate::openapi::rules::Cursor>)]
    cursor: Option<String>,
}

/// The default page size of every list but the audit trail's.
pub(crate) const DEFAULT_PAGE: usize = 50;

impl PageParams {
    /// The page parameters of a list that takes others too.
    pub(crate) fn new(limit: Option<String>, cursor: Option<String>) -> PageParams {
        PageParams { limit, cursor }
    }

    /// The page size and cursor, or a 400 naming the bad one.
    pub(crate) fn parse(self) -> Result<(usize, Option<String>), AppError> {
        let limit = page_limit(self.limit)?.unwrap_or(DEFAULT_PAGE);
        Ok((limit, self.cursor.filter(|c| !c.is_empty())))
    }
}

/// Parses `limit`: 1 to 1000.
pub(crate) fn page_limit(value: Option<String>) -> Result<Option<usize>, AppError> {
    optional("limit", value, |s| {
        s.parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
            .ok_or_else(|| format!("{s:?} is not a page size: expected 1 to {MAX_LIST_LIMIT}"))
    })
}

/// Parses an optional query value; an empty value counts as absent, so that clients that
/// build `?status=` from an empty variable get everything rather than an error.
pub(crate) fn optional<T>(
    field: &'static str,
    value: Option<String>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, AppError> {
    match value.filter(|v| !v.is_empty()) {
        Some(v) => parse(&v).map(Some).map_err(|e| {
            // A value as long as a key may be one, put where it does not go: not said back
            // (re-check s55b L2).
            let long = v.len() >= MIN_IMPORTED_KEY_LEN;
            AppError::invalid(field, if long { without_values(&e) } else { e })
        }),
        None => Ok(None),
    }
}

/// The `{id}` segment of a record's path: a UUID or a name (a display prefix for keys).
#[derive(Debug, Clone)]
pub(crate) struct RecordRef(pub(crate) String);

impl<S> FromRequestParts<S> for RecordRef
where
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // The last `{id}`, not `Path<String>`: an app that nests the router under a
        // prefix with its own parameters (`/{tenant}/admin`) hands over several.
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|rejection| AppError::invalid("id", rejection.body_text()))?;
        let id = params.iter().filter(|(name, _)| *name == "id").last();
        id.map(|(_, id)| RecordRef(id.to_owned()))
            .ok_or_else(|| AppError::invalid("id", "the path names no record"))
    }
}
