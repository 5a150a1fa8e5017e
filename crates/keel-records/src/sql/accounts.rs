//! Tenants, users and API tokens.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::error::{Result, StoreError};
use crate::model::{ApiToken, Role, Scope, Tenant, User};
use crate::secret::{
    hash_password, new_secret, sha256_hex, verify_password, DUMMY_HASH, MIN_PASSWORD_CHARS,
    SECRET_PREFIX,
};
use crate::store::{TenantStore, TokenStore, UserStore};

use super::{db_err, new_id, SqlStore, Where};

const TOKEN_COLUMNS: &str =
    "id, name, role, tenant_id, secret_hint, created_at, last_used_at, revoked_at";

fn token_from(row: &AnyRow) -> Result<ApiToken> {
    let role: String = row.try_get("role").map_err(|e| db_err("token", e))?;
    Ok(ApiToken {
        id: row.try_get("id").map_err(|e| db_err("token", e))?,
        name: row.try_get("name").map_err(|e| db_err("token", e))?,
        role: role.parse()?,
        tenant_id: row.try_get("tenant_id").map_err(|e| db_err("token", e))?,
        hint: row.try_get("secret_hint").map_err(|e| db_err("token", e))?,
        created_at: row.try_get("created_at").map_err(|e| db_err("token", e))?,
        last_used_at: row
            .try_get("last_used_at")
            .map_err(|e| db_err("token", e))?,
        revoked_at: row.try_get("revoked_at").map_err(|e| db_err("token", e))?,
    })
}

#[async_trait]
impl TenantStore for SqlStore {
    async fn create_tenant(&self, name: &str) -> Result<Tenant> {
        keel_core::names::validate_name("name", name).map_err(|e| match e {
            keel_core::Error::InvalidInput { field, message } => {
                StoreError::Invalid { field, message }
            }
            other => StoreError::Database(other.to_string()),
        })?;
        let t = Tenant {
            id: new_id(),
            name: name.into(),
            created_at: keel_core::now_ms() as i64,
        };
        sqlx::query("INSERT INTO keel_tenants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&t.id)
            .bind(&t.name)
            .bind(t.created_at)
            .execute(&self.pool)
            .await
            .map_err(|e| db_err(&format!("tenant {name}"), e))?;
        Ok(t)
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        let row = sqlx::query("SELECT id, name, created_at FROM keel_tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err("tenant", e))?;
        row.map(|r| {
            Ok(Tenant {
                id: r.try_get("id").map_err(|e| db_err("tenant", e))?,
                name: r.try_get("name").map_err(|e| db_err("tenant", e))?,
                created_at: r.try_get("created_at").map_err(|e| db_err("tenant", e))?,
            })
        })
        .transpose()
    }
}

const USER_COLUMNS: &str = "id, tenant_id, email, role, created_at, disabled_at";

fn user_from(r: &AnyRow) -> Result<User> {
    let role: String = r.try_get("role").map_err(|e| db_err("user", e))?;
    Ok(User {
        id: r.try_get("id").map_err(|e| db_err("user", e))?,
        email: r.try_get("email").map_err(|e| db_err("user", e))?,
        role: role.parse()?,
        tenant_id: r.try_get("tenant_id").map_err(|e| db_err("user", e))?,
        created_at: r.try_get("created_at").map_err(|e| db_err("user", e))?,
        disabled_at: r.try_get("disabled_at").map_err(|e| db_err("user", e))?,
    })
}

/// An address the account can be known by: one `@` with something on both sides, no spaces
/// or control characters, at most 320 characters (RFC 5321's limit).
fn validate_email(email: &str) -> Result<()> {
    let ok = email.len() <= 320
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid("email", "must be an email address"))
    }
}

#[async_trait]
impl UserStore for SqlStore {
    async fn create_user(
        &self,
        email: &str,
        password: &str,
        role: Role,
        tenant: Option<&str>,
    ) -> Result<User> {
        validate_email(email)?;
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(StoreError::invalid(
                "password",
                format!("must be at least {MIN_PASSWORD_CHARS} characters"),
            ));
        }
        let hash = hash_password(password)?;
        let u = User {
            id: new_id(),
            email: email.to_lowercase(),
            role,
            tenant_id: tenant.map(str::to_string),
            created_at: keel_core::now_ms() as i64,
            disabled_at: None,
        };
        sqlx::query("INSERT INTO keel_users (id, tenant_id, email, password_hash, role, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&u.id)
            .bind(u.tenant_id.as_deref())
            .bind(&u.email)
            .bind(&hash)
            .bind(role.as_str())
            .bind(u.created_at)
            .execute(&self.pool)
            .await
            .map_err(|e| db_err(&format!("user {}", u.email), e))?;
        Ok(u)
    }

    async fn verify_user(&self, email: &str, password: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS}, password_hash FROM keel_users WHERE email = $1");
        let row = sqlx::query(&sql)
            .bind(email.to_lowercase())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err("user", e))?;
        let Some(r) = row else {
            // Same work as a wrong password, so timing does not reveal which emails exist.
            let _ = verify_password(password, &DUMMY_HASH);
            return Ok(None);
        };
        let hash: String = r.try_get("password_hash").map_err(|e| db_err("user", e))?;
        let user = user_from(&r)?;
        // The hash is checked for a disabled account too: timing does not tell them apart.
        if !verify_password(password, &hash) || user.disabled_at.is_some() {
            return Ok(None);
        }
        Ok(Some(user))
    }

    async fn list_users(&self, scope: &Scope) -> Result<Vec<User>> {
        let mut w = Where::default();
        w.scope(scope);
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM keel_users{} ORDER BY email",
            w.sql()
        );
        let rows = w
            .bind(sqlx::query(&sql))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_err("users", e))?;
        rows.iter().map(user_from).collect()
    }

    async fn disable_user(&self, scope: &Scope, email: &str) -> Result<bool> {
        let mut w = Where::default();
        w.clauses.push("disabled_at IS NULL".into());
        w.text("email = ?", &email.to_lowercase());
        w.scope(scope);
        let n = w.next();
        let sql = format!("UPDATE keel_users SET disabled_at = ${n}{}", w.sql());
        let done = w
            .bind(sqlx::query(&sql))
            .bind(keel_core::now_ms() as i64)
            .execute(&self.pool)
            .await
            .map_err(|e| db_err("user", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        let sql =
            format!("SELECT {USER_COLUMNS} FROM keel_users WHERE id = $1 AND disabled_at IS NULL");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err("user", e))?;
        row.as_ref().map(user_from).transpose()
    }
}

#[async_trait]
impl TokenStore for SqlStore {
    async fn create_token(
        &self,
        name: &str,
        role: Role,
        tenant: Option<&str>,
    ) -> Result<(ApiToken, String)> {
        if name.is_empty() || name.len() > 200 {
            return Err(StoreError::invalid("name", "must be 1 to 200 characters"));
        }
        let secret = new_secret();
        let t = ApiToken {
            id: new_id()[..12].to_string(),
            name: name.into(),
            role,
            tenant_id: tenant.map(str::to_string),
            hint: secret[..12].to_string(),
            created_at: keel_core::now_ms() as i64,
            last_used_at: None,
            revoked_at: None,
        };
        sqlx::query("INSERT INTO keel_api_tokens (id, tenant_id, name, role, secret_hash, secret_hint, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&t.id)
            .bind(t.tenant_id.as_deref())
            .bind(&t.name)
            .bind(role.as_str())
            .bind(sha256_hex(&secret))
            .bind(&t.hint)
            .bind(t.created_at)
            .execute(&self.pool)
            .await
            .map_err(|e| db_err("token", e))?;
        Ok((t, secret))
    }

    async fn list_tokens(&self, scope: &Scope) -> Result<Vec<ApiToken>> {
        let mut w = Where::default();
        w.scope(scope);
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM keel_api_tokens{} ORDER BY created_at DESC, id",
            w.sql()
        );
        let rows = w
            .bind(sqlx::query(&sql))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_err("tokens", e))?;
        rows.iter().map(token_from).collect()
    }

    async fn revoke_token(&self, scope: &Scope, id: &str) -> Result<bool> {
        let mut w = Where::default();
        w.clauses.push("revoked_at IS NULL".into());
        w.text("id = ?", id);
        w.scope(scope);
        let n = w.next();
        let sql = format!("UPDATE keel_api_tokens SET revoked_at = ${n}{}", w.sql());
        let done = w
            .bind(sqlx::query(&sql))
            .bind(keel_core::now_ms() as i64)
            .execute(&self.pool)
            .await
            .map_err(|e| db_err("token", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn authenticate(&self, secret: &str) -> Result<Option<ApiToken>> {
        if !secret.starts_with(SECRET_PREFIX) || secret.len() > 200 {
            return Ok(None);
        }
        let hash = sha256_hex(secret);
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM keel_api_tokens WHERE secret_hash = $1 AND revoked_at IS NULL");
        let row = sqlx::query(&sql)
            .bind(&hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err("token", e))?;
        let Some(row) = row else { return Ok(None) };
        let mut token = token_from(&row)?;
        let now = keel_core::now_ms() as i64;
        // At most one write per token per minute: authentication is on every request.
        if token.last_used_at.is_none_or(|t| now - t > 60_000) {
            sqlx::query("UPDATE keel_api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&token.id)
                .execute(&self.pool)
                .await
                .map_err(|e| db_err("token", e))?;
            token.last_used_at = Some(now);
        }
        Ok(Some(token))
    }

    async fn count_owner_tokens(&self) -> Result<i64> {
        sqlx::query("SELECT COUNT(*) AS n FROM keel_api_tokens WHERE role = 'owner' AND tenant_id IS NULL AND revoked_at IS NULL")
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("n"))
            .map_err(|e| db_err("tokens", e))
    }

    async fn token_by_id(&self, id: &str) -> Result<Option<ApiToken>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM keel_api_tokens WHERE id = $1 AND revoked_at IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err("token", e))?;
        row.as_ref().map(token_from).transpose()
    }
}
