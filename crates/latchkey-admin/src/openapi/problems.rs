//! The problem+json answers that several operations state alike, one type each, named in
//! the operations' `responses(...)`; an answer that one operation alone gives is written
//! there.

#![expect(dead_code, reason = "the types only describe responses")]

use utoipa::IntoResponses;

use crate::error::Problem;

/// A body member breaks a rule (`invalid_field`).
#[derive(IntoResponses)]
#[response(
    status = 400,
    description = "Invalid field",
    content_type = "application/problem+json"
)]
pub(crate) struct InvalidField(Problem);

/// A query parameter breaks a rule (`invalid_field`).
#[derive(IntoResponses)]
#[response(
    status = 400,
    description = "Invalid parameter",
    content_type = "application/problem+json"
)]
pub(crate) struct InvalidParameter(Problem);

/// The caller may not make or change a record stronger than itself.
#[derive(IntoResponses)]
#[response(
    status = 403,
    description = "Escalation",
    content_type = "application/problem+json"
)]
pub(crate) struct Escalation(Problem);

/// The caller may not make or change a user so: stronger than itself, or in another tenant.
#[derive(IntoResponses)]
#[response(
    status = 403,
    description = "Lacks latchkey:users:write or a permission the user would hold, or the user is stronger than the caller (`insufficient_permission`), or names a tenant or organization other than its own (`tenant_forbidden`)",
    content_type = "application/problem+json"
)]
pub(crate) struct UserWrite(Problem);

/// The caller may not write a group: groups are global records.
#[derive(IntoResponses)]
#[response(
    status = 403,
    description = "Lacks a permission the group or one of its members holds (`insufficient_permission`), or is bound to a tenant (`tenant_forbidden`): groups are global, read and assigned by a tenant-bound caller but never written",
    content_type = "application/problem+json"
)]
pub(crate) struct GroupWrite(Problem);

/// The write would leave no active key that holds `*` (`last_admin_key`).
#[derive(IntoResponses)]
#[response(
    status = 409,
    description = "It would leave no active key that holds `*` (`last_admin_key`)",
    content_type = "application/problem+json"
)]
pub(crate) struct LastAdminKey(Problem);

/// The key acted on holds more than the caller.
#[derive(IntoResponses)]
#[response(
    status = 403,
    description = "The key is stronger than the caller",
    content_type = "application/problem+json"
)]
pub(crate) struct StrongerKey(Problem);

/// The caller's key lacks `latchkey:verify`.
#[derive(IntoResponses)]
#[response(
    status = 403,
    description = "Lacks latchkey:verify",
    content_type = "application/problem+json"
)]
pub(crate) struct LacksVerify(Problem);

/// No group by that id or name.
#[derive(IntoResponses)]
#[response(
    status = 404,
    description = "No such group",
    content_type = "application/problem+json"
)]
pub(crate) struct NoSuchGroup(Problem);

/// No user by that id or name.
#[derive(IntoResponses)]
#[response(
    status = 404,
    description = "No such user",
    content_type = "application/problem+json"
)]
pub(crate) struct NoSuchUser(Problem);

/// No key by that id or display prefix.
#[derive(IntoResponses)]
#[response(
    status = 404,
    description = "No such key",
    content_type = "application/problem+json"
)]
pub(crate) struct NoSuchKey(Problem);

/// A usage report under the same `Idempotency-Key` is being recorded
/// (`report_in_progress`): send it again later.
#[derive(IntoResponses)]
#[response(
    status = 409,
    description = "A report under this `Idempotency-Key` is being recorded (`report_in_progress`): send it again later",
    content_type = "application/problem+json"
)]
pub(crate) struct ReportInProgress(Problem);

/// A usage report under an `Idempotency-Key` that came with another report
/// (`idempotency_key_reused`).
#[derive(IntoResponses)]
#[response(
    status = 422,
    description = "This `Idempotency-Key` came with another report (`idempotency_key_reused`): nothing was recorded",
    content_type = "application/problem+json"
)]
pub(crate) struct IdempotencyKeyReused(Problem);

/// Another record of the kind has the name (`name_taken`).
#[derive(IntoResponses)]
#[response(
    status = 409,
    description = "Name taken",
    content_type = "application/problem+json"
)]
pub(crate) struct NameTaken(Problem);

/// A rename to a taken name (`name_taken`), or a change that would leave no active key that
/// holds `*` (`last_admin_key`).
#[derive(IntoResponses)]
#[response(
    status = 409,
    description = "Name taken (`name_taken`), or it would leave no active key that holds `*` (`last_admin_key`): narrowing, disabling or moving the admin user or group, or a rate limit slower than once a minute on the admin user",
    content_type = "application/problem+json"
)]
pub(crate) struct NameTakenOrLastAdmin(Problem);

/// The keystore cannot be read (`keystore_unavailable`).
#[derive(IntoResponses)]
#[response(
    status = 503,
    description = "Keystore unavailable",
    content_type = "application/problem+json"
)]
pub(crate) struct KeystoreUnavailable(Problem);

/// A key's creation or rotation whose body did not arrive within the daemon's request
/// timeout (`body_timeout`): nothing was done.
#[derive(IntoResponses)]
#[response(
    status = 408,
    description = "The body did not arrive within the request timeout: nothing was done",
    content_type = "application/problem+json"
)]
pub(crate) struct BodyTimeout(Problem);
