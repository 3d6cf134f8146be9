//! The input rules the server enforces, as JSON schemas that the request bodies refer to
//! (`#[schema(value_type = …)]` in [`crate::api`]), so that a client generated from the
//! document sends only what the server accepts. The numbers are core's `limits`
//! ([`latchkey_core::limits`], one place for every bound on input); the patterns are core's parsers, written as regular expressions.
//!
//! JSON Schema counts characters where the server counts bytes; the descriptions say which.
//! What a schema cannot say (a name that is not a UUID, a time in the future, a record that
//! exists) is in the descriptions and answered 400 or 404 naming the field.

// The types exist only for their schemas; nothing constructs them.
#![allow(dead_code)]

use utoipa::ToSchema;

/// Declares a string type that exists for its schema: its doc comment is the schema's
/// description, then the pattern and the bounds on its length.
macro_rules! string_rule {
    ($(#[doc = $doc:literal])+ $name:ident: $pattern:tt, $($bound:ident = $value:tt),+) => {
        $(#[doc = $doc])+
        #[derive(ToSchema)]
        #[schema(value_type = String, pattern = $pattern, $($bound = $value),+)]
        pub(crate) struct $name(String);
    };
}

string_rule! {
    /// A user or group name: 1 to 64 characters of `[A-Za-z0-9_.@-]`, not a UUID (records are
    /// referred to by either).
    PrincipalName: r"^[A-Za-z0-9_.@-]{1,64}$", min_length = 1, max_length = 64
}

string_rule! {
    /// A user or group, by id (UUID) or by name.
    Reference: r"^[A-Za-z0-9_.@-]{1,64}$", min_length = 1, max_length = 64
}

string_rule! {
    /// A key's name: 1 to 128 bytes of UTF-8, without control, bidirectional formatting or
    /// line separator characters.
    Label: r"^[^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]+$",
    min_length = 1, max_length = 128
}

string_rule! {
    /// A tenant or an organization id: as a key's name, and without any format character
    /// (`Cf`: zero-width spaces and joiners, byte order marks, soft hyphens; the pattern
    /// lists those below U+10000, the server refuses the few above too) nor white space at
    /// either end.
    Tenant: r"^[^\s\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]([^\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb])?$",
    min_length = 1, max_length = 128
}

string_rule! {
    /// Free text: up to 1,024 bytes of UTF-8, without control, bidirectional formatting or
    /// line separator characters (as a key's name).
    Description: r"^[^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]*$",
    max_length = 1024
}

string_rule! {
    /// A network in CIDR notation, IPv4 or IPv6 (`203.0.113.0/24`, `2001:db8::/32`), or one
    /// address (`203.0.113.7`: the network of it alone).
    Cidr: r"^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(/(3[0-2]|[12]?[0-9]))?|(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$", min_length = 2, max_length = 43
}

string_rule! {
    /// A record's id: a UUID, hyphenated (empty counts as absent).
    RecordId: r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$", max_length = 36
}

string_rule! {
    /// A list's `next_cursor`, passed back as it came: the hex text of a sealed position, at
    /// most 2,048 characters (empty counts as absent). Any other text is refused with 400
    /// `invalid_field` (`field: cursor`).
    Cursor: r"^(([0-9a-fA-F]{2}){28,})?$", max_length = 2048
}

/// Declares an integer query value that exists for its schema: its doc comment, then the
/// integer's format, minimum, maximum (`None`: the format's) and the schema's description.
/// Like every query value, an empty one counts as absent, which the schema states as a
/// second alternative.
macro_rules! integer_or_empty_rule {
    ($(#[doc = $doc:literal])+ $name:ident: $format:ident, $min:expr, $max:expr, $description:literal) => {
        $(#[doc = $doc])+
        pub(crate) struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                integer_or_empty(
                    utoipa::openapi::schema::KnownFormat::$format,
                    $min,
                    $max,
                    $description,
                )
            }
        }

        impl ToSchema for $name {}
    };
}

integer_or_empty_rule! {
    /// A list's page size: 1 to 1000 (`limits::MAX_LIST_LIMIT`).
    PageSize: Int32, 1, Some(1000), "A page size, 1 to 1000; empty for the default."
}

integer_or_empty_rule! {
    /// An audit sequence number (`after`): 0 or more.
    Sequence: Int64, 0, None, "An audit sequence number; empty or 0 for the start."
}

integer_or_empty_rule! {
    /// An audit sequence number (`before`): 0 or more.
    SequenceBefore: Int64, 0, None, "An audit sequence number; empty for the newest."
}

/// An integer of `format` from `minimum` to `maximum`, or an empty string.
fn integer_or_empty(
    format: utoipa::openapi::schema::KnownFormat,
    minimum: i64,
    maximum: Option<i64>,
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, SchemaFormat, Type};
    let integer = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(format)))
        .minimum(Some(minimum))
        .maximum(maximum);
    let empty = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(0));
    AnyOfBuilder::new()
        .item(integer)
        .item(empty)
        .description(Some(description))
        .into()
}

/// An IPv4 or IPv6 address: core's, which `LeaseRequest` (a core model) states too.
pub(crate) use latchkey_core::schema::Permission;
