//! Input rules that tie a body's members together, which a schema derived member by member
//! cannot state (audit s60 L3: the document said them in words only, so a client or a
//! fuzzer trusting it sent bodies the server refused).
//!
//! - A credits change (`CreditsChange`) is `add` alone, or `remaining`, `refill` or both
//!   (`handlers/keys.rs`, `credits_patch`).
//! - A refill's `day_of_month` goes with a monthly one only (`latchkey_core::controls`).
//!
//! Each schema becomes `allOf` the derived one and its rule, so its members keep their own
//! schemas; the server checks the same rules and answers 400 naming the field.

use std::collections::BTreeMap;

use utoipa::Modify;
use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, ObjectBuilder, OneOfBuilder, Type};
use utoipa::openapi::{OpenApi, RefOr, Schema};

/// Adds the rules to the schemas they belong to.
pub(super) struct MemberRules;

impl Modify for MemberRules {
    fn modify(&self, openapi: &mut OpenApi) {
        let schemas = &mut openapi
            .components
            .get_or_insert_with(Default::default)
            .schemas;
        tie(schemas, "CreditsChange", credits_change());
        tie(schemas, "Refill", refill());
    }
}

/// The schema `name` as `allOf` itself and `rule`, its description on the whole.
fn tie(schemas: &mut BTreeMap<String, RefOr<Schema>>, name: &str, rule: Schema) {
    let mut derived = schemas
        .remove(name)
        .unwrap_or_else(|| panic!("the document has a schema {name}"));
    let description = match &mut derived {
        RefOr::T(Schema::Object(object)) => object.description.take(),
        _ => None,
    };
    let tied = AllOfBuilder::new()
        .description(description)
        .item(derived)
        .item(rule)
        .build();
    schemas.insert(name.to_owned(), RefOr::T(Schema::AllOf(tied)));
}

/// `add` alone, or `remaining`, `refill` or both: exactly one of the two holds.
fn credits_change() -> Schema {
    let has = |member: &str| ObjectBuilder::new().required(member).build();
    let set = AnyOfBuilder::new()
        .item(has("remaining"))
        .item(has("refill"))
        .build();
    OneOfBuilder::new()
        .item(has("add"))
        .item(Schema::AnyOf(set))
        .build()
        .into()
}

/// A daily refill has no `day_of_month` (or `null`); a monthly one may.
fn refill() -> Schema {
    let interval = |name: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some([name]))
            .build()
    };
    let daily = ObjectBuilder::new()
        .property("interval", interval("day"))
        .property(
            "day_of_month",
            ObjectBuilder::new().schema_type(Type::Null).build(),
        )
        .build();
    let monthly = ObjectBuilder::new()
        .property("interval", interval("month"))
        .build();
    OneOfBuilder::new().item(daily).item(monthly).build().into()
}
