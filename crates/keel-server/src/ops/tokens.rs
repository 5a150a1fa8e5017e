//! API tokens (owner): list, create (the secret is in the answer only), revoke.

use keel_records::{ApiToken, Role, Scope};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{audited, Audit};
use crate::error::{ApiError, ApiResult};
use crate::extract::{from_json, Caller};
use crate::state::AppState;

/// The tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tokens {
    /// Newest first.
    pub tokens: Vec<ApiToken>,
}

/// A new token and its secret (shown once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedToken {
    /// The token.
    pub token: ApiToken,
    /// Its secret.
    pub secret: String,
}

/// A revoked token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revoked {
    /// Its id.
    pub revoked: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
    tenant: Option<String>,
}

/// The tokens the caller may see (owner).
pub async fn list(state: &AppState, caller: &Caller) -> ApiResult<Tokens> {
    caller.require(Role::Owner)?;
    Ok(Tokens {
        tokens: state.store.list_tokens(&caller.scope).await?,
    })
}

/// Creates a token from `{"name", "role", "tenant"?}` (owner; audited `owner.token.create`
/// with the body). A tenant's caller creates only tokens of its tenant.
pub async fn create(state: &AppState, caller: &Caller, body: Value) -> ApiResult<CreatedToken> {
    let audit = Audit::new("owner.token.create", "tokens")
        .payload(body.clone())
        .created();
    audited(state, caller, audit, async {
        caller.require(Role::Owner)?;
        let req: NewToken = from_json(body)?;
        let role: Role = req.role.parse()?;
        let tenant_id = match (&req.tenant, &caller.scope) {
            (None, Scope::All) => None,
            (None, Scope::Tenant(t)) => Some(t.clone()),
            (Some(name), scope) => {
                let t =
                    state.store.tenant_by_name(name).await?.ok_or_else(|| {
                        ApiError::invalid("tenant", format!("no tenant {name:?}"))
                    })?;
                if let Scope::Tenant(own) = scope {
                    if *own != t.id {
                        return Err(ApiError::forbidden(
                            "a tenant's token cannot create tokens of another tenant",
                        ));
                    }
                }
                Some(t.id)
            }
        };
        let (token, secret) = state
            .store
            .create_token(&req.name, role, tenant_id.as_deref())
            .await?;
        Ok(CreatedToken { token, secret })
    })
    .await
}

/// Revokes a token (owner; audited `owner.token.revoke`): this instance forgets it at once,
/// the others when they hear the announcement (within 10 s without it).
pub async fn revoke(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Revoked> {
    audited(state, caller, Audit::new("owner.token.revoke", format!("token:{id}")), async {
        caller.require(Role::Owner)?;
        if !state.store.revoke_token(&caller.scope, id).await? {
            return Err(ApiError::not_found(format!("live token {id}")));
        }
        state.forget_tokens();
        if let Err(e) = crate::realtime::announce_revocation(&state.backend, id).await {
            tracing::warn!(error = %e, "revocation not announced; other instances apply it within 10 s");
        }
        Ok(Revoked { revoked: id.to_string() })
    })
    .await
}
