//! Who performs a management change: the no-escalation rule, the delegation cap and the
//! tenant boundary, each written here once and applied by the store.

use uuid::Uuid;

use crate::error::StoreError;
use crate::model::User;
use crate::permission::{Permission, PermissionSet};
use crate::verify::Principal;

/// The caller of a management operation: the key it authenticated with, and that key's
/// effective permissions.
///
/// **No escalation:** every write checks, in one place ([`Actor::ensure_covers`]), that the
/// caller's permissions cover everything the record it creates, changes or removes grants,
/// before and after the change. A caller can never mint a key, user or group stronger than
/// itself, nor disable, revoke or rename one.
///
/// **Delegation:** a key minted (created or rotated) by a caller that does not hold `*`
/// is capped at the caller's permissions at that moment ([`Actor::cap_scopes`]).
///
/// **Tenants:** a caller whose user has a `tenant_id` is bound to that tenant (and to its
/// `organization_id` when it has one): it sees and changes only users of that tenant
/// ([`Actor::sees`]) and their keys and audit events; every other record is "not found".
#[derive(Debug, Clone)]
pub struct Actor {
    key_id: Option<Uuid>,
    permissions: PermissionSet,
    tenant: Option<Tenancy>,
}

/// The tenant (and organization) a caller is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tenancy {
    tenant_id: String,
    organization_id: Option<String>,
}

impl Actor {
    /// The operator working on the store directly (`latchkey init`, `--db`): holds `*`.
    pub fn system() -> Actor {
        Actor {
            key_id: None,
            permissions: PermissionSet::from(vec![everything()]),
            tenant: None,
        }
    }

    /// A caller authenticated by a key: bound to its user's tenant (organization), if any.
    pub fn from_principal(principal: &Principal) -> Actor {
        Actor::new(Some(principal.key_id), principal.permissions.clone()).with_tenant(
            principal.tenant_id.clone(),
            principal.organization_id.clone(),
        )
    }

    /// A global caller with explicit permissions, for tests and embedding.
    pub fn new(key_id: Option<Uuid>, permissions: PermissionSet) -> Actor {
        Actor {
            key_id,
            permissions,
            tenant: None,
        }
    }

    /// Binds the caller to a tenant, and within it to an organization when one is given.
    /// Without a tenant the caller stays global (an organization alone binds nothing).
    pub fn with_tenant(
        mut self,
        tenant_id: Option<String>,
        organization_id: Option<String>,
    ) -> Actor {
        self.tenant = tenant_id.map(|tenant_id| Tenancy {
            tenant_id,
            organization_id,
        });
        self
    }

    /// The tenant the caller is bound to; `None` for a global caller.
    pub fn tenant_id(&self) -> Option<&str> {
        self.tenant.as_ref().map(|t| t.tenant_id.as_str())
    }

    /// The organization the caller is bound to, within its tenant.
    pub fn organization_id(&self) -> Option<&str> {
        self.tenant.as_ref()?.organization_id.as_deref()
    }

    /// Refuses a tenant-bound caller ([`StoreError::GlobalOnly`], saying it cannot `what`):
    /// for what belongs to every tenant at once, which no tenant filter can narrow — the
    /// writes of the global groups, the change feed, a backup, the audit chain's check.
    pub fn ensure_global(&self, what: &'static str) -> Result<(), StoreError> {
        match self.tenant {
            None => Ok(()),
            Some(_) => Err(StoreError::GlobalOnly(what)),
        }
    }

    /// Whether the caller sees `user` (and its keys and audit events): a global caller
    /// sees everyone, a bound one only the users of its tenant (organization).
    pub fn sees(&self, user: &User) -> bool {
        self.sees_place(user.tenant_id.as_deref(), user.organization_id.as_deref())
    }

    /// Whether the caller sees a verified key (its principal carries its user's tenant and
    /// organization): as [`Actor::sees`] its user. A bound verifier treats any other key
    /// as unknown.
    pub fn sees_principal(&self, principal: &Principal) -> bool {
        self.sees_place(
            principal.tenant_id.as_deref(),
            principal.organization_id.as_deref(),
        )
    }

    fn sees_place(&self, tenant_id: Option<&str>, organization_id: Option<&str>) -> bool {
        match &self.tenant {
            None => true,
            Some(t) => {
                tenant_id == Some(t.tenant_id.as_str())
                    && t.organization_id
                        .as_ref()
                        .is_none_or(|org| organization_id == Some(org.as_str()))
            }
        }
    }

    /// Where a user this caller creates goes: a bound caller's tenant (organization)
    /// whatever was asked; asking for another is [`StoreError::TenantForbidden`].
    pub(crate) fn place(
        &self,
        tenant_id: Option<&str>,
        organization_id: Option<&str>,
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        let Some(t) = &self.tenant else {
            return Ok((tenant_id.map(Into::into), organization_id.map(Into::into)));
        };
        if tenant_id.is_some_and(|asked| asked != t.tenant_id) {
            return Err(StoreError::TenantForbidden { field: "tenant_id" });
        }
        let organization = match (&t.organization_id, organization_id) {
            (Some(own), Some(asked)) if asked != own => {
                return Err(StoreError::TenantForbidden {
                    field: "organization_id",
                });
            }
            (Some(own), _) => Some(own.clone()),
            (None, asked) => asked.map(Into::into),
        };
        Ok((Some(t.tenant_id.clone()), organization))
    }

    /// Checks a change of a user's tenant or organization (`Some(None)` clears): a bound
    /// caller may not move a user out of its tenant (organization).
    pub(crate) fn ensure_may_set(
        &self,
        field: &'static str,
        value: Option<&Option<String>>,
    ) -> Result<(), StoreError> {
        let (Some(t), Some(value)) = (&self.tenant, value) else {
            return Ok(());
        };
        let own = match field {
            "tenant_id" => Some(&t.tenant_id),
            _ => t.organization_id.as_ref(),
        };
        match own {
            Some(own) if value.as_ref() != Some(own) => Err(StoreError::TenantForbidden { field }),
            _ => Ok(()),
        }
    }

    /// Whether the caller holds `*`.
    pub fn holds_everything(&self) -> bool {
        self.permissions.allows(&everything())
    }

    /// The scopes a key minted by this caller is stored with: the requested ones (`None`:
    /// unrestricted) intersected with the caller's permissions, unless the caller holds
    /// `*`. The key keeps following its user live, within that cap.
    pub fn cap_scopes(&self, requested: Option<&PermissionSet>) -> Option<PermissionSet> {
        if self.holds_everything() {
            return requested.cloned();
        }
        Some(match requested {
            None => self.permissions.clone(),
            Some(scopes) => scopes.intersect(&self.permissions),
        })
    }

    /// The key that acts, for `created_by` and the audit trail; `None` for the operator.
    pub fn key_id(&self) -> Option<Uuid> {
        self.key_id
    }

    /// The caller's effective permissions.
    pub fn permissions(&self) -> &PermissionSet {
        &self.permissions
    }

    /// Fails with [`StoreError::Escalation`] unless the caller covers every permission of
    /// `granted`.
    pub fn ensure_covers(&self, granted: &PermissionSet) -> Result<(), StoreError> {
        match self.permissions.first_uncovered(granted) {
            None => Ok(()),
            Some(p) => Err(StoreError::Escalation {
                permission: p.to_string(),
            }),
        }
    }
}

fn everything() -> Permission {
    Permission::parse("*").expect("valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> PermissionSet {
        PermissionSet::parse(items).unwrap()
    }

    fn actor(permissions: &[&str], tenant: Option<&str>, org: Option<&str>) -> Actor {
        Actor::new(None, set(permissions)).with_tenant(tenant.map(Into::into), org.map(Into::into))
    }

    #[track_caller]
    fn check_cap(caller: &[&str], requested: Option<&[&str]>, expected: Option<&[&str]>) {
        let got = actor(caller, None, None).cap_scopes(requested.map(set).as_ref());
        assert_eq!(
            got,
            expected.map(set),
            "caller {caller:?} requested {requested:?}"
        );
    }

    #[test]
    fn delegation_cap_table() {
        check_cap(&["*"], None, None);
        check_cap(&["*"], Some(&["orders:read"]), Some(&["orders:read"]));
        check_cap(&["orders:*"], None, Some(&["orders:*"]));
        check_cap(
            &["orders:*"],
            Some(&["orders:read", "billing:*"]),
            Some(&["orders:read"]),
        );
        check_cap(
            &["orders:read"],
            Some(&["orders:*"]),
            Some(&["orders:read"]),
        );
        check_cap(&["orders:read"], Some(&[]), Some(&[]));
    }

    fn user(tenant: Option<&str>, org: Option<&str>) -> User {
        User {
            id: Uuid::nil(),
            name: "u".into(),
            enabled: true,
            groups: Vec::new(),
            permissions: PermissionSet::new(),
            tenant_id: tenant.map(Into::into),
            organization_id: org.map(Into::into),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            updated_at: time::OffsetDateTime::UNIX_EPOCH,
            rate_limits: Vec::new(),
        }
    }

    #[test]
    fn tenant_visibility_and_placement() {
        let global = actor(&["*"], None, Some("ignored"));
        let acme = actor(&["*"], Some("acme"), None);
        let east = actor(&["*"], Some("acme"), Some("east"));
        for (who, tenant, org, seen) in [
            (&global, None, None, true),
            (&global, Some("globex"), None, true),
            (&acme, Some("acme"), None, true),
            (&acme, Some("acme"), Some("west"), true),
            (&acme, Some("globex"), None, false),
            (&acme, None, None, false),
            (&east, Some("acme"), Some("east"), true),
            (&east, Some("acme"), Some("west"), false),
            (&east, Some("acme"), None, false),
        ] {
            assert_eq!(
                who.sees(&user(tenant, org)),
                seen,
                "{who:?} {tenant:?} {org:?}"
            );
        }
        let placed =
            |who: &Actor, t: Option<&str>, o: Option<&str>| who.place(t, o).map_err(|e| e.code());
        assert_eq!(
            placed(&global, Some("x"), None),
            Ok((Some("x".into()), None))
        );
        assert_eq!(
            placed(&acme, None, Some("o")),
            Ok((Some("acme".into()), Some("o".into())))
        );
        assert_eq!(placed(&acme, Some("globex"), None), Err("tenant_forbidden"));
        assert_eq!(
            placed(&east, None, None),
            Ok((Some("acme".into()), Some("east".into())))
        );
        assert_eq!(
            placed(&east, Some("acme"), Some("west")),
            Err("tenant_forbidden")
        );
        assert!(acme.ensure_may_set("tenant_id", Some(&None)).is_err());
        assert!(
            acme.ensure_may_set("tenant_id", Some(&Some("acme".into())))
                .is_ok()
        );
        assert!(
            acme.ensure_may_set("organization_id", Some(&Some("any".into())))
                .is_ok()
        );
        assert!(east.ensure_may_set("organization_id", Some(&None)).is_err());
    }
}
