//! One-time codes over the API: `send` claims the address's resend window and enqueues the
//! configured `email` handler's job (an `otp` handler, by purpose); `verify` checks a code.
//! Both need the admin role (an application's backend calls them, not its users); sends are
//! audited (`otp.send`), checks too (`otp.verify`), with the address only as its hash.

use keel::otp::{address_key, Otp, SendRefused, Verdict};
use keel::JobOptions;
use keel_records::Role;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{audited, Audit};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::Caller;
use crate::state::AppState;

/// Most characters of an address.
pub const MAX_ADDRESS: usize = 320;

/// `{"email": ..., "purpose": "login"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The address the code goes to.
    pub email: String,
    /// Which code (default `login`).
    pub purpose: Option<String>,
}

/// `{"email": ..., "code": ..., "purpose": "login"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The address the code went to.
    pub email: String,
    /// The code.
    pub code: String,
    /// Which code (default `login`).
    pub purpose: Option<String>,
}

/// A send accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    /// The queue.
    pub queue: String,
    /// The job mailing the code.
    pub job_id: String,
    /// Seconds until another send to the address is accepted.
    pub resend_after_s: u64,
    /// Seconds the code is valid.
    pub expires_in_s: u64,
}

/// A check's outcome: `valid` true once; otherwise why not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checked {
    /// Whether the code was right (it is now consumed).
    pub valid: bool,
    /// `valid`, `invalid` or `expired`.
    pub result: String,
    /// Checks left before the code is void, after a wrong one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u32>,
}

fn route<'a>(
    state: &'a AppState,
    purpose: &Option<String>,
) -> ApiResult<&'a keel_handlers::email::OtpRoute> {
    let purpose = purpose.as_deref().unwrap_or("login");
    state
        .otp
        .iter()
        .find(|r| r.purpose == purpose)
        .ok_or_else(|| {
            ApiError::invalid(
                "purpose",
                format!("no email handler mails {purpose:?} codes (configure otp = {{ purpose = {purpose:?} }} on one)"),
            )
        })
}

fn address(email: &str) -> ApiResult<String> {
    let email = email.trim();
    if email.len() > MAX_ADDRESS || !keel_handlers::email::is_address(email) {
        return Err(ApiError::invalid("email", "not an email address"));
    }
    Ok(email.to_string())
}

fn too_many(message: String, retry_after_ms: u64) -> ApiError {
    let mut e = ApiError::new(ErrorCode::RateLimited, message);
    e.retry_after = Some(retry_after_ms.div_ceil(1000).max(1));
    e
}

fn otp(state: &AppState, route: &keel_handlers::email::OtpRoute) -> Otp {
    Otp::new(&state.backend, route.policy.clone()).with_limiter(state.limiter.clone())
}

/// Claims the resend window and enqueues the code's email (admin; audited `otp.send`).
/// Inside the window: 429 with `Retry-After`.
pub async fn send(state: &AppState, caller: &Caller, req: &SendRequest) -> ApiResult<Sent> {
    caller.require(Role::Admin)?;
    let route = route(state, &req.purpose)?;
    let email = address(&req.email)?;
    if !state.can_see_queue(&caller.scope, &route.queue) {
        return Err(ApiError::not_found(format!("queue {}", route.queue)));
    }
    let audit = Audit::new(
        "otp.send",
        format!("otp:{}/{}", route.purpose, address_key(&email)),
    )
    .payload(json!({"purpose": route.purpose, "queue": route.queue}))
    .created();
    audited(state, caller, audit, async {
        if let Err(SendRefused::Throttled(left)) =
            otp(state, route).claim_send(&route.purpose, &email).await?
        {
            return Err(too_many(
                format!(
                    "a code was sent to this address less than {} s ago",
                    route.policy.resend_after_s
                ),
                left.as_millis() as u64,
            ));
        }
        let q = state.config.queue(&state.backend, &route.queue)?;
        let job = q
            .add(
                &route.job,
                json!({"to": email, "email": email, "purpose": route.purpose}),
                JobOptions::default(),
            )
            .await?;
        Ok(Sent {
            queue: route.queue.clone(),
            job_id: job.id,
            resend_after_s: route.policy.resend_after_s,
            expires_in_s: route.policy.ttl_s,
        })
    })
    .await
}

/// Checks a code (admin; audited `otp.verify`): 200 with the verdict; 429 with `Retry-After`
/// when the address is locked (too many wrong codes) or checks are rate-limited.
pub async fn verify(state: &AppState, caller: &Caller, req: &VerifyRequest) -> ApiResult<Checked> {
    caller.require(Role::Admin)?;
    let route = route(state, &req.purpose)?;
    let email = address(&req.email)?;
    if req.code.is_empty() || req.code.len() > 64 {
        return Err(ApiError::invalid("code", "1 to 64 characters"));
    }
    let audit = Audit::new(
        "otp.verify",
        format!("otp:{}/{}", route.purpose, address_key(&email)),
    );
    audited(state, caller, audit, async {
        let checked = |result: &str, valid, remaining| Checked {
            valid,
            result: result.into(),
            remaining,
        };
        match otp(state, route)
            .verify(&route.purpose, &email, &req.code)
            .await?
        {
            Verdict::Valid => Ok(checked("valid", true, None)),
            Verdict::Invalid { remaining } => Ok(checked("invalid", false, Some(remaining))),
            Verdict::Expired => Ok(checked("expired", false, None)),
            Verdict::Locked { retry_after_ms } => Err(too_many(
                "too many wrong codes for this address: request a new code later".into(),
                retry_after_ms,
            )),
            Verdict::RateLimited { retry_after_ms } => Err(too_many(
                "too many checks for this address".into(),
                retry_after_ms,
            )),
        }
    })
    .await
}
