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
    /// A permission: `segment(:segment)*`, segments of `[a-z0-9_.-]`, optionally ending in
    /// `:*`, or `*` alone; at most 128 bytes.
    Permission: r"^(\*|[a-z0-9_.-]+(:[a-z0-9_.-]+)*(:\*)?)$", min_length = 1, max_length = 128
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
    /// A key's name, a tenant or an organization id: 1 to 128 bytes of UTF-8, without control
    /// or bidirectional formatting characters.
    Label: r"^[^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]+$",
    min_length = 1, max_length = 128
}

string_rule! {
    /// Free text: up to 1,024 bytes of UTF-8, without control or bidirectional formatting
    /// characters.
    Description: r"^[^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]*$",
    max_length = 1024
}

string_rule! {
    /// A network in CIDR notation, IPv4 or IPv6 (`203.0.113.0/24`, `2001:db8::/32`).
    Cidr: r"^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/(3[0-2]|[12]?[0-9])|(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))$", min_length = 4, max_length = 43
}

string_rule! {
    /// A list's `next_cursor`, passed back as it came: the hex text of a sealed position, at
    /// most 2,048 characters (empty counts as absent). Any other text is refused with 400
    /// `invalid_field` (`field: cursor`).
    Cursor: r"^(([0-9a-fA-F]{2}){28,})?$", max_length = 2048
}

/// An IPv4 or IPv6 address: core's, which `LeaseRequest` (a core model) states too.
pub(crate) use latchkey_core::schema::IpAddress;
