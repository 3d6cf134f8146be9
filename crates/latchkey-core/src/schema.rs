//! JSON schemas (the `openapi` feature) of wire values whose Rust type utoipa cannot
//! describe as the server reads it, for the models here and latchkey-admin's bodies alike.

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, schema::Schema};

/// An IPv4 or IPv6 address (`203.0.113.7`, `2001:db8::7`), as Rust's `IpAddr` parses it.
#[derive(Debug)]
pub struct IpAddress;

impl utoipa::PartialSchema for IpAddress {
    fn schema() -> RefOr<Schema> {
        let address = |format| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(format)))
        };
        OneOfBuilder::new()
            .item(address(KnownFormat::Ipv4))
            .item(address(KnownFormat::Ipv6))
            .description(Some("An IPv4 or IPv6 address."))
            .into()
    }
}

impl utoipa::ToSchema for IpAddress {}

/// A permission: `segment(:segment)*`, segments of `[a-z0-9_.-]`, optionally ending in
/// `:*`, or `*` alone; at most 128 bytes.
#[derive(Debug, utoipa::ToSchema)]
#[schema(
    value_type = String,
    pattern = r"^(\*|[a-z0-9_.-]+(:[a-z0-9_.-]+)*(:\*)?)$",
    min_length = 1,
    max_length = 128
)]
// Exists only for its schema: nothing constructs it or reads its field.
pub struct Permission(#[allow(dead_code)] String);
