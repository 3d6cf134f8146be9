//! The OpenAPI document, generated from the handlers' annotations and the models' schemas,
//! so it cannot drift from the code.

mod integers;
mod member_rules;
pub(crate) mod problems;
pub(crate) mod rules;
mod statuses;

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use integers::UnsignedIntegers;
use member_rules::MemberRules;
use statuses::LayerStatuses;

use crate::handlers::{
    audit, backup, events, groups, import, keys, leases, system, usage, users, verify,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "latchkey management API",
        description = "Groups, users and API keys of a latchkey keystore. Everything under /v1 \
            takes `Authorization: Bearer <key>`; each operation names the permission it needs. \
            Errors are application/problem+json with a stable `code`."
    ),
    paths(
        groups::create, groups::list, groups::show, groups::update, groups::delete,
        users::create, users::list, users::show, users::update, users::delete,
        users::revoke_keys,
        keys::create, keys::list, keys::show, keys::update, keys::revoke, keys::rotate,
        keys::delete,
        verify::verify, leases::lease, leases::give_back,
        usage::report,
        audit::list, audit::verify, events::stream,
        backup::backup, import::import,
        system::healthz, system::metrics, system::openapi,
    ),
    // Query parameters' schemas are not collected from the operations.
    components(schemas(
        rules::Cursor,
        rules::RecordId,
        rules::PageSize,
        rules::Sequence,
        rules::SequenceBefore
    )),
    // The integers' pass runs last: it reads the whole document.
    modifiers(&BearerAuth, &LayerStatuses, &MemberRules, &UnsignedIntegers),
    tags(
        (name = "groups", description = "Roles: a name and a set of permissions"),
        (name = "users", description = "Identities that own keys"),
        (name = "keys", description = "API keys: the secret is shown once, at creation"),
        (name = "verify", description = "Verification for remote services"),
        (name = "audit", description = "The hash-chained audit trail"),
        (name = "operations", description = "Backup and import"),
        (name = "system", description = "Health, metrics, this document (no authentication)"),
    )
)]
struct ApiDoc;

/// Declares the `bearer` security scheme that the operations refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("latchkey API key")
                    .build(),
            ),
        );
    }
}

/// The management API's OpenAPI document, as served at `GET /openapi.json`.
///
/// # Example
///
/// ```
/// let doc = latchkey_admin::openapi();
/// assert!(doc.paths.paths.contains_key("/v1/keys"));
/// ```
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as JSON, built once.
pub(crate) fn document_json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        openapi()
            .to_json()
            .expect("the OpenAPI document serializes")
    })
}
