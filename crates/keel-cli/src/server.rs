//! `keel migrate` and `keel token`: the records database from the shell.

use keel::config::Config;
use keel::Error;
use keel_records::prelude::*;
use keel_records::{Role, Scope, StoreError};
use serde_json::json;

use crate::{Failure, MigrateAction, TokenAction};

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
    let store = keel_server::serve::open_store(config).await?;
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

/// `keel token create|list|revoke`.
pub async fn token(config: &Config, action: TokenAction, json_out: bool) -> Result<(), Failure> {
    if let TokenAction::Create { role, .. } = &action {
        role.parse::<Role>().map_err(|e| match e {
            StoreError::Invalid { message, .. } => StoreError::invalid("--role", message),
            other => other,
        })?;
    }
    let store = keel_server::serve::open_store(config).await?;
    store.migrate_up().await?;
    match action {
        TokenAction::Create { role, tenant, name } => {
            let role: Role = role.parse()?;
            let tenant_id = match tenant {
                None => None,
                Some(t) => {
                    keel::keys::validate_name("--tenant", &t)?;
                    Some(match store.tenant_by_name(&t).await? {
                        Some(x) => x.id,
                        // A tenant exists through the queues bound to it, as in `keel serve`.
                        None if config.queues.values().any(|q| q.tenant.as_deref() == Some(&t)) => {
                            store.create_tenant(&t).await?.id
                        }
                        None => {
                            return Err(Error::invalid(
                                "--tenant",
                                format!("unknown tenant {t:?}: no queue in the configuration has tenant = {t:?}"),
                            )
                            .into())
                        }
                    })
                }
            };
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
