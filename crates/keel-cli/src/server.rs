//! `keel migrate`, `keel token` and `keel user`: the records database from the shell.

use keel::config::Config;
use keel::Error;
use keel_records::prelude::*;
use keel_records::{Role, Scope, StoreError};
use serde_json::json;

use crate::{Failure, MigrateAction, TokenAction, UserAction};

/// `keel migrate up|down`.
pub async fn migrate(
    config: &Config,
    action: MigrateAction,
    json_out: bool,
) -> Result<(), Failure> {
    let steps = match &action {
        MigrateAction::Down { steps } => Some(
            steps
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    Error::invalid("--steps", format!("{steps:?} is not a positive integer"))
                })?,
        ),
        MigrateAction::Up => None,
    };
    let store =
        keel_server::serve::open_store(&keel_server::config::ServerConfig::from_env(config)?)
            .await?;
    let (verb, versions) = match steps {
        None => ("applied", store.migrate_up().await?),
        Some(n) => ("reverted", store.migrate_down(n).await?),
    };
    if json_out {
        println!(
            "{}",
            json!({ verb: versions, "database": store.database() })
        );
    } else if versions.is_empty() {
        println!("nothing to do ({})", store.database());
    } else {
        for v in versions {
            println!("{verb} {v}");
        }
    }
    Ok(())
}

/// The id of the tenant named `--tenant`: an existing tenant, or one created because a
/// configured queue is bound to that name (as `keel serve` does); any other name is refused.
async fn tenant_id(
    config: &Config,
    store: &dyn RecordStore,
    tenant: Option<String>,
) -> Result<Option<String>, Failure> {
    let Some(t) = tenant else { return Ok(None) };
    keel::keys::validate_name("--tenant", &t)?;
    if let Some(x) = store.tenant_by_name(&t).await? {
        return Ok(Some(x.id));
    }
    if config
        .queues
        .values()
        .any(|q| q.tenant.as_deref() == Some(&t))
    {
        return Ok(Some(store.create_tenant(&t).await?.id));
    }
    Err(Error::invalid(
        "--tenant",
        format!("unknown tenant {t:?}: no queue in the configuration has tenant = {t:?}"),
    )
    .into())
}

/// A `--role` value.
fn role_arg(role: &str) -> Result<Role, StoreError> {
    role.parse::<Role>().map_err(|e| match e {
        StoreError::Invalid { message, .. } => StoreError::invalid("--role", message),
        other => other,
    })
}

/// The new account's password: prompted for (twice, without echo) on a terminal, else the
/// first line of stdin (`echo "$PW" | keel user create …`).
fn read_password() -> Result<String, Failure> {
    use std::io::IsTerminal;
    let io = |e: std::io::Error| Failure {
        code: "invalid-input",
        field: Some("password".into()),
        message: format!("could not read the password: {e}"),
        exit: 2,
    };
    if std::io::stdin().is_terminal() {
        let first =
            rpassword::prompt_password("Password (at least 12 characters): ").map_err(io)?;
        let again = rpassword::prompt_password("Again: ").map_err(io)?;
        if first != again {
            return Err(Failure {
                code: "invalid-input",
                field: Some("password".into()),
                message: "the two passwords differ".into(),
                exit: 2,
            });
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(io)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// `keel user create|list|disable`: named accounts of the console.
pub async fn user(config: &Config, action: UserAction, json_out: bool) -> Result<(), Failure> {
    if let UserAction::Create { role, .. } = &action {
        role_arg(role)?;
    }
    let store =
        keel_server::serve::open_store(&keel_server::config::ServerConfig::from_env(config)?)
            .await?;
    store.migrate_up().await?;
    match action {
        UserAction::Create {
            email,
            role,
            tenant,
        } => {
            let role = role_arg(&role)?;
            let tenant_id = tenant_id(config, &*store, tenant).await?;
            let password = read_password()?;
            let user = store
                .create_user(&email, &password, role, tenant_id.as_deref())
                .await?;
            if json_out {
                println!("{}", json!({ "user": user }));
            } else {
                println!(
                    "created {} (id {}, role {})",
                    user.email,
                    user.id,
                    role.as_str()
                );
            }
        }
        UserAction::List => {
            let users = store.list_users(&Scope::All).await?;
            if json_out {
                println!("{}", json!(users));
            } else {
                println!(
                    "{:<34} {:<8} {:<20} {:<9} EMAIL",
                    "ID", "ROLE", "TENANT", "STATE"
                );
                for u in users {
                    println!(
                        "{:<34} {:<8} {:<20} {:<9} {}",
                        u.id,
                        u.role.as_str(),
                        u.tenant_id.as_deref().unwrap_or("-"),
                        if u.disabled_at.is_some() {
                            "disabled"
                        } else {
                            "enabled"
                        },
                        u.email
                    );
                }
            }
        }
        UserAction::Disable { email } => {
            if !store.disable_user(&Scope::All, &email).await? {
                return Err(Error::not_found(format!("enabled account {email}")).into());
            }
            if json_out {
                println!("{}", json!({ "disabled": email }));
            } else {
                println!("disabled {email}; its sessions end at their next request");
            }
        }
    }
    Ok(())
}

/// `keel token create|list|revoke`.
pub async fn token(config: &Config, action: TokenAction, json_out: bool) -> Result<(), Failure> {
    if let TokenAction::Create { role, .. } = &action {
        role_arg(role)?;
    }
    let store =
        keel_server::serve::open_store(&keel_server::config::ServerConfig::from_env(config)?)
            .await?;
    store.migrate_up().await?;
    match action {
        TokenAction::Create { role, tenant, name } => {
            let role = role_arg(&role)?;
            let tenant_id = tenant_id(config, &*store, tenant).await?;
            let (token, secret) = store
                .create_token(&name, role, tenant_id.as_deref())
                .await?;
            if json_out {
                println!("{}", json!({"token": token, "secret": secret}));
            } else {
                println!(
                    "{secret}\n(id {}, role {}; shown once, stored only as a hash)",
                    token.id,
                    role.as_str()
                );
            }
        }
        TokenAction::List => {
            let tokens = store.list_tokens(&Scope::All).await?;
            if json_out {
                println!("{}", json!(tokens));
            } else {
                println!(
                    "{:<14} {:<8} {:<16} {:<20} {:<8} NAME",
                    "ID", "ROLE", "HINT", "TENANT", "STATE"
                );
                for t in tokens {
                    println!(
                        "{:<14} {:<8} {:<16} {:<20} {:<8} {}",
                        t.id,
                        t.role.as_str(),
                        t.hint,
                        t.tenant_id.as_deref().unwrap_or("-"),
                        if t.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "live"
                        },
                        t.name
                    );
                }
            }
        }
        TokenAction::Revoke { id } => {
            if !store.revoke_token(&Scope::All, &id).await? {
                return Err(Error::not_found(format!("live token {id}")).into());
            }
            // Running servers on the same Redis drop the token at once (their sockets too).
            match config.backend().await {
                Ok(b) if b.kind() == keel::BackendKind::Redis => {
                    if let Err(e) = keel_server::realtime::announce_revocation(&b, &id).await {
                        eprintln!("warning: revoked, but running servers could not be told ({e}); they apply it within 10 s");
                    }
                }
                Ok(_) => {}
                Err(e) => eprintln!(
                    "warning: revoked, but running servers could not be told ({e}); they apply it within 10 s"
                ),
            }
            if json_out {
                println!("{}", json!({"revoked": id}));
            } else {
                println!("revoked {id}");
            }
        }
    }
    Ok(())
}
